"""The ``schedule_reminder`` step: appointment-reminder follow-ups, tasks due before the visit.

How this works: the appointment's time is in the flow data (``at``, epoch seconds; the clinic's
scheduling system puts it there through a ``lookup`` step). For each of ``before_s`` the step
asks the daemon's task service for a task in ``queue`` with ``not_before`` = appointment - that
many seconds: it waits, ``scheduled``, and enters the queue then (engine.tasks.followups), for an
agent to remind the patient. A reminder whose time has passed is not made. The task holds the
minimum (PHI minimisation): the call's id, the appointment time and the flow data keys ``copy``
names (by default only ``patient_ref``, the scheduling system's opaque id, never a name or a
date of birth). ``external_id`` is derived from the call's id: one call, one set of reminders.
The flow data gets ``reminders`` (how many were scheduled) and ``reminder_result``.
"""

from __future__ import annotations

import time
from typing import Final

import msgspec

from engine.config import ConfigNames
from engine.plugins import StepContext, StepResult

MAX_REMINDERS: Final = 5
# One appointment is booked at most a year and a bit ahead.
MAX_BEFORE_S: Final = 400 * 86400.0


class ScheduleReminder(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    queue: str  # where the reminder tasks wait for an agent
    at: str = "appointment_at"  # the flow data key holding the appointment (epoch seconds)
    before_s: tuple[float, ...] = (86400.0,)  # one reminder this long before, for each
    channel: str = "ticket"  # the reminder task's channel (ticket, email, social, chat)
    subject: str = "Appointment reminder"  # no names: it is listed on every agent's screen
    copy: tuple[str, ...] = ("patient_ref",)  # flow data keys copied into the task


def check_step(step: ScheduleReminder, known: ConfigNames) -> str | None:
    if step.queue not in known.queues:
        return f"queue: no queue named {step.queue!r}"
    if not 1 <= len(step.before_s) <= MAX_REMINDERS:
        return f"before_s: expected 1 to {MAX_REMINDERS} times, found {len(step.before_s)}"
    for i, before in enumerate(step.before_s):
        if not 0 <= before <= MAX_BEFORE_S:
            return f"before_s[{i}]: expected 0 to {MAX_BEFORE_S:.0f} seconds, found {before}"
    if step.channel not in ("ticket", "email", "social", "chat"):
        return f"channel: expected ticket, email, social or chat, found {step.channel!r}"
    return None


async def schedule_reminder(step: ScheduleReminder, ctx: StepContext) -> StepResult | None:
    data = ctx.data
    at = data.get(step.at)
    if isinstance(at, str):
        try:
            at = float(at)
        except ValueError:
            at = None
    if not isinstance(at, int | float) or isinstance(at, bool) or at <= 0:
        data.update(reminders=0, reminder_result="no_appointment")
        return None
    if ctx.tasks is None:
        raise RuntimeError("no task service: reminders cannot be scheduled here")
    now = time.time()
    made = 0
    task_data: dict[str, object] = {"call_id": ctx.call_id, "appointment_at": float(at)}
    task_data.update({key: data[key] for key in step.copy if key in data})
    for i, before in enumerate(step.before_s):
        due = float(at) - before
        if due <= now:
            continue  # too late for this one
        await ctx.tasks.create_task(
            channel=step.channel, queue=step.queue, created_by="pack:healthcare",
            subject=step.subject, data=dict(task_data, before_s=before), not_before=due,
            external_id=f"call:{ctx.call_id}:reminder:{i}" if ctx.call_id else None,
        )  # fmt: skip
        made += 1
    data.update(reminders=made, reminder_result="scheduled" if made else "too_late")
    return None
