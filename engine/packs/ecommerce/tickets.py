"""The ``create_ticket`` step: an after-sales ticket made from the call, linked to its id.

How this works: the step asks the daemon's task service (``StepContext.tasks``) for a task of
channel ``ticket`` in the step's ``queue``, with the call's id, the caller's number and the
flow data keys ``copy`` names (the order the caller asked about) as its data, and the caller as
its customer. The ticket then lives the tickets' lifecycle (engine.tasks.lifecycle): routed to
an agent, pending, solved, closed. Its id goes into the flow data (``ticket_id``: the agent's
screen-pop and the CDR's ``flow_data``), so the call and the ticket each lead to the other. The
task's ``external_id`` is derived from the call's id: the same call never opens two tickets.

A ticket the task service refuses (a skill no agent or queue has) is the operator's config
error, not the caller's: the step raises, the call ends with ``plugin_error``, logged and
counted, and the next call is served.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from engine.config import ConfigNames
from engine.plugins import StepContext, StepResult

# A ticket's subject line, as help desks show it.
MAX_SUBJECT_CHARS: Final = 200
# as engine.config's skill levels
MAX_LEVEL: Final = 100
_TEMPLATE_RE: Final = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class CreateTicket(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    queue: str  # the after-sales queue the ticket is routed in
    subject: str = "After-sales call about order {order_number}"  # {key}: flow data
    priority: int = 0
    requirements: dict[str, int] = {}  # skills beyond the queue's (e.g. returns = 1)
    copy: tuple[str, ...] = (
        "order_number", "order_status", "order_carrier", "order_tracking", "order_result",
    )  # fmt: skip
    prompt: str = ""  # played once the ticket is made (e.g. "ticket-opened")


def check_step(step: CreateTicket, known: ConfigNames) -> str | None:
    if step.queue not in known.queues:
        return f"queue: no queue named {step.queue!r}"
    if not -1000 <= step.priority <= 1000:
        return f"priority: expected -1000 to 1000, found {step.priority}"
    for skill, level in step.requirements.items():
        if not 1 <= level <= MAX_LEVEL:
            return f"requirements.{skill}: expected a level 1-{MAX_LEVEL}, found {level}"
    return None


def subject(template: str, data: dict[str, object]) -> str:
    """``{key}`` replaced by flow data (unknown keys by nothing), bounded."""
    text = _TEMPLATE_RE.sub(lambda m: str(data.get(m.group(1), "") or ""), template)
    return " ".join(text.split())[:MAX_SUBJECT_CHARS]


async def create_ticket(step: CreateTicket, ctx: StepContext) -> StepResult | None:
    if ctx.tasks is None:
        raise RuntimeError("no task service: tickets cannot be made here")
    data = ctx.data
    caller = str(data.get("caller") or "")
    ticket_data: dict[str, object] = {"call_id": ctx.call_id, "caller": caller}
    ticket_data.update({key: data[key] for key in step.copy if key in data})
    ticket_id = await ctx.tasks.create_task(
        channel="ticket",
        queue=step.queue,
        created_by="pack:ecommerce",
        subject=subject(step.subject, data) or "After-sales call",
        data=ticket_data,
        customer={"phone": caller} if caller else None,
        priority=step.priority,
        requirements=dict(step.requirements) or None,
        external_id=f"call:{ctx.call_id}:ticket" if ctx.call_id else None,
    )
    data["ticket_id"] = ticket_id
    if step.prompt:
        await ctx.call.play([step.prompt], barge_in=False)
    return None
