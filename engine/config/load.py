"""Reading a config: TOML text -> msgspec decode -> cross-field validation -> derived paths.

How this works: ``parse_config(text, file)`` parses with :mod:`tomllib`, decodes into ``Config``
and rewords msgspec's errors into the file's own key paths (``_reword``), then runs
``validate.validate`` and fills the state paths ``runtime.var_dir`` governs. ``load_config(path)``
reads the file first.

Plugins: the ``[plugins]`` table holds ``enabled`` and one ``[plugins.<name>]`` table per plugin,
which become ``PluginsConfig.settings``. The config layer knows no plugin: a caller that does
(``engine.plugins.load``) passes ``plugins``, a callable that gets the decoded ``PluginsConfig``,
loads those plugins (raising ``ConfigError`` for a broken one) and returns their
``PluginSchemas``. A step whose ``type`` is a plugin's is checked against that plugin's schema
(errors at the step's own key path, like a built-in step's) and kept as a ``PluginStep``; a
``lookup`` step's ``provider`` must be one an enabled plugin adds. Without ``plugins``, only
built-in steps and no providers are accepted.
"""

from __future__ import annotations

import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final

import msgspec

from engine.config.errors import ConfigError
from engine.config.overlay import AdminObject, apply_overlay
from engine.config.schema import STEP_TYPES, Config, PluginsConfig
from engine.config.validate import validate

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


def reword_validation_error(message: str, raw: Any) -> tuple[str, str]:
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


def _state_paths(cfg: Config, raw: dict[str, Any]) -> Config:
    """Fill the state paths the file leaves out from ``runtime.var_dir``: the SQLite database
    and the recordings root. A path the file gives stays as written (relative ones resolve
    against the working directory, as var_dir itself does)."""
    var = Path(cfg.runtime.var_dir)
    storage, recordings = cfg.storage, cfg.recordings
    if "sqlite_path" not in raw.get("storage", {}):
        storage = msgspec.structs.replace(storage, sqlite_path=str(var / "acd.sqlite3"))
    if "dir" not in raw.get("recordings", {}):
        recordings = msgspec.structs.replace(recordings, dir=str(var / "recordings"))
    return msgspec.structs.replace(cfg, storage=storage, recordings=recordings)


@dataclass(frozen=True, slots=True)
class ConfigNames:
    """The names a plugin step may refer to, for its ``check``."""

    flows: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()


StepCheck = Callable[[Any, ConfigNames], "str | None"]


@dataclass(frozen=True, slots=True)
class PluginSchemas:
    """What the enabled plugins add to the file's vocabulary."""

    # step type -> the msgspec struct a step's keys (all but `type`) must decode into
    steps: Mapping[str, type[msgspec.Struct]] = field(default_factory=dict)
    # step type -> a check of the decoded step beyond its types (the flows and queues it names
    # exist, ...): None, or the problem
    checks: Mapping[str, StepCheck] = field(default_factory=dict)
    lookups: frozenset[str] = frozenset()  # lookup provider names


PluginResolver = Callable[[PluginsConfig, str], PluginSchemas]


def _plugins_table(raw: dict[str, Any], file: str) -> PluginsConfig:
    """``[plugins]``: ``enabled`` plus ``[plugins.<name>]`` tables, rewritten in ``raw`` into
    the ``PluginsConfig`` shape (``settings``), and decoded."""
    table = raw.get("plugins")
    if table is None:
        return PluginsConfig()
    if not isinstance(table, dict):
        raise ConfigError(file, "plugins", f"expected a table, found {_describe(table)}")
    enabled = table.get("enabled", [])
    settings: dict[str, Any] = {}
    for name, value in table.items():
        if name == "enabled":
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                file,
                f"plugins.{name}",
                f"expected a table of that plugin's settings, found {_describe(value)}",
            )
        if not isinstance(enabled, list) or name not in enabled:
            raise ConfigError(
                file,
                f"plugins.{name}",
                f"settings of a plugin that is not enabled (plugins.enabled = {enabled!r})",
            )
        settings[name] = value
    raw["plugins"] = {"enabled": enabled, "settings": settings}
    try:
        cfg = msgspec.convert(raw["plugins"], PluginsConfig, strict=True)
    except msgspec.ValidationError as exc:
        path, problem = reword_validation_error(str(exc), raw["plugins"])
        raise ConfigError(file, f"plugins.{path}", problem) from None
    seen: set[str] = set()
    for i, name in enumerate(cfg.enabled):
        if name in seen:
            raise ConfigError(file, f"plugins.enabled[{i}]", f"{name!r} is listed twice")
        seen.add(name)
    return cfg


def _plugin_steps(raw: dict[str, Any], file: str, schemas: PluginSchemas) -> None:
    """Check plugin steps against their plugin's schema and rewrite them (in ``raw``) as
    ``PluginStep`` tables; check lookup providers. Shapes msgspec will reject anyway (flows
    not an array, a step not a table) are left for it to report."""
    flows = raw.get("flows")
    if not isinstance(flows, list):
        return

    def names(table: str) -> frozenset[str]:
        entries = raw.get(table)
        if not isinstance(entries, list):
            return frozenset()
        return frozenset(
            e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)
        )

    known = ConfigNames(flows=names("flows"), queues=names("queues"))
    for i, flow in enumerate(flows):
        steps = flow.get("steps") if isinstance(flow, dict) else None
        if not isinstance(steps, list):
            continue
        for j, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("type"), str):
                continue
            where, kind = f"flows[{i}].steps[{j}]", step["type"]
            if kind == "lookup" and "provider" in step:
                provider = step["provider"]
                if isinstance(provider, str) and provider not in schemas.lookups:
                    offered = ", ".join(repr(p) for p in sorted(schemas.lookups)) or "none"
                    raise ConfigError(
                        file,
                        f"{where}.provider",
                        "expected a lookup provider of an enabled plugin "
                        f"(enabled plugins add: {offered}), found {provider!r}",
                    )
            if kind in STEP_TYPES:
                continue
            schema = schemas.steps.get(kind)
            if schema is None:
                choices = ", ".join(repr(t) for t in STEP_TYPES)
                if schemas.steps:
                    extra = ", ".join(repr(t) for t in sorted(schemas.steps))
                    choices += f"; or an enabled plugin's: {extra}"
                raise ConfigError(
                    file,
                    f"{where}.type",
                    f"expected a step type, one of {choices}, found {_describe(kind)}",
                )
            settings = {k: v for k, v in step.items() if k != "type"}
            try:
                decoded = msgspec.convert(settings, schema, strict=True)
            except msgspec.ValidationError as exc:
                path, problem = reword_validation_error(str(exc), settings)
                raise ConfigError(file, f"{where}.{path}" if path else where, problem) from None
            check = schemas.checks.get(kind)
            refused = None if check is None else check(decoded, known)
            if refused:
                raise ConfigError(file, where, refused)
            steps[j] = {"type": "plugin", "name": kind, "settings": settings}


def parse_config(
    text: str,
    file: str,
    *,
    plugins: PluginResolver | None = None,
    overlay: Sequence[AdminObject] = (),
) -> Config:
    """Decode and validate TOML text; ``file`` is only used in messages. ``plugins`` loads the
    enabled plugins (see the module's docstring); ``overlay`` are the admin API's stored agents
    and queues, applied on top of the file's before anything is decoded or checked."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    apply_overlay(raw, overlay)
    if "source" in raw:
        raise ConfigError(file, "source", "unknown key (misspelled, or not valid in this table)")
    plugins_cfg = _plugins_table(raw, file)
    schemas = PluginSchemas() if plugins is None else plugins(plugins_cfg, file)
    _plugin_steps(raw, file, schemas)
    try:
        cfg = msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        path, problem = reword_validation_error(str(exc), raw)
        raise ConfigError(file, path, problem) from None
    cfg = msgspec.structs.replace(cfg, source=file)
    if not cfg.runtime.var_dir.strip():
        raise ConfigError(file, "runtime.var_dir", "expected a directory, found an empty string")
    cfg = _state_paths(cfg, raw)
    if not cfg.runtime.node:
        node = socket.gethostname().split(".")[0][:64] or "acd"
        cfg = msgspec.structs.replace(cfg, runtime=msgspec.structs.replace(cfg.runtime, node=node))
    validate(cfg, file)
    return cfg


def read_config_text(path: str | Path) -> str:
    """The config file's text; every failure is a :class:`ConfigError`."""
    file = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read the file: {exc}") from None


def load_config(
    path: str | Path,
    *,
    plugins: PluginResolver | None = None,
    overlay: Sequence[AdminObject] = (),
) -> Config:
    """Read and validate a config file; every failure is a :class:`ConfigError`."""
    return parse_config(read_config_text(path), str(path), plugins=plugins, overlay=overlay)
