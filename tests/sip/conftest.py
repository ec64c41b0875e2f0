"""Shared fixtures for the SIP message-layer tests: test-data paths and a sample INVITE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "sip"

SDP_BODY = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=call\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 9 18 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)


def _sample_invite(body: bytes = SDP_BODY, *, content_length: int | None = None) -> bytes:
    """A typical trunk INVITE (the shape the benchmark also uses)."""
    length = len(body) if content_length is None else content_length
    head = (
        "INVITE sip:support@acd.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:support@acd.example.com>\r\n"
        'From: "Alice Caller" <sip:alice@trunk.example.net>;tag=1928301774\r\n'
        "Call-ID: a84b4c76e66710@pc33.trunk.example.net\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:alice@192.0.2.10:5060;transport=UDP>\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
        "Supported: replaces, timer\r\n"
        "User-Agent: ExampleTrunk/4.2 (build 7, rev 3)\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {length}\r\n"
        "\r\n"
    )
    return head.encode() + body


@pytest.fixture(scope="session")
def invite_bytes() -> bytes:
    return _sample_invite()


@pytest.fixture(scope="session")
def make_invite() -> Callable[..., bytes]:
    """`make_invite(body=..., content_length=...)` builds the sample INVITE with another body."""
    return _sample_invite


@pytest.fixture(scope="session")
def testdata() -> Path:
    assert TESTDATA.is_dir(), f"shared test data missing at {TESTDATA}"
    return TESTDATA
