"""Finding, loading and checking plugins: installed entry points -> the enabled ``PluginSet``.

How this works: ``installed()`` lists the entry points of group ``acd.plugins`` (real
``importlib.metadata`` discovery, re-read on every call, so a reload sees a newly installed
package). ``load_plugins(cfg, file)`` loads the plugins ``cfg.enabled`` names, in that order:
imports the entry point, checks it is a ``Plugin`` of that name, decodes its ``[plugins.<name>]``
settings with its schema, checks its QA rule packs, builds its event consumers, and refuses two
plugins adding the same step type or lookup provider. Every failure is a ``ConfigError`` naming
the plugin and the key (``plugins.enabled[0]``, ``plugins.<name>.key``), which ``acd run`` and
``acd check-config`` print and a reload logs (the running config and plugins stay).

``load_config(path)`` / ``parse_config(text, file)`` are ``engine.config``'s with the enabled
plugins resolved: (config, plugins). The daemon, ``acd check-config`` and reload use them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Final

import msgspec

from engine.config import (
    STEP_TYPES,
    AdminObject,
    Config,
    ConfigError,
    PluginSchemas,
    PluginsConfig,
    QaRuleConfig,
    reword_validation_error,
)
from engine.config import load_config as _load_config
from engine.config import parse_config as _parse_config
from engine.config.validate import check_qa_rules
from engine.plugins.api import EventConsumer, LookupRun, Plugin, StepType

GROUP: Final = "acd.plugins"
# Step types and provider names appear in config files, logs and CDR reasons.
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class Installed:
    """One installed plugin entry point (not loaded)."""

    name: str
    value: str  # module:attribute
    distribution: str
    version: str


def installed() -> list[Installed]:
    """The installed plugins' entry points, by name."""
    found = []
    for ep in entry_points(group=GROUP):
        dist = ep.dist
        found.append(
            Installed(
                ep.name,
                ep.value,
                dist.metadata["Name"] if dist is not None else "",
                dist.version if dist is not None else "",
            )
        )
    return sorted(found, key=lambda i: i.name)


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    plugin: Plugin
    settings: Any  # decoded with plugin.settings (None without a schema)
    consumers: tuple[EventConsumer, ...] = ()


@dataclass(frozen=True, slots=True)
class PluginSet:
    """The enabled plugins of one config, loaded and checked."""

    plugins: tuple[LoadedPlugin, ...] = ()
    steps: Mapping[str, tuple[LoadedPlugin, StepType]] = field(default_factory=dict)
    lookups: Mapping[str, tuple[LoadedPlugin, LookupRun]] = field(default_factory=dict)
    qa_rules: Mapping[str, tuple[QaRuleConfig, ...]] = field(default_factory=dict)

    def schemas(self) -> PluginSchemas:
        return PluginSchemas(
            steps={name: step.schema for name, (_p, step) in self.steps.items()},
            checks={name: s.check for name, (_p, s) in self.steps.items() if s.check is not None},
            lookups=frozenset(self.lookups),
        )

    @property
    def consumers(self) -> tuple[tuple[str, EventConsumer], ...]:
        """(plugin name, consumer) for every event consumer of every enabled plugin."""
        return tuple((lp.plugin.name, c) for lp in self.plugins for c in lp.consumers)


def _load_entry_point(ep: EntryPoint, file: str, where: str) -> Plugin:
    try:
        value = ep.load()
    except Exception as exc:  # any import-time failure of third-party code is this plugin's
        raise ConfigError(
            file,
            where,
            f"plugin {ep.name!r} failed to load ({ep.value}): {type(exc).__name__}: {exc}",
        ) from exc
    if not isinstance(value, Plugin):
        raise ConfigError(
            file,
            where,
            f"plugin {ep.name!r}: {ep.value} is a {type(value).__name__}, expected an "
            "engine.plugins.Plugin",
        )
    if value.name != ep.name:
        raise ConfigError(
            file,
            where,
            f"plugin {ep.name!r}: its Plugin is named {value.name!r}, expected the entry point's name",
        )
    return value


def _settings(plugin: Plugin, raw: dict[str, Any] | None, file: str) -> Any:
    base = f"plugins.{plugin.name}"
    if plugin.settings is None:
        if raw:
            raise ConfigError(file, base, f"plugin {plugin.name!r} takes no settings")
        return None
    try:
        return msgspec.convert(raw or {}, plugin.settings, strict=True)
    except msgspec.ValidationError as exc:
        path, problem = reword_validation_error(str(exc), raw or {})
        raise ConfigError(file, f"{base}.{path}" if path else base, problem) from None


def _check_qa(plugin: Plugin, file: str, where: str) -> dict[str, tuple[QaRuleConfig, ...]]:
    packs: dict[str, tuple[QaRuleConfig, ...]] = {}
    for pack, rules in plugin.qa_rules.items():
        rules = tuple(rules)
        # A pack names no queue of its own: the config's queues are not its business.
        queues = {q for rule in rules for q in rule.queues}
        try:
            check_qa_rules(rules, queues, file)
        except ConfigError as exc:
            raise ConfigError(
                file,
                where,
                f"plugin {plugin.name!r}: QA rule pack {pack!r}: {exc.key_path}: {exc.problem}",
            ) from None
        packs[pack] = rules
    return packs


def load_plugins(cfg: PluginsConfig, file: str) -> PluginSet:
    """Load and check the plugins ``cfg`` enables; ``file`` names the config in errors."""
    available = {ep.name: ep for ep in entry_points(group=GROUP)}
    loaded: list[LoadedPlugin] = []
    steps: dict[str, tuple[LoadedPlugin, StepType]] = {}
    lookups: dict[str, tuple[LoadedPlugin, LookupRun]] = {}
    qa_rules: dict[str, tuple[QaRuleConfig, ...]] = {}
    owner: dict[str, str] = {}
    for i, name in enumerate(cfg.enabled):
        where = f"plugins.enabled[{i}]"
        ep = available.get(name)
        if ep is None:
            known = ", ".join(repr(n) for n in sorted(available)) or "none"
            raise ConfigError(
                file, where, f"no installed plugin named {name!r} (installed: {known})"
            )
        plugin = _load_entry_point(ep, file, where)
        settings = _settings(plugin, cfg.settings.get(name), file)
        problem = None if plugin.check_settings is None else plugin.check_settings(settings)
        if problem:
            raise ConfigError(file, f"plugins.{name}", f"plugin {name!r}: {problem}")
        consumers = []
        for factory in plugin.consumers:
            try:
                consumers.append(factory(settings))
            except Exception as exc:  # the plugin's own code refusing its settings
                raise ConfigError(
                    file,
                    f"plugins.{name}",
                    f"plugin {name!r}: its event consumer refused the settings: "
                    f"{type(exc).__name__}: {exc}",
                ) from exc
        entry = LoadedPlugin(plugin, settings, tuple(consumers))
        for kind, names in (("step type", plugin.steps), ("lookup provider", plugin.lookups)):
            for added in names:
                if not _NAME_RE.match(added) or (kind == "step type" and added in STEP_TYPES):
                    raise ConfigError(
                        file,
                        where,
                        f"plugin {name!r}: {kind} {added!r} is not allowed (a built-in, or not "
                        "lower-case letters, digits and '_')",
                    )
                key = f"{kind} {added}"
                if key in owner:
                    raise ConfigError(
                        file,
                        where,
                        f"plugin {name!r}: {kind} {added!r} is also added by plugin {owner[key]!r}",
                    )
                owner[key] = name
        steps.update({n: (entry, s) for n, s in plugin.steps.items()})
        lookups.update({n: (entry, f) for n, f in plugin.lookups.items()})
        for pack, rules in _check_qa(plugin, file, where).items():
            if pack in qa_rules:
                raise ConfigError(
                    file,
                    where,
                    f"plugin {name!r}: QA rule pack {pack!r} is also added by another plugin",
                )
            qa_rules[pack] = rules
        loaded.append(entry)
    return PluginSet(tuple(loaded), steps, lookups, qa_rules)


class _Resolver:
    """The ``plugins`` callable of ``engine.config.parse_config``, keeping what it loaded."""

    def __init__(self) -> None:
        self.loaded = PluginSet()

    def __call__(self, cfg: PluginsConfig, file: str) -> PluginSchemas:
        self.loaded = load_plugins(cfg, file)
        return self.loaded.schemas()


def load_config(
    path: str | Path, *, overlay: Sequence[AdminObject] = ()
) -> tuple[Config, PluginSet]:
    """Read and validate a config file with its enabled plugins and the admin API's stored
    objects (``overlay``) on top; failures are ConfigError."""
    resolver = _Resolver()
    config = _load_config(path, plugins=resolver, overlay=overlay)
    return config, resolver.loaded


def parse_config(
    text: str, file: str, *, overlay: Sequence[AdminObject] = ()
) -> tuple[Config, PluginSet]:
    resolver = _Resolver()
    config = _parse_config(text, file, plugins=resolver, overlay=overlay)
    return config, resolver.loaded
