"""A real call to a browser agent: baresip dials the queue, the agent answers in headless Chromium.

The caller's microphone plays 440 Hz, the browser's fake microphone 880 Hz. Checked by frequency: the
page hears 440 Hz, the caller hears 880 Hz, the recording has 440 Hz on the left and 880 Hz on the
right. Also the alert's screen-pop (the caller and the flow's data), the agent's state through the
call, and the CDR (answered by the browser agent, hung up on the agent's side).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import expect

from tests.e2e.browser import ARTIFACTS, HEARD_JS, agent_state, chromium, open_softphone, wait_state
from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory
from tests.e2e.peers import Baresip, dominant_hz, free_port_block, sipp, stop

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-webrtc-call-0123"
AGENT_TOKEN = "agent-3001-token-webrtc-call"


def config(rtp_base: int, wrap_up_s: float = 1.0) -> str:
    steps = (
        '{ type = "answer" }, { type = "set", data = { account = "4711", tier = "gold" } }, '
        '{ type = "enqueue", queue = "support" }'
    )
    return (
        front_door(ADMIN, steps=steps, rtp_base=rtp_base, flush_s=0.5)
        + f"""
[[queues]]
name = "support"
ring_timeout_s = 30.0
wrap_up_s = {wrap_up_s}

[[agents]]
id = "3001"
name = "Wendy"
login = "webrtc"
queues = {{ support = 0 }}
api_token = "{AGENT_TOKEN}"
"""
    )


async def test_browser_agent_takes_a_sip_call_with_audio_both_ways(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    # A long wrap-up: the agent ends it early from the page.
    daemon = start_daemon(config(free_port_block(100), wrap_up_s=60.0))
    sip = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller: Baresip | None = None
    async with chromium(tmp_path, 880) as browser:
        try:
            page = await open_softphone(browser, daemon.base_url, AGENT_TOKEN)
            # The softphone's media came up: the agent is logged in, like a phone registering.
            await wait_state(daemon, ADMIN, "3001", {"available"}, 10)

            # This caller phoned yesterday: the screen-pop lists it from the CDR store.
            with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
                db.execute(
                    "INSERT INTO calls (id, sip_call_id, caller, arrived_at, queue, agent_id,"
                    " disposition, talk_s, ended_at) VALUES ('earlier-call', 'x@pbx', '5551234',"
                    " ?, 'sales', '1002', 'answered', 95.0, ?)",
                    (time.time() - 86400, time.time() - 86300),
                )
                # ... and wrote an e-mail an hour ago, with the number in another format: the
                # screen-pop shows the customer's contacts on every channel.
                db.execute(
                    "INSERT INTO tasks (id, channel, queue, state, priority, arrived_at,"
                    " enqueued_at, agent_id, disposition, subject, customer, customer_phone)"
                    " VALUES ('earlier-mail', 'email', 'sales', 'completed', 0, ?, ?, '1002',"
                    " 'refunded', 'Refund', '{\"phone\": \"555-1234\"}', '5551234')",
                    (time.time() - 3600, time.time() - 3600),
                )
            caller = Baresip(
                tmp_path / "caller", f"<sip:5551234@{sip}>;regint=0;audio_codecs=PCMU", 440,
                dial=f"sip:support@{sip}",
            )  # fmt: skip
            alert = page.locator("#incoming")
            await expect(alert).to_be_visible(timeout=15000)
            await expect(page.locator("#incoming-caller")).to_have_text("5551234")
            await expect(page.locator("#incoming-queue")).to_have_text("(support)")
            await expect(page.locator("#incoming-data")).to_contain_text("4711")
            await expect(page.locator("#incoming-data")).to_contain_text("gold")
            history = page.locator("#incoming-history li")
            await expect(history).to_have_count(2)
            await expect(history.nth(0)).to_contain_text("email · sales · 1002 · refunded · Refund")
            await expect(history.nth(1)).to_contain_text("voice · sales · 1002 · answered · 95 s")
            assert agent_state(daemon, ADMIN, "3001") == "reserved"  # ringing
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "agent-incoming-call.png"))
            await page.click("#answer")
            await wait_state(daemon, ADMIN, "3001", {"busy"}, 10)
            await expect(alert).to_be_hidden()

            peaks = await page.evaluate(HEARD_JS, 25)
            late = peaks[8:]  # skip the first fill of the jitter buffers
            assert sum(abs(hz - 440) < 12 and db > -70 for hz, db in late) >= len(late) * 0.8, peaks
            await page.click("#hangup")  # the agent ends the call
            await wait_state(daemon, ADMIN, "3001", {"wrap_up"}, 10)
            await expect(page.locator("#hangup")).to_be_disabled()
            # The page was told the call ended ("call_ended": only that disables Hold again).
            await expect(page.locator("#hold")).to_be_disabled()
            # Wrap-up counts down on the page; Ready ends it early and stops the countdown.
            state = page.locator("#state")
            await expect(state).to_have_text(re.compile(r"^wrap up (0:5\d|1:00)$"), timeout=5000)
            await page.click("#ready")
            await expect(state).to_have_text("available", timeout=5000)
            assert agent_state(daemon, ADMIN, "3001") == "available"
            await asyncio.sleep(1.0)  # a countdown still ticking (every 250 ms) would show by now
            assert await state.inner_text() == "available"
            caller.wait_for("terminated (duration", 10)  # our BYE reached the caller
        finally:
            if caller is not None:
                caller.stop()  # baresip finishes its recording of what it heard when it exits
    assert caller is not None
    _, exposition, _ = daemon.get("/metrics")
    assert "acd_rtp_sessions_active 0.0" in exposition.decode()  # both legs' ports released
    heard = caller.heard()
    assert abs(dominant_hz(heard[-8000:]) - 880) < 15  # the browser's microphone

    time.sleep(1.5)  # CDR writer flush
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        (cdr,) = db.execute("SELECT * FROM calls WHERE id != 'earlier-call'").fetchall()
        rec = db.execute("SELECT * FROM recordings").fetchone()
    assert (cdr["disposition"], cdr["agent_id"], cdr["hangup_side"]) == (
        "answered",
        "3001",
        "agent",
    )
    assert json.loads(cdr["flow_data"])["account"] == "4711"
    assert rec is not None
    with wave.open(rec["path"]) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert abs(len(stereo) / 8000 - cdr["talk_s"]) < 0.5
    assert abs(dominant_hz(stereo[-8000:-2000, 0]) - 440) < 10  # caller on the left
    assert abs(dominant_hz(stereo[-8000:-2000, 1]) - 880) < 15  # browser agent on the right


async def test_browser_agent_transfers_the_caller_to_another_queue(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    other = sipp(tmp_path, ["-sn", "uas"], None)  # agent b1 of queue sales, answers at once
    caller: subprocess.Popen[bytes] | None = None
    try:
        daemon = start_daemon(
            config(free_port_block(100))
            + f"""
[[queues]]
name = "sales"
wrap_up_s = 1.0

[[agents]]
id = "b1"
login = "static"
contact = "sip:b1@127.0.0.1:{other.sip_port}"
queues = {{ sales = 0 }}
"""  # type: ignore[attr-defined]
        )
        request = urllib.request.Request(
            f"{daemon.base_url}/api/v1/agents/b1/state", data=b'{"state": "logged_in"}',
            method="PUT", headers={"Authorization": f"Bearer {ADMIN}"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=5).close()
        sip = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
        async with chromium(tmp_path, 880, 30) as browser:
            page = await open_softphone(browser, daemon.base_url, AGENT_TOKEN)
            await wait_state(daemon, ADMIN, "3001", {"available"}, 10)
            caller = sipp(tmp_path, ["-sn", "uac"], sip, "-s", "support", "-m", "1",
                          "-d", "6000")  # fmt: skip
            await expect(page.locator("#incoming")).to_be_visible(timeout=15000)
            await page.click("#answer")
            await wait_state(daemon, ADMIN, "3001", {"busy"}, 10)
            await page.fill("#transfer-to", "sales")
            await page.click("#transfer")
            await expect(page.locator("#rtc-note")).to_have_text("Transferred to sales")
            await expect(page.locator("#transfer")).to_be_disabled()  # the call left this page
            await wait_state(daemon, ADMIN, "3001", {"wrap_up", "available"}, 5)
        assert caller is not None
        assert caller.wait(timeout=20) == 0  # the caller talked on with b1 and hung up normally
    finally:
        for proc in (caller, other):
            if proc is not None:
                stop(proc)
    time.sleep(1.5)
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (row,) = db.execute("SELECT agent_id, queue, disposition, flow_data FROM calls").fetchall()
        events = db.execute(
            "SELECT queue, agent_id, event FROM queue_events ORDER BY id"
        ).fetchall()
    assert row[:3] == ("b1", "sales", "answered")
    assert json.loads(row[3])["transferred_by"] == "3001"
    assert events == [
        ("support", None, "enter"),
        ("support", "3001", "offer"),
        ("support", "3001", "answer"),
        ("support", "3001", "transfer"),
        ("sales", None, "enter"),
        ("sales", "b1", "offer"),
        ("sales", "b1", "answer"),
        ("sales", "b1", "complete"),
    ]
