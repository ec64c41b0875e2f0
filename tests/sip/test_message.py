"""Parsing, typed access, building and serialising SIP messages (RFC 3261 7, 8.2.6, 18.3, 20)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

import sip
from sip.limits import MAX_HEADER_COUNT, MAX_MESSAGE_BYTES


def _req(
    *header_lines: str, start: str = "OPTIONS sip:bob@example.com SIP/2.0", body: bytes = b""
) -> bytes:
    base = [
        start,
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        "Call-ID: c1@example.com",
        "CSeq: 1 " + start.split(" ", 1)[0],
        "Max-Forwards: 70",
    ]
    return ("\r\n".join([*base, *header_lines]) + "\r\n\r\n").encode() + body


# -- basic parse and typed access -----------------------------------------------------------------


def test_invite_typed_fields(invite_bytes: bytes) -> None:
    msg = sip.parse_message(invite_bytes)
    assert isinstance(msg, sip.Request)
    assert msg.method == "INVITE"
    assert str(msg.uri) == "sip:support@acd.example.com"
    assert msg.uri.user == "support"
    assert msg.uri.host == "acd.example.com"
    (via,) = msg.via
    assert (via.transport, via.host, via.port) == ("UDP", "192.0.2.10", 5060)
    assert via.branch == "z9hG4bK776asdhds"
    assert via.has_rport
    assert via.rport is None
    assert msg.from_ is not None
    assert msg.from_.display_name == "Alice Caller"
    assert msg.from_.tag == "1928301774"
    assert msg.from_.uri.user == "alice"
    assert msg.to is not None
    assert msg.to.tag is None
    assert msg.call_id == "a84b4c76e66710@pc33.trunk.example.net"
    assert msg.cseq == sip.CSeq(314159, "INVITE")
    assert msg.max_forwards == 70
    (contact,) = msg.contacts
    assert contact.uri.port == 5060
    assert contact.uri.transport == "udp"
    assert msg.allow == ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")
    assert msg.supported == ("replaces", "timer")
    assert msg.content_type is not None
    assert msg.content_type.mime == "application/sdp"
    assert msg.content_length == len(msg.body) == 312
    assert msg.body.startswith(b"v=0\r\n")
    assert msg.body.endswith(b"a=sendrecv\r\n")


def test_response_parse() -> None:
    raw = (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKx;received=192.0.2.7;rport=5071\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = sip.parse_message(raw)
    assert isinstance(msg, sip.Response)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.via[0].received == "192.0.2.7"
    assert msg.via[0].rport == 5071
    assert msg.to is not None
    assert msg.to.tag == "2"
    assert bytes(msg) == raw


def test_compact_forms_are_canonical() -> None:
    raw = (
        b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=x\r\nt: sip:bob@example.com\r\ni: cid\r\n"
        b"CSeq: 2 MESSAGE\r\nm: <sip:a@h>\r\nc: text/plain\r\nk: path\r\ns: hi\r\n"
        b"o: presence\r\nu: talk\r\nr: <sip:x@y>\r\nb: <sip:z@y>\r\ne: gzip\r\nl: 2\r\n\r\nhi"
    )
    msg = sip.parse_message(raw)
    assert msg.via[0].host == "h"
    assert msg.from_ is not None
    assert msg.from_.tag == "x"
    assert msg.call_id == "cid"
    assert msg.contacts[0].uri.user == "a"
    assert msg.content_type == sip.MediaType("text", "plain")
    assert msg.supported == ("path",)
    assert msg.headers.get("Subject") == "hi"
    assert msg.headers.get("Event") == "presence"
    assert msg.headers.get("allow-events") == "talk"
    assert msg.headers.get("Refer-To") == "<sip:x@y>"
    assert msg.headers.get("referred-by") == "<sip:z@y>"
    assert msg.headers.get("Content-Encoding") == "gzip"
    assert msg.body == b"hi"
    # Names are re-emitted as received.
    assert b"\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n" in bytes(msg)


def test_header_names_case_insensitive() -> None:
    msg = sip.parse_message(_req("X-Custom-Thing: 1", "cOnTaCt: <sip:q@r>"))
    assert msg.headers.get("x-custom-thing") == "1"
    assert msg.headers.get("X-CUSTOM-THING") == "1"
    assert "CONTACT" in msg.headers
    assert "m" in msg.headers
    assert msg.contacts[0].uri.host == "r"


def test_folded_headers_unfold() -> None:
    raw = _req("Subject: first part\r\n  second part\r\n\tthird", "Contact:\r\n <sip:a@b>")
    msg = sip.parse_message(raw)
    assert msg.headers.get("Subject") == "first part second part third"
    assert msg.contacts[0].uri.user == "a"
    assert b"Subject: first part second part third\r\n" in bytes(msg)


def test_multi_value_split_respects_quotes_and_brackets() -> None:
    raw = _req(
        'Contact: "Doe, John" <sip:j@h;x=1,2>;q=0.5, <sip:k@h>;expires=60',
        "Route: <sip:p1@h;lr>, <sip:p2@h;lr>",
        "Route: <sip:p3@h;lr>",
        'Warning: 399 h "a, b", 301 h "c"',
    )
    msg = sip.parse_message(raw)
    first, second = msg.contacts
    assert first.display_name == "Doe, John"
    assert first.q == 0.5
    assert second.expires == 60
    assert second.q is None
    assert [r.uri.user for r in msg.route] == ["p1", "p2", "p3"]
    assert msg.headers.values("Warning") == ['399 h "a, b"', '301 h "c"']
    assert msg.headers.values("Contact")[0] == '"Doe, John" <sip:j@h;x=1,2>;q=0.5'


def test_auth_headers_not_split_on_commas() -> None:
    digest = (
        'Digest username="alice", realm="acd", nonce="abc,def", uri="sip:acd", '
        'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, '
        'cnonce="xyz"'
    )
    raw = _req(
        f"Authorization: {digest}",
        'WWW-Authenticate: Digest realm="acd", nonce="n1", qop="auth,auth-int"',
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        "Proxy-Authorization: Basic dXNlcjpwYXNz",
    )
    msg = sip.parse_message(raw)
    (auth,) = msg.authorization
    assert auth.is_digest
    assert auth.scheme == "Digest"
    assert auth.param("username") == "alice"
    assert auth.param("NONCE") == "abc,def"
    assert auth.param("nc") == "00000001"
    assert auth.raw == digest
    (challenge,) = msg.www_authenticate
    assert challenge.param("qop") == "auth,auth-int"
    assert msg.headers.values("Authorization") == [digest]
    assert msg.headers.values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    (basic,) = msg.proxy_authorization
    assert basic.scheme == "Basic"
    assert basic.params == ()
    assert basic.raw == "Basic dXNlcjpwYXNz"


def test_malformed_digest_raises_parse_error() -> None:
    msg = sip.parse_message(_req('Authorization: Digest username="unterminated'))
    with pytest.raises(sip.ParseError) as info:
        _ = msg.authorization
    assert info.value.status_hint == 400


def test_quoted_display_name_escapes_round_trip() -> None:
    raw = _req(start="OPTIONS sip:x@y SIP/2.0").replace(
        b"From: <sip:alice@example.com>;tag=a1",
        b'From: "A \\"quoted\\" \\\\ name" <sip:a@b>;tag=a1',
    )
    msg = sip.parse_message(raw)
    assert msg.from_ is not None
    assert msg.from_.display_name == 'A "quoted" \\ name'
    rebuilt = sip.NameAddr(msg.from_.uri, msg.from_.display_name, msg.from_.params)
    assert str(rebuilt) == '"A \\"quoted\\" \\\\ name" <sip:a@b>;tag=a1'


def test_header_params_case_insensitive_names() -> None:
    msg = sip.parse_message(_req().replace(b";tag=a1", b";TAG=a1;Q=1"))
    assert msg.from_ is not None
    assert msg.from_.tag == "a1"
    assert msg.from_.param("q") == "1"


def test_unknown_headers_reemitted_verbatim_in_order() -> None:
    raw = _req("X-B: 2", "x-a:   one,  two  ", 'P-Asserted-Identity: "X" <sip:x@y>', "X-B: 3")
    msg = sip.parse_message(raw)
    out = bytes(msg)
    assert out.index(b"X-B: 2") < out.index(b"x-a: one,  two") < out.index(b"X-B: 3")
    assert list(msg.headers)[-4:] == [
        ("X-B", "2"),
        ("x-a", "one,  two"),
        ("P-Asserted-Identity", '"X" <sip:x@y>'),
        ("X-B", "3"),
    ]


def test_serialise_parse_is_stable(invite_bytes: bytes) -> None:
    msg = sip.parse_message(invite_bytes)
    assert bytes(msg) == invite_bytes
    again = sip.parse_message(bytes(msg))
    assert again.via == msg.via
    assert again.cseq == msg.cseq
    assert again.body == msg.body


# -- Content-Length framing on datagrams (RFC 3261 18.3) --------------------------------------------


def test_bytes_beyond_content_length_ignored(invite_bytes: bytes) -> None:
    msg = sip.parse_message(invite_bytes + b"garbage after the body")
    assert msg.body.endswith(b"a=sendrecv\r\n")
    assert len(msg.body) == 312


def test_body_shorter_than_content_length_is_400(make_invite: Callable[..., bytes]) -> None:
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(make_invite(content_length=400))
    assert (info.value.status_hint, info.value.reason) == (400, "truncated_body")


def test_missing_content_length_body_runs_to_end() -> None:
    raw = _req(body=b"hello").replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n")
    msg = sip.parse_message(raw)
    assert msg.body == b"hello"
    assert msg.content_length is None
    assert b"Content-Length: 5\r\n\r\nhello" in bytes(msg)


@pytest.mark.parametrize("value", ["-1", "abc", "1 2", "99999999999", "١٢"])
def test_bad_content_length(value: str) -> None:
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(_req(f"Content-Length: {value}"))
    assert (info.value.status_hint, info.value.reason) == (400, "bad_content_length")


def test_serialisation_rewrites_content_length() -> None:
    msg = sip.parse_message(_req("Content-Length: 0"))
    msg.body = b"abc"
    out = bytes(msg)
    assert b"Content-Length: 3\r\n\r\nabc" in out
    assert b"Content-Length: 0" not in out


# -- start line errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "status", "reason"),
    [
        ("OPTIONS sip:bob@example.com SIP/3.0", 505, "bad_version"),
        ("OPTIONS sip:bob@example.com HTTP/1.1", 400, "bad_start_line"),
        ("OPTIONS sip:bob@example.com", 400, "bad_start_line"),
        ("OPTIONS <sip:bob@example.com> SIP/2.0", 400, "bad_request_uri"),
        ("OPTIONS sip:bob@exa mple.com SIP/2.0", 400, "bad_start_line"),
        ("OPTIONS sip:bob@example.com?Subject=x SIP/2.0", 400, "bad_request_uri"),
        ("OPT IONS sip:bob@example.com SIP/2.0", 400, "bad_start_line"),
    ],
)
def test_bad_request_lines(start: str, status: int, reason: str) -> None:
    raw = _req(start=start).replace(b"CSeq: 1 OPT IONS", b"CSeq: 1 OPTIONS")
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(raw)
    assert (info.value.status_hint, info.value.reason) == (status, reason)
    assert isinstance(info.value, sip.RemoteProtocolError)
    assert info.value.reason in sip.PARSE_ERROR_REASONS


def test_extra_spaces_in_request_line_not_reemitted() -> None:
    raw = _req(start="OPTIONS  sip:bob@example.com   SIP/2.0  ")
    msg = sip.parse_message(raw)
    assert bytes(msg).startswith(b"OPTIONS sip:bob@example.com SIP/2.0\r\n")


@pytest.mark.parametrize(
    "line", ["Bad Header: x", "NoColonHere", ": empty name", "X-A: a\rb", "X-A: a\nb"]
)
def test_bad_header_lines(line: str) -> None:
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(_req(line))
    assert (info.value.status_hint, info.value.reason) == (400, "bad_header_line")


@pytest.mark.parametrize(
    ("line", "accessor"),
    [
        ("Expires: soon", "expires"),
        ("Content-Type: sdp", "content_type"),
        ("Contact: <sip:a@b", "contacts"),
        ("Record-Route: sip:a@b;lr, ,", "record_route"),
        ("Require: 100rel, bad value", "require"),
    ],
)
def test_lazy_typed_headers_raise_parse_error(line: str, accessor: str) -> None:
    msg = sip.parse_message(_req(line))
    with pytest.raises(sip.ParseError) as info:
        getattr(msg, accessor)
    assert info.value.status_hint == 400
    assert info.value.reason == "bad_header"


@pytest.mark.parametrize(
    "replacement",
    [
        (b"CSeq: 1 OPTIONS", b"CSeq: 4294967296 OPTIONS"),
        (b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS"),
        (b"Max-Forwards: 70", b"Max-Forwards: 256"),
        (b"Call-ID: c1@example.com", b"Call-ID: a b"),
        (b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc", b"Via: SIP/2.0/UDP"),
        (b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc", b"Via: SIP/2.0/UDP h:99999"),
        (b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com"),
    ],
)
def test_core_headers_are_checked_at_parse(replacement: tuple[bytes, bytes]) -> None:
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(_req().replace(*replacement))
    assert (info.value.status_hint, info.value.reason) == (400, "bad_header")


def test_cseq_method_mismatch() -> None:
    raw = _req().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(raw)
    assert info.value.reason == "cseq_mismatch"


def test_check_mandatory() -> None:
    sip.parse_message(_req()).check_mandatory()
    no_mf = sip.parse_message(_req().replace(b"Max-Forwards: 70\r\n", b""))
    with pytest.raises(sip.ParseError) as info:
        no_mf.check_mandatory()
    assert info.value.reason == "missing_header"
    twice = sip.parse_message(_req("Call-ID: other"))
    with pytest.raises(sip.ParseError) as info:
        twice.check_mandatory()
    assert info.value.reason == "duplicate_header"


# -- limits -------------------------------------------------------------------------------------------


def test_too_large_message() -> None:
    raw = _req(body=b"x" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(raw)
    assert (info.value.status_hint, info.value.reason) == (513, "too_large")


def test_too_many_headers() -> None:
    raw = _req(*[f"X-H{i}: v" for i in range(MAX_HEADER_COUNT)])
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(raw)
    assert (info.value.status_hint, info.value.reason) == (513, "too_large")


def test_too_many_vias() -> None:
    raw = _req("Via: " + ", ".join(f"SIP/2.0/UDP h{i}" for i in range(150)))
    with pytest.raises(sip.ParseError) as info:
        sip.parse_message(raw)
    assert info.value.reason == "too_large"


def test_huge_numbers_do_not_crash() -> None:
    # Python refuses int() of > 4300 digits; the parser must turn that into a ParseError.
    raw = _req("Expires: " + "9" * 5000)
    msg = sip.parse_message(raw)
    assert msg.expires == 2**32 - 1
    with pytest.raises(sip.ParseError):
        sip.parse_message(_req("Content-Length: " + "9" * 5000))


# -- building ------------------------------------------------------------------------------------------


def test_make_response_copies_rfc3261_8_2_6_headers(invite_bytes: bytes) -> None:
    raw = invite_bytes.replace(
        b"Max-Forwards: 70\r\n",
        b"Max-Forwards: 70\r\nVia: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp2\r\nTimestamp: 54\r\n",
    )
    request = sip.parse_message(raw)
    assert isinstance(request, sip.Request)
    response = sip.make_response(request, 180, to_tag="tt1", headers=[("Contact", "<sip:acd@h>")])
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.via == request.via
    assert len(response.via) == 2
    assert response.from_ == request.from_
    assert response.to is not None
    assert response.to.tag == "tt1"
    assert request.to is not None
    assert response.to.uri == request.to.uri
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert response.contacts[0].uri.user == "acd"
    assert "Timestamp" not in response.headers  # only a 100 copies Timestamp (8.2.6.1)
    trying = sip.make_response(request, 100)
    assert trying.headers.get("Timestamp") == "54"
    assert trying.to == request.to
    out = bytes(response)
    assert out.startswith(b"SIP/2.0 180 Ringing\r\n")
    assert out.endswith(b"Content-Length: 0\r\n\r\n")
    reparsed = sip.parse_message(out)
    assert isinstance(reparsed, sip.Response)
    assert reparsed.to is not None
    assert reparsed.to.tag == "tt1"


def test_make_response_keeps_existing_to_tag() -> None:
    request = sip.parse_message(
        _req().replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=old")
    )
    assert isinstance(request, sip.Request)
    response = sip.make_response(request, 200, "Fine", to_tag="new", body=b"x")
    assert response.to is not None
    assert response.to.tag == "old"
    assert response.reason == "Fine"
    assert bytes(response).endswith(b"Content-Length: 1\r\n\r\nx")


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("<sip:bob@example.com>", "<sip:bob@example.com>;tag=t9"),
        ("Bob <sip:bob@example.com>", "Bob <sip:bob@example.com>;tag=t9"),
        ('"Bob, B." <sip:bob@example.com;user=phone>;x=1', '"Bob, B." <sip:bob@example.com;user=phone>;x=1;tag=t9'),
        ("sip:bob@example.com", "sip:bob@example.com;tag=t9"),
        ("<sip:bob@example.com> ; x = 1 ", "<sip:bob@example.com> ; x = 1;tag=t9"),
    ],
)  # fmt: skip
def test_make_response_adds_the_tag_to_the_to_as_received(to: str, expected: str) -> None:
    # 8.2.6.2: the response's To is the request's To plus our tag, byte for byte otherwise.
    request = sip.parse_message(_req().replace(b"To: <sip:bob@example.com>", f"To: {to}".encode()))
    assert isinstance(request, sip.Request)
    response = sip.make_response(request, 200, to_tag="t9")
    assert response.headers.get("To") == expected
    reparsed = sip.parse_message(bytes(response))
    assert reparsed.to is not None
    assert request.to is not None
    assert reparsed.to.tag == "t9"
    assert reparsed.to.uri == request.to.uri
    assert reparsed.to.display_name == request.to.display_name
    assert [p for p in reparsed.to.params if p[0] != "tag"] == list(request.to.params)


def test_make_response_copies_repeated_and_compact_headers_in_rfc_order() -> None:
    raw = (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
        b"i: c1@a\r\n"
        b"Via: SIP/2.0/TCP b.example.com;branch=z9hG4bK2\r\n"
        b"t: <sip:bob@example.com>\r\n"
        b"f: <sip:al@example.com>;tag=1\r\n"
        b"CSeq: 4 OPTIONS\r\n"
        b"Max-Forwards: 70\r\n"
        b"l: 0\r\n\r\n"
    )
    request = sip.parse_message(raw)
    assert isinstance(request, sip.Request)
    response = sip.make_response(request, 404, to_tag="z")
    assert list(response.headers) == [
        ("Via", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"),
        ("Via", "SIP/2.0/TCP b.example.com;branch=z9hG4bK2"),
        ("From", "<sip:al@example.com>;tag=1"),
        ("To", "<sip:bob@example.com>;tag=z"),
        ("Call-ID", "c1@a"),
        ("CSeq", "4 OPTIONS"),
    ]
    assert bytes(response) == (
        b"SIP/2.0 404 Not Found\r\n"
        b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
        b"Via: SIP/2.0/TCP b.example.com;branch=z9hG4bK2\r\n"
        b"From: <sip:al@example.com>;tag=1\r\n"
        b"To: <sip:bob@example.com>;tag=z\r\n"
        b"Call-ID: c1@a\r\n"
        b"CSeq: 4 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_make_response_refuses_a_to_tag_with_cr_or_lf() -> None:
    request = sip.parse_message(_req())
    assert isinstance(request, sip.Request)
    with pytest.raises(sip.LocalProtocolError):
        sip.make_response(request, 200, to_tag="a\r\nX-Injected: 1")
    with pytest.raises(sip.LocalProtocolError):
        sip.make_response(request, 200, "OK\r\nX-Injected: 1")
    with pytest.raises(sip.LocalProtocolError):
        sip.make_response(request, 99)
    assert sip.make_response(request, 299).reason == ""  # no default phrase for an unknown code


def test_serialisation_writes_one_content_length_where_the_first_was() -> None:
    msg = sip.Response(
        200, headers=[("Content-Length", "99"), ("X-A", "1"), ("l", "7")], body=b"ab"
    )
    assert bytes(msg) == b"SIP/2.0 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nab"
    msg = sip.Response(200, headers=[("X-A", " 1 "), ("X-B", "\t2")])
    assert bytes(msg) == b"SIP/2.0 200 OK\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n"
    parsed = sip.parse_message(b"SIP/2.0 200 OK\r\nX-A :  1 \r\nl: 2\r\n\r\nabc")
    assert bytes(parsed) == b"SIP/2.0 200 OK\r\nX-A: 1\r\nl: 2\r\n\r\nab"


@pytest.mark.parametrize("name", ["Via", "v", "CSeq", "User-Agent", "X-Custom"])
def test_headers_add_refuses_cr_lf_for_known_and_unknown_names(name: str) -> None:
    headers = sip.Headers()
    with pytest.raises(sip.LocalProtocolError):
        headers.add(name, "a\r\nb")
    with pytest.raises(sip.LocalProtocolError):
        headers.add(name, "a\nb")
    assert len(headers) == 0


@pytest.mark.parametrize("name", ["Bad Name", "Via:", "", "X\u00e9"])
def test_headers_add_refuses_names_that_are_not_tokens(name: str) -> None:
    with pytest.raises(sip.LocalProtocolError):
        sip.Headers().add(name, "x")


def test_headers_add_maps_every_spelling_to_its_key() -> None:
    headers = sip.Headers([("v", "a"), ("VIA", "b"), ("call-id", "c"), ("X-Foo", "d"), ("m", "e")])
    assert headers.keys() == ["via", "via", "call-id", "x-foo", "contact"]
    assert headers.get_all("Via") == ["a", "b"]
    assert list(headers) == [("v", "a"), ("VIA", "b"), ("call-id", "c"), ("X-Foo", "d"), ("m", "e")]


def test_make_response_rejects_bad_status(invite_bytes: bytes) -> None:
    request = sip.parse_message(invite_bytes)
    assert isinstance(request, sip.Request)
    with pytest.raises(sip.LocalProtocolError):
        sip.make_response(request, 700)


def test_uac_builds_request_from_scratch() -> None:
    rng = random.Random(7)
    req = sip.Request("INVITE", "sip:agent@192.0.2.50:5062;transport=tcp")
    req.via = [
        sip.Via("TCP", "192.0.2.1", 5060, (("branch", sip.new_branch(rng)), ("rport", None)))
    ]
    req.from_ = sip.NameAddr("sip:acd@192.0.2.1", "ACD", (("tag", sip.new_tag(rng)),))
    req.to = sip.NameAddr(sip.Uri("sip", user="agent", host="192.0.2.50", port=5062))
    req.call_id = sip.new_call_id("192.0.2.1", rng)
    req.cseq = sip.CSeq(1, "INVITE")
    req.max_forwards = 70
    req.contacts = [sip.NameAddr("sip:acd@192.0.2.1:5060;transport=tcp")]
    req.headers.add("Content-Type", "application/sdp")
    req.body = b"v=0\r\n"
    out = bytes(req)
    assert out.startswith(
        b"INVITE sip:agent@192.0.2.50:5062;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP"
    )
    back = sip.parse_message(out)
    assert isinstance(back, sip.Request)
    assert back.via == req.via
    assert back.via[0].branch is not None
    assert back.via[0].branch.startswith("z9hG4bK")
    assert back.via[0].has_rport
    assert back.from_ == req.from_
    assert back.from_ is not None
    assert back.from_.display_name == "ACD"
    assert back.to == req.to
    assert back.call_id == req.call_id
    assert back.cseq == req.cseq
    assert back.contacts == req.contacts
    assert back.body == b"v=0\r\n"
    back.check_mandatory()


def test_setters_replace_in_place_and_refresh_typed_cache() -> None:
    msg = sip.parse_message(_req("X-After: 1"))
    assert msg.max_forwards == 70
    msg.max_forwards = 69
    assert msg.max_forwards == 69
    keys = msg.headers.keys()
    assert keys.index("max-forwards") < keys.index("x-after")
    top = msg.via[0]
    msg.via = [top.with_param("received", "203.0.113.9").with_param("rport", "5099")]
    assert msg.via[0].received == "203.0.113.9"
    assert msg.via[0].rport == 5099
    assert b";received=203.0.113.9;rport=5099\r\n" in bytes(msg)
    msg.headers.set("Max-Forwards", "5")
    assert msg.max_forwards == 5  # raw edit drops the cached typed value


def test_local_protocol_errors() -> None:
    with pytest.raises(sip.LocalProtocolError):
        sip.Request("BAD METHOD", "sip:a@b")
    with pytest.raises(sip.LocalProtocolError):
        sip.Request("INVITE", "not a uri")
    with pytest.raises(sip.LocalProtocolError):
        sip.Response(99)
    msg = sip.Request("OPTIONS", "sip:a@b")
    with pytest.raises(sip.LocalProtocolError):
        msg.headers.add("X-Evil", "a\r\nInjected: 1")
    with pytest.raises(sip.LocalProtocolError):
        msg.headers.add("Bad Name", "x")
    with pytest.raises(sip.LocalProtocolError):
        msg.max_forwards = 300


def test_identifier_helpers() -> None:
    branches = {sip.new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(b.startswith(sip.BRANCH_MAGIC_COOKIE) and len(b) > 7 + 8 for b in branches)
    assert sip.new_branch(random.Random(1)) == sip.new_branch(random.Random(1))
    assert sip.new_tag(random.Random(1)) != sip.new_tag(random.Random(2))
    assert sip.new_call_id("h.example").endswith("@h.example")
    assert "@" not in sip.new_call_id()


def test_bare_lf_message_is_read_and_reemitted_with_crlf() -> None:
    raw = _req(body=b"").replace(b"\r\n", b"\n") + b"body"
    msg = sip.parse_message(
        raw.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\nContent-Length: 4")
    )
    assert msg.max_forwards == 70
    assert msg.body == b"body"
    assert bytes(msg).startswith(b"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: ")
    mixed = _req().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n")
    with pytest.raises(sip.ParseError):
        sip.parse_message(mixed.replace(b"\r\n\r\n", b"\n\n"))


def test_contact_star_and_ipv6_via() -> None:
    raw = _req(
        "Contact: *",
        "Expires: 0",
        start="REGISTER sip:example.com SIP/2.0",
    ).replace(
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc",
        b"Via: SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKv6;received=2001:db8::10;rport=5062",
    )
    msg = sip.parse_message(raw)
    assert msg.contact_star
    assert msg.contacts == ()
    assert msg.expires == 0
    (via,) = msg.via
    assert (via.host, via.port, via.transport) == ("[2001:db8::9]", 5061, "TCP")
    assert via.received == "2001:db8::10"
    assert via.rport == 5062
    with pytest.raises(sip.ParseError):
        _ = sip.parse_message(_req("Contact: *, <sip:a@b>")).contacts


def test_public_api_exports() -> None:
    expected = {
        "parse_message", "Request", "Response", "Message", "make_response", "Headers",
        "ParseError", "RemoteProtocolError", "LocalProtocolError", "PARSE_ERROR_REASONS",
        "StreamFramer", "MessageReceived", "MessageRejected", "KeepalivePingReceived",
        "KeepalivePongReceived", "FramingFailed", "Uri", "Via", "NameAddr", "CSeq", "MediaType",
        "AuthHeader", "new_branch", "new_tag", "new_call_id", "BRANCH_MAGIC_COOKIE",
    }  # fmt: skip
    assert expected <= set(sip.__all__)
    assert all(hasattr(sip, name) for name in sip.__all__)
    assert issubclass(sip.ParseError, sip.RemoteProtocolError)
    assert not issubclass(sip.LocalProtocolError, sip.RemoteProtocolError)


def test_header_helpers() -> None:
    assert sip.canonical_key("v") == "via"
    assert sip.canonical_key("CALL-ID") == "call-id"
    assert sip.canonical_name("i") == "Call-ID"
    assert sip.canonical_name("www-authenticate") == "WWW-Authenticate"
    assert sip.canonical_name("x-foo-bar") == "X-Foo-Bar"
    assert sip.split_list('a, "b, c", <sip:d;x=1,2>, e') == ["a", '"b, c"', "<sip:d;x=1,2>", "e"]
    headers = sip.Headers([("Route", "<sip:a>"), ("X-A", "1"), ("Route", "<sip:b>")])
    headers.set("route", "<sip:c>")
    assert list(headers) == [("Route", "<sip:c>"), ("X-A", "1")]
    assert headers.remove("x-a") == 1
    assert headers.count("Route") == 1
    assert headers.get("nope", "dflt") == "dflt"
