"""The softphone in Debian's Chromium against the real daemon's WebRTC gateway, checked by frequency.

The browser's fake microphone plays 880 Hz; the test is the call's side of the bridge: a UDP socket
that sends 440 Hz PCMU to the agent session's RTP port and keeps what the gateway sends back.

Why the daemon runs in the test process (``Daemon(config).run()`` on the test's event loop, the very
object ``acd run`` builds) rather than as a subprocess: the call side needs the session's RTP address
and must call ``connect_rtp``, which is the call layer's in-process API. Reaching it from outside
would need an API route that lets someone point an agent's microphone at any address, which only a
test would want and an attacker would love. In-process, production code stays as it ships.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from playwright.async_api import Browser, expect

from engine.daemon import Daemon
from engine.webrtc.gateway import RTC_PATH
from engine.webrtc.session import CloseCode
from sip.rtp.dtmf import parse_telephone_event
from sip.rtp.g711 import ULAW_DECODE, ULAW_ENCODE
from sip.rtp.packet import parse_rtp
from tests.e2e.browser import ARTIFACTS, HEARD_JS, chromium, log_in
from tests.e2e.conftest import in_process_daemon

pytestmark = pytest.mark.e2e

WEBRTC_AGENT = "agent-3001-token-webrtc"
DESK_AGENT = "agent-3002-token-deskphone"
EXTRA = f"""
[[queues]]
name = "support"

[[agents]]
id = "3001"
name = "Wendy"
login = "webrtc"
queues = {{ support = 0 }}
api_token = "{WEBRTC_AGENT}"

[[agents]]
id = "3002"
name = "Desmond"
queues = {{ support = 0 }}
api_token = "{DESK_AGENT}"
"""


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64)
    x = (x - x.mean()) * np.hanning(len(x))
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x))


class CallSide(asyncio.DatagramProtocol):
    """Stands in for the call's bridge: 440 Hz PCMU out, every received packet kept."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def play_tone(self, to: tuple[str, int], hz: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(int(seconds * 50)):
            t = (i * 160 + np.arange(160)) / 8000
            pcm = (8000 * np.sin(2 * math.pi * hz * t)).astype(np.int16)
            header = struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, i * 160, 0xCA11)
            self.transport.sendto(header + ULAW_ENCODE[pcm.view(np.uint16)].tobytes(), to)
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))


@pytest.fixture
async def daemon(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Daemon, str]]:
    workers = getattr(request, "param", 0)  # [webrtc] workers: media worker processes
    async with in_process_daemon(tmp_path, EXTRA + f"\n[webrtc]\nworkers = {workers}\n") as running:
        yield running


async def _wait_port_released(port: int) -> None:
    """The session's RTP port can be bound again. With workers the registry lets go first and the
    worker closes the socket a moment later, so poll (5 s at most)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                pass
            else:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"RTP port {port} is still bound")


async def _readyz(
    base: str, until: Callable[[int, dict[str, Any]], bool] | None = None, timeout_s: float = 15.0
) -> tuple[int, dict[str, Any]]:
    """GET /readyz; with ``until``, poll (every 20 ms, ``timeout_s`` at most) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(base + "/readyz") as resp:
                status, body = resp.status, await resp.json()
            if until is None or until(status, body):
                return status, body
            assert asyncio.get_running_loop().time() < deadline, (status, body)
            await asyncio.sleep(0.02)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async with chromium(tmp_path, 880, 10) as b:
        yield b


#: A browser that will not do G.711 (the page asks for PCMU first; this one only offers Opus).
OPUS_ONLY_JS = """
const prefer = RTCRtpTransceiver.prototype.setCodecPreferences;
RTCRtpTransceiver.prototype.setCodecPreferences = function (codecs) {
  return prefer.call(this, codecs.filter((c) => c.mimeType === "audio/opus"));
};
"""


@pytest.mark.parametrize("daemon", [0, 2], ids=["in-daemon", "2-workers"], indirect=True)
async def test_opus_softphone_hears_and_is_heard(
    daemon: tuple[Daemon, str], browser: Browser
) -> None:
    """Opus with Chromium: the gateway's own Opus encode and decode (PyAV on the loop, not
    aiortc's codec threads) carry the call's tone to the page and the page's tone to the call."""
    d, base = daemon
    assert d.webrtc is not None
    loop = asyncio.get_running_loop()
    transport, call = await loop.create_datagram_endpoint(CallSide, local_addr=("127.0.0.1", 0))
    try:
        page = await browser.new_page()
        await page.add_init_script(OPUS_ONLY_JS)
        await log_in(page, base + "/agent", WEBRTC_AGENT)
        await expect(page.locator("#rtc-state")).to_have_text("softphone opus", timeout=10000)
        session = d.webrtc.session("3001")
        assert session is not None
        assert session.codec == "opus"
        session.connect_rtp(*call.address)
        player = asyncio.create_task(call.play_tone(session.rtp_address, 440, 4.0))
        peaks = await page.evaluate(HEARD_JS, 20)
        late = peaks[5:]  # skip the jitter buffer's first fill
        assert sum(abs(hz - 440) < 12 and db > -70 for hz, db in late) >= len(late) * 0.8, peaks
        await player
        voice = [p for p in map(parse_rtp, call.received) if p.payload_type == 0]
        assert len(voice) > 100
        pcm = ULAW_DECODE[np.frombuffer(b"".join(p.payload for p in voice[-50:]), np.uint8)]
        assert abs(dominant_hz(pcm, 8000) - 880) < 15
        assert np.abs(pcm.astype(np.int32)).mean() > 300  # a tone, not comfort noise
        await page.close()
    finally:
        transport.close()


@pytest.mark.parametrize("daemon", [0, 2], ids=["in-daemon", "2-workers"], indirect=True)
async def test_softphone_hears_and_is_heard_sends_dtmf_and_lets_go(
    daemon: tuple[Daemon, str], browser: Browser
) -> None:
    d, base = daemon
    assert d.webrtc is not None
    workers = d.webrtc.worker_pids
    assert len(workers) == d.config.webrtc.workers
    loop = asyncio.get_running_loop()
    transport, call = await loop.create_datagram_endpoint(CallSide, local_addr=("127.0.0.1", 0))
    try:
        page = await browser.new_page()
        await log_in(page, base + "/agent", WEBRTC_AGENT)
        await expect(page.locator("#rtc-state")).to_have_text("softphone PCMU", timeout=10000)
        session = d.webrtc.session("3001")
        assert session is not None
        assert session.codec == "PCMU"
        # with workers, the media (and the RTP port the call side talks to) is in one of them
        assert (session.worker_pid in workers) if workers else session.worker_pid is None

        # What the call layer does at bridge time.
        session.connect_rtp(*call.address)
        player = asyncio.create_task(call.play_tone(session.rtp_address, 440, 4.0))
        peaks = await page.evaluate(HEARD_JS, 20)
        late = peaks[5:]  # skip the jitter buffer's first fill
        assert sum(abs(hz - 440) < 12 and db > -70 for hz, db in late) >= len(late) * 0.8, peaks

        voice = [p for p in map(parse_rtp, call.received) if p.payload_type == 0]
        assert len(voice) > 50
        pcm = ULAW_DECODE[np.frombuffer(b"".join(p.payload for p in voice[-50:]), np.uint8)]
        assert abs(dominant_hz(pcm, 8000) - 880) < 15
        assert np.abs(pcm.astype(np.int32)).mean() > 300  # a tone, not comfort noise

        call.received.clear()
        await page.click('#keypad [data-digit="7"]')
        for _ in range(50):
            events = [p for p in map(parse_rtp, call.received) if p.payload_type == 101]
            if sum(parse_telephone_event(p.payload).end for p in events) >= 3:
                break
            await asyncio.sleep(0.05)
        assert {parse_telephone_event(p.payload).digit for p in events} == {"7"}
        assert sum(parse_telephone_event(p.payload).end for p in events) == 3
        assert len({p.timestamp for p in events}) == 1
        await player

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "agent-softphone.png"))
        port = session.rtp_address[1]
        await page.close()
        for _ in range(100):
            if d.webrtc.session("3001") is None:
                break
            await asyncio.sleep(0.05)
        assert d.webrtc.session("3001") is None
        await _wait_port_released(port)  # the session's RTP port is free again
        async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
            text = await resp.text()
        assert re.search(r"^acd_webrtc_sessions 0\.0$", text, re.M)
        assert re.search(r'^acd_webrtc_packets_total\{direction="to_browser"\} [1-9]', text, re.M)
    finally:
        transport.close()


async def test_desk_phone_agent_gets_no_softphone(
    daemon: tuple[Daemon, str], browser: Browser
) -> None:
    d, base = daemon
    page = await browser.new_page()
    await log_in(page, base + "/agent", DESK_AGENT)
    await expect(page.locator("#rtc-state")).to_have_text("calls ring on your desk phone")
    async with aiohttp.ClientSession() as http, http.ws_connect(base + RTC_PATH) as ws:
        await ws.send_json({"type": "auth", "token": DESK_AGENT})
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == CloseCode.NOT_WEBRTC_AGENT
        assert "login" in msg.extra
    assert d.webrtc is not None
    assert d.webrtc.sessions == {}


@pytest.mark.parametrize("daemon", [2], ids=["2-workers"], indirect=True)
async def test_a_dead_media_worker_closes_its_softphones_and_comes_back(
    daemon: tuple[Daemon, str], browser: Browser
) -> None:
    d, base = daemon
    assert d.webrtc is not None
    page = await browser.new_page()
    await log_in(page, base + "/agent", WEBRTC_AGENT)
    await expect(page.locator("#rtc-state")).to_have_text("softphone PCMU", timeout=10000)
    session = d.webrtc.session("3001")
    assert session is not None
    dead = session.worker_pid
    assert dead in d.webrtc.worker_pids
    status, body = await _readyz(base)
    assert (status, body["checks"]["webrtc_workers"]) == (200, "ok")
    os.kill(dead, signal.SIGKILL)
    # /readyz names the slot that is down until its replacement is up (the restart takes at least
    # the 0.5 s back-off plus a second or so of imports: the poll sees it)
    status, body = await _readyz(base, until=lambda status, _: status == 503)
    assert body["status"] == "not_ready"
    assert re.fullmatch(
        rf"media worker [01] \(pid {dead}\) died( \(killed by SIGKILL\))?; restarting",
        body["checks"]["webrtc_workers"],
    ), body
    # the page is told why (close 1011), and its softphone reconnects by itself: to a worker
    # that is up (the other one, or the dead one's replacement)
    await expect(page.locator("#rtc-note")).to_have_text("media worker died", timeout=10000)
    await expect(page.locator("#rtc-state")).to_have_text("softphone PCMU", timeout=15000)
    again = d.webrtc.session("3001")
    assert again is not None
    assert again is not session
    assert again.connection_state == "connected"
    # ready again once the replacement worker is up (it takes a second or two to import aiortc)
    status, body = await _readyz(base, until=lambda status, _: status == 200)
    assert body == {"status": "ready", "checks": {**body["checks"], "webrtc_workers": "ok"}}
    pids = d.webrtc.worker_pids
    assert len(pids) == 2
    assert dead not in pids
    assert again.worker_pid in pids
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        text = await resp.text()
    assert re.search(r"^acd_webrtc_worker_restarts_total 1\.0$", text, re.M)
    assert re.search(r"^acd_webrtc_workers 2\.0$", text, re.M)
    assert re.search(r'^acd_webrtc_sessions_closed_total\{reason="worker_died"\} 1\.0$', text, re.M)
    await page.close()
