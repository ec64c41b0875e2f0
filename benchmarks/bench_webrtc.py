"""WebRTC gateway benchmark: CPU per browser leg per call-second, PCMU and Opus towards the browser.

Two kinds of process, all on 127.0.0.1:

* load (``--load-procs``, default 1): the far ends of every leg. Stand-in browsers: aiortc peers
  that log in over the gateway's real signalling WebSocket and offer with the codec under test
  forced (``setCodecPreferences``); real WebRTC peers (ICE, DTLS-SRTP, RTCP sender and receiver
  reports) that skip what a load generator need not do per packet: they send pre-encoded audio
  (880 Hz PCMU, or Opus encoded once at start) through aiortc's SRTP transport on one 20 ms clock,
  and count what the gateway sends them right after SRTP, without decoding (aiortc's receive
  statistics are fed, so its receiver reports stay true). Beside them, one call-side feeder per
  leg: the call's bridge stand-in, 440 Hz PCMU every 20 ms to the session's RTP port, counting
  what comes back.
* gateway (the system under test, uvloop as ``acd run``): ``engine.webrtc.gateway.WebRtcGateway`` in an
  aiohttp app, with ``--workers`` media worker processes.

Measured: first the CPU of N logged-in softphones without a call (nothing should flow), then the
CPU time of the gateway's processes over a fixed window after a warm-up, divided by N x seconds:
the daemon process (every thread) plus its media workers, read from ``/proc/PID/stat`` (utime +
stime). Nothing else runs in them: the load's CPU is its own processes' (shown, not counted).
Packets per second per leg are counted at the far ends (received by the stand-in browser; received
by the call-side feeder): a leg that got fewer than ``MIN_PPS`` either way means something (the
load, the gateway, the machine) could not keep up, and the run is flagged SATURATED, not a result.
The machine is shared and has 2 cores: read ratios, not absolutes, and note the load average.

    .venv/bin/python benchmarks/bench_webrtc.py --legs 8 --seconds 10
    .venv/bin/python benchmarks/bench_webrtc.py --codec pcmu --legs 8,16,24 --seconds 5 --workers 0,1,2
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import queue
import re
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
WARM_UP_S = 1.0
#: 50 packets a second is 20 ms audio; fewer than this on some leg means it did not keep up.
MIN_PPS = 48.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SEQ_TS = struct.Struct("!HI")
_RTP = struct.Struct("!BBHII")


def _cpu_s(pid: int, *, system_only: bool = False) -> float:
    """User + system (or system only) CPU seconds of a process so far (every thread), from
    /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[12]) + (0 if system_only else int(fields[11]))) / _CLOCK_TICKS


def _wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of a process so far: how often it slept and was
    woken (an event loop: once per poll that found nothing ready)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def _cpu_by_pid(pids: list[int], *, system_only: bool = False) -> dict[int, float]:
    return {pid: _cpu_s(pid, system_only=system_only) for pid in pids}


def _token(i: int) -> str:
    return f"bench-webrtc-token-{i:04d}"


def _tone(rate: int, hz: int, seconds: int = 1) -> Any:
    t = np.arange(rate * seconds) / rate  # a whole number of cycles: the loop is seamless
    return (8000 * np.sin(2 * math.pi * hz * t)).astype(np.int16)


def _pcmu_frames(hz: int) -> list[bytes]:
    from sip.rtp.g711 import ULAW_ENCODE

    pcm = _tone(8000, hz)
    return [ULAW_ENCODE[pcm[i : i + 160].view(np.uint16)].tobytes() for i in range(0, 8000, 160)]


def _opus_frames(hz: int) -> list[bytes]:
    """One second of an ``hz`` tone as 20 ms Opus payloads (encoded once, sent in a loop)."""
    import fractions

    from aiortc.codecs.opus import OpusEncoder
    from av import AudioFrame

    encoder, pcm, out = OpusEncoder(), _tone(48000, hz, 2), []
    for i in range(0, len(pcm), 960):
        frame = AudioFrame.from_ndarray(
            pcm[i : i + 960].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, i, fractions.Fraction(1, 48000)
        out += encoder.encode(frame)[0]
    return out[-50:]


# -- load: stand-in browsers and call-side feeders ---------------------------------------------------


def load_main(conn: Connection, url: str, first: int, legs: int, codec: str, loop: str) -> None:
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    if loop == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        runner.run(_load(conn, url, range(first, first + legs), codec))


class Feeder(asyncio.DatagramProtocol):
    """The call's bridge stand-in for one leg: 440 Hz PCMU out every 20 ms, counts what comes back."""

    def __init__(self) -> None:
        self.received = 0
        self.transport: Any = None
        self.to: tuple[str, int] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port


async def _load(conn: Connection, url: str, indices: range, codec: str) -> None:
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
    from aiortc.clock import current_ntp_time
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
    from aiortc.rtp import RtpPacket

    from engine.webrtc.g711 import _RECEIVER_STREAMS, DECODER_QUEUE_ATTR, _Seen
    from engine.webrtc.leg import set_host_addresses
    from engine.webrtc.track import _SR_NTP, _SR_OCTETS, _SR_PACKETS, _SR_RTP

    set_host_addresses(("127.0.0.1",))  # aioice skips loopback on its own
    loop = asyncio.get_running_loop()
    opus = codec == "audio/opus"
    frames = _opus_frames(880) if opus else _pcmu_frames(880)
    samples = 960 if opus else 160

    class Detached(MediaStreamTrack):
        """The microphone aiortc's sender waits on forever: the load sends the packets itself."""

        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._ended = asyncio.Event()

        async def recv(self) -> Any:
            await self._ended.wait()
            raise MediaStreamError

        def stop(self) -> None:
            super().stop()
            self._ended.set()

    class Discard(queue.Queue[Any]):
        """In place of the receiver's decoder queue: a load generator decodes nothing (only the
        None that stops aiortc's decoder thread goes through)."""

        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            if item is None:
                super().put(item, block, timeout)

    class Browser:
        def __init__(self, i: int) -> None:
            self.i = i
            self.received = 0
            self.sent = 0
            self.active = False  # like the page: the microphone flows while a call is connected
            self.header = bytearray()
            self.feeder = Feeder()

        async def login(self, http: aiohttp.ClientSession) -> None:
            self.ws = await http.ws_connect(url)
            await self.ws.send_json({"type": "auth", "token": _token(self.i)})
            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self.mic = Detached()
            self.transceiver = self.pc.addTransceiver(self.mic, direction="sendrecv")
            caps = RTCRtpSender.getCapabilities("audio").codecs
            self.transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == codec])
            setattr(self.transceiver.receiver, DECODER_QUEUE_ATTR, Discard())
            await self.pc.setLocalDescription(await self.pc.createOffer())
            await self.ws.send_json({"type": "offer", "sdp": self.pc.localDescription.sdp})
            while True:
                msg = await self.ws.receive_json()
                if msg["type"] == "answer":
                    await self.pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
                    break
            m = re.search(r"^m=audio \S+ \S+ (\d+)", msg["sdp"], re.M)
            assert m is not None, "no audio in the gateway's answer"
            self.payload_type = int(m.group(1))
            self.listener = asyncio.ensure_future(self.listen())
            _, self.feeder = await loop.create_datagram_endpoint(Feeder, ("127.0.0.1", 0))

        async def listen(self) -> None:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT and msg.json()["type"] == "media":
                    self.active = msg.json()["active"]

        def go_lean(self) -> None:
            """Once connected: our header on aiortc's SRTP, counting right after SRTP."""
            sender: Any = self.transceiver.sender
            self.sender, self.dtls = sender, sender.transport
            template = RtpPacket(payload_type=self.payload_type, ssrc=sender._ssrc)
            template.extensions.mid = self.transceiver.mid
            self.header = bytearray(template.serialize(self.dtls._rtp_header_extensions_map))
            streams = getattr(self.transceiver.receiver, _RECEIVER_STREAMS)
            normal = self.dtls._handle_rtp_data

            async def handle(data: bytes, arrival_time_ms: int) -> None:
                self.received += 1
                statistics = streams.get(int.from_bytes(data[8:12], "big"))
                if statistics is None:  # a new stream: aiortc's way makes its statistics
                    await normal(data, arrival_time_ms)
                else:
                    statistics.add(_Seen(*_SEQ_TS.unpack_from(data, 2)))

            self.dtls._handle_rtp_data = handle

        async def send(self, tick: int) -> None:
            if not self.active or not self.header:
                return
            header, sender = self.header, self.sender
            payload = frames[tick % len(frames)]
            timestamp = (tick * samples) & 0xFFFFFFFF
            _SEQ_TS.pack_into(header, 2, tick & 0xFFFF, timestamp)
            try:
                await self.dtls._send_rtp(bytes(header) + payload)
            except ConnectionError:
                return
            self.sent += 1
            setattr(sender, _SR_NTP, current_ntp_time())
            setattr(sender, _SR_RTP, timestamp)
            setattr(sender, _SR_PACKETS, getattr(sender, _SR_PACKETS) + 1)
            setattr(sender, _SR_OCTETS, getattr(sender, _SR_OCTETS) + len(payload))

    call_frames = _pcmu_frames(440)

    async def clock(browsers: list[Browser], stop: asyncio.Event) -> None:
        """Every browser and every feeder on one 20 ms clock (one timer, as a MediaClock)."""
        start, tick = loop.time(), 0
        while not stop.is_set():
            payload = call_frames[tick % len(call_frames)]
            call_packet = _RTP.pack(0x80, 0, tick & 0xFFFF, tick * 160, 7) + payload
            for b in browsers:
                await b.send(tick)
                if b.feeder.to is not None:
                    b.feeder.transport.sendto(call_packet, b.feeder.to)
            tick += 1
            delay = start + tick * FRAME_S - loop.time()
            if delay < -0.1:  # stalled: restart the clock rather than burst
                start, tick, delay = loop.time() - tick * FRAME_S, tick, 0.0
            await asyncio.sleep(max(0.0, delay))

    def counts(browsers: list[Browser]) -> dict[int, tuple[int, int]]:
        return {b.i: (b.received, b.feeder.received) for b in browsers}

    async with aiohttp.ClientSession() as http:
        browsers = [Browser(i) for i in indices]
        await asyncio.gather(*(b.login(http) for b in browsers))
        for _ in range(400):
            if all(b.pc.connectionState == "connected" for b in browsers):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the sender and receiver start right after "connected"
        for b in browsers:
            b.go_lean()
        conn.send({b.i: b.feeder.address for b in browsers})
        stop = asyncio.Event()
        ticking = asyncio.ensure_future(clock(browsers, stop))
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "stop":
                break
            if isinstance(command, dict):  # leg -> the session's RTP address: start the call
                for b in browsers:
                    b.feeder.to = tuple(command[b.i])
            conn.send((counts(browsers), _cpu_s(os.getpid()), loop.time()))
        stop.set()
        await ticking
        for b in browsers:
            await b.pc.close()
            await b.ws.close()
            b.listener.cancel()
            b.feeder.transport.close()


# -- gateway --------------------------------------------------------------------------------------


async def _gateway_run(
    legs: int, seconds: float, codec: str, workers: int, load_procs: int, loop_name: str
) -> dict[str, Any]:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from engine.config import parse_config
    from engine.webrtc.gateway import RTC_PATH, WebRtcGateway
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

    loop = asyncio.get_running_loop()
    ctx = mp.get_context("spawn")
    url = f"ws://127.0.0.1:{port}{RTC_PATH}"
    loads: list[tuple[Any, Connection]] = []
    per = -(-legs // load_procs)
    for first in range(0, legs, per):
        parent, child = ctx.Pipe()
        args = (child, url, first, min(per, legs - first), codec, loop_name)
        proc = ctx.Process(target=load_main, args=args)
        proc.start()
        loads.append((proc, parent))

    async def ask(message: Any) -> tuple[dict[int, tuple[int, float]], float]:
        """Send to every load process; (leg -> (packets received by the browser, by the feeder,
        at the load's clock)), the load's CPU seconds."""
        for _, pipe in loads:
            pipe.send(message)
        answers = [await loop.run_in_executor(None, pipe.recv) for _, pipe in loads]
        counts = {k: (*v, a[2]) for a in answers for k, v in a[0].items()}
        return counts, sum(a[1] for a in answers)

    feeders: dict[int, tuple[str, int]] = {}
    for _, pipe in loads:
        feeders.update(await loop.run_in_executor(None, pipe.recv))
    for _ in range(200):
        if len(gateway.sessions) == legs and all(
            s.connection_state == "connected" for s in gateway.sessions.values()
        ):
            break
        await asyncio.sleep(0.05)
    sessions = gateway.sessions
    codecs = {s.codec for s in sessions.values()}
    await asyncio.sleep(0.5)
    cpu0 = _cpu_by_pid(pids)
    await asyncio.sleep(IDLE_S)  # logged in, no call: what a waiting agent costs
    cpu1 = _cpu_by_pid(pids)
    idle_cpu = sum(cpu1[p] - cpu0[p] for p in pids) / (len(sessions) * IDLE_S)
    rtp = {}
    for i in range(legs):
        session = sessions[f"b{i:04d}"]
        session.connect_rtp(*feeders[i])
        rtp[i] = session.rtp_address
    await ask(rtp)
    await asyncio.sleep(WARM_UP_S)  # jitter buffers, first encoder frames
    count0, load0 = await ask("mark")
    wall0, cpu0, sys0 = time.monotonic(), _cpu_by_pid(pids), _cpu_by_pid(pids, system_only=True)
    wake0 = {p: _wakeups(p) for p in pids}
    await asyncio.sleep(seconds)
    wall, cpu1 = time.monotonic() - wall0, _cpu_by_pid(pids)
    sys1 = _cpu_by_pid(pids, system_only=True)
    wake1 = {p: _wakeups(p) for p in pids}
    count1, load1 = await ask("mark")
    by_pid = {p: cpu1[p] - cpu0[p] for p in pids}
    legs_by_worker = [sum(s.worker_pid == pid for s in sessions.values()) for pid in pids[1:]]
    # packet rates over the load's own window (the pipe adds its latency to either end)
    spans = [count1[i][2] - count0[i][2] for i in range(legs)]
    to_browser = [(count1[i][0] - count0[i][0]) / spans[i] for i in range(legs)]
    from_browser = [(count1[i][1] - count0[i][1]) / spans[i] for i in range(legs)]
    for _, pipe in loads:
        pipe.send("stop")
    for proc, _ in loads:
        await loop.run_in_executor(None, proc.join, 30)
    await gateway.close()
    await runner.cleanup()
    return {
        "legs": len(sessions),
        "codec": ",".join(sorted(codecs)),
        "cpu_per_leg_s": sum(by_pid.values()) / (legs * wall),
        "daemon_cpu_per_leg_s": by_pid[pids[0]] / (legs * wall),
        "wakeups_per_s": [(wake1[p] - wake0[p]) / wall for p in pids[1:] or pids],
        "system_share": sum(sys1[p] - sys0[p] for p in pids) / max(sum(by_pid.values()), 1e-9),
        "worker_cpu_s": [by_pid[p] / wall for p in pids[1:]],
        "legs_by_worker": legs_by_worker,
        "idle_cpu_per_session_s": idle_cpu,
        "load_cpu_s": (load1 - load0) / max(spans),
        "to_browser_pps": to_browser,
        "from_browser_pps": from_browser,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", default="8", help="legs per run, comma-separated, e.g. 8,16,24")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--codec", choices=["pcmu", "opus", "both"], default="both")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument(
        "--workers",
        default="0",
        help="[webrtc] workers to measure, comma-separated (0: media in the daemon), e.g. 0,2",
    )
    parser.add_argument("--load-procs", type=int, default=1, help="processes for the far ends")
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
    print(f"loop={args.loop}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with runner:
        codecs = ["pcmu", "opus"] if args.codec == "both" else [args.codec]
        for legs in (int(n) for n in args.legs.split(",")):
            for workers in (int(w) for w in args.workers.split(",")):
                for codec in codecs:
                    r = runner.run(
                        _gateway_run(
                            legs,
                            args.seconds,
                            f"audio/{codec}",
                            workers,
                            args.load_procs,
                            args.loop,
                        )
                    )
                    _report(r, codec, workers, args.seconds)


def _report(r: dict[str, Any], codec: str, workers: int, seconds: float) -> None:
    per_leg = float(r["cpu_per_leg_s"])
    to_b, from_b = r["to_browser_pps"], r["from_browser_pps"]
    slow = min(min(to_b), min(from_b)) < MIN_PPS
    split = ""
    if workers:
        split = " (workers: " + ", ".join(
            f"{cpu * 100:.0f}% of a core for {n} legs"
            for cpu, n in zip(r["worker_cpu_s"], r["legs_by_worker"], strict=True)
        )
        split += ")"
    verdict = (
        f"SATURATED (some leg < {MIN_PPS:g} pkt/s): not a result; "
        if slow
        else f"-> {1 / per_leg:.0f} legs per core; "
    )
    print(
        f"workers={workers} {codec:>4} {r['legs']:>2} legs (negotiated {r['codec']}), "
        f"{seconds:g} s: {per_leg * 1000:.1f} ms CPU per leg per call-second "
        f"({r['system_share'] * 100:.0f}% in the kernel) {verdict}"
        f"daemon's own share {float(r['daemon_cpu_per_leg_s']) * 1000:.1f} ms{split}; "
        f"pkt/s per leg to browser {np.mean(to_b):.1f} (min {min(to_b):.1f}), "
        f"from browser {np.mean(from_b):.1f} (min {min(from_b):.1f}); "
        f"load {r['load_cpu_s'] * 100:.0f}% of a core; "
        f"wake-ups/s per media process {', '.join(f'{w:.0f}' for w in r['wakeups_per_s'])}; "
        f"idle {float(r['idle_cpu_per_session_s']) * 1000:.2f} ms per session per s; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
