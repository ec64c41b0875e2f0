"""SIP/SIPS/tel URI parsing, rendering and RFC 3261 19.1.4 comparison."""

from __future__ import annotations

import pytest

import sip
from sip import Uri


def test_full_sip_uri() -> None:
    uri = Uri.parse(
        "sips:alice:secret@[2001:db8::1]:5061;transport=TLS;lr;maddr=239.255.255.1?subject=hi&priority=urgent"
    )
    assert uri.scheme == "sips"
    assert uri.is_sip
    assert (uri.user, uri.password) == ("alice", "secret")
    assert uri.host == "[2001:db8::1]"
    assert uri.port == 5061
    assert uri.transport == "tls"
    assert uri.param("LR") == ""
    assert uri.has_param("lr")
    assert uri.param("maddr") == "239.255.255.1"
    assert uri.headers == (("subject", "hi"), ("priority", "urgent"))
    assert uri.param("missing") is None


def test_escapes_decoded_and_raw_text_kept() -> None:
    text = "sip:%61lice%20b@example.com;n%61me=v%61l%25ue"
    uri = Uri.parse(text)
    assert uri.user == "alice b"
    assert uri.param("name") == "val%ue"
    assert str(uri) == text


def test_user_with_semicolon_and_escaped_at() -> None:
    uri = Uri.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == ()


def test_tel_and_other_schemes() -> None:
    tel = Uri.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert tel.scheme == "tel"
    assert tel.user == "+1-201-555-0123"
    assert not tel.is_sip
    assert tel.param("phone-context") == "example.com"
    assert tel == Uri.parse("tel:+1.201.555.0123;PHONE-CONTEXT=EXAMPLE.COM")
    other = Uri.parse("urn:service:sos")
    assert (other.scheme, other.opaque) == ("urn", "service:sos")
    assert not other.is_sip


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:user@",
        "sip:a b@c",
        "<sip:a@b>",
        "sip:a@b:99999",
        "sip:a@b;%zz",
        "noscheme",
        "tel:",
    ],
)
def test_invalid_uris(text: str) -> None:
    with pytest.raises(sip.ParseError):
        Uri.parse(text)


# RFC 3261 19.1.4 examples: equivalent pairs.
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
        # SIPp's built-in uas sends ;transport=UDP (PEERS.md): must equal ;transport=udp.
        ("sip:sipp@127.0.0.1:5070;transport=UDP", "sip:sipp@127.0.0.1:5070;transport=udp"),
    ],
)
def test_equivalent(a: str, b: str) -> None:
    assert Uri.parse(a) == Uri.parse(b)
    assert hash(Uri.parse(a)) == hash(Uri.parse(b))


# RFC 3261 19.1.4 examples: non-equivalent pairs.
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
        ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com"),
        ("sip:alice@atlanta.com;maddr=10.0.0.1", "sip:alice@atlanta.com"),
    ],
)
def test_not_equivalent(a: str, b: str) -> None:
    assert Uri.parse(a) != Uri.parse(b)


def test_scheme_case_insensitive() -> None:
    assert Uri.parse("SIP:bob@example.com") == Uri.parse("sip:bob@example.com")
    assert Uri.parse("SIP:bob@example.com").scheme == "sip"


def test_built_uri_renders_with_escapes() -> None:
    uri = Uri(
        "sip",
        user="a b@c",
        host="example.com",
        port=5070,
        params=[("Transport", "TCP"), ("lr", None)],
    )
    assert str(uri) == "sip:a%20b%40c@example.com:5070;transport=TCP;lr"
    assert Uri.parse(str(uri)) == uri
    assert uri.transport == "tcp"
    changed = uri.with_param("transport", "udp")
    assert changed.transport == "udp"
    assert str(changed).endswith(";lr;transport=udp")
    assert uri.replace(port=None).port is None
    with pytest.raises(TypeError):
        uri.replace(colour="red")


def test_contact_transport_case_from_sipp() -> None:
    raw = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:acd@127.0.0.1>;tag=1\r\nTo: <sip:service@127.0.0.1:5070>;tag=2\r\n"
        b"Call-ID: 1-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        b"Contact: <sip:127.0.0.1:5070;transport=UDP>\r\nContent-Length: 0\r\n\r\n"
    )
    msg = sip.parse_message(raw)
    (contact,) = msg.contacts
    assert contact.uri.transport == "udp"
    assert contact.uri == Uri.parse("sip:127.0.0.1:5070;transport=udp")
