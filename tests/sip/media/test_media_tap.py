"""The tap's positions, deterministically: fake transports and an injected clock, no sockets.

Checks the tap contract: positions follow RTP time per leg (not arrival time), are rebased at the
leg's first packet to the wall-clock offset since bridge start, survive timestamp wraparound,
report loss and pauses as gaps, and the sink is closed at the bridged duration.
"""

from __future__ import annotations

from media_helpers import CollectingSink

from sip.media import Bridge, MediaStats, PortAllocator, RtpEndpoint
from sip.rtp.packet import RtpPacket, parse_rtp


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CALLER_ADDR = ("127.0.0.1", 4000)
AGENT_ADDR = ("127.0.0.1", 4002)


async def make_bridge(
    clock: FakeClock, sink: CollectingSink, **agent_options: object
) -> tuple[RtpEndpoint, RtpEndpoint, Bridge, FakeTransport, FakeTransport]:
    stats = MediaStats()
    alloc = PortAllocator(50000, 50010)
    caller = RtpEndpoint(
        alloc.allocate(), allocator=alloc, stats=stats, remote=CALLER_ADDR, time_source=clock
    )
    agent = RtpEndpoint(
        alloc.allocate(),
        allocator=alloc,
        stats=stats,
        remote=AGENT_ADDR,
        time_source=clock,
        **agent_options,  # type: ignore[arg-type]
    )
    t_caller, t_agent = FakeTransport(), FakeTransport()
    caller.connection_made(t_caller)  # type: ignore[arg-type]
    agent.connection_made(t_agent)  # type: ignore[arg-type]
    bridge = Bridge(caller, agent, stats=stats, sink=sink)
    bridge.start(clock.now)
    return caller, agent, bridge, t_caller, t_agent


def rtp(seq: int, ts: int, ssrc: int = 0xA, payload: bytes = b"\xff" * 160, pt: int = 0) -> bytes:
    return RtpPacket(pt, seq % 65536, ts % 2**32, ssrc, payload).serialize()


async def test_positions_follow_rtp_time_not_arrival_time() -> None:
    clock, sink = FakeClock(), CollectingSink()
    caller, _agent, bridge, _, t_agent = await make_bridge(clock, sink)
    # the caller's first packet arrives 30 ms after bridge start: rebased to 30 ms = 240 samples
    arrivals = [0.030, 0.052, 0.069, 0.095, 0.101]  # jittery arrivals of 20 ms frames
    base_ts = 2**32 - 320  # wraps after two packets
    for i, at in enumerate(arrivals):
        clock.now = 1000.0 + at
        caller.datagram_received(rtp(100 + i, base_ts + 160 * i), CALLER_ADDR)
    positions = [f[1] for f in sink.fed]
    assert positions == [240, 400, 560, 720, 880]  # 240 + 160 * i despite jitter and the wrap
    assert [f[0] for f in sink.fed] == [0] * 5
    assert len(t_agent.sent) == 5
    clock.now = 1000.5
    assert bridge.stop(clock.now) == 4000
    assert sink.closed_at == 4000  # 0.5 s bridged


async def test_reorder_duplicate_loss_and_restart() -> None:
    clock, sink = FakeClock(), CollectingSink()
    _caller, agent, _bridge, _, _ = await make_bridge(clock, sink)
    clock.now += 0.02  # agent's phone starts right away: position 160
    for seq, ts in [(1, 0), (2, 160), (4, 480), (3, 320), (3, 320), (7, 960)]:
        agent.datagram_received(rtp(seq, ts, ssrc=0xB), AGENT_ADDR)
        clock.now += 0.02
    # every packet placed by its own timestamp: 160 + ts
    assert [f[1] for f in sink.fed] == [160, 320, 640, 480, 480, 1120]
    assert {f[0] for f in sink.fed} == {1}
    # 2 -> 4 skips one packet (gap from the end of 2, 480, for 160 samples); 4 -> 7 skips two
    assert sink.gaps == [(1, 480, 160, "loss"), (1, 800, 320, "loss")]
    # the phone restarts its stream: new SSRC and numbering -> rebased on wall time, never earlier
    # than what was already fed (1120 + 160 = 1280)
    clock.now = 1000.5
    agent.datagram_received(rtp(9000, 123456, ssrc=0xC), AGENT_ADDR)
    assert sink.fed[-1][1] == 4000  # 0.5 s after bridge start
    assert agent.rx is not None
    assert agent.rx_ssrc == 0xC


async def test_pause_and_resume_recording_reports_the_span() -> None:
    clock, sink = FakeClock(), CollectingSink()
    caller, _agent, bridge, _, t_agent = await make_bridge(clock, sink)
    for i in range(5):  # 0 .. 80 ms
        caller.datagram_received(rtp(i, 160 * i), CALLER_ADDR)
        clock.now += 0.02
    bridge.pause_recording(clock.now)  # at 100 ms = 800 samples
    for i in range(5, 55):  # one second of audio, relayed but not recorded
        caller.datagram_received(rtp(i, 160 * i), CALLER_ADDR)
        clock.now += 0.02
    bridge.resume_recording(clock.now)  # at 1.1 s = 8800 samples
    caller.datagram_received(rtp(55, 160 * 55), CALLER_ADDR)
    assert len(t_agent.sent) == 56
    assert [f[1] for f in sink.fed] == [0, 160, 320, 480, 640, 8800]
    assert sink.gaps == [(0, 800, 8000, "paused"), (1, 800, 8000, "paused")]


async def test_non_audio_payloads_are_relayed_with_mapped_type_but_not_tapped() -> None:
    clock, sink = FakeClock(), CollectingSink()
    caller, _, bridge, _, t_agent = await make_bridge(clock, sink, dtmf_payload_type=96)
    caller.datagram_received(rtp(1, 0, pt=101, payload=b"\x05\x0a\x00\x00"), CALLER_ADDR)
    caller.datagram_received(rtp(2, 0, pt=13, payload=b"\x40"), CALLER_ADDR)  # comfort noise
    assert [parse_rtp(p).payload_type for p in t_agent.sent] == [96]  # 101 -> 96, CN dropped
    assert sink.fed == []
    bridge.stop(clock.now)
