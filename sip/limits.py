"""Size limits of the SIP message layer.

How this works: every limit is a named constant with the reason for its value. The parser and the
stream framer check them before doing work proportional to the input, so a hostile peer can make us
reject a message but never make us hold or scan more than these bounds. Exceeding one raises (or, in
the framer, reports) `ParseError(reason="too_large")` with status hint 513 Message Too Large
(RFC 3261 21.5.14, "the message length exceeded its capabilities"), which is the response RFC 3261
defines for exactly this case; 413 is about the body of a request a UAS is willing to take.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_HEADER_COUNT",
    "MAX_HEADER_SECTION_BYTES",
    "MAX_LINE_BYTES",
    "MAX_LIST_ELEMENTS",
    "MAX_MESSAGE_BYTES",
    "MAX_VIA_COUNT",
    "TOO_LARGE_STATUS",
]

#: Largest whole message (start line + headers + body) we accept, on datagrams and streams alike.
#: 65535 is the largest UDP payload and Kamailio's default receive buffer (BUF_SIZE); Asterisk's bundled
#: pjproject caps packets far lower (PJSIP_MAX_PKT_LEN 6000 in its config_site.h). We take the
#: larger figure because trunks send big INVITEs (Lync/Teams INVITEs with many codecs exceed 12 kB).
MAX_MESSAGE_BYTES: Final = 65535

#: Largest header section (start line to the empty line). A stream framer that has buffered this much
#: without finding CRLFCRLF gives up instead of buffering forever. Same bound as a whole message.
MAX_HEADER_SECTION_BYTES: Final = MAX_MESSAGE_BYTES

#: Most header lines in one message. Real INVITEs carry 10-40; RFC 4475 longreq.dat has ~50. 256 leaves
#: room for long Record-Route/Via chains while bounding the per-header work of one message.
MAX_HEADER_COUNT: Final = 256

#: Longest single (unfolded) header line. RFC 4475 longreq.dat has ~600-char lines; 16 KiB bounds the
#: regex work per value while accepting any realistic Authorization or Identity header.
MAX_LINE_BYTES: Final = 16384

#: Most Via entries. Max-Forwards starts at 70 (RFC 3261 8.1.1.6), so a legitimate request can have
#: crossed at most ~70 proxies, each adding one Via; 100 leaves slack for proxies that add two.
MAX_VIA_COUNT: Final = 100

#: Most elements in any other comma list we type (Contact, Route, Record-Route, Require, ...). Same
#: reasoning as MAX_VIA_COUNT: a Record-Route entry per proxy, a Contact per registered device.
MAX_LIST_ELEMENTS: Final = 100

#: Status hint for any of the limits above (RFC 3261 21.5.14 513 Message Too Large).
TOO_LARGE_STATUS: Final = 513
