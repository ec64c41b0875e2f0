"""The healthcare pack: a clinic's nurse line (docs/packs/healthcare.md).

How this works: ``triage`` (``triage``) is the nurse-line menu, the emergency option first: each
option jumps to a flow that routes to the nurses with the right skill, an emergency is told to
call the emergency number and never queued. ``schedule_reminder`` (``reminders``) makes the
appointment-reminder follow-ups: tasks with ``not_before`` before the visit, holding only an
opaque patient reference. PHI minimisation and retention are presets of core keys (the
transcript masker's context words, encrypted recordings and their retention per queue),
shipped as config/packs/healthcare.toml, which the tests read against the doc's tables.
"""

from engine.packs.healthcare.reminders import ScheduleReminder, schedule_reminder
from engine.packs.healthcare.reminders import check_step as check_reminder
from engine.packs.healthcare.triage import Triage, TriageOption, triage
from engine.packs.healthcare.triage import check_step as check_triage
from engine.plugins import Plugin, StepType

plugin = Plugin(
    name="healthcare",
    version="1.0",
    description="clinic: nurse-line triage with the emergency option first, appointment reminders",
    steps={
        "triage": StepType(Triage, triage, check_triage),
        "schedule_reminder": StepType(ScheduleReminder, schedule_reminder, check_reminder),
    },
)

__all__ = ["ScheduleReminder", "Triage", "TriageOption", "plugin"]
