"""Call flows: the declarative steps of ``[[flows]]`` run against one call.

How this works: ``FlowRunner.run(flow, io, data)`` walks the steps of a flow. Audio and DTMF go through
the ``CallIO`` protocol, which the call's SIP/media leg implements (and which has nothing to do with
routing); the runner itself only decides. A flow ends in one ``FlowOutcome``: enqueue (with queue,
priority, requirements), hang up, or ran out of steps; a ``transfer`` that connects never returns
(the call ends bridged), one that fails records why in the data and the flow goes on. ``menu`` options and ``goto`` jump to
another flow; the jump count is bounded so a config loop ends the call with a clear reason instead of
spinning. ``lookup`` POSTs the call's data as JSON to a webhook (a CRM) and merges the JSON object it
returns; a slow or broken CRM costs at most ``timeout_s`` and follows ``on_error``. A lookup
with ``provider`` calls an enabled plugin's provider instead, under the same rules.

Plugin steps (``PluginStep``, engine.plugins) run the plugin's code with the step's decoded
settings and a ``StepContext``; it goes on, hangs up or jumps. An exception from a plugin's step
ends that call (reason ``plugin_error``, logged with the call's id and counted), never the daemon.

Data gathered on the way (collected digits, lookup results, ``set`` values) travels with the call
(``FlowOutcome.data``) to the agent's screen-pop and into the CDR's ``flow_data``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import msgspec
import structlog

from engine.calls.model import CallEnded
from engine.config import (
    AnswerStep,
    CollectStep,
    Config,
    EnqueueStep,
    FlowConfig,
    GotoStep,
    HangupStep,
    LookupStep,
    MenuStep,
    PlayStep,
    PluginStep,
    SetStep,
    TransferStep,
)
from engine.plugins import PluginSet, StepContext, StepResult, TaskControls

log = structlog.stdlib.get_logger("acd.flows")

# Jumps (menu choices, goto) one call may make before the flow is declared a loop. A real IVR tree
# is rarely deeper than 10; a caller pressing "back" repeatedly stays well under this.
MAX_FLOW_JUMPS = 50
# A lookup response larger than this is not a caller record; refuse it rather than load it.
MAX_LOOKUP_BYTES = 64 * 1024
# Flow data values are bounded: they go to logs, screen-pops and CDR rows.
MAX_DATA_VALUE_CHARS = 256


class CallIO(Protocol):
    """What a flow needs from the call's leg. Implemented by the SIP/media call."""

    async def answer(self) -> None: ...

    async def play(self, prompts: Sequence[str], *, barge_in: bool) -> str | None:
        """Play prompts in order; with barge_in, stop at the first DTMF digit and return it."""
        ...

    async def read_digits(
        self, *, max_digits: int, terminator: str, timeout_s: float, first: str = ""
    ) -> str:
        """Collect DTMF until the terminator, max_digits, or timeout_s of silence between digits."""
        ...

    async def transfer(self, trunk: str, number: str, *, timeout_s: float) -> str:
        """Blind transfer: call ``number`` through ``trunk`` and bridge the caller to it. Returns
        only when the far end did not answer, with why ("busy", "rejected", "no_answer",
        "failed"); once bridged it does not return (the call ends when a side hangs up)."""
        ...


@dataclass(frozen=True, slots=True)
class FlowOutcome:
    kind: str  # "enqueue" | "hangup" | "ended"
    queue: str = ""
    priority: int = 0
    requirements: dict[str, int] | None = None
    preferred_agent: str = ""  # from a `set` (expanded from flow data): offered this agent first
    reason: str = ""
    hangup_prompt: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def expand(template: str, data: dict[str, Any]) -> str:
    """``"{account}-{vip}"`` with flow data; unknown names expand to an empty string."""
    return re.sub(r"\{([a-z_][a-z0-9_]*)\}", lambda m: str(data.get(m.group(1), "")), template)


def _clean(value: Any) -> str | int | float | bool | None:
    """Lookup values kept in flow data: scalars only, strings bounded."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)[:MAX_DATA_VALUE_CHARS]


_DATA_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _bound(data: dict[str, Any]) -> None:
    """What a plugin wrote into flow data, held to what the other steps write: string keys,
    scalar values, strings bounded (flow data goes to logs, screen-pops, CDR rows)."""
    for key in list(data):
        if isinstance(key, str):
            data[key] = _clean(data[key])
        else:
            del data[key]


class PluginStepFailed(Exception):
    """A plugin's step raised (or answered nonsense); the call ends with ``plugin_error``."""


class FlowRunner:
    def __init__(
        self,
        config: Config,
        http: aiohttp.ClientSession | None = None,
        *,
        plugins: PluginSet | None = None,
        on_plugin_error: Callable[[], None] | None = None,
        tasks: TaskControls | None = None,
    ) -> None:
        self._flows: dict[str, FlowConfig] = {f.name: f for f in config.flows}
        self._http = http
        self._plugins = plugins or PluginSet()
        self._on_plugin_error = on_plugin_error
        # the task service plugin steps create tickets and follow-ups with (the daemon sets it
        # once its task service is up)
        self.tasks = tasks
        self.lookups_failed = 0
        self.plugin_errors = 0

    def apply(self, config: Config, plugins: PluginSet | None = None) -> None:
        """A reloaded config: calls already in a flow keep the steps they hold; new calls get these
        (and the plugins loaded with them)."""
        self._flows = {f.name: f for f in config.flows}
        self._plugins = plugins or PluginSet()

    async def run(
        self, flow: str, io: CallIO, data: dict[str, Any] | None = None, *, call_id: str = ""
    ) -> FlowOutcome:
        """Run ``flow``; ``data`` is filled in place, so what was gathered before a caller hangs up
        mid-flow still reaches the CDR. ``call_id`` is handed to plugin steps."""
        data = {} if data is None else data
        state: dict[str, Any] = {
            "queue": "", "priority": 0, "requirements": None, "preferred_agent": "",
        }  # fmt: skip
        current, position, jumps = self._flows[flow], 0, 0
        while True:
            if position >= len(current.steps):
                return FlowOutcome("ended", data=data, reason="flow ended")
            step = current.steps[position]
            position += 1
            jump: str | None = None
            if isinstance(step, AnswerStep):
                await io.answer()
            elif isinstance(step, PlayStep):
                await io.play([step.prompt], barge_in=step.barge_in)
            elif isinstance(step, MenuStep):
                jump = await self._menu(step, io)
            elif isinstance(step, CollectStep):
                first = await io.play([step.prompt], barge_in=True) if step.prompt else None
                digits = await io.read_digits(
                    max_digits=step.max_digits,
                    terminator=step.terminator,
                    timeout_s=step.timeout_s,
                    first=first or "",
                )
                data[step.var] = digits if len(digits) >= step.min_digits else ""
            elif isinstance(step, LookupStep):
                found = (
                    await self._provider_lookup(step, io, data)
                    if step.provider
                    else await self._lookup(step, data)
                )
                if not found and step.on_error == "hangup":
                    return FlowOutcome("hangup", data=data, reason="lookup failed")
            elif isinstance(step, SetStep):
                if step.queue:
                    state["queue"] = step.queue
                if step.priority is not None:
                    state["priority"] = step.priority
                if step.requirements is not None:
                    state["requirements"] = dict(step.requirements)
                if step.preferred_agent:
                    state["preferred_agent"] = expand(step.preferred_agent, data)
                if step.tier:
                    tier = expand(step.tier, data)[:MAX_DATA_VALUE_CHARS]
                    data["tier"] = tier
                    if tier in step.priorities:
                        state["priority"] = step.priorities[tier]
                for key, template in step.data.items():
                    data[key] = expand(template, data)[:MAX_DATA_VALUE_CHARS]
            elif isinstance(step, EnqueueStep):
                queue = step.queue or state["queue"]
                if not queue:
                    return FlowOutcome("hangup", data=data, reason="enqueue without a queue")
                return FlowOutcome(
                    "enqueue",
                    queue=queue,
                    priority=state["priority"],
                    requirements=state["requirements"],
                    preferred_agent=state["preferred_agent"],
                    data=data,
                )
            elif isinstance(step, TransferStep):
                # Like Asterisk's Dial() and DIALSTATUS: a failed transfer goes on with the next
                # step (an apology, a queue, voicemail...) which can branch on the status.
                number = expand(step.number, data)
                data["transfer_target"] = number
                data["transfer_status"] = await io.transfer(
                    step.trunk, number, timeout_s=step.timeout_s
                )
            elif isinstance(step, GotoStep):
                jump = step.flow
            elif isinstance(step, HangupStep):
                return FlowOutcome(
                    "hangup", data=data, reason="flow hangup", hangup_prompt=step.prompt
                )
            elif isinstance(step, PluginStep):
                try:
                    result = await self._plugin_step(step, io, data, call_id)
                except PluginStepFailed:
                    return FlowOutcome("hangup", data=data, reason="plugin_error")
                if result is not None and result.hangup:
                    return FlowOutcome(
                        "hangup",
                        data=data,
                        reason=result.reason or "flow hangup",
                        hangup_prompt=result.prompt,
                    )
                if result is not None and result.goto:
                    jump = result.goto
            if jump is not None:
                jumps += 1
                if jumps > MAX_FLOW_JUMPS:
                    log.warning("flow_loop", flow=current.name, jumps=jumps)
                    return FlowOutcome("hangup", data=data, reason="flow loop")
                if jump not in self._flows:  # only a plugin's StepResult can name one
                    self._plugin_failed("unknown_flow", step, ValueError(f"no flow {jump!r}"))
                    return FlowOutcome("hangup", data=data, reason="plugin_error")
                current, position = self._flows[jump], 0

    def _plugin_failed(self, what: str, step: object, exc: BaseException) -> None:
        self.plugin_errors += 1
        if self._on_plugin_error is not None:
            self._on_plugin_error()
        name = step.name if isinstance(step, PluginStep) else getattr(step, "provider", "")
        log.error(
            "plugin_failed", what=what, step=name, error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )  # fmt: skip

    async def _plugin_step(
        self, step: PluginStep, io: CallIO, data: dict[str, Any], call_id: str
    ) -> StepResult | None:
        found = self._plugins.steps.get(step.name)
        if found is None:  # the step's plugin was disabled by a reload while this call waited
            exc = LookupError(f"step type {step.name!r} is no longer enabled")
            self._plugin_failed("step", step, exc)
            raise PluginStepFailed(str(exc))
        loaded, step_type = found
        try:
            settings = msgspec.convert(step.settings, step_type.schema, strict=True)
            ctx = StepContext(
                call=io, data=data, settings=loaded.settings, http=self._http, call_id=call_id,
                tasks=self.tasks,
            )  # fmt: skip
            result = await step_type.run(settings, ctx)
            if result is not None and not isinstance(result, StepResult):
                raise TypeError(f"expected a StepResult or None, got {type(result).__name__}")
            _bound(data)
        except CallEnded:
            raise  # the call's own end (the caller hung up, no codec...), not the plugin's fault
        except Exception as exc:  # third-party code: whatever it raises ends this one call
            self._plugin_failed("step", step, exc)
            raise PluginStepFailed(str(exc)) from exc
        return result

    async def _menu(self, step: MenuStep, io: CallIO) -> str | None:
        """The flow to jump to, or None to continue with the next step."""
        for _attempt in range(step.retries + 1):
            digit = await io.play([step.prompt], barge_in=True)
            if digit is None:
                digit = await io.read_digits(max_digits=1, terminator="", timeout_s=step.timeout_s)
            if digit in step.options:
                return step.options[digit]
            if digit and step.invalid_prompt:
                await io.play([step.invalid_prompt], barge_in=False)
        return step.default or None

    async def _provider_lookup(self, step: LookupStep, io: CallIO, data: dict[str, Any]) -> bool:
        found = self._plugins.lookups.get(step.provider)
        try:
            if found is None:  # disabled by a reload while this call was in its flow
                raise LookupError(f"lookup provider {step.provider!r} is no longer enabled")
            loaded, provider = found
            ctx = StepContext(call=io, data=data, settings=loaded.settings, http=self._http)
            async with asyncio.timeout(step.timeout_s):
                result = await provider(dict(data), ctx)
            if not isinstance(result, Mapping):
                raise TypeError(f"expected a mapping, got {type(result).__name__}")
        except CallEnded:
            raise
        except Exception as exc:  # third-party code: a failed lookup, as a broken webhook is
            self.lookups_failed += 1
            self._plugin_failed("lookup", step, exc)
            return False
        self._merge(result, data)
        return True

    async def _lookup(self, step: LookupStep, data: dict[str, Any]) -> bool:
        if self._http is None:
            self.lookups_failed += 1
            return False
        try:
            async with asyncio.timeout(step.timeout_s):
                async with self._http.post(step.url, json=data) as resp:
                    if resp.status != 200:
                        raise ValueError(f"HTTP {resp.status}")
                    body = await resp.content.read(MAX_LOOKUP_BYTES + 1)
                    if len(body) > MAX_LOOKUP_BYTES:
                        raise ValueError("response too large")
                    result = json.loads(body)
                    if not isinstance(result, dict):
                        raise ValueError("expected a JSON object")
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            self.lookups_failed += 1
            log.warning("lookup_failed", url=step.url, reason=str(exc) or type(exc).__name__)
            return False
        self._merge(result, data)
        return True

    @staticmethod
    def _merge(result: Mapping[Any, Any], data: dict[str, Any]) -> None:
        for key, value in result.items():
            if isinstance(key, str) and _DATA_KEY_RE.fullmatch(key):
                data[key] = _clean(value)
