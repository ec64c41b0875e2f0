"""One continuous outbound stream across prompt -> music on hold -> bridge -> prompt switches."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.rtp.packet import RtpError, RtpPacket, parse_rtp
from sip.rtp.stream import OutboundStream


def test_local_frames_then_relay_then_local_again() -> None:
    out = OutboundStream(ssrc=0xCAFE, first_sequence=65534, first_timestamp=2**32 - 320)
    sent = []
    # prompt: 3 frames at 20 ms
    for i in range(3):
        sent.append(parse_rtp(out.send(0, b"p" * 160, now=10.0 + 0.02 * i)))
    # the first packet of the stream has the marker; timestamps advance 160 per frame and wrap
    assert [p.sequence for p in sent] == [65534, 65535, 0]
    assert [p.timestamp for p in sent] == [2**32 - 320, 2**32 - 160, 0]
    assert [p.marker for p in sent] == [True, False, False]

    # bridge starts 100 ms after the last prompt frame (sent at 10.04)
    out.begin_source(now=10.10)
    relayed = []
    for i, (seq, ts) in enumerate([(500, 90000), (501, 90160), (503, 90480), (502, 90320)]):
        raw = RtpPacket(0, seq, ts, 0xBEEF, b"r" * 160).serialize()
        relayed.append(parse_rtp(bytes(out.relay(raw, now=10.14 + 0.02 * i))))
    first = relayed[0]
    # continuity: same SSRC, next sequence number, timestamp advanced by the elapsed wall time:
    # the first relayed packet goes out at 10.14, 0.10 s after 10.04 -> 800 samples after ts 0
    assert first.ssrc == 0xCAFE
    assert first.sequence == 1
    assert first.timestamp == 800
    assert first.marker
    # the relayed leg's own gap and reordering survive the offsets (503 before 502)
    assert [p.sequence for p in relayed] == [1, 2, 4, 3]
    assert [p.timestamp for p in relayed] == [800, 960, 1280, 1120]
    assert [p.marker for p in relayed] == [True, False, False, False]

    # back to music on hold 60 ms after the last relayed packet in order (503 -> our seq 4, ts 1280,
    # sent at 10.18); the late packet (our seq 3) did not pull the state back
    out.begin_source(now=10.24)
    moh = parse_rtp(out.send(0, b"m" * 160, now=10.24))
    assert moh.sequence == 5
    assert moh.marker
    assert moh.ssrc == 0xCAFE
    assert moh.timestamp == 1280 + round(0.06 * 8000)
    nxt = parse_rtp(out.send(0, b"m" * 160, now=10.26))
    assert (nxt.sequence, nxt.timestamp, nxt.marker) == (6, moh.timestamp + 160, False)
    assert out.packets_sent == 3 + 4 + 2


def test_immediate_switch_still_advances_one_frame() -> None:
    out = OutboundStream(1, 0, 0)
    out.send(0, b"a" * 160, now=5.0)
    out.begin_source(now=5.0)
    p = parse_rtp(out.send(0, b"b" * 160, now=5.0))
    assert p.timestamp == 160
    assert p.marker


def test_relayed_ssrc_change_is_a_new_source() -> None:
    out = OutboundStream(7, 100, 1000)
    a = parse_rtp(bytes(out.relay(RtpPacket(0, 10, 5000, 1, b"x").serialize(), now=1.0)))
    b = parse_rtp(bytes(out.relay(RtpPacket(0, 11, 5160, 1, b"x").serialize(), now=1.02)))
    # the far end restarted with a new SSRC and random numbering 40 ms later
    c = parse_rtp(bytes(out.relay(RtpPacket(0, 9000, 123, 2, b"x").serialize(), now=1.06)))
    assert [(p.sequence, p.timestamp, p.marker) for p in (a, b, c)] == [
        (100, 1000, True),
        (101, 1160, False),
        (102, 1160 + 320, True),  # 40 ms after the previous packet
    ]


def test_dtmf_packets_share_a_timestamp() -> None:
    out = OutboundStream(3, 0, 0)
    out.send(0, b"a" * 160, now=0.0)
    start = out.next_timestamp(now=0.02)
    p1 = parse_rtp(
        out.send(101, b"\x05\x0a\x00\x00", now=0.02, samples=0, timestamp=start, marker=True)
    )
    p2 = parse_rtp(out.send(101, b"\x05\x8a\x03\x20", now=0.12, samples=800, timestamp=start))
    audio = parse_rtp(out.send(0, b"a" * 160, now=0.14))
    assert p1.timestamp == p2.timestamp == 160
    assert p1.marker
    assert not p2.marker
    assert audio.timestamp == 160 + 800
    assert [p1.sequence, p2.sequence, audio.sequence] == [1, 2, 3]


def test_relay_rejects_non_rtp() -> None:
    with pytest.raises(RtpError):
        OutboundStream(1, 0, 0).relay(b"\x00" * 20, now=0.0)


@settings(max_examples=100)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["local", "relay_a", "relay_b", "switch"]), st.integers(0, 3)),
        min_size=1,
        max_size=60,
    ),
    first_seq=st.integers(0, 0xFFFF),
    first_ts=st.integers(0, 0xFFFFFFFF),
)
def test_any_mix_of_sources_is_one_continuous_stream(
    ops: list[tuple[str, int]], first_seq: int, first_ts: int
) -> None:
    out = OutboundStream(0x5151, first_seq, first_ts)
    now = 100.0
    # two relayed far ends with their own numbering, always in order here
    far = {"relay_a": [0xA, 65530, 2**32 - 500], "relay_b": [0xB, 10, 7]}
    sent: list[tuple[RtpPacket, bool]] = []  # (packet, marker expected)
    expect_marker = True
    current = "local"
    for op, pause_frames in ops:
        now += 0.02 * (1 + pause_frames)
        if op == "switch":
            out.begin_source(now)
            expect_marker = True
            continue
        if op == "local":
            raw = out.send(0, b"l" * 160, now)
        else:
            ssrc, seq, ts = far[op]
            far[op] = [ssrc, (seq + 1) % 65536, (ts + 160) % 2**32]
            raw = bytes(out.relay(RtpPacket(0, seq, ts, ssrc, b"r" * 160).serialize(), now))
        # a relayed stream whose SSRC differs from what we relayed just before starts a talkspurt
        if op != current and op.startswith("relay"):
            expect_marker = True
        current = op
        sent.append((parse_rtp(raw), expect_marker))
        expect_marker = False
    packets = [p for p, _ in sent]
    assert {p.ssrc for p in packets} <= {0x5151}
    assert [p.sequence for p in packets] == [(first_seq + i) % 65536 for i in range(len(packets))]
    steps = [(b.timestamp - a.timestamp) % 2**32 for a, b in itertools.pairwise(packets)]
    assert all(160 <= s < 2**31 for s in steps)  # forward by at least one frame, never back
    assert [p.marker for p in packets] == [m for _, m in sent]
