"""The WebRTC media gateway in-process: real aiohttp WebSocket, real aiortc peer on the browser's side,
real UDP sockets on the call's side. Content is checked by frequency, DTMF by its RFC 4733 packets.

The browser itself is covered by tests/e2e/test_webrtc.py; this file is the fast loop and the cases a
browser cannot easily produce (an Opus-only offer, garbage SDP, a replaced login).
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import math
import os
import signal
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, AudioResampler, Packet
from prometheus_client import CollectorRegistry

from engine.config import ConfigError, parse_config
from engine.webrtc.g711 import install_g711_tap
from engine.webrtc.gateway import RTC_PATH, WebRtcGateway
from engine.webrtc.session import CloseCode
from engine.webrtc.track import _MediaClock
from sip.rtp.dtmf import parse_telephone_event
from sip.rtp.g711 import ALAW_TO_ULAW, ULAW_DECODE, ULAW_ENCODE, ULAW_TO_ALAW
from sip.rtp.packet import parse_rtp
from tests.conftest import free_port

CONFIG = """
[[queues]]
name = "support"

[[agents]]
id = "2001"
login = "webrtc"
queues = { support = 0 }
api_token = "agent-2001-token-webrtc"

[[agents]]
id = "2002"
queues = { support = 0 }
api_token = "agent-2002-token-sipphone"
"""
TOKENS = {"agent-2001-token-webrtc": "2001", "agent-2002-token-sipphone": "2002"}


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64)
    x = (x - x.mean()) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * rate / len(x))


class ToneTrack(MediaStreamTrack):
    """A microphone that plays a sine, paced like a real capture device (48 kHz, 20 ms)."""

    kind = "audio"

    def __init__(self, hz: float, rate: int = 48000) -> None:
        super().__init__()
        self.hz, self.rate, self.n = hz, rate, rate // 50
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += self.n
            await asyncio.sleep(max(0.0, self._start + self._pts / self.rate - loop.time()))
        t = (self._pts + np.arange(self.n)) / self.rate
        pcm = (8000 * np.sin(2 * math.pi * self.hz * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = self.rate, self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame


class CallSide(asyncio.DatagramProtocol):
    """The call's bridge stand-in: sends a 440 Hz PCMU stream, keeps every packet it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def play_tone(self, to: tuple[str, int], hz: float, seconds: float) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(int(seconds * 50)):
            t = (i * 160 + np.arange(160)) / 8000
            pcm = (8000 * np.sin(2 * math.pi * hz * t)).astype(np.int16)
            payload = ULAW_ENCODE[pcm.view(np.uint16)].tobytes()
            header = struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, i * 160, 0x1234)
            self.transport.sendto(header + payload, to)
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))


@pytest.fixture
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[tuple[WebRtcGateway, str]]:
    workers = getattr(request, "param", 0)  # media worker processes ([webrtc] workers)
    config = parse_config(f"[webrtc]\nworkers = {workers}\n{CONFIG}", "test.toml")
    gw = WebRtcGateway(lambda: config, TOKENS.get, CollectorRegistry())
    await gw.start()
    assert len(gw.worker_pids) == workers
    app = web.Application()
    gw.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield gw, f"ws://127.0.0.1:{port}{RTC_PATH}"
    finally:
        await gw.close()
        await runner.cleanup()


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        data: dict[str, Any] = msg.json()
        if data["type"] == kind:
            return data


async def _softphone(
    ws: aiohttp.ClientWebSocketResponse, mic: MediaStreamTrack, codec: str | None = None
) -> tuple[RTCPeerConnection, list[MediaStreamTrack], str]:
    """Do what the page does: auth, offer with candidates gathered, apply the answer."""
    await ws.send_json({"type": "auth", "token": "agent-2001-token-webrtc"})
    await _next(ws, "hello")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks: list[MediaStreamTrack] = []
    pc.on("track", tracks.append)
    transceiver = pc.addTransceiver(mic, direction="sendrecv")
    if codec:  # a browser that insists on one codec
        caps = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == codec])
    await pc.setLocalDescription(await pc.createOffer())
    await ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
    answer = await _next(ws, "answer")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    while (await _next(ws, "connection"))["state"] != "connected":
        pass
    return pc, tracks, answer["codec"]


async def _collect(track: MediaStreamTrack, seconds: float) -> np.ndarray:
    """What the 'browser' hears, as 8 kHz mono."""
    resampler = AudioResampler(format="s16", layout="mono", rate=8000)
    out: list[np.ndarray] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        frame = await asyncio.wait_for(track.recv(), 2)
        out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(out)


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


@pytest.mark.parametrize(
    ("codec", "gateway"),
    [(None, 0), ("audio/opus", 0), (None, 1), ("audio/opus", 1)],
    ids=["pcmu-preferred", "opus-only", "pcmu-in-worker", "opus-in-worker"],
    indirect=["gateway"],
)
async def test_audio_both_ways_dtmf_and_release(
    gateway: tuple[WebRtcGateway, str], codec: str | None
) -> None:
    gw, url = gateway
    loop = asyncio.get_running_loop()
    call_transport, call = await loop.create_datagram_endpoint(
        CallSide, local_addr=("127.0.0.1", 0)
    )
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        pc, tracks, negotiated = await _softphone(ws, ToneTrack(880), codec)
        try:
            assert negotiated == ("PCMU" if codec is None else "opus")
            session = gw.session("2001")
            assert session is not None
            assert session.rtp_address[0] == "127.0.0.1"
            # the media runs where configured: in a worker process, or in this one
            assert session.worker_pid == (gw.worker_pids[0] if gw.worker_pids else None)
            assert session.worker_pid != os.getpid()
            if not gw.worker_pids:  # both codecs take the lean paths (no codec threads)
                leg: Any = session._media  # type: ignore[attr-defined]
                assert leg._lean_sender is not None
                tap = leg._transceiver.receiver._RTCRtpReceiver__decoder_queue
                assert (tap.opus_sink is not None) == (codec == "audio/opus")
            assert not call.received  # nothing is sent before the call layer connects the RTP
            with pytest.raises(TimeoutError):  # and between calls the browser gets no audio at all
                await asyncio.wait_for(tracks[0].recv(), 0.3)

            session.connect_rtp(*call.address)
            assert (await _next(ws, "media"))["active"] is True
            player = asyncio.create_task(call.play_tone(session.rtp_address, 440, 2.5))
            await asyncio.sleep(0.5)  # let the browser's jitter buffer settle
            heard = await _collect(tracks[0], 1.5)
            assert abs(dominant_hz(heard[-8000:], 8000) - 440) < 15
            await player

            packets = [parse_rtp(p) for p in call.received]
            voice = [p for p in packets if p.payload_type == 0]
            assert len(voice) > 50
            assert len({p.ssrc for p in packets}) == 1
            pcm = ULAW_DECODE[np.frombuffer(b"".join(p.payload for p in voice[-50:]), np.uint8)]
            assert abs(dominant_hz(pcm, 8000) - 880) < 15
            seqs = [p.sequence for p in voice]
            assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))

            call.received.clear()
            await ws.send_json({"type": "dtmf", "digits": "5"})
            await asyncio.sleep(0.4)
            packets = [parse_rtp(p) for p in call.received]
            events = [p for p in packets if p.payload_type == 101]
            assert {parse_telephone_event(p.payload).digit for p in events} == {"5"}
            assert events[0].marker
            assert len({p.timestamp for p in events}) == 1
            ends = [p for p in events if parse_telephone_event(p.payload).end]
            assert len(ends) == 3
            after = [p for p in packets if p.payload_type == 0 and p.sequence > events[-1].sequence]
            assert after
            assert (after[0].timestamp - events[0].timestamp) % 2**32 >= 800

            # an unknown message without a call-layer hook is an error, not a disconnect
            await ws.send_json({"type": "hangup"})
            assert "not handled" in (await _next(ws, "error"))["reason"]
            port = session.rtp_address[1]
        finally:
            await pc.close()
    for _ in range(100):
        if gw.session("2001") is None:
            break
        await asyncio.sleep(0.05)
    assert gw.session("2001") is None
    await _wait_port_released(port)
    call_transport.close()


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code, str(msg.extra or "")


async def test_refusals(gateway: tuple[WebRtcGateway, str]) -> None:
    gw, url = gateway
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            await ws.send_json({"type": "auth", "token": "agent-2002-token-sipphone"})
            code, reason = await _closed(ws)
            assert code == CloseCode.NOT_WEBRTC_AGENT
            assert "not a webrtc agent" in reason
        async with http.ws_connect(url) as ws:
            await ws.send_json({"type": "auth", "token": "nope-nope-nope-nope"})
            assert (await _closed(ws))[0] == CloseCode.UNAUTHORIZED
        async with http.ws_connect(url) as ws:
            await ws.send_str("not json")
            assert (await _closed(ws))[0] == CloseCode.UNAUTHORIZED
    assert gw.sessions == {}


async def test_bad_offer_closes_only_that_session_and_a_new_login_replaces_the_old(
    gateway: tuple[WebRtcGateway, str],
) -> None:
    gw, url = gateway
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            await ws.send_json({"type": "auth", "token": "agent-2001-token-webrtc"})
            await _next(ws, "hello")
            await ws.send_json({"type": "offer", "sdp": "v=0\r\nthis is not sdp\r\n"})
            code, reason = await _closed(ws)
            assert code == CloseCode.PROTOCOL
            assert "bad offer" in reason
        async with http.ws_connect(url) as first:
            await first.send_json({"type": "auth", "token": "agent-2001-token-webrtc"})
            await _next(first, "hello")
            old = gw.session("2001")
            async with http.ws_connect(url) as second:
                await second.send_json({"type": "auth", "token": "agent-2001-token-webrtc"})
                await _next(second, "hello")
                code, reason = await _closed(first)
                assert code == CloseCode.REPLACED
                assert "replaced" in reason
                new = gw.session("2001")
                assert new is not None
                assert new is not old
                assert new.send_event({"type": "incoming", "caller": "+15550100"})
                assert (await _next(second, "incoming"))["caller"] == "+15550100"
                await second.send_json({"type": "dtmf", "digits": "12x"})
                assert "dtmf" in (await _next(second, "error"))["reason"]
                await second.send_json({"type": "bye"})
                assert (await _closed(second))[0] == CloseCode.NORMAL
    assert gw.sessions == {}


def test_webrtc_config_defaults_and_errors() -> None:
    cfg = parse_config("", "x.toml").webrtc
    assert cfg.enabled
    assert cfg.ice_servers == ()  # never a public STUN server by default
    assert cfg.host_addresses == ("127.0.0.1",)
    assert cfg.workers == 0  # the media runs in the daemon unless configured
    cfg = parse_config(
        '[webrtc]\nice_servers = [{ urls = ["turn:192.0.2.1:3478"], username = "u", '
        'credential = "c" }]\nhost_addresses = ["192.0.2.2"]\n',
        "x.toml",
    ).webrtc
    assert cfg.ice_servers[0].urls == ("turn:192.0.2.1:3478",)
    for text, where in [
        ('[webrtc]\nice_servers = [{ urls = ["http://x"] }]', "webrtc.ice_servers[0].urls[0]"),
        ('[webrtc]\nice_servers = [{ urls = ["turn:x:3478"] }]', "webrtc.ice_servers[0]"),
        ('[webrtc]\nhost_addresses = ["eth0"]', "webrtc.host_addresses[0]"),
        ("[webrtc]\nmax_sessions = 0", "webrtc.max_sessions"),
        ("[webrtc]\nworkers = -1", "webrtc.workers"),
        ("[webrtc]\nworkers = 65", "webrtc.workers"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config(text, "x.toml")
        assert err.value.key_path == where


async def test_shutdown_ends_live_sessions_with_going_away(
    gateway: tuple[WebRtcGateway, str],
) -> None:
    gw, url = gateway
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"type": "auth", "token": "agent-2001-token-webrtc"})
        await _next(ws, "hello")
        port = gw.session("2001").rtp_address[1]  # type: ignore[union-attr]
        await gw.close()
        code, reason = await _closed(ws)
        assert code == CloseCode.GOING_AWAY
        assert "shutting down" in reason
        assert gw.sessions == {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
        async with http.ws_connect(url) as late:  # no new sessions while shutting down
            await late.send_json({"type": "auth", "token": "agent-2001-token-webrtc"})
            assert (await _closed(late))[0] == CloseCode.DISABLED


class _IdleSender:
    """Stands for a leg on the media clock (`_MediaClock` drives it; it sends nothing)."""

    async def send(self, now: float, ntp: int) -> None:
        pass

    def failed(self, exc: Exception) -> None:
        raise AssertionError(f"the clock reported {exc!r}")


async def test_shutdown_ends_the_media_clock_of_this_process() -> None:
    """With the media in the daemon (workers = 0) the gateway owns this process's media clock:
    `close` ends the clock's task, even with a leg still on it (one whose session did not let
    go in time), so no task outlives the gateway."""
    config = parse_config(f"[webrtc]\nworkers = 0\n{CONFIG}", "test.toml")
    gw = WebRtcGateway(lambda: config, TOKENS.get, CollectorRegistry())
    await gw.start()
    before = asyncio.all_tasks()
    sender: Any = _IdleSender()
    _MediaClock.of_running_loop().add(sender)
    (clock,) = asyncio.all_tasks() - before
    await gw.close()
    assert clock.done()


@pytest.mark.parametrize("gateway", [1], indirect=True)
async def test_a_worker_that_dies_closes_its_sessions_and_is_restarted(
    gateway: tuple[WebRtcGateway, str],
) -> None:
    gw, url = gateway
    closed: list[str] = []
    gw.on_session_closed = lambda session, reason: closed.append(reason)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            pc, _, _ = await _softphone(ws, ToneTrack(880))
            try:
                session = gw.session("2001")
                assert session is not None
                [pid] = gw.worker_pids
                assert session.worker_pid == pid
                os.kill(pid, signal.SIGKILL)
                code, reason = await _closed(ws)
                assert (code, reason) == (CloseCode.INTERNAL_ERROR, "media worker died")
                for _ in range(100):
                    if closed:
                        break
                    await asyncio.sleep(0.02)
                assert closed == ["media worker died"]  # the call layer hears why
            finally:
                await pc.close()
        for _ in range(300):  # a new worker: aiortc's imports take a second or two
            if gw.worker_pids:
                break
            await asyncio.sleep(0.05)
        assert gw.worker_pids
        assert gw.worker_pids != [pid]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped, not a zombie
        assert gw.metrics.worker_restarts._value.get() == 1
        async with http.ws_connect(url) as ws:  # and a new login gets its media in the new one
            pc, _, _ = await _softphone(ws, ToneTrack(880))
            try:
                session = gw.session("2001")
                assert session is not None
                assert session.worker_pid == gw.worker_pids[0]
            finally:
                await pc.close()


class PatternTrack(MediaStreamTrack):
    """A browser's PCMU sender reduced to its bytes: frame i is `_pattern(i)`, paced at 20 ms,
    handed to aiortc pre-encoded (its sender packs an ``av.Packet`` as it is)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._i = 0

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._i += 1
            await asyncio.sleep(max(0.0, self._start + self._i * 0.02 - loop.time()))
        packet = Packet(_pattern(self._i))
        packet.pts, packet.time_base = self._i * 160, fractions.Fraction(1, 8000)
        return packet


def _pattern(i: int) -> bytes:
    # every byte value turns up, 0x7F among them: u-law 0x7F and 0xFF are both a zero sample, so a
    # decode and re-encode would turn the one into the other; a passthrough keeps it
    return bytes((i * 160 + k) % 251 for k in range(160))


def _pattern_frames(frames: list[bytes], table: bytes | None, silence: bytes) -> list[int]:
    """The `_pattern` numbers of ``frames`` (each byte through ``table``, the law change, if
    any), in order, silence left out; any other frame is an alteration and fails the test (the
    playout clock fills gaps in the call's RTP with silence)."""
    index = {  # the pattern repeats every 251 frames
        _pattern(i) if table is None else _pattern(i).translate(table): i for i in range(251)
    }
    altered = [f for f in frames if f != silence and f not in index]
    assert not altered, f"{len(altered)} of {len(frames)} frames altered"
    return [index[f] for f in frames if f != silence]


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
@pytest.mark.parametrize("gateway", [0, 1], ids=["in-process", "in-worker"], indirect=True)
async def test_g711_bytes_pass_through_unchanged_both_ways(
    gateway: tuple[WebRtcGateway, str], law: str
) -> None:
    """G.711 with the browser, PCMU with the call: the payload bytes cross the gateway as they
    are (PCMU), or rewritten by the law table and nothing else (PCMA), in both directions."""
    gw, url = gateway
    to_call = None if law == "PCMU" else ALAW_TO_ULAW.tobytes()
    to_browser = None if law == "PCMU" else ULAW_TO_ALAW.tobytes()
    silence = (b"\xff" if law == "PCMU" else b"\xd5") * 160
    loop = asyncio.get_running_loop()
    call_transport, call = await loop.create_datagram_endpoint(
        CallSide, local_addr=("127.0.0.1", 0)
    )
    heard: list[bytes] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"type": "auth", "token": "agent-2001-token-webrtc"})
        await _next(ws, "hello")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            transceiver = pc.addTransceiver(PatternTrack(), direction="sendrecv")
            caps = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType == f"audio/{law}"])
            # the stand-in browser's ear: the payloads as they arrive, before any decoder
            assert install_g711_tap(transceiver.receiver, lambda data, pt: heard.append(data))
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
            answer = await _next(ws, "answer")
            assert answer["codec"] == law
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            while (await _next(ws, "connection"))["state"] != "connected":
                pass
            session = gw.session("2001")
            assert session is not None
            session.connect_rtp(*call.address)
            assert call.transport is not None
            for i in range(75):  # 1.5 s of the pattern from the call, as PCMU
                header = struct.pack("!BBHII", 0x80, 0, i, i * 160, 0x1234)
                call.transport.sendto(header + _pattern(i), session.rtp_address)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            # RTCP stays true with aiortc's per-packet paths bypassed: its sender reports count
            # the packets the lean sender sent ...
            reports = [s for s in (await pc.getStats()).values() if s.type == "remote-outbound-rtp"]
            assert reports
            assert reports[0].packetsSent >= 20  # as of its last report (one a second or so)
            assert reports[0].bytesSent == reports[0].packetsSent * 160
            if not gw.worker_pids:  # ... and its receiver-report statistics saw every packet
                leg: Any = session._media  # type: ignore[attr-defined]
                streams = leg._transceiver.receiver._RTCRtpReceiver__remote_streams
                [statistics] = streams.values()
                assert statistics.packets_received >= len(call.received) - 2
                assert statistics.packets_lost == 0
        finally:
            await pc.close()
            call_transport.close()
    # browser -> call: the browser's frames in order, every one of them after the first few
    # (the jitter buffer holds a few before it releases any)
    voice = [p.payload for p in map(parse_rtp, call.received) if p.payload_type == 0]
    sent = _pattern_frames(voice, to_call, silence=b"")
    assert len(sent) >= 60
    assert all(b - a == 1 for a, b in itertools.pairwise(sent)), sent
    # call -> browser: the call's frames in order; a frame late for its tick is replaced by silence
    # and the backlog beyond MAX_BUFFERED_FRAMES is dropped, so allow a few gaps
    played = _pattern_frames(heard, to_browser, silence)
    assert len(played) >= 60
    assert played == sorted(set(played)), played
    # the call stopped sending (as on hold): the browser's stream goes on, with silence
    assert heard[-3:] == [silence] * 3
