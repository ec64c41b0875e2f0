"""RTCP SR/RR/SDES/BYE (RFC 3550 6): wire layout, compound packets, RTT, malformed input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    RtcpUnknown,
    SenderReport,
    SourceDescription,
    build_compound,
    dlsr_units,
    ntp_middle32,
    ntp_timestamp,
    parse_rtcp,
    reports_of,
    round_trip_s,
)
from sip.rtp.stats import ReceiverStats


def test_receiver_report_wire_layout() -> None:
    block = ReportBlock(0xAABBCCDD, 76, 3, 10, 4, 0x12345678, 0x00010000)
    wire = ReceiverReport(0x11223344, (block,)).serialize()
    # V=2 RC=1 -> 0x81, PT 201 = 0xC9, length 8 words - 1 = 7
    assert wire == bytes.fromhex(
        "81C90007 11223344 AABBCCDD 4C000003 0000000A 00000004 12345678 00010000"
    )
    assert parse_rtcp(wire) == [ReceiverReport(0x11223344, (block,))]


def test_negative_cumulative_lost_is_24_bit_twos_complement() -> None:
    block = ReportBlock(1, 0, -1, 0, 0, 0, 0)
    wire = ReceiverReport(2, (block,)).serialize()
    assert wire[12:16] == bytes.fromhex("00FFFFFF")
    assert reports_of(parse_rtcp(wire))[0].cumulative_lost == -1


def test_compound_sr_sdes_bye_roundtrip() -> None:
    sr = SenderReport(
        0x01020304,
        ntp_timestamp(1_700_000_000.5),
        123456,
        50,
        8000,
        (ReportBlock(9, 25, 4, 65538, 4, 0, 0), ReportBlock(10, 0, 0, 7, 0, 1, 2)),
    )
    wire = build_compound(sr, b"acd@127.0.0.1", Bye((0x01020304,), b"call ended"))
    packets = parse_rtcp(wire)
    assert packets[0] == sr
    assert isinstance(packets[1], SourceDescription)
    assert packets[1].chunks[0].ssrc == 0x01020304
    assert packets[1].chunks[0].cname == b"acd@127.0.0.1"
    assert packets[2] == Bye((0x01020304,), b"call ended")
    assert len(wire) % 4 == 0


def test_ntp_timestamp_and_middle_bits() -> None:
    # Unix 0 is NTP 2208988800 s; .5 s is 0x80000000 in the fraction
    ntp = ntp_timestamp(0.5)
    assert ntp == (2208988800 << 32) | 0x80000000
    assert ntp_middle32(ntp) == ((2208988800 & 0xFFFF) << 16) | 0x8000


def test_round_trip_time_rfc3550_example() -> None:
    # RFC 3550 6.4.1 figure: A = 0xb710:8000 (46864.500 s), DLSR = 0x0005:4000 (5.250 s),
    # LSR = 0xb705:2000 (46853.125 s) -> 46864.5 - 5.25 - 46853.125 = 6.125 s
    assert round_trip_s(0xB7108000, 0xB7052000, 0x00054000) == 6.125
    assert round_trip_s(0xB7108000, 0, 0) is None
    assert dlsr_units(5.25) == 0x00054000


def test_rtt_from_our_own_sr_and_a_peer_report() -> None:
    sr_wall = 1_700_000_000.0
    lsr = ntp_middle32(ntp_timestamp(sr_wall))
    # peer holds the SR 250 ms, network is 50 ms each way: report arrives 350 ms after the SR
    arrival = ntp_middle32(ntp_timestamp(sr_wall + 0.35))
    rtt = round_trip_s(arrival, lsr, dlsr_units(0.25))
    assert rtt == pytest.approx(0.1, abs=2 / 65536)


def test_report_from_receiver_stats_goes_on_the_wire() -> None:
    s = ReceiverStats(0)
    for seq in [0, 1, 2, 3, 5, 6, 9, 10]:
        s.update_sequence(seq)
    r = s.report()
    block = ReportBlock(7, r.fraction_lost, r.cumulative_lost, r.extended_highest_sequence, 0, 0, 0)
    parsed = reports_of(parse_rtcp(ReceiverReport(1, (block,)).serialize()))[0]
    # see test_rtp_stats: 3 of 10 lost -> 76/256
    assert (parsed.fraction_lost, parsed.cumulative_lost, parsed.highest_sequence) == (76, 3, 10)


def test_unknown_packet_types_are_kept() -> None:
    rr = ReceiverReport(1).serialize()
    app = bytes.fromhex("80CC0002 00000001 6E616D65")  # APP, name "name"
    packets = parse_rtcp(rr + app)
    assert packets[1] == RtcpUnknown(204, 0, bytes.fromhex("00000001 6E616D65"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("81C9"),
        bytes.fromhex("41C90001 00000001"),  # version 1
        bytes.fromhex("81C90007 11223344"),  # length runs past the end
        bytes.fromhex("81CA0001 00000001"),  # compound starting with SDES
        bytes.fromhex("81C90001 00000001"),  # RC=1 but no report block
        bytes.fromhex("80C90001 00000001 00"),  # trailing byte
        bytes.fromhex("A0C90001 00000000"),  # padding count 0
        bytes.fromhex("80C90001 00000001 81CA0001 00000001"),  # SDES chunk without terminator
    ],
)
def test_malformed_rtcp_raises(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_rtcp(data)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_parse_or_raise(data: bytes) -> None:
    with contextlib.suppress(RtcpError):
        parse_rtcp(data)


@settings(max_examples=300)
@given(st.binary(max_size=100))
def test_arbitrary_body_after_valid_header_parse_or_raise(body: bytes) -> None:
    body = body[: len(body) // 4 * 4]
    for pt in (200, 201, 202, 203):
        for count in (0, 1, 2, 31):
            data = bytes((0x80 | count, pt)) + (len(body) // 4).to_bytes(2, "big") + body
            with contextlib.suppress(RtcpError):
                parse_rtcp(ReceiverReport(5).serialize() + data)
