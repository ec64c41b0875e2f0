"""Supervisor listen / whisper / barge on a live call, with three real phones and their tones.

A baresip caller (440 Hz microphone) dials ``support``; agent 1001 (baresip, 880 Hz) answers;
supervisor 1009 (baresip, 660 Hz, an [[agents]] entry in no queue) is rung through
``POST /api/v1/calls/{id}/monitor`` and auto-answers. What each phone decoded is cut at the
moments the mode changed (counted back from the end of its received-audio dump, which ends with
its call) and measured by the share of its energy at each tone: listen, the supervisor hears 440 and 880 and nobody hears 660;
whisper, the agent hears 660 and the caller does not; barge, both do. The supervisor hanging up
ends the monitoring, not the call: caller and agent go on hearing each other, and the recording
holds caller (left) and agent (right), the supervisor only while barging (on the agent's side). The API's refusals (400, 403, 404, 409), the audit
rows, the event stream (supervisors see the ``monitor`` events, the agent does not) and the
metrics are checked on the same call. Run once in the daemon and once with ``[media] workers =
1``, where the worker carrying the call mixes the supervisor in.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import Baresip, free_port_block
from tests.sip.media.media_helpers import tone_share

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-monitor-0123"
SUPERVISOR = "supervisor-token-monitor-4567"
AGENT_1001 = "agent-1001-token-monitor"
PHASE_S = 1.2  # audio per mode; measured from 0.3 s after the switch to 0.1 s before the next


def config(rtp_base: int, media_workers: int) -> str:
    return (
        front_door(ADMIN, rtp_base=rtp_base, flush_s=0.5, media_workers=media_workers)
        + f"""
[[api.tokens]]
name = "floor-supervisor"
role = "supervisor"
token = "{SUPERVISOR}"

[[queues]]
name = "support"
requirements = {{ support = 1 }}
ring_timeout_s = 10.0
wrap_up_s = 1.0

[[agents]]
id = "1001"
password = "alice-secret-1001"
api_token = "{AGENT_1001}"
skills = {{ support = 8 }}
queues = {{ support = 0 }}

[[agents]]
id = "1009"
name = "Sam Supervisor"
password = "sam-secret-1009"
"""
    )


def request(
    daemon: DaemonProcess, method: str, path: str, token: str, body: object = None
) -> tuple[int, object]:
    req = urllib.request.Request(
        daemon.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
    )
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def live_call(daemon: DaemonProcess) -> dict[str, object] | None:
    status, calls = request(daemon, "GET", "/api/v1/calls", ADMIN)
    assert status == 200, calls
    assert isinstance(calls, list)
    return next((c for c in calls if c["phase"] == "bridged"), None)


def monitor_state(daemon: DaemonProcess) -> str | None:
    """The bridged call's monitoring state (ringing, active), None when it has none."""
    call = live_call(daemon)
    monitor = None if call is None else call["monitor"]
    return None if monitor is None else str(monitor["state"])  # type: ignore[index]


def agent_state(daemon: DaemonProcess, agent: str) -> str:
    status, body = request(daemon, "GET", f"/api/v1/agents/{agent}", ADMIN)
    assert status == 200, body
    assert isinstance(body, dict)
    return str(body["state"])


def expect(reply: tuple[int, object], status: int, why: str) -> None:
    """A refusal with ``status`` whose Problem detail says ``why``."""
    assert reply[0] == status, reply
    assert isinstance(reply[1], dict)
    assert why in str(reply[1]["detail"]), reply


def check(pcm: np.ndarray, hears: tuple[int, ...], not_hears: tuple[int, ...]) -> None:
    """``pcm`` holds each tone of ``hears`` (a share of its energy, as in a mix of two or three)
    and none of ``not_hears``."""
    assert len(pcm) > 4000, len(pcm)
    shares = {hz: round(tone_share(pcm, hz), 3) for hz in (440, 660, 880)}
    assert all(shares[hz] > 0.1 for hz in hears), shares
    assert all(shares[hz] < 0.01 for hz in not_hears), shares


class EventStream:
    """The /api/v1/events WebSocket read in a thread, as ``token`` sees it."""

    def __init__(self, daemon: DaemonProcess, token: str) -> None:
        self.events: list[dict[str, object]] = []
        self._url = f"ws://127.0.0.1:{daemon.http_port}/api/v1/events"
        self._token = token
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._read()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "event stream did not connect"

    async def _read(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.ws_connect(self._url) as ws:
            await ws.send_json({"type": "auth", "token": self._token})
            self._ready.set()
            while not self._stop.is_set():
                try:
                    message = await ws.receive(timeout=0.1)
                except TimeoutError:
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    return
                self.events.append(json.loads(message.data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.parametrize("media_workers", [0, 1], ids=["in_daemon", "media_worker"])
def test_listen_whisper_barge_then_the_supervisor_hangs_up(
    start_daemon: DaemonFactory, tmp_path: Path, media_workers: int
) -> None:
    """With ``[media] workers = 1`` the call and the supervisor's leg are carried (and mixed)
    by the worker: the same audio must come out."""
    daemon = start_daemon(config(free_port_block(100), media_workers))
    sip = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    phone = ";regint=60;answermode=auto;audio_codecs=PCMU"
    agent = Baresip(tmp_path / "agent", f"<sip:1001@{sip}>;auth_pass=alice-secret-1001{phone}", 880)
    sup = Baresip(tmp_path / "sup", f"<sip:1009@{sip}>;auth_pass=sam-secret-1009{phone}", 660)
    caller: Baresip | None = None
    streams: list[EventStream] = []
    # When each mode began, and when each phone's call ended: a phone's received-audio dump
    # is continuous (its player runs on its own clock) and ends with its call, so a moment is a
    # sample position counted back from the end (the dump is written only in large blocks, so
    # its size mid-call says nothing).
    # Each phase's [start, end] on the monotonic clock: from the switch's answer to just before
    # the next switch is asked for (a switch's CLI or request takes time under load; what is
    # heard while it runs belongs to neither phase).
    phases: list[list[float]] = []
    ended: dict[str, float] = {}

    def begin() -> None:  # a phase's sound starts: the switch has been answered
        phases.append([time.monotonic()])

    def end() -> None:  # and ends before the next switch is asked for
        phases[-1].append(time.monotonic())

    try:
        agent.wait_for("200 OK")
        sup.wait_for("200 OK")
        wait_until(lambda: agent_state(daemon, "1001") == "available", 10, "agent 1001 available")
        streams = [EventStream(daemon, SUPERVISOR), EventStream(daemon, AGENT_1001)]
        caller = Baresip(
            tmp_path / "caller", f"<sip:5551234@{sip}>;regint=0;audio_codecs=PCMU", 440,
            dial=f"sip:support@{sip}",
        )  # fmt: skip
        wait_until(lambda: live_call(daemon), 20, "the call bridged to agent 1001")
        live = live_call(daemon)
        assert live is not None
        assert live["monitor"] is None
        path = f"/api/v1/calls/{live['id']}/monitor"

        # -- refusals: each names why, and nothing starts ----------------------------------------
        start = {"mode": "listen", "supervisor": "1009"}
        assert request(daemon, "POST", path, AGENT_1001, start)[0] == 403  # the agent may not
        assert request(daemon, "POST", "/api/v1/calls/nope/monitor", SUPERVISOR, start)[0] == 404
        spy = request(daemon, "POST", path, SUPERVISOR, {**start, "mode": "spy"})
        expect(spy, 400, "mode must be one of listen, whisper, barge")
        nobody = request(daemon, "POST", path, SUPERVISOR, {**start, "supervisor": "9999"})
        expect(nobody, 400, "no supervisor '9999'")
        own = request(daemon, "POST", path, SUPERVISOR, {**start, "supervisor": "1001"})
        expect(own, 409, "1001 is the call's agent")
        assert request(daemon, "PATCH", path, SUPERVISOR, {"mode": "barge"})[0] == 404

        # -- listen ------------------------------------------------------------------------------
        status, started = request(daemon, "POST", path, SUPERVISOR, start)
        assert status == 202, started
        assert isinstance(started, dict)
        # the supervisor's phone auto-answers: on a quick machine it may have by the time we hear back
        assert started["state"] in ("ringing", "active"), started
        assert (started["mode"], started["supervisor"]) == ("listen", "1009")
        expect(request(daemon, "POST", path, ADMIN, start), 409, "already monitored by 1009")
        wait_until(lambda: monitor_state(daemon) == "active", 10, "the supervisor on the call")
        sup.wait_for("Call established")
        begin()
        time.sleep(PHASE_S)
        end()
        # -- whisper (as an operator switches it: `acd monitor`), barge -------------------------
        cli = [sys.executable, "-m", "engine.cli", "monitor", str(live["id"]), "whisper",
               "--url", daemon.base_url, "--token", SUPERVISOR]  # fmt: skip
        switched = subprocess.run(cli, capture_output=True, text=True, timeout=30, check=False)
        assert switched.returncode == 0, switched.stderr
        assert switched.stdout.strip() == f"{live['id']}: 1009 whisper (active)"
        begin()
        time.sleep(PHASE_S)
        end()
        status, body = request(daemon, "PATCH", path, SUPERVISOR, {"mode": "barge"})
        assert status == 200, body
        assert body["mode"] == "barge"  # type: ignore[index]
        begin()
        time.sleep(PHASE_S)
        end()
        # -- the supervisor hangs up: the call goes on -------------------------------------------
        ended["sup"] = time.monotonic()
        sup.command("hangup")
        wait_until(lambda: monitor_state(daemon) is None, 10, "the monitoring ended")
        begin()
        time.sleep(PHASE_S)
        after = live_call(daemon)
        assert after is not None
        assert after["id"] == live["id"]
        assert request(daemon, "DELETE", path, SUPERVISOR)[0] == 404  # nothing left to stop
        end()
        caller.command("hangup")
        ended["caller"] = ended["agent"] = time.monotonic()  # the agent gets our BYE at once
        wait_until(lambda: live_call(daemon) is None, 10, "the call ended")
    finally:
        for stream in streams:
            stream.close()
        for p in (caller, agent, sup):
            if p is not None:
                p.stop()  # baresip finishes its dumps of what it heard
    assert caller is not None

    phones = {"caller": caller, "agent": agent, "sup": sup}

    def part(name: str, phase: int) -> np.ndarray:
        pcm = phones[name].heard()
        first, last = (len(pcm) - round((ended[name] - t) * 8000) for t in phases[phase])
        return pcm[first + 2400 : last - 800]

    for phase in range(3):  # listen, whisper, barge: the supervisor hears both sides
        check(part("sup", phase), (440, 880), (660,))
    check(part("caller", 0), (880,), (660,))  # listen: nobody hears the supervisor
    check(part("agent", 0), (440,), (660,))
    check(part("caller", 1), (880,), (660,))  # whisper: the agent does, the caller does not
    check(part("agent", 1), (440, 660), ())
    check(part("caller", 2), (660, 880), ())  # barge: both do
    check(part("agent", 2), (440, 660), ())
    # after the supervisor's hang-up the call went on: caller and agent only
    check(part("caller", 3), (880,), (440, 660))
    check(part("agent", 3), (440,), (660, 880))

    # -- the record ------------------------------------------------------------------------------
    time.sleep(1.0)  # the CDR writer's flush
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        (cdr,) = db.execute("SELECT * FROM calls").fetchall()
        audits = [
            (r["action"], r["outcome"], r["actor"])
            for r in db.execute("SELECT * FROM audit_log WHERE action LIKE 'monitor%' ORDER BY id")
        ]
        rec = db.execute("SELECT * FROM recordings").fetchone()
    assert (cdr["disposition"], cdr["hangup_side"], cdr["agent_id"]) == (
        "answered",
        "caller",
        "1001",
    )
    assert ("monitor_start", "denied", "agent:1001") in audits
    assert audits.count(("monitor_start", "refused", "floor-supervisor")) == 4
    assert ("monitor_start", "done", "floor-supervisor") in audits
    assert audits.count(("monitor_mode", "done", "floor-supervisor")) == 2
    with wave.open(rec["path"]) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)

    # What the caller heard is recorded: the caller on the left, alone; the agent on the right,
    # with the supervisor only while barging (positions follow the wall clock to the hang-up).
    def recorded(phase: int) -> np.ndarray:
        first, last = (len(stereo) - round((ended["caller"] - t) * 8000) for t in phases[phase])
        return stereo[first + 2400 : last - 800]

    for phase in range(4):
        check(recorded(phase)[:, 0], (440,), (660, 880))
    for phase in (0, 1, 3):  # listen, whisper, after the supervisor left
        check(recorded(phase)[:, 1], (880,), (440, 660))
    check(recorded(2)[:, 1], (660, 880), (440,))

    # -- the event stream and the metrics --------------------------------------------------------
    seen = [(e["event"], e.get("reason")) for e in streams[0].events if e["type"] == "monitor"]
    assert seen == [
        ("ringing", None), ("started", None), ("mode_changed", None), ("mode_changed", None),
        ("ended", "supervisor bye"),
    ], seen  # fmt: skip
    assert not [e for e in streams[1].events if e["type"] == "monitor"]
    assert [e for e in streams[1].events if e["type"] == "agent"]  # the agent's stream was live
    status, metrics, _ = daemon.get("/metrics")
    text = metrics.decode()
    assert 'acd_monitor_sessions_total{mode="listen"} 1.0' in text
    assert 'acd_monitor_sessions_total{mode="barge"} 0.0' in text
    assert "acd_monitor_sessions_active 0.0" in text
    if media_workers:  # the call (and so the supervisor's mix) was carried by the worker
        assert 'acd_media_handoffs_total{outcome="carried"} 1.0' in text
        assert 'acd_media_handoffs_total{outcome="taken_back"}' not in text  # never taken back
