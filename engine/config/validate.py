"""Cross-field checks a type system cannot express, one validator per part of the file.

How this works: ``validate(cfg, file)`` runs after the struct tree is decoded: ports in range,
names from a safe alphabet, every queue an agent names exists, flows reference known prompts and
queues, security and WebRTC settings hang together, ... Each failure raises ``ConfigError`` with
the key path in the TOML's own terms (``queues[2].ring_timeout_s``).
"""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
from collections.abc import Collection, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Final

from engine.config.errors import ConfigError
from engine.config.schema import (
    CALLBACK_MODES,
    CHANNEL_NAMES,
    DIALLED_CALLBACK_MODES,
    HTTP_OPEN_PATHS,
    QA_RULE_TYPES,
    TASK_CHANNELS,
    WEBHOOK_EVENTS,
    AgentConfig,
    CallbackConfig,
    Config,
    EnqueueStep,
    GotoStep,
    HttpConfig,
    LoginMode,
    LookupStep,
    MenuStep,
    QaRuleConfig,
    SecurityConfig,
    SetStep,
    TransferStep,
    WebRtcConfig,
    outbound_proxy_uri,
)
from sip.errors import ParseError
from sip.transport.dns import parse_nameserver
from sip.uri import Uri

# Identifiers appear in metric labels, URLs and log lines: keep them to a safe, bounded alphabet.
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


_MAX_PORT: Final = 65535


# Ports below this are privileged; a contact-center daemon should not need root to bind them.
_MIN_PORT: Final = 1


def _check_http_tls(file: str, http: HttpConfig) -> None:
    """Both PEM files or neither; readable; the key is the certificate's (what the listener will
    load at start, tried here so that check-config and a reload say so instead of the start)."""
    if not (http.cert_file or http.key_file):
        return
    for key in ("cert_file", "key_file"):
        path = getattr(http, key)
        if not path:
            other = "key_file" if key == "cert_file" else "cert_file"
            raise ConfigError(file, f"http.{key}", f"expected a PEM file: http.{other} is set")
        if not Path(path).is_file():
            raise ConfigError(file, f"http.{key}", f"expected a readable PEM file, found {path!r}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            http.cert_file, http.key_file
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            file, "http.key_file", f"cannot load the certificate with this key: {exc}"
        ) from None


def _check_port(file: str, path: str, port: int) -> None:
    # Port 0 lets the OS pick (tests, ephemeral deployments); anything else must be a real port.
    if port != 0 and not _MIN_PORT <= port <= _MAX_PORT:
        raise ConfigError(file, path, f"expected a port 0..{_MAX_PORT}, found {port}")


def _check_address(file: str, path: str, address: str) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(
            file, path, f"expected an IP address such as 127.0.0.1, found {address!r}"
        ) from None


# The keys a caller can press (RFC 4733 events 0-11), the keys a callback offer may name.
DTMF_KEYS = "0123456789*#"
# runtime.max_tasks: the router allocates its task arrays up front (about 250 bytes a slot), so
# the bound keeps a typo from asking for gigabytes; a million is far beyond one node's load.
MAX_ROUTED_TASKS = 1_048_576


def _check_name(file: str, path: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise ConfigError(
            file,
            path,
            f"expected a name of letters, digits, '_', '.', '-' (1-64 characters), found {name!r}",
        )


def _check_positive(file: str, path: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(file, path, f"expected a number {bound}, found {value}")


def _check_callback_dialout(cfg: Config, file: str, base: str, callback: CallbackConfig) -> None:
    """queues[].callback's dial-out keys: the mode, and for agent_first a trunk that can dial."""
    if callback.mode not in CALLBACK_MODES:
        raise ConfigError(
            file, f"{base}.mode", f"expected one of {CALLBACK_MODES}, found {callback.mode!r}"
        )
    if callback.attempts < 1:
        raise ConfigError(file, f"{base}.attempts", f"expected >= 1, found {callback.attempts}")
    _check_positive(file, f"{base}.retry_s", callback.retry_s, allow_zero=True)
    _check_positive(file, f"{base}.ring_timeout_s", callback.ring_timeout_s)
    if callback.whisper_prompt:
        _check_name(file, f"{base}.whisper_prompt", callback.whisper_prompt)
    if callback.mode not in DIALLED_CALLBACK_MODES:
        return
    trunks = {t.name for t in cfg.trunks}
    if not callback.trunk:
        raise ConfigError(
            file, f"{base}.trunk",
            f"expected the trunk the customer is dialled through with mode = {callback.mode!r}",
        )  # fmt: skip
    if callback.trunk not in trunks:
        raise ConfigError(file, f"{base}.trunk", _unknown("trunk", callback.trunk, trunks))
    if not _outbound(cfg, callback.trunk):
        raise ConfigError(
            file, f"{base}.trunk",
            f"expected a trunk with an outbound_proxy (where the callback is dialled), "
            f"found trunk {callback.trunk!r} without one",
        )  # fmt: skip


def _validate(cfg: Config, file: str) -> None:
    """Cross-field rules msgspec's types cannot express; the first violation is reported."""
    _check_address(file, "http.bind", cfg.http.bind)
    _check_port(file, "http.port", cfg.http.port)
    _check_positive(file, "http.shutdown_timeout_s", cfg.http.shutdown_timeout_s, allow_zero=True)
    _check_http_tls(file, cfg.http)
    for i, path in enumerate(cfg.http.open_paths):
        if path not in HTTP_OPEN_PATHS:
            raise ConfigError(
                file,
                f"http.open_paths[{i}]",
                f"expected one of {', '.join(map(repr, HTTP_OPEN_PATHS))}, found {path!r}",
            )
    for i, listener in enumerate(cfg.sip.listeners):
        base = f"sip.listeners[{i}]"
        if listener.transport.lower() not in ("udp", "tcp", "tls"):
            raise ConfigError(
                file,
                f"{base}.transport",
                f"expected one of 'udp', 'tcp', 'tls', found {listener.transport!r}",
            )
        _check_address(file, f"{base}.bind", listener.bind)
        _check_port(file, f"{base}.port", listener.port)
        if listener.transport.lower() == "tls":
            for key in ("cert_file", "key_file"):
                path = getattr(listener, key)
                if not path or not Path(path).is_file():
                    raise ConfigError(
                        file, f"{base}.{key}",
                        f"expected a readable PEM file for the TLS listener, found {path!r}",
                    )  # fmt: skip
    if not cfg.sip.listeners:
        raise ConfigError(file, "sip.listeners", "expected at least one SIP listener")
    for i, algorithm in enumerate(cfg.sip.digest_algorithms):
        if algorithm not in ("MD5", "SHA-256"):
            raise ConfigError(
                file,
                f"sip.digest_algorithms[{i}]",
                f"expected 'MD5' or 'SHA-256', found {algorithm!r}",
            )
    if not cfg.sip.digest_algorithms:
        raise ConfigError(file, "sip.digest_algorithms", "expected at least one algorithm")
    for key in ("t1_ms", "t2_ms", "t4_ms"):
        _check_positive(file, f"sip.{key}", getattr(cfg.sip, key))
    if cfg.sip.t2_ms < cfg.sip.t1_ms:
        raise ConfigError(
            file, "sip.t2_ms", f"expected >= sip.t1_ms ({cfg.sip.t1_ms}), found {cfg.sip.t2_ms}"
        )
    for i, server in enumerate(cfg.sip.dns_servers):
        try:
            parse_nameserver(server)
        except ValueError:
            raise ConfigError(
                file, f"sip.dns_servers[{i}]",
                f"expected an IP address with an optional port such as 192.0.2.53:5353, found {server!r}",
            ) from None  # fmt: skip
    _check_positive(file, "sip.dns_timeout_s", cfg.sip.dns_timeout_s)
    _check_positive(file, "sip.failover_timeout_s", cfg.sip.failover_timeout_s, allow_zero=True)
    if cfg.sip.session_timers not in ("accept", "refuse"):
        raise ConfigError(
            file,
            "sip.session_timers",
            f"expected 'accept' or 'refuse', found {cfg.sip.session_timers!r}",
        )
    if cfg.sip.min_se_s < 90:
        raise ConfigError(
            file, "sip.min_se_s", f"expected >= 90 (RFC 4028 4), found {cfg.sip.min_se_s}"
        )
    if cfg.sip.session_expires_s < cfg.sip.min_se_s:
        raise ConfigError(
            file,
            "sip.session_expires_s",
            f"expected >= sip.min_se_s ({cfg.sip.min_se_s}), found {cfg.sip.session_expires_s}",
        )
    url = cfg.storage.url
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite://")):
        raise ConfigError(
            file,
            "storage.url",
            f"expected a postgresql:// or sqlite:// URL (or empty for SQLite), found {url!r}",
        )
    if cfg.runtime.event_loop not in ("uvloop", "asyncio"):
        raise ConfigError(
            file,
            "runtime.event_loop",
            f"expected 'uvloop' or 'asyncio', found {cfg.runtime.event_loop!r}",
        )
    _check_positive(file, "runtime.drain_timeout_s", cfg.runtime.drain_timeout_s, allow_zero=True)
    if not 1 <= cfg.runtime.max_tasks <= MAX_ROUTED_TASKS:
        raise ConfigError(
            file,
            "runtime.max_tasks",
            f"expected 1-{MAX_ROUTED_TASKS}, found {cfg.runtime.max_tasks}",
        )
    _check_name(file, "runtime.node", cfg.runtime.node)
    _check_positive(file, "cluster.check_interval_s", cfg.cluster.check_interval_s)
    if cfg.cluster.leader_election and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            file,
            "cluster.leader_election",
            "expected a postgresql:// storage.url (the leader lock lives in PostgreSQL), "
            f"found {'SQLite' if not url or url.startswith('sqlite') else repr(url)}",
        )
    _validate_webrtc(cfg.webrtc, file)
    _validate_security(cfg.security, file)

    queue_names: set[str] = set()
    for i, queue in enumerate(cfg.queues):
        base = f"queues[{i}]"
        _check_name(file, f"{base}.name", queue.name)
        if queue.name in queue_names:
            raise ConfigError(file, f"{base}.name", f"duplicate queue name {queue.name!r}")
        queue_names.add(queue.name)
        _check_positive(file, f"{base}.ring_timeout_s", queue.ring_timeout_s)
        _check_positive(file, f"{base}.offer_timeout_s", queue.offer_timeout_s)
        _check_positive(file, f"{base}.reopen_sticky_s", queue.reopen_sticky_s, allow_zero=True)
        _check_positive(
            file, f"{base}.close_solved_after_s", queue.close_solved_after_s, allow_zero=True
        )
        for channel, target in queue.sla.items():
            if channel not in TASK_CHANNELS:
                raise ConfigError(
                    file,
                    f"{base}.sla.{channel}",
                    f"expected a task channel ({', '.join(TASK_CHANNELS)}), found {channel!r}"
                    + (" (calls have service_level_s)" if channel == "voice" else ""),
                )
            for key in ("first_response_s", "resolution_s"):
                _check_positive(
                    file, f"{base}.sla.{channel}.{key}", getattr(target, key), allow_zero=True
                )
        _check_positive(file, f"{base}.retry_delay_s", queue.retry_delay_s, allow_zero=True)
        _check_positive(file, f"{base}.wrap_up_s", queue.wrap_up_s, allow_zero=True)
        _check_positive(file, f"{base}.max_wait_s", queue.max_wait_s, allow_zero=True)
        _check_positive(file, f"{base}.service_level_s", queue.service_level_s)
        _check_positive(file, f"{base}.last_agent_days", queue.last_agent_days, allow_zero=True)
        _check_positive(
            file, f"{base}.preferred_agent_timeout_s", queue.preferred_agent_timeout_s,
            allow_zero=True,
        )  # fmt: skip
        _check_positive(file, f"{base}.keep_place_s", queue.keep_place_s, allow_zero=True)
        # What the routing core refuses (it would refuse it at start, or at a reload).
        for key in ("reject_delay_s", "busy_delay_s", "no_answer_delay_s"):
            _check_positive(file, f"{base}.{key}", getattr(queue, key), allow_zero=True)
        if queue.auto_pause_after < 0:
            raise ConfigError(
                file, f"{base}.auto_pause_after",
                f"expected >= 0 (0 = never), found {queue.auto_pause_after}",
            )  # fmt: skip
        if not -(2**31) <= queue.weight < 2**31:
            raise ConfigError(
                file, f"{base}.weight", f"expected an int32 weight, found {queue.weight}"
            )
        for j, relax in enumerate(queue.steps):
            _check_positive(file, f"{base}.steps[{j}].after_s", relax.after_s, allow_zero=True)
            if relax.max_penalty is not None and not 0 <= relax.max_penalty < 2**31:
                raise ConfigError(
                    file, f"{base}.steps[{j}].max_penalty",
                    f"expected a penalty >= 0, found {relax.max_penalty}",
                )  # fmt: skip
        _check_positive(
            file, f"{base}.priority_aging_per_min", queue.priority_aging_per_min, allow_zero=True
        )
        if queue.max_length < 0:
            raise ConfigError(
                file,
                f"{base}.max_length",
                f"expected >= 0 (0 = unlimited), found {queue.max_length}",
            )
        if queue.csat is not None:
            _check_name(file, f"{base}.csat.prompt", queue.csat.prompt)
            for key in ("second_prompt", "thanks_prompt"):
                if getattr(queue.csat, key):  # empty: that part is left out
                    _check_name(file, f"{base}.csat.{key}", getattr(queue.csat, key))
            _check_positive(file, f"{base}.csat.timeout_s", queue.csat.timeout_s)
        if queue.callback is not None:
            if len(queue.callback.key) != 1 or queue.callback.key not in DTMF_KEYS:
                raise ConfigError(
                    file, f"{base}.callback.key",
                    f"expected one key of {DTMF_KEYS}, found {queue.callback.key!r}",
                )  # fmt: skip
            _check_name(file, f"{base}.callback.prompt", queue.callback.prompt)
            if queue.callback.confirm_prompt:
                _check_name(file, f"{base}.callback.confirm_prompt", queue.callback.confirm_prompt)
            if queue.announce_every_s <= 0:  # the offer is made with the announcements
                raise ConfigError(
                    file, f"{base}.announce_every_s",
                    "expected > 0 with callback: the offer is played with the announcements",
                )  # fmt: skip
            _check_callback_dialout(cfg, file, f"{base}.callback", queue.callback)

    agent_ids: set[str] = set()
    for i, agent in enumerate(cfg.agents):
        base = f"agents[{i}]"
        _check_name(file, f"{base}.id", agent.id)
        if agent.id in agent_ids:
            raise ConfigError(file, f"{base}.id", f"duplicate agent id {agent.id!r}")
        agent_ids.add(agent.id)
        _check_requirements(file, f"{base}.skills", agent.skills)
        for queue_name, penalty in agent.queues.items():
            if queue_name not in queue_names:
                known = ", ".join(sorted(queue_names)) or "none defined"
                raise ConfigError(
                    file,
                    f"{base}.queues.{queue_name}",
                    f"expected the name of a configured queue ({known}), found {queue_name!r}",
                )
            if penalty < 0:
                raise ConfigError(
                    file, f"{base}.queues.{queue_name}", f"expected a penalty >= 0, found {penalty}"
                )


_CODECS: Final = ("PCMU", "PCMA")


def is_tls_uri(text: str) -> bool:
    """A sips: URI, or a sip: one with ;transport=tls: what an INVITE reaches over TLS."""
    try:
        uri = Uri.parse(text)
    except (ParseError, ValueError):
        return False
    return uri.scheme == "sips" or (uri.transport or "").lower() == "tls"


_RECORD_RE: Final = re.compile(r"^(always|never|on_demand|(100|[1-9]?[0-9])%)$")


# More media workers than this is a typo, not a machine: each is a process of about 100 MB.
_MAX_WORKERS: Final = 64


# The schemes aiortc's ICE agent understands (it has no stuns:).
_ICE_URL_RE: Final = re.compile(r"^(stun|turn|turns):[^\s]+$")


def _validate_webrtc(cfg: WebRtcConfig, file: str) -> None:
    for i, server in enumerate(cfg.ice_servers):
        base = f"webrtc.ice_servers[{i}]"
        if not server.urls:
            raise ConfigError(file, f"{base}.urls", "expected at least one URL")
        for j, url in enumerate(server.urls):
            if not _ICE_URL_RE.match(url):
                raise ConfigError(
                    file,
                    f"{base}.urls[{j}]",
                    f"expected a stun:, turn: or turns: URL, found {url!r}",
                )
        if any(u.startswith("turn") for u in server.urls) and not (
            server.username and server.credential
        ):
            raise ConfigError(file, base, "a TURN server needs username and credential")
    for i, address in enumerate(cfg.host_addresses):
        _check_address(file, f"webrtc.host_addresses[{i}]", address)
    if cfg.max_sessions < 1:
        raise ConfigError(
            file, "webrtc.max_sessions", f"expected an integer >= 1, found {cfg.max_sessions}"
        )
    _check_workers(file, "webrtc.workers", cfg.workers)


def _check_network(file: str, path: str, network: str) -> None:
    try:
        ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise ConfigError(
            file, path, f"expected a network such as 192.0.2.0/24 or 127.0.0.1, found {network!r}"
        ) from None


def _check_seconds(file: str, path: str, value: float) -> None:
    """A positive, finite number (TOML also spells inf and nan)."""
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(file, path, f"expected a number > 0, found {value}")


def _validate_security(cfg: SecurityConfig, file: str) -> None:
    for i, network in enumerate(cfg.allow):
        _check_network(file, f"security.allow[{i}]", network)
    if cfg.banned_action not in ("drop", "reject"):
        raise ConfigError(
            file,
            "security.banned_action",
            f"expected 'drop' or 'reject', found {cfg.banned_action!r}",
        )
    if cfg.ban_scanners and not (cfg.drop_scanners and cfg.bans.enabled):
        raise ConfigError(
            file,
            "security.ban_scanners",
            "expected drop_scanners = true and bans.enabled = true with ban_scanners = true",
        )
    _check_seconds(file, "security.flood.rate_per_s", cfg.flood.rate_per_s)
    if cfg.flood.burst < 1:
        raise ConfigError(
            file, "security.flood.burst", f"expected an integer >= 1, found {cfg.flood.burst}"
        )
    bans = cfg.bans
    if bans.max_failures < 1:
        raise ConfigError(
            file,
            "security.bans.max_failures",
            f"expected an integer >= 1, found {bans.max_failures}",
        )
    if bans.user_max_failures < 0:
        raise ConfigError(
            file,
            "security.bans.user_max_failures",
            f"expected an integer >= 0 (0 = off), found {bans.user_max_failures}",
        )
    for key in ("find_window_s", "ban_s", "max_ban_s", "forget_s"):
        _check_seconds(file, f"security.bans.{key}", getattr(bans, key))
    if bans.max_ban_s < bans.ban_s:
        raise ConfigError(
            file,
            "security.bans.max_ban_s",
            f"expected >= security.bans.ban_s ({bans.ban_s}), found {bans.max_ban_s}",
        )


def _check_workers(file: str, key: str, workers: int) -> None:
    if not 0 <= workers <= _MAX_WORKERS:
        raise ConfigError(
            file,
            key,
            f"expected 0 (media in the daemon) to {_MAX_WORKERS} worker processes, found {workers}",
        )


def _check_requirements(file: str, path: str, requirements: dict[str, int]) -> None:
    for skill, level in requirements.items():
        _check_name(file, f"{path}.{skill}", skill)
        if not 1 <= level <= 100:
            raise ConfigError(file, f"{path}.{skill}", f"expected a level 1..100, found {level}")


def _check_ha1(cfg: Config, file: str, base: str, agent: AgentConfig) -> None:
    if agent.password:
        raise ConfigError(
            file, f"{base}.password_ha1", "expected `password` or `password_ha1`, not both"
        )
    if not re.fullmatch(r"[0-9a-fA-F]{32}", agent.password_ha1):
        raise ConfigError(
            file, f"{base}.password_ha1",
            "expected 32 hex digits: printf %s 'ID:REALM:PASSWORD' | md5sum",
        )  # fmt: skip
    if "SHA-256" in cfg.sip.digest_algorithms:
        # The stored HA1 is MD5's; a phone that picks the SHA-256 challenge could never pass.
        raise ConfigError(
            file, f"{base}.password_ha1",
            "expected sip.digest_algorithms = [\"MD5\"] with password_ha1 (an MD5 HA1 cannot "
            "check a phone that answers the SHA-256 challenge): use `password` instead",
        )  # fmt: skip


def _unknown(kind: str, name: str, known: set[str]) -> str:
    listing = ", ".join(sorted(known)) or "none defined"
    return f"expected the name of a configured {kind} ({listing}), found {name!r}"


def _outbound(cfg: Config, trunk: str) -> bool:
    return any(t.name == trunk and t.outbound_proxy for t in cfg.trunks)


def _validate_telephony(cfg: Config, file: str) -> None:
    """Trunks, routes, flows, queue and agent options, and every name that refers to another."""
    trunks = {t.name for t in cfg.trunks}
    flows = {f.name for f in cfg.flows}
    queues = {q.name for q in cfg.queues}
    agents = {a.id for a in cfg.agents}
    seen: set[str] = set()
    usernames: set[str] = set()
    for i, trunk in enumerate(cfg.trunks):
        base = f"trunks[{i}]"
        _check_name(file, f"{base}.name", trunk.name)
        if trunk.name in seen:
            raise ConfigError(file, f"{base}.name", f"duplicate trunk name {trunk.name!r}")
        seen.add(trunk.name)
        for j, network in enumerate(trunk.allow):
            _check_network(file, f"{base}.allow[{j}]", network)
        if not trunk.allow and not trunk.username:
            raise ConfigError(
                file, f"{base}.allow", "expected source networks or a username: the trunk is open"
            )
        if bool(trunk.username) != bool(trunk.password):
            raise ConfigError(
                file, f"{base}.password" if trunk.username else f"{base}.username",
                "expected both username and password (inbound digest) or neither",
            )  # fmt: skip
        if trunk.username and trunk.username in usernames:
            raise ConfigError(
                file, f"{base}.username",
                f"expected a username no other trunk has (it says which trunk is calling), "
                f"found {trunk.username!r} again",
            )  # fmt: skip
        usernames.add(trunk.username)
        if trunk.dtmf not in ("auto", "rfc4733", "inband"):
            raise ConfigError(
                file,
                f"{base}.dtmf",
                f"expected 'auto', 'rfc4733' or 'inband', found {trunk.dtmf!r}",
            )
        if trunk.srtp not in ("", "off", "offer", "require"):
            raise ConfigError(
                file,
                f"{base}.srtp",
                f"expected 'off', 'offer', 'require' or '' ([media] srtp), found {trunk.srtp!r}",
            )
        if trunk.transport not in ("udp", "tcp", "tls"):
            raise ConfigError(
                file,
                f"{base}.transport",
                f"expected 'udp', 'tcp' or 'tls', found {trunk.transport!r}",
            )
        if trunk.outbound_proxy and outbound_proxy_uri(trunk) is None:
            raise ConfigError(
                file, f"{base}.outbound_proxy",
                "expected host:port such as 192.0.2.10:5060, a host name (located by NAPTR/SRV) "
                f"or a sip:/sips: URI such as sip:sip.carrier.net;transport=tcp, found {trunk.outbound_proxy!r}",
            )  # fmt: skip
        for j, codec in enumerate(trunk.codecs):
            if codec.upper() not in _CODECS:
                raise ConfigError(
                    file, f"{base}.codecs[{j}]", f"expected one of {_CODECS}, found {codec!r}"
                )
    for i, route in enumerate(cfg.routes):
        base = f"routes[{i}]"
        if route.trunk != "*" and route.trunk not in trunks:
            raise ConfigError(file, f"{base}.trunk", _unknown("trunk", route.trunk, trunks))
        if route.flow not in flows:
            raise ConfigError(file, f"{base}.flow", _unknown("flow", route.flow, flows))
        if bool(route.number) == bool(route.pattern):
            raise ConfigError(file, base, "expected exactly one of `number` or `pattern`")
        if route.pattern:
            try:
                re.compile(route.pattern)
            except re.error as exc:
                raise ConfigError(
                    file, f"{base}.pattern", f"expected a regular expression, found an error: {exc}"
                ) from None
    seen = set()
    for i, flow in enumerate(cfg.flows):
        base = f"flows[{i}]"
        _check_name(file, f"{base}.name", flow.name)
        if flow.name in seen:
            raise ConfigError(file, f"{base}.name", f"duplicate flow name {flow.name!r}")
        seen.add(flow.name)
        if not flow.steps:
            raise ConfigError(file, f"{base}.steps", "expected at least one step")
        for j, step in enumerate(flow.steps):
            where = f"{base}.steps[{j}]"
            if isinstance(step, MenuStep):
                for digit, target in step.options.items():
                    if digit not in "0123456789*#" or len(digit) != 1:
                        raise ConfigError(
                            file,
                            f"{where}.options",
                            f"expected single DTMF digits, found {digit!r}",
                        )
                    if target not in flows:
                        raise ConfigError(
                            file, f"{where}.options.{digit}", _unknown("flow", target, flows)
                        )
                if step.default and step.default not in flows:
                    raise ConfigError(
                        file, f"{where}.default", _unknown("flow", step.default, flows)
                    )
            elif isinstance(step, GotoStep) and step.flow not in flows:
                raise ConfigError(file, f"{where}.flow", _unknown("flow", step.flow, flows))
            elif (
                isinstance(step, SetStep | EnqueueStep) and step.queue and step.queue not in queues
            ):
                raise ConfigError(file, f"{where}.queue", _unknown("queue", step.queue, queues))
            elif isinstance(step, SetStep) and bool(step.tier) != bool(step.priorities):
                raise ConfigError(
                    file, f"{where}.priorities" if step.tier else f"{where}.tier",
                    "expected `tier` and `priorities` together (the tier names a key of priorities)",
                )  # fmt: skip
            elif isinstance(step, SetStep) and any(
                not -(2**31) < p < 2**31 for p in step.priorities.values()
            ):
                raise ConfigError(
                    file, f"{where}.priorities", "expected priorities in the int32 range"
                )
            elif (
                isinstance(step, SetStep)
                and step.preferred_agent
                and "{" not in step.preferred_agent
                and step.preferred_agent not in agents
            ):
                raise ConfigError(
                    file,
                    f"{where}.preferred_agent",
                    _unknown("agent", step.preferred_agent, agents),
                )
            elif isinstance(step, TransferStep) and step.trunk not in trunks:
                raise ConfigError(file, f"{where}.trunk", _unknown("trunk", step.trunk, trunks))
            elif isinstance(step, TransferStep) and not _outbound(cfg, step.trunk):
                raise ConfigError(
                    file, f"{where}.trunk",
                    f"expected a trunk with an outbound_proxy (where the transfer is sent), "
                    f"found trunk {step.trunk!r} without one",
                )  # fmt: skip
            elif isinstance(step, TransferStep) and step.timeout_s <= 0:
                raise ConfigError(
                    file,
                    f"{where}.timeout_s",
                    f"expected a positive number, found {step.timeout_s}",
                )
            elif isinstance(step, LookupStep) and bool(step.url) == bool(step.provider):
                raise ConfigError(
                    file, where, "expected one of url (a webhook) and provider (a plugin's lookup)"
                )
            elif (
                isinstance(step, LookupStep)
                and step.url
                and not step.url.startswith(("http://", "https://"))
            ):
                raise ConfigError(
                    file, f"{where}.url", f"expected an http(s) URL, found {step.url!r}"
                )
            if isinstance(step, SetStep) and step.requirements:
                _check_requirements(file, f"{where}.requirements", step.requirements)
    for i, queue in enumerate(cfg.queues):
        base = f"queues[{i}]"
        _check_requirements(file, f"{base}.requirements", queue.requirements)
        previous = -1.0
        for j, relax in enumerate(queue.steps):
            if relax.after_s < previous:
                raise ConfigError(
                    file,
                    f"{base}.steps[{j}].after_s",
                    f"expected steps in increasing after_s order, found {relax.after_s} after {previous}",
                )
            previous = relax.after_s
            if relax.requirements is not None:
                _check_requirements(file, f"{base}.steps[{j}].requirements", relax.requirements)
        if queue.overflow and queue.overflow not in flows:
            raise ConfigError(file, f"{base}.overflow", _unknown("flow", queue.overflow, flows))
        if not _RECORD_RE.match(queue.record):
            raise ConfigError(
                file,
                f"{base}.record",
                f"expected always, never, on_demand or a percentage like '25%', found {queue.record!r}",
            )
    dialled = {
        q.name: q.callback.mode
        for q in cfg.queues
        if q.callback is not None and q.callback.mode in DIALLED_CALLBACK_MODES
    }
    for i, agent in enumerate(cfg.agents):
        base = f"agents[{i}]"
        if agent.login is LoginMode.STATIC and not agent.contact.startswith(("sip:", "sips:")):
            raise ConfigError(
                file,
                f"{base}.contact",
                f"expected a sip: URI for login = 'static', found {agent.contact!r}",
            )
        if agent.secure and agent.login is LoginMode.WEBRTC:
            raise ConfigError(
                file,
                f"{base}.secure",
                "expected a SIP phone (a browser's media is DTLS-SRTP anyway)",
            )
        if agent.login is LoginMode.WEBRTC and (
            dialling := sorted(set(agent.queues) & set(dialled))
        ):
            # engine.calls.dialout rings SIP phones only (the softphone's offer has no dial-out)
            raise ConfigError(
                file, f"{base}.queues.{dialling[0]}",
                f"expected a SIP phone in a queue with callback.mode = "
                f"{dialled[dialling[0]]!r} (the daemon rings the agent's phone for each "
                "callback), found login = 'webrtc'",
            )  # fmt: skip
        if agent.secure and agent.login is LoginMode.STATIC and not is_tls_uri(agent.contact):
            raise ConfigError(
                file, f"{base}.contact",
                f"expected a sips: or ;transport=tls URI for secure = true, found {agent.contact!r}",
            )  # fmt: skip
        if agent.trunk and agent.trunk not in trunks:
            raise ConfigError(file, f"{base}.trunk", _unknown("trunk", agent.trunk, trunks))
        if agent.password_ha1:
            _check_ha1(cfg, file, base, agent)
        for channel, count in agent.capacity.items():
            if channel not in CHANNEL_NAMES:
                raise ConfigError(
                    file,
                    f"{base}.capacity.{channel}",
                    f"expected a channel ({', '.join(CHANNEL_NAMES)}), found {channel!r}",
                )
            if count < 0:  # 0: never offered that channel (as leaving it out)
                raise ConfigError(
                    file, f"{base}.capacity.{channel}", f"expected a capacity >= 0, found {count}"
                )
    token_names: set[str] = set()
    for i, api_token in enumerate(cfg.api.tokens):
        base = f"api.tokens[{i}]"
        _check_name(file, f"{base}.name", api_token.name)
        if api_token.name in token_names:
            raise ConfigError(file, f"{base}.name", f"duplicate token name {api_token.name!r}")
        token_names.add(api_token.name)
        if bool(api_token.token) == bool(api_token.token_sha256):
            raise ConfigError(file, base, "expected exactly one of `token` or `token_sha256`")
        if api_token.token and len(api_token.token) < 16:
            raise ConfigError(
                file,
                f"{base}.token",
                "expected at least 16 characters: short tokens can be guessed",
            )
        if api_token.token_sha256 and not re.fullmatch(r"[0-9a-f]{64}", api_token.token_sha256):
            raise ConfigError(
                file, f"{base}.token_sha256", "expected 64 lowercase hex digits (sha256sum output)"
            )
    rec = cfg.recordings
    if rec.format not in ("wav", "flac", "opus"):
        raise ConfigError(
            file,
            "recordings.format",
            f"expected one of 'wav', 'flac', 'opus', found {rec.format!r}",
        )
    _check_positive(file, "recordings.flush_interval_s", rec.flush_interval_s)
    _check_positive(file, "recordings.purge_interval_s", rec.purge_interval_s)
    if rec.retention_days < 0:
        raise ConfigError(
            file,
            "recordings.retention_days",
            f"expected >= 0 (0 = forever), found {rec.retention_days}",
        )
    _check_workers(file, "media.workers", cfg.media.workers)
    if cfg.media.srtp not in ("off", "offer", "require"):
        raise ConfigError(
            file, "media.srtp", f"expected 'off', 'offer' or 'require', found {cfg.media.srtp!r}"
        )
    if not cfg.media.rtp_port_min < cfg.media.rtp_port_max:
        raise ConfigError(
            file, "media.rtp_port_max", f"expected > media.rtp_port_min ({cfg.media.rtp_port_min})"
        )


def _validate_webhooks(cfg: Config, file: str) -> None:
    for i, hook in enumerate(cfg.webhooks):
        base = f"webhooks[{i}]"
        if not hook.url.startswith(("http://", "https://")):
            raise ConfigError(file, f"{base}.url", f"expected an http(s) URL, found {hook.url!r}")
        for j, kind in enumerate(hook.events):
            if kind not in WEBHOOK_EVENTS:
                choices = ", ".join(repr(e) for e in WEBHOOK_EVENTS)
                raise ConfigError(
                    file, f"{base}.events[{j}]", f"expected one of {choices}, found {kind!r}"
                )
        if len(hook.secret) < 16:
            raise ConfigError(
                file,
                f"{base}.secret",
                f"expected a secret of at least 16 characters, found {len(hook.secret)}",
            )
        if not (hook.timeout_s > 0 and math.isfinite(hook.timeout_s)):
            raise ConfigError(
                file, f"{base}.timeout_s", f"expected a number > 0, found {hook.timeout_s}"
            )
        if not 1 <= hook.max_attempts <= 100:
            raise ConfigError(
                file, f"{base}.max_attempts", f"expected 1 to 100, found {hook.max_attempts}"
            )
        if not (hook.backoff_s >= 0 and math.isfinite(hook.backoff_s)):
            raise ConfigError(
                file, f"{base}.backoff_s", f"expected a number >= 0, found {hook.backoff_s}"
            )


# Recognisers built into acd; others are installed as entry points of this group.
BUILTIN_TRANSCRIBERS: Final = ("pocketsphinx",)
TRANSCRIBER_ENTRY_POINTS: Final = "acd.transcribers"


def transcriber_names() -> list[str]:
    return [
        *BUILTIN_TRANSCRIBERS,
        *(ep.name for ep in entry_points(group=TRANSCRIBER_ENTRY_POINTS)),
    ]


def _validate_transcription(cfg: Config, file: str) -> None:
    tc = cfg.transcription
    engines = transcriber_names()
    if tc.engine not in engines:
        raise ConfigError(
            file,
            "transcription.engine",
            f"expected one of {', '.join(map(repr, engines))}, found {tc.engine!r}",
        )
    if tc.model and not Path(tc.model).is_dir():
        raise ConfigError(
            file,
            "transcription.model",
            f"expected the engine's model directory (empty: the bundled model), found {tc.model!r}"
            " (no such directory)",
        )
    if not 1 <= tc.workers <= _MAX_WORKERS:
        raise ConfigError(
            file,
            "transcription.workers",
            f"expected 1 to {_MAX_WORKERS} worker processes, found {tc.workers}",
        )
    if tc.max_attempts < 1:
        raise ConfigError(
            file, "transcription.max_attempts", f"expected an integer >= 1, found {tc.max_attempts}"
        )
    _check_seconds(file, "transcription.retry_backoff_s", tc.retry_backoff_s)
    if not (tc.keyword_threshold > 0 and math.isfinite(tc.keyword_threshold)):
        raise ConfigError(
            file,
            "transcription.keyword_threshold",
            f"expected a number > 0 (such as 1e-20), found {tc.keyword_threshold!r}",
        )
    queues = {q.name for q in cfg.queues}
    for j, queue in enumerate(tc.queues):
        if queue not in queues:
            raise ConfigError(file, f"transcription.queues[{j}]", _unknown("queue", queue, queues))
    if tc.card_min_digits < 1:
        raise ConfigError(
            file,
            "transcription.card_min_digits",
            f"expected an integer >= 1, found {tc.card_min_digits}",
        )
    _check_seconds(file, "transcription.card_window_s", tc.card_window_s)
    check_qa_rules(tc.rules, queues, file)


def check_qa_rules(rules: Sequence[QaRuleConfig], queues: Collection[str], file: str) -> None:
    """QA rules (``[[transcription.rules]]``, or a plugin's rule pack): each one well formed,
    names unique, queues among ``queues``."""
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        base = f"transcription.rules[{i}]"
        if not 1 <= len(rule.name) <= 64 or not rule.name.strip():
            raise ConfigError(file, f"{base}.name", "expected 1-64 characters")
        if rule.name in seen:
            raise ConfigError(file, f"{base}.name", f"rule {rule.name!r} is defined twice")
        seen.add(rule.name)
        if rule.type not in QA_RULE_TYPES:
            raise ConfigError(
                file, f"{base}.type", f"expected one of {QA_RULE_TYPES}, found {rule.type!r}"
            )
        if rule.channel not in ("agent", "caller", "any"):
            raise ConfigError(
                file, f"{base}.channel", f"expected agent, caller or any, found {rule.channel!r}"
            )
        for j, queue in enumerate(rule.queues):
            if queue not in queues:
                raise ConfigError(file, f"{base}.queues[{j}]", f"no queue named {queue!r}")
        if rule.type in ("required", "forbidden") and not any(p.strip() for p in rule.phrases):
            raise ConfigError(file, f"{base}.phrases", "expected at least one phrase")
        if not 0.0 < rule.min_similarity <= 1.0:
            raise ConfigError(file, f"{base}.min_similarity", "expected a number in (0, 1]")
        if rule.within_s < 0 or not math.isfinite(rule.within_s):
            raise ConfigError(file, f"{base}.within_s", "expected a number >= 0")
        if not 0.0 <= rule.min_ratio <= rule.max_ratio <= 1.0:
            raise ConfigError(
                file, f"{base}.max_ratio", "expected 0 <= min_ratio <= max_ratio <= 1"
            )


def validate(cfg: Config, file: str) -> None:
    """Every cross-field rule of a decoded config; the first one broken raises ``ConfigError``."""
    _validate(cfg, file)
    _validate_telephony(cfg, file)
    _validate_webhooks(cfg, file)
    _validate_transcription(cfg, file)
