"""The education pack in the real daemon: a SIPp caller types course code 4321 as RFC 4733 DTMF
(``collect``), ``course_route`` sends it to that course's advisors (its skill), and
``followup_campaign`` stores three follow-up tasks, ``scheduled`` a week apart (a row each in
the store's ``tasks``), linked to the call. Prompts are 0.1 s tones to keep the call short.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.peers import free_port_block
from tests.e2e.test_pack_ecommerce_call import Running, _db, call, started_daemon

pytestmark = pytest.mark.e2e


def _config(_port: int, prompts: Path) -> str:
    rtp = free_port_block(20)
    return f"""
[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 18}
prompts_dir = "{prompts}"

[plugins]
enabled = ["education"]

[[trunks]]
name = "school"
allow = ["127.0.0.0/8"]

[[routes]]
number = "admissions"
flow = "admissions"

[[flows]]
name = "admissions"
steps = [
  {{ type = "answer" }},
  {{ type = "collect", var = "course", prompt = "welcome", max_digits = 4, timeout_s = 2.0 }},
  {{ type = "course_route", courses = {{ "4321" = "nursing" }}, default_flow = "general" }},
]

[[flows]]
name = "nursing"
steps = [
  {{ type = "followup_campaign", queue = "followups", every_days = 7, count = 3 }},
  {{ type = "set", requirements = {{ course_nursing = 1 }} }},
  {{ type = "enqueue", queue = "advisors" }},
]

[[flows]]
name = "general"
steps = [{{ type = "enqueue", queue = "advisors" }}]

[[queues]]
name = "advisors"
record = "never"

[[queues]]
name = "followups"
requirements = {{ course_nursing = 1 }}
"""


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with started_daemon(tmp_path_factory.mktemp("school"), ("welcome", "moh"), _config) as r:
        yield r


def test_course_code_routes_to_its_advisors_and_schedules_three_followups(
    running: Running, tmp_path: Path
) -> None:
    began = time.time()
    row = call(running, tmp_path, "admissions", "caller_order.xml")
    assert (row["queue"], row["disposition"]) == ("advisors", "abandoned")
    data = json.loads(row["flow_data"])
    assert (data["course"], data["course_routed"], data["followups"]) == ("4321", "4321", 3)
    with contextlib.closing(_db(running.daemon)) as db:
        tasks = db.execute("SELECT * FROM tasks ORDER BY not_before").fetchall()
    mine = [t for t in tasks if json.loads(t["data"])["call_id"] == row["id"]]
    assert [(t["channel"], t["queue"], t["state"]) for t in mine] == [
        ("email", "followups", "scheduled")
    ] * 3
    assert [t["subject"] for t in mine] == [f"Course follow-up {n} of 3: 4321" for n in (1, 2, 3)]
    for n, task in enumerate(mine, 1):
        assert began + n * 7 * 86400 <= task["not_before"] < began + n * 7 * 86400 + 30
