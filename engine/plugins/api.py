"""What a plugin is made of: the types a plugin package imports to describe what it adds.

How this works: a plugin package exposes one ``Plugin`` value through an entry point of group
``acd.plugins`` whose name is the plugin's name (``docs/plugins.md`` has a whole example). The
daemon loads only the plugins ``[plugins] enabled`` lists; the ``[plugins.<name>]`` table is
decoded into ``Plugin.settings`` (a msgspec struct; unknown keys rejected) and handed to the
plugin's code in every ``StepContext`` and to its event consumers' factories.

- ``steps``: flow step types. A step's keys (all but ``type``) are decoded into ``StepType.schema``
  when the config is read, so a bad key is a config error at ``flows[i].steps[j].key``; at run
  time ``StepType.run(step, ctx)`` gets that decoded struct and returns None (go on with the next
  step) or a ``StepResult`` (hang up, or jump to a flow). An exception ends that one call with
  the CDR hangup reason ``plugin_error``.
- ``lookups``: lookup providers, named by ``{ type = "lookup", provider = "..." }``: an async
  function of (flow data, context) returning a mapping merged into the flow data like a lookup
  webhook's answer; an exception is a failed lookup (the step's ``on_error`` decides).
- ``qa_rules``: QA rule packs, name -> rules (``engine.transcription`` rules), checked when loaded.
- ``consumers``: event consumer factories: ``factory(settings)`` returns a function called with
  every live event (``engine.runtime.events.Event``) the daemon publishes. It must not block:
  queue the work and do it in your own task, or drop it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import msgspec

from engine.config import ConfigNames, QaRuleConfig
from engine.runtime.events import Event


class CallControls(Protocol):
    """The call's leg as a plugin step sees it (a subset of ``engine.calls.flows.CallIO``)."""

    async def answer(self) -> None: ...

    async def play(self, prompts: Sequence[str], *, barge_in: bool) -> str | None:
        """Play prompts (names of prompt files) in order; with barge_in, stop at the first DTMF
        digit and return it."""
        ...

    async def read_digits(
        self, *, max_digits: int, terminator: str, timeout_s: float, first: str = ""
    ) -> str:
        """Collect DTMF until the terminator, max_digits, or timeout_s between digits."""
        ...


class TaskControls(Protocol):
    """The daemon's task service (engine.tasks) as a plugin step sees it: tickets, follow-ups."""

    async def create_task(
        self,
        *,
        channel: str,
        queue: str,
        created_by: str,
        subject: str | None = None,
        data: dict[str, Any] | None = None,
        customer: dict[str, Any] | None = None,
        priority: int = 0,
        requirements: Mapping[str, int] | None = None,
        external_id: str | None = None,
        not_before: float | None = None,
    ) -> str:
        """Store a new task (scheduled when ``not_before``, epoch seconds, is still to come) and
        return its id; for an ``external_id`` seen before, the first task's id (so a retried
        step makes no second ticket). Raises ValueError naming the field the task service
        refused (no such queue, channel, ...)."""
        ...


@dataclass(slots=True)
class StepContext:
    """What a plugin's step or lookup runs with."""

    call: CallControls
    data: dict[str, Any]  # the call's flow data: read it, write results into it (scalars)
    settings: Any  # this plugin's decoded [plugins.<name>] settings (None without a schema)
    http: aiohttp.ClientSession | None  # the daemon's pooled HTTP client (None in some tests)
    call_id: str = ""  # the call's id (the CDR's), to link what the step makes to the call
    tasks: TaskControls | None = None  # the daemon's task service (None in some tests)


@dataclass(frozen=True, slots=True)
class StepResult:
    """How a plugin step ends the flow, when it does not simply go on to the next step."""

    hangup: bool = False
    reason: str = ""  # the CDR's hangup reason when hanging up (default "flow hangup")
    prompt: str = ""  # a prompt played before hanging up
    goto: str = ""  # a flow to jump to instead (counts as a jump, like `goto`)


StepRun = Callable[[Any, StepContext], Awaitable[StepResult | None]]
LookupRun = Callable[[dict[str, Any], StepContext], Awaitable[Mapping[str, Any]]]
EventConsumer = Callable[[Event], None]
ConsumerFactory = Callable[[Any], EventConsumer]


@dataclass(frozen=True, slots=True)
class StepType:
    schema: type[msgspec.Struct]  # the step's keys; use forbid_unknown_fields=True
    run: StepRun
    # rules beyond the schema's types (a range, a flow or queue it names exists): given the
    # decoded step and the config's flow and queue names (engine.config.ConfigNames), the
    # problem or None; reported at the step's key path when the config is read
    check: Callable[[Any, ConfigNames], str | None] | None = None


@dataclass(frozen=True, slots=True)
class Plugin:
    name: str  # must equal the entry point's name
    version: str = ""
    description: str = ""
    settings: type[msgspec.Struct] | None = None  # the [plugins.<name>] table; None: no settings
    # rules beyond the settings' types: the problem, or None (reported at plugins.<name>)
    check_settings: Callable[[Any], str | None] | None = None
    steps: Mapping[str, StepType] = field(default_factory=dict)
    lookups: Mapping[str, LookupRun] = field(default_factory=dict)
    qa_rules: Mapping[str, Sequence[QaRuleConfig]] = field(default_factory=dict)
    consumers: Sequence[ConsumerFactory] = ()
