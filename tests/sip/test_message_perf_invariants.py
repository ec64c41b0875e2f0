"""Invariants of the parser's fast paths: they must never change what a parse returns or raises.

`parse_message` types the core headers with one fused regex (`_abnf.CORE_RE`) and falls back to
the per-header parsers when it declines. These tests parse generated messages, many of them just
off the common shape, once normally and once with the fused path switched off, and require the
same outcome: the same error (type, reason, status hint, text) or the same typed values, headers
and body. The line splitter is compared with a naive reference the same way.
"""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sip
from sip import _abnf
from sip import message as sip_message
from sip.errors import ParseError
from sip.headers import COMPACT_FORMS, _param, _param_in_text, _params, canonical_key

INVITE = (
    b"INVITE sip:support@acd.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:support@acd.example.com>\r\n"
    b'From: "Alice Caller" <sip:alice@trunk.example.net>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.trunk.example.net\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\r\n"
)

# Values for each core header: the common shape first, then shapes just off it (LWS, case,
# out-of-range numbers, other grammar branches) and outright garbage.
VIAS = [
    "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
    "SIP/2.0/TCP host.example.com;branch=z9hG4bKx",
    "SIP/2.0/UDP [2001:db8::1]:5060;received=2001:db8::2;branch=z9hG4bKa",
    "SIP/2.0/UDP 192.0.2.10;received=[2001:db8::9]",
    "SIP/2.0/udp 192.0.2.10:5060;branch=z9hG4bKb",
    "SIP / 2.0 / UDP 192.0.2.10 ; branch = z9hG4bKc",
    "SIP/2.0/UDP 192.0.2.10:70000;branch=z9hG4bKd",
    'SIP/2.0/UDP 192.0.2.10:5060;branch="quoted"',
    "SIP/2.0/UDP a.example.com, SIP/2.0/TCP b.example.com:5061",
    "SIP/3.0/UDP 192.0.2.10",
    "SIP/2.0/UDP host-.example.com",
    "SIP/2.0/UDP",
    "",
]
NAME_ADDRS = [
    '"Alice Caller" <sip:alice@trunk.example.net>;tag=1928301774',
    "<sip:support@acd.example.com>",
    "<sip:bob@example.com>;tag=abc;x",
    '"Al \\"The\\" Ice" <sip:alice@example.net>;tag=1',
    "Alice Caller <sip:alice@example.net>;tag=2",
    "sip:carol@example.net;tag=3",
    "<sip:dave@example.net> ; tag = 4",
    '"\u00e9l\u00e8ve" <sip:eleve@example.net>',
    "<sip:a\u00a0b@example.net>",
    '<sip:x@example.net>;tag="q"',
    "<*>",
    "<sip:no-close@example.net",
    "",
]
CALL_IDS = [
    "a84b4c76e66710@pc33.trunk.example.net",
    "abc",
    "a{b}c@<d>",
    "has space",
    "a@b@c",
    "",
]
CSEQS = [
    "314159 INVITE",
    "1 BYE",
    "4294967295 INVITE",
    "4294967296 INVITE",
    "12345678901 INVITE",
    "7\tINVITE",
    "7  INVITE",
    "7 FOO",
    "x INVITE",
    "",
]
MAX_FORWARDS = ["70", "0", "255", "256", "070", "99999999999", "x", ""]
CONTACTS = [
    "<sip:alice@192.0.2.10:5060;transport=udp>",
    "<SIPS:Bob:pw@[2001:db8::1]:5061;transport=TLS;lr>",
    "<sip:host.example.com>",
    "<sip:al%41ice@192.0.2.10>",
    "<sip:al%zzice@192.0.2.10>",
    "<sip:alice@192.0.2.10:99999>",
    "<sip:alice@192.0.2.10:05060>",
    "<sip:alice@192.0.2.10?subject=x&priority=urgent>",
    "<sip:a@b@c>",
    "<tel:+1-555-0100>",
    "<mailto:x@example.net>",
    "*",
    "<*>",
    '"Bob" <sip:bob@example.net>;expires=60;q=0.5',
    "<sip:a@example.net>, <sip:b@example.net>",
    "sip:c@example.net",
    "<sip:bad",
]
NAME_SPELLINGS = {
    "Via": ["Via", "v", "VIA", "via "],
    "From": ["From", "f", "FROM"],
    "To": ["To", "t", "to"],
    "Call-ID": ["Call-ID", "i", "call-id", "Call-Id"],
    "CSeq": ["CSeq", "cseq", "CSEQ"],
    "Max-Forwards": ["Max-Forwards", "max-forwards"],
    "Contact": ["Contact", "m"],
}


def outcome(data: bytes) -> tuple[object, ...]:
    """Everything observable about parsing `data`: the error, or the typed values."""
    try:
        msg = sip.parse_message(data)
    except ParseError as exc:
        return ("error", type(exc), exc.reason, exc.status_hint, str(exc))
    start = (msg.method, str(msg.uri)) if isinstance(msg, sip.Request) else (msg.status,)
    via = [(str(v), v.transport, v.host, v.port, v.params, v.branch) for v in msg.via]
    name_addrs = []
    for na in (msg.from_, msg.to):
        name_addrs.append(
            None if na is None else (str(na), na.display_name, na._uri_text, na.params, na.tag)
        )
    try:
        contacts: object = (
            msg.contact_star,
            [(str(c), c.display_name, c._uri_text, c.params, uri_outcome(c)) for c in msg.contacts],
        )
    except ParseError as exc:  # Contact is typed lazily: its error shows on access
        contacts = ("error", exc.reason, str(exc))
    return (
        "ok",
        type(msg),
        start,
        list(msg.headers),
        msg.headers.keys(),
        msg.body,
        via,
        name_addrs,
        msg.call_id,
        msg.cseq,
        msg.max_forwards,
        msg.content_length,
        contacts,
        bytes(msg),
    )


def uri_outcome(name_addr: sip.NameAddr) -> tuple[object, ...]:
    """Every field of a name-addr's URI, or the error reading it raises (URIs are typed lazily)."""
    try:
        uri = name_addr.uri
    except ParseError as exc:
        return ("error", exc.reason, str(exc))
    fields = (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers)
    return (*fields, uri.opaque, str(uri), uri.transport)


def outcome_without_fused_path(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    with monkeypatch.context() as patch:
        patch.setattr(sip_message, "_core_fast", lambda first, keys: None)
        return outcome(data)


POOLS = {
    "Via": VIAS,
    "From": NAME_ADDRS,
    "To": NAME_ADDRS,
    "Call-ID": CALL_IDS,
    "CSeq": CSEQS,
    "Max-Forwards": MAX_FORWARDS,
    "Contact": CONTACTS,
}


def build(request: bool, headers: list[str], body: bytes = b"v=0\r\n") -> bytes:
    start = "INVITE sip:support@acd.example.com SIP/2.0" if request else "SIP/2.0 200 OK"
    lines = [start, *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_every_single_perturbation_has_the_same_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    # Exhaustive over one header changed at a time (each pool value, absent, once, twice).
    mismatches = []
    cases = 0
    for request in (True, False):
        for name, pool in POOLS.items():
            for value in pool:
                for copies in (0, 1, 2):
                    headers = []
                    for other, other_pool in POOLS.items():
                        if other == name:
                            headers += [f"{name}: {value}"] * copies
                        else:
                            headers.append(f"{other}: {other_pool[0]}")
                    data = build(request, headers)
                    cases += 1
                    if outcome(data) != outcome_without_fused_path(data, monkeypatch):
                        mismatches.append(data)
    assert cases > 400
    assert mismatches == []


@st.composite
def near_common_messages(draw: st.DrawFn) -> bytes:
    request = draw(st.booleans())
    lines = ["INVITE sip:support@acd.example.com SIP/2.0" if request else "SIP/2.0 200 OK"]
    pools = POOLS
    # One or two headers are perturbed (another value, absent, repeated); the rest keep the
    # common shape, so the fused path is taken unless a perturbation makes it decline.
    perturbed = draw(st.sets(st.sampled_from(list(pools)), min_size=1, max_size=2))
    headers = []
    for name, pool in pools.items():
        copies, index = 1, 0
        if name in perturbed:
            copies = draw(st.sampled_from([1, 1, 0, 2]))
            index = draw(st.integers(0, len(pool) - 1))
        for _ in range(copies):
            spelling = draw(st.sampled_from(NAME_SPELLINGS[name]))
            pad = draw(st.sampled_from(["", " ", "\t", "  "]))
            trail = draw(st.sampled_from(["", " ", "\t"]))
            headers.append(f"{spelling}:{pad}{pool[index]}{trail}")
    headers = draw(st.permutations(headers))
    lines += headers
    body = draw(st.sampled_from([b"", b"v=0\r\n"]))
    if draw(st.booleans()):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@settings(max_examples=300, deadline=None)
@given(near_common_messages())
def test_fused_core_path_changes_no_outcome(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert outcome(data) == outcome_without_fused_path(data, monkeypatch)


def test_common_invite_takes_the_fused_path() -> None:
    # The speed of the common case rests on this; a regex edit that silently sends every message
    # to the slow path would otherwise go unnoticed.
    calls: list[object] = []
    real = sip_message._core_fast

    def spy(first: dict[str, tuple[str, str, str]], keys: list[str] | None) -> object:
        result = real(first, keys)
        calls.append(result)
        return result

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sip_message, "_core_fast", spy)
        msg = sip.parse_message(INVITE)
        assert len(calls) == 1
        assert calls[0] is not None
        assert outcome(INVITE) == outcome_without_fused_path(INVITE, monkeypatch)
    assert msg.via[0].branch == "z9hG4bK776asdhds"
    assert msg.from_ is not None
    assert msg.from_.tag == "1928301774"
    assert msg.contacts[0].uri.port == 5060


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("Via", "SIP/2.0/UDP 192.0.2.10:70000", "bad_header"),
        ("CSeq", "4294967296 INVITE", "bad_header"),
        ("Max-Forwards", "256", "bad_header"),
        ("Call-ID", "has space", "bad_header"),
        ("CSeq", "1 BYE", "cseq_mismatch"),
    ],
)
def test_core_header_errors_still_raised_at_parse(field: str, value: str, reason: str) -> None:
    data = re.sub(rf"^{field}: [^\r]*".encode(), f"{field}: {value}".encode(), INVITE, flags=re.M)
    assert data != INVITE
    with pytest.raises(ParseError) as info:
        sip.parse_message(data)
    assert info.value.reason == reason


def test_malformed_contact_still_fails_only_on_access() -> None:
    data = INVITE.replace(b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>", b"Contact: <x")
    msg = sip.parse_message(data)
    with pytest.raises(ParseError):
        _ = msg.contacts


def reference_split(block: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Naive header-line splitter: the behaviour `_split_header_lines` must keep."""
    fields, keys = [], []
    for line in block.split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            if line[:1] in (" ", "\t"):
                raise sip_message._FoldedLine
            raise ParseError("no colon", reason="bad_header_line")
        if name[:1] in (" ", "\t"):
            raise sip_message._FoldedLine
        if _abnf.TOKEN_RE.fullmatch(name.rstrip(" \t")) is None:
            raise ParseError("bad name", reason="bad_header_line")
        fields.append((name, colon, value))
        keys.append(canonical_key(name.rstrip(" \t")))
    return fields, keys


header_lines = st.one_of(
    st.tuples(
        st.sampled_from(
            [*[n for names in NAME_SPELLINGS.values() for n in names], *COMPACT_FORMS, "X-Y", "a b"]
        ),
        st.sampled_from([":", "", " :"]),
        st.text("ab:;<> \t\u00e9", max_size=8),
    ).map("".join),
    st.text(" \tab:", max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(header_lines, min_size=1, max_size=6).map("\r\n".join))
def test_line_splitter_matches_naive_reference(block: str) -> None:
    def run(split: object) -> object:
        try:
            return split(block)  # type: ignore[operator]
        except sip_message._FoldedLine:
            return "folded"
        except ParseError as exc:
            return ("error", exc.reason)

    assert run(sip_message._split_header_lines) == run(reference_split)


def test_fast_uri_class_is_the_ascii_part_of_the_general_one() -> None:
    # The fast name-addr path takes the URI inside <...> from a narrower class than NAME_ADDR_RE's
    # [^<>\s"]; it must be exactly that class restricted to printable ASCII (anything else takes
    # the general path), never wider.
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    fast = re.findall(_abnf.URI_IN_BRACKETS[:-1], everything)
    general = re.findall(r'[^<>\s"]', everything)
    assert fast == [c for c in general if "!" <= c <= "~"]


def test_via_with_lazy_params_equals_built_via() -> None:
    msg = sip.parse_message(INVITE)
    built = sip.Via("UDP", "192.0.2.10", 5060, (("branch", "z9hG4bK776asdhds"), ("rport", None)))
    (via,) = msg.via
    assert via == built
    assert hash(via) == hash(built)
    assert via.params == built.params
    assert via.has_rport
    assert str(via) == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"


param_items = st.text('tTaAgGbx=; \t"\u00e9', max_size=6)


@settings(max_examples=400, deadline=None)
@given(st.lists(param_items, min_size=1, max_size=5).map(lambda items: ";" + ";".join(items)))
def test_hot_parameter_lookup_matches_full_split(text: str) -> None:
    # Parameter texts always start with ";" (they are regex groups of the element grammar).
    for name in ("tag", "branch", "ta", "g"):
        assert _param_in_text(text, name) == _param(_params(text), name)


def test_tag_and_branch_before_and_after_the_split_agree() -> None:
    msg = sip.parse_message(INVITE.replace(b";tag=1928301774", b";TAGX=1;Tag=ab;tag=c"))
    assert msg.from_ is not None
    assert msg.from_.tag == "ab"  # first parameter named tag, case-insensitively
    assert msg.from_.params == (("tagx", "1"), ("tag", "ab"), ("tag", "c"))
    assert msg.from_.tag == "ab"  # now from the split parameters
    assert msg.via[0].branch == "z9hG4bK776asdhds"
    assert msg.to is not None
    assert msg.to.tag is None
