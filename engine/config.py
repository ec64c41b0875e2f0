"""Daemon configuration: one TOML file decoded into frozen, typed structures.

How this works: ``load_config(path)`` reads the file with :mod:`tomllib`, converts the table into the
``Config`` struct tree with msgspec (``forbid_unknown_fields`` everywhere, so a misspelled key is an
error, not a silently ignored line), then runs the cross-field checks that a type system cannot express
(an agent's queue must exist, ports must be in range, ...). Every failure is raised as
:class:`ConfigError` whose message names the file, the key path in the TOML's own terms
(``queues[2].ring_timeout_s``), what was expected and what was found.

Keep the struct tree here and nowhere else: other modules receive the frozen ``Config`` (or a part of
it) and never look keys up by string.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from enum import Enum
from pathlib import Path
from typing import Any, Final

import msgspec

from sip import ParseError, Uri
from sip.transport.dns import parse_nameserver

__all__ = [
    "AgentConfig",
    "Config",
    "ConfigError",
    "HttpConfig",
    "LogConfig",
    "QaRuleConfig",
    "QueueConfig",
    "SipConfig",
    "StorageConfig",
    "Strategy",
    "TranscriptionConfig",
    "WebRtcConfig",
    "load_config",
    "parse_config",
]

# Ports below this are privileged; a contact-center daemon should not need root to bind them.
_MIN_PORT: Final = 1
_MAX_PORT: Final = 65535
# Identifiers appear in metric labels, URLs and log lines: keep them to a safe, bounded alphabet.
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(Exception):
    """The configuration file is unreadable, not TOML, or does not describe a valid daemon.

    The message is meant for an operator: ``<file>: <key path>: expected ..., found ...``. It is never
    raised for a valid file; a config that loads is complete (every default filled in).
    """

    def __init__(self, file: str, key_path: str, problem: str) -> None:
        self.file = file
        self.key_path = key_path
        self.problem = problem
        where = f"{file}: {key_path}" if key_path else file
        super().__init__(f"{where}: {problem}")


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for every config table: immutable, unknown keys rejected."""


class LogFormat(Enum):
    AUTO = "auto"  # JSON lines when stderr is not a terminal, readable console output when it is
    JSON = "json"
    CONSOLE = "console"


class LogLevel(Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Strategy(Enum):
    """Agent order within a queue (mirrors ``routing_core.Strategy``; names are the config words)."""

    LONGEST_IDLE = "longest_idle"
    FEWEST_CALLS = "fewest_calls"
    LEAST_TALK_TIME = "least_talk_time"
    MOST_SKILLED = "most_skilled"
    ROUND_ROBIN = "round_robin"
    LINEAR = "linear"
    RANDOM = "random"
    WEIGHTED_RANDOM = "weighted_random"
    RING_ALL = "ring_all"


class LogConfig(_Struct, frozen=True):
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.AUTO


class HttpConfig(_Struct, frozen=True):
    bind: str = "127.0.0.1"
    port: int = 8080
    # Seconds a graceful shutdown waits for in-flight HTTP requests.
    shutdown_timeout_s: float = 5.0


class SipListener(_Struct, frozen=True):
    transport: str = "udp"  # udp | tcp | tls
    bind: str = "127.0.0.1"
    port: int = 5060
    cert_file: str = ""  # tls: PEM certificate chain we present
    key_file: str = ""  # tls: its PEM private key
    ca_file: str = ""  # tls: CAs our outbound TLS connections trust (empty: the system's)


class SipConfig(_Struct, frozen=True):
    listeners: tuple[SipListener, ...] = (SipListener(),)
    # RFC 3261 17.1.1.1 timer values; operators on lossy or slow links raise T1.
    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    realm: str = "acd"
    user_agent: str = "acd"
    # Digest algorithms challenged, in order. MD5 alone by default: many desk phones (and
    # baresip 1.0) fail to register when a 401 also offers SHA-256 (RFC 8760); add "SHA-256"
    # first where every phone supports it.
    digest_algorithms: tuple[str, ...] = ("MD5",)
    # RFC 4028 session timers, as Asterisk's session-timers: "accept" runs them when a trunk's
    # INVITE asks (refreshing ourselves if it says refresher=uas, hanging up a call whose
    # refreshes stop), "refuse" never does.
    session_timers: str = "accept"
    session_expires_s: int = 1800
    min_se_s: int = 90
    # RFC 3263: name servers for NAPTR/SRV/A/AAAA lookups of host names in trunks' outbound
    # proxies and agents' contacts, as "address" or "address:port"; empty: /etc/resolv.conf.
    dns_servers: tuple[str, ...] = ()
    dns_timeout_s: float = 2.0  # one DNS question, every retry and server included
    # An outbound INVITE whose target sends nothing (not even 100 Trying) for this long goes to
    # the next RFC 3263 target, when there is one (Kamailio's fr_timer); 0 waits for timer B.
    failover_timeout_s: float = 4.0


class StorageConfig(_Struct, frozen=True):
    # Empty means SQLite at ``sqlite_path``; a postgresql:// URL selects PostgreSQL.
    url: str = ""
    sqlite_path: str = "var/acd.sqlite3"


class RuntimeConfig(_Struct, frozen=True):
    # uvloop roughly halves per-packet overhead on the media path; "off" is for debugging.
    event_loop: str = "uvloop"
    var_dir: str = "var"
    # Grace period SIGTERM gives live calls before the daemon exits anyway.
    drain_timeout_s: float = 30.0


class RelaxStepConfig(_Struct, frozen=True):
    """One relaxation step: after ``after_s`` of waiting, widen who may take the call."""

    after_s: float
    # skill -> minimum level; absent keeps the queue's requirements
    requirements: dict[str, int] | None = None
    # agents whose penalty in this queue is <= max_penalty become eligible (Asterisk penalty steps)
    max_penalty: int | None = None


class QueueConfig(_Struct, frozen=True):
    name: str
    strategy: Strategy = Strategy.LONGEST_IDLE
    # skill -> minimum level a task in this queue needs by default
    requirements: dict[str, int] = msgspec.field(default_factory=dict)
    steps: tuple[RelaxStepConfig, ...] = ()
    weight: int = 0  # Asterisk `weight`: a heavier queue wins an agent both queues want
    ring_timeout_s: float = 20.0
    retry_delay_s: float = 2.0
    reject_delay_s: float = 0.0
    busy_delay_s: float = 0.0
    no_answer_delay_s: float = 0.0
    auto_pause_after: int = 0  # consecutive misses before the agent is paused; 0 = never
    wrap_up_s: float = 10.0
    max_length: int = 0  # 0 = unlimited; a caller beyond it goes to `overflow`
    max_wait_s: float = 0.0  # 0 = wait forever; then the caller goes to `overflow`
    overflow: str = (
        ""  # a flow name to run on max_length or max_wait (empty: hang up with a prompt)
    )
    join_empty: bool = True  # accept callers when no agent is logged in
    leave_empty: bool = False  # send waiting callers to `overflow` when the last agent logs out
    music_on_hold: str = "moh"  # a prompt name looped while waiting
    announce_every_s: float = 0.0  # 0 = no periodic announcements
    announce_position: bool = True
    announce_wait: bool = True
    service_level_s: float = 20.0
    record: str = "always"  # always | never | on_demand | a percentage such as "25%"
    encrypt_recordings: bool = False  # AES-256-GCM at rest with the active key
    retention_days: int | None = None  # None: [recordings] retention_days; 0 = keep forever


class LoginMode(Enum):
    REGISTER = "register"  # a SIP phone registers to us with digest auth
    STATIC = "static"  # reached at a fixed contact, typically an extension behind a PBX trunk
    WEBRTC = "webrtc"  # the browser agent desktop


class AgentConfig(_Struct, frozen=True):
    id: str
    name: str = ""
    password: str = ""  # digest password for the agent's phone (or use password_ha1)
    password_ha1: str = ""  # MD5(id:realm:password), so the file need not hold the password
    login: LoginMode = LoginMode.REGISTER
    contact: str = ""  # SIP URI for login = "static"
    trunk: str = ""  # trunk used to reach a static contact
    skills: dict[str, int] = msgspec.field(default_factory=dict)
    # queue name -> penalty (0 is the best)
    queues: dict[str, int] = msgspec.field(default_factory=dict)
    # channel -> how many at once (voice is 1; chat may be more)
    capacity: dict[str, int] = msgspec.field(default_factory=lambda: {"voice": 1})
    api_token: str = ""  # the agent's token for the API and the agent desktop


class TrunkConfig(_Struct, frozen=True):
    name: str
    # source networks allowed to send calls (IP ACL); empty means digest credentials are required
    allow: tuple[str, ...] = ()
    username: str = ""  # digest credentials a trunk must present (inbound)
    password: str = ""
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    # where we send outbound INVITEs (agents behind a PBX, transfers); host:port
    outbound_proxy: str = ""
    outbound_username: str = ""  # credentials we answer a 401/407 from the PBX with
    outbound_password: str = ""
    transport: str = "udp"  # udp | tcp | tls: how our INVITEs reach outbound_proxy"


class RouteConfig(_Struct, frozen=True):
    flow: str
    trunk: str = "*"  # trunk name, or "*" for any trunk
    number: str = ""  # dialed number (Request-URI user part), exact
    pattern: str = ""  # or a regular expression matched against the whole number


class AnswerStep(_Struct, frozen=True, tag="answer", tag_field="type"):
    pass


class PlayStep(_Struct, frozen=True, tag="play", tag_field="type"):
    prompt: str
    barge_in: bool = False  # a DTMF digit stops the prompt


class MenuStep(_Struct, frozen=True, tag="menu", tag_field="type"):
    prompt: str
    options: dict[str, str]  # digit -> flow name
    timeout_s: float = 5.0
    retries: int = 2
    invalid_prompt: str = ""
    default: str = ""  # flow run when retries are exhausted; empty = continue with the next step


class CollectStep(_Struct, frozen=True, tag="collect", tag_field="type"):
    var: str  # flow data key the digits are stored under
    prompt: str = ""
    min_digits: int = 1
    max_digits: int = 16
    terminator: str = "#"
    timeout_s: float = 5.0


class LookupStep(_Struct, frozen=True, tag="lookup", tag_field="type"):
    url: str  # HTTP(S) webhook; receives the call's data as JSON, returns JSON merged into it
    timeout_s: float = 2.0
    on_error: str = "continue"  # continue | hangup


class SetStep(_Struct, frozen=True, tag="set", tag_field="type"):
    queue: str = ""
    priority: int | None = None
    requirements: dict[str, int] | None = None
    data: dict[str, str] = msgspec.field(
        default_factory=dict
    )  # values may use {var} from flow data


class EnqueueStep(_Struct, frozen=True, tag="enqueue", tag_field="type"):
    queue: str = ""  # empty: the queue chosen by an earlier `set`


class TransferStep(_Struct, frozen=True, tag="transfer", tag_field="type"):
    trunk: str  # must have an outbound_proxy: the INVITE goes there
    number: str  # dialed at the trunk; may use {var} from flow data
    timeout_s: float = 30.0  # ring time before giving up (the flow then goes on)


class GotoStep(_Struct, frozen=True, tag="goto", tag_field="type"):
    flow: str


class HangupStep(_Struct, frozen=True, tag="hangup", tag_field="type"):
    prompt: str = ""


Step = (
    AnswerStep
    | PlayStep
    | MenuStep
    | CollectStep
    | LookupStep
    | SetStep
    | EnqueueStep
    | TransferStep
    | GotoStep
    | HangupStep
)


STEP_TYPES: Final = tuple(
    str(msgspec.inspect.type_info(t).tag)  # type: ignore[attr-defined]
    for t in Step.__args__
)


class FlowConfig(_Struct, frozen=True):
    name: str
    steps: tuple[Step, ...]


class Role(Enum):
    ADMIN = "admin"  # everything, including reload and recordings of any call
    SUPERVISOR = "supervisor"  # live figures, every agent and CDR, agent state changes
    AGENT = "agent"  # their own state, calls and queues (agents' tokens live in [[agents]])


class ApiToken(_Struct, frozen=True):
    name: str  # who holds it: appears in the audit log
    role: Role
    token: str = ""  # the bearer token itself, or
    token_sha256: str = ""  # its SHA-256 hex digest, so the file need not hold the secret


class ApiConfig(_Struct, frozen=True):
    tokens: tuple[ApiToken, ...] = ()


class RecordingsConfig(_Struct, frozen=True):
    dir: str = "var/recordings"  # where recordings are written (one file per call, by date)
    format: str = "wav"  # wav | flac | opus (compressed files are made from the WAV at close)
    # JSON keyring {"active": id, "keys": {id: base64}}; empty: ACD_RECORDING_KEYS in the environment
    key_file: str = ""
    flush_interval_s: float = 1.0  # at most this much audio is lost if the daemon is killed
    retention_days: int = 0  # default for queues without their own; 0 = keep forever
    purge_interval_s: float = 3600.0  # how often the retention purge runs
    agents_download_own: bool = False  # may agents fetch recordings of their own calls?


class MediaConfig(_Struct, frozen=True):
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    prompts_dir: str = ""  # empty: the prompts shipped with acd
    # seconds without RTP from a bridged leg before the call is ended (0 = never)
    inactivity_timeout_s: float = 30.0
    # processes that carry bridged calls' media (relay, tap, recording); 0 = the daemon itself
    workers: int = 0


class IceServerConfig(_Struct, frozen=True):
    """One ICE server handed to the browser and to the gateway's peer connections."""

    urls: tuple[str, ...]  # stun:host:port, turn:host:port?transport=udp, turns:...
    username: str = ""  # TURN only
    credential: str = ""  # TURN only


class WebRtcConfig(_Struct, frozen=True):
    """The media gateway for browser agents (engine/webrtc/gateway.py)."""

    enabled: bool = True
    # Empty: host candidates only. aiortc's own default would reach out to a public STUN server,
    # which a daemon that may have no internet (and should leak nothing) must not do.
    ice_servers: tuple[IceServerConfig, ...] = ()
    # Addresses offered as ICE host candidates; empty: every interface's (aioice's own choice,
    # which never includes loopback). Loopback is what the demo and the tests need.
    host_addresses: tuple[str, ...] = ("127.0.0.1",)
    # Each browser leg costs tens of ms of CPU per call-second (aiortc): a bound keeps a login
    # storm from starving the SIP side.
    max_sessions: int = 200
    # Worker processes running the legs' media (aiortc, codecs, RTP); 0: the daemon's own process.
    # Read at start: a change needs a restart.
    workers: int = 0


class QaRuleConfig(_Struct, frozen=True):
    """One QA rule over a call's transcript (engine/transcription/qa.py)."""

    name: str  # metric label and API key; may contain spaces ("risk disclosure")
    type: str  # required | forbidden | talk_ratio
    queues: tuple[str, ...] = ()  # empty: every queue
    channel: str = "agent"  # agent | caller | any (required, forbidden)
    phrases: tuple[str, ...] = ()  # any one of these wordings (required, forbidden)
    within_s: float = 0.0  # required: said within this long of the recording's start (0 = anywhere)
    min_similarity: float = 0.75  # fuzzy match 0..1 tolerating recognition errors
    min_ratio: float = 0.0  # talk_ratio: agent speech / all speech
    max_ratio: float = 1.0


class TranscriptionConfig(_Struct, frozen=True):
    """Offline speech recognition of recordings (engine/transcription/)."""

    engine: str = "pocketsphinx"  # built in, or an acd.transcribers entry point
    model: str = ""  # the engine's model directory; empty: the model bundled with the engine
    keyword_threshold: float = 1e-20  # PocketSphinx keyword-spotting threshold for rule phrases
    card_context: tuple[str, ...] = ("card", "number", "credit", "debit", "visa", "mastercard")
    card_min_digits: int = 4
    card_window_s: float = 20.0
    rules: tuple[QaRuleConfig, ...] = ()


class FeatureCodes(_Struct, frozen=True):
    ready: str = "*1"
    not_ready: str = "*2"
    logout: str = "*3"


class Config(_Struct, frozen=True):
    log: LogConfig = LogConfig()
    http: HttpConfig = HttpConfig()
    sip: SipConfig = SipConfig()
    media: MediaConfig = MediaConfig()
    storage: StorageConfig = StorageConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    features: FeatureCodes = FeatureCodes()
    api: ApiConfig = ApiConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    webrtc: WebRtcConfig = WebRtcConfig()
    transcription: TranscriptionConfig = TranscriptionConfig()
    trunks: tuple[TrunkConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    flows: tuple[FlowConfig, ...] = ()
    queues: tuple[QueueConfig, ...] = ()
    agents: tuple[AgentConfig, ...] = ()
    # Where this config came from, for messages; not a TOML key.
    source: str = ""


_VALIDATION_RE: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _toml_path(msgspec_path: str) -> str:
    """``$.queues[2].ring_timeout_s`` (msgspec) -> ``queues[2].ring_timeout_s`` (TOML terms)."""
    return msgspec_path.lstrip(".")


def _describe(value: Any) -> str:
    """A short, operator-readable picture of the value that was found."""
    if isinstance(value, dict):
        return "a table"
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    kind = kinds.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} {shown}"


def _lookup(raw: Any, path: str) -> tuple[bool, Any]:
    """Follow a msgspec key path through the raw TOML data; (found, value)."""
    if "[...]" in path:  # msgspec's marker for "some key of a table": no single value to show
        return False, None
    node = raw
    for part in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path):
        key, index = part
        try:
            node = node[key] if key else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, node


_TOML_TYPE_NAMES: Final = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "object": "a table",
    "array": "an array",
    "int | float": "a number",
}


def _field_type(path: str) -> Any:
    """The declared type at a key path of ``Config`` (None where the path leaves the structs)."""
    node: Any = Config
    for key, index in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path):
        if index:
            args = getattr(node, "__args__", ())
            node = args[0] if args else None
        elif isinstance(node, type) and issubclass(node, msgspec.Struct):
            hints = {f.name: f.type for f in msgspec.structs.fields(node)}
            node = hints.get(key)
        else:
            return None
        if node is None:
            return None
    return node


def _reword(message: str, raw: Any) -> tuple[str, str]:
    """Turn a msgspec ValidationError message into (key path, problem) in TOML terms."""
    match = _VALIDATION_RE.match(message)
    assert match is not None  # the pattern matches every string
    what = match.group("what")
    path = match.group("path") or ""
    key_path = _toml_path(path)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", what)
    if unknown:
        full = f"{key_path}.{unknown.group(1)}" if key_path else unknown.group(1)
        return full, "unknown key (misspelled, or not valid in this table)"
    missing = re.match(r"Object missing required field `([^`]+)`", what)
    if missing:
        full = f"{key_path}.{missing.group(1)}" if key_path else missing.group(1)
        return full, "required key is missing"
    found, value = _lookup(raw, path)
    found_text = f", found {_describe(value)}" if found else ""
    expected = re.match(r"Expected `([^`]+)`", what)
    if expected:
        wanted = _TOML_TYPE_NAMES.get(expected.group(1), expected.group(1))
        return key_path, f"expected {wanted}{found_text}"
    if what.startswith("Invalid value") and key_path.endswith(".type") and "steps[" in key_path:
        choices = ", ".join(repr(t) for t in STEP_TYPES)
        return key_path, f"expected a step type, one of {choices}{found_text}"
    if what.startswith("Invalid enum value"):
        declared = _field_type(path)
        if isinstance(declared, type) and issubclass(declared, Enum):
            choices = ", ".join(repr(m.value) for m in declared)
            return key_path, f"expected one of {choices}{found_text}"
    return key_path, what[:1].lower() + what[1:] + found_text


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


def outbound_proxy_uri(trunk: TrunkConfig) -> Uri | None:
    """The trunk's ``outbound_proxy`` as a SIP URI (None when it is not one): "host:port",
    "host" or a sip:/sips: URI, with ``;transport=`` from the trunk's ``transport`` unless the
    URI names one. RFC 3263 then locates it: a port or a numeric host needs no NAPTR/SRV."""
    text = trunk.outbound_proxy.strip()
    if not text.lower().startswith(("sip:", "sips:")):
        text = f"sip:{text}"
    try:
        uri = Uri.parse(text)
    except ParseError:
        return None
    if (
        not uri.host
        or uri.user is not None
        or uri.headers
        or (uri.port is not None and not 0 < uri.port < 65536)
    ):
        return None
    if trunk.transport != "udp" and uri.transport is None:
        uri = uri.with_param("transport", trunk.transport)
    return uri


def _validate(cfg: Config, file: str) -> None:
    """Cross-field rules msgspec's types cannot express; the first violation is reported."""
    _check_address(file, "http.bind", cfg.http.bind)
    _check_port(file, "http.port", cfg.http.port)
    _check_positive(file, "http.shutdown_timeout_s", cfg.http.shutdown_timeout_s, allow_zero=True)
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
    _validate_webrtc(cfg.webrtc, file)
    _validate_transcription(cfg, file)

    queue_names: set[str] = set()
    for i, queue in enumerate(cfg.queues):
        base = f"queues[{i}]"
        _check_name(file, f"{base}.name", queue.name)
        if queue.name in queue_names:
            raise ConfigError(file, f"{base}.name", f"duplicate queue name {queue.name!r}")
        queue_names.add(queue.name)
        _check_positive(file, f"{base}.ring_timeout_s", queue.ring_timeout_s)
        _check_positive(file, f"{base}.retry_delay_s", queue.retry_delay_s, allow_zero=True)
        _check_positive(file, f"{base}.wrap_up_s", queue.wrap_up_s, allow_zero=True)
        _check_positive(file, f"{base}.max_wait_s", queue.max_wait_s, allow_zero=True)
        _check_positive(file, f"{base}.service_level_s", queue.service_level_s)
        if queue.max_length < 0:
            raise ConfigError(
                file,
                f"{base}.max_length",
                f"expected >= 0 (0 = unlimited), found {queue.max_length}",
            )

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


_BUILTIN_TRANSCRIBERS: Final = ("pocketsphinx",)
_QA_RULE_TYPES: Final = ("required", "forbidden", "talk_ratio")


def _validate_transcription(cfg: Config, file: str) -> None:
    tc = cfg.transcription
    from importlib.metadata import entry_points

    engines = [*_BUILTIN_TRANSCRIBERS, *(ep.name for ep in entry_points(group="acd.transcribers"))]
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
    if tc.card_min_digits < 1:
        raise ConfigError(file, "transcription.card_min_digits", "expected an integer >= 1")
    _check_positive(file, "transcription.card_window_s", tc.card_window_s)
    queues = {q.name for q in cfg.queues}
    seen: set[str] = set()
    for i, rule in enumerate(tc.rules):
        base = f"transcription.rules[{i}]"
        if not 1 <= len(rule.name) <= 64 or not rule.name.strip():
            raise ConfigError(file, f"{base}.name", "expected 1-64 characters")
        if rule.name in seen:
            raise ConfigError(file, f"{base}.name", f"rule {rule.name!r} is defined twice")
        seen.add(rule.name)
        if rule.type not in _QA_RULE_TYPES:
            raise ConfigError(
                file, f"{base}.type", f"expected one of {_QA_RULE_TYPES}, found {rule.type!r}"
            )
        if rule.channel not in ("agent", "caller", "any"):
            raise ConfigError(
                file, f"{base}.channel", f"expected agent, caller or any, found {rule.channel!r}"
            )
        for j, queue in enumerate(rule.queues):
            if queue not in queues:
                raise ConfigError(file, f"{base}.queues[{j}]", _unknown("queue", queue, queues))
        if rule.type in ("required", "forbidden") and not any(p.strip() for p in rule.phrases):
            raise ConfigError(file, f"{base}.phrases", "expected at least one phrase")
        if not 0.0 < rule.min_similarity <= 1.0:
            raise ConfigError(file, f"{base}.min_similarity", "expected a number in (0, 1]")
        _check_positive(file, f"{base}.within_s", rule.within_s, allow_zero=True)
        if not 0.0 <= rule.min_ratio <= rule.max_ratio <= 1.0:
            raise ConfigError(
                file, f"{base}.max_ratio", "expected 0 <= min_ratio <= max_ratio <= 1"
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
    seen: set[str] = set()
    for i, trunk in enumerate(cfg.trunks):
        base = f"trunks[{i}]"
        _check_name(file, f"{base}.name", trunk.name)
        if trunk.name in seen:
            raise ConfigError(file, f"{base}.name", f"duplicate trunk name {trunk.name!r}")
        seen.add(trunk.name)
        for j, network in enumerate(trunk.allow):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    file,
                    f"{base}.allow[{j}]",
                    f"expected a network such as 192.0.2.0/24 or 127.0.0.1, found {network!r}",
                ) from None
        if not trunk.allow and not trunk.username:
            raise ConfigError(
                file, f"{base}.allow", "expected source networks or a username: the trunk is open"
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
            elif isinstance(step, LookupStep) and not step.url.startswith(("http://", "https://")):
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
    for i, agent in enumerate(cfg.agents):
        base = f"agents[{i}]"
        if agent.login is LoginMode.STATIC and not agent.contact.startswith(("sip:", "sips:")):
            raise ConfigError(
                file,
                f"{base}.contact",
                f"expected a sip: URI for login = 'static', found {agent.contact!r}",
            )
        if agent.trunk and agent.trunk not in trunks:
            raise ConfigError(file, f"{base}.trunk", _unknown("trunk", agent.trunk, trunks))
        for channel, count in agent.capacity.items():
            if count < 1:
                raise ConfigError(
                    file, f"{base}.capacity.{channel}", f"expected a capacity >= 1, found {count}"
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
    if not cfg.media.rtp_port_min < cfg.media.rtp_port_max:
        raise ConfigError(
            file, "media.rtp_port_max", f"expected > media.rtp_port_min ({cfg.media.rtp_port_min})"
        )


def parse_config(text: str, file: str) -> Config:
    """Decode and validate TOML text; ``file`` is only used in messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    if "source" in raw:
        raise ConfigError(file, "source", "unknown key (misspelled, or not valid in this table)")
    try:
        cfg = msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        path, problem = _reword(str(exc), raw)
        raise ConfigError(file, path, problem) from None
    cfg = msgspec.structs.replace(cfg, source=file)
    _validate(cfg, file)
    _validate_telephony(cfg, file)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; every failure is a :class:`ConfigError`."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read the file: {exc}") from None
    return parse_config(text, file)
