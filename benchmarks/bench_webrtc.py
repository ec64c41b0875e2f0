"""WebRTC gateway benchmark: CPU per browser leg per call-second, PCMU and Opus towards the browser.

Two processes per codec, all on 127.0.0.1:

* browsers (stand-in): N aiortc peers, each with an 880 Hz "microphone" (48 kHz, 20 ms frames, as a
  browser sends) that log in over the gateway's real signalling WebSocket, offer with the codec
  under test forced (``setCodecPreferences``), and read everything the gateway plays to them;
* gateway (the system under test, uvloop as ``acd run``): ``engine.webrtc.WebRtcGateway`` in an
  aiohttp app, plus one call-side feeder per session that sends 440 Hz PCMU every 20 ms to the
  session's RTP port (as the call's bridge would) and receives the agent's audio back.

Measured: first the CPU of N logged-in softphones without a call (nothing should flow), then the CPU
time of the gateway's processes over a fixed window after a warm-up, divided by N x seconds: the
daemon process (every thread) plus, with ``--workers``, the media worker processes, all read from
``/proc/PID/stat`` (utime + stime). The feeders run in the daemon process; their own share is
measured first, alone (same sockets and pacing, no gateway), and subtracted. Two figures per run:
the total per leg (what the legs cost the machine) and the daemon's own share (what stays on the
event loop that also runs SIP and routing; with workers only the signalling and the bridge's side
of the RTP remain there). Packet counts through the gateway show the legs really carried audio
both ways (with workers they are the workers' reports, up to a second old). The machine is shared
and has 2 cores, and the browser stand-ins run on it too: read ratios, not absolutes.

    .venv/bin/python benchmarks/bench_webrtc.py --legs 8 --seconds 10
    .venv/bin/python benchmarks/bench_webrtc.py --legs 8 --seconds 4 --workers 0,2
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import math
import multiprocessing as mp
import os
import struct
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

FRAME_S = 0.02
IDLE_S = 3.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (every thread), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    return {pid: _cpu_s(pid) for pid in pids}


def _token(i: int) -> str:
    return f"bench-webrtc-token-{i:04d}"


# -- browsers (aiortc stand-ins) ---------------------------------------------------------------------


def browsers_main(conn: Connection, url: str, legs: int, codec: str) -> None:
    asyncio.run(_browsers(conn, url, legs, codec))


async def _browsers(conn: Connection, url: str, legs: int, codec: str) -> None:
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
    from av import AudioFrame

    from engine.webrtc import set_host_addresses

    set_host_addresses(("127.0.0.1",))  # aioice skips loopback on its own

    class Mic(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            t = np.arange(48000) / 48000
            self.tone = (8000 * np.sin(2 * math.pi * 880 * t)).astype(np.int16)
            self.start: float | None = None
            self.pts = 0
            # Like the page: the microphone only flows while a call is connected ("media").
            self.active = asyncio.Event()

        async def recv(self) -> AudioFrame:
            if not self.active.is_set():
                await self.active.wait()
                self.start = None
            if self.readyState != "live":
                raise MediaStreamError
            loop = asyncio.get_running_loop()
            if self.start is None:
                self.start = loop.time()
            else:
                self.pts += 960
                await asyncio.sleep(max(0.0, self.start + self.pts / 48000 - loop.time()))
            i = self.pts % 48000
            frame = AudioFrame.from_ndarray(
                self.tone[i : i + 960].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts = 48000, self.pts
            frame.time_base = fractions.Fraction(1, 48000)
            return frame

    async def drain(track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return

    async def listen(ws: Any, mic: Mic) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT and msg.json()["type"] == "media":
                if msg.json()["active"]:
                    mic.active.set()
                else:
                    mic.active.clear()

    async def one(http: aiohttp.ClientSession, i: int) -> tuple[Any, Any, list[asyncio.Task[None]]]:
        ws = await http.ws_connect(url)
        await ws.send_json({"type": "auth", "token": _token(i)})
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        drains: list[asyncio.Task[None]] = []
        pc.on("track", lambda t: drains.append(asyncio.ensure_future(drain(t))))
        mic = Mic()
        transceiver = pc.addTransceiver(mic, direction="sendrecv")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == codec])
        await pc.setLocalDescription(await pc.createOffer())
        await ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
        while True:
            msg = await ws.receive_json()
            if msg["type"] == "answer":
                await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
                break
        drains.append(asyncio.ensure_future(listen(ws, mic)))
        return ws, pc, drains

    async with aiohttp.ClientSession() as http:
        peers = await asyncio.gather(*(one(http, i) for i in range(legs)))
        conn.send("connected")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # wait for "stop"
        for ws, pc, drains in peers:
            await pc.close()
            await ws.close()
            for task in drains:
                task.cancel()


# -- gateway and call-side feeders -------------------------------------------------------------------


class Feeder(asyncio.DatagramProtocol):
    """The call's bridge stand-in for one leg: 440 Hz PCMU out every 20 ms, counts what comes back."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.received = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port


def _tone_frames() -> list[bytes]:
    from sip.rtp.g711 import ULAW_ENCODE

    t = np.arange(8000) / 8000  # one second: 440 Hz fits a whole number of cycles
    pcm = (8000 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
    return [ULAW_ENCODE[pcm[i : i + 160].view(np.uint16)].tobytes() for i in range(0, 8000, 160)]


async def _feed(feeders: list[tuple[Feeder, tuple[str, int]]], stop: asyncio.Event) -> int:
    """All feeders on one 20 ms clock (one timer, as a bridge's MediaClock would); packets sent."""
    loop = asyncio.get_running_loop()
    header = struct.Struct("!BBHII")
    start, tick, sent = loop.time(), 0, 0
    while not stop.is_set():
        for feeder, to in feeders:
            payload = feeder.frames[tick % len(feeder.frames)]
            feeder.transport.sendto(
                header.pack(0x80, 0, tick & 0xFFFF, tick * 160, 7) + payload, to
            )
            sent += 1
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * FRAME_S - loop.time()))
    return sent


async def _feeders_alone(legs: int, seconds: float) -> float:
    """CPU per leg per second of the feeders by themselves (sending to sinks in this process)."""
    loop = asyncio.get_running_loop()
    frames = _tone_frames()
    pairs = []
    for _ in range(legs):
        _, sink = await loop.create_datagram_endpoint(lambda: Feeder(frames), ("127.0.0.1", 0))
        _, feeder = await loop.create_datagram_endpoint(lambda: Feeder(frames), ("127.0.0.1", 0))
        pairs.append((feeder, sink))
    stop = asyncio.Event()
    cpu0 = time.process_time()
    task = asyncio.create_task(_feed([(f, s.address) for f, s in pairs], stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    cpu = time.process_time() - cpu0
    for f, s in pairs:
        f.transport.close()
        s.transport.close()
    return cpu / (legs * seconds)


async def _gateway_run(legs: int, seconds: float, codec: str, workers: int) -> dict[str, Any]:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from engine.config import parse_config
    from engine.webrtc import RTC_PATH, WebRtcGateway
    from tests.conftest import free_port

    agents = "".join(
        f'[[agents]]\nid = "b{i:04d}"\nlogin = "webrtc"\napi_token = "{_token(i)}"\n'
        for i in range(legs)
    )
    config = parse_config(
        f"[webrtc]\nmax_sessions = {legs}\nworkers = {workers}\n{agents}", "bench.toml"
    )
    tokens = {_token(i): f"b{i:04d}" for i in range(legs)}
    gateway = WebRtcGateway(lambda: config, tokens.get, CollectorRegistry())
    await gateway.start()
    pids = [os.getpid(), *gateway.worker_pids]
    app = web.Application()
    gateway.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=browsers_main, args=(child, f"ws://127.0.0.1:{port}{RTC_PATH}", legs, codec)
    )
    proc.start()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, parent.recv)  # "connected"
    for _ in range(200):
        if all(s.connection_state == "connected" for s in gateway.sessions.values()) and (
            len(gateway.sessions) == legs
        ):
            break
        await asyncio.sleep(0.05)
    sessions = list(gateway.sessions.values())
    codecs = {s.codec for s in sessions}
    await asyncio.sleep(0.5)
    cpu0 = _cpu_by_pid(pids)
    await asyncio.sleep(IDLE_S)  # logged in, no call: what a waiting agent costs
    cpu1 = _cpu_by_pid(pids)
    idle_cpu = sum(cpu1[p] - cpu0[p] for p in pids) / (len(sessions) * IDLE_S)
    frames = _tone_frames()
    feeders = []
    for session in sessions:
        _, feeder = await loop.create_datagram_endpoint(lambda: Feeder(frames), ("127.0.0.1", 0))
        session.connect_rtp(*feeder.address)
        feeders.append((feeder, session.rtp_address))
    stop = asyncio.Event()
    feeding = asyncio.create_task(_feed(feeders, stop))
    await asyncio.sleep(1.0)  # warm-up: jitter buffers, first encoder frames
    to0 = sum(s.packets_to_browser for s in sessions)
    from0 = sum(s.packets_from_browser for s in sessions)
    wall0, cpu0 = time.monotonic(), _cpu_by_pid(pids)
    await asyncio.sleep(seconds)
    wall, cpu1 = time.monotonic() - wall0, _cpu_by_pid(pids)
    by_pid = {p: cpu1[p] - cpu0[p] for p in pids}
    legs_by_worker = [sum(s.worker_pid == pid for s in sessions) for pid in pids[1:]]
    to_browser = sum(s.packets_to_browser for s in sessions) - to0
    from_browser = sum(s.packets_from_browser for s in sessions) - from0
    stop.set()
    await feeding
    parent.send("stop")
    await loop.run_in_executor(None, proc.join, 30)
    await gateway.close()
    await runner.cleanup()
    for feeder, _ in feeders:
        feeder.transport.close()
    return {
        "legs": len(sessions),
        "codec": ",".join(sorted(codecs)),
        "cpu_per_leg_s": sum(by_pid.values()) / (len(sessions) * wall),
        "daemon_cpu_per_leg_s": by_pid[pids[0]] / (len(sessions) * wall),
        "worker_cpu_s": [by_pid[p] / wall for p in pids[1:]],
        "legs_by_worker": legs_by_worker,
        "idle_cpu_per_session_s": idle_cpu,
        "to_browser_pps": to_browser / (len(sessions) * wall),
        "from_browser_pps": from_browser / (len(sessions) * wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--codec", choices=["pcmu", "opus", "both"], default="both")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument(
        "--workers",
        default="0",
        help="[webrtc] workers to measure, comma-separated (0: media in the daemon), e.g. 0,2",
    )
    args = parser.parse_args()
    import logging

    import structlog

    # the gateway logs every session's open/close at info: noise in a table of figures
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger().setLevel(logging.WARNING)  # what the workers are started with
    if args.loop == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        feeder_cpu = runner.run(_feeders_alone(args.legs, 3.0))
        print(
            f"feeders alone: {feeder_cpu * 1000:.2f} ms CPU per leg per second "
            f"(call side; subtracted below), loop={args.loop}"
        )
        codecs = ["pcmu", "opus"] if args.codec == "both" else [args.codec]
        for workers in (int(w) for w in args.workers.split(",")):
            for codec in codecs:
                r = runner.run(_gateway_run(args.legs, args.seconds, f"audio/{codec}", workers))
                per_leg = float(r["cpu_per_leg_s"]) - feeder_cpu
                daemon = float(r["daemon_cpu_per_leg_s"]) - feeder_cpu
                split = ""
                if workers:
                    split = (
                        " (workers: "
                        + ", ".join(
                            f"{cpu * 100:.0f}% of a core for {n} legs"
                            for cpu, n in zip(r["worker_cpu_s"], r["legs_by_worker"], strict=True)
                        )
                        + ")"
                    )
                print(
                    f"workers={workers} {codec:>4}: {r['legs']} legs (negotiated {r['codec']}) "
                    f"for {args.seconds:g} s: {per_leg * 1000:.1f} ms CPU per leg per call-second "
                    f"in all -> {1 / per_leg:.0f} legs per core; daemon's own share "
                    f"{daemon * 1000:.1f} ms{split}; "
                    f"packets/s per leg to browser {r['to_browser_pps']:.1f}, "
                    f"from browser {r['from_browser_pps']:.1f}; "
                    f"idle (logged in, no call) {float(r['idle_cpu_per_session_s']) * 1000:.2f} ms "
                    f"CPU per session per second"
                )


if __name__ == "__main__":
    main()
