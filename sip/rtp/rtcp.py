"""RTCP sender/receiver reports, SDES and BYE (RFC 3550 section 6).

How this works: each packet type is a frozen dataclass with ``serialize()``; `parse_rtcp` splits a
compound datagram (RFC 3550 6.1) into a list of them and raises `RtcpError` (an `RtpError`) for
anything malformed. Packet types we do not interpret (APP, feedback, XR) come back as `RtcpUnknown`
so a compound packet still parses. `build_compound` assembles what RFC 3550 6.1 requires of every
compound packet we send: SR or RR first, then SDES with our CNAME, optionally BYE last.

Round-trip time (RFC 3550 6.4.1): the report block echoes the middle 32 bits of the NTP timestamp of
the last SR it saw (LSR) and the delay since then (DLSR, 1/65536 s units), so RTT = A - LSR - DLSR
where A is the arrival time of the report in the same middle-32-bit format: `round_trip_s`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sip.rtp.packet import RtpError

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
SDES_CNAME = 1
#: 5-bit RC/SC field: at most 31 report blocks or BYE sources per packet (RFC 3550 6.4.1).
MAX_COUNT = 31
#: Seconds between the NTP epoch (1900) and the Unix epoch (1970), for `ntp_timestamp`.
NTP_UNIX_OFFSET_S = 2_208_988_800

_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IIIIII")


class RtcpError(RtpError):
    """The bytes are not a well-formed RTCP compound packet (RFC 3550 6.1, A.2)."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 6.4.1 reception report block."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    def serialize(self) -> bytes:
        lost24 = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost24,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        body = struct.pack(
            "!IQIII",
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        ) + b"".join(r.serialize() for r in self.reports)
        return _wrap(PT_SR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(r.serialize() for r in self.reports)
        return _wrap(PT_RR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...]  # (item type, value), e.g. (SDES_CNAME, b"acd@host")

    @property
    def cname(self) -> bytes | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...]

    def serialize(self) -> bytes:
        body = bytearray()
        for chunk in self.chunks:
            body += struct.pack("!I", chunk.ssrc)
            for kind, value in chunk.items:
                if len(value) > 255:
                    raise RtcpError("SDES item longer than 255 bytes")
                body += bytes((kind, len(value))) + value
            # RFC 3550 6.5: a null item ends the list, then pad the chunk to a 32-bit boundary
            body += b"\x00"
            body += bytes(-len(body) % 4)
        return _wrap(PT_SDES, len(self.chunks), bytes(body))


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: bytes = b""

    def serialize(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            if len(self.reason) > 255:
                raise RtcpError("BYE reason longer than 255 bytes")
            body += bytes((len(self.reason),)) + self.reason
            body += bytes(-len(body) % 4)
        return _wrap(PT_BYE, len(self.ssrcs), body)


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        return _wrap(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


def _wrap(packet_type: int, count: int, body: bytes) -> bytes:
    if count > MAX_COUNT:
        raise RtcpError(f"{count} items, at most {MAX_COUNT} per RTCP packet")
    if len(body) % 4:
        raise RtcpError("RTCP body is not a whole number of 32-bit words")
    # RFC 3550 6.4.1: length is in 32-bit words minus one, header included
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def _parse_report_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < offset + 24 * count:
        raise RtcpError(f"{count} report blocks do not fit the packet")
    blocks = []
    for i in range(count):
        ssrc, word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(body, offset + 24 * i)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks = []
    offset = 0
    for _ in range(count):
        if len(body) < offset + 4:
            raise RtcpError("SDES chunk truncated")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        items = []
        while True:
            if offset >= len(body):
                raise RtcpError("SDES item list not terminated")
            kind = body[offset]
            if kind == 0:
                offset += 1
                offset += -offset % 4
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtcpError("SDES item runs past the end")
            length = body[offset + 1]
            items.append((kind, bytes(body[offset + 2 : offset + 2 + length])))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    if len(body) < 4 * count:
        raise RtcpError("BYE source list truncated")
    ssrcs = struct.unpack_from(f"!{count}I", body, 0)
    reason = b""
    if len(body) > 4 * count:
        length = body[4 * count]
        if 4 * count + 1 + length > len(body):
            raise RtcpError("BYE reason runs past the end")
        reason = bytes(body[4 * count + 1 : 4 * count + 1 + length])
    return Bye(tuple(ssrcs), reason)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split and parse a compound RTCP packet (RFC 3550 6.1 and the A.2 validity checks)."""
    packets: list[RtcpPacket] = []
    offset = 0
    size = len(data)
    if size < 4:
        raise RtcpError(f"{size} bytes is shorter than an RTCP header")
    while offset < size:
        if size - offset < 4:
            raise RtcpError("trailing bytes after the last RTCP packet")
        b0, packet_type, words = _HEADER.unpack_from(data, offset)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6}, expected 2")
        end = offset + 4 * (words + 1)
        if end > size:
            raise RtcpError("RTCP length field runs past the end of the datagram")
        body = data[offset + 4 : end]
        if b0 & 0x20:
            # A.2: only the last packet of a compound may be padded
            if end != size:
                raise RtcpError("padding on an RTCP packet that is not the last")
            pad = data[end - 1]
            if pad == 0 or pad > len(body):
                raise RtcpError(f"RTCP padding count {pad} does not fit")
            body = body[: len(body) - pad]
        count = b0 & 0x1F
        if not packets and packet_type not in (PT_SR, PT_RR):
            raise RtcpError("a compound RTCP packet must start with SR or RR (RFC 3550 6.1)")
        packets.append(_parse_one(packet_type, count, bytes(body)))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == PT_SR:
        if len(body) < 24:
            raise RtcpError("sender report shorter than its sender info")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body, 0)
        return SenderReport(
            ssrc, ntp, rtp_ts, packets, octets, _parse_report_blocks(body, 24, count)
        )
    if packet_type == PT_RR:
        if len(body) < 4:
            raise RtcpError("receiver report without SSRC")
        (ssrc,) = struct.unpack_from("!I", body, 0)
        return ReceiverReport(ssrc, _parse_report_blocks(body, 4, count))
    if packet_type == PT_SDES:
        return _parse_sdes(body, count)
    if packet_type == PT_BYE:
        return _parse_bye(body, count)
    return RtcpUnknown(packet_type, count, body)


def build_compound(
    report: SenderReport | ReceiverReport, cname: bytes, bye: Bye | None = None
) -> bytes:
    """SR/RR, then SDES CNAME, then an optional BYE: the compound RFC 3550 6.1 requires."""
    sdes = SourceDescription((SdesChunk(report.ssrc, ((SDES_CNAME, cname),)),))
    parts = [report.serialize(), sdes.serialize()]
    if bye is not None:
        parts.append(bye.serialize())
    return b"".join(parts)


def ntp_timestamp(wall_s: float) -> int:
    """64-bit NTP timestamp (RFC 3550 4) of a Unix wall-clock time in seconds."""
    seconds = wall_s + NTP_UNIX_OFFSET_S
    whole = int(seconds)
    frac = int((seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return ((whole & 0xFFFFFFFF) << 32) | frac


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits (16.16 fixed point) used by LSR and for the RTT arrival time."""
    return (ntp >> 16) & 0xFFFFFFFF


def dlsr_units(delay_s: float) -> int:
    """A delay in seconds as DLSR units of 1/65536 s."""
    return int(delay_s * 65536) & 0xFFFFFFFF


def round_trip_s(arrival_middle32: int, lsr: int, dlsr: int) -> float | None:
    """RTT = A - LSR - DLSR (RFC 3550 6.4.1), or None if the block saw no SR yet (LSR = 0)."""
    if lsr == 0:
        return None
    rtt = (arrival_middle32 - lsr - dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:  # clocks disagree: a negative RTT says nothing
        return 0.0
    return rtt / 65536.0


def report_block(
    ssrc: int,
    fraction_lost: int,
    cumulative_lost: int,
    highest_sequence: int,
    jitter: int,
    lsr: int = 0,
    dlsr: int = 0,
) -> ReportBlock:
    """Convenience builder with the RFC 3550 6.4.1 clamps applied."""
    lost = max(-0x800000, min(0x7FFFFF, cumulative_lost))
    return ReportBlock(ssrc, fraction_lost & 0xFF, lost, highest_sequence, jitter, lsr, dlsr)


def reports_of(packets: Sequence[RtcpPacket]) -> list[ReportBlock]:
    """Every report block in a parsed compound packet."""
    blocks: list[ReportBlock] = []
    for p in packets:
        if isinstance(p, SenderReport | ReceiverReport):
            blocks.extend(p.reports)
    return blocks
