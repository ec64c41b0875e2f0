"""Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 18.3, RFC 5626 3.5.1).

How this works: `StreamFramer.feed(data)` appends bytes to a bounded buffer and returns the events
the new bytes completed, in order. Between messages it consumes CRLFs: a double CRLF is an RFC 5626
keep-alive ping (`KeepalivePingReceived`; the transport answers with a single CRLF), a single CRLF
followed by anything else is a pong (`KeepalivePongReceived`). A lone CRLF at the end of the buffer
is held back until the next byte decides, so the events do not depend on how the stream was split.
A message is complete once its empty line and Content-Length octets are in; Content-Length is
mandatory on streams (18.3). A framed message that fails to parse is reported as `MessageRejected`
and the stream goes on (framing was intact). When framing itself is impossible (missing or bad
Content-Length, no empty line within the size limit, a message over the size limit) the framer
reports `FramingFailed` once and ignores all further input: the transport should close the
connection (RFC 4475 3.1.2.3 / 3.3.9). Nothing is raised for anything the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip import _abnf
from sip.errors import ParseError
from sip.limits import MAX_HEADER_SECTION_BYTES, MAX_MESSAGE_BYTES, TOO_LARGE_STATUS
from sip.message import Request, Response, parse_message

__all__ = [
    "FramingEvent",
    "FramingFailed",
    "KeepalivePingReceived",
    "KeepalivePongReceived",
    "MessageReceived",
    "MessageRejected",
    "StreamFramer",
]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete message was framed and parsed; `raw` holds its exact bytes."""

    message: Request | Response
    raw: bytes


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A complete message was framed but did not parse; the stream itself is still usable.

    If `raw` was a request, the transport may answer `error.status_hint` statelessly.
    """

    raw: bytes
    error: ParseError


@dataclass(frozen=True, slots=True)
class KeepalivePingReceived:
    """The peer sent a CRLFCRLF keep-alive ping (RFC 5626 3.5.1); answer with a single CRLF."""


@dataclass(frozen=True, slots=True)
class KeepalivePongReceived:
    """The peer sent a single CRLF, the pong to our ping (RFC 5626 3.5.1)."""


@dataclass(frozen=True, slots=True)
class FramingFailed:
    """The stream cannot be framed any further; close the connection. Reported once."""

    error: ParseError


FramingEvent = (
    MessageReceived
    | MessageRejected
    | KeepalivePingReceived
    | KeepalivePongReceived
    | FramingFailed
)


class StreamFramer:
    """Sans-I/O framer for one stream connection. Feed bytes, get events; never raises on input."""

    __slots__ = ("_buffer", "_failed", "_max_message_bytes", "_pending_total", "_scanned")

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for CRLFCRLF without success
        self._pending_total = 0  # length of the message whose headers are in, awaiting its body
        self._failed = False
        self._max_message_bytes = max_message_bytes

    @property
    def failed(self) -> bool:
        """True once FramingFailed was reported; further input is ignored."""
        return self._failed

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[FramingEvent]:
        """Add bytes from the stream; return the events they completed, in stream order."""
        if self._failed:
            return []
        self._buffer += data
        events: list[FramingEvent] = []
        while self._buffer and not self._failed:
            event = self._next()
            if event is None:
                break
            events.append(event)
        return events

    def _fail(self, error: ParseError) -> FramingFailed:
        self._failed = True
        self._buffer.clear()
        return FramingFailed(error)

    def _next(self) -> FramingEvent | None:
        buf = self._buffer
        if self._pending_total:
            return self._take(self._pending_total)
        while buf and buf[0] in (13, 10) and self._scanned == 0:  # CR, LF
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                return KeepalivePingReceived()
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return None  # could still become a ping: wait for the next byte
            if buf[:2] == b"\r\n":
                del buf[:2]
                return KeepalivePongReceived()
            # A stray CR or LF that is no keep-alive: RFC 3261 7.5 lets us skip it.
            del buf[:1]
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._scanned = len(buf)
            if len(buf) > MAX_HEADER_SECTION_BYTES:
                return self._fail(
                    ParseError(
                        "no end of headers within the size limit",
                        status_hint=TOO_LARGE_STATUS,
                        reason="too_large",
                    )
                )
            return None
        head_len = end + 4
        length = _content_length(bytes(buf[:end]))
        if isinstance(length, ParseError):
            return self._fail(length)
        total = head_len + length
        if total > self._max_message_bytes:
            return self._fail(
                ParseError(
                    f"message of {total} bytes exceeds {self._max_message_bytes}",
                    status_hint=TOO_LARGE_STATUS,
                    reason="too_large",
                )
            )
        self._scanned = 0
        return self._take(total)

    def _take(self, total: int) -> FramingEvent | None:
        buf = self._buffer
        if len(buf) < total:
            self._pending_total = total  # headers are in; wait for the rest of the body
            return None
        self._pending_total = 0
        raw = bytes(buf[:total])
        del buf[:total]
        try:
            message = parse_message(raw)
        except ParseError as exc:
            return MessageRejected(raw, exc)
        return MessageReceived(message, raw)


def _content_length(head: bytes) -> int | ParseError:
    # Content-Length before the full parse (RFC 3261 20.14; compact "l"). Folded continuation
    # lines of other headers cannot start with "l:" because they start with SP/HTAB.
    found = _abnf.CONTENT_LENGTH_LINE_RE.findall(head)
    if not found:
        return ParseError("Content-Length is mandatory on streams", reason="missing_content_length")
    if len(found) > 1:
        return ParseError("Content-Length given more than once", reason="bad_content_length")
    value = found[0]
    if not value.isdigit() or len(value) > 10:
        return ParseError(f"bad Content-Length {value[:20]!r}", reason="bad_content_length")
    return int(value)
