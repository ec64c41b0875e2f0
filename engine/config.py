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

__all__ = [
    "AgentConfig",
    "Config",
    "ConfigError",
    "HttpConfig",
    "LogConfig",
    "QueueConfig",
    "SipConfig",
    "StorageConfig",
    "Strategy",
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
    transport: str = "udp"
    bind: str = "127.0.0.1"
    port: int = 5060


class SipConfig(_Struct, frozen=True):
    listeners: tuple[SipListener, ...] = (SipListener(),)
    # RFC 3261 17.1.1.1 timer values; operators on lossy or slow links raise T1.
    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    realm: str = "acd"
    user_agent: str = "acd"


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


class QueueConfig(_Struct, frozen=True):
    name: str
    strategy: Strategy = Strategy.LONGEST_IDLE
    ring_timeout_s: float = 20.0
    retry_delay_s: float = 2.0
    wrap_up_s: float = 10.0
    max_length: int = 0
    max_wait_s: float = 0.0
    service_level_s: float = 20.0


class AgentConfig(_Struct, frozen=True):
    id: str
    name: str = ""
    password: str = ""
    skills: dict[str, int] = msgspec.field(default_factory=dict)
    # queue name -> penalty (0 is the best)
    queues: dict[str, int] = msgspec.field(default_factory=dict)


class Config(_Struct, frozen=True):
    log: LogConfig = LogConfig()
    http: HttpConfig = HttpConfig()
    sip: SipConfig = SipConfig()
    storage: StorageConfig = StorageConfig()
    runtime: RuntimeConfig = RuntimeConfig()
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
    for key in ("t1_ms", "t2_ms", "t4_ms"):
        _check_positive(file, f"sip.{key}", getattr(cfg.sip, key))
    if cfg.sip.t2_ms < cfg.sip.t1_ms:
        raise ConfigError(
            file, "sip.t2_ms", f"expected >= sip.t1_ms ({cfg.sip.t1_ms}), found {cfg.sip.t2_ms}"
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
        for skill, level in agent.skills.items():
            _check_name(file, f"{base}.skills.{skill}", skill)
            if not 1 <= level <= 100:
                raise ConfigError(
                    file, f"{base}.skills.{skill}", f"expected a level 1..100, found {level}"
                )
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
