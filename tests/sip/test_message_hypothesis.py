"""Property tests: generated messages round-trip; arbitrary and mutated bytes parse or raise ParseError."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import sip

SEEDS_DIR = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "testdata"
    / "sip"
    / "fuzz-seeds"
    / "pjproject"
)
SEEDS = sorted(p.read_bytes() for p in SEEDS_DIR.rglob("*") if p.is_file())
RFC4475 = sorted(p.read_bytes() for p in (SEEDS_DIR.parents[1] / "rfc4475").glob("*.dat"))

ACCESSORS = (
    "via", "from_", "to", "call_id", "cseq", "max_forwards", "contacts", "contact_star", "route",
    "record_route", "authorization", "proxy_authorization", "www_authenticate",
    "proxy_authenticate", "expires", "content_type", "content_length", "require", "supported",
    "allow", "proxy_require", "unsupported",
)  # fmt: skip

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
words = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
hosts = st.one_of(
    st.lists(words, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["[2001:db8::1]", "[::1]", "[fe80::1:2]"]),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
# Any printable text, including quotes, backslashes, commas, '<' and non-ASCII, for display names.
display_names = st.one_of(
    st.none(), st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=15)
)
uri_params = st.lists(
    st.tuples(words, st.one_of(st.none(), words)), max_size=3, unique_by=lambda p: p[0]
)


@st.composite
def uris(draw: st.DrawFn) -> sip.Uri:
    return sip.Uri(
        draw(st.sampled_from(["sip", "sips"])),
        user=draw(
            st.one_of(
                st.none(),
                st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10),
            )
        ),
        host=draw(hosts),
        port=draw(ports),
        params=draw(uri_params),
    )


@st.composite
def name_addrs(draw: st.DrawFn) -> sip.NameAddr:
    params = draw(
        st.lists(
            st.tuples(words, st.one_of(st.none(), tokens)), max_size=3, unique_by=lambda p: p[0]
        )
    )
    return sip.NameAddr(draw(uris()), draw(display_names), tuple(params))


@st.composite
def messages(draw: st.DrawFn) -> sip.Request | sip.Response:
    method = draw(st.one_of(st.sampled_from(["INVITE", "BYE", "OPTIONS", "REGISTER"]), tokens))
    msg: sip.Request | sip.Response
    if draw(st.booleans()):
        msg = sip.Request(method, draw(uris()))
    else:
        msg = sip.Response(draw(st.integers(100, 699)), draw(st.text("abc XYZ-é", max_size=20)))
    msg.via = draw(
        st.lists(
            st.builds(
                sip.Via,
                st.sampled_from(["UDP", "TCP", "TLS", "WS"]),
                hosts,
                ports,
                st.lists(
                    st.tuples(words, st.one_of(st.none(), tokens)),
                    max_size=3,
                    unique_by=lambda p: p[0],
                ).map(lambda p: (("branch", "z9hG4bK" + "x"), *p) if p else ()),
            ),
            min_size=1,
            max_size=4,
        )
    )
    msg.from_ = draw(name_addrs())
    msg.to = draw(name_addrs())
    msg.call_id = draw(
        st.tuples(words, st.one_of(st.none(), hosts)).map(
            lambda t: t[0] if t[1] is None else f"{t[0]}@{t[1]}"
        )
    )
    msg.cseq = sip.CSeq(draw(st.integers(0, 2**32 - 1)), method)
    msg.max_forwards = draw(st.integers(0, 255))
    msg.contacts = draw(st.lists(name_addrs(), max_size=3))
    for name, value in draw(
        st.lists(
            st.tuples(
                tokens.map(lambda t: "X-" + t), st.text('abc ,;="<>:@', max_size=20).map(str.strip)
            ),
            max_size=4,
        )
    ):
        msg.headers.add(name, value)
    msg.body = draw(st.binary(max_size=200))
    return msg


def _typed(msg: sip.Request | sip.Response) -> tuple[object, ...]:
    start = (msg.method, msg.uri) if isinstance(msg, sip.Request) else (msg.status, msg.reason)
    return (
        start,
        msg.via,
        msg.from_,
        msg.to,
        msg.call_id,
        msg.cseq,
        msg.max_forwards,
        msg.contacts,
        [(n, v) for n, v in msg.headers if n.startswith("X-")],
        msg.body,
    )


@settings(max_examples=150, deadline=None)
@given(messages())
def test_build_serialise_parse_round_trip(msg: sip.Request | sip.Response) -> None:
    wire = bytes(msg)
    parsed = sip.parse_message(wire)
    assert _typed(parsed) == _typed(msg)
    assert bytes(parsed) == wire
    for contact in parsed.contacts:
        assert contact.uri == sip.Uri.parse(str(contact.uri))


def _error(fn: Callable[[], object]) -> sip.ParseError | None:
    """Run fn; return the ParseError it raised (any other exception propagates and fails)."""
    try:
        fn()
    except sip.ParseError as exc:
        return exc
    return None


def _exercise(data: bytes) -> None:
    error = _error(lambda: sip.parse_message(data))
    if error is not None:
        assert error.reason in sip.PARSE_ERROR_REASONS
        return
    msg = sip.parse_message(data)
    for name in ACCESSORS:
        error = _error(lambda name=name: getattr(msg, name))  # type: ignore[misc]
        assert error is None or error.reason in sip.PARSE_ERROR_REASONS
    for lister in (lambda: msg.contacts, lambda: msg.route, lambda: msg.record_route):
        if _error(lister) is None:
            for entry in lister():
                _error(lambda e=entry: e.uri)  # type: ignore[misc]
    # What we accepted serialises into something we accept again, identically.
    again = sip.parse_message(bytes(msg))
    assert bytes(again) == bytes(msg)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b"INVITE sip:a@b SIP/2.0\r\n" + b + b"\r\n\r\n"))
def test_arbitrary_header_sections(data: bytes) -> None:
    _exercise(data)


@st.composite
def mutated_seeds(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS + RFC4475)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup", "truncate"]))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b" ",
                        b",",
                        b";",
                        b'"',
                        b"<",
                        b">",
                        b":",
                        b"%",
                        b"\x00",
                        b"\r\n ",
                        b"@",
                    ]
                )
            )
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 40))]
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated_seeds())
def test_mutated_fuzz_seeds_parse_or_raise_parse_error(data: bytes) -> None:
    _exercise(data)


def test_seed_corpus_present() -> None:
    assert len(SEEDS) >= 20
    parsed = 0
    for seed in SEEDS:
        try:
            _exercise(seed)
            sip.parse_message(seed)
            parsed += 1
        except sip.ParseError:
            pass
    # 9 seeds are complete SIP messages (most with bare-LF lines); the rest are SDP-only,
    # truncated, or lack the empty line that ends the headers.
    assert parsed == 9
