"""The ``triage`` step: a clinic's nurse-line menu, the emergency option first.

How this works: the caller hears ``prompt`` (the red-flag advice and the options, e.g. "If this
is a medical emergency, press 9. For a child under 12, press 2. ...") and presses one key. An
option of ``options`` names a ``flow`` that routes to the nurses with the right skill (a ``set``
of ``requirements`` and ``priority``, then ``enqueue``: the core checks those keys) and a
``label`` that goes into the flow data (``triage``: the nurse's screen-pop, the CDR; a label,
never a symptom the caller said). An ``emergency`` option plays ``emergency_prompt`` and goes to
``emergency_flow`` (a transfer to the emergency line) or, without one, hangs up with the CDR
reason ``triage_emergency``: a nurse queue is never where an emergency waits. A key not in the
menu is told ``invalid_prompt`` and the menu is played again, ``retries`` times; then the
``default`` option (empty: the call goes on with the next step, ``triage`` ``none``).
"""

from __future__ import annotations

import msgspec

from engine.config import ConfigNames
from engine.plugins import StepContext, StepResult

_KEYS = frozenset("0123456789*#")


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class TriageOption(_Struct, frozen=True):
    label: str  # what the flow data says (e.g. "children", "urgent")
    flow: str = ""  # the flow that routes this option (required unless emergency)
    emergency: bool = False


class Triage(_Struct, frozen=True):
    options: dict[str, TriageOption]  # DTMF key -> option
    prompt: str = "triage-menu"
    emergency_prompt: str = "triage-emergency"
    invalid_prompt: str = "invalid"
    retries: int = 2  # menu repeats after a wrong key or silence
    timeout_s: float = 5.0  # silence after the menu that counts as no choice
    default: str = ""  # the option taken after the retries (empty: the next step)
    emergency_flow: str = ""  # where an emergency goes (empty: hang up, triage_emergency)


def check_step(step: Triage, known: ConfigNames) -> str | None:
    if not step.options:
        return "options: expected at least one option"
    for key, option in step.options.items():
        if key not in _KEYS:
            return f"options.{key}: expected a single DTMF key (0-9, *, #)"
        if not option.emergency and not option.flow:
            return f"options.{key}.flow: required unless the option is an emergency"
        if option.flow and option.flow not in known.flows:
            return f"options.{key}.flow: no flow named {option.flow!r}"
    if step.default and step.default not in step.options:
        return f"default: no option {step.default!r}"
    if step.default and step.options[step.default].emergency:
        return "default: an emergency option cannot be the default"
    if step.emergency_flow and step.emergency_flow not in known.flows:
        return f"emergency_flow: no flow named {step.emergency_flow!r}"
    if not 0 <= step.retries <= 5:
        return f"retries: expected 0 to 5, found {step.retries}"
    if not step.timeout_s > 0:
        return f"timeout_s: expected a number > 0, found {step.timeout_s}"
    return None


async def triage(step: Triage, ctx: StepContext) -> StepResult | None:
    chosen = ""
    for attempt in range(step.retries + 1):
        ctx.data["triage_tries"] = attempt + 1
        key = await ctx.call.play([step.prompt], barge_in=True) if step.prompt else None
        if key is None:
            key = await ctx.call.read_digits(max_digits=1, terminator="", timeout_s=step.timeout_s)
        if key in step.options:
            chosen = key
            break
        if key and step.invalid_prompt:
            await ctx.call.play([step.invalid_prompt], barge_in=False)
    chosen = chosen or step.default
    if not chosen:
        ctx.data["triage"] = "none"
        return None
    option = step.options[chosen]
    ctx.data["triage"] = option.label
    if option.emergency:
        if step.emergency_prompt:
            await ctx.call.play([step.emergency_prompt], barge_in=False)
        if step.emergency_flow:
            return StepResult(goto=step.emergency_flow)
        return StepResult(hangup=True, reason="triage_emergency")
    return StepResult(goto=option.flow)
