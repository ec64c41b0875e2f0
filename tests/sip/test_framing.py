"""StreamFramer: Content-Length framing on TCP/TLS, keep-alives, bounded buffering (RFC 3261 18.3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import sip
from sip.limits import MAX_MESSAGE_BYTES

RFC4475 = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "sip" / "rfc4475"

OPTIONS = (
    b"OPTIONS sip:acd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK1\r\n"
    b"From: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:acd@127.0.0.1>\r\nCall-ID: k1\r\nCSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def _kinds(events: list[sip.FramingEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def _feed_all(framer: sip.StreamFramer, chunks: list[bytes]) -> list[sip.FramingEvent]:
    events: list[sip.FramingEvent] = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events


def test_one_message(invite_bytes: bytes) -> None:
    (event,) = sip.StreamFramer().feed(invite_bytes)
    assert isinstance(event, sip.MessageReceived)
    assert event.raw == invite_bytes
    assert event.message.call_id == "a84b4c76e66710@pc33.trunk.example.net"


def test_byte_by_byte_and_back_to_back(invite_bytes: bytes) -> None:
    stream = invite_bytes + OPTIONS + invite_bytes
    framer = sip.StreamFramer()
    events = _feed_all(framer, [stream[i : i + 1] for i in range(len(stream))])
    assert [e.raw for e in events if isinstance(e, sip.MessageReceived)] == [
        invite_bytes,
        OPTIONS,
        invite_bytes,
    ]
    assert framer.buffered_bytes == 0


def test_body_containing_empty_lines_is_framed_by_content_length() -> None:
    data = (RFC4475 / "mpart01.dat").read_bytes()
    (event,) = sip.StreamFramer().feed(data + OPTIONS)[:1]
    assert isinstance(event, sip.MessageReceived)
    assert event.message.content_length == len(event.message.body)
    assert event.raw == data


def test_keepalives() -> None:
    framer = sip.StreamFramer()
    events = framer.feed(b"\r\n\r\n" + OPTIONS + b"\r\n" + OPTIONS + b"\r\n\r\n\r\n\r\n")
    assert _kinds(events) == [
        "KeepalivePingReceived",
        "MessageReceived",
        "KeepalivePongReceived",
        "MessageReceived",
        "KeepalivePingReceived",
        "KeepalivePingReceived",
    ]


def test_split_ping_is_still_a_ping_and_lone_crlf_waits() -> None:
    framer = sip.StreamFramer()
    assert framer.feed(b"\r\n") == []  # could be the first half of a ping
    assert _kinds(framer.feed(b"\r\n")) == ["KeepalivePingReceived"]
    assert framer.feed(b"\r\n") == []
    assert _kinds(framer.feed(OPTIONS)) == ["KeepalivePongReceived", "MessageReceived"]


def test_missing_content_length_fails_the_stream_once() -> None:
    framer = sip.StreamFramer()
    (event,) = framer.feed(OPTIONS.replace(b"Content-Length: 0\r\n", b""))
    assert isinstance(event, sip.FramingFailed)
    assert (event.error.status_hint, event.error.reason) == (400, "missing_content_length")
    assert framer.failed
    assert framer.feed(OPTIONS) == []
    assert framer.buffered_bytes == 0


def test_rfc4475_ncl_and_mcl01_fail_the_stream() -> None:
    for name, reason in (("ncl.dat", "bad_content_length"), ("mcl01.dat", "bad_content_length")):
        (event,) = sip.StreamFramer().feed((RFC4475 / name).read_bytes())
        assert isinstance(event, sip.FramingFailed)
        assert event.error.reason == reason


def test_clerr_on_a_stream_waits_for_more_data() -> None:
    framer = sip.StreamFramer()
    assert framer.feed((RFC4475 / "clerr.dat").read_bytes()) == []
    assert not framer.failed
    assert framer.buffered_bytes > 0


def test_unparseable_but_framed_message_is_rejected_and_stream_continues() -> None:
    bad = OPTIONS.replace(b"Via: SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK1", b"Via: nonsense")
    events = sip.StreamFramer().feed(bad + OPTIONS)
    assert _kinds(events) == ["MessageRejected", "MessageReceived"]
    rejected = events[0]
    assert isinstance(rejected, sip.MessageRejected)
    assert rejected.raw == bad
    assert rejected.error.status_hint == 400


def test_header_section_without_end_is_bounded() -> None:
    framer = sip.StreamFramer()
    chunk = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    events: list[sip.FramingEvent] = framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n")
    while not events:
        events = framer.feed(chunk)
        assert framer.buffered_bytes <= MAX_MESSAGE_BYTES + len(chunk)
    (event,) = events
    assert isinstance(event, sip.FramingFailed)
    assert (event.error.status_hint, event.error.reason) == (513, "too_large")
    assert framer.buffered_bytes == 0


def test_declared_body_over_limit_fails_without_waiting() -> None:
    framer = sip.StreamFramer()
    (event,) = framer.feed(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 1000000"))
    assert isinstance(event, sip.FramingFailed)
    assert event.error.reason == "too_large"


def test_small_custom_limit() -> None:
    framer = sip.StreamFramer(max_message_bytes=100)
    (event,) = framer.feed(OPTIONS)
    assert isinstance(event, sip.FramingFailed)


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_any_split_frames_the_same_messages(
    data: st.DataObject, invite_bytes: bytes, make_invite: Callable[..., bytes]
) -> None:
    pieces = {
        "invite": invite_bytes,
        "options": OPTIONS,
        "ping": b"\r\n\r\n",
        "pong": b"\r\n",
        "mpart": (RFC4475 / "mpart01.dat").read_bytes(),
        "empty-body-invite": make_invite(b""),
    }
    names = data.draw(st.lists(st.sampled_from(sorted(pieces)), min_size=1, max_size=6))
    stream = b"".join(pieces[n] for n in names) + OPTIONS  # a final message settles a pending CRLF
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=15)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole = sip.StreamFramer().feed(stream)
    split = _feed_all(sip.StreamFramer(), chunks)
    assert _kinds(split) == _kinds(whole)
    assert [e.raw for e in split if isinstance(e, sip.MessageReceived)] == [
        e.raw for e in whole if isinstance(e, sip.MessageReceived)
    ]
    expected_messages = [pieces[n] for n in names if n not in ("ping", "pong")] + [OPTIONS]
    assert [e.raw for e in whole if isinstance(e, sip.MessageReceived)] == expected_messages


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    framer = sip.StreamFramer(max_message_bytes=2000)
    for chunk in chunks:
        for event in framer.feed(chunk):
            if isinstance(event, sip.MessageRejected | sip.FramingFailed):
                assert event.error.reason in sip.PARSE_ERROR_REASONS
