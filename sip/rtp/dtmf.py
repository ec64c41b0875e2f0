"""DTMF as RFC 4733 telephone-events, and in SIP INFO bodies.

How this works:

* `TelephoneEvent` is the 4-byte payload of RFC 4733 2.3 (event, E bit, volume, duration).
* `DtmfReceiver` is a per-stream state machine fed ``(rtp_timestamp, payload, now)``. An event is
  identified by its RTP timestamp (RFC 4733 2.5.2.1): all packets of one key press carry the
  timestamp of its start, with a growing duration, and the final packet (E bit) is sent three times
  (2.5.1.4). So a new timestamp means a new event, a packet for the current timestamp after the end
  is a retransmission, and an end packet seen first (start packets lost) still yields the digit, once.
  Each press produces `DtmfStarted` when first seen and exactly one `DtmfEnded`. If the end packets
  are all lost, `handle_timer(now)` ends the event after `END_TIMEOUT_S` of silence.
  A long press whose duration would overflow 16 bits continues in a new segment whose timestamp is
  the old one plus 0xFFFF (2.5.1.3); the receiver joins the segments into one event.
* `dtmf_packets` plans what a sender emits for one digit: a first packet with the marker bit, an
  update every `update_interval_ms` (50 ms by default, 2.5.1.2), then three identical end packets.
* `parse_sip_info` reads ``application/dtmf-relay`` (``Signal=5`` / ``Duration=160`` lines, duration
  in ms) and ``application/dtmf`` (the digit alone) bodies.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sip.rtp.packet import RtpError

#: RFC 4733 3.2 event codes 0-15, 16 = flash.
EVENT_CODES = "0123456789*#ABCD"
FLASH_EVENT = 16
#: RFC 4733 2.5.1.3: a duration field saturates at 0xFFFF samples (8.2 s at 8 kHz).
MAX_DURATION = 0xFFFF
#: RFC 4733 2.5.1.4: the end packet is sent three times.
END_PACKET_REPEATS = 3
#: Without an end packet, end the event this long after its last packet. RFC 4733 2.5.2.2 asks for
#: a timeout; 0.5 s is several update intervals (50 ms) plus jitter, yet well below a human gap.
END_TIMEOUT_S = 0.5
#: Default gap between update packets (RFC 4733 2.5.1.2 recommends 50 ms).
DEFAULT_UPDATE_INTERVAL_MS = 50

_PAYLOAD = struct.Struct("!BBH")


class DtmfError(RtpError):
    """A telephone-event payload or a DTMF INFO body is malformed."""


def digit_of(event: int) -> str:
    """'0'-'9', '*', '#', 'A'-'D', or '!' for flash; other codes as their number."""
    if 0 <= event < len(EVENT_CODES):
        return EVENT_CODES[event]
    if event == FLASH_EVENT:
        return "!"
    return str(event)


def event_of(digit: str) -> int:
    d = digit.upper()
    if len(d) == 1 and d in EVENT_CODES:
        return EVENT_CODES.index(d)
    if d == "!":
        return FLASH_EVENT
    raise DtmfError(f"not a DTMF digit: {digit!r}")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """RFC 4733 2.3 payload."""

    event: int
    end: bool
    volume: int  # 0..63, -dBm0
    duration: int  # samples

    def serialize(self) -> bytes:
        return _PAYLOAD.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration
        )

    @property
    def digit(self) -> str:
        return digit_of(self.event)


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    # RFC 4733 2.3: several events may be stacked (redundancy, 2.5.1.5); the first is the current one
    if len(payload) < 4:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes, need 4")
    event, flags, duration = _PAYLOAD.unpack_from(payload, 0)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True, slots=True)
class DtmfStarted:
    digit: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class DtmfEnded:
    digit: str
    timestamp: int
    duration: int  # samples
    ended_by: str  # "end-bit" | "new-event" | "timeout"


DtmfEvent = DtmfStarted | DtmfEnded


class DtmfReceiver:
    """RFC 4733 receiver for one RTP stream (one SSRC and telephone-event payload type)."""

    __slots__ = (
        "_active",
        "_clock_rate",
        "_deadline",
        "_digit",
        "_duration",
        "_duration_base",
        "_ended",
        "_ts",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        self._clock_rate = clock_rate
        self._ts: int | None = None  # timestamp of the current (or last) event
        self._digit = ""
        self._duration = 0
        self._duration_base = 0  # samples of earlier segments of a long-duration event
        self._active = False  # started and not yet ended
        self._ended = False  # the current timestamp's event has been reported ended
        self._deadline: float | None = None

    def receive(self, timestamp: int, payload: bytes, now: float) -> list[DtmfEvent]:
        """Feed one telephone-event packet; raises `DtmfError` for a short payload."""
        ev = parse_telephone_event(payload)
        out: list[DtmfEvent] = []
        if timestamp != self._ts:
            if (
                self._active
                and self._ts is not None
                and ev.digit == self._digit
                and (timestamp - self._ts) % 2**32 == MAX_DURATION
            ):
                # 2.5.1.3 long-duration event: the next segment of the same press
                self._ts = timestamp
                self._duration_base += MAX_DURATION
                self._duration = self._duration_base + ev.duration
            else:
                if self._active:
                    out.append(self._end("new-event"))
                self._ts = timestamp
                self._digit = ev.digit
                self._duration_base = 0
                self._duration = ev.duration
                self._active = True
                self._ended = False
                out.append(DtmfStarted(ev.digit, timestamp))
        elif self._ended:
            return out  # retransmitted end packet, or a late update of a finished event
        else:
            self._duration = max(self._duration, self._duration_base + ev.duration)
        self._deadline = now + END_TIMEOUT_S
        if ev.end:
            out.append(self._end("end-bit"))
        return out

    def _end(self, reason: str) -> DtmfEnded:
        self._active = False
        self._ended = True
        self._deadline = None
        assert self._ts is not None
        return DtmfEnded(self._digit, self._ts, self._duration, reason)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> list[DtmfEvent]:
        if self._active and self._deadline is not None and now >= self._deadline:
            return [self._end("timeout")]
        return []


@dataclass(frozen=True, slots=True)
class PlannedPacket:
    """One packet of a DTMF send plan: send it ``offset_ms`` after the press starts."""

    offset_ms: int
    marker: bool
    payload: bytes


def dtmf_packets(
    digit: str,
    duration_ms: int,
    *,
    volume: int = 10,
    update_interval_ms: int = DEFAULT_UPDATE_INTERVAL_MS,
    clock_rate: int = 8000,
) -> list[PlannedPacket]:
    """The packets for one key press (RFC 4733 2.5.1): all share the RTP timestamp of the start.

    The first packet has the marker bit and duration 0, an update follows every
    ``update_interval_ms`` with the duration so far, and the end packet (E bit, full duration) is
    sent three times at the end. Durations beyond 0xFFFF samples are out of scope here (a digit
    press is at most a few seconds).
    """
    if duration_ms <= 0 or update_interval_ms <= 0:
        raise ValueError("duration and update interval must be positive")
    event = event_of(digit)
    total = min(duration_ms * clock_rate // 1000, MAX_DURATION)
    out = [PlannedPacket(0, True, TelephoneEvent(event, False, volume, 0).serialize())]
    t = update_interval_ms
    while t < duration_ms:
        samples = t * clock_rate // 1000
        out.append(
            PlannedPacket(t, False, TelephoneEvent(event, False, volume, samples).serialize())
        )
        t += update_interval_ms
    end = TelephoneEvent(event, True, volume, total).serialize()
    out.extend(PlannedPacket(duration_ms, False, end) for _ in range(END_PACKET_REPEATS))
    return out


@dataclass(frozen=True, slots=True)
class DtmfInfo:
    digit: str
    duration_ms: int | None


def parse_sip_info(content_type: str, body: bytes) -> DtmfInfo:
    """Parse a SIP INFO DTMF body; raises `DtmfError` if it carries no valid digit.

    ``application/dtmf-relay``: lines ``Signal=5`` and ``Duration=160`` (ms), keys
    case-insensitive, spaces around ``=`` tolerated. ``application/dtmf``: the digit alone
    (some phones send the event number, "10" for "*", also accepted).
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise DtmfError("DTMF INFO body is not ASCII") from exc
    if media_type == "application/dtmf-relay":
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if "signal" not in fields:
            raise DtmfError("dtmf-relay body without Signal=")
        digit = _digit_from_text(fields["signal"])
        duration: int | None = None
        if "duration" in fields:
            try:
                duration = int(fields["duration"])
            except ValueError as exc:
                raise DtmfError(f"bad Duration {fields['duration']!r}") from exc
        return DtmfInfo(digit, duration)
    if media_type == "application/dtmf":
        return DtmfInfo(_digit_from_text(text), None)
    raise DtmfError(f"not a DTMF INFO content type: {content_type!r}")


def _digit_from_text(text: str) -> str:
    if text.isdigit() and len(text) == 2 and 10 <= int(text) <= 16:
        return digit_of(int(text))
    return digit_of(event_of(text))
