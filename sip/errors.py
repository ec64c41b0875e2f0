"""Errors of the SIP message layer, in the h11 style.

How this works: there are two families. `RemoteProtocolError` means the peer sent something we cannot
accept; it carries `status_hint`, the status a UAS should answer with (when the offending message was a
request and answering is possible at all), and a short `reason` token taken from a small fixed set so it
can be used directly as a Prometheus label. `ParseError` is the concrete remote error raised by the
parser and the framer. `LocalProtocolError` means *our* caller misused the API (built a message that
cannot be serialised, passed a bad status code, ...); it is a bug on our side and must never be turned
into a SIP response.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "PARSE_ERROR_REASONS",
    "LocalProtocolError",
    "ParseError",
    "RemoteProtocolError",
]

#: Every `reason` a ParseError may carry. Fixed and small on purpose: it is a metrics label.
PARSE_ERROR_REASONS: Final = frozenset(
    {
        "bad_start_line",  # request/status line does not follow RFC 3261 7.1 / 7.2
        "bad_version",  # SIP-Version other than SIP/2.0 (answer 505, RFC 3261 8.2.2... 21.5.7)
        "bad_request_uri",  # Request-URI is not an absoluteURI we can read (RFC 3261 19.1.1)
        "bad_header_line",  # a header line without "name:" (RFC 3261 7.3)
        "bad_header",  # a header we type (Via, From, CSeq, ...) does not follow its grammar
        "bad_content_length",  # Content-Length not a number, negative, or given twice
        "truncated_body",  # datagram shorter than Content-Length says (RFC 3261 18.3)
        "missing_content_length",  # stream message without Content-Length (RFC 3261 18.3)
        "no_header_end",  # no empty line ends the header section
        "cseq_mismatch",  # CSeq method differs from the request method (RFC 3261 8.1.1.5)
        "missing_header",  # a mandatory header (RFC 3261 8.1.1) is absent
        "duplicate_header",  # a single-valued header appears more than once
        "too_large",  # a size limit in sip.limits was exceeded
    }
)


class RemoteProtocolError(Exception):
    """The peer sent something that violates SIP.

    `status_hint` is the status code a UAS would answer a request with; `reason` is a short bounded
    token (see `PARSE_ERROR_REASONS`). You do NOT get this error for a message that is well formed but
    semantically unacceptable to the application (unknown URI scheme, unsupported Require option,
    unknown Content-Type): those parse, and the UAS layer answers 416/420/415 from the typed fields.
    """

    def __init__(self, message: str, *, status_hint: int = 400, reason: str = "bad_header") -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r}, status_hint={self.status_hint}, reason={self.reason!r})"


class ParseError(RemoteProtocolError):
    """Bytes from the network could not be read as a SIP message (or one of its typed headers).

    Raised by `sip.parse_message`, by the typed accessors of a parsed message for headers parsed
    lazily, and reported (never raised) by `sip.StreamFramer` as an event.
    """


class LocalProtocolError(Exception):
    """Our own caller misused the message API (e.g. a status code outside 100-699).

    You do NOT get this for anything a peer sent; that is `RemoteProtocolError`.
    """
