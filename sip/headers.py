"""Header fields: the ordered container and the typed values of the headers we interpret.

How this works: a message keeps its headers as an ordered list of ``(name, value)`` pairs exactly as
received (name as spelled by the peer, value unfolded and stripped, RFC 3261 7.3.1), plus a parallel
list of canonical keys (lower-case full names, compact forms expanded: ``v`` -> ``via``). That raw
list is the only source of truth for serialisation, so headers we do not interpret are re-emitted
unchanged and in order. Typed values (`Via`, `NameAddr`, `CSeq`, ...) are parsed from the raw values
on first access and cached per key; any change to a key's raw values drops its cached typed value.
Typed values are immutable (named tuples or slotted classes, cheap to build on the hot path); derive
changed copies with their ``with_*`` methods and store them back through the message's typed setters,
which re-render the raw value. A received `Via` or `NameAddr` keeps its parameters as the validated
text and splits them on first access; ``branch`` and ``tag``, the lookups every transaction and
dialog makes, are found in that text without splitting it. Single-key lookups on the container use
``list.count``/``list.index`` (C loops) instead of keeping a dict that every edit would have to
maintain. `Headers.add` refuses CR/LF in a value and checks a name against the token grammar unless
it is one of the spellings in the known-name table (all tokens), which saves a regex call per line
on the paths that build messages.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Final, NamedTuple, TypeVar

from sip import _abnf
from sip.errors import LocalProtocolError, ParseError
from sip.limits import MAX_LIST_ELEMENTS, MAX_VIA_COUNT
from sip.uri import Params, Uri

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "AuthHeader",
    "CSeq",
    "Headers",
    "MediaType",
    "NameAddr",
    "Via",
    "canonical_key",
    "canonical_name",
    "split_list",
    "unquote",
]

T = TypeVar("T")
_WS: Final = " \t"  # LWS after unfolding (RFC 3261 25.1)

#: Compact header names (RFC 3261 7.3.3 and 20; later RFCs noted) -> canonical lower-case key.
COMPACT_FORMS: Final = {
    "a": "accept-contact",  # RFC 3841
    "b": "referred-by",  # RFC 3892
    "c": "content-type",
    "d": "request-disposition",  # RFC 3841
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",  # RFC 3841
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",  # RFC 4474
    "o": "event",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "s": "subject",
    "t": "to",
    "u": "allow-events",  # RFC 6665
    "v": "via",
    "x": "session-expires",  # RFC 4028
    "y": "identity",  # RFC 8224
}

# Spelling used when we render a header we created ourselves (RFC 3261 20 headings).
_CANONICAL_NAMES: Final = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
}

#: Headers whose value is a comma-separated list (RFC 3261 7.3.1) and may therefore be split.
#: Anything not listed is never split: WWW-Authenticate, Authorization, Date, User-Agent ... contain
#: unquoted commas that are not list separators.
LIST_HEADERS: Final = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

_KNOWN: Final = [
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Length",
    "Content-Type", "Route", "Record-Route", "Allow", "Supported", "Require", "Expires",
    "User-Agent", "Server", "Authorization", "Proxy-Authorization", "WWW-Authenticate",
    "Proxy-Authenticate", "Accept", "Date", "Subject", "Event", "Allow-Events", "Session-Expires",
]  # fmt: skip
# Raw spelling -> key for the spellings peers actually use; anything else goes through .lower().
# Keys are interned, so the list scans over a message's keys (`list.index`, `in`) and dict
# lookups with the string literals used in code succeed on the identity check.
_KEY_OF: Final[dict[str, str]] = {
    **{n: sys.intern(n.lower()) for n in _KNOWN},
    **{n.lower(): sys.intern(n.lower()) for n in _KNOWN},
    **{n.upper(): sys.intern(n.lower()) for n in _KNOWN},
    "Call-Id": "call-id",
    "Cseq": "cseq",
    "Www-Authenticate": "www-authenticate",
    **COMPACT_FORMS,
    **{k.upper(): v for k, v in COMPACT_FORMS.items()},
}


def canonical_key(name: str) -> str:
    """Lower-case full header name for `name` (compact forms expanded, RFC 3261 7.3.3)."""
    key = _KEY_OF.get(name)
    if key is None:
        key = name.strip().lower()
        key = COMPACT_FORMS.get(key, key)
    return key


def canonical_name(name: str) -> str:
    """Conventional spelling of a header name, e.g. "v" -> "Via", "call-id" -> "Call-ID"."""
    key = canonical_key(name)
    return _CANONICAL_NAMES.get(key) or "-".join(p.capitalize() for p in key.split("-"))


def unquote(value: str) -> str:
    """Strip the quotes of a quoted-string and resolve its quoted-pairs; other text unchanged."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
        if "\\" in value:
            value = _abnf.QUOTED_PAIR_RE.sub(r"\1", value)
    return value


def quote(value: str) -> str:
    """Render `value` as a quoted-string (RFC 3261 25.1)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value: str) -> list[str]:
    """Split a comma list, ignoring commas inside quoted strings and <...> (RFC 3261 7.3.1)."""
    if "," not in value:
        return [value] if value else []
    return [item.strip() for item in _abnf.LIST_ITEM_RE.findall(value) if item.strip()]


def _params(text: str) -> Params:
    """Header params already validated by the element regex -> ((lower name, value|None), ...)."""
    if not text:
        return ()
    if " " in text or "\t" in text or '"' in text:
        return tuple([(n.lower(), v or None) for n, v in _abnf.PARAM_RE.findall(text)])
    # Fast path: no LWS and no quoted strings, so ";" and "=" can only be separators.
    out = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name.lower(), value if eq else None))
    return tuple(out)


def _param(params: Params, name: str) -> str | None:
    for key, value in params:
        if key == name:
            return "" if value is None else value
    return None


def _param_in_text(text: str, name: str) -> str | None:
    """`_param(_params(text), name)` for a lower-case `name`, without splitting every parameter.

    Falls back to the full split unless the text is ASCII with no LWS or quotes, where ";" and
    "=" can only be separators and lower-casing keeps every offset.
    """
    if not text:
        return None
    if " " in text or "\t" in text or '"' in text or not text.isascii():
        return _param(_params(text), name)
    return _simple_param(text, ";" + name)


def _simple_param(text: str, key: str) -> str | None:
    """`_param_in_text` for a text known to be plain (ASCII, no LWS, no quotes); key is ";name".

    The received `Via`/`NameAddr` keep their parameter text unsplit only when the fast element
    regexes validated it, which guarantees that shape, so the hot lookups (Via branch, From/To
    tag) come here directly.
    """
    low = text.lower()
    at = low.find(key)
    while at >= 0:
        after = at + len(key)
        if after == len(text) or text[after] == ";":
            return ""  # a flag
        if text[after] == "=":
            stop = text.find(";", after)
            return text[after + 1 :] if stop < 0 else text[after + 1 : stop]
        at = low.find(key, after)  # a longer name that starts with `name`
    return None


def _render_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _set_param(params: Params, name: str, value: str | None) -> Params:
    key = name.lower()
    return (*(p for p in params if p[0] != key), (key, value))


# Methods recognised by the CSeq fast path (RFC 3261 and the usual extensions); others go by regex.
_METHODS: Final = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "PRACK",
        "UPDATE",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    ]
)


def _bad(what: str, value: str) -> ParseError:
    return ParseError(f"malformed {what}: {value[:80]!r}", reason="bad_header")


# -- typed values ---------------------------------------------------------------------------------


class Via:
    """One via-parm (RFC 3261 20.42). `transport` is upper-case; `host` keeps IPv6 brackets.

    Parameter names are lower-case; values are kept as received (a quoted value keeps its quotes).
    Treat as immutable: `with_param` returns a changed copy.
    """

    __slots__ = ("_params", "_params_text", "host", "port", "protocol", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params = (),
        protocol: str = "SIP/2.0",
    ) -> None:
        self.transport: Final = transport
        self.host: Final = host
        self.port: Final = port
        self._params: Params | None = params
        self._params_text = ""
        self.protocol: Final = protocol

    @classmethod
    def _received(cls, transport: str, host: str, port: int | None, params_text: str) -> Via:
        # Parse path for a "SIP/2.0/<T> host[:port][;params]" value the fast regex validated;
        # the parameters are split on first access (most Vias are only copied into responses).
        self = cls.__new__(cls)
        self.transport = transport  # type: ignore[misc]
        self.host = host  # type: ignore[misc]
        self.port = port  # type: ignore[misc]
        self._params = None if params_text else ()
        self._params_text = params_text
        self.protocol = "SIP/2.0"  # type: ignore[misc]
        return self

    @property
    def params(self) -> Params:
        """Via parameters as ((lower-case name, raw value or None), ...), in order."""
        params = self._params
        if params is None:
            params = self._params = _params(self._params_text)
        return params

    def param(self, name: str) -> str | None:
        """Value of parameter `name` (case-insensitive); "" for a flag; None if absent."""
        return _param(self.params, name.lower())

    @property
    def branch(self) -> str | None:
        params = self._params
        if params is None:
            return _simple_param(self._params_text, ";branch")
        return _param(params, "branch")

    @property
    def received(self) -> str | None:
        return _param(self.params, "received")

    @property
    def has_rport(self) -> bool:
        """True if rport is present, as a flag or with a value (RFC 3581)."""
        return _param(self.params, "rport") is not None

    @property
    def rport(self) -> int | None:
        """The rport value filled in by a server (RFC 3581 4); None for the bare flag or absent."""
        value = _param(self.params, "rport")
        return int(value) if value and value.isdigit() and len(value) <= 5 else None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_param(self, name: str, value: str | None = None) -> Via:
        return Via(
            self.transport,
            self.host,
            self.port,
            _set_param(self.params, name, value),
            self.protocol,
        )

    def _key(self) -> tuple[object, ...]:
        return (self.protocol, self.transport, self.host.lower(), self.port, self.params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Via) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{_render_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


class NameAddr:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route, Record-Route.

    `display_name` is unquoted (None when absent). Parameter names are lower-case; values are kept
    as received (a quoted-string value keeps its quotes). The URI of a received value is parsed on
    first access of `uri` (which may then raise ParseError). Rendering always uses the <...> form.
    Treat as immutable: `with_param` / `with_tag` return changed copies.
    """

    __slots__ = ("_params", "_params_text", "_uri", "_uri_text", "display_name")

    def __init__(
        self, uri: Uri | str, display_name: str | None = None, params: Params = ()
    ) -> None:
        if isinstance(uri, str):
            try:
                uri = Uri.parse(uri)
            except ParseError as exc:
                raise LocalProtocolError(f"invalid URI {uri!r}") from exc
        self._uri: Uri | None = uri
        self._uri_text = str(uri)
        self.display_name: Final = display_name
        self._params: Params | None = tuple((k.lower(), v) for k, v in params)
        self._params_text = ""

    @classmethod
    def _received(cls, uri_text: str, display_name: str | None, params_text: str) -> NameAddr:
        # Parse path: a fast element regex validated `params_text` (so it is plain: ASCII, no
        # LWS, no quotes, see `_simple_param`); it is split on first access.
        self = cls.__new__(cls)
        self._uri = None
        self._uri_text = uri_text
        self.display_name = display_name  # type: ignore[misc]
        self._params = None if params_text else ()
        self._params_text = params_text
        return self

    @property
    def params(self) -> Params:
        """Header parameters as ((lower-case name, raw value or None), ...), in order."""
        params = self._params
        if params is None:
            params = self._params = _params(self._params_text)
        return params

    @property
    def uri(self) -> Uri:
        uri = self._uri
        if uri is None:
            uri = self._uri = Uri.parse(self._uri_text)
        return uri

    def param(self, name: str) -> str | None:
        """Value of header parameter `name` (case-insensitive); "" for a flag; None if absent."""
        return _param(self.params, name.lower())

    @property
    def tag(self) -> str | None:
        params = self._params
        if params is None:
            return _simple_param(self._params_text, ";tag")
        return _param(params, "tag")

    @property
    def expires(self) -> int | None:
        """Contact expires parameter (RFC 3261 20.10), clamped to 2**32-1; None if absent/bad."""
        value = _param(self.params, "expires")
        if not value or not value.isdigit() or not value.isascii():
            return None
        return 2**32 - 1 if len(value) > 10 else min(int(value), 2**32 - 1)

    @property
    def q(self) -> float | None:
        """Contact q parameter (RFC 3261 20.10): 0..1, None if absent or malformed."""
        value = _param(self.params, "q")
        if not value:
            return None
        try:
            q = float(value)
        except ValueError:
            return None
        return q if 0.0 <= q <= 1.0 else None

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        return NameAddr(self.uri, self.display_name, _set_param(self.params, name, value))

    def with_tag(self, tag: str) -> NameAddr:
        return self.with_param("tag", tag)

    def _key(self) -> tuple[object, ...]:
        return (self.uri, self.display_name, self.params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameAddr) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        display = "" if self.display_name is None else quote(self.display_name) + " "
        return f"{display}<{self._uri_text}>{_render_params(self.params)}"

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"


class CSeq(NamedTuple):
    """CSeq (RFC 3261 20.16): sequence number (0 .. 2**32-1) and method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


class MediaType(NamedTuple):
    """Content-Type (RFC 3261 20.15); type and subtype lower-case."""

    type: str
    subtype: str
    params: Params = ()

    @property
    def mime(self) -> str:
        """ "type/subtype", lower-case, e.g. "application/sdp"."""
        return f"{self.type}/{self.subtype}"

    def param(self, name: str) -> str | None:
        value = _param(self.params, name.lower())
        return None if value is None else unquote(value)

    def __str__(self) -> str:
        return f"{self.mime}{_render_params(self.params)}"


class AuthHeader(NamedTuple):
    """Authorization / Proxy-Authorization / WWW-Authenticate / Proxy-Authenticate value.

    `params` maps lower-case names to unquoted values (RFC 3261 20.7, 20.27, 20.28, 20.44); for a
    scheme whose value is not a name=value list (e.g. Basic's token68) `params` is empty. `raw` is
    the whole value exactly as received (digest verification needs the verbatim uri and nonce).
    """

    scheme: str
    params: tuple[tuple[str, str], ...]
    raw: str

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    def __str__(self) -> str:
        return self.raw


# -- parsers (list of raw values of one key -> typed value) ------------------------------------


def parse_via_value(value: str) -> tuple[Via, ...]:
    """One Via header value (possibly a comma list) -> its via-parms."""
    fast = _abnf.FAST_VIA_RE.fullmatch(value)
    if fast is not None:  # the common "SIP/2.0/UDP host:port;params" shape
        transport, host, port, params = fast.groups()
        return (Via._received(transport, host, _port(port, value) if port else None, params),)
    out: list[Via] = []
    match = _abnf.VIA_RE.match
    pos, end = 0, len(value)
    while True:
        m = match(value, pos)
        if m is None:
            raise _bad("Via", value)
        proto, version, transport, host, port, params = m.groups()
        out.append(
            Via(
                transport.upper(),
                host,
                _port(port, value) if port else None,
                _params(params),
                "SIP/2.0" if proto == "SIP" and version == "2.0" else f"{proto.upper()}/{version}",
            )
        )
        pos = m.end()
        if pos == end:
            break
        if value[pos] != ",":
            raise _bad("Via", value)
        pos += 1
        if len(out) > MAX_VIA_COUNT:
            raise ParseError("too many Via entries", status_hint=513, reason="too_large")
    return tuple(out)


def parse_via_list(values: list[str]) -> tuple[Via, ...]:
    if len(values) == 1:
        return parse_via_value(values[0])
    out: list[Via] = []
    for value in values:
        out += parse_via_value(value)
        if len(out) > MAX_VIA_COUNT:
            raise ParseError("too many Via entries", status_hint=513, reason="too_large")
    return tuple(out)


def _name_addr(m: re.Match[str]) -> NameAddr:
    quoted, tokens, bracketed, bare, params = m.groups()
    if quoted is not None:
        display: str | None = unquote(quoted)
    else:
        display = tokens
    name_addr = NameAddr._received(bracketed or bare, display, "")
    if params:  # may hold LWS or quoted strings: split now, the unsplit text must stay plain
        name_addr._params = _params(params)
    return name_addr


def parse_name_addr_value(value: str) -> NameAddr:
    """One From/To value -> NameAddr."""
    fast = _abnf.FAST_NAME_ADDR_RE.fullmatch(value)
    if fast is not None:
        display, uri, params = fast.groups()
        return NameAddr._received(uri, display, params)
    m = _abnf.NAME_ADDR_RE.fullmatch(value)
    if m is None:
        raise _bad("name-addr", value)
    return _name_addr(m)


def parse_name_addr(values: list[str]) -> NameAddr | None:
    """From / To: the first value (duplicates are reported by Message.check_mandatory)."""
    return parse_name_addr_value(values[0]) if values else None


def parse_name_addr_list(values: list[str]) -> tuple[NameAddr, ...]:
    out: list[NameAddr] = []
    match = _abnf.NAME_ADDR_RE.match
    for value in values:
        fast = _abnf.FAST_NAME_ADDR_RE.fullmatch(value)
        if fast is not None:  # a single entry in the usual shape
            display, uri, params = fast.groups()
            out.append(NameAddr._received(uri, display, params))
            continue
        pos, end = 0, len(value)
        while True:
            m = match(value, pos)
            if m is None:
                raise _bad("name-addr list", value)
            out.append(_name_addr(m))
            pos = m.end()
            if pos == end:
                break
            if value[pos] != ",":
                raise _bad("name-addr list", value)
            pos += 1
        if len(out) > MAX_LIST_ELEMENTS:
            raise ParseError("too many list elements", status_hint=513, reason="too_large")
    return tuple(out)


def parse_contact(values: list[str]) -> tuple[bool, tuple[NameAddr, ...]]:
    """Contact: (is_star, contacts). "*" must stand alone (RFC 3261 20.10, 10.2.2)."""
    if len(values) == 1:
        # One entry in the usual shape: what the general path below returns for it, minus the
        # list walk ("*" alone cannot match the <...> form; "<*>" is left to the check below).
        fast = _abnf.FAST_NAME_ADDR_RE.fullmatch(values[0])
        if fast is not None:
            display, uri, params = fast.groups()
            if uri != "*":
                return False, (NameAddr._received(uri, display, params),)
    if any("*" in v and _abnf.STAR_RE.fullmatch(v) for v in values):
        if len(values) != 1:
            raise _bad("Contact", "* with other contacts")
        return True, ()
    contacts = parse_name_addr_list(values)
    if any(c._uri_text == "*" for c in contacts):
        raise _bad("Contact", "* mixed with other contacts")
    return False, contacts


def parse_cseq(values: list[str]) -> CSeq | None:
    return parse_cseq_value(values[0]) if values else None


def parse_cseq_value(value: str) -> CSeq:
    number, _, method = value.partition(" ")
    if not (len(number) <= 10 and number.isdigit() and number.isascii() and method in _METHODS):
        m = _abnf.CSEQ_RE.fullmatch(value)
        if m is None:
            raise _bad("CSeq", value)
        number, method = m.groups()
    seq = int(number)
    if seq > 2**32 - 1:  # RFC 3261 8.1.1.5 / RFC 4475 3.1.2.4
        raise _bad("CSeq", value)
    return CSeq(seq, method)


def parse_call_id(values: list[str]) -> str | None:
    return parse_call_id_value(values[0]) if values else None


def parse_call_id_value(value: str) -> str:
    if _abnf.CALL_ID_RE.fullmatch(value) is None:
        raise _bad("Call-ID", value)
    return value


def parse_max_forwards(values: list[str]) -> int | None:
    return parse_max_forwards_value(values[0]) if values else None


def parse_max_forwards_value(value: str) -> int:
    if len(value) > 10 or not value.isdigit() or not value.isascii() or int(value) > 255:
        raise _bad("Max-Forwards", value)
    return int(value)


def parse_delta_seconds(values: list[str]) -> int | None:
    """Expires (RFC 3261 20.19): delta-seconds, values above 2**32-1 clamp to it (10.2.1 / 4475)."""
    if not values:
        return None
    value = values[0]
    if _abnf.DIGITS_RE.fullmatch(value) is None:
        raise _bad("Expires", value)
    return 2**32 - 1 if len(value) > 10 else min(int(value), 2**32 - 1)


def parse_media_type(values: list[str]) -> MediaType | None:
    if not values:
        return None
    m = _abnf.MEDIA_TYPE_RE.fullmatch(values[0])
    if m is None:
        raise _bad("Content-Type", values[0])
    return MediaType(m.group(1).lower(), m.group(2).lower(), _params(m.group(3)))


def parse_token_list(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    fullmatch = _abnf.TOKEN_RE.fullmatch
    for value in values:
        if not value:
            continue  # "Supported:" with no value is legal (RFC 3261 20.37)
        for item in value.split(","):
            token = item.strip(_WS)
            if fullmatch(token) is None:
                raise _bad("token list", value)
            out.append(token)
    if len(out) > MAX_LIST_ELEMENTS:
        raise ParseError("too many list elements", status_hint=513, reason="too_large")
    return tuple(out)


def parse_auth(values: list[str]) -> tuple[AuthHeader, ...]:
    out: list[AuthHeader] = []
    for value in values:
        m = _abnf.AUTH_RE.fullmatch(value)
        if m is None:
            raise _bad("auth header", value)
        scheme, rest = m.group(1), m.group(2) or ""
        params: list[tuple[str, str]] = []
        pos, end = 0, len(rest)
        match = _abnf.AUTH_PARAM_RE.match
        while pos < end:
            pm = match(rest, pos)
            if pm is None or pm.end() == pos:
                if scheme.lower() == "digest":
                    raise _bad("digest auth header", value)
                params = []  # not a name=value list (e.g. token68): the raw value is all we keep
                break
            params.append((pm.group(1).lower(), unquote(pm.group(2))))
            pos = pm.end()
        out.append(AuthHeader(scheme, tuple(params), value))
    return tuple(out)


def _port(text: str, value: str) -> int:
    port = int(text)
    if port > 65535:
        raise _bad("port", value)
    return port


# -- the container --------------------------------------------------------------------------------


class Headers:
    """Ordered header fields with case-insensitive, compact-form-aware lookup.

    Iterating yields ``(name, value)`` pairs as they will be serialised (name as received, value
    unfolded and stripped). Names given to lookups may be in any case and compact ("v", "VIA",
    "Via" are the same key). Internally each line is kept as the ``(name, ":", value)`` triple that
    ``str.partition`` produced while parsing, stripped only when read, which saves a tuple and two
    strip calls per header on the parse path.
    """

    __slots__ = ("_cache", "_fields", "_keys")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str, str]] = []
        self._keys: list[str] = []
        self._cache: dict[str, object] = {}
        for name, value in fields:
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, fields: list[tuple[str, str, str]], keys: list[str]) -> Headers:
        self = cls.__new__(cls)
        self._fields = fields
        self._keys = keys
        self._cache = {}
        return self

    # -- reading --

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n.rstrip(_WS), v.strip(_WS)) for n, _, v in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_key(name) in self._keys

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def keys(self) -> list[str]:
        """Canonical keys of the header lines, in order (compact forms expanded, lower-case)."""
        return list(self._keys)

    def count(self, name: str) -> int:
        """How many header lines carry `name`."""
        return self._keys.count(canonical_key(name))

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first `name` header line."""
        key = canonical_key(name)
        keys = self._keys
        if key in keys:
            return self._fields[keys.index(key)][2].strip(_WS)
        return default

    def get_all(self, name: str) -> list[str]:
        """Values of every `name` header line, in order (lists are NOT split)."""
        return self._raw_values(canonical_key(name))

    def values(self, name: str) -> list[str]:
        """Every value of `name`; list headers (see LIST_HEADERS) split at top-level commas."""
        key = canonical_key(name)
        raw = self._raw_values(key)
        if key not in LIST_HEADERS:
            return raw
        return [item for value in raw for item in split_list(value)]

    def _raw_values(self, key: str) -> list[str]:
        keys = self._keys
        n = keys.count(key)
        if n == 0:
            return []
        if n == 1:
            return [self._fields[keys.index(key)][2].strip(_WS)]
        return [f[2].strip(_WS) for k, f in zip(keys, self._fields, strict=True) if k == key]

    def _typed(self, key: str, parser: Callable[[list[str]], T]) -> T:
        cache = self._cache
        if key in cache:
            return cache[key]  # type: ignore[return-value]
        result = parser(self._raw_values(key))
        cache[key] = result
        return result

    # -- writing --

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        key = _KEY_OF.get(name)
        if key is None:  # not a spelling we know (those are all tokens): check the name
            _check_field(name, value)
            key = canonical_key(name)
        elif "\r" in value or "\n" in value:
            raise LocalProtocolError(f"header value for {name!r} contains CR/LF")
        self._fields.append((name, ":", value))
        self._keys.append(key)
        self._cache.pop(key, None)

    def insert(self, index: int, name: str, value: str) -> None:
        """Insert a header line before position `index`."""
        _check_field(name, value)
        key = canonical_key(name)
        self._fields.insert(index, (name, ":", value))
        self._keys.insert(index, key)
        self._cache.pop(key, None)

    def remove(self, name: str) -> int:
        """Remove every `name` header line; returns how many were removed."""
        key = canonical_key(name)
        keep = [(k, f) for k, f in zip(self._keys, self._fields, strict=True) if k != key]
        removed = len(self._keys) - len(keep)
        if removed:
            self._keys = [k for k, _ in keep]
            self._fields = [f for _, f in keep]
            self._cache.pop(key, None)
        return removed

    def set(self, name: str, value: str) -> None:
        """Replace every `name` line by one line carrying `value` (kept at the first one's place)."""
        self.set_all(name, [value])

    def set_all(self, name: str, values: Iterable[str]) -> None:
        """Replace every `name` line by one line per value, at the first existing line's place."""
        key = canonical_key(name)
        values = list(values)
        for value in values:
            _check_field(name, value)
        if key in self._keys:
            at = self._keys.index(key)
            name = self._fields[at][0].rstrip(_WS)
        else:
            at = len(self._keys)
        self.remove(key)
        self._keys[at:at] = [key] * len(values)
        self._fields[at:at] = [(name, ":", v) for v in values]

    def _store_typed(self, key: str, value: object) -> None:
        self._cache[key] = value


def _check_field(name: str, value: str) -> None:
    if name not in _KEY_OF and _abnf.TOKEN_RE.fullmatch(name) is None:
        raise LocalProtocolError(f"invalid header name {name!r}")
    if "\r" in value or "\n" in value:
        raise LocalProtocolError(f"header value for {name!r} contains CR/LF")
