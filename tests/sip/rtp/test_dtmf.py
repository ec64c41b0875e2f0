"""RFC 4733 telephone-events: payloads, receiver state machine, sender plan, SIPp pcaps, SIP INFO."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.rtp.dtmf import (
    END_TIMEOUT_S,
    DtmfEnded,
    DtmfError,
    DtmfReceiver,
    DtmfStarted,
    TelephoneEvent,
    dtmf_packets,
    parse_sip_info,
    parse_telephone_event,
)
from sip.rtp.packet import parse_rtp

PCAP_DIR = Path("/usr/share/sip-tester")
PCAP_DIGITS = {**{str(d): str(d) for d in range(10)}, "star": "*", "pound": "#"}


def read_pcap_udp_payloads(path: Path) -> list[tuple[float, bytes]]:
    """Tiny pcap reader: global header, records, Ethernet / IPv4 / UDP -> (time, UDP payload)."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nanos = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    assert linktype == 1, "Ethernet captures only"
    out = []
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(endian + "IIII", data, offset)
        offset += 16
        frame = data[offset : offset + incl]
        offset += incl
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:  # UDP
            continue
        udp = ip[ihl:]
        udp_len = struct.unpack_from("!H", udp, 4)[0]
        out.append((sec + frac / (1e9 if nanos else 1e6), bytes(udp[8:udp_len])))
    return out


def wire(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    return TelephoneEvent(event, end, volume, duration).serialize()


def test_payload_layout() -> None:
    # event 5, E=1, volume 10, duration 0x08C0 (2240 samples = 280 ms) as seen in SIPp's pcaps
    assert wire(5, True, 0x08C0) == bytes.fromhex("058A08C0")
    ev = parse_telephone_event(bytes.fromhex("0A0A0140"))
    assert (ev.digit, ev.end, ev.volume, ev.duration) == ("*", False, 10, 320)
    with pytest.raises(DtmfError):
        parse_telephone_event(b"\x05\x0a")


@pytest.mark.parametrize("name", sorted(PCAP_DIGITS))
def test_sipp_pcap_digit_recognised_exactly_once(name: str) -> None:
    rx = DtmfReceiver()
    events = []
    for t, udp in read_pcap_udp_payloads(PCAP_DIR / f"dtmf_2833_{name}.pcap"):
        p = parse_rtp(udp)
        assert p.payload_type == 101
        events += rx.receive(p.timestamp, p.payload, now=t)
    ended = [e for e in events if isinstance(e, DtmfEnded)]
    started = [e for e in events if isinstance(e, DtmfStarted)]
    assert [e.digit for e in ended] == [PCAP_DIGITS[name]]
    assert [e.digit for e in started] == [PCAP_DIGITS[name]]
    # SIPp's capture ends with duration 0x08C0 = 2240 samples (280 ms), end bit set
    assert ended[0].duration == 2240
    assert ended[0].ended_by == "end-bit"


def test_lost_start_packets_end_packet_first() -> None:
    rx = DtmfReceiver()
    events = rx.receive(8000, wire(7, True, 800), now=1.0)
    assert events == [DtmfStarted("7", 8000), DtmfEnded("7", 8000, 800, "end-bit")]
    assert rx.receive(8000, wire(7, True, 800), now=1.001) == []
    assert rx.receive(8000, wire(7, True, 800), now=1.002) == []


def test_long_press_updates_and_new_event_by_timestamp() -> None:
    rx = DtmfReceiver()
    events = []
    for i in range(40):  # 2 s of updates every 50 ms, same timestamp
        events += rx.receive(1000, wire(1, False, 400 * i), now=i * 0.05)
    assert events == [DtmfStarted("1", 1000)]
    # same digit pressed again: a new RTP timestamp is a new event, which ends the previous one
    events = rx.receive(30000, wire(1, False, 0), now=2.0)
    assert events == [DtmfEnded("1", 1000, 400 * 39, "new-event"), DtmfStarted("1", 30000)]


def test_out_of_order_update_does_not_shrink_duration() -> None:
    rx = DtmfReceiver()
    rx.receive(0, wire(3, False, 800), now=0.0)
    rx.receive(0, wire(3, False, 400), now=0.01)  # late packet
    assert rx.receive(0, wire(3, True, 1200), now=0.02)[-1].duration == 1200  # type: ignore[union-attr]


def test_long_duration_event_segments_join() -> None:
    rx = DtmfReceiver()
    events = rx.receive(0, wire(9, False, 0xFFFF), now=0.0)
    # RFC 4733 2.5.1.3: next segment starts at timestamp + 0xFFFF
    events += rx.receive(0xFFFF, wire(9, False, 1000), now=8.2)
    events += rx.receive(0xFFFF, wire(9, True, 2000), now=8.4)
    assert events == [DtmfStarted("9", 0), DtmfEnded("9", 0xFFFF, 0xFFFF + 2000, "end-bit")]


def test_all_end_packets_lost_times_out() -> None:
    rx = DtmfReceiver()
    rx.receive(500, wire(0, False, 160), now=10.0)
    assert rx.get_timer() == pytest.approx(10.0 + END_TIMEOUT_S)
    assert rx.handle_timer(10.1) == []
    assert rx.handle_timer(10.0 + END_TIMEOUT_S) == [DtmfEnded("0", 500, 160, "timeout")]
    assert rx.handle_timer(20.0) == []
    assert rx.get_timer() is None


def test_sender_plan_feeds_receiver_once() -> None:
    plan = dtmf_packets("#", 230)
    offsets = [p.offset_ms for p in plan]
    # start at 0 (marker), updates every 50 ms while < 230, then 3 end packets at 230
    assert offsets == [0, 50, 100, 150, 200, 230, 230, 230]
    assert [p.marker for p in plan] == [True] + [False] * 7
    events = [parse_telephone_event(p.payload) for p in plan]
    assert [e.duration for e in events] == [0, 400, 800, 1200, 1600, 1840, 1840, 1840]
    assert [e.end for e in events] == [False] * 5 + [True] * 3
    rx = DtmfReceiver()
    got = []
    for p in plan:
        got += rx.receive(4242, p.payload, now=p.offset_ms / 1000)
    assert got == [DtmfStarted("#", 4242), DtmfEnded("#", 4242, 1840, "end-bit")]
    assert [p.offset_ms for p in dtmf_packets("1", 100, update_interval_ms=20)][:3] == [0, 20, 40]
    with pytest.raises(DtmfError):
        dtmf_packets("X", 100)


@pytest.mark.parametrize(
    ("ctype", "body", "digit", "duration"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5", 160),
        ("Application/DTMF-Relay; charset=x", b"signal= *\r\nduration = 250", "*", 250),
        ("application/dtmf-relay", b"Signal=#", "#", None),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=100", "#", 100),
        ("application/dtmf", b"5", "5", None),
        ("application/dtmf", b"10\r\n", "*", None),
        ("application/dtmf", b"d", "D", None),
    ],
)
def test_sip_info_bodies(ctype: str, body: bytes, digit: str, duration: int | None) -> None:
    info = parse_sip_info(ctype, body)
    assert (info.digit, info.duration_ms) == (digit, duration)


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/dtmf-relay", b"Duration=160"),
        ("application/dtmf-relay", b"Signal=Z"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=long"),
        ("application/dtmf", b""),
        ("application/dtmf", b"\xff"),
        ("text/plain", b"5"),
    ],
)
def test_bad_sip_info_bodies(ctype: str, body: bytes) -> None:
    with pytest.raises(DtmfError):
        parse_sip_info(ctype, body)


@settings(max_examples=150, deadline=None)
@given(
    digit=st.sampled_from(list("0123456789*#ABCD")),
    duration_ms=st.integers(40, 2000),
    keep=st.lists(st.booleans(), min_size=50, max_size=50),
    swap=st.integers(0, 48),
)
def test_any_loss_or_local_reordering_still_gives_one_digit(
    digit: str, duration_ms: int, keep: list[bool], swap: int
) -> None:
    plan = dtmf_packets(digit, duration_ms)
    survivors = [p for i, p in enumerate(plan) if keep[i % len(keep)]] or plan[-1:]
    if swap + 1 < len(survivors):  # one adjacent pair arrives swapped
        survivors[swap], survivors[swap + 1] = survivors[swap + 1], survivors[swap]
    rx = DtmfReceiver()
    events = []
    for p in survivors:
        events += rx.receive(123, p.payload, now=p.offset_ms / 1000)
    events += rx.handle_timer(duration_ms / 1000 + 10)
    assert [type(e) for e in events] == [DtmfStarted, DtmfEnded]
    assert {e.digit for e in events} == {digit}
    ended = events[1]
    assert isinstance(ended, DtmfEnded)
    # the duration never exceeds the true one, and is exact whenever an end packet survived
    assert ended.duration <= duration_ms * 8
    if any(parse_telephone_event(p.payload).end for p in survivors):
        assert ended.duration == duration_ms * 8
