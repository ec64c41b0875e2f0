"""Bridge over real UDP sockets on 127.0.0.1: relay, continuity, transcoding, tap, DTMF, latching."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
from media_helpers import CollectingSink, Phone, dominant_hz, open_phone, tone_frames

from sip.media import (
    Bridge,
    DtmfReceived,
    MediaEvent,
    MediaStats,
    PortAllocator,
    RemoteLatched,
    RtcpReceived,
    RtpEndpoint,
    open_endpoint,
)
from sip.rtp.dtmf import dtmf_packets
from sip.rtp.g711 import decode_pcma, decode_pcmu
from sip.rtp.packet import RtpPacket
from sip.rtp.rtcp import SenderReport, build_compound, ntp_timestamp

FRAMES = 25  # 0.5 s at 20 ms


def decode(packets: list[RtpPacket], codec: str = "PCMU") -> np.ndarray:
    dec = decode_pcmu if codec == "PCMU" else decode_pcma
    ordered = sorted(packets, key=lambda p: p.sequence)
    return np.frombuffer(b"".join(dec(p.payload) for p in ordered), "<i2")


async def talk(
    a: Phone,
    a_to: tuple[str, int],
    b: Phone,
    b_to: tuple[str, int],
    *,
    a_codec: str = "PCMU",
    b_codec: str = "PCMU",
    skip_a: frozenset[int] = frozenset(),
) -> None:
    a_frames = tone_frames(440, FRAMES, a_codec)
    b_frames = tone_frames(880, FRAMES, b_codec)
    a_pt = 0 if a_codec == "PCMU" else 8
    b_pt = 0 if b_codec == "PCMU" else 8
    for i in range(FRAMES):
        if i not in skip_a:
            a.send(RtpPacket(a_pt, 1000 + i, 50_000 + 160 * i, 0xA, a_frames[i]).serialize(), a_to)
        b.send(RtpPacket(b_pt, 7 + i, 9_000_000 + 160 * i, 0xB, b_frames[i]).serialize(), b_to)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)


async def test_bridge_relays_both_tones_and_taps_aligned_channels(
    allocator: PortAllocator, stats: MediaStats
) -> None:
    phone_a, phone_b = await open_phone(), await open_phone()
    sink = CollectingSink()
    async with (
        await open_endpoint(allocator, stats, remote=phone_a.address) as caller,
        await open_endpoint(allocator, stats, remote=phone_b.address) as agent,
    ):
        loop = asyncio.get_running_loop()
        bridge = Bridge(caller, agent, stats=stats, sink=sink)
        bridge.start(loop.time())
        await talk(phone_a, caller.local_address, phone_b, agent.local_address)
        end = bridge.stop(loop.time())
    # each phone hears the other one
    assert len(phone_b.received) == FRAMES
    assert len(phone_a.received) == FRAMES
    assert abs(dominant_hz(decode(phone_b.received)) - 440) < 10
    assert abs(dominant_hz(decode(phone_a.received)) - 880) < 10
    # what phone B sees is our continuous stream: our SSRC, sequence +1, timestamp +160
    got = phone_b.received
    assert {p.ssrc for p in got} == {agent.stream.ssrc}
    assert [(p.sequence - got[0].sequence) % 65536 for p in got] == list(range(FRAMES))
    assert [(p.timestamp - got[0].timestamp) % 2**32 for p in got] == [
        160 * i for i in range(FRAMES)
    ]
    assert [p.marker for p in got] == [True] + [False] * (FRAMES - 1)
    # the tap: both channels, positions in RTP time, starting together, 160 samples apart
    for channel, hz in ((0, 440), (1, 880)):
        fed = [f for f in sink.fed if f[0] == channel]
        assert len(fed) == FRAMES
        assert {f[3] for f in fed} == {"PCMU"}
        positions = [f[1] for f in fed]
        assert [p - positions[0] for p in positions] == [160 * i for i in range(FRAMES)]
        # the first packet left the phone right after bridge start (well within 2 frames)
        assert 0 <= positions[0] < 320
        pcm = np.frombuffer(b"".join(decode_pcmu(f[2]) for f in fed), "<i2")
        assert abs(dominant_hz(pcm) - hz) < 10
    first0 = next(f[1] for f in sink.fed if f[0] == 0)
    first1 = next(f[1] for f in sink.fed if f[0] == 1)
    assert abs(first0 - first1) <= 160  # both phones sent their first frame in the same ms
    # the bridge lasted about 25 x 20 ms + 50 ms; the sink was closed at the bridged duration
    assert sink.closed_at == end
    assert 0.5 * 8000 <= end <= 0.8 * 8000
    assert sink.gaps == []
    assert stats.packets_received == 2 * FRAMES
    assert stats.packets_sent >= 2 * FRAMES
    assert stats.packets_tapped == 2 * FRAMES
    assert stats.sessions_active == 0
    # each closed leg put its A.8 jitter into the histogram; loopback jitter is tiny
    assert stats.jitter.count == 2
    assert stats.jitter.counts[-1] == 0
    assert stats.jitter.sum < 2 * 0.02
    for p in (phone_a, phone_b):
        assert p.transport is not None
        p.transport.close()


async def test_transcoding_bridge_and_loss_gap(allocator: PortAllocator, stats: MediaStats) -> None:
    phone_a, phone_b = await open_phone(), await open_phone()
    sink = CollectingSink()
    async with (
        await open_endpoint(
            allocator, stats, payload_types={0: "PCMU"}, remote=phone_a.address
        ) as caller,
        await open_endpoint(
            allocator, stats, payload_types={8: "PCMA"}, remote=phone_b.address
        ) as agent,
    ):
        loop = asyncio.get_running_loop()
        bridge = Bridge(
            caller, agent, stats=stats, sink=sink, caller_codec="PCMU", agent_codec="PCMA"
        )
        bridge.start(loop.time())
        await talk(
            phone_a,
            caller.local_address,
            phone_b,
            agent.local_address,
            b_codec="PCMA",
            skip_a=frozenset({10}),
        )
        bridge.stop(loop.time())
        lost_before_close = caller.rx.lost if caller.rx else None
    # the agent's phone gets A-law, the caller's phone u-law, each with the other's tone
    assert {p.payload_type for p in phone_b.received} == {8}
    assert {p.payload_type for p in phone_a.received} == {0}
    assert abs(dominant_hz(decode(phone_b.received, "PCMA")) - 440) < 10
    assert abs(dominant_hz(decode(phone_a.received, "PCMU")) - 880) < 10
    # A's packet 10 never came: B sees the hole in our sequence numbers, the tap reports it
    seqs = sorted((p.sequence - phone_b.received[0].sequence) % 65536 for p in phone_b.received)
    assert seqs == [i for i in range(FRAMES) if i != 10]
    fed0 = [f for f in sink.fed if f[0] == 0]
    start = fed0[0][1]
    assert sink.gaps == [(0, start + 10 * 160, 160, "loss")]
    assert {f[3] for f in sink.fed if f[0] == 1} == {"PCMA"}
    assert lost_before_close == 1
    assert stats.packets_lost == 1
    for p in (phone_a, phone_b):
        assert p.transport is not None
        p.transport.close()


async def test_symmetric_latching_dtmf_and_relay_of_events(
    allocator: PortAllocator, stats: MediaStats
) -> None:
    phone_a, phone_b, intruder = await open_phone(), await open_phone(), await open_phone()
    events: list[MediaEvent] = []
    # SDP said a different port: symmetric RTP latches to where packets really come from
    async with (
        await open_endpoint(
            allocator, stats, remote=("127.0.0.1", 9), on_event=events.append
        ) as caller,
        await open_endpoint(allocator, stats, remote=phone_b.address) as agent,
    ):
        bridge = Bridge(caller, agent, stats=stats)
        bridge.start(asyncio.get_running_loop().time())
        for i, planned in enumerate(dtmf_packets("5", 120, update_interval_ms=20)):
            marker = planned.marker
            pkt = RtpPacket(101, 300 + i, 80_000, 0xA, planned.payload, marker).serialize()
            phone_a.send(pkt, caller.local_address)
            if i == 1:
                intruder.send(
                    RtpPacket(0, 1, 1, 0xC, b"\xff" * 160).serialize(), caller.local_address
                )
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
    assert events[0] == RemoteLatched(phone_a.address)
    digits = [e for e in events if isinstance(e, DtmfReceived)]
    assert digits == [DtmfReceived("5", 120, "rfc4733")]
    assert stats.dtmf_digits["rfc4733"] == 1
    assert stats.packets_foreign == 1
    # the agent's phone got the telephone-events relayed (one shared timestamp, our SSRC)
    relayed = [p for p in phone_b.received if p.payload_type == 101]
    assert len(relayed) == len(dtmf_packets("5", 120, update_interval_ms=20))
    assert len({p.timestamp for p in relayed}) == 1
    assert relayed[0].marker
    assert all(p.ssrc == agent.stream.ssrc for p in phone_b.received)
    for p in (phone_a, phone_b, intruder):
        assert p.transport is not None
        p.transport.close()


async def test_hold_stops_each_way_and_resume_continues_with_a_marker(
    allocator: PortAllocator, stats: MediaStats
) -> None:
    phone_a, phone_b = await open_phone(), await open_phone()
    async with (
        await open_endpoint(allocator, stats, remote=phone_a.address) as caller,
        await open_endpoint(allocator, stats, remote=phone_b.address) as agent,
    ):
        loop = asyncio.get_running_loop()
        bridge = Bridge(caller, agent, stats=stats, sink=CollectingSink())
        bridge.start(loop.time())
        await talk(phone_a, caller.local_address, phone_b, agent.local_address)
        # The agent holds: neither way is relayed, the recording is paused as "hold".
        bridge.set_relay(loop.time(), caller_to_agent=False, agent_to_caller=False)
        bridge.pause_recording(loop.time(), "hold")
        assert bridge.recording_paused_for == "hold"
        heard_a, heard_b = len(phone_a.received), len(phone_b.received)
        await talk(phone_a, caller.local_address, phone_b, agent.local_address)
        assert (len(phone_a.received), len(phone_b.received)) == (heard_a, heard_b)
        # Resumed: both ways again, each far end sees a marker and its timestamps jump with time.
        bridge.set_relay(loop.time(), caller_to_agent=True, agent_to_caller=True)
        bridge.resume_recording(loop.time())
        assert bridge.recording_paused_for is None
        await talk(phone_a, caller.local_address, phone_b, agent.local_address)
        bridge.stop(loop.time())
        bridge.set_relay(loop.time(), caller_to_agent=True, agent_to_caller=True)  # no-op now
        assert caller.on_rtp is None
        assert agent.on_rtp is None
    for phone in (phone_a, phone_b):
        got = sorted(phone.received, key=lambda p: p.sequence)
        assert len(got) == 2 * FRAMES
        resumed = got[FRAMES]
        assert resumed.marker
        assert resumed.sequence == (got[FRAMES - 1].sequence + 1) % 65536  # no sequence gap
        gap = (resumed.timestamp - got[FRAMES - 1].timestamp) % 2**32
        assert gap >= 160 * FRAMES  # the held half second, in RTP time
        assert phone.transport is not None
        phone.transport.close()


async def test_held_leg_is_not_timed_out(allocator: PortAllocator, stats: MediaStats) -> None:
    events: list[MediaEvent] = []
    async with await open_endpoint(
        allocator, stats, inactivity_timeout_s=0.1, on_event=events.append
    ) as leg:
        loop = asyncio.get_running_loop()
        leg.set_held(True, loop.time())
        for _ in range(4):
            leg.watch(loop.time())
            await asyncio.sleep(0.06)
        assert events == []  # 0.24 s without RTP, on hold: no timeout
        leg.set_held(False, loop.time())
        leg.watch(loop.time())
        assert events == []  # counts again from the resume
        await asyncio.sleep(0.12)
        leg.watch(loop.time())
    assert [type(e).__name__ for e in events] == ["MediaTimedOut"]


async def test_detach_adopt_and_reattach_carry_the_leg_state(
    allocator: PortAllocator, stats: MediaStats
) -> None:
    """A leg handed to another carrier (here: a second endpoint in this process, as a media
    worker would adopt it) keeps its port, latch, receiver statistics and outbound stream, and
    comes back with what the other carrier did to them."""
    phone = await open_phone()
    async with await open_endpoint(allocator, stats, remote=phone.address) as leg:
        loop = asyncio.get_running_loop()
        frames = tone_frames(440, 10)
        for i in range(5):
            phone.send(
                RtpPacket(0, 100 + i, 160 * i, 0xA, frames[i]).serialize(), leg.local_address
            )
            leg.send_payload(0, frames[i], loop.time())
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        address = leg.local_address
        state, socks = leg.detach()
        state = pickle.loads(pickle.dumps(state))  # it crosses a process boundary
        assert leg.detached
        assert leg.transport is None
        assert leg.local_address == address  # SDP answers still need it while it is away
        leg.send_payload(0, frames[0], loop.time())  # not carried here: nothing is sent
        assert state.packets_received == 5
        assert state.rx is not None
        counted = state.rx.received  # A.1 counts from its first packet's successor
        assert counted >= 4
        other_stats = MediaStats()
        adopted = await RtpEndpoint.adopt(state, socks, stats=other_stats, clock=None)
        assert adopted.local_address == address
        for i in range(5, 10):
            phone.send(RtpPacket(0, 100 + i, 160 * i, 0xA, frames[i]).serialize(), address)
            adopted.send_payload(0, frames[i], loop.time())
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        assert other_stats.packets_received == 5  # the adopter read them, not the leg
        assert stats.packets_received == 5
        back, handed = adopted.detach(park=False)
        back = pickle.loads(pickle.dumps(back))
        for sock in handed:
            sock.close()
        await leg.reattach(back)
        assert not leg.detached
        assert leg.packets_received == 10
        assert leg.rx is not None
        assert leg.rx.received == counted + 5  # the adopter's five, on the same statistics
        assert leg.rx.lost == 0
        leg.send_payload(0, frames[0], loop.time())
        await asyncio.sleep(0.05)
    # what the phone got: one stream, sequence +1 all along, three carriers later
    got = phone.received
    assert len(got) == 11
    assert {p.ssrc for p in got} == {got[0].ssrc}
    assert [(p.sequence - got[0].sequence) % 65536 for p in got] == list(range(11))
    assert stats.sessions_active == 0
    assert phone.transport is not None
    phone.transport.close()


async def test_rtcp_on_the_rtp_port_is_read_as_rtcp_not_relayed_as_audio(
    allocator: PortAllocator, stats: MediaStats
) -> None:
    """A phone multiplexing RTCP on its RTP port (RFC 5761): its sender report is taken as RTCP
    (payload-type field 72-76 is SR..APP; no audio type lives there), never counted as received
    audio nor relayed to the other leg."""
    phone_a, phone_b = await open_phone(), await open_phone()
    events: list[MediaEvent] = []
    async with (
        await open_endpoint(
            allocator, stats, remote=phone_a.address, on_event=events.append
        ) as caller,
        await open_endpoint(allocator, stats, remote=phone_b.address) as agent,
    ):
        Bridge(caller, agent, stats=stats).start(asyncio.get_running_loop().time())
        frame = tone_frames(440, 1)[0]
        phone_a.send(RtpPacket(0, 1, 160, 0xA, frame).serialize(), caller.local_address)
        report = SenderReport(0xA, ntp_timestamp(1_800_000_000.0), 160, 1, 160)
        phone_a.send(build_compound(report, b"phone-a"), caller.local_address)
        phone_a.send(RtpPacket(0, 2, 320, 0xA, frame).serialize(), caller.local_address)
        await asyncio.sleep(0.1)
        assert caller.packets_received == 2
        assert len(phone_b.received) == 2  # the two audio packets, and only those
        first, second = phone_b.received
        assert (second.sequence - first.sequence) % 65536 == 1
        assert all(p.payload_type == 0 for p in phone_b.received)
        assert [e for e in events if isinstance(e, RtcpReceived)] == [RtcpReceived(None, None)]
        assert stats.packets_malformed == 0
    for p in (phone_a, phone_b):
        assert p.transport is not None
        p.transport.close()
