"""One continuous outbound RTP stream per leg, whatever feeds it (RFC 3550 5.1, 8.2).

How this works: the far end of a leg must see ONE stream: one SSRC, sequence numbers that go up by
one, timestamps that follow real time. Our media for a leg changes source several times (a prompt,
music on hold, then the other leg of a bridge), so `OutboundStream` owns our SSRC, next sequence
number and timestamp and stamps every packet we send on the leg:

* locally generated frames (prompts, music, DTMF) go through `send`, which numbers them and
  advances the timestamp by the previous frame's sample count;
* relayed packets go through `relay`, which rewrites sequence, timestamp and SSRC with two offsets
  fixed when that source starts (so the far end still sees the relayed leg's own loss and
  reordering as gaps in *our* sequence numbers, which keeps its RTCP statistics honest).

`begin_source(now)` marks a switch. The next packet then gets a timestamp advanced by the wall time
elapsed since our last packet (at least one frame, so timestamps never repeat), and the marker bit,
which RFC 3551 4.1 asks for at the start of a talkspurt. A relayed stream whose SSRC changes (the
far end restarted its stream) is treated as a switch too.
"""

from __future__ import annotations

import struct

from sip.rtp.packet import FIXED_HEADER_LEN, RtpError

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
#: 20 ms at 8 kHz: the frame size we assume for relayed packets (the ptime every G.711 peer uses).
DEFAULT_FRAME_SAMPLES = 160

_HEADER_V2 = 0x80
_SEQ_TS_SSRC = struct.Struct("!HII")
_unpack_seq_ts_ssrc = _SEQ_TS_SSRC.unpack_from
_pack_seq_ts_ssrc = _SEQ_TS_SSRC.pack_into


class OutboundStream:
    """Sequence, timestamp and SSRC state of what we send on one leg."""

    __slots__ = (
        "_last_samples",
        "_last_sent_s",
        "_last_ts",
        "_next_seq",
        "_pending",
        "_seq_offset",
        "_src_ssrc",
        "_ts_offset",
        "clock_rate",
        "octets_sent",
        "packets_sent",
        "ssrc",
    )

    def __init__(
        self, ssrc: int, first_sequence: int, first_timestamp: int, clock_rate: int = 8000
    ) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF
        self.clock_rate = clock_rate
        self._next_seq = first_sequence % SEQ_MOD
        # pretend a zero-length "packet" just before the first timestamp
        self._last_ts = first_timestamp % TS_MOD
        self._last_samples = 0
        self._last_sent_s: float | None = None
        self._pending = True  # the first packet of a stream carries the marker bit
        self._src_ssrc: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self.packets_sent = 0
        self.octets_sent = 0

    @property
    def next_sequence(self) -> int:
        return self._next_seq

    @property
    def last_timestamp(self) -> int:
        return self._last_ts

    def begin_source(self, now: float) -> None:
        """The next packet starts a new source (prompt, music, bridge): continuity + marker."""
        del now  # the elapsed time is measured when the next packet goes out
        self._pending = True
        self._src_ssrc = None

    def next_timestamp(self, now: float) -> int:
        """The timestamp the next locally generated frame will carry (does not commit)."""
        advance = self._last_samples
        if self._pending and self._last_sent_s is not None:
            elapsed = round((now - self._last_sent_s) * self.clock_rate)
            advance = max(elapsed, self._last_samples)
        return (self._last_ts + advance) % TS_MOD

    def send(
        self,
        payload_type: int,
        payload: bytes,
        now: float,
        samples: int = DEFAULT_FRAME_SAMPLES,
        *,
        timestamp: int | None = None,
        marker: bool = False,
    ) -> bytes:
        """Stamp one locally generated packet; ``samples`` is how much media time it covers.

        Pass ``timestamp`` for packets that must share one (RFC 4733 events use the start time of
        the key press for every packet of it), with ``samples=0`` until the last one.
        """
        ts = self.next_timestamp(now) if timestamp is None else timestamp % TS_MOD
        marker = marker or self._pending
        header = (
            bytes((_HEADER_V2, (payload_type & 0x7F) | (0x80 if marker else 0)))
            + self._next_seq.to_bytes(2, "big")
            + ts.to_bytes(4, "big")
            + self.ssrc.to_bytes(4, "big")
        )
        self._pending = False
        self._src_ssrc = None
        self._next_seq = (self._next_seq + 1) % SEQ_MOD
        self._last_ts = ts
        self._last_samples = samples
        self._last_sent_s = now
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return header + payload

    def relay(self, data: bytes, now: float) -> bytearray:
        """Rewrite a packet received on the other leg so it continues our stream.

        Raises `RtpError` for a packet shorter than the RTP header or not version 2.
        """
        if len(data) < FIXED_HEADER_LEN or data[0] & 0xC0 != 0x80:
            raise RtpError("not an RTP packet")
        seq, ts, ssrc = _unpack_seq_ts_ssrc(data, 2)
        buf = bytearray(data)
        self.rewrite(buf, seq, ts, ssrc, now)
        return buf

    def rewrite(self, buf: bytearray, seq: int, ts: int, ssrc: int, now: float) -> None:
        """`relay` for a caller that already validated and unpacked the header (the bridge)."""
        if self._pending or ssrc != self._src_ssrc:
            self._start_relayed_source(seq, ts, ssrc, now)
            buf[1] |= 0x80  # marker: a new talkspurt for the far end (RFC 3551 4.1)
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        _pack_seq_ts_ssrc(buf, 2, out_seq, out_ts, self.ssrc)
        # only move forward: a reordered (late) packet must not pull our state back
        if (out_seq - self._next_seq) & 0xFFFF < 0x8000:
            self._next_seq = (out_seq + 1) & 0xFFFF
            self._last_ts = out_ts
            self._last_sent_s = now
        self.packets_sent += 1
        self.octets_sent += len(buf) - FIXED_HEADER_LEN

    def _start_relayed_source(self, seq: int, ts: int, ssrc: int, now: float) -> None:
        # a relayed SSRC change is a switch too: the far end restarted its stream
        self._pending = True
        out_ts = self.next_timestamp(now)
        self._ts_offset = (out_ts - ts) % TS_MOD
        self._seq_offset = (self._next_seq - seq) % SEQ_MOD
        self._src_ssrc = ssrc
        self._pending = False
        self._last_samples = DEFAULT_FRAME_SAMPLES
