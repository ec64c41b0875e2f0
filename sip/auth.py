"""HTTP Digest authentication for SIP (RFC 3261 22.4, RFC 7616, RFC 8760), sans-I/O.

How this works
--------------
* Header values only. ``parse_challenge`` / ``parse_credentials`` turn a WWW-Authenticate /
  Proxy-Authenticate or Authorization / Proxy-Authorization *value* into a typed object;
  ``str(obj)`` (``serialize``) goes back. Anything malformed raises ``AuthHeaderError`` and
  nothing else, whatever the input.
* The server side is ``DigestAuthenticator``. Its nonces carry their own issue time and an
  HMAC-SHA-256 tag under a per-process secret, so checking one needs no table: forged or foreign
  nonces fail the tag, old ones are answered ``STALE`` (RFC 7616 3.3: stale only when the digest
  itself was right). The one piece of state is the highest nonce-count seen per nonce (replay
  protection, RFC 7616 3.4); that table is bounded, and a nonce pushed out of it is answered
  ``STALE`` afterwards so the bound can never reopen a replay window.
* The client side is ``DigestClient``: give it the challenge values of a 401/407 and it picks the
  strongest algorithm offered (RFC 8760 2.4: SHA-256 before MD5), counts nc per nonce and builds
  the Authorization value.
* Time comes in as ``now`` (seconds, monotonic); randomness from ``secrets`` unless injected.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "MAX_TRACKED_NONCES",
    "NONCE_LIFETIME_S",
    "AuthHeaderError",
    "AuthOutcome",
    "AuthParam",
    "AuthResult",
    "DigestAlgorithm",
    "DigestAuthenticator",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "NoUsableChallengeError",
    "Password",
    "StoredHa1",
    "UserSecret",
    "compute_ha1",
    "compute_response",
    "parse_auth_params",
    "parse_challenge",
    "parse_credentials",
    "serialize_auth_params",
]

# A nonce older than this is answered stale=true. Five minutes is what Asterisk (nonce lifetime
# 32 s, then stale) and Kamailio (auth nonce_expire 300 s) bracket; a REGISTER refresh or an
# INVITE retry always completes well inside it.
NONCE_LIFETIME_S = 300.0

# Nonce-count table bound: one entry per nonce in active use. A contact centre with a few
# thousand phones re-registering every few minutes keeps well under this; beyond it the oldest
# entries are dropped and their nonces answered stale (one extra round trip, never a replay).
MAX_TRACKED_NONCES = 16_384

# Header values longer than this are refused before parsing: real challenges are < 1 KiB and
# the SIP parser caps whole headers anyway; this keeps the quadratic cases out of reach.
MAX_HEADER_VALUE_LEN = 8192

# A client talks to a handful of realms and servers rotate nonces; the oldest counts beyond
# this are forgotten (a server then answers stale and we start that nonce afresh).
_MAX_CLIENT_NONCES = 64

_NONCE_RANDOM_BYTES = 12
_NONCE_TAG_BYTES = 16
_NC_MAX = 0xFFFFFFFF


class AuthHeaderError(ValueError):
    """A Digest header value does not follow RFC 3261 25.1 / RFC 7616 grammar.

    Raised by the parsers for any input they cannot read, including a scheme other than
    Digest. Not raised for a well-formed header that merely fails verification: that is an
    ``AuthResult``.
    """


class NoUsableChallengeError(ValueError):
    """None of the challenges offers a scheme/algorithm/qop this client implements.

    Not raised for malformed challenge values (those raise ``AuthHeaderError``).
    """


class DigestAlgorithm(enum.StrEnum):
    """RFC 7616 3.2 algorithm tokens we implement (compared case-insensitively)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @property
    def is_session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def base(self) -> DigestAlgorithm:
        return DigestAlgorithm.SHA256 if self.value.startswith("SHA") else DigestAlgorithm.MD5

    @classmethod
    def from_token(cls, token: str) -> DigestAlgorithm | None:
        return _ALGORITHMS_BY_LOWER.get(token.lower())


_ALGORITHMS_BY_LOWER = {a.value.lower(): a for a in DigestAlgorithm}
# Client preference, strongest first (RFC 8760 2.4).
_CLIENT_PREFERENCE = (
    DigestAlgorithm.SHA256,
    DigestAlgorithm.SHA256_SESS,
    DigestAlgorithm.MD5,
    DigestAlgorithm.MD5_SESS,
)


def _h(algorithm: DigestAlgorithm, data: bytes) -> str:
    name = "sha256" if algorithm.base is DigestAlgorithm.SHA256 else "md5"
    # MD5 here is the protocol's, not our choice of primitive (RFC 7616 3.2).
    return hashlib.new(name, data, usedforsecurity=False).hexdigest()


def compute_ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) for the non-session form: what a config may store."""
    return _h(algorithm, f"{username}:{realm}:{password}".encode())


def compute_response(
    *,
    algorithm: DigestAlgorithm,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 7616 3.4.1 (RFC 2069 form when ``qop`` is None).

    ``ha1`` is always the plain H(user:realm:password); the -sess step is applied here.
    """
    if algorithm.is_session:
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce or ''}".encode())
    if qop == "auth-int":
        ha2 = _h(algorithm, f"{method}:{uri}:".encode() + _h(algorithm, body).encode())
    else:
        ha2 = _h(algorithm, f"{method}:{uri}".encode())
    if qop is None:
        return _h(algorithm, f"{ha1}:{nonce}:{ha2}".encode())
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


# --------------------------------------------------------------------------------------------
# Header grammar (RFC 3261 25.1, RFC 7235 2.1):
#   challenge   = "Digest" LWS digest-cln *(COMMA digest-cln)
#   auth-param  = token EQUAL ( token / quoted-string )
#   token       = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
#   quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext      = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WS = " \t"
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# LWS = [*WSP CRLF] 1*WSP: a folded line counts as one space (RFC 3261 25.1).
_FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")


@dataclass(frozen=True, slots=True)
class AuthParam:
    """One ``name=value`` of a Digest header; ``name`` is lower-cased (names are
    case-insensitive), ``quoted`` remembers the wire form so unknown params re-emit as read."""

    name: str
    value: str
    quoted: bool


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    # text[i] is the opening DQUOTE.
    out: list[str] = []
    i += 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            nxt = text[i + 1]
            # The grammar allows escaped controls; we refuse them (no NUL or bare CR smuggled
            # into a username), keeping only an escaped tab.
            if ord(nxt) > 0x7E or (ord(nxt) < 0x20 and nxt != "\t"):
                raise AuthHeaderError(f"invalid quoted-pair at offset {i}")
            out.append(nxt)
            i += 2
            continue
        code = ord(ch)
        if (code < 0x20 and ch != "\t") or code == 0x7F:
            raise AuthHeaderError(f"control character in quoted-string at offset {i}")
        out.append(ch)
        i += 1
    raise AuthHeaderError("unterminated quoted-string")


def parse_auth_params(value: str) -> tuple[str, tuple[AuthParam, ...]]:
    """Split ``Scheme p1=v1, p2="v 2"`` into the scheme and its params, in order.

    Raises ``AuthHeaderError`` for anything outside the grammar, including a repeated
    parameter name (RFC 7235 2.1: each name MUST occur once).
    """
    if not isinstance(value, str):
        raise AuthHeaderError("header value must be str")
    if len(value) > MAX_HEADER_VALUE_LEN:
        raise AuthHeaderError("header value too long")
    if _SURROGATE_RE.search(value):
        raise AuthHeaderError("header value holds lone surrogates (not UTF-8 text)")
    text = _FOLD_RE.sub(" ", value).strip(_WS)
    m = _TOKEN_RE.match(text)
    if m is None:
        raise AuthHeaderError("missing auth scheme")
    scheme = m.group()
    i = m.end()
    params: list[AuthParam] = []
    seen: set[str] = set()
    n = len(text)
    if i < n and text[i] not in _WS:
        raise AuthHeaderError("auth scheme must be followed by whitespace")
    i = _skip_ws(text, i)
    expect_param = True
    while i < n:
        if text[i] == ",":
            # Empty list elements are allowed by the #rule (RFC 7230 7).
            i = _skip_ws(text, i + 1)
            expect_param = True
            continue
        if not expect_param:
            raise AuthHeaderError(f"expected ',' at offset {i}")
        m = _TOKEN_RE.match(text, i)
        if m is None:
            raise AuthHeaderError(f"expected parameter name at offset {i}")
        name = m.group().lower()
        i = _skip_ws(text, m.end())
        if i >= n or text[i] != "=":
            raise AuthHeaderError(f"parameter {name!r} has no '='")
        i = _skip_ws(text, i + 1)
        if i < n and text[i] == '"':
            val, i = _read_quoted(text, i)
            quoted = True
        else:
            m = _TOKEN_RE.match(text, i)
            if m is None:
                raise AuthHeaderError(f"parameter {name!r} has no value")
            val, i, quoted = m.group(), m.end(), False
        if name in seen:
            raise AuthHeaderError(f"parameter {name!r} repeated")
        seen.add(name)
        params.append(AuthParam(name, val, quoted))
        i = _skip_ws(text, i)
        expect_param = False
    return scheme, tuple(params)


def _quote(value: str) -> str:
    # Never let a value smuggle CR/LF (a new header line) or other controls onto the wire.
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise AuthHeaderError(f"control character in value {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_auth_params(scheme: str, params: Iterable[AuthParam]) -> str:
    """Inverse of ``parse_auth_params``. Values marked unquoted must be tokens."""
    parts: list[str] = []
    for p in params:
        if p.quoted:
            parts.append(f"{p.name}={_quote(p.value)}")
        else:
            if _TOKEN_RE.fullmatch(p.value) is None:
                raise AuthHeaderError(f"parameter {p.name!r} is not a token: {p.value!r}")
            parts.append(f"{p.name}={p.value}")
    return f"{scheme} " + ", ".join(parts) if parts else scheme


def _require_digest(scheme: str) -> None:
    if scheme.lower() != "digest":
        raise AuthHeaderError(f"unsupported auth scheme {scheme!r}")


def _bool_param(p: AuthParam) -> bool:
    low = p.value.lower()
    if low not in ("true", "false"):
        raise AuthHeaderError(f"{p.name} must be true or false, got {p.value!r}")
    return low == "true"


# --------------------------------------------------------------------------------------------
# Typed challenge and credentials.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A WWW-Authenticate / Proxy-Authenticate value (RFC 7616 3.3).

    ``algorithm`` keeps the token as received (an unknown algorithm is not a syntax error);
    ``extra`` holds parameters we do not interpret, re-emitted as read.
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False
    charset: str | None = None
    algorithm_given: bool = True
    extra: tuple[AuthParam, ...] = ()

    def params(self) -> tuple[AuthParam, ...]:
        out = [AuthParam("realm", self.realm, True)]
        if self.domain is not None:
            out.append(AuthParam("domain", self.domain, True))
        out.append(AuthParam("nonce", self.nonce, True))
        if self.opaque is not None:
            out.append(AuthParam("opaque", self.opaque, True))
        if self.stale:
            out.append(AuthParam("stale", "true", False))
        if self.algorithm_given:
            out.append(AuthParam("algorithm", self.algorithm, False))
        if self.qop:
            out.append(AuthParam("qop", ",".join(self.qop), True))
        if self.charset is not None:
            out.append(AuthParam("charset", self.charset, False))
        if self.userhash:
            out.append(AuthParam("userhash", "true", False))
        out.extend(self.extra)
        return tuple(out)

    def serialize(self) -> str:
        return serialize_auth_params("Digest", self.params())

    def __str__(self) -> str:
        return self.serialize()


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """An Authorization / Proxy-Authorization value (RFC 7616 3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    algorithm_given: bool = True
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False
    extra: tuple[AuthParam, ...] = ()

    def params(self) -> tuple[AuthParam, ...]:
        out = [
            AuthParam("username", self.username, True),
            AuthParam("realm", self.realm, True),
            AuthParam("nonce", self.nonce, True),
            AuthParam("uri", self.uri, True),
            AuthParam("response", self.response, True),
        ]
        if self.algorithm_given:
            out.append(AuthParam("algorithm", self.algorithm, False))
        if self.cnonce is not None:
            out.append(AuthParam("cnonce", self.cnonce, True))
        if self.opaque is not None:
            out.append(AuthParam("opaque", self.opaque, True))
        if self.qop is not None:
            out.append(AuthParam("qop", self.qop, False))
        if self.nc is not None:
            out.append(AuthParam("nc", self.nc, False))
        if self.userhash:
            out.append(AuthParam("userhash", "true", False))
        out.extend(self.extra)
        return tuple(out)

    def serialize(self) -> str:
        return serialize_auth_params("Digest", self.params())

    def __str__(self) -> str:
        return self.serialize()


_QOP_SPLIT_RE = re.compile(r"[ \t]*,[ \t]*")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")


def parse_challenge(value: str) -> DigestChallenge:
    """Parse one WWW-Authenticate / Proxy-Authenticate value. Raises ``AuthHeaderError``."""
    scheme, params = parse_auth_params(value)
    _require_digest(scheme)
    known: dict[str, AuthParam] = {}
    extra: list[AuthParam] = []
    for p in params:
        if p.name in (
            "realm",
            "nonce",
            "algorithm",
            "qop",
            "opaque",
            "stale",
            "domain",
            "userhash",
            "charset",
        ):
            known[p.name] = p
        else:
            extra.append(p)
    if "realm" not in known or "nonce" not in known:
        raise AuthHeaderError("challenge lacks realm or nonce")
    qop: tuple[str, ...] = ()
    if "qop" in known:
        items = tuple(q for q in _QOP_SPLIT_RE.split(known["qop"].value.strip(_WS)) if q)
        if not items or any(_TOKEN_RE.fullmatch(q) is None for q in items):
            raise AuthHeaderError(f"bad qop list {known['qop'].value!r}")
        qop = tuple(q.lower() for q in items)
    algorithm = known.get("algorithm")
    if algorithm is not None and _TOKEN_RE.fullmatch(algorithm.value) is None:
        raise AuthHeaderError(f"bad algorithm {algorithm.value!r}")
    return DigestChallenge(
        realm=known["realm"].value,
        nonce=known["nonce"].value,
        algorithm=algorithm.value if algorithm is not None else "MD5",
        algorithm_given=algorithm is not None,
        qop=qop,
        opaque=known["opaque"].value if "opaque" in known else None,
        stale=_bool_param(known["stale"]) if "stale" in known else False,
        domain=known["domain"].value if "domain" in known else None,
        userhash=_bool_param(known["userhash"]) if "userhash" in known else False,
        charset=_token_value(known["charset"]) if "charset" in known else None,
        extra=tuple(extra),
    )


def _token_value(p: AuthParam) -> str:
    if _TOKEN_RE.fullmatch(p.value) is None:
        raise AuthHeaderError(f"{p.name} must be a token, got {p.value!r}")
    return p.value


def parse_credentials(value: str) -> DigestCredentials:
    """Parse one Authorization / Proxy-Authorization value. Raises ``AuthHeaderError``."""
    scheme, params = parse_auth_params(value)
    _require_digest(scheme)
    known: dict[str, AuthParam] = {}
    extra: list[AuthParam] = []
    for p in params:
        if p.name in (
            "username",
            "realm",
            "nonce",
            "uri",
            "response",
            "algorithm",
            "cnonce",
            "opaque",
            "qop",
            "nc",
            "userhash",
        ):
            known[p.name] = p
        else:
            extra.append(p)
    missing = [n for n in ("username", "realm", "nonce", "uri", "response") if n not in known]
    if missing:
        raise AuthHeaderError(f"credentials lack {', '.join(missing)}")
    qop = _token_value(known["qop"]).lower() if "qop" in known else None
    nc = known["nc"].value if "nc" in known else None
    if nc is not None and _NC_RE.fullmatch(nc) is None:
        raise AuthHeaderError(f"nc must be 8 hex digits, got {nc!r}")
    cnonce = known["cnonce"].value if "cnonce" in known else None
    # RFC 7616 3.4: with qop, cnonce and nc MUST be sent; without it they MUST NOT.
    if qop is not None and (cnonce is None or nc is None):
        raise AuthHeaderError("qop given without cnonce and nc")
    algorithm = known.get("algorithm")
    return DigestCredentials(
        username=known["username"].value,
        realm=known["realm"].value,
        nonce=known["nonce"].value,
        uri=known["uri"].value,
        response=known["response"].value,
        algorithm=_token_value(algorithm) if algorithm is not None else "MD5",
        algorithm_given=algorithm is not None,
        cnonce=cnonce,
        opaque=known["opaque"].value if "opaque" in known else None,
        qop=qop,
        nc=nc,
        userhash=_bool_param(known["userhash"]) if "userhash" in known else False,
        extra=tuple(extra),
    )


# --------------------------------------------------------------------------------------------
# Server side.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Password:
    """The user's plaintext password."""

    password: str


@dataclass(frozen=True, slots=True)
class StoredHa1:
    """Pre-computed H(username:realm:password) per base algorithm, so configs need not hold
    plaintext. Keys are ``DigestAlgorithm.MD5`` / ``DigestAlgorithm.SHA256``."""

    ha1_by_algorithm: Mapping[DigestAlgorithm, str]


UserSecret = Password | StoredHa1
SecretLookup = Callable[[str], UserSecret | None]


class AuthOutcome(enum.Enum):
    OK = "ok"
    STALE = "stale"  # digest right, nonce too old: challenge again with stale=true
    BAD_CREDENTIALS = "bad_credentials"  # wrong password, unknown user, replay, foreign nonce
    MISSING = "missing"  # no credentials at all: plain challenge
    MALFORMED = "malformed"  # unreadable header: 400 or a plain challenge


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


_MISSING = AuthResult(AuthOutcome.MISSING, reason="no credentials")
_STALE = AuthResult(AuthOutcome.STALE, reason="nonce expired")


def _bad(reason: str, username: str | None = None) -> AuthResult:
    return AuthResult(AuthOutcome.BAD_CREDENTIALS, username, reason)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes | None:
    if not text.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None
    # The decoder skips junk characters; insist on the one canonical spelling.
    return raw if _b64e(raw) == text else None


@dataclass(slots=True)
class DigestAuthenticator:
    """Issues Digest challenges for one realm and verifies the answers (RFC 7616 3.3-3.4).

    ``secret`` keys the nonce HMAC; it defaults to 32 fresh random bytes, so nonces do not
    survive a restart (clients then get one more 401, never a wrong accept).
    """

    realm: str
    algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
    qop_options: tuple[str, ...] = ("auth",)
    nonce_lifetime_s: float = NONCE_LIFETIME_S
    max_tracked_nonces: int = MAX_TRACKED_NONCES
    check_uri: bool = True
    allow_rfc2069: bool = False
    opaque: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    random_bytes: Callable[[int], bytes] = secrets.token_bytes
    userhash_lookup: Callable[[str], tuple[str, UserSecret] | None] | None = None
    _nc_seen: OrderedDict[str, int] = field(default_factory=OrderedDict, init=False, repr=False)
    _evicted_up_to_ms: int = field(default=-(2**63), init=False)

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("at least one algorithm is required")
        for q in self.qop_options:
            if q not in ("auth", "auth-int"):
                raise ValueError(f"unsupported qop {q!r}")
        if not self.qop_options and not self.allow_rfc2069:
            raise ValueError("qop_options empty needs allow_rfc2069")
        if self.max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be positive")

    # -- nonces ------------------------------------------------------------------------------

    def _tag(self, body: bytes) -> bytes:
        mac = hmac.new(self.secret, self.realm.encode() + b"\0" + body, hashlib.sha256)
        return mac.digest()[:_NONCE_TAG_BYTES]

    def new_nonce(self, now: float) -> str:
        body = struct.pack(">q", int(now * 1000)) + self.random_bytes(_NONCE_RANDOM_BYTES)
        return _b64e(body + self._tag(body))

    def _nonce_issued_ms(self, nonce: str) -> int | None:
        """Issue time of one of our nonces, or None when the tag does not verify."""
        raw = _b64d(nonce)
        if raw is None or len(raw) != 8 + _NONCE_RANDOM_BYTES + _NONCE_TAG_BYTES:
            return None
        body, tag = raw[:-_NONCE_TAG_BYTES], raw[-_NONCE_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            return None
        issued_ms: int = struct.unpack(">q", body[:8])[0]
        return issued_ms

    # -- challenges --------------------------------------------------------------------------

    def challenge(self, now: float, *, stale: bool = False) -> list[str]:
        """Header values for a 401/407, strongest algorithm first (RFC 8760 2.4)."""
        nonce = self.new_nonce(now)
        return [
            DigestChallenge(
                realm=self.realm,
                nonce=nonce,
                algorithm=a.value,
                qop=self.qop_options,
                opaque=self.opaque,
                stale=stale,
                userhash=self.userhash_lookup is not None,
            ).serialize()
            for a in self.algorithms
        ]

    # -- verification ------------------------------------------------------------------------

    def verify(
        self,
        credentials: str | None,
        *,
        method: str,
        request_uri: str,
        lookup: SecretLookup,
        now: float,
        body: bytes = b"",
    ) -> AuthResult:
        """Check one Authorization value against this realm. Never raises for peer input."""
        if credentials is None or not credentials.strip():
            return _MISSING
        try:
            cred = parse_credentials(credentials)
        except AuthHeaderError as exc:
            return AuthResult(AuthOutcome.MALFORMED, reason=str(exc))
        return self.verify_parsed(
            cred, method=method, request_uri=request_uri, lookup=lookup, now=now, body=body
        )

    def verify_parsed(
        self,
        cred: DigestCredentials,
        *,
        method: str,
        request_uri: str,
        lookup: SecretLookup,
        now: float,
        body: bytes = b"",
    ) -> AuthResult:
        if cred.realm != self.realm:
            return _bad("realm mismatch")
        algorithm = DigestAlgorithm.from_token(cred.algorithm)
        if algorithm is None or algorithm not in self.algorithms:
            return _bad(f"algorithm {cred.algorithm!r} not offered")
        if cred.qop is None:
            if not self.allow_rfc2069:
                return _bad("qop required")
        elif cred.qop not in self.qop_options:
            return _bad(f"qop {cred.qop!r} not offered")
        if self.opaque is not None and cred.opaque != self.opaque:
            return _bad("opaque mismatch")
        if self.check_uri and cred.uri.strip().lower() != request_uri.strip().lower():
            return _bad("uri does not match the request-URI")
        issued_ms = self._nonce_issued_ms(cred.nonce)
        if issued_ms is None:
            return _bad("nonce not issued by us")

        username = cred.username
        secret: UserSecret | None
        if cred.userhash:
            if self.userhash_lookup is None:
                return _bad("userhash not offered")
            found = self.userhash_lookup(cred.username)
            if found is None:
                return _bad("unknown user")
            username, secret = found
        else:
            secret = lookup(username)
        if secret is None:
            # Spend the same hashing as for a real user so timing does not reveal who exists.
            compute_response(
                algorithm=algorithm,
                ha1=_h(algorithm, b"\0"),
                nonce=cred.nonce,
                method=method,
                uri=cred.uri,
                qop=cred.qop,
                nc=cred.nc,
                cnonce=cred.cnonce,
                body=body,
            )
            return _bad("unknown user", username)
        if isinstance(secret, Password):
            ha1 = compute_ha1(algorithm.base, username, self.realm, secret.password)
        else:
            stored = secret.ha1_by_algorithm.get(algorithm.base)
            if stored is None:
                return _bad(f"no stored HA1 for {algorithm.base.value}", username)
            ha1 = stored.lower()
        expected = compute_response(
            algorithm=algorithm,
            ha1=ha1,
            nonce=cred.nonce,
            method=method,
            uri=cred.uri,
            qop=cred.qop,
            nc=cred.nc,
            cnonce=cred.cnonce,
            body=body,
        )
        if not hmac.compare_digest(expected.encode(), cred.response.lower().encode("utf-8")):
            return _bad("wrong response", username)

        # Only now, with a correct digest, may the answer be stale (RFC 7616 3.3 "stale").
        if now * 1000 - issued_ms > self.nonce_lifetime_s * 1000 or issued_ms > now * 1000 + 1:
            return _STALE
        if cred.nc is not None and not self._accept_nc(cred.nonce, int(cred.nc, 16), issued_ms):
            if issued_ms <= self._evicted_up_to_ms and cred.nonce not in self._nc_seen:
                return _STALE
            return _bad("nonce count replayed", username)
        return AuthResult(AuthOutcome.OK, username)

    def _accept_nc(self, nonce: str, nc: int, issued_ms: int) -> bool:
        if nc == 0:
            return False
        last = self._nc_seen.get(nonce)
        if last is None:
            if issued_ms <= self._evicted_up_to_ms:
                # Its history may have been dropped: refuse rather than reopen a replay window.
                return False
        elif nc <= last:
            return False
        self._nc_seen[nonce] = nc
        self._nc_seen.move_to_end(nonce)
        while len(self._nc_seen) > self.max_tracked_nonces:
            old_nonce, _ = self._nc_seen.popitem(last=False)
            old_ms = self._nonce_issued_ms(old_nonce)
            if old_ms is not None:
                self._evicted_up_to_ms = max(self._evicted_up_to_ms, old_ms)
        return True

    @property
    def tracked_nonces(self) -> int:
        return len(self._nc_seen)


# --------------------------------------------------------------------------------------------
# Client side.
# --------------------------------------------------------------------------------------------


def _default_cnonce() -> str:
    return secrets.token_hex(16)


@dataclass(slots=True)
class DigestClient:
    """Answers 401/407 challenges for one account (RFC 3261 22.2-22.3, RFC 8760 2.4)."""

    username: str
    password: str = field(repr=False)
    cnonce_factory: Callable[[], str] = _default_cnonce
    _nc_by_nonce: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @staticmethod
    def choose(challenges: Sequence[str] | str) -> tuple[DigestChallenge, DigestAlgorithm]:
        """The strongest usable challenge. Unparseable ones are skipped if another is usable."""
        if isinstance(challenges, str):
            challenges = [challenges]
        usable: list[tuple[int, DigestChallenge, DigestAlgorithm]] = []
        first_error: AuthHeaderError | None = None
        for value in challenges:
            try:
                ch = parse_challenge(value)
            except AuthHeaderError as exc:
                first_error = first_error or exc
                continue
            algorithm = DigestAlgorithm.from_token(ch.algorithm)
            if algorithm is None:
                continue
            if ch.qop and not ({"auth", "auth-int"} & set(ch.qop)):
                continue
            usable.append((_CLIENT_PREFERENCE.index(algorithm), ch, algorithm))
        if not usable:
            if first_error is not None:
                raise first_error
            raise NoUsableChallengeError("no Digest challenge with a supported algorithm")
        usable.sort(key=lambda t: t[0])
        return usable[0][1], usable[0][2]

    def authorize(
        self,
        challenges: Sequence[str] | str,
        *,
        method: str,
        uri: str,
        body: bytes = b"",
    ) -> str:
        """The Authorization / Proxy-Authorization value answering ``challenges``."""
        ch, algorithm = self.choose(challenges)
        qop: str | None = None
        if ch.qop:
            qop = "auth" if "auth" in ch.qop else "auth-int"
        nc: str | None = None
        cnonce: str | None = None
        if qop is not None or algorithm.is_session:
            cnonce = self.cnonce_factory()
        if qop is not None:
            count = self._nc_by_nonce.get(ch.nonce, 0) + 1
            if count > _NC_MAX:
                raise NoUsableChallengeError("nonce count exhausted for this nonce")
            self._nc_by_nonce[ch.nonce] = count
            while len(self._nc_by_nonce) > _MAX_CLIENT_NONCES:
                del self._nc_by_nonce[next(iter(self._nc_by_nonce))]
            nc = f"{count:08x}"
        username = self.username
        if ch.userhash:
            username = _h(algorithm, f"{self.username}:{ch.realm}".encode())
        ha1 = compute_ha1(algorithm.base, self.username, ch.realm, self.password)
        response = compute_response(
            algorithm=algorithm,
            ha1=ha1,
            nonce=ch.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        return DigestCredentials(
            username=username,
            realm=ch.realm,
            nonce=ch.nonce,
            uri=uri,
            response=response,
            algorithm=ch.algorithm,
            algorithm_given=ch.algorithm_given,
            cnonce=cnonce,
            opaque=ch.opaque,
            qop=qop,
            nc=nc,
            userhash=ch.userhash,
        ).serialize()
