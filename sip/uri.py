"""SIP, SIPS and tel URIs: parsing, rendering and RFC 3261 19.1.4 comparison.

How this works: `Uri.parse` matches one of three compiled regexes (sip/sips with or without userinfo,
tel per RFC 3966) and keeps any other absoluteURI as an opaque value (so the UAS can answer 416 from
`uri.scheme`). Escapes (%HH) are decoded once at parse time into `user`, `password`, parameter and
header values; `str(uri)` returns the exact text received, or renders (re-escaping) for a URI built
in code or derived with `replace()`. Parameter and header *names* are lower-cased, so lookups are
case-insensitive; comparison follows 19.1.4: scheme, host, parameter names and values are compared
case-insensitively (``transport=UDP`` equals ``transport=udp``), userinfo case-sensitively, and a
port or one of the parameters user/ttl/method/maddr/transport present on one side only makes the
URIs differ. IPv6 hosts keep their brackets (``host == "[2001:db8::1]"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, unquote

from sip import _abnf
from sip.errors import ParseError

__all__ = ["Uri"]

Params = tuple[tuple[str, str | None], ...]

# RFC 3261 19.1.4: these parameters, present in one URI only, make two URIs differ.
_STRICT_PARAMS: Final = frozenset({"user", "ttl", "method", "maddr", "transport"})
_USER_SAFE: Final = "-_.!~*'()&=+$,;?/"
_PASSWORD_SAFE: Final = "-_.!~*'()&=+$,"  # noqa: S105 (grammar, not a secret)
_PARAM_SAFE: Final = "-_.!~*'()[]/:&+$"
_HEADER_SAFE: Final = "-_.!~*'()[]/?:+$"
_TEL_SEPARATORS: Final = str.maketrans("", "", "-.()")


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    if _abnf.BAD_ESCAPE_RE.search(text):
        raise ParseError("bad %-escape in URI", reason="bad_header")
    return unquote(text, errors="surrogateescape")


def _parse_params(text: str) -> Params:
    if not text:
        return ()
    if "%" not in text:  # validated by the URI regex: ";" and "=" are separators only
        out = []
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            out.append((name.lower(), value if eq else None))
        return tuple(out)
    return tuple(
        [
            (_unescape(name).lower(), _unescape(value) if value else None)
            for name, value in _abnf.URI_PARAM_RE.findall(text)
        ]
    )


def _parse_headers(text: str | None) -> Params:
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for item in text.split("&"):
        name, _, value = item.partition("=")
        out.append((_unescape(name).lower(), _unescape(value)))
    return tuple(out)


def _params_ci(params: Params) -> dict[str, str | None]:
    return {k: (v.lower() if v is not None else None) for k, v in params}


class Uri:
    """An absolute URI as used in SIP: sip/sips (RFC 3261 19.1), tel (RFC 3966), or opaque other.

    Treat instances as immutable; derive changed copies with `replace()`. For tel URIs the number is
    in `user` and `host` is empty; for other schemes everything after "scheme:" is in `opaque`.
    """

    __slots__ = (
        "_headers",
        "_params",
        "_params_text",
        "_text",
        "host",
        "opaque",
        "password",
        "port",
        "scheme",
        "user",
    )

    def __init__(
        self,
        scheme: str = "sip",
        *,
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: Iterable[tuple[str, str | None]] = (),
        headers: Iterable[tuple[str, str | None]] = (),
        opaque: str | None = None,
        _text: str | None = None,
    ) -> None:
        self.scheme: Final = scheme.lower()
        self.user: Final = user
        self.password: Final = password
        self.host: Final = host
        self.port: Final = port
        self._params: Params | None = tuple([(k.lower(), v) for k, v in params]) if params else ()
        self._headers: Params | None = (
            tuple([(k.lower(), v) for k, v in headers]) if headers else ()
        )
        self._params_text: str | None = None
        self.opaque: Final = opaque
        self._text = _text

    @classmethod
    def _parsed(
        cls,
        text: str,
        scheme: str,
        user: str | None,
        host: str,
        port: str | None,
        params: str | None,
        headers: str | None = None,
        password: str | None = None,
    ) -> Uri:
        # Internal constructor for the parse path: the regex already validated every part.
        self = cls.__new__(cls)
        self.scheme = scheme if scheme == "sip" else scheme.lower()  # type: ignore[misc]
        self.user = _unescape(user) if user and "%" in user else user  # type: ignore[misc]
        self.password = (  # type: ignore[misc]
            _unescape(password) if password and "%" in password else password
        )
        self.host = host  # type: ignore[misc]
        self.port = None if port is None else _port(port)  # type: ignore[misc]
        # Parameters and headers are split on first access (most URIs are only compared or
        # forwarded); escapes are checked now so a bad one still fails the parse.
        if params and "%" in params:
            self._params = _parse_params(params)
            self._params_text = None
        else:
            self._params = None if params else ()
            self._params_text = params
        if headers:
            self._headers = _parse_headers(headers)
        else:
            self._headers = ()
        self.opaque = None  # type: ignore[misc]
        self._text = text
        return self

    # -- parsing -------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Uri:
        """Parse an absoluteURI; raises ParseError(400, "bad_header") if it is not one."""
        if "@" in text:
            m = _abnf.SIP_URI_USER_RE.fullmatch(text)
            if m is not None:
                scheme, user, password, host, port, params, headers = m.groups()
                if headers is None and "%" not in text and (port is None or len(port) < 5):
                    # The usual shape: nothing to unescape, a port that cannot exceed 65535.
                    # Same fields as `_parsed` sets, without its checks.
                    self = cls.__new__(cls)
                    self.scheme = scheme if scheme == "sip" else scheme.lower()  # type: ignore[misc]
                    self.user = user  # type: ignore[misc]
                    self.password = password  # type: ignore[misc]
                    self.host = host  # type: ignore[misc]
                    self.port = None if port is None else int(port)  # type: ignore[misc]
                    self._params = None if params else ()
                    self._params_text = params
                    self._headers = ()
                    self.opaque = None  # type: ignore[misc]
                    self._text = text
                    return self
                return cls._parsed(text, scheme, user, host, port, params, headers, password)
        else:
            m = _abnf.SIP_URI_NOUSER_RE.fullmatch(text)
            if m is not None:
                scheme, host, port, params, headers = m.groups()
                return cls._parsed(text, scheme, None, host, port, params, headers)
        m = _abnf.TEL_URI_RE.fullmatch(text)
        if m is not None:
            scheme, number, params = m.groups()
            return cls(scheme, user=_unescape(number), params=_parse_params(params), _text=text)
        m = _abnf.ABSOLUTE_URI_RE.fullmatch(text)
        if m is None or m.group(1).lower() in ("sip", "sips", "tel"):
            raise ParseError(f"not a valid URI: {text[:80]!r}", reason="bad_header")
        return cls(m.group(1), opaque=m.group(2), _text=text)

    @property
    def params(self) -> Params:
        """URI parameters as ((lower-case name, value or None for a flag), ...), in order."""
        params = self._params
        if params is None:
            params = self._params = _parse_params(self._params_text or "")
        return params

    @property
    def headers(self) -> Params:
        """URI headers (after "?") as ((lower-case name, value), ...), in order."""
        headers = self._headers
        return () if headers is None else headers

    # -- queries -------------------------------------------------------------------------------

    @property
    def is_sip(self) -> bool:
        """True for sip: and sips: URIs."""
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> str | None:
        """Value of URI parameter `name` (case-insensitive); "" for a flag; None if absent."""
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return "" if value is None else value
        return None

    def has_param(self, name: str) -> bool:
        return self.param(name) is not None

    @property
    def transport(self) -> str | None:
        """The transport parameter, lower-cased (``;transport=UDP`` gives "udp")."""
        value = self.param("transport")
        return value.lower() if value else None

    def replace(self, **changes: object) -> Uri:
        """A copy with some fields changed (same keywords as the constructor); re-rendered."""
        fields: dict[str, object] = {
            "user": self.user,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "params": self.params,
            "headers": self.headers,
            "opaque": self.opaque,
        }
        scheme = changes.pop("scheme", self.scheme)
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown Uri fields: {sorted(unknown)}")
        fields.update(changes)
        return Uri(str(scheme), **fields)  # type: ignore[arg-type]

    def with_param(self, name: str, value: str | None = None) -> Uri:
        """A copy with parameter `name` set (replacing any existing one)."""
        key = name.lower()
        params = (*(p for p in self.params if p[0] != key), (key, value))
        return self.replace(params=params)

    # -- rendering -----------------------------------------------------------------------------

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._text = self._render()
        return text

    def _render(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(quote(self.user or "", safe="+-.()*#", errors="surrogateescape"))
        else:
            if self.user is not None:
                parts.append(quote(self.user, safe=_USER_SAFE, errors="surrogateescape"))
                if self.password is not None:
                    parts += (
                        ":",
                        quote(self.password, safe=_PASSWORD_SAFE, errors="surrogateescape"),
                    )
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts.append(f":{self.port}")
        for key, value in self.params:
            parts += (";", quote(key, safe=_PARAM_SAFE, errors="surrogateescape"))
            if value is not None:
                parts += ("=", quote(value, safe=_PARAM_SAFE, errors="surrogateescape"))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(
                    quote(k, safe=_HEADER_SAFE, errors="surrogateescape")
                    + "="
                    + quote(v or "", safe=_HEADER_SAFE, errors="surrogateescape")
                    for k, v in self.headers
                )
            )
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Uri({str(self)!r})"

    # -- comparison (RFC 3261 19.1.4) ----------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Uri):
            return NotImplemented
        if self.scheme != other.scheme:
            return False  # also: a SIP and a SIPS URI are never equivalent
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if self.scheme == "tel":
            return _tel_number(self.user) == _tel_number(other.user) and _params_ci(
                self.params
            ) == _params_ci(other.params)
        if (
            self.user != other.user
            or self.password != other.password
            or self.host.lower() != other.host.lower()
            or self.port != other.port
        ):
            return False
        mine, theirs = _params_ci(self.params), _params_ci(other.params)
        for key in mine.keys() | theirs.keys():
            if key in mine and key in theirs:
                if mine[key] != theirs[key]:
                    return False
            elif key in _STRICT_PARAMS:
                return False
        return _params_ci(self.headers) == _params_ci(other.headers)

    def __hash__(self) -> int:
        if self.opaque is not None:
            return hash((self.scheme, self.opaque))
        if self.scheme == "tel":
            return hash((self.scheme, _tel_number(self.user)))
        return hash((self.scheme, self.user, self.host.lower(), self.port))


def _tel_number(number: str | None) -> str:
    return (number or "").translate(_TEL_SEPARATORS).lower()


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    port = int(text)
    if port > 65535:
        raise ParseError("port out of range", reason="bad_header")
    return port
