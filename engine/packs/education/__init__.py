"""The education pack: course consultations and follow-up campaigns (docs/packs/education.md).

How this works: ``course_route`` reads the course tag (from flow data a ``lookup`` or a
``collect`` put there, ``key``) and jumps to the flow its ``courses`` table names (which
``set``s the advisors' skill and ``enqueue``s: the core checks those keys), ``default_flow``
for an unknown tag. ``followup_campaign`` schedules the follow-ups of one prospective student
from the call: ``count`` tasks, every ``every_days`` days, each ``scheduled`` until its
``not_before`` (engine.tasks.followups), holding the call's id, the course and the keys
``copy`` names. Callbacks to parents: the daemon does not dial out yet, so a follow-up is a task
for an advisor to call; left for when outbound calls exist.
"""

from __future__ import annotations

import time
from typing import Final

import msgspec

from engine.config import ConfigNames
from engine.plugins import Plugin, StepContext, StepResult, StepType

MAX_FOLLOWUPS: Final = 12
_DAY_S: Final = 86400.0


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class CourseRoute(_Struct, frozen=True):
    courses: dict[str, str]  # course tag -> flow
    key: str = "course"  # the flow data key holding the tag
    default_flow: str = ""  # an unknown or missing tag (empty: the next step)


class FollowupCampaign(_Struct, frozen=True):
    queue: str
    every_days: float = 7.0
    count: int = 3
    channel: str = "email"  # ticket, email, social or chat
    subject: str = "Course follow-up {n} of {count}: {course}"
    copy: tuple[str, ...] = ("course", "student_ref")


def check_route(step: CourseRoute, known: ConfigNames) -> str | None:
    if not step.courses:
        return "courses: expected at least one course tag"
    for tag, flow in step.courses.items():
        if flow not in known.flows:
            return f"courses.{tag}: no flow named {flow!r}"
    if step.default_flow and step.default_flow not in known.flows:
        return f"default_flow: no flow named {step.default_flow!r}"
    return None


def check_campaign(step: FollowupCampaign, known: ConfigNames) -> str | None:
    if step.queue not in known.queues:
        return f"queue: no queue named {step.queue!r}"
    if not 1 <= step.count <= MAX_FOLLOWUPS:
        return f"count: expected 1 to {MAX_FOLLOWUPS}, found {step.count}"
    if not 0 < step.every_days <= 365:
        return f"every_days: expected more than 0 and at most 365, found {step.every_days}"
    if step.channel not in ("ticket", "email", "social", "chat"):
        return f"channel: expected ticket, email, social or chat, found {step.channel!r}"
    try:
        step.subject.format_map({"n": 1, "count": 1, "course": ""})
    except (KeyError, ValueError, IndexError) as exc:
        return f"subject: only {{n}}, {{count}} and {{course}} may appear, found {exc}"
    return None


async def course_route(step: CourseRoute, ctx: StepContext) -> StepResult | None:
    tag = str(ctx.data.get(step.key) or "").strip().lower()
    flow = step.courses.get(tag, "")
    ctx.data["course_routed"] = tag if flow else "unknown"
    flow = flow or step.default_flow
    return StepResult(goto=flow) if flow else None


async def followup_campaign(step: FollowupCampaign, ctx: StepContext) -> StepResult | None:
    if ctx.tasks is None:
        raise RuntimeError("no task service: follow-ups cannot be scheduled here")
    now = time.time()
    base: dict[str, object] = {"call_id": ctx.call_id}
    base.update({key: ctx.data[key] for key in step.copy if key in ctx.data})
    for n in range(1, step.count + 1):
        subject = step.subject.format_map(
            {"n": n, "count": step.count, "course": ctx.data.get("course", "")}
        )
        await ctx.tasks.create_task(
            channel=step.channel, queue=step.queue, created_by="pack:education",
            subject=subject[:200], data=dict(base, followup=n),
            not_before=now + n * step.every_days * _DAY_S,
            external_id=f"call:{ctx.call_id}:followup:{n}" if ctx.call_id else None,
        )  # fmt: skip
    ctx.data["followups"] = step.count
    return None


plugin = Plugin(
    name="education",
    version="1.0",
    description="school: course-consultation routing by course tag, follow-up campaigns",
    steps={
        "course_route": StepType(CourseRoute, course_route, check_route),
        "followup_campaign": StepType(FollowupCampaign, followup_campaign, check_campaign),
    },
)

__all__ = ["CourseRoute", "FollowupCampaign", "plugin"]
