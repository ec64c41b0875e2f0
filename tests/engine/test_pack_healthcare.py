"""The healthcare pack: the triage menu (emergency first, retries, default) through the flow
runner with test_flows' scripted caller; appointment reminders scheduled before the visit with
only the patient reference; the config errors; config/packs/healthcare.toml with its PHI and
retention presets checked against docs/packs/healthcare.md, and the PHI preset's masking run
through the transcription path's own masker.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from engine.calls.flows import FlowRunner
from engine.config import ConfigError
from engine.plugins import load_config, parse_config
from tests.engine.test_flows import ScriptedCaller
from tests.engine.test_pack_finance import REPO

SHIPPED = REPO / "engine" / "prompts"
DOC = REPO / "docs" / "packs" / "healthcare.md"


class Tasks:
    """What the task service was asked (engine.tasks.PluginTasks is tested through the daemon
    in tests/e2e/test_pack_ecommerce_call.py)."""

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []

    async def create_task(self, **task: Any) -> str:
        self.made.append(task)
        return f"t-{len(self.made)}"


TRIAGE = ('{ type = "triage", options = { "9" = { label = "emergency", emergency = true }, '
          '"2" = { label = "children", flow = "children" }, "1" = { label = "adult", flow = "adult" } }'
          '{extra} }')  # fmt: skip


def config(extra: str = "", reminder: str = "") -> str:
    return f"""
[plugins]
enabled = ["healthcare"]

[[queues]]
name = "nurses"
[[queues]]
name = "reminders"

[[flows]]
name = "nurse"
steps = [{{ type = "answer" }}, {TRIAGE.replace("{extra}", extra)}, {{ type = "hangup" }}]
[[flows]]
name = "children"
steps = [{{ type = "set", requirements = {{ pediatric_nurse = 1 }}, priority = 5 }}, {{ type = "enqueue", queue = "nurses" }}]
[[flows]]
name = "adult"
steps = [{{ type = "schedule_reminder", queue = "reminders", before_s = [86400.0, 3600.0]{reminder} }}, {{ type = "enqueue", queue = "nurses" }}]
[[flows]]
name = "er"
steps = [{{ type = "set", data = {{ route = "er" }} }}, {{ type = "hangup" }}]
"""


async def _call(text: str, keys: list[str | None], data: dict[str, Any] | None = None,
                flow: str = "nurse") -> tuple[Any, ScriptedCaller, Tasks]:  # fmt: skip
    cfg, plugins = parse_config(text, "clinic.toml")
    tasks = Tasks()
    runner = FlowRunner(cfg, None, plugins=plugins, tasks=tasks)
    caller = ScriptedCaller(keys)
    outcome = await runner.run(flow, caller, {"caller": "5550100", **(data or {})}, call_id="c-9")
    assert runner.plugin_errors == 0
    return outcome, caller, tasks


async def test_child_goes_to_pediatric_nurses_with_priority(packs: None) -> None:
    outcome, caller, _ = await _call(config(), ["2"])
    assert (outcome.kind, outcome.queue, outcome.priority) == ("enqueue", "nurses", 5)
    assert outcome.requirements == {"pediatric_nurse": 1}
    assert outcome.data["triage"] == "children"
    assert caller.log == ["answer", "play:triage-menu", "read:1"]


async def test_emergency_is_never_queued(packs: None) -> None:
    outcome, caller, _ = await _call(config(), ["!9"])  # pressed during the menu
    assert (outcome.kind, outcome.reason) == ("hangup", "triage_emergency")
    assert outcome.data["triage"] == "emergency"
    assert caller.log[-1] == "play:triage-emergency"
    outcome, _c, _ = await _call(config(', emergency_flow = "er"'), ["9"])
    assert outcome.data["route"] == "er"


async def test_wrong_keys_then_default_or_nothing(packs: None) -> None:
    outcome, caller, _ = await _call(config(', default = "2"'), ["5", None, "7"])
    assert outcome.data["triage"] == "children"
    assert outcome.data["triage_tries"] == 3
    assert caller.log.count("play:invalid") == 2  # not after the silence
    outcome, _c, _ = await _call(config(), [None, None, None])
    assert (outcome.kind, outcome.data["triage"]) == ("hangup", "none")


async def test_reminders_before_the_appointment_hold_only_the_reference(packs: None) -> None:
    at = time.time() + 3 * 86400
    data = {"appointment_at": at, "patient_ref": "P-77", "patient_name": "Jane Doe", "dob": "1980"}
    outcome, _c, tasks = await _call(config(), ["1"], data)
    assert (outcome.queue, outcome.data["reminders"], outcome.data["reminder_result"]) == (
        "nurses",
        2,
        "scheduled",
    )
    assert [t["not_before"] for t in tasks.made] == [at - 86400, at - 3600]
    for i, task in enumerate(tasks.made):
        assert (task["channel"], task["queue"], task["external_id"]) == (
            "ticket",
            "reminders",
            f"call:c-9:reminder:{i}",
        )
        assert task["data"] == {"call_id": "c-9", "appointment_at": at, "patient_ref": "P-77",
                                "before_s": [86400.0, 3600.0][i]}  # fmt: skip
        assert "Jane" not in str(task)
        assert "1980" not in str(task)


@pytest.mark.parametrize(
    ("at", "made", "result"),
    # the appointment in 2 h, in a minute (seconds from now: the test ids must be the same in
    # every xdist worker), none, not a time
    [(7200, 1, "scheduled"), (60, 0, "too_late"), (None, 0, "no_appointment"),
     ("soon", 0, "no_appointment")],
)  # fmt: skip
async def test_reminders_too_late_or_no_appointment(
    packs: None, at: Any, made: int, result: str
) -> None:
    if isinstance(at, int):
        at = time.time() + at
    data = {} if at is None else {"appointment_at": at}
    outcome, _c, tasks = await _call(config(), ["1"], data)
    assert (len(tasks.made), outcome.data["reminders"], outcome.data["reminder_result"]) == (
        made,
        made,
        result,
    )


@pytest.mark.parametrize(
    ("extra", "reminder", "key", "problem"),
    [
        (', default = "9"', "", "flows[0].steps[1]", "default: an emergency option cannot be the default"),
        (', default = "4"', "", "flows[0].steps[1]", "default: no option '4'"),
        (', emergency_flow = "ER"', "", "flows[0].steps[1]", "emergency_flow: no flow named 'ER'"),
        (", retries = 9", "", "flows[0].steps[1]", "retries: expected 0 to 5"),
        (", symptom = 1", "", "flows[0].steps[1].symptom", "unknown key"),
        ("", ', channel = "voice"', "flows[2].steps[0]", "channel: expected ticket, email"),
        ("", ", before_s = []", "flows[2].steps[0]", "before_s: expected 1 to 5 times"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(
    packs: None, extra: str, reminder: str, key: str, problem: str
) -> None:
    text = config(extra, reminder)
    if "before_s = []" in reminder:
        text = text.replace(", before_s = [86400.0, 3600.0], before_s = []", ", before_s = []")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "clinic.toml")
    assert caught.value.key_path == key, str(caught.value)
    assert problem in caught.value.problem, str(caught.value)


def test_option_errors(packs: None) -> None:
    for old, new, problem in (
        ('flow = "children"', 'flow = "kids"', "options.2.flow: no flow named 'kids'"),
        ('"2" = { label = "children", flow = "children" }', '"2" = { label = "children" }', "options.2.flow: required"),
        ('"2" = {', '"22" = {', "options.22: expected a single DTMF key"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(problem)):
            parse_config(config().replace(old, new), "clinic.toml")


def _table(section: str) -> dict[str, str]:
    text = DOC.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([\w.\[\]-]+)` \| `([^`]+)` \|", text, re.M))


def test_shipped_config_and_its_presets(packs: None) -> None:
    cfg, plugins = load_config(REPO / "config" / "packs" / "healthcare.toml")
    assert [p.plugin.name for p in plugins.plugins] == ["healthcare"]
    phi = _table("PHI minimisation")
    assert set(phi) == {"card_context", "card_min_digits", "card_window_s"}
    assert str(list(cfg.transcription.card_context)).replace("'", '"') == phi["card_context"]
    assert str(cfg.transcription.card_min_digits) == phi["card_min_digits"]
    assert str(cfg.transcription.card_window_s) == phi["card_window_s"]
    retention = _table("Retention")
    assert retention["recordings.retention_days"] == str(cfg.recordings.retention_days)
    for queue in cfg.queues:
        if queue.name.startswith(("nurses", "pharmacy")):
            assert (queue.encrypt_recordings, str(queue.retention_days)) == (
                True,
                retention["queues[clinical].retention_days"],
            )
    for prompt in ("triage-menu", "triage-emergency", "invalid"):
        assert (SHIPPED / f"{prompt}.wav").is_file()


def test_phi_preset_masks_dates_of_birth_and_record_numbers(packs: None) -> None:
    from engine.transcription.asr import Word
    from engine.transcription.redact import MASK, mask_card_numbers

    cfg, _ = load_config(REPO / "config" / "packs" / "healthcare.toml")
    t = cfg.transcription

    def said(text: str) -> list[Word]:
        return [Word(w, i * 0.4, i * 0.4 + 0.3, 0.9) for i, w in enumerate(text.split())]

    words, masked = mask_card_numbers(
        said("my date of birth is one two oh three and my record is four four seven one take two tablets"),
        t.card_context, min_digits=t.card_min_digits, window_s=t.card_window_s,
    )  # fmt: skip
    text = " ".join(w.text for w in words)
    assert masked == 8
    assert text == (f"my date of birth is {' '.join([MASK] * 4)} and my record is "
                    f"{' '.join([MASK] * 4)} take two tablets")  # fmt: skip
