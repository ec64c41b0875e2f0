"""The healthcare pack in the real daemon: SIPp callers press a triage key as RFC 4733 DTMF.
Key 1 (adult symptoms): the clinic's scheduling system (a local aiohttp lookup webhook, its own
thread) gives the next appointment, two reminder follow-ups are stored ``scheduled`` with
``not_before`` before it (a row each in the store's ``tasks``), and the caller waits for a
triage nurse. Key 9 (emergency): told to call the emergency number and hung up, never queued.

One daemon for the module; prompts are 0.1 s tones (``media.prompts_dir``) to keep calls short.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.peers import free_port_block
from tests.e2e.test_pack_ecommerce_call import Running, _db, call, started_daemon

pytestmark = pytest.mark.e2e

FRAGMENTS = ("triage-menu", "triage-emergency", "invalid", "moh")
APPOINTMENT_AT = time.time() + 3 * 86400


def answer(body: dict[str, Any]) -> dict[str, Any]:
    return {"patient_ref": "P-77", "appointment_at": APPOINTMENT_AT}


def _config(port: int, prompts: Path) -> str:
    rtp = free_port_block(20)
    return f"""
[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 18}
prompts_dir = "{prompts}"

[plugins]
enabled = ["healthcare"]

[[trunks]]
name = "clinic"
allow = ["127.0.0.0/8"]

[[routes]]
number = "nurse-adult"
flow = "nurse"
[[routes]]
number = "nurse-emergency"
flow = "nurse"

[[flows]]
name = "nurse"
steps = [
  {{ type = "answer" }},
  {{ type = "triage", timeout_s = 2.0, options = {{ "9" = {{ label = "emergency", emergency = true }}, "1" = {{ label = "adult", flow = "adult" }} }} }},
]

[[flows]]
name = "adult"
steps = [
  {{ type = "lookup", url = "http://127.0.0.1:{port}/service", timeout_s = 2.0 }},
  {{ type = "schedule_reminder", queue = "reminders", before_s = [86400.0, 7200.0] }},
  {{ type = "enqueue", queue = "nurses" }},
]

[[queues]]
name = "nurses"
requirements = {{ triage_nurse = 1 }}
record = "never"

[[queues]]
name = "reminders"
"""


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with started_daemon(tmp_path_factory.mktemp("clinic"), FRAGMENTS, _config, answer) as r:
        yield r


def test_adult_caller_queued_for_a_nurse_with_two_reminders(
    running: Running, tmp_path: Path
) -> None:
    row = call(running, tmp_path, "nurse-adult", "caller_triage_1.xml")
    assert (row["queue"], row["disposition"]) == ("nurses", "abandoned")
    data = json.loads(row["flow_data"])
    assert (data["triage"], data["reminders"], data["reminder_result"]) == ("adult", 2, "scheduled")
    with contextlib.closing(_db(running.daemon)) as db:
        tasks = db.execute("SELECT * FROM tasks ORDER BY not_before").fetchall()
    mine = [t for t in tasks if json.loads(t["data"])["call_id"] == row["id"]]
    assert [(t["queue"], t["state"], t["created_by"]) for t in mine] == [
        ("reminders", "scheduled", "pack:healthcare")
    ] * 2
    assert [round(t["not_before"]) for t in mine] == [
        round(APPOINTMENT_AT - 86400),
        round(APPOINTMENT_AT - 7200),
    ]
    assert json.loads(mine[0]["data"]) == {"call_id": row["id"], "appointment_at": APPOINTMENT_AT,
                                           "patient_ref": "P-77", "before_s": 86400.0}  # fmt: skip


def test_emergency_is_hung_up_never_queued(running: Running, tmp_path: Path) -> None:
    row = call(running, tmp_path, "nurse-emergency", "caller_triage_9_awaits_bye.xml")
    assert row["hangup_reason"] == "triage_emergency"
    assert row["queue"] is None
    assert json.loads(row["flow_data"])["triage"] == "emergency"
