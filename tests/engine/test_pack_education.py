"""The education pack: course-consultation routing by course tag and the follow-up campaign,
through the flow runner with test_flows' scripted caller; config errors; the documented and
shipped configs. The daemon's task service itself is tested through the daemon in
tests/e2e/test_pack_ecommerce_call.py and test_pack_healthcare_call.py.
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
from tests.engine.test_pack_healthcare import Tasks


def config(route: str = "", campaign: str = "") -> str:
    return f"""
[plugins]
enabled = ["education"]

[[queues]]
name = "advisors"
[[queues]]
name = "followups"

[[flows]]
name = "school"
steps = [
  {{ type = "collect", var = "course", max_digits = 3 }},
  {{ type = "course_route", courses = {{ "101" = "nursing", "202" = "mba" }}, default_flow = "general"{route} }},
  {{ type = "hangup" }},
]
[[flows]]
name = "nursing"
steps = [{{ type = "followup_campaign", queue = "followups", every_days = 7, count = 3{campaign} }}, {{ type = "set", requirements = {{ course_nursing = 1 }} }}, {{ type = "enqueue", queue = "advisors" }}]
[[flows]]
name = "mba"
steps = [{{ type = "set", requirements = {{ course_mba = 1 }} }}, {{ type = "enqueue", queue = "advisors" }}]
[[flows]]
name = "general"
steps = [{{ type = "enqueue", queue = "advisors" }}]
"""


async def _call(text: str, keys: list[str | None]) -> tuple[Any, Tasks]:
    cfg, plugins = parse_config(text, "school.toml")
    tasks = Tasks()
    runner = FlowRunner(cfg, None, plugins=plugins, tasks=tasks)
    outcome = await runner.run(
        "school", ScriptedCaller(keys), {"student_ref": "S-5"}, call_id="c-3"
    )
    assert runner.plugin_errors == 0
    return outcome, tasks


async def test_course_tag_routes_to_its_advisors_and_schedules_followups(packs: None) -> None:
    before = time.time()
    outcome, tasks = await _call(config(), ["101"])
    assert (outcome.queue, outcome.requirements) == ("advisors", {"course_nursing": 1})
    assert (outcome.data["course_routed"], outcome.data["followups"]) == ("101", 3)
    assert [t["subject"] for t in tasks.made] == [
        f"Course follow-up {n} of 3: 101" for n in (1, 2, 3)
    ]
    gaps = [t["not_before"] - before for t in tasks.made]
    for n, gap in enumerate(gaps, 1):
        assert n * 7 * 86400 <= gap < n * 7 * 86400 + 5
    assert tasks.made[0]["data"] == {
        "call_id": "c-3",
        "course": "101",
        "student_ref": "S-5",
        "followup": 1,
    }
    assert [t["external_id"] for t in tasks.made] == [f"call:c-3:followup:{n}" for n in (1, 2, 3)]


async def test_other_tag_and_unknown_tag(packs: None) -> None:
    outcome, tasks = await _call(config(), ["202"])
    assert outcome.requirements == {"course_mba": 1}
    assert tasks.made == []
    outcome, _ = await _call(config(), ["999"])
    assert (outcome.queue, outcome.requirements, outcome.data["course_routed"]) == (
        "advisors",
        None,
        "unknown",
    )


@pytest.mark.parametrize(
    ("route", "campaign", "key", "problem"),
    [
        (', default_flow = "x"', "", "flows[0].steps[1]", "default_flow: no flow named 'x'"),
        ("", ", count = 0", "flows[1].steps[0]", "count: expected 1 to 12"),
        ("", ", every_days = 0", "flows[1].steps[0]", "every_days: expected more than 0"),
        ("", ', subject = "{name}"', "flows[1].steps[0]", "subject: only {n}, {count} and {course}"),
        ("", ', channel = "voice"', "flows[1].steps[0]", "channel: expected ticket, email"),
    ],
)  # fmt: skip
def test_config_errors(packs: None, route: str, campaign: str, key: str, problem: str) -> None:
    text = config(route, campaign)
    text = text.replace(', default_flow = "general", default_flow = "x"', ', default_flow = "x"')
    text = text.replace("every_days = 7, count = 3, count = 0", "every_days = 7, count = 0")
    text = text.replace("every_days = 7, count = 3, every_days = 0", "count = 3, every_days = 0")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "school.toml")
    assert caught.value.key_path == key, str(caught.value)
    assert problem in caught.value.problem, str(caught.value)


def test_documented_and_shipped_configs_load(packs: None) -> None:
    doc = (REPO / "docs" / "packs" / "education.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    _cfg, plugins = parse_config(example.group(1), "education.md")
    assert [p.plugin.name for p in plugins.plugins] == ["education"]
    _cfg, plugins = load_config(REPO / "config" / "packs" / "education.toml")
    assert [p.plugin.name for p in plugins.plugins] == ["education"]
