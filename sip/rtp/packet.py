"""RTP data packets (RFC 3550 section 5.1).

How this works: `parse_rtp` turns one UDP payload into an immutable `RtpPacket`, `RtpPacket.serialize`
turns it back into bytes. Anything that is not a well-formed RTP version-2 packet raises `RtpError`
and nothing else, so a socket callback needs exactly one ``except``. The common case (no CSRC, no
header extension, no padding) costs one ``struct.unpack_from`` of the fixed 12-byte header; the
relay path in ``sip.media`` does not even build a packet object, it reads and rewrites the header in
place with `read_header` / `rewrite_header`.

Wire format (RFC 3550 5.1)::

     0                   1                   2                   3
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    |                           timestamp                           |
    |           synchronization source (SSRC) identifier            |
    |            contributing source (CSRC) identifiers (CC x 32)   |
    | [header extension: profile(16) length-in-words(16) data...]    |
    | payload ... [padding ... pad-count(8)]                        |
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
#: The fixed header (RFC 3550 5.1): everything up to and including the SSRC.
FIXED_HEADER_LEN = 12
#: 4-bit CC field: at most 15 contributing sources (RFC 3550 5.1).
MAX_CSRC = 15
#: 7-bit payload type field.
MAX_PAYLOAD_TYPE = 127

_FIXED = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """The bytes are not a well-formed RTP (or RTCP) packet: the peer misbehaved.

    Raised by the parsers for truncated packets, a version other than 2, CSRC or extension lengths
    that run past the end, or a padding count that does not fit. You do NOT get it for an
    unknown payload type or an unexpected SSRC: those are valid packets and policy decides.
    """


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """A header extension (RFC 3550 5.3.1): 16 profile-defined bits and whole 32-bit words."""

    profile: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. ``padding`` counts every padding byte, including the final count byte."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    def serialize(self) -> bytes:
        """Wire bytes; raises `RtpError` if a field does not fit its width (our caller's bug)."""
        if not 0 <= self.payload_type <= MAX_PAYLOAD_TYPE:
            raise RtpError(f"payload type {self.payload_type} does not fit 7 bits")
        if len(self.csrcs) > MAX_CSRC:
            raise RtpError(f"{len(self.csrcs)} CSRCs, at most {MAX_CSRC}")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding {self.padding} does not fit one count byte")
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        try:
            parts = [
                _FIXED.pack(b0, b1, self.sequence, self.timestamp, self.ssrc),
                struct.pack(f"!{len(self.csrcs)}I", *self.csrcs),
            ]
        except struct.error as exc:
            raise RtpError(f"header field out of range: {exc}") from exc
        if self.extension is not None:
            ext = self.extension
            if len(ext.data) % 4 or len(ext.data) // 4 > 0xFFFF or not 0 <= ext.profile <= 0xFFFF:
                raise RtpError("extension data must be whole 32-bit words, profile 16 bits")
            parts.append(_EXT_HEADER.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet (RFC 3550 5.1); raise `RtpError` if it is malformed."""
    size = len(data)
    if size < FIXED_HEADER_LEN:
        raise RtpError(f"{size} bytes is shorter than the 12-byte RTP header")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    if not b0 & 0x3F:  # hot path: no padding, no extension, no CSRC
        return RtpPacket(b1 & 0x7F, seq, ts, ssrc, bytes(data[FIXED_HEADER_LEN:]), bool(b1 & 0x80))
    offset = FIXED_HEADER_LEN
    cc = b0 & 0x0F
    csrcs: tuple[int, ...] = ()
    if cc:
        if size < offset + 4 * cc:
            raise RtpError(f"CSRC count {cc} runs past the end of a {size}-byte packet")
        csrcs = struct.unpack_from(f"!{cc}I", data, offset)
        offset += 4 * cc
    extension = None
    if b0 & 0x10:
        if size < offset + 4:
            raise RtpError("header extension flag set but no extension header")
        profile, words = _EXT_HEADER.unpack_from(data, offset)
        offset += 4
        if size < offset + 4 * words:
            raise RtpError(f"header extension of {words} words runs past the end")
        extension = RtpExtension(profile, bytes(data[offset : offset + 4 * words]))
        offset += 4 * words
    end = size
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        # RFC 3550 5.1: the last octet counts the padding octets *including itself*, so 0 is invalid.
        if padding == 0 or padding > size - offset:
            raise RtpError(f"padding count {padding} does not fit the packet")
        end = size - padding
    return RtpPacket(
        b1 & 0x7F,
        seq,
        ts,
        ssrc,
        bytes(data[offset:end]),
        bool(b1 & 0x80),
        csrcs,
        extension,
        padding,
    )


def payload_offset(data: bytes) -> int:
    """Where the payload starts, for the relay path that does not build a packet object.

    Returns -1 for a packet `parse_rtp` would reject for its header (padding is not checked
    here: callers that care about padding use `parse_rtp`).
    """
    size = len(data)
    if size < FIXED_HEADER_LEN or data[0] >> 6 != RTP_VERSION:
        return -1
    b0 = data[0]
    offset = FIXED_HEADER_LEN + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if size < offset + 4:
            return -1
        offset += 4 + 4 * _EXT_HEADER.unpack_from(data, offset)[1]
    return offset if offset <= size else -1


def read_header(data: bytes) -> tuple[int, int, int]:
    """(sequence, timestamp, ssrc) of a packet already known to be at least 12 bytes long."""
    seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
    return seq, ts, ssrc


def rewrite_header(buf: bytearray, sequence: int, timestamp: int, ssrc: int, marker: bool) -> None:
    """Rewrite sequence, timestamp, SSRC and the marker bit of a packet in place (relay path)."""
    _SEQ_TS_SSRC.pack_into(buf, 2, sequence, timestamp, ssrc)
    if marker:
        buf[1] |= 0x80
