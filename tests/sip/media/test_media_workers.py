"""Bridged calls carried by a real media worker process (engine/media/worker.py) over real UDP.

The daemon's side (`RemoteBridge`, `MediaWorkers`) hands both legs' sockets and state to a worker
started with ``python -m engine.media.worker``; two plain UDP "phones" in this process talk tones
through it. Checked: each phone hears the other's tone from our continuous stream, the worker
writes the stereo recording (caller left, agent right, each tone on its channel), hold plays music
from the worker, the legs come back with the very same stream (no sequence jump), and a worker
killed mid-call loses neither the call (the daemon relays it again) nor the rest of its recording
(the call layer is told, and the daemon's own bridge feeds the sink it hands back, still paused).
A worker served in this process ends the tasks it started when its control stream closes, and
the daemon's side waits at shutdown for the legs it is bringing home.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import socket
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from media_helpers import (
    CollectingSink,
    Phone,
    dominant_hz,
    open_phone,
    tone_frames,
)
from prometheus_client import CollectorRegistry

from engine.media import offload
from engine.media.offload import MediaWorkers, RemoteBridge
from engine.media.worker import _Worker
from engine.recording.service import RecordingLost
from engine.recording.spec import RecordingSpec
from engine.runtime.workers import Ready, read_frame
from sip.media import DtmfReceived, MediaClock, MediaEvent, MediaStats, PortAllocator, open_endpoint
from sip.media.prompts import PromptCache
from sip.rtp.dtmf import dtmf_packets
from sip.rtp.g711 import decode_pcmu
from sip.rtp.packet import RtpPacket
from sip.rtp.rtcp import Bye, SenderReport, parse_rtcp
from sip.rtp.srtp import SrtpContext
from sip.sdes import new_crypto

SHIPPED_MOH = Path(__file__).resolve().parents[3] / "engine" / "prompts" / "moh.wav"


@pytest.fixture
async def workers(stats: MediaStats) -> AsyncIterator[MediaWorkers]:
    errors: list[int] = []
    pool = MediaWorkers(
        1,
        CollectorRegistry(),
        stats,
        args=["info", "json", "asyncio"],
        on_unexpected=lambda: errors.append(1),
    )
    await pool.start()
    assert pool.pool.pids, pool.not_ready()
    yield pool
    await pool.close()
    assert errors == []


class Talker:
    """Phone ``phone`` sends a tone to ``to`` at 50 packets/s until stopped."""

    def __init__(self, phone: Phone, to: tuple[str, int], hz: float, ssrc: int) -> None:
        self.frames = tone_frames(hz, 500)
        self.phone, self.to, self.ssrc = phone, to, ssrc
        self.i = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self.i < len(self.frames):
            packet = RtpPacket(0, self.i, 160 * self.i, self.ssrc, self.frames[self.i])
            self.phone.send(packet.serialize(), self.to)
            self.i += 1
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def decode(packets: list[RtpPacket]) -> np.ndarray:
    return decode_payloads([p.payload for p in packets])


def decode_payloads(payloads: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(decode_pcmu(p) for p in payloads), "<i2")


def since(phone: Phone, mark: int) -> list[RtpPacket]:
    return [p for p in phone.received[mark:] if p.payload_type == 0]


async def until(cond: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def spec(path: Path, recording_id: str = "r1") -> RecordingSpec:
    return RecordingSpec(recording_id, str(path), "wav", False, "c1", "", 0.2)


def read_stereo(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return data.reshape(-1, 2)


async def test_worker_relays_records_holds_and_hands_the_legs_back(
    allocator: PortAllocator,
    stats: MediaStats,
    clock: MediaClock,
    workers: MediaWorkers,
    tmp_path: Path,
) -> None:
    phone_a, phone_b = await open_phone(), await open_phone()
    digits: list[str] = []

    def on_caller(event: MediaEvent) -> None:
        if isinstance(event, DtmfReceived):
            digits.append(event.digit)

    caller = await open_endpoint(
        allocator, stats, remote=phone_a.address, clock=clock, on_event=on_caller
    )
    agent = await open_endpoint(allocator, stats, remote=phone_b.address, clock=clock)
    loop = asyncio.get_running_loop()
    # what the caller heard from us before the bridge (a prompt, here one frame) is our stream
    caller.send_payload(0, tone_frames(1000, 1)[0], loop.time())
    await until(lambda: len(phone_a.received) == 1)
    recording = workers.new_recording(spec(tmp_path / "r1.wav"))
    bridge = RemoteBridge(
        workers, caller, agent, stats=stats, clock=clock, prompts=PromptCache(),
        call_id="c1", sink=recording,
    )  # fmt: skip
    bridge.start(loop.time())
    assert bridge.carried_by == workers.pool.pids[0] != os.getpid()
    assert caller.detached
    assert agent.detached
    talk_a = Talker(phone_a, caller.local_address, 440, 0xA)
    talk_b = Talker(phone_b, agent.local_address, 880, 0xB)
    await until(lambda: len(phone_b.received) >= 40 and len(phone_a.received) >= 41)
    # each phone hears the other's tone, from one stream of ours with no sequence gap
    assert abs(dominant_hz(decode(phone_b.received[:40])) - 440) < 10
    assert abs(dominant_hz(decode(phone_a.received[1:41])) - 880) < 10
    assert {p.ssrc for p in phone_a.received} == {caller.stream.ssrc}
    # DTMF from the caller, received by the worker, reaches the daemon's leg
    for i, planned in enumerate(dtmf_packets("5", 100, update_interval_ms=20)):
        packet = RtpPacket(101, 30_000 + i, 1_600_000, 0xD, planned.payload, planned.marker)
        phone_a.send(packet.serialize(), caller.local_address)
    await until(lambda: digits == ["5"])

    # hold: the agent holds, the caller gets music from the worker, the agent's tone stops
    bridge.set_relay(loop.time(), caller_to_agent=False, agent_to_caller=False)
    bridge.pause_recording(loop.time(), "hold")
    bridge.play(0, "PCMU", [], [str(SHIPPED_MOH)])
    await asyncio.sleep(0.3)
    mark = len(phone_a.received)
    await asyncio.sleep(0.5)
    held = since(phone_a, mark)
    assert len(held) >= 15  # music at 50 packets/s
    assert abs(dominant_hz(decode(held)) - 880) > 50  # not the agent's tone
    bridge.stop_play(0)
    bridge.resume_recording(loop.time())
    bridge.set_relay(loop.time(), caller_to_agent=True, agent_to_caller=True)
    mark = len(phone_a.received)
    await until(lambda: len(since(phone_a, mark)) >= 20)
    assert abs(dominant_hz(decode(since(phone_a, mark)[-20:])) - 880) < 10

    # stop: the legs come back here with the worker's stream state
    await talk_a.stop()
    await talk_b.stop()
    bridge.stop(loop.time())
    await until(lambda: not caller.detached and caller.transport is not None)
    await asyncio.sleep(0.05)
    before = len(phone_a.received)
    caller.send_payload(0, tone_frames(1000, 1)[0], loop.time())
    await until(lambda: len(phone_a.received) == before + 1)
    seqs = [p.sequence for p in phone_a.received]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs)), seqs
    assert {p.ssrc for p in phone_a.received} == {caller.stream.ssrc}
    # the worker's counters reached this process's stats (reported every second)
    await until(lambda: stats.packets_tapped >= 80, timeout_s=3)

    # the recording, written by the worker: caller's tone left, agent's right
    result = await asyncio.wait_for(recording.result, 10)
    assert result.error is None
    frames = read_stereo(Path(result.path))
    assert len(frames) > 8000  # more than a second of call
    assert abs(dominant_hz(frames[:4000, 0]) - 440) < 10
    assert abs(dominant_hz(frames[:4000, 1]) - 880) < 10
    assert result.paused_spans == ()  # hold is a gap in the tap, not a PCI pause
    caller.close()
    agent.close()
    assert stats.sessions_active == 0
    for p in (phone_a, phone_b):
        assert p.transport is not None
        p.transport.close()


async def test_a_killed_worker_loses_neither_the_call_nor_the_rest_of_its_recording(
    allocator: PortAllocator,
    stats: MediaStats,
    clock: MediaClock,
    workers: MediaWorkers,
    tmp_path: Path,
) -> None:
    phone_a, phone_b = await open_phone(), await open_phone()
    caller = await open_endpoint(allocator, stats, remote=phone_a.address, clock=clock)
    agent = await open_endpoint(allocator, stats, remote=phone_b.address, clock=clock)
    loop = asyncio.get_running_loop()
    recording = workers.new_recording(spec(tmp_path / "r2.wav", "r2"))
    bridge = RemoteBridge(
        workers, caller, agent, stats=stats, clock=clock, prompts=PromptCache(),
        call_id="c2", sink=recording,
    )  # fmt: skip
    lost: list[tuple[object, str]] = []
    bridge.on_recording_lost = lambda rec, why: lost.append((rec, why))
    bridge.start(loop.time())
    pid = bridge.carried_by
    assert pid is not None
    talk_a = Talker(phone_a, caller.local_address, 440, 0xA)
    await until(lambda: len(phone_b.received) >= 10)
    bridge.pause_recording(loop.time(), "paused")  # PCI, in the worker
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not caller.detached and bridge.carried_by is None)
    # for /readyz, until the replacement is up (a worker starts in well under a second, so this
    # is read as soon as the death is noticed, not after the checks below)
    down = workers.not_ready()
    with pytest.raises(RecordingLost, match="media worker died") as failed:
        await asyncio.wait_for(recording.result, 5)
    assert (failed.value.recording_id, failed.value.path) == ("r2", str(tmp_path / "r2.wav"))
    # The call layer is told, to record the rest here; the sink it hands back starts paused.
    assert lost == [(recording, "media worker died")]
    here = CollectingSink()
    bridge.record_here(here)
    await asyncio.sleep(0.3)
    assert here.fed == []
    bridge.resume_recording(loop.time())
    await until(lambda: len(here.fed) >= 20)
    assert {channel for channel, _, _, _ in here.fed} == {0}  # only the caller talks
    assert (
        abs(dominant_hz(decode_payloads([payload for _, _, payload, _ in here.fed[-20:]])) - 440)
        < 10
    )
    assert here.gaps[0][3] == "paused"  # the paused span reached the sink as a gap
    mark = len(phone_b.received)
    await until(lambda: len(phone_b.received) >= mark + 20)  # relayed here now
    assert abs(dominant_hz(decode(phone_b.received[mark : mark + 20])) - 440) < 10
    assert workers.handoffs.labels(outcome="taken_back")._value.get() == 1
    assert down is not None
    assert "media worker 0" in down
    # a new worker comes up for the next calls
    await until(lambda: bool(workers.pool.pids) and workers.pool.pids[0] != pid, timeout_s=20)
    assert workers.not_ready() is None
    await talk_a.stop()
    bridge.stop(loop.time())
    assert here.closed_at is not None
    assert here.closed_at > 0
    late = CollectingSink()
    bridge.record_here(late)  # one that was ready only after the hang-up is closed at once
    assert late.closed_at == here.closed_at
    caller.close()
    agent.close()
    for p in (phone_a, phone_b):
        assert p.transport is not None
        p.transport.close()


async def test_a_leg_hung_up_in_a_worker_says_rtcp_bye_with_the_workers_counts(
    allocator: PortAllocator,
    stats: MediaStats,
    clock: MediaClock,
    workers: MediaWorkers,
) -> None:
    """The call layer stops the bridge and closes both legs at once on a SIP BYE, while the
    worker still carries them. Each leg comes home with the worker's final state, then sends its
    RTCP BYE (RFC 3550 6.6) from its own RTCP port, with a sender report that counts every packet
    the worker sent, and only then gives its port pair back."""
    phone_a, phone_b = await open_phone(), await open_phone()
    rtcp_a = await open_phone()  # phone A's RTCP port
    caller = await open_endpoint(allocator, stats, remote=phone_a.address, clock=clock)
    agent = await open_endpoint(allocator, stats, remote=phone_b.address, clock=clock)
    assert caller.rtcp is not None
    caller.rtcp.remote_addr = rtcp_a.address
    loop = asyncio.get_running_loop()
    bridge = RemoteBridge(
        workers, caller, agent, stats=stats, clock=clock, prompts=PromptCache(), call_id="c3"
    )
    bridge.start(loop.time())
    assert bridge.carried_by is not None
    talk_b = Talker(phone_b, agent.local_address, 880, 0xB)
    await until(lambda: len(phone_a.received) >= 25)
    await talk_b.stop()
    await asyncio.sleep(0.1)  # the last relayed packets arrive
    bridge.stop(loop.time())
    caller.close()  # as the call layer does on a BYE: at once, not after the hand-back
    agent.close()
    assert caller.closed
    assert allocator.in_use == 2  # both port pairs stay ours until the legs come home

    def bye() -> list[object] | None:
        for data in rtcp_a.raw:
            packets = parse_rtcp(data)
            if any(isinstance(p, Bye) for p in packets):
                return packets
        return None

    await until(lambda: bye() is not None)
    packets = bye()
    assert packets is not None
    report = packets[0]
    assert isinstance(report, SenderReport)
    assert report.ssrc == caller.stream.ssrc
    assert report.packet_count == len(phone_a.received)  # the worker's counts, every packet
    (goodbye,) = [p for p in packets if isinstance(p, Bye)]
    assert goodbye.ssrcs == (caller.stream.ssrc,)
    await until(lambda: stats.sessions_active == 0)  # both port pairs given back
    assert allocator.in_use == 0
    for p in (phone_a, phone_b, rtcp_a):
        assert p.transport is not None
        p.transport.close()


async def test_a_worker_ends_its_stats_reporter_with_its_control_stream() -> None:
    """`_Worker.serve`, run in this process over socketpairs (control stream and descriptor
    channel): when the daemon's end closes, every task it started (the stats reporter) has ended,
    none is left pending for the loop to destroy."""
    daemon_end, worker_end = socket.socketpair()
    fd_daemon, fd_worker = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=worker_end)
    daemon_reader, daemon_writer = await asyncio.open_connection(sock=daemon_end)
    before = asyncio.all_tasks()
    try:
        serving = asyncio.create_task(_Worker(writer, fd_worker).serve(reader))
        ready = await asyncio.wait_for(read_frame(daemon_reader, msgspec.msgpack.Decoder(Ready)), 5)
        assert ready.pid == os.getpid()
        started = asyncio.all_tasks() - before
        assert len(started) == 2, started  # serve and its stats reporter
        daemon_writer.close()  # the daemon went away: the worker stops serving
        await asyncio.wait_for(serving, 5)
    finally:
        gc.unfreeze()  # serve froze this (test) process's objects, as a worker does at start
        writer.close()
        await writer.wait_closed()
        await daemon_writer.wait_closed()
        fd_daemon.close()
        fd_worker.close()
    assert [t for t in started if not t.done()] == []


async def test_shutdown_waits_for_the_legs_coming_home(
    allocator: PortAllocator,
    stats: MediaStats,
    clock: MediaClock,
    workers: MediaWorkers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping the workers brings the legs of a call they carry home (a take-back, a task the
    pool owns): `close` returns only once it has ended, waited for, then cancelled after
    `TAKE_BACK_CLOSE_TIMEOUT_S` when it is stuck."""
    monkeypatch.setattr(offload, "TAKE_BACK_CLOSE_TIMEOUT_S", 0.3)
    phone_a, phone_b = await open_phone(), await open_phone()
    caller = await open_endpoint(allocator, stats, remote=phone_a.address, clock=clock)
    agent = await open_endpoint(allocator, stats, remote=phone_b.address, clock=clock)
    loop = asyncio.get_running_loop()
    bridge = RemoteBridge(
        workers, caller, agent, stats=stats, clock=clock, prompts=PromptCache(), call_id="c4"
    )
    bridge.start(loop.time())
    assert bridge.carried_by is not None
    reattach = caller.reattach
    cancelled: list[bool] = []

    async def stuck(state: Any) -> None:
        # Stuck until cancelled; then it comes home after all, so that the rest of the
        # take-back runs and close has a task to wait for to its end.
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
        await reattach(state)

    monkeypatch.setattr(caller, "reattach", stuck)
    started = loop.time()
    await workers.close()
    assert loop.time() - started >= 0.3
    assert cancelled == [True]
    assert bridge.home.done()
    assert not caller.detached
    assert not agent.detached
    bridge.stop(loop.time())  # (the take-back started a local bridge: the call goes on here)
    caller.close()
    agent.close()
    for p in (phone_a, phone_b):
        assert p.transport is not None
        p.transport.close()


async def test_a_worker_carries_an_srtp_leg_on_its_keys_and_takes_a_re_key(
    allocator: PortAllocator, stats: MediaStats, clock: MediaClock, workers: MediaWorkers
) -> None:
    """An SRTP caller leg (SDES keys both ways) bridged to a plain agent leg, in a worker: the
    agent hears the caller's tone unprotected, the caller's phone gets the agent's tone under
    our key; the phone re-keys (a re-offer, RFC 4568 7.1.4) and `RemoteBridge.rekey` gives the
    worker the new key, so nothing is rejected; the leg comes back on the worker's keys."""
    phone_a, phone_b = await open_phone(), await open_phone()
    ours, theirs, again = new_crypto(), new_crypto(), new_crypto()
    caller = await open_endpoint(allocator, stats, remote=phone_a.address, clock=clock)
    agent = await open_endpoint(allocator, stats, remote=phone_b.address, clock=clock)
    caller.use_srtp((ours.context(), theirs.context()))
    loop = asyncio.get_running_loop()
    bridge = RemoteBridge(
        workers, caller, agent, stats=stats, clock=clock, prompts=PromptCache(), call_id="c1"
    )
    bridge.start(loop.time())
    assert bridge.carried_by == workers.pool.pids[0] != os.getpid()
    frames = tone_frames(440, 60)
    phone_tx, phone_rx = theirs.context(), ours.context()

    async def talk(tx: SrtpContext, first: int, n: int) -> None:
        for i in range(first, first + n):
            packet = RtpPacket(0, i, 160 * i, 0xA, frames[i]).serialize()
            phone_a.send(tx.protect_rtp(packet), caller.local_address)
            phone_b.send(RtpPacket(0, i, 160 * i, 0xB, tone_frames(880, 1)[0]).serialize(),
                         agent.local_address)  # fmt: skip
            await asyncio.sleep(0.02)

    await talk(phone_tx, 0, 25)
    await until(lambda: len(phone_b.received) >= 20)
    caller.srtp_rx = again.context()  # what Session.reinvite does with the phone's new key
    bridge.rekey(caller)
    await asyncio.sleep(0.1)
    mark = len(phone_b.received)
    await talk(again.context(), 25, 25)
    await until(lambda: len(phone_b.received) >= mark + 20)
    assert abs(dominant_hz(decode(phone_b.received[mark:])) - 440) < 10  # the new key's audio
    await asyncio.sleep(0.6)  # the worker's counters reach us every STATS_INTERVAL_S
    assert stats.packets_srtp_rejected == 0
    encrypted = [d for d in phone_a.raw if len(d) == 12 + 160 + 10]
    assert len(encrypted) >= 40
    clear = [phone_rx.unprotect_rtp(d) for d in encrypted]
    assert all(c is not None for c in clear)
    bridge.stop(loop.time())
    await until(lambda: not caller.detached and caller.transport is not None)
    assert caller.srtp_rx is not None
    assert caller.srtp_rx.uses(again.key, again.salt)  # the daemon's own, kept in step
    caller.close()
    agent.close()
    for p in (phone_a, phone_b):
        assert p.transport is not None
        p.transport.close()
