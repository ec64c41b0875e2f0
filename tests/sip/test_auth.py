"""Digest authentication: RFC 7616 vectors, parser properties, server and client behaviour."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.auth import (
    AuthHeaderError,
    AuthOutcome,
    AuthParam,
    AuthResult,
    DigestAlgorithm,
    DigestAuthenticator,
    DigestClient,
    NoUsableChallengeError,
    Password,
    StoredHa1,
    UserSecret,
    compute_ha1,
    compute_response,
    parse_auth_params,
    parse_challenge,
    parse_credentials,
    serialize_auth_params,
)

# RFC 7616 section 3.9.1, verbatim inputs and published responses.
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_MD5_RESPONSE = "8ca523f5e9506fed4657c9700eebdbec"
RFC_SHA256_RESPONSE = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"

RFC_CHALLENGE_SHA256 = (
    'Digest\n    realm="http-auth@example.org",\n    qop="auth, auth-int",\n'
    "    algorithm=SHA-256,\n"
    '    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\n'
    '    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC_AUTHORIZATION_MD5 = (
    'Digest username="Mufasa",\n    realm="http-auth@example.org",\n'
    '    uri="/dir/index.html",\n    algorithm=MD5,\n'
    '    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\n'
    "    nc=00000001,\n"
    '    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",\n'
    "    qop=auth,\n"
    '    response="8ca523f5e9506fed4657c9700eebdbec",\n'
    '    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [(DigestAlgorithm.MD5, RFC_MD5_RESPONSE), (DigestAlgorithm.SHA256, RFC_SHA256_RESPONSE)],
)
def test_rfc7616_example_response(algorithm: DigestAlgorithm, expected: str) -> None:
    ha1 = compute_ha1(algorithm, "Mufasa", RFC_REALM, "Circle of Life")
    got = compute_response(
        algorithm=algorithm,
        ha1=ha1,
        nonce=RFC_NONCE,
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce=RFC_CNONCE,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [("MD5", RFC_MD5_RESPONSE), ("SHA-256", RFC_SHA256_RESPONSE)],
)
def test_client_reproduces_rfc7616_example(algorithm: str, expected: str) -> None:
    challenge = RFC_CHALLENGE_SHA256.replace("SHA-256", algorithm)
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC_CNONCE)
    value = client.authorize(challenge, method="GET", uri="/dir/index.html")
    cred = parse_credentials(value)
    assert cred.response == expected
    assert cred.nc == "00000001"
    assert cred.qop == "auth"
    assert cred.opaque == RFC_OPAQUE
    assert cred.cnonce == RFC_CNONCE
    assert cred.algorithm == algorithm


def test_parse_rfc7616_authorization_example() -> None:
    cred = parse_credentials(RFC_AUTHORIZATION_MD5.replace("\n", "\r\n"))
    assert cred.username == "Mufasa"
    assert cred.realm == RFC_REALM
    assert cred.uri == "/dir/index.html"
    assert cred.algorithm == "MD5"
    assert cred.nonce == RFC_NONCE
    assert cred.nc == "00000001"
    assert cred.cnonce == RFC_CNONCE
    assert cred.qop == "auth"
    assert cred.response == RFC_MD5_RESPONSE
    assert cred.opaque == RFC_OPAQUE


def test_parse_challenge_fields_and_unknown_params() -> None:
    ch = parse_challenge(
        'DIGEST REALM="a\\"b, c", Nonce=abc, qop="auth,auth-int", stale=TRUE, '
        'algorithm=sha-256, x-custom="kept, verbatim", flag=yes'
    )
    assert ch.realm == 'a"b, c'
    assert ch.nonce == "abc"
    assert ch.qop == ("auth", "auth-int")
    assert ch.stale is True
    assert DigestAlgorithm.from_token(ch.algorithm) is DigestAlgorithm.SHA256
    assert ch.extra == (
        AuthParam("x-custom", "kept, verbatim", True),
        AuthParam("flag", "yes", False),
    )
    again = parse_challenge(ch.serialize())
    assert again == ch
    assert 'x-custom="kept, verbatim"' in ch.serialize()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Digest",
        'Digest realm="unterminated',
        "Digest realm",
        "Digest realm=",
        'Digest realm="a" nonce="b"',
        'Digest realm="a", realm="b", nonce="c"',
        'Basic realm="a"',
        'Digest nonce="x"',
        'Digest realm="a", nonce="b", stale=maybe',
        'Digest realm="a\x01", nonce="b"',
        'Digest realm="a", nonce="b", qop=""',
        ',Digest realm="a", nonce="b"',
    ],
)
def test_malformed_challenges_raise_auth_header_error(bad: str) -> None:
    with pytest.raises(AuthHeaderError):
        parse_challenge(bad)


@pytest.mark.parametrize(
    "bad",
    [
        'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, '
        'cnonce="c", nc=1',
    ],
)
def test_malformed_credentials_raise_auth_header_error(bad: str) -> None:
    with pytest.raises(AuthHeaderError):
        parse_credentials(bad)


def test_serializer_refuses_header_injection() -> None:
    with pytest.raises(AuthHeaderError):
        serialize_auth_params("Digest", [AuthParam("realm", "x\r\nVia: evil", True)])
    with pytest.raises(AuthHeaderError):
        serialize_auth_params("Digest", [AuthParam("nc", "not a token", False)])


_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_token = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=12)
_name = _token.map(str.lower)
_quoted_value = st.text(
    alphabet=st.characters(
        blacklist_characters="\r\n\x7f",
        min_codepoint=0x09,
        codec="utf-8",
    ).filter(lambda c: c == "\t" or ord(c) >= 0x20),
    max_size=20,
)


@st.composite
def _param_lists(draw: st.DrawFn) -> list[AuthParam]:
    names = draw(st.lists(_name, unique=True, max_size=6))
    out = []
    for n in names:
        if draw(st.booleans()):
            out.append(AuthParam(n, draw(_quoted_value), True))
        else:
            out.append(AuthParam(n, draw(_token), False))
    return out


@settings(max_examples=150, deadline=None)
@given(scheme=_token, params=_param_lists())
def test_auth_params_roundtrip(scheme: str, params: list[AuthParam]) -> None:
    text = serialize_auth_params(scheme, params)
    assert parse_auth_params(text) == (scheme, tuple(params))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_auth_header_error(text: str) -> None:
    # Whatever parses must serialize and read back to the same object.
    try:
        ch = parse_challenge(text)
    except AuthHeaderError:
        pass
    else:
        assert parse_challenge(ch.serialize()) == ch
    try:
        cred = parse_credentials(text)
    except AuthHeaderError:
        pass
    else:
        assert parse_credentials(cred.serialize()) == cred


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "Digest ",
                "realm",
                "nonce",
                "=",
                '"',
                "\\",
                ",",
                " ",
                "\t",
                "\r\n ",
                "\n",
                "qop",
                "x",
                "\x00",
                "\x7f",
                "é",
            ]
        ),
        max_size=30,
    )
)
def test_grammar_fragments_parse_or_raise(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        ch = parse_challenge(text)
    except AuthHeaderError:
        return
    assert parse_challenge(ch.serialize()) == ch


# -- server ------------------------------------------------------------------------------------

REALM = "acd.example.com"
USERS: dict[str, UserSecret] = {"1001": Password("s3cret!"), "1002": Password("other")}


def _lookup(username: str) -> UserSecret | None:
    return USERS.get(username)


def _counter() -> Iterator[bytes]:
    i = 0
    while True:
        i += 1
        yield i.to_bytes(12, "big")


def _server(**kw: Any) -> DigestAuthenticator:
    it = _counter()
    return DigestAuthenticator(REALM, random_bytes=lambda n: next(it)[:n], **kw)


def _verify(
    server: DigestAuthenticator, auth: str | None, *, now: float, uri: str = "sip:r"
) -> AuthResult:
    return server.verify(auth, method="REGISTER", request_uri=uri, lookup=_lookup, now=now)


def test_challenge_offers_sha256_first_then_md5() -> None:
    values = _server().challenge(now=10.0)
    assert len(values) == 2
    first, second = (parse_challenge(v) for v in values)
    assert first.algorithm == "SHA-256"
    assert second.algorithm == "MD5"
    assert first.realm == REALM
    assert first.qop == ("auth",)
    assert first.stale is False
    assert parse_challenge(_server().challenge(now=1.0, stale=True)[0]).stale is True


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5", "SHA-256-sess", "MD5-sess"])
def test_client_server_roundtrip(algorithm: str) -> None:
    alg = DigestAlgorithm(algorithm)
    server = _server(algorithms=(alg,))
    client = DigestClient("1001", "s3cret!")
    challenges = server.challenge(now=100.0)
    uri = "sip:acd.example.com"
    auth = client.authorize(challenges, method="REGISTER", uri=uri)
    assert parse_credentials(auth).algorithm == algorithm
    result = server.verify(auth, method="REGISTER", request_uri=uri, lookup=_lookup, now=101.0)
    assert result.outcome is AuthOutcome.OK
    assert result.username == "1001"
    # The next request reuses the nonce with nc=2 and is accepted too.
    auth2 = client.authorize(challenges, method="REGISTER", uri=uri)
    assert parse_credentials(auth2).nc == "00000002"
    ok2 = server.verify(auth2, method="REGISTER", request_uri=uri, lookup=_lookup, now=102.0)
    assert ok2.ok


def test_client_picks_sha256_when_both_offered() -> None:
    server = _server()
    values = server.challenge(now=0.0)
    for order in (values, list(reversed(values))):
        auth = DigestClient("1001", "s3cret!").authorize(order, method="INVITE", uri="sip:q@x")
        assert parse_credentials(auth).algorithm == "SHA-256"


def test_client_rejects_unknown_algorithm_only() -> None:
    with pytest.raises(NoUsableChallengeError):
        DigestClient("a", "b").authorize(
            'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
            method="INVITE",
            uri="sip:x",
        )


def test_auth_int_covers_the_body() -> None:
    server = _server(qop_options=("auth-int",))
    client = DigestClient("1001", "s3cret!")
    ch = server.challenge(now=0.0)
    auth = client.authorize(ch, method="INVITE", uri="sip:q@x", body=b"v=0\r\n")
    assert parse_credentials(auth).qop == "auth-int"
    good = server.verify(
        auth, method="INVITE", request_uri="sip:q@x", body=b"v=0\r\n", lookup=_lookup, now=1.0
    )
    assert good.ok
    auth = client.authorize(ch, method="INVITE", uri="sip:q@x", body=b"v=0\r\n")
    tampered = server.verify(
        auth, method="INVITE", request_uri="sip:q@x", body=b"v=1\r\n", lookup=_lookup, now=1.0
    )
    assert tampered.outcome is AuthOutcome.BAD_CREDENTIALS


def test_stale_nonce_after_lifetime() -> None:
    server = _server(nonce_lifetime_s=30.0)
    client = DigestClient("1001", "s3cret!")
    auth = client.authorize(server.challenge(now=1000.0), method="REGISTER", uri="sip:r")
    result = server.verify(auth, method="REGISTER", request_uri="sip:r", lookup=_lookup, now=1031.0)
    assert result.outcome is AuthOutcome.STALE
    # Within the lifetime the same credentials would have been fine.
    auth = DigestClient("1001", "s3cret!").authorize(
        server.challenge(now=1000.0), method="REGISTER", uri="sip:r"
    )
    assert server.verify(
        auth, method="REGISTER", request_uri="sip:r", lookup=_lookup, now=1029.0
    ).ok


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    server = _server(nonce_lifetime_s=30.0)
    auth = DigestClient("1001", "wrong").authorize(
        server.challenge(now=0.0), method="REGISTER", uri="sip:r"
    )
    result = server.verify(auth, method="REGISTER", request_uri="sip:r", lookup=_lookup, now=99.0)
    assert result.outcome is AuthOutcome.BAD_CREDENTIALS


def test_replayed_or_lower_nc_rejected() -> None:
    server = _server()
    client = DigestClient("1001", "s3cret!")
    ch = server.challenge(now=0.0)
    first = client.authorize(ch, method="REGISTER", uri="sip:r")
    second = client.authorize(ch, method="REGISTER", uri="sip:r")
    assert _verify(server, second, now=1.0).ok
    replay = _verify(server, second, now=2.0)
    assert replay.outcome is AuthOutcome.BAD_CREDENTIALS
    assert "replay" in replay.reason
    lower = _verify(server, first, now=2.0)
    assert lower.outcome is AuthOutcome.BAD_CREDENTIALS


def test_nc_table_is_bounded_and_evicted_nonces_turn_stale() -> None:
    server = _server(max_tracked_nonces=3)
    clients_and_auth = []
    for i in range(5):
        client = DigestClient("1001", "s3cret!")
        ch = server.challenge(now=float(i))
        auth = client.authorize(ch, method="REGISTER", uri="sip:r")
        assert _verify(server, auth, now=float(i)).ok
        clients_and_auth.append((client, ch, auth))
    assert server.tracked_nonces == 3
    # The first nonce's history is gone: a replay of it must not be accepted; it turns stale.
    _, _, first_auth = clients_and_auth[0]
    assert _verify(server, first_auth, now=6.0).outcome is AuthOutcome.STALE
    # A nonce still tracked keeps counting.
    client, ch, _ = clients_and_auth[4]
    assert _verify(server, client.authorize(ch, method="REGISTER", uri="sip:r"), now=6.0).ok


def test_wrong_password_and_unknown_user_rejected() -> None:
    server = _server()
    ch = server.challenge(now=0.0)
    bad = _verify(
        server, DigestClient("1001", "guess").authorize(ch, method="REGISTER", uri="sip:r"), now=1.0
    )
    assert bad.outcome is AuthOutcome.BAD_CREDENTIALS
    assert bad.reason == "wrong response"
    nobody = _verify(
        server, DigestClient("9999", "x").authorize(ch, method="REGISTER", uri="sip:r"), now=1.0
    )
    assert nobody.outcome is AuthOutcome.BAD_CREDENTIALS


def test_forged_nonce_and_foreign_server_rejected() -> None:
    server = _server()
    other = DigestAuthenticator(REALM)  # different secret
    ch = other.challenge(now=0.0)
    auth = DigestClient("1001", "s3cret!").authorize(ch, method="REGISTER", uri="sip:r")
    result = server.verify(auth, method="REGISTER", request_uri="sip:r", lookup=_lookup, now=1.0)
    assert result.outcome is AuthOutcome.BAD_CREDENTIALS
    assert "nonce" in result.reason


def test_missing_and_malformed_credentials() -> None:
    server = _server()
    assert _verify(server, None, now=1.0).outcome is AuthOutcome.MISSING
    assert _verify(server, "  ", now=1.0).outcome is AuthOutcome.MISSING
    assert _verify(server, 'Digest username="x', now=1.0).outcome is AuthOutcome.MALFORMED
    assert _verify(server, "Basic QWxhZGRpbjpvcGVu", now=1.0).outcome is AuthOutcome.MALFORMED


def test_uri_mismatch_and_realm_mismatch_rejected() -> None:
    server = _server()
    ch = server.challenge(now=0.0)
    auth = DigestClient("1001", "s3cret!").authorize(ch, method="REGISTER", uri="sip:a@x")
    assert _verify(server, auth, uri="sip:b@x", now=1.0).reason.startswith("uri")
    assert _verify(server, auth, uri="SIP:A@X", now=1.0).ok
    other_realm = DigestAuthenticator("elsewhere", secret=server.secret)
    assert _verify(other_realm, auth, uri="sip:a@x", now=1.0).reason == "realm mismatch"


def test_stored_ha1_instead_of_password() -> None:
    ha1s = {
        DigestAlgorithm.MD5: compute_ha1(DigestAlgorithm.MD5, "1001", REALM, "s3cret!"),
        DigestAlgorithm.SHA256: compute_ha1(DigestAlgorithm.SHA256, "1001", REALM, "s3cret!"),
    }

    def lookup(username: str) -> UserSecret | None:
        return StoredHa1(ha1s) if username == "1001" else None

    server = _server()
    for alg_index in (0, 1):
        ch = server.challenge(now=0.0)[alg_index]
        auth = DigestClient("1001", "s3cret!").authorize(ch, method="REGISTER", uri="sip:r")
        assert server.verify(
            auth, method="REGISTER", request_uri="sip:r", lookup=lookup, now=1.0
        ).ok
    only_md5 = StoredHa1({DigestAlgorithm.MD5: ha1s[DigestAlgorithm.MD5]})
    ch = server.challenge(now=0.0)[0]
    auth = DigestClient("1001", "s3cret!").authorize(ch, method="REGISTER", uri="sip:r")
    res = server.verify(
        auth, method="REGISTER", request_uri="sip:r", lookup=lambda _u: only_md5, now=1.0
    )
    assert res.outcome is AuthOutcome.BAD_CREDENTIALS


def test_userhash_roundtrip() -> None:
    username_hash: dict[str, tuple[str, UserSecret]] = {}

    def by_hash(h: str) -> tuple[str, UserSecret] | None:
        return username_hash.get(h)

    server = _server(algorithms=(DigestAlgorithm.SHA256,), userhash_lookup=by_hash)
    hashed = hashlib.sha256(f"1001:{REALM}".encode()).hexdigest()  # RFC 7616 3.4.4
    username_hash[hashed] = ("1001", Password("s3cret!"))
    ch = server.challenge(now=0.0)
    assert parse_challenge(ch[0]).userhash is True
    auth = DigestClient("1001", "s3cret!").authorize(ch, method="REGISTER", uri="sip:r")
    cred = parse_credentials(auth)
    assert cred.userhash is True
    assert cred.username != "1001"
    assert re.fullmatch(r"[0-9a-f]{64}", cred.username)
    res = server.verify(auth, method="REGISTER", request_uri="sip:r", lookup=_lookup, now=1.0)
    assert res.ok
    assert res.username == "1001"


_cred_value = st.one_of(_quoted_value, _token)


def _quoted_param(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


@settings(max_examples=200, deadline=None)
@given(
    username=_cred_value,
    nonce=st.one_of(_cred_value, st.just("")),
    nc=st.one_of(st.none(), st.text(alphabet="0123456789abcdefABCDEF", min_size=8, max_size=8)),
    algorithm=st.sampled_from(["MD5", "SHA-256", "sha-256-SESS", "SHA-512-256", "x"]),
    qop=st.sampled_from([None, "auth", "auth-int", "bogus"]),
    response=_cred_value,
    userhash=st.booleans(),
)
def test_verify_never_raises_on_peer_input(
    username: str,
    nonce: str,
    nc: str | None,
    algorithm: str,
    qop: str | None,
    response: str,
    userhash: bool,
) -> None:
    server = _server()
    if nonce == "":
        nonce = parse_challenge(server.challenge(now=0.0)[0]).nonce
    parts = [
        _quoted_param("username", username),
        f'realm="{REALM}"',
        _quoted_param("nonce", nonce),
        'uri="sip:r"',
        _quoted_param("response", response),
        f"algorithm={algorithm}",
    ]
    if qop is not None and nc is not None:
        parts += [f"qop={qop}", f"nc={nc}", 'cnonce="c"']
    if userhash:
        parts.append("userhash=true")
    result = _verify(server, "Digest " + ", ".join(parts), now=1.0)
    assert result.outcome in (AuthOutcome.BAD_CREDENTIALS, AuthOutcome.MALFORMED)


def test_lone_surrogates_are_rejected_as_header_errors() -> None:
    with pytest.raises(AuthHeaderError):
        parse_credentials('Digest username="\ud800", realm="r", nonce="n", uri="u", response="x"')


@pytest.mark.parametrize("escaped", ["\\\x00", "\\\r", "\\\x7f", "\\\x01"])
def test_escaped_controls_are_refused(escaped: str) -> None:
    with pytest.raises(AuthHeaderError):
        parse_challenge(f'Digest realm="a{escaped}b", nonce="n"')


def test_client_recovers_after_stale_challenge() -> None:
    server = _server(nonce_lifetime_s=30.0)
    client = DigestClient("1001", "s3cret!")
    auth = client.authorize(server.challenge(now=0.0), method="REGISTER", uri="sip:r")
    assert _verify(server, auth, now=31.0).outcome is AuthOutcome.STALE
    fresh = server.challenge(now=31.0, stale=True)
    assert all(parse_challenge(v).stale for v in fresh)
    retry = client.authorize(fresh, method="REGISTER", uri="sip:r")
    assert parse_credentials(retry).nc == "00000001"
    assert _verify(server, retry, now=31.5).ok
