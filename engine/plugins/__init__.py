"""Plugins: third-party packages that add flow steps, lookup providers, QA rule packs and event
consumers, without forking the core (DESIGN.md section 9: industry packs are plugins).

How this works: a plugin is a ``Plugin`` value (``api``) published as an entry point of group
``acd.plugins``. ``loader`` finds the installed ones and loads those ``[plugins] enabled`` names
(at start, on every reload and in ``acd check-config``), checking their settings and steps with
the same file-and-key errors as the rest of the config. The call flow runner
(``engine.calls.flows``) runs plugin steps and providers; the daemon subscribes the event
consumers to its event bus. docs/plugins.md walks through an example plugin.

Where things are: ``api`` (what a plugin package imports), ``loader`` (discovery, loading, the
``PluginSet`` of one config, ``load_config``/``parse_config`` with plugins resolved).
"""

from engine.plugins.api import (
    CallControls,
    ConsumerFactory,
    EventConsumer,
    LookupRun,
    Plugin,
    StepContext,
    StepResult,
    StepRun,
    StepType,
    TaskControls,
)
from engine.plugins.loader import (
    GROUP,
    Installed,
    LoadedPlugin,
    PluginSet,
    installed,
    load_config,
    load_plugins,
    parse_config,
)

__all__ = [
    "GROUP",
    "CallControls",
    "ConsumerFactory",
    "EventConsumer",
    "Installed",
    "LoadedPlugin",
    "LookupRun",
    "Plugin",
    "PluginSet",
    "StepContext",
    "StepResult",
    "StepRun",
    "StepType",
    "TaskControls",
    "installed",
    "load_config",
    "load_plugins",
    "parse_config",
]
