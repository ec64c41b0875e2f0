"""SDP (RFC 8866, formerly RFC 4566) and RFC 3264 offer/answer for G.711 audio, sans-I/O.

How this works
--------------
* ``parse_sdp`` reads a body (``str`` or ``bytes``; CRLF or bare LF line ends) into frozen
  dataclasses; ``SessionDescription.serialize()`` writes it back with CRLF. Attributes stay an
  ordered tuple of ``Attribute(name, value)`` so unknown ones are re-emitted verbatim; the ones
  we act on (rtpmap, fmtp, ptime, maxptime, rtcp, direction) are checked at parse time and read
  through typed accessors. Any malformed input raises ``SdpError`` and nothing else.
* ``negotiate_answer`` is our side as answerer (RFC 3264 6): one m-line per offered m-line, the
  first usable audio stream accepted with one codec (plus telephone-event, RFC 4733, keeping the
  offerer's payload type and fmtp), every other stream rejected with port 0. No common codec
  raises ``NoCommonMediaError`` (status hint 488 Not Acceptable Here).
* ``make_offer`` / ``process_answer`` are our side as offerer (RFC 3264 5 and 7).
* SRTP by SDES (RFC 4568): ``AudioCapabilities.srtp`` / ``make_offer(srtp=)`` take a `SrtpMode`.
  As answerer we accept RTP/SAVP (and best-effort RTP/AVP) offers with a usable ``a=crypto``
  unless "off", answer in kind with our own fresh key, and with "require" reject a stream
  without one (so 488). As offerer, "offer" sends RTP/AVP with ``a=crypto`` (best effort: a
  plain answer gives plain RTP) and "require" sends RTP/SAVP. ``NegotiatedAudio.srtp`` has
  both keys (`sip.sdes.SrtpKeys`) when the leg is encrypted.
* ``hold_offer`` / ``resume_offer`` build the re-INVITE body for hold (RFC 3264 8.4), always
  bumping the o= version (RFC 3264 8). ``is_hold`` also knows the RFC 2543 c=0.0.0.0 style.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from sip.sdes import CryptoAttribute, SrtpKeys, find_crypto, new_crypto

__all__ = [
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "AnswerMismatchError",
    "Attribute",
    "AudioCapabilities",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "NegotiatedAnswer",
    "NegotiatedAudio",
    "NoCommonMediaError",
    "OfferAnswerError",
    "Origin",
    "RtcpAttribute",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "SrtpMode",
    "TimeDescription",
    "bump_version",
    "hold_offer",
    "is_hold",
    "make_offer",
    "negotiate_answer",
    "parse_sdp",
    "process_answer",
    "resume_offer",
]

# SDP bodies in SIP are a few hundred bytes; a WebRTC offer with many candidates stays below
# 16 KiB. 64 KiB matches the largest SIP message our transports accept over TCP.
MAX_SDP_BYTES = 65_536
# RFC 3551 4.5: 20 ms is the default G.711 packetization; other values are honoured in this
# range (10 ms is the smallest our RTP clock handles, 60 ms is the common maxptime offered).
DEFAULT_PTIME_MS = 20
MIN_PTIME_MS = 10
MAX_PTIME_MS = 60
# RFC 4733 7.1.1: events 0-15 are the DTMF digits, 16 is flash; what Asterisk and FreeSWITCH offer.
DEFAULT_TELEPHONE_EVENTS = "0-16"


class SdpError(ValueError):
    """The body is not SDP we can read (RFC 8866 grammar). ``status_code`` hints 400.

    Not raised when SDP is well formed but nothing in it is acceptable: that is
    ``NoCommonMediaError``.
    """

    status_code = 400


class OfferAnswerError(ValueError):
    """Offer/answer failed on well-formed SDP (RFC 3264). ``status_code`` is the SIP answer."""

    status_code = 488


class NoCommonMediaError(OfferAnswerError):
    """No offered stream can be accepted: the UAS answers 488 Not Acceptable Here."""


class AnswerMismatchError(OfferAnswerError):
    """The answer to our offer breaks RFC 3264 6 (m-line count/order, formats not offered,
    impossible direction) or rejects every audio stream."""


# -------------------------------------------------------------------------------------------
# Model.
# -------------------------------------------------------------------------------------------


class SrtpMode(enum.StrEnum):
    """Whether a side does SRTP (SDES, RFC 4568): see the module docstring."""

    OFF = "off"
    OFFER = "offer"
    REQUIRE = "require"


class Direction(enum.StrEnum):
    """RFC 8866 6.7 / RFC 3264 5.1 media direction attributes."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """The direction as seen from the other side."""
        return _REVERSED[self]

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def intersect(self, other: Direction) -> Direction:
        sends = self.sends and other.sends
        receives = self.receives and other.receives
        return _FROM_FLAGS[(sends, receives)]


_REVERSED = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}
_FROM_FLAGS = {
    (True, True): Direction.SENDRECV,
    (True, False): Direction.SENDONLY,
    (False, True): Direction.RECVONLY,
    (False, False): Direction.INACTIVE,
}
_DIRECTION_NAMES = frozenset(d.value for d in Direction)


@dataclass(frozen=True, slots=True)
class Origin:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address> (5.2)."""

    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True, slots=True)
class Connection:
    """c=<nettype> <addrtype> <connection-address> (5.7); ``address`` may carry /ttl/count."""

    nettype: str
    addrtype: str
    address: str

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_hold_address(self) -> bool:
        """RFC 2543 hold: the connection address is zero (RFC 3264 8.4 keeps it readable)."""
        return self.host in ("0.0.0.0", "::")  # noqa: S104 - compared, never bound


@dataclass(frozen=True, slots=True)
class TimeDescription:
    """t=<start-time> <stop-time> with its r= lines kept verbatim (5.9-5.10)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attribute:
    """a=<name>[:<value>]; ``value`` None for a property attribute such as a=sendrecv."""

    name: str
    value: str | None = None

    def serialize(self) -> str:
        return f"a={self.name}" if self.value is None else f"a={self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>] (6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None


@dataclass(frozen=True, slots=True)
class RtcpAttribute:
    """a=rtcp:<port> [<nettype> <addrtype> <connection-address>] (RFC 3605)."""

    port: int
    connection: Connection | None = None


def _attr_lookup(attributes: Sequence[Attribute], name: str) -> list[Attribute]:
    return [a for a in attributes if a.name.lower() == name]


def _is_direction(a: Attribute) -> bool:
    return a.value is None and a.name.lower() in _DIRECTION_NAMES


def _direction_of(attributes: Sequence[Attribute]) -> Direction | None:
    found: Direction | None = None
    for a in attributes:
        low = a.name.lower()
        if low in _DIRECTION_NAMES and a.value is None:
            found = Direction(low)
    return found


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One m= section (RFC 8866 5.14) with its i/c/b/k/a lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    title: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[str, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    def rtpmaps(self) -> dict[str, RtpMap]:
        out: dict[str, RtpMap] = {}
        for a in _attr_lookup(self.attributes, "rtpmap"):
            rm = _parse_rtpmap(a.value or "")
            out.setdefault(str(rm.payload_type), rm)
        return out

    def rtpmap(self, fmt: str) -> RtpMap | None:
        """The rtpmap for ``fmt``, falling back to the RFC 3551 static table."""
        found = self.rtpmaps().get(fmt)
        if found is not None:
            return found
        return _STATIC_PAYLOADS.get(fmt)

    def fmtp(self, fmt: str) -> str | None:
        for a in _attr_lookup(self.attributes, "fmtp"):
            f, _, params = (a.value or "").partition(" ")
            if f == fmt:
                return params.strip()
        return None

    @property
    def crypto(self) -> list[CryptoAttribute]:
        """The usable ``a=crypto`` lines (RFC 4568), in order; unusable ones are skipped."""
        return find_crypto(a.value or "" for a in _attr_lookup(self.attributes, "crypto"))

    @property
    def ptime_ms(self) -> int | None:
        found = _attr_lookup(self.attributes, "ptime")
        return _parse_ms(found[-1].value or "") if found else None

    @property
    def maxptime_ms(self) -> int | None:
        found = _attr_lookup(self.attributes, "maxptime")
        return _parse_ms(found[-1].value or "") if found else None

    @property
    def rtcp(self) -> RtcpAttribute | None:
        found = _attr_lookup(self.attributes, "rtcp")
        return _parse_rtcp(found[-1].value or "") if found else None

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, if any (session level is the fallback)."""
        return _direction_of(self.attributes)

    def serialize_lines(self) -> list[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        lines = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.title is not None:
            lines.append(f"i={self.title}")
        lines.extend(f"c={c.nettype} {c.addrtype} {c.address}" for c in self.connections)
        lines.extend(f"b={b}" for b in self.bandwidths)
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines.extend(a.serialize() for a in self.attributes)
        return lines


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body (RFC 8866 5). Lines we do not interpret are kept as text."""

    origin: Origin
    session_name: str = "-"
    info: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[str, ...] = ()
    times: tuple[TimeDescription, ...] = (TimeDescription(),)
    zone: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    @property
    def direction(self) -> Direction | None:
        return _direction_of(self.attributes)

    def media_direction(self, index: int) -> Direction:
        """Effective direction of m-line ``index``: media level, then session, then sendrecv."""
        m = self.media[index]
        return m.direction or self.direction or Direction.SENDRECV

    def media_connection(self, index: int) -> Connection | None:
        m = self.media[index]
        return m.connections[0] if m.connections else self.connection

    def serialize(self) -> str:
        o = self.origin
        lines = [
            "v=0",
            f"o={o.username} {o.session_id} {o.session_version} {o.nettype} {o.addrtype} "
            f"{o.address}",
            f"s={self.session_name}",
        ]
        if self.info is not None:
            lines.append(f"i={self.info}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines.extend(f"e={e}" for e in self.emails)
        lines.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            c = self.connection
            lines.append(f"c={c.nettype} {c.addrtype} {c.address}")
        lines.extend(f"b={b}" for b in self.bandwidths)
        for t in self.times:
            lines.append(f"t={t.start} {t.stop}")
            lines.extend(f"r={r}" for r in t.repeats)
        if self.zone is not None:
            lines.append(f"z={self.zone}")
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines.extend(a.serialize() for a in self.attributes)
        for m in self.media:
            lines.extend(m.serialize_lines())
        for line in lines:
            if _BAD_CHARS_RE.search(line) or _SURROGATE_RE.search(line):
                raise SdpError(f"value would break the line structure: {line!r}")
        return "\r\n".join(lines) + "\r\n"

    def to_bytes(self) -> bytes:
        return self.serialize().encode("utf-8")

    def __str__(self) -> str:
        return self.serialize()


# -------------------------------------------------------------------------------------------
# Parser (RFC 8866 9 grammar, lenient on line order within a section and on bare LF).
# -------------------------------------------------------------------------------------------

# token = 1*(token-char), RFC 8866 9: att-field, proto parts, nettype, addrtype.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# Twenty digits hold any 64-bit value (o= ids, NTP times) and keep int() cheap on junk.
_DIGITS_RE = re.compile(r"[0-9]{1,20}")
# text = byte-string: any octet except NUL, CR, LF.
_BAD_CHARS_RE = re.compile(r"[\x00\r\n]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_MS_RE = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")
# media-field = %s"m" "=" media SP port ["/" integer] SP proto 1*(SP fmt)
_MAX_PORT = 65_535

_STATIC_PAYLOADS = {
    # RFC 3551 table 4: the static audio payload types a trunk may send without rtpmap.
    "0": RtpMap(0, "PCMU", 8000, 1),
    "3": RtpMap(3, "GSM", 8000, 1),
    "4": RtpMap(4, "G723", 8000, 1),
    "8": RtpMap(8, "PCMA", 8000, 1),
    "9": RtpMap(9, "G722", 8000, 1),
    "18": RtpMap(18, "G729", 8000, 1),
}


def _int_field(text: str, what: str, maximum: int | None = None) -> int:
    if _DIGITS_RE.fullmatch(text) is None:
        raise SdpError(f"{what} must be digits, got {text!r}")
    value = int(text)
    if maximum is not None and value > maximum:
        raise SdpError(f"{what} out of range: {text!r}")
    return value


def _parse_ms(text: str) -> int:
    text = text.strip()
    if _MS_RE.fullmatch(text) is None:
        raise SdpError(f"bad packet time {text!r}")
    return round(float(text))


def _parse_rtpmap(text: str) -> RtpMap:
    pt_text, _, rest = text.partition(" ")
    pt = _int_field(pt_text, "rtpmap payload type", 127)
    parts = rest.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0] or _BAD_NAME_RE.search(parts[0]):
        raise SdpError(f"bad rtpmap {text!r}")
    rate = _int_field(parts[1], "rtpmap clock rate")
    channels = _int_field(parts[2], "rtpmap channels") if len(parts) == 3 else None
    return RtpMap(pt, parts[0], rate, channels)


_BAD_NAME_RE = re.compile(r"[\s/]")


def _parse_connection(text: str) -> Connection:
    parts = text.split()
    if len(parts) != 3 or not all(_TOKEN_RE.fullmatch(p) for p in parts[:2]):
        raise SdpError(f"bad connection line {text!r}")
    return Connection(parts[0], parts[1], parts[2])


def _parse_rtcp(text: str) -> RtcpAttribute:
    parts = text.split()
    if len(parts) not in (1, 4):
        raise SdpError(f"bad rtcp attribute {text!r}")
    port = _int_field(parts[0], "rtcp port", _MAX_PORT)
    conn = _parse_connection(" ".join(parts[1:])) if len(parts) == 4 else None
    return RtcpAttribute(port, conn)


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    name = name.rstrip(" \t")
    if _TOKEN_RE.fullmatch(name) is None:
        raise SdpError(f"bad attribute name {name!r}")
    attr = Attribute(name, rest if sep else None)
    low = name.lower()
    # Check the attributes we act on now, so the typed accessors never fail later.
    if low == "rtpmap":
        _parse_rtpmap(rest)
    elif low in ("ptime", "maxptime"):
        _parse_ms(rest)
    elif low == "rtcp":
        _parse_rtcp(rest)
    elif low == "fmtp":
        fmt = rest.partition(" ")[0]
        if not sep or _TOKEN_RE.fullmatch(fmt) is None:
            raise SdpError(f"bad fmtp attribute {value!r}")
    return attr


def _parse_origin(text: str) -> Origin:
    parts = text.split()
    if len(parts) != 6:
        raise SdpError(f"o= needs 6 fields, got {text!r}")
    if not all(_TOKEN_RE.fullmatch(p) for p in parts[3:5]):
        raise SdpError(f"bad o= network or address type {text!r}")
    return Origin(
        parts[0],
        _int_field(parts[1], "o= sess-id"),
        _int_field(parts[2], "o= sess-version"),
        parts[3],
        parts[4],
        parts[5],
    )


def _parse_media_line(text: str) -> MediaDescription:
    parts = text.split()
    if len(parts) < 4:
        raise SdpError(f"m= needs media, port, proto and a format: {text!r}")
    media, port_text, proto, *formats = parts
    if _TOKEN_RE.fullmatch(media) is None:
        raise SdpError(f"bad media type {media!r}")
    if not all(_TOKEN_RE.fullmatch(p) for p in proto.split("/")):
        raise SdpError(f"bad proto {proto!r}")
    if not all(_TOKEN_RE.fullmatch(f) for f in formats):
        raise SdpError(f"bad format list in {text!r}")
    port_str, slash, count_str = port_text.partition("/")
    port = _int_field(port_str, "m= port", _MAX_PORT)
    count = _int_field(count_str, "m= port count") if slash else None
    return MediaDescription(media, port, proto, tuple(formats), port_count=count)


@dataclass(slots=True)
class _MediaBuilder:
    line: MediaDescription
    title: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)

    def build(self) -> MediaDescription:
        return replace(
            self.line,
            title=self.title,
            connections=tuple(self.connections),
            bandwidths=tuple(self.bandwidths),
            key=self.key,
            attributes=tuple(self.attributes),
        )


def parse_sdp(body: str | bytes) -> SessionDescription:
    """Parse an SDP body. Raises ``SdpError`` for anything malformed, never anything else."""
    if isinstance(body, bytes | bytearray):
        if len(body) > MAX_SDP_BYTES:
            raise SdpError("SDP body too large")
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP is not UTF-8: {exc}") from exc
    elif isinstance(body, str):
        text = body
        if len(text) > MAX_SDP_BYTES:
            raise SdpError("SDP body too large")
        if _SURROGATE_RE.search(text):
            raise SdpError("SDP text holds lone surrogates (not encodable as UTF-8)")
    else:
        raise SdpError("SDP body must be str or bytes")

    lines: list[tuple[str, str]] = []
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            continue
        if _BAD_CHARS_RE.search(line):
            raise SdpError(f"stray control character in line {line!r}")
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"not a <type>=<value> line: {line!r}")
        lines.append((line[0], line[2:]))
    if not lines or lines[0] != ("v", "0"):
        raise SdpError("SDP must start with v=0")

    origin: Origin | None = None
    session_name: str | None = None
    info = uri = zone = key = None
    emails: list[str] = []
    phones: list[str] = []
    connection: Connection | None = None
    bandwidths: list[str] = []
    times: list[TimeDescription] = []
    attributes: list[Attribute] = []
    media: list[_MediaBuilder] = []

    for kind, value in lines[1:]:
        if media:
            cur = media[-1]
            if kind == "m":
                media.append(_MediaBuilder(_parse_media_line(value)))
            elif kind == "a":
                cur.attributes.append(_parse_attribute(value))
            elif kind == "c":
                cur.connections.append(_parse_connection(value))
            elif kind == "b":
                cur.bandwidths.append(value)
            elif kind == "i" and cur.title is None:
                cur.title = value
            elif kind == "k" and cur.key is None:
                cur.key = value
            else:
                raise SdpError(f"unexpected {kind}= line in a media section")
            continue
        if kind == "o" and origin is None:
            origin = _parse_origin(value)
        elif kind == "s" and session_name is None:
            session_name = value
        elif kind == "i" and info is None:
            info = value
        elif kind == "u" and uri is None:
            uri = value
        elif kind == "e":
            emails.append(value)
        elif kind == "p":
            phones.append(value)
        elif kind == "c" and connection is None:
            connection = _parse_connection(value)
        elif kind == "b":
            bandwidths.append(value)
        elif kind == "t":
            parts = value.split()
            if len(parts) != 2:
                raise SdpError(f"t= needs start and stop: {value!r}")
            times.append(
                TimeDescription(_int_field(parts[0], "t= start"), _int_field(parts[1], "t= stop"))
            )
        elif kind == "r":
            if not times:
                raise SdpError("r= before any t=")
            times[-1] = replace(times[-1], repeats=(*times[-1].repeats, value))
        elif kind == "z" and zone is None:
            zone = value
        elif kind == "k" and key is None:
            key = value
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind == "m":
            media.append(_MediaBuilder(_parse_media_line(value)))
        else:
            raise SdpError(f"unexpected or repeated {kind}= line at session level")
    if origin is None:
        raise SdpError("missing o= line")
    if session_name is None:
        raise SdpError("missing s= line")
    if not times:
        raise SdpError("missing t= line")
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        info=info,
        uri=uri,
        emails=tuple(emails),
        phones=tuple(phones),
        connection=connection,
        bandwidths=tuple(bandwidths),
        times=tuple(times),
        zone=zone,
        key=key,
        attributes=tuple(attributes),
        media=tuple(m.build() for m in media),
    )


# -------------------------------------------------------------------------------------------
# Offer/answer (RFC 3264).
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio format we can send and receive. ``payload_type`` is what we offer."""

    name: str
    payload_type: int
    clock_rate: int = 8000
    channels: int = 1

    def matches(self, rtpmap: RtpMap) -> bool:
        return (
            rtpmap.encoding.lower() == self.name.lower()
            and rtpmap.clock_rate == self.clock_rate
            and (rtpmap.channels or 1) == self.channels
        )


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
TELEPHONE_EVENT = Codec("telephone-event", 101)


@dataclass(frozen=True, slots=True)
class AudioCapabilities:
    """What our side can do on one audio stream, in preference order."""

    address: str
    port: int
    codecs: tuple[Codec, ...] = (PCMU, PCMA)
    telephone_event: bool = True  # accept RFC 4733 events at the offerer's PT and fmtp
    ptime_ms: int = DEFAULT_PTIME_MS
    direction: Direction = Direction.SENDRECV
    # False: our codec order decides (deterministic per deployment); True: the offerer's.
    prefer_offer_order: bool = False
    username: str = "-"
    session_name: str = "-"
    srtp: SrtpMode = SrtpMode.OFF
    # our SDES key to answer with (a re-offer keeps the leg's key); None: a fresh one
    crypto: CryptoAttribute | None = None


@dataclass(frozen=True, slots=True)
class NegotiatedAudio:
    """The outcome for the one audio stream we use, from our point of view."""

    media_index: int
    codec: Codec  # with the payload type agreed on the wire
    telephone_event_pt: int | None
    telephone_event_fmtp: str | None
    remote_address: str
    remote_port: int
    remote_rtcp_port: int
    direction: Direction  # what we do: sends -> we send RTP, receives -> we expect it
    ptime_ms: int  # packetization we send with
    remote_hold: bool  # the peer put us on hold (sendonly/inactive or c=0.0.0.0)
    srtp: SrtpKeys | None = None  # the leg is SRTP with these keys (RFC 4568)


@dataclass(frozen=True, slots=True)
class NegotiatedAnswer:
    sdp: SessionDescription
    audio: NegotiatedAudio
    offer_changed: bool = True


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _new_session_id() -> int:
    # RFC 8866 5.2: any numeric id unique per host; 62 bits keeps it a positive int64.
    return secrets.randbits(62)


def _origin(caps: AudioCapabilities, session_id: int, version: int) -> Origin:
    return Origin(caps.username, session_id, version, "IN", _addrtype(caps.address), caps.address)


def _find_codec(
    m: MediaDescription, codecs: Sequence[Codec], prefer_offer_order: bool
) -> tuple[Codec, str] | None:
    """(our codec, the offered fmt) for the best common codec."""
    offered: list[tuple[str, RtpMap]] = []
    for fmt in m.formats:
        rm = m.rtpmap(fmt)
        if rm is not None:
            offered.append((fmt, rm))
    if prefer_offer_order:
        for fmt, rm in offered:
            for c in codecs:
                if c.matches(rm):
                    return c, fmt
        return None
    for c in codecs:
        for fmt, rm in offered:
            if c.matches(rm):
                return c, fmt
    return None


def _find_telephone_event(m: MediaDescription, clock_rate: int) -> str | None:
    for fmt in m.formats:
        rm = m.rtpmaps().get(fmt)
        if (
            rm is not None
            and rm.encoding.lower() == "telephone-event"
            and rm.clock_rate == clock_rate
        ):
            return fmt
    return None


def _is_rtp_avp(m: MediaDescription) -> bool:
    return m.proto.upper() == "RTP/AVP"


def _is_rtp_savp(m: MediaDescription) -> bool:
    return m.proto.upper() == "RTP/SAVP"


def _answer_crypto(m: MediaDescription, local: AudioCapabilities) -> SrtpKeys | None:
    """RFC 4568 7.1.2: the first offered crypto line we can use, answered with its tag and
    suite and our key. None: answer without SRTP (or reject, the caller decides)."""
    if local.srtp is SrtpMode.OFF:
        return None
    for theirs in m.crypto:
        ours = local.crypto
        if ours is None or ours.suite is not theirs.suite:
            ours = new_crypto(theirs.tag, theirs.suite)
        return SrtpKeys(replace(ours, tag=theirs.tag), theirs)
    return None


def _reject(m: MediaDescription) -> MediaDescription:
    # RFC 3264 6: a rejected stream keeps media, proto and the formats, with port 0.
    return MediaDescription(m.media, 0, m.proto, m.formats)


def _send_ptime(m: MediaDescription, default_ms: int) -> int:
    ptime = m.ptime_ms or default_ms
    if m.maxptime_ms is not None:
        ptime = min(ptime, m.maxptime_ms)
    if not MIN_PTIME_MS <= ptime <= MAX_PTIME_MS or ptime % 10:
        ptime = default_ms
    return ptime


def _remote_rtcp_port(m: MediaDescription) -> int:
    rtcp = m.rtcp
    return rtcp.port if rtcp is not None else m.port + 1  # RFC 3550 11: RTP port + 1


def _audio_section(
    codec_pt: int,
    codec: Codec,
    te_pt: int | None,
    te_fmtp: str | None,
    ptime_ms: int,
    direction: Direction,
    port: int,
) -> MediaDescription:
    formats = [str(codec_pt)]
    attrs = [Attribute("rtpmap", f"{codec_pt} {codec.name}/{codec.clock_rate}")]
    if te_pt is not None:
        formats.append(str(te_pt))
        attrs.append(Attribute("rtpmap", f"{te_pt} telephone-event/{codec.clock_rate}"))
        if te_fmtp is not None:
            attrs.append(Attribute("fmtp", f"{te_pt} {te_fmtp}"))
    attrs.append(Attribute("ptime", str(ptime_ms)))
    attrs.append(Attribute(direction.value))
    return MediaDescription("audio", port, "RTP/AVP", tuple(formats), attributes=tuple(attrs))


def _offer_direction(offer: SessionDescription, index: int) -> tuple[Direction, bool]:
    """(effective direction of the offer, RFC 2543 hold with c=0.0.0.0)."""
    direction = offer.media_direction(index)
    conn = offer.media_connection(index)
    old_hold = conn is not None and conn.is_hold_address
    if old_hold and direction.sends:
        # c=0.0.0.0: "do not send to me" (RFC 3264 8.4 backwards compatibility).
        direction = direction.intersect(Direction.SENDONLY)
    return direction, old_hold


def negotiate_answer(
    offer: SessionDescription,
    local: AudioCapabilities,
    *,
    previous_offer: SessionDescription | None = None,
    previous_answer: SessionDescription | None = None,
    session_id: int | None = None,
) -> NegotiatedAnswer:
    """Answer ``offer`` as the UAS (RFC 3264 6). Raises ``NoCommonMediaError`` -> 488.

    For a re-offer in a dialog pass the previous offer and our previous answer: an unchanged
    re-offer (same o= version and body, RFC 3264 8 session refresh) gets the same answer back,
    otherwise our o= version goes up by one only if our answer changed.
    """
    if previous_offer is not None and previous_answer is not None and offer == previous_offer:
        return NegotiatedAnswer(
            previous_answer, _describe_answer(offer, previous_answer), offer_changed=False
        )

    sections: list[MediaDescription] = []
    chosen: NegotiatedAudio | None = None
    for index, m in enumerate(offer.media):
        if (
            chosen is not None
            or m.port == 0
            or m.media.lower() != "audio"
            or not (_is_rtp_avp(m) or _is_rtp_savp(m))
        ):
            sections.append(_reject(m))
            continue
        found = _find_codec(m, local.codecs, local.prefer_offer_order)
        conn = offer.media_connection(index)
        keys = _answer_crypto(m, local)
        if keys is None and (_is_rtp_savp(m) or local.srtp is SrtpMode.REQUIRE):
            found = None  # SAVP without a key we can use, or a plain offer where SRTP is required
        if found is None or conn is None:
            sections.append(_reject(m))
            continue
        codec, fmt = found
        pt = int(fmt)
        te_fmt = _find_telephone_event(m, codec.clock_rate) if local.telephone_event else None
        te_pt = int(te_fmt) if te_fmt is not None else None
        te_fmtp = m.fmtp(te_fmt) if te_fmt is not None else None
        offered_dir, old_hold = _offer_direction(offer, index)
        answer_dir = offered_dir.reversed().intersect(local.direction)
        ptime = _send_ptime(m, local.ptime_ms)
        section = _audio_section(pt, codec, te_pt, te_fmtp, ptime, answer_dir, local.port)
        if keys is not None:
            section = replace(
                section,
                proto=m.proto,
                attributes=(*section.attributes, Attribute("crypto", keys.local.serialize())),
            )
        sections.append(section)
        chosen = NegotiatedAudio(
            media_index=index,
            codec=replace(codec, payload_type=pt),
            telephone_event_pt=te_pt,
            telephone_event_fmtp=te_fmtp,
            remote_address=conn.host,
            remote_port=m.port,
            remote_rtcp_port=_remote_rtcp_port(m),
            direction=answer_dir,
            ptime_ms=ptime,
            remote_hold=old_hold or not offered_dir.receives,
            srtp=keys,
        )
    if chosen is None:
        raise NoCommonMediaError(
            "no offered audio stream has a codec in common with us"
            + (" and SRTP (required)" if local.srtp is SrtpMode.REQUIRE else "")
        )

    if previous_answer is not None:
        sid = previous_answer.origin.session_id
        version = previous_answer.origin.session_version
    else:
        sid = session_id if session_id is not None else _new_session_id()
        version = 0
    answer = SessionDescription(
        origin=_origin(local, sid, version),
        session_name=local.session_name,
        connection=Connection("IN", _addrtype(local.address), local.address),
        media=tuple(sections),
    )
    if previous_answer is not None and _without_version(answer) != _without_version(
        previous_answer
    ):
        answer = bump_version(answer)
    return NegotiatedAnswer(answer, chosen)


def _without_version(sdp: SessionDescription) -> SessionDescription:
    return replace(sdp, origin=replace(sdp.origin, session_version=0))


def _describe_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedAudio:
    """Re-derive the negotiated stream from an offer and the answer we gave to it."""
    for index, m in enumerate(answer.media):
        if m.port == 0 or m.media.lower() != "audio":
            continue
        om = offer.media[index]
        rm = m.rtpmap(m.formats[0])
        conn = offer.media_connection(index)
        if rm is None or conn is None:
            break
        te_fmt = next(
            (f for f in m.formats[1:] if (r := m.rtpmap(f)) and r.encoding == "telephone-event"),
            None,
        )
        offered_dir, old_hold = _offer_direction(offer, index)
        ours, theirs = m.crypto, om.crypto
        keys = next((SrtpKeys(ours[0], t) for t in theirs if ours and t.tag == ours[0].tag), None)
        return NegotiatedAudio(
            media_index=index,
            codec=Codec(rm.encoding, rm.payload_type, rm.clock_rate, rm.channels or 1),
            telephone_event_pt=int(te_fmt) if te_fmt is not None else None,
            telephone_event_fmtp=m.fmtp(te_fmt) if te_fmt is not None else None,
            remote_address=conn.host,
            remote_port=om.port,
            remote_rtcp_port=_remote_rtcp_port(om),
            direction=answer.media_direction(index),
            ptime_ms=_send_ptime(om, m.ptime_ms or DEFAULT_PTIME_MS),
            remote_hold=old_hold or not offered_dir.receives,
            srtp=keys,
        )
    raise NoCommonMediaError("previous answer has no usable audio stream")


def make_offer(
    local_addr: str,
    port: int,
    codecs: Sequence[Codec] = (PCMU, PCMA),
    *,
    telephone_event_pt: int | None = TELEPHONE_EVENT.payload_type,
    telephone_events: str = DEFAULT_TELEPHONE_EVENTS,
    ptime_ms: int = DEFAULT_PTIME_MS,
    direction: Direction = Direction.SENDRECV,
    session_id: int | None = None,
    session_version: int = 0,
    username: str = "-",
    session_name: str = "-",
    srtp: SrtpMode = SrtpMode.OFF,
    crypto: CryptoAttribute | None = None,
) -> SessionDescription:
    """An SDP offer with one audio stream (RFC 3264 5). With ``srtp`` "offer" it carries our
    SDES key on RTP/AVP, with "require" on RTP/SAVP (``crypto``, or a fresh one)."""
    if not codecs:
        raise ValueError("at least one codec is required")
    if not 0 < port <= _MAX_PORT:
        raise ValueError(f"port out of range: {port}")
    formats = [str(c.payload_type) for c in codecs]
    attrs = [
        Attribute(
            "rtpmap",
            f"{c.payload_type} {c.name}/{c.clock_rate}"
            + (f"/{c.channels}" if c.channels != 1 else ""),
        )
        for c in codecs
    ]
    if telephone_event_pt is not None:
        if str(telephone_event_pt) in formats:
            raise ValueError("telephone-event payload type collides with a codec")
        formats.append(str(telephone_event_pt))
        attrs.append(Attribute("rtpmap", f"{telephone_event_pt} telephone-event/8000"))
        attrs.append(Attribute("fmtp", f"{telephone_event_pt} {telephone_events}"))
    attrs.append(Attribute("ptime", str(ptime_ms)))
    attrs.append(Attribute(direction.value))
    if srtp is not SrtpMode.OFF:
        attrs.append(Attribute("crypto", (crypto or new_crypto()).serialize()))
    proto = "RTP/SAVP" if srtp is SrtpMode.REQUIRE else "RTP/AVP"
    sid = session_id if session_id is not None else _new_session_id()
    return SessionDescription(
        origin=Origin(username, sid, session_version, "IN", _addrtype(local_addr), local_addr),
        session_name=session_name,
        connection=Connection("IN", _addrtype(local_addr), local_addr),
        media=(MediaDescription("audio", port, proto, tuple(formats), attributes=tuple(attrs)),),
    )


_COMPATIBLE_ANSWER_DIRECTIONS = {
    # RFC 3264 6.1: what an answer may say to each offered direction.
    Direction.SENDRECV: frozenset(Direction),
    Direction.SENDONLY: frozenset({Direction.RECVONLY, Direction.INACTIVE}),
    Direction.RECVONLY: frozenset({Direction.SENDONLY, Direction.INACTIVE}),
    Direction.INACTIVE: frozenset({Direction.INACTIVE}),
}


def process_answer(
    offer: SessionDescription,
    answer: SessionDescription,
    codecs: Sequence[Codec] | None = None,
) -> NegotiatedAudio:
    """Check the answer to our offer (RFC 3264 6-7) and return the audio stream to run.

    ``codecs`` defaults to what the offer itself listed. Raises ``AnswerMismatchError``.
    """
    if len(answer.media) != len(offer.media):
        raise AnswerMismatchError(
            f"answer has {len(answer.media)} m-lines, offer had {len(offer.media)}"
        )
    chosen: NegotiatedAudio | None = None
    for index, (om, am) in enumerate(zip(offer.media, answer.media, strict=True)):
        if om.media.lower() != am.media.lower():
            raise AnswerMismatchError(f"m-line {index}: {am.media} answers {om.media}")
        if am.port == 0:
            continue
        if om.port == 0:
            raise AnswerMismatchError(f"m-line {index}: answer accepts a stream we disabled")
        extra = [f for f in am.formats if f not in om.formats]
        if extra:
            raise AnswerMismatchError(f"m-line {index}: formats {extra} were not offered")
        offered_dir = offer.media_direction(index)
        answered_dir = answer.media_direction(index)
        if answered_dir not in _COMPATIBLE_ANSWER_DIRECTIONS[offered_dir]:
            raise AnswerMismatchError(f"m-line {index}: {answered_dir} cannot answer {offered_dir}")
        if chosen is not None or om.media.lower() != "audio":
            continue
        if am.proto.upper() != om.proto.upper():
            raise AnswerMismatchError(f"m-line {index}: {am.proto} answers {om.proto}")
        keys: SrtpKeys | None = None
        if om.crypto:
            # RFC 4568 7.1.3: the answer's one crypto line names the offered tag it accepts
            offered = {c.tag: c for c in om.crypto}
            answered = am.crypto
            if answered:
                mine = offered.get(answered[0].tag)
                if mine is None or mine.suite is not answered[0].suite:
                    raise AnswerMismatchError(f"m-line {index}: crypto answers no offered tag")
                keys = SrtpKeys(mine, answered[0])
            elif _is_rtp_savp(om):
                raise AnswerMismatchError(f"m-line {index}: RTP/SAVP answered without a key")
        ours = list(codecs) if codecs is not None else _offered_codecs(om)
        picked: tuple[Codec, str] | None = None
        for fmt in am.formats:
            rm = om.rtpmap(fmt) or am.rtpmap(fmt)
            arm = am.rtpmap(fmt)
            if rm is None:
                continue
            if arm is not None and (arm.encoding.lower(), arm.clock_rate) != (
                rm.encoding.lower(),
                rm.clock_rate,
            ):
                raise AnswerMismatchError(f"m-line {index}: payload type {fmt} remapped")
            codec = next((c for c in ours if c.matches(rm)), None)
            if codec is not None:
                picked = (codec, fmt)
                break
        if picked is None:
            continue
        conn = answer.media_connection(index)
        if conn is None:
            raise AnswerMismatchError(f"m-line {index}: no c= line for the accepted stream")
        codec, fmt = picked
        te_fmt = _find_telephone_event(am, codec.clock_rate)
        if te_fmt is not None and te_fmt not in om.formats:
            te_fmt = None
        direction = answered_dir.reversed()
        chosen = NegotiatedAudio(
            media_index=index,
            codec=replace(codec, payload_type=int(fmt)),
            telephone_event_pt=int(te_fmt) if te_fmt is not None else None,
            telephone_event_fmtp=(am.fmtp(te_fmt) or om.fmtp(te_fmt)) if te_fmt else None,
            remote_address=conn.host,
            remote_port=am.port,
            remote_rtcp_port=_remote_rtcp_port(am),
            direction=direction
            if not conn.is_hold_address
            else direction.intersect(Direction.RECVONLY),
            ptime_ms=_send_ptime(am, om.ptime_ms or DEFAULT_PTIME_MS),
            remote_hold=conn.is_hold_address
            or (offered_dir is Direction.SENDRECV and not answered_dir.receives),
            srtp=keys,
        )
    if chosen is None:
        raise AnswerMismatchError("the answer accepts no audio stream with a codec we offered")
    return chosen


def _offered_codecs(m: MediaDescription) -> list[Codec]:
    out = []
    for fmt in m.formats:
        rm = m.rtpmap(fmt)
        if rm is not None and rm.encoding.lower() != "telephone-event":
            out.append(Codec(rm.encoding, rm.payload_type, rm.clock_rate, rm.channels or 1))
    return out


# -------------------------------------------------------------------------------------------
# Hold / resume (RFC 3264 8.4) and versioning (RFC 3264 8).
# -------------------------------------------------------------------------------------------


def bump_version(sdp: SessionDescription) -> SessionDescription:
    """Same session, o= version + 1: required for every changed SDP in a dialog."""
    return replace(sdp, origin=replace(sdp.origin, session_version=sdp.origin.session_version + 1))


def _with_direction(
    sdp: SessionDescription, pick: Iterable[tuple[int, Direction]]
) -> SessionDescription:
    new_dirs = dict(pick)
    media = []
    for index, m in enumerate(sdp.media):
        if index in new_dirs:
            attrs = (
                *(a for a in m.attributes if not _is_direction(a)),
                Attribute(new_dirs[index].value),
            )
            m = replace(m, attributes=attrs)
        media.append(m)
    # The session-level direction would otherwise still apply to m-lines we did not touch;
    # we move it down to each media section so the result says exactly one thing per stream.
    session_dir = sdp.direction
    session_attrs = tuple(a for a in sdp.attributes if not _is_direction(a))
    if session_dir is not None:
        media = [
            m
            if m.direction is not None or m.port == 0
            else replace(m, attributes=(*m.attributes, Attribute(session_dir.value)))
            for m in media
        ]
    return bump_version(replace(sdp, attributes=session_attrs, media=tuple(media)))


def _active_audio(sdp: SessionDescription) -> list[int]:
    return [i for i, m in enumerate(sdp.media) if m.port != 0 and m.media.lower() == "audio"]


def hold_offer(previous: SessionDescription, *, inactive: bool = False) -> SessionDescription:
    """Re-offer putting the peer on hold, from the last SDP we sent (RFC 3264 8.4).

    sendrecv becomes sendonly (we may still play music on hold), recvonly becomes inactive;
    ``inactive=True`` stops media both ways.
    """

    def held(d: Direction) -> Direction:
        return Direction.INACTIVE if inactive else d.intersect(Direction.SENDONLY)

    return _with_direction(
        previous, ((i, held(previous.media_direction(i))) for i in _active_audio(previous))
    )


def resume_offer(
    previous: SessionDescription, *, direction: Direction = Direction.SENDRECV
) -> SessionDescription:
    """Re-offer taking the peer off hold: the active audio streams go back to ``direction``."""
    return _with_direction(previous, ((i, direction) for i in _active_audio(previous)))


def is_hold(sdp: SessionDescription, index: int | None = None) -> bool:
    """Whether an offer from the peer puts us on hold: a=sendonly / a=inactive (RFC 3264 8.4)
    or the RFC 2543 style c=0.0.0.0. ``index`` defaults to the first active audio stream."""
    if index is None:
        active = _active_audio(sdp)
        if not active:
            return False
        index = active[0]
    direction, old_hold = _offer_direction(sdp, index)
    return old_hold or not direction.receives
