"""Media relay benchmark: N bridged and tapped calls at 50 packets/s per leg, against a plain relay.

Three processes per run, all on 127.0.0.1:

* sender: one UDP socket, 2N legs x 50 packets/s of 172-byte PCMU RTP, phases spread evenly over
  the 20 ms frame (as independent phones would be); each payload carries its send time;
* media (the system under test, uvloop): ``acd`` = 2N ``sip.media`` endpoints (open_endpoint, the
  shared MediaClock watching them) and N ``Bridge``s with continuity rewriting, receiver statistics
  and a tap into a sink that appends (drained every second, like the recorder's queue);
  ``acd-rec`` = the same with the real ``recordings.RecordingWriter`` (WAV files in a temporary
  directory: decoding and writing on its threads); ``workers`` = the daemon's ``[media] workers =
  --workers``: each bridge handed to a media worker process (engine/media/offload.py), which relays,
  taps and records (real WAV files) there; its CPU is the media process's plus its workers'; or
  ``baseline`` = the plain asyncio relay (``datagram_received`` -> ``sendto``, nothing else);
* receiver: reads what the media process relays and measures one-way latency per packet.

Reported per run: media CPU per bridged call-second (process CPU time over the measuring window
divided by N x seconds), packets sent / relayed / lost (sent - received after a drain), and the
added jitter: percentiles of (latency - minimum latency). The machine is shared and has 2 cores,
so the sender and receiver compete with the media process: read ratios, not absolutes.

    .venv/bin/python benchmarks/bench_media.py --calls 100 500 --seconds 5
    .venv/bin/python benchmarks/bench_media.py --calls 300 600 --modes acd-rec workers --workers 1 2
    .venv/bin/python benchmarks/bench_media.py --calls 100 200 --modes acd monitor

``monitor`` is ``acd`` with a supervisor barged into every call (`sip.media.Monitor`): each 20 ms
tick decodes the three legs, mixes and encodes three frames (caller, agent and supervisor each hear
the other two); the supervisor's endpoint sends no RTP here (its input is silence, decoded like any
other), so the figure is the mixer's cost over a relayed bridge, per call-second. In barge the callers'
and agents' packets are the mixes, which carry no send time: read only the CPU columns there
(lost and jitter are not measured for mixed legs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import resource
import selectors
import socket
import struct
import sys
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FRAME_S = 0.02
PAYLOAD_BYTES = 160
LEGS_PER_RECEIVER_SOCKET = 100
_HEADER = struct.Struct("!BBHII")
_STAMP = struct.Struct("!dI")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    del soft


# -- receiver ----------------------------------------------------------------------------------


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """An RTP socket and, on the port above it, its RTCP socket, as a phone has: the media
    process's endpoints send RTCP to remote port + 1 (RFC 3550 11). Without it that RTCP landed on
    whatever had the port, once the media process's own RTP ports, which accept any source in this
    benchmark (symmetric=False): a stream of "RTP" that kept the drain wait below from ending."""
    for _ in range(200):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        try:
            rtcp.bind(("127.0.0.1", rtp.getsockname()[1] + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise OSError("no free pair of adjacent UDP ports")


def receiver_main(conn: Connection, n_sockets: int, window: tuple[float, float]) -> None:
    socks = []
    sel = selectors.DefaultSelector()
    for _ in range(n_sockets):
        s, rtcp = _bind_pair()
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        for sock, kind in ((s, "rtp"), (rtcp, "rtcp")):
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, kind)
            socks.append(sock)
    conn.send([s.getsockname() for s in socks[::2]])
    start_s, end_s = conn.recv()  # sending window (monotonic), then drain
    latencies = array("d")
    received = 0
    measure_from, measure_to = start_s + window[0], start_s + window[1]
    deadline = end_s + 1.0
    mono = time.monotonic
    unpack = _STAMP.unpack_from
    while mono() < deadline:
        for key, _ in sel.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                if key.data == "rtcp":
                    continue  # reports, not relayed audio
                now = mono()
                received += 1
                sent_at, _leg = unpack(data, 12)
                if measure_from <= sent_at < measure_to:
                    latencies.append(now - sent_at)
    conn.send((received, latencies.tobytes()))
    for s in socks:
        s.close()


# -- sender ------------------------------------------------------------------------------------


def sender_main(conn: Connection, targets: list[tuple[str, int]]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    start_s, end_s = conn.recv()
    legs = len(targets)
    silence = b"\xff" * (PAYLOAD_BYTES - _STAMP.size)
    templates = [
        bytearray(_HEADER.pack(0x80, 0, 0, 0, 0x10000 + leg) + _STAMP.pack(0.0, leg) + silence)
        for leg in range(len(targets))
    ]
    pack_seq = struct.Struct("!HI").pack_into
    pack_stamp = struct.Struct("!d").pack_into
    sendto = sock.sendto
    seqs = [0] * legs
    sent = 0
    late_max = 0.0
    mono = time.monotonic
    while mono() < start_s:
        time.sleep(0.001)
    # packet k goes to leg k % legs at start + (k / legs) * 20 ms: phases spread over the frame
    per_s = legs / FRAME_S
    while True:
        now = mono()
        if now >= end_s:
            break
        due = int((now - start_s) * per_s)
        if due <= sent:
            time.sleep(0.0003)
            continue
        late_max = max(late_max, (due - sent) / per_s)
        while sent < due:
            leg = sent % legs
            seq = seqs[leg]
            seqs[leg] = (seq + 1) & 0xFFFF
            template = templates[leg]
            pack_seq(template, 2, seq, (seq * 160) & 0xFFFFFFFF)
            pack_stamp(template, 12, mono())
            sendto(template, targets[leg])
            sent += 1
    conn.send((sent, late_max))
    sock.close()


# -- media process (system under test) ---------------------------------------------------------


class _AppendingSink:
    """Stands in for recordings.Recording.feed: append to a buffer, drained every second."""

    def __init__(self) -> None:
        self.buffer: list[tuple[int, int, bytes, str]] = []
        self.fed = 0

    def feed(self, channel: int, position: int, payload: bytes, codec: str) -> None:
        self.buffer.append((channel, position, payload, codec))

    def gap(self, channel: int, position: int, samples: int, reason: str) -> None:
        pass

    def close(self, end_position: int) -> None:
        pass


class _PlainRelay(asyncio.DatagramProtocol):
    received = 0

    def __init__(self, dest: tuple[str, int]) -> None:
        self.dest = dest
        self.peer: _PlainRelay | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        _PlainRelay.received += 1
        peer = self.peer
        assert peer is not None
        peer.transport.sendto(data, peer.dest)


def _proc_cpu_s(pids: list[int]) -> float:
    """utime + stime of other processes (the media workers), from /proc."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


async def _serve(
    conn: Connection,
    mode: str,
    calls: int,
    receivers: list[tuple[str, int]],
    port_base: int,
    window: tuple[float, float],
    workers: int,
) -> None:
    import tempfile

    import recordings as rec
    from sip.media import Bridge, MediaClock, MediaStats, Monitor, PortAllocator, open_endpoint
    from sip.rtp.g711 import DECODERS

    loop = asyncio.get_running_loop()
    stats = MediaStats()
    sinks: list[_AppendingSink] = []
    ports: list[int] = []
    closers: list[Any] = []
    stoppers: list[Any] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench_media_")
    writer = None
    pool = None
    discard: socket.socket | None = None

    def dest(leg: int) -> tuple[str, int]:
        return receivers[(leg // LEGS_PER_RECEIVER_SOCKET) % len(receivers)]

    clock = MediaClock(loop, stats)
    if mode == "acd-rec":
        writer = rec.RecordingWriter(dict(DECODERS), rec.WriterConfig(flush_interval_s=1.0))
        writer.start()
    if mode == "workers":
        from prometheus_client import CollectorRegistry

        from engine.media.offload import MediaWorkers, RemoteBridge
        from engine.recording.spec import RecordingSpec
        from sip.media.prompts import PromptCache

        pool = MediaWorkers(
            workers, CollectorRegistry(), stats, args=["warning", "json", "uvloop"],
            on_unexpected=lambda: None,
        )  # fmt: skip
        await pool.start()
    if mode != "baseline":
        alloc = PortAllocator(port_base, port_base + (6 if mode == "monitor" else 4) * calls + 200)
        clock.start()
        for i in range(calls):
            caller = await open_endpoint(
                alloc, stats, clock=clock, remote=dest(2 * i + 1), symmetric=False
            )
            agent = await open_endpoint(
                alloc, stats, clock=clock, remote=dest(2 * i), symmetric=False
            )
            path = f"{tmp.name}/{i}.wav"
            bridge: Any
            if pool is not None:
                recording = pool.new_recording(
                    RecordingSpec(f"r{i}", path, "wav", False, f"c{i}", "", 1.0)
                )
                bridge = RemoteBridge(
                    pool, caller, agent, stats=stats, clock=clock, prompts=PromptCache(),
                    call_id=f"c{i}", sink=recording,
                )  # fmt: skip
            else:
                sink: Any
                if writer is not None:
                    sink = writer.start_recording(f"r{i}", path)
                else:
                    sink = _AppendingSink()
                    sinks.append(sink)
                bridge = Bridge(caller, agent, stats=stats, sink=sink)
            bridge.start(loop.time())
            if mode == "monitor":
                if discard is None:  # the supervisors' mixes go to a socket nobody reads
                    discard = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    discard.bind(("127.0.0.1", 0))
                supervisor = await open_endpoint(
                    alloc, stats, clock=clock, remote=discard.getsockname(), symmetric=False
                )
                monitor = Monitor(bridge, supervisor, clock, mode="barge")
                monitor.start(loop.time())
                closers.append(supervisor.close)
                stoppers.append(monitor.stop)
            ports += [caller.port, agent.port]
            closers += [caller.close, agent.close]
            stoppers.append(bridge.stop)
    else:
        for i in range(calls):
            a = _PlainRelay(dest(2 * i + 1))
            b = _PlainRelay(dest(2 * i))
            a.peer, b.peer = b, a
            ta, _ = await loop.create_datagram_endpoint(lambda a=a: a, local_addr=("127.0.0.1", 0))
            tb, _ = await loop.create_datagram_endpoint(lambda b=b: b, local_addr=("127.0.0.1", 0))
            ports += [ta.get_extra_info("sockname")[1], tb.get_extra_info("sockname")[1]]
            closers += [ta.close, tb.close]
    # as the daemon does once it is up: the long-lived objects leave the collector's scans
    gc.collect()
    gc.freeze()
    conn.send(ports)
    start_s, end_s = await loop.run_in_executor(None, conn.recv)

    async def drain_sinks() -> None:
        while True:
            await asyncio.sleep(1.0)
            for sink in sinks:
                sink.fed += len(sink.buffer)
                sink.buffer.clear()

    drainer = asyncio.ensure_future(drain_sinks())

    def processed() -> int:
        if mode != "baseline":
            return stats.packets_received
        return _PlainRelay.received

    worker_pids = pool.pool.pids if pool is not None else []

    # CPU time per packet processed, from just before the first packet until the queue is
    # drained: robust against this process being starved of CPU by the others on a shared box
    await asyncio.sleep(max(0.0, start_s - 0.05 - time.monotonic()))
    cpu0, wall0, done0 = time.process_time(), time.monotonic(), processed()
    wcpu0 = _proc_cpu_s(worker_pids)
    await asyncio.sleep(max(0.0, end_s - time.monotonic()))
    last = -1
    give_up = time.monotonic() + 15.0
    while processed() != last and time.monotonic() < give_up:  # drained: 300 ms of quiet
        last = processed()
        await asyncio.sleep(0.3)
    if processed() != last:
        print("bench_media: packets still arriving 15 s after the senders stopped", flush=True)
    cpu1, wall1, done1 = time.process_time(), time.monotonic() - 0.3, processed()
    wcpu1 = _proc_cpu_s(worker_pids)
    drainer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await drainer
    handoffs = ""
    if pool is not None:
        await asyncio.sleep(1.0)  # a busy worker's last counter reports (every 0.25 s) trail
        handoffs = " ".join(
            f"{m.labels['outcome']}={int(m.value)}"
            for metric in pool.handoffs.collect()
            for m in metric.samples
            if m.name.endswith("_total")
        )
    for stop in stoppers:
        stop(loop.time())
    if pool is not None:
        await asyncio.sleep(1.0)  # the legs come back, the workers' last counters arrive
        await pool.close()
    if writer is not None:
        await asyncio.to_thread(writer.stop)
    clock.stop()
    for close in closers:
        close()
    tmp.cleanup()
    conn.send(
        {
            "cpu_s": cpu1 - cpu0 + wcpu1 - wcpu0,
            "main_cpu_s": cpu1 - cpu0,
            "handoffs": handoffs,
            "wall_s": wall1 - wall0,
            "processed": done1 - done0,
            "relayed": stats.packets_sent if mode == "acd" else done1 - done0,
            "tapped": stats.packets_tapped,
            "late_ticks": clock.late_ticks,
        }
    )


def media_main(
    conn: Connection,
    mode: str,
    calls: int,
    receivers: list[tuple[str, int]],
    port_base: int,
    window: tuple[float, float],
    workers: int,
) -> None:
    _raise_fd_limit()
    import uvloop

    uvloop.run(_serve(conn, mode, calls, receivers, port_base, window, workers))


# -- orchestration -----------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_once(
    mode: str, calls: int, seconds: float, port_base: int, workers: int = 0
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    warmup_s = 1.0
    window = (warmup_s, warmup_s + seconds)
    r_parent, r_child = ctx.Pipe()
    m_parent, m_child = ctx.Pipe()
    s_parent, s_child = ctx.Pipe()
    n_recv = max(1, (2 * calls + LEGS_PER_RECEIVER_SOCKET - 1) // LEGS_PER_RECEIVER_SOCKET)
    receiver = ctx.Process(target=receiver_main, args=(r_child, n_recv, window))
    receiver.start()
    receivers = r_parent.recv()
    media = ctx.Process(
        target=media_main, args=(m_child, mode, calls, receivers, port_base, window, workers)
    )
    media.start()
    ports = m_parent.recv()
    sender = ctx.Process(target=sender_main, args=(s_child, [("127.0.0.1", p) for p in ports]))
    sender.start()
    start_s = time.monotonic() + 0.5
    end_s = start_s + warmup_s + seconds
    for c in (r_parent, m_parent, s_parent):
        c.send((start_s, end_s))
    sent, sender_late_s = s_parent.recv()
    if not m_parent.poll(seconds + 120):
        # a media process that never reports (seen once in a long run on a shared box): say so
        # and go on with the next run rather than wait forever
        for p in (sender, media, receiver):
            p.kill()
        raise TimeoutError(f"{mode} with {calls} calls: the media process did not report")
    media_result = m_parent.recv()
    received, lat_bytes = r_parent.recv()
    for p in (sender, media, receiver):
        p.join(timeout=10)
    lat = array("d")
    lat.frombytes(lat_bytes)
    latencies = list(lat)
    base = min(latencies) if latencies else 0.0
    added = [x - base for x in latencies]
    call_seconds = media_result["processed"] / (2 * (1 / FRAME_S))  # 2 legs x 50 packets/s
    cpu_ms = 1000 * media_result["cpu_s"] / max(call_seconds, 1e-9)
    return {
        "calls": calls,
        "cpu_ms_per_call_s": cpu_ms,
        "us_per_packet": 1e6 * media_result["cpu_s"] / max(media_result["processed"], 1),
        "calls_per_core": 1000 / cpu_ms if cpu_ms else float("inf"),
        "cpu_share": media_result["cpu_s"] / media_result["wall_s"],
        "main_share": media_result["main_cpu_s"] / media_result["wall_s"],
        "sent": sent,
        "relayed": media_result["relayed"],
        "lost": sent - received,
        "jitter_p50_ms": 1000 * _percentile(added, 0.50),
        "jitter_p99_ms": 1000 * _percentile(added, 0.99),
        "latency_min_ms": 1000 * base,
        "sender_late_ms": 1000 * sender_late_s,
        "tapped": media_result["tapped"],
        "handoffs": media_result["handoffs"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--modes", nargs="+", default=["baseline", "acd"],
        choices=["baseline", "acd", "acd-rec", "workers", "monitor"],
    )  # fmt: skip
    parser.add_argument("--port-base", type=int, default=42000)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="media workers (workers mode)"
    )
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    header = (
        f"{'mode':9} {'calls':>5} {'cpu ms/call-s':>13} {'us/pkt':>6} {'calls/core':>10} "
        f"{'core %':>7} {'sent':>8} {'relayed':>8} {'lost':>6} {'jit p50 ms':>10} "
        f"{'jit p99 ms':>10} {'sender late ms':>14}"
    )
    print(header)
    runs = [(mode, n) for mode in args.modes for n in (args.workers if mode == "workers" else [0])]
    for calls in args.calls:
        for mode, n in runs:
            try:
                r = run_once(mode, calls, args.seconds, args.port_base, n)
            except TimeoutError as exc:
                print(f"{mode:9} {calls:5d}  HUNG: {exc} (not a result)", flush=True)
                continue
            label = f"workers={n}" if mode == "workers" else mode
            print(
                f"{label:9} {calls:5d} {r['cpu_ms_per_call_s']:13.3f} {r['us_per_packet']:6.2f} "
                f"{r['calls_per_core']:10.0f} {100 * r['cpu_share']:6.1f}% {r['sent']:8.0f} "
                f"{r['relayed']:8.0f} {r['lost']:6.0f} {r['jitter_p50_ms']:10.2f} "
                f"{r['jitter_p99_ms']:10.2f} {r['sender_late_ms']:14.2f}"
                + (f"  (daemon's loop {100 * r['main_share']:.1f}%; {r['handoffs']})" if n else ""),
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
