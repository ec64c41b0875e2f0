"""A call to a browser agent seen from the two pages: the desk records it, the wallboard follows it.

baresip dials the ``support`` queue (``record = "on_demand"``) while agent 3001 is not ready, so the
call really waits; the agent, in headless Chromium, goes ready, answers, and drives the recording
controls: Pause before anything is recorded is refused with the server's reason, Record starts an
on-demand recording (a row in the recordings index, started by the agent), Pause then Resume leave
one paused span. The wallboard, open in a second page with the admin token, follows the call from
the event stream (each step within 2 s, well inside its 5 s fallback poll): waiting 1 with the agent
not ready, the agent ringing, busy with nothing waiting, then wrap-up after hang-up, and available
again when the wrap-up timer runs out. Meanwhile the agent's own page counts the wrap-up down and
shows the state the routing core reaches when it ends.

The recording is checked by content: 440 Hz (caller) on the left and 880 Hz (the browser's fake
microphone) on the right before and after the pause, silence on both channels inside it. Last, with
both pages still open, SIGTERM ends the daemon in well under its 5 s HTTP shutdown timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import expect

from tests.e2e.browser import ARTIFACTS, chromium, log_in, open_softphone, wait_state
from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.peers import Baresip, dominant_hz, free_port_block

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-agent-desktop-0123"
AGENT_TOKEN = "agent-3001-token-agent-desktop"
# The wallboard refreshes on every event (250 ms debounce) and polls every 5 s: 2 s shows it is live.
LIVE_S = 2.0
# Long enough to see the agent page's countdown step down at least once after it appeared.
WRAP_UP_S = 4.0


def config(rtp_base: int) -> str:
    return (
        front_door(ADMIN, rtp_base=rtp_base, flush_s=0.5)
        + f"""
[[queues]]
name = "support"
ring_timeout_s = 30.0
wrap_up_s = {WRAP_UP_S}
record = "on_demand"

[[agents]]
id = "3001"
name = "Wendy"
login = "webrtc"
queues = {{ support = 0 }}
api_token = "{AGENT_TOKEN}"
"""
    )


def db_rows(daemon: DaemonProcess, sql: str) -> list[sqlite3.Row]:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql).fetchall()


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(float) ** 2)))


async def test_agent_records_and_pauses_while_the_wallboard_follows_the_call(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    daemon = start_daemon(config(free_port_block(100)))
    sip = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller: Baresip | None = None
    async with chromium(tmp_path, 880) as browser:
        try:
            board = await browser.new_page(viewport={"width": 1920, "height": 1080})
            await log_in(board, daemon.base_url + "/wallboard", ADMIN)
            await expect(board.locator("#conn")).to_have_text("live")
            queue = board.locator('[data-queue="support"]')
            waiting = queue.locator(".waiting")
            agents = {
                s: queue.locator(f'[data-state="{s}"]')
                for s in ("available", "reserved", "busy", "wrap_up", "not_ready")
            }

            desk = await open_softphone(browser, daemon.base_url, AGENT_TOKEN)
            await wait_state(daemon, ADMIN, "3001", {"available"}, 10)
            await expect(agents["available"]).to_have_text("available 1", timeout=LIVE_S * 1000)
            for button in ("#record", "#record-pause"):  # no call: nothing to record
                await expect(desk.locator(button)).to_be_disabled()

            # -- queued: the only agent is not ready, so the caller waits --------------------------
            await desk.select_option("#reason", "break")
            await desk.click("#not-ready")
            await expect(agents["not_ready"]).to_have_text("not ready 1", timeout=LIVE_S * 1000)
            caller = Baresip(
                tmp_path / "caller", f"<sip:5551234@{sip}>;regint=0;audio_codecs=PCMU", 440,
                dial=f"sip:support@{sip}",
            )  # fmt: skip
            await expect(waiting).to_have_text(re.compile(r"waiting\s*1$"), timeout=15000)
            await expect(agents["not_ready"]).to_have_text("not ready 1")

            # -- ringing, then bridged ----------------------------------------------------------------
            await desk.click("#ready")
            await expect(desk.locator("#incoming")).to_be_visible(timeout=15000)
            await expect(agents["reserved"]).to_have_text("ringing 1", timeout=LIVE_S * 1000)
            await desk.click("#answer")
            await wait_state(daemon, ADMIN, "3001", {"busy"}, 10)
            await expect(waiting).to_have_text(re.compile(r"waiting\s*0$"), timeout=LIVE_S * 1000)
            await expect(agents["busy"]).to_have_text("busy 1", timeout=LIVE_S * 1000)
            await expect(queue.locator(".figs")).to_have_text("answered 0 · abandoned 0")
            await board.screenshot(path=str(ARTIFACTS / "wallboard-during-call.png"))

            # -- recording controls -------------------------------------------------------------------
            record, pause, status = (
                desk.locator("#record"), desk.locator("#record-pause"), desk.locator("#record-state")
            )  # fmt: skip
            await expect(record).to_be_enabled(timeout=5000)
            await pause.click()  # nothing is recorded yet: the server says so, the page shows it
            await expect(status).to_have_text(
                "pause refused: the call is not being recorded", timeout=5000
            )
            assert db_rows(daemon, "SELECT id FROM recordings") == []
            recorded_from = time.monotonic()
            await record.click()
            await expect(status).to_have_text("recording", timeout=5000)
            await expect(record).to_be_disabled()
            (row,) = db_rows(daemon, "SELECT * FROM recordings")  # the index row, from the click
            assert (row["queue"], row["agent_id"], row["on_demand"], row["started_by"]) == (
                "support", "3001", 1, "agent:3001",
            )  # fmt: skip
            await desk.screenshot(path=str(ARTIFACTS / "agent-recording.png"))
            await asyncio.sleep(1.5)
            await pause.click()
            await expect(status).to_have_text("recording paused", timeout=5000)
            await expect(pause).to_have_text("Resume recording")
            await expect(pause).to_have_attribute("aria-pressed", "true")
            await asyncio.sleep(1.5)
            await pause.click()
            await expect(status).to_have_text("recording", timeout=5000)
            await expect(pause).to_have_text("Pause recording")
            await asyncio.sleep(1.5)

            # -- hang-up ---------------------------------------------------------------------------
            await desk.click("#hangup")
            recorded_s = time.monotonic() - recorded_from  # Record click to hang-up click
            await expect(agents["busy"]).to_have_text("busy 0", timeout=LIVE_S * 1000)
            await expect(agents["wrap_up"]).to_have_text("wrap up 1")
            # The desk counts the wrap-up down from the seconds left the API reported.
            state = desk.locator("#state")
            countdown = re.compile(r"^wrap up 0:0(\d)$")
            await expect(state).to_have_text(countdown, timeout=LIVE_S * 1000)
            shown = countdown.match(await state.inner_text())
            assert shown is not None
            first = int(shown[1])
            assert WRAP_UP_S - LIVE_S <= first <= WRAP_UP_S, first
            await desk.screenshot(path=str(ARTIFACTS / "agent-wrap-up.png"))
            await expect(state).to_have_text(
                re.compile(rf"^wrap up 0:0[0-{first - 1}]$"), timeout=1500
            )
            figures = queue.locator(".figs")  # today's, from the CDR store
            await expect(figures).to_have_text("answered 1 · abandoned 0", timeout=LIVE_S * 1000)
            # The end of the wrap-up (a routing-core timer) is published as an agent event: both
            # pages show the state it reached.
            await expect(agents["available"]).to_have_text(
                "available 1", timeout=(WRAP_UP_S + LIVE_S) * 1000
            )
            await expect(state).to_have_text("available", timeout=LIVE_S * 1000)
            for button in ("#record", "#record-pause"):
                await expect(desk.locator(button)).to_be_disabled()
            await expect(status).to_have_text("")
            caller.wait_for("terminated (duration", 10)

            # -- shutdown with both pages open -------------------------------------------------------
            started = time.monotonic()
            daemon.signal(signal.SIGTERM)
            code = await asyncio.to_thread(daemon.proc.wait, 10)
            elapsed = time.monotonic() - started
            assert code == 0
            assert elapsed < 2.5, elapsed  # http.shutdown_timeout_s is 5 s
            await expect(board.locator("#conn")).to_have_text("disconnected", timeout=5000)
        finally:
            if caller is not None:
                caller.stop()

    (row,) = db_rows(daemon, "SELECT * FROM recordings")
    assert row["duration_s"] is not None, dict(row)
    spans = json.loads(row["paused_spans"])
    assert len(spans) == 1, spans
    start, end = spans[0]
    assert abs((end - start) / 8000 - 1.5) < 0.5, spans
    with wave.open(row["path"]) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    # The file covers the request to the hang-up (both clicks' round trips are in the tolerance).
    assert abs(len(stereo) / 8000 - recorded_s) < 0.5, (len(stereo) / 8000, recorded_s)
    before, during, past = (
        stereo[800 : start - 800],
        stereo[start + 400 : end - 400],
        stereo[end + 1600 : -800],
    )
    for part in (before, past):  # the call's audio, caller left, agent right
        assert abs(dominant_hz(part[:, 0]) - 440) < 15
        assert abs(dominant_hz(part[:, 1]) - 880) < 20
        assert min(rms(part[:, 0]), rms(part[:, 1])) > 300
    assert max(rms(during[:, 0]), rms(during[:, 1])) < 50  # PCI: nothing of the paused span
