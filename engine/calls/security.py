"""Screening SIP sources for the daemon: one ``sip.security.Guard`` that every listener shares.

How this works: ``policy_of(config)`` turns ``[security]`` into a ``sip.security.SecurityPolicy``,
adding every trunk's ``allow`` networks to the allow-list (a trunk must never be flood-limited or
banned: one busy trunk alone sends more than any per-source limit that stops a flood).
``Security`` holds the one ``Guard`` built from it; ``Listeners`` hands that guard to the endpoint
of each listener (UDP, TCP, TLS), so a source's requests and digest failures count together and a
ban holds on every transport. The guard's facts (``SourceBanned``, ``BanLifted``,
``FloodDetected``) go to the call layer's dispatcher, which logs and counts them.

A reload (``apply``) keeps the guard when the policy is the same. A changed policy gets a new
guard, and the bans, strikes and failures of the old one carry over (``export_state`` /
``import_state``): a reload never frees a banned source, except one the new config allow-lists or
all of them when bans are turned off (``apply`` says which). Flood buckets start afresh.

A restart keeps them too: after a ban starts or ends the state is written (at most once a
second, off the event loop) to ``<runtime.var_dir>/security-bans.json`` with the wall time it was
written, again at shutdown, and read back at start (``restore``), the downtime taken off the bans'
remaining times, as fail2ban's database does. A SIGKILL loses at most the last second's changes. Other ban
trackers kept in the same file (the HTTP API's bearer-token bans: ``keep("api", ...)``) are
written and read back with the guard's, under their name. An unreadable or unwritable file is
logged and counted (``acd_security_state_errors_total``) and never stops the daemon: it then
starts with no bans.

Times inside the guard are the event loop's (what the endpoints are fed); ``wall`` turns one into
epoch seconds for the API and the log.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog

from engine.config import Config
from sip.security import (
    SCANNER_USER_AGENTS,
    Ban,
    BanPolicy,
    FloodPolicy,
    Guard,
    SecurityEvent,
    SecurityPolicy,
    parse_networks,
)

#: What ``acd_sip_auth_failures_total`` counts by: a user name that is no agent's, and every other
#: failed digest (wrong password, a replayed or foreign nonce, credentials of another agent).
AUTH_FAILURE_REASONS: Final = ("unknown_user", "bad_credentials")

#: The state file under ``runtime.var_dir``, and how long after a change it is written.
STATE_FILE: Final = "security-bans.json"
SAVE_DELAY_S: Final = 1.0

log = structlog.stdlib.get_logger("acd.security")


def ban_policy_of(config: Config) -> BanPolicy | None:
    """``[security.bans]`` as the sip core's policy, or None when bans are off. The HTTP API
    bans wrong bearer tokens by the same policy (engine.api.auth)."""
    b = config.security.bans
    if not b.enabled:
        return None
    return BanPolicy(
        max_failures=b.max_failures,
        find_window_s=b.find_window_s,
        ban_s=b.ban_s,
        max_ban_s=b.max_ban_s,
        forget_s=b.forget_s,
        user_max_failures=b.user_max_failures or None,
    )


def policy_of(config: Config) -> SecurityPolicy | None:
    """The screening ``[security]`` asks for, or None when every part of it is off."""
    sec = config.security
    trunk_networks = [network for trunk in config.trunks for network in trunk.allow]
    flood = (
        FloodPolicy(rate_per_s=sec.flood.rate_per_s, burst=sec.flood.burst)
        if sec.flood.enabled
        else None
    )
    bans = ban_policy_of(config)
    scanners = SCANNER_USER_AGENTS if sec.drop_scanners else ()
    if flood is None and bans is None and not scanners:
        return None
    return SecurityPolicy(
        allow=parse_networks([*sec.allow, *trunk_networks]),
        flood=flood,
        bans=bans,
        banned_action=sec.banned_action,
        scanner_user_agents=scanners,
        ban_scanners=sec.ban_scanners,
    )


class Security:
    """The daemon's one guard, its reloads, and the bans the API lists and lifts."""

    def __init__(
        self,
        config: Config,
        on_event: Callable[[SecurityEvent], None],
        on_state_error: Callable[[str], None] = lambda op: None,
    ) -> None:
        self._on_event = on_event
        self._on_state_error = on_state_error  # "load" or "save": counted by the caller
        self.policy = policy_of(config)
        self.guard = self._build(self.policy)
        self.state_path = Path(config.runtime.var_dir) / STATE_FILE
        self._save_timer: asyncio.TimerHandle | None = None
        self._saving: asyncio.Task[None] | None = None
        # keep(): name -> (export its state or None, import a state after elapsed_s)
        self._kept: dict[str, tuple[Callable[[], Any], Callable[[Any, float], None]]] = {}
        # the file's other trackers and its saved_at, for a keep() after restore()
        self._read: tuple[dict[str, Any], float] | None = None

    def _build(self, policy: SecurityPolicy | None) -> Guard | None:
        return Guard(policy, emit=self._on_event) if policy is not None else None

    def apply(self, config: Config, now: float) -> tuple[bool, list[str]]:
        """A reloaded config: (was the guard replaced, the addresses whose bans ended with it).

        A replaced guard must be handed to the endpoints (``Listeners.use_guard``)."""
        policy = policy_of(config)
        if policy == self.policy:
            return False, []
        old, guard = self.guard, self._build(policy)
        # (A tracker is falsy while empty: it has a __len__. Compare with None.)
        before = old.bans if old is not None else None
        after = guard.bans if guard is not None else None
        if before is not None and after is not None:
            after.import_state(before.export_state(now), now)
        ended = [
            ban.address
            for ban in (before.bans(now) if before is not None else [])
            if after is None or after.ban_of(ban.address, now) is None
        ]
        self.policy, self.guard = policy, guard
        return True, ended

    # -- what the API and the metrics ask --------------------------------------------------------

    def bans(self, now: float) -> list[Ban]:
        """Active bans, oldest first."""
        guard = self.guard
        return guard.bans.bans(now) if guard is not None and guard.bans is not None else []

    def lift(self, address: str, now: float) -> Ban | None:
        """End the ban of ``address`` (any spelling of the IP) now; the ban lifted, or None."""
        guard = self.guard
        if guard is None or guard.bans is None:
            return None
        wanted = _ip(address)
        for ban in guard.bans.bans(now):
            if wanted is not None and _ip(ban.address) == wanted:
                return guard.bans.lift(ban.address, now)
        return None

    # -- across restarts ---------------------------------------------------------------------------

    def restore(self) -> int:
        """Read the state file (if any) into the guard at start (and into the trackers ``keep``
        names, now or when they are kept); the number of the guard's active bans."""
        guard = self.guard
        now = self.now()
        try:
            saved = json.loads(self.state_path.read_bytes())
            saved_at = float(saved["saved_at"])
            others = saved.get("others", {})
            if not isinstance(others, dict):
                raise ValueError("'others' is not a table")
            if guard is not None and guard.bans is not None and saved["state"] is not None:
                elapsed_s = max(0.0, time.time() - saved_at)
                guard.bans.import_state(saved["state"], now, elapsed_s=elapsed_s)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, TypeError, KeyError) as exc:
            self._state_unreadable(exc)
            return 0
        self._read = (others, saved_at)
        for name in self._kept:
            self._restore_kept(name)
        return len(guard.bans.bans(now)) if guard is not None and guard.bans is not None else 0

    def keep(
        self, name: str, export: Callable[[], Any], restore: Callable[[Any, float], None]
    ) -> None:
        """Keep another ban tracker's state in the file under ``name``: ``export()`` gives its
        JSON-ready state (None: nothing to keep), ``restore(state, elapsed_s)`` takes it back
        after a restart's downtime. Call ``changed()`` when one of its bans starts."""
        self._kept[name] = (export, restore)
        if self._read is not None:
            self._restore_kept(name)

    def _restore_kept(self, name: str) -> None:
        assert self._read is not None
        others, saved_at = self._read
        if others.get(name) is None:
            return
        try:
            self._kept[name][1](others[name], max(0.0, time.time() - saved_at))
        except (ValueError, TypeError, KeyError) as exc:
            self._state_unreadable(exc, name)

    def _state_unreadable(self, exc: Exception, part: str = "sip") -> None:
        self._on_state_error("load")
        log.warning(
            "security_state_unreadable", path=str(self.state_path), part=part, error=str(exc),
            message="starting with no bans",
        )  # fmt: skip

    def changed(self) -> None:
        """A ban started or ended: write the state within ``SAVE_DELAY_S`` (one write however
        many changes an attack makes in that second)."""
        if self._save_timer is None:
            loop = asyncio.get_running_loop()
            self._save_timer = loop.call_later(SAVE_DELAY_S, self._save_soon)

    def _save_soon(self) -> None:
        self._save_timer = None
        if self._saving is not None and not self._saving.done():
            self.changed()  # the previous write is still on its thread: come back
            return
        data = self._snapshot()
        if data is not None:
            self._saving = asyncio.get_running_loop().create_task(self._write_off_loop(data))

    async def _write_off_loop(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    async def flush(self) -> None:
        """Shutdown: the last write, now (after any one in flight)."""
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        if self._saving is not None:
            await self._saving
        data = self._snapshot()
        if data is not None:
            self._write(data)

    def _snapshot(self) -> bytes | None:
        guard = self.guard
        others = {name: export() for name, (export, _restore) in self._kept.items()}
        others = {name: state for name, state in others.items() if state is not None}
        if (guard is None or guard.bans is None) and not others:
            return None
        bans = guard.bans if guard is not None else None
        state = bans.export_state(self.now()) if bans is not None else None
        return json.dumps({"saved_at": time.time(), "state": state, "others": others}).encode()

    def _write(self, data: bytes) -> None:
        """Atomically: a crash mid-write leaves the previous file, never half of one."""
        tmp = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as exc:
            self._on_state_error("save")
            log.error("security_state_save_failed", path=str(self.state_path), error=str(exc))

    @staticmethod
    def now() -> float:
        """The clock the guard runs on (the endpoints are fed ``loop.time()``)."""
        return asyncio.get_running_loop().time()

    @staticmethod
    def wall(loop_time: float) -> float:
        """A time of the guard's clock as epoch seconds."""
        return time.time() + (loop_time - asyncio.get_running_loop().time())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP a transport address or an API path names: brackets and an IPv6 zone removed, an
    IPv4-mapped IPv6 address (a dual-stack socket) read as the IPv4 address it carries."""
    try:
        ip = ipaddress.ip_address(text.strip("[]").partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def iso_utc(epoch_s: float) -> str:
    """Epoch seconds as ISO 8601 UTC to the second (what fail2ban and people read)."""
    moment = datetime.datetime.fromtimestamp(round(epoch_s), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
