"""RTP packet parse/serialize (RFC 3550 5.1): exact wire layout, malformed input, fuzz, round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.rtp.packet import (
    RtpError,
    RtpExtension,
    RtpPacket,
    parse_rtp,
    payload_offset,
    read_header,
    rewrite_header,
)


def test_fixed_header_fields_read_from_hand_built_bytes() -> None:
    # V=2 P=0 X=0 CC=0 | M=1 PT=0 | seq 0x1234 | ts 0xDEADBEEF | ssrc 0x01020304 | payload "abc"
    data = bytes.fromhex("80 80 1234 DEADBEEF 01020304") + b"abc"
    p = parse_rtp(data)
    assert (p.payload_type, p.marker, p.sequence) == (0, True, 0x1234)
    assert (p.timestamp, p.ssrc, p.payload) == (0xDEADBEEF, 0x01020304, b"abc")
    assert p.csrcs == ()
    assert p.extension is None
    assert p.padding == 0
    assert p.serialize() == data


def test_csrc_extension_and_padding() -> None:
    # V=2 P=1 X=1 CC=2 -> 0xB2; PT 8 no marker; 2 CSRCs; extension profile 0xBEDE, 1 word;
    # payload 2 bytes; 3 padding bytes ending with count 3
    data = (
        bytes.fromhex("B2 08 0001 00000010 0000000A")
        + bytes.fromhex("00000001 00000002")
        + bytes.fromhex("BEDE 0001 11223344")
        + b"\x55\x66"
        + b"\x00\x00\x03"
    )
    p = parse_rtp(data)
    assert p.payload_type == 8
    assert not p.marker
    assert p.csrcs == (1, 2)
    assert p.extension == RtpExtension(0xBEDE, bytes.fromhex("11223344"))
    assert p.payload == b"\x55\x66"
    assert p.padding == 3
    assert p.serialize() == data
    assert payload_offset(data) == 12 + 8 + 8


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (bytes.fromhex("80 00 0001 00000000 000000"), "11 bytes"),
        (bytes.fromhex("40 00 0001 00000000 00000000"), "version 1"),
        (bytes.fromhex("00 00 0001 00000000 00000000"), "version 0"),
        (bytes.fromhex("83 00 0001 00000000 00000000 00000001"), "3 CSRC declared, 1 present"),
        (bytes.fromhex("90 00 0001 00000000 00000000 BEDE"), "extension header truncated"),
        (bytes.fromhex("90 00 0001 00000000 00000000 BEDE0002 00000000"), "extension overruns"),
        (bytes.fromhex("A0 00 0001 00000000 00000000 AA00"), "padding count 0"),
        (bytes.fromhex("A0 00 0001 00000000 00000000 AA05"), "padding longer than payload"),
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes, why: str) -> None:
    with pytest.raises(RtpError):
        parse_rtp(data)


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_parse_or_raise_rtp_error(data: bytes) -> None:
    try:
        p = parse_rtp(data)
    except RtpError:
        return
    # whatever parses re-serializes to the very same bytes (padding content aside)
    again = p.serialize()
    if p.padding:
        assert again[: -p.padding] == data[: -p.padding]
    else:
        assert again == data


@settings(max_examples=200)
@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    ext=st.none()
    | st.builds(
        RtpExtension,
        st.integers(0, 0xFFFF),
        st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4]),
    ),
    padding=st.integers(0, 255),
)
def test_roundtrip(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrcs: tuple[int, ...],
    ext: RtpExtension | None,
    padding: int,
) -> None:
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrcs, ext, padding)
    assert parse_rtp(p.serialize()) == p


def test_serialize_rejects_fields_that_do_not_fit() -> None:
    with pytest.raises(RtpError):
        RtpPacket(128, 0, 0, 0, b"").serialize()
    with pytest.raises(RtpError):
        RtpPacket(0, 0x10000, 0, 0, b"").serialize()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, b"", csrcs=tuple(range(16))).serialize()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, b"", extension=RtpExtension(1, b"abc")).serialize()


def test_rewrite_header_in_place() -> None:
    buf = bytearray(RtpPacket(0, 7, 1000, 0xAAAA, b"x" * 160).serialize())
    rewrite_header(buf, 65535, 0xFFFFFFFF, 0x12345678, marker=True)
    assert read_header(bytes(buf)) == (65535, 0xFFFFFFFF, 0x12345678)
    p = parse_rtp(bytes(buf))
    assert p.marker
    assert p.payload == b"x" * 160
    assert p.payload_type == 0
