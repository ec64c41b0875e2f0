"""Our own SIP stack: a sans-I/O RFC 3261 core with thin asyncio transports.

Layering (see DESIGN.md section 2): nothing here imports ``engine``, ``routing_core`` or
``recordings``. Only ``sip.transport`` and ``sip.media`` touch the event loop.

The message layer (this package's top level) re-exports:
parsing (`parse_message`, `StreamFramer` and its events), messages (`Request`, `Response`,
`make_response`, `Headers`), typed header values (`Uri`, `Via`, `NameAddr`, `CSeq`, `MediaType`,
`AuthHeader`), identifiers (`new_branch`, `new_tag`, `new_call_id`) and errors.
"""

from sip.errors import (
    PARSE_ERROR_REASONS,
    LocalProtocolError,
    ParseError,
    RemoteProtocolError,
)
from sip.framing import (
    FramingEvent,
    FramingFailed,
    KeepalivePingReceived,
    KeepalivePongReceived,
    MessageReceived,
    MessageRejected,
    StreamFramer,
)
from sip.headers import (
    COMPACT_FORMS,
    LIST_HEADERS,
    AuthHeader,
    CSeq,
    Headers,
    MediaType,
    NameAddr,
    Via,
    canonical_key,
    canonical_name,
    split_list,
)
from sip.message import (
    BRANCH_MAGIC_COOKIE,
    REASON_PHRASES,
    Message,
    Request,
    Response,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from sip.uri import Uri

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "PARSE_ERROR_REASONS",
    "REASON_PHRASES",
    "AuthHeader",
    "CSeq",
    "FramingEvent",
    "FramingFailed",
    "Headers",
    "KeepalivePingReceived",
    "KeepalivePongReceived",
    "LocalProtocolError",
    "MediaType",
    "Message",
    "MessageReceived",
    "MessageRejected",
    "NameAddr",
    "ParseError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "StreamFramer",
    "Uri",
    "Via",
    "canonical_key",
    "canonical_name",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
    "split_list",
]
