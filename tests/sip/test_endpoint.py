"""The sans-I/O UA core: two endpoints back to back in memory (h11 ConnectionPair style)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.auth import DigestAuthenticator, DigestClient, Password
from sip.dialog import DialogId
from sip.endpoint import (
    AckReceived,
    AckTimedOut,
    Addr,
    ByeReceived,
    CancelReceived,
    DialogTerminated,
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    InfoReceived,
    InternalErrorOccurred,
    RegistrationChanged,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from sip.errors import LocalProtocolError
from sip.message import Request, Response, make_response, parse_message
from sip.registrar import Registrar

UAS_ADDR: Addr = ("127.0.0.1", 5060)
UAC_ADDR: Addr = ("127.0.0.1", 5070)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


class Pair:
    """A UAC and a UAS endpoint wired together; `drop` decides per message whether it is lost."""

    def __init__(self, uas: Endpoint | None = None, uac: Endpoint | None = None) -> None:
        self.uas = uas or Endpoint(EndpointConfig(local_port=UAS_ADDR[1]))
        self.uac = uac or Endpoint(EndpointConfig(local_port=UAC_ADDR[1]))
        self.now = 0.0
        self.wire: list[tuple[str, bytes]] = []
        self.drop: Callable[[str, bytes], bool] = lambda direction, data: False

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for src, dst, src_addr, name in (
                (self.uac, self.uas, UAC_ADDR, "uac->uas"),
                (self.uas, self.uac, UAS_ADDR, "uas->uac"),
            ):
                for data, _addr in src.datagrams_to_send(self.now):
                    self.wire.append((name, data))
                    moved = True
                    if not self.drop(name, data):
                        dst.receive_datagram(data, src_addr, self.now)

    def advance(self, until: float) -> None:
        """Run both endpoints' timers up to `until`."""
        while True:
            deadlines = [t for t in (self.uas.get_timer(), self.uac.get_timer()) if t is not None]
            if not deadlines or min(deadlines) > until:
                break
            self.now = max(self.now, min(deadlines))
            self.uas.handle_timer(self.now)
            self.uac.handle_timer(self.now)
            self.pump()
        self.now = until

    @staticmethod
    def events(endpoint: Endpoint) -> list[EndpointEvent]:
        out = []
        while (event := endpoint.next_event()) is not None:
            out.append(event)
        return out


def first(events: list[EndpointEvent], kind: type) -> EndpointEvent:
    matches = [e for e in events if isinstance(e, kind)]
    assert matches, f"no {kind.__name__} in {events}"
    return matches[0]


def statuses(pair: Pair, direction: str = "uas->uac") -> list[int]:
    out = []
    for name, data in pair.wire:
        if name == direction and data.startswith(b"SIP/2.0 "):
            out.append(int(data[8:11]))
    return out


def establish(pair: Pair) -> tuple[DialogId, DialogId]:
    pair.uac.invite("sip:bob@127.0.0.1:5060", UAS_ADDR, now=pair.now, body=SDP)
    pair.pump()
    req = first(pair.events(pair.uas), RequestReceived)
    assert isinstance(req, RequestReceived)
    pair.uas.answer(req.transaction_id, SDP, now=pair.now)
    pair.pump()
    ack = first(pair.events(pair.uas), AckReceived)
    resp = [e for e in pair.events(pair.uac) if isinstance(e, ResponseReceived)]
    assert [r.response.status for r in resp] == [100, 200]
    assert isinstance(ack, AckReceived)
    assert resp[-1].dialog_id is not None
    return resp[-1].dialog_id, ack.dialog_id


def raw_request(
    method: str,
    *,
    branch: str = "z9hG4bKraw1",
    extra: str = "",
    body: bytes = b"",
    uri: str = "sip:bob@127.0.0.1:5060",
    to_tag: str = "",
    cseq: int = 1,
) -> bytes:
    to = f"<sip:bob@127.0.0.1>{';tag=' + to_tag if to_tag else ''}"
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=abc\r\n"
        f"To: {to}\r\n"
        "Call-ID: raw-call-1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def answer_of(
    endpoint: Endpoint, data: bytes, now: float = 0.0, source: Addr = UAC_ADDR
) -> list[Response]:
    endpoint.receive_datagram(data, source, now)
    out = []
    for wire, _addr in endpoint.datagrams_to_send(now):
        msg = parse_message(wire)
        assert isinstance(msg, Response)
        out.append(msg)
    return out


# -- calls --------------------------------------------------------------------------------------


def test_call_setup_and_bye_from_uac() -> None:
    pair = Pair()
    uac_dialog, uas_dialog = establish(pair)
    assert uac_dialog.call_id == uas_dialog.call_id
    assert uac_dialog.local_tag == uas_dialog.remote_tag
    pair.uac.bye(uac_dialog, now=pair.now)
    pair.pump()
    uas_events = pair.events(pair.uas)
    assert isinstance(first(uas_events, ByeReceived), ByeReceived)
    assert first(uas_events, DialogTerminated) == DialogTerminated(uas_dialog, "bye_received")
    bye_resp = first(pair.events(pair.uac), ResponseReceived)
    assert isinstance(bye_resp, ResponseReceived)
    assert bye_resp.response.status == 200
    assert pair.uas.dialog_count == 0
    assert pair.uac.dialog_count == 0


def test_bye_from_uas_side_and_cseq_increments() -> None:
    pair = Pair()
    uac_dialog, uas_dialog = establish(pair)
    uas_side = pair.uas.dialog(uas_dialog)
    assert uas_side is not None
    assert uas_side.remote_target == pair.uac.contact_uri  # from the INVITE's Contact (12.1.1)
    pair.uas.info(uas_dialog, b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay", now=0.0)
    pair.pump()
    info = first(pair.events(pair.uac), InfoReceived)
    assert isinstance(info, InfoReceived)
    assert info.request.body.startswith(b"Signal=5")
    pair.uas.bye(uas_dialog, now=0.0)
    pair.pump()
    bye = first(pair.events(pair.uac), ByeReceived)
    assert isinstance(bye, ByeReceived)
    assert bye.request.cseq is not None
    assert bye.request.cseq.seq == 2  # INFO was 1
    assert bye.dialog_id == uac_dialog


def test_2xx_retransmitted_until_ack_then_stops() -> None:
    pair = Pair()
    # Lose the first two ACKs: the UAS retransmits its 200 at T1, 2T1 ... until one gets through.
    acks_lost = 0

    def drop(direction: str, data: bytes) -> bool:
        nonlocal acks_lost
        if data.startswith(b"ACK") and acks_lost < 2:
            acks_lost += 1
            return True
        return False

    pair.drop = drop
    pair.uac.invite("sip:bob@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP)
    pair.pump()
    req = first(pair.events(pair.uas), RequestReceived)
    assert isinstance(req, RequestReceived)
    pair.uas.answer(req.transaction_id, SDP, now=0.0)
    pair.pump()
    pair.advance(10.0)
    oks = [t for t in statuses(pair) if t == 200]
    assert len(oks) == 3  # original + retransmits at 0.5 and 1.5 (the third ACK got through)
    uas_events = pair.events(pair.uas)
    assert len([e for e in uas_events if isinstance(e, AckReceived)]) == 1
    uac_oks = [
        e
        for e in pair.events(pair.uac)
        if isinstance(e, ResponseReceived) and e.response.status == 200
    ]
    assert len(uac_oks) == 1  # retransmitted 2xx are ACKed again but reported once
    pair.advance(100.0)
    assert len([t for t in statuses(pair) if t == 200]) == 3


def test_ack_never_arrives_reports_ack_timed_out() -> None:
    pair = Pair()
    pair.drop = lambda direction, data: data.startswith(b"ACK")
    pair.uac.invite("sip:bob@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP)
    pair.pump()
    req = first(pair.events(pair.uas), RequestReceived)
    assert isinstance(req, RequestReceived)
    pair.uas.answer(req.transaction_id, SDP, now=0.0)
    pair.pump()
    pair.advance(40.0)
    events = pair.events(pair.uas)
    timed_out = first(events, AckTimedOut)
    assert isinstance(timed_out, AckTimedOut)
    # 13.3.1.4: T1 doubling up to T2 within 64*T1 = 32 s: 0.5,1,2,4,4,4,4,4,4,4 -> 10 retransmits
    assert len([t for t in statuses(pair) if t == 200]) == 1 + 10


def test_cancel_before_answer_gives_487_and_200() -> None:
    pair = Pair()
    rid = pair.uac.invite("sip:bob@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP)
    pair.pump()
    req = first(pair.events(pair.uas), RequestReceived)
    assert isinstance(req, RequestReceived)
    pair.uas.send_response(req.transaction_id, 180, now=0.0)
    pair.pump()
    pair.uac.cancel(rid, now=0.0)
    pair.pump()
    cancelled = first(pair.events(pair.uas), CancelReceived)
    assert isinstance(cancelled, CancelReceived)
    assert cancelled.transaction_id == req.transaction_id
    finals = [e.response.status for e in pair.events(pair.uac) if isinstance(e, ResponseReceived)]
    assert 487 in finals
    assert 200 in finals  # the CANCEL's own 200
    ack_sent = [d for n, d in pair.wire if n == "uac->uas" and d.startswith(b"ACK")]
    assert len(ack_sent) == 1  # 17.1.1.3: the transaction ACKs the 487
    with pytest.raises(LocalProtocolError):  # the INVITE already has its final response
        pair.uas.send_response(req.transaction_id, 200, now=0.0)


def test_cancel_without_transaction_is_481() -> None:
    uas = Endpoint(EndpointConfig())
    out = answer_of(uas, raw_request("CANCEL", branch="z9hG4bKnothere"))
    assert [r.status for r in out] == [481]
    assert uas.rejections["no_transaction"] == 1


def test_invite_retransmission_absorbed_and_100_resent() -> None:
    uas = Endpoint(EndpointConfig())
    invite = raw_request(
        "INVITE",
        body=SDP,
        extra="Content-Type: application/sdp\r\nContact: <sip:a@127.0.0.1:5070>\r\n",
    )
    assert [r.status for r in answer_of(uas, invite)] == [100]
    assert isinstance(uas.next_event(), RequestReceived)
    assert [r.status for r in answer_of(uas, invite, 0.3)] == [100]  # last response again
    assert uas.next_event() is None


def test_rfc2543_invite_and_ack_matching() -> None:
    uas = Endpoint(EndpointConfig())
    invite = raw_request(
        "INVITE", branch="old2543", body=SDP, extra="Content-Type: application/sdp\r\n"
    )
    answer_of(uas, invite)
    event = uas.next_event()
    assert isinstance(event, RequestReceived)
    uas.send_response(event.transaction_id, 486, now=0.0)
    (busy,) = [parse_message(d) for d, _ in uas.datagrams_to_send(0.0)]
    assert isinstance(busy, Response)
    assert busy.to is not None
    # Retransmitted INVITE without a magic cookie: matched by R-URI/From tag/Call-ID/CSeq/Via.
    assert [r.status for r in answer_of(uas, invite, 0.2)] == [486]
    tag = busy.to.tag
    assert tag is not None
    ack = raw_request("ACK", branch="old2543", to_tag=tag)
    assert answer_of(uas, ack, 0.3) == []
    # The ACK confirmed the transaction: no more 486 retransmissions (timer G stopped).
    uas.handle_timer(5.0)
    assert uas.datagrams_to_send(5.0) == []


def test_options_answered_even_with_max_forwards_zero() -> None:
    uas = Endpoint(EndpointConfig(relayed_methods=("INVITE",)))
    (resp,) = answer_of(
        uas, raw_request("OPTIONS", extra="").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    )
    assert resp.status == 200
    assert "INVITE" in resp.allow
    assert resp.headers.get("accept") == "application/sdp, application/dtmf-relay, application/dtmf"
    assert "supported" in resp.headers
    inv = raw_request("INVITE", branch="z9hG4bKmf0").replace(
        b"Max-Forwards: 70", b"Max-Forwards: 0"
    )
    assert [r.status for r in answer_of(uas, inv)] == [100, 483]


@pytest.mark.parametrize(
    ("data", "status", "reason", "header"),
    [
        (raw_request("FOO"), 501, "unsupported_method", "allow"),
        (raw_request("SUBSCRIBE"), 405, "method_not_allowed", "allow"),
        (raw_request("OPTIONS", uri="nobody:opaque"), 416, "unsupported_uri_scheme", None),
        (
            raw_request("OPTIONS", extra="Require: 100rel, foo\r\n"),
            420,
            "bad_extension",
            "unsupported",
        ),
        (
            raw_request("OPTIONS", extra="Content-Type: text/plain\r\n", body=b"hello"),
            415,
            "unsupported_media_type",
            "accept",
        ),
        (raw_request("BYE", to_tag="nosuch"), 481, "no_dialog", None),
        (
            raw_request("OPTIONS").replace(b"Call-ID: raw-call-1\r\n", b""),
            400,
            "missing_header",
            None,
        ),
        (
            raw_request("OPTIONS").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1),
            505,
            "bad_version",
            None,
        ),
        (raw_request("OPTIONS").replace(b"tag=abc", b"tag=abc;bad param"), 400, "bad_header", None),
    ],
)
def test_uas_owes_these_answers(data: bytes, status: int, reason: str, header: str | None) -> None:
    uas = Endpoint(EndpointConfig())
    out = answer_of(uas, data)
    assert out[-1].status == status
    assert uas.rejections == {reason: 1}
    if header is not None:
        assert out[-1].headers.get(header)
    if status == 420:
        assert out[-1].unsupported == ("100rel", "foo")


@pytest.mark.parametrize(
    "extra",
    [
        "Contact: <sip:alice@127.0.0.1:99999>\r\n",  # port out of range: typed on access
        "Contact: <sip:al%zzice@127.0.0.1>\r\n",  # bad escape: typed on access
        "Contact: <sip:alice@127.0.0.1>, <sip:bob@127.0.0.1:70000>\r\n",
        "Record-Route: <sip:p1.example.net;lr\r\n",
        "Require: foo bar\r\n",
        "Content-Type: text\r\n",
    ],
)
@pytest.mark.parametrize("method", ["OPTIONS", "INVITE"])
def test_malformed_header_typed_only_on_access_still_gets_a_400(method: str, extra: str) -> None:
    # parse_message validates the core headers eagerly but leaves the rest (Contact and its URIs,
    # Route/Record-Route, Require, Content-Type, ...) to the first typed access. Through the
    # endpoint such a message must still end in a 400 carrying the request's Via, Call-ID and
    # CSeq and a To tag, counted as a bad header, and never reach the application.
    data = raw_request(method, extra=extra, body=b"v=0\r\n" if "Content-Type" in extra else b"")
    message = parse_message(data)  # the parse itself succeeds
    assert isinstance(message, Request)
    uas = Endpoint(EndpointConfig())
    out = answer_of(uas, data)
    assert [r.status for r in out][-1] == 400
    assert [r.status for r in out] in ([400], [100, 400])
    answer = out[-1]
    assert answer.via[0].branch == "z9hG4bKraw1"
    assert answer.call_id == "raw-call-1"
    assert answer.cseq is not None
    assert answer.cseq.method == method
    assert answer.to is not None
    assert answer.to.tag
    assert uas.rejections == {"bad_header": 1}
    assert not [e for e in pair_events(uas) if isinstance(e, RequestReceived)]


def pair_events(endpoint: Endpoint) -> list[EndpointEvent]:
    events = []
    while (event := endpoint.next_event()) is not None:
        events.append(event)
    return events


def test_unanswerable_garbage_dropped_and_counted() -> None:
    uas = Endpoint(EndpointConfig())
    assert answer_of(uas, b"\x00\xff garbage\r\n\r\n") == []
    assert answer_of(uas, b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKq\r\n\r\n") == []
    assert uas.rejections == {"unparsable_dropped": 1, "unmatched_response": 1}
    uas.rejections.clear()
    # A broken start line and no Via line at all: not a SIP request (8.1.1), nobody is answered.
    no_via = raw_request("OPTIONS").replace(b" SIP/2.0\r\n", b"\r\n", 1)
    no_via = b"\r\n".join(line for line in no_via.split(b"\r\n") if not line.startswith(b"Via:"))
    assert answer_of(uas, no_via) == []
    assert uas.rejections == {"unparsable_dropped": 1}


@pytest.mark.parametrize(
    ("old", "new", "left_out"),
    [
        # RFC 4475 3.1.2.1 badinv01: extraneous separators in Via
        (b"127.0.0.1:5070;branch=z9hG4bKraw1;rport", b"192.0.2.15;;,;,,", "via"),
        # RFC 4475 3.1.2.4 scalar02: CSeq above 2**32-1 (RFC 3261 8.1.1.5)
        (b"CSeq: 1 OPTIONS", b"CSeq: 36893488147419103232 OPTIONS", "cseq"),
        (b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS", "cseq"),
    ],
    ids=["badinv01", "scalar02", "cseq_not_a_number"],
)
def test_broken_via_or_cseq_gets_400_at_the_source_address(
    old: bytes, new: bytes, left_out: str
) -> None:
    uas = Endpoint(EndpointConfig())  # no force_rport: an intact Via would route the answer
    data = raw_request("OPTIONS").replace(old, new)
    source: Addr = ("198.51.100.9", 41000)  # neither the Via's sent-by nor its received/rport
    uas.receive_datagram(data, source, 0.0)
    ((wire, dest),) = uas.datagrams_to_send(0.0)
    assert dest == source  # 18.2.2 / RFC 3581 4: the Via cannot be trusted
    answer = parse_message(wire)
    assert isinstance(answer, Response)
    assert answer.status == 400
    assert answer.reason == f"Bad {'Via' if left_out == 'via' else 'CSeq'} Header Field"
    assert left_out not in answer.headers  # the broken value is never re-emitted
    assert answer.call_id == "raw-call-1"
    _ = answer.via, answer.from_, answer.to, answer.cseq  # everything copied still parses
    assert uas.rejections == {"bad_header": 1}


def test_received_and_rport_and_response_routing() -> None:
    uas = Endpoint(EndpointConfig())
    data = raw_request("OPTIONS").replace(b"127.0.0.1:5070", b"192.0.2.7:5999")
    uas.receive_datagram(data, ("198.51.100.1", 40000), 0.0)
    ((wire, addr),) = uas.datagrams_to_send(0.0)
    resp = parse_message(wire)
    top = resp.via[0]
    assert top.received == "198.51.100.1"
    assert top.rport == 40000
    assert addr == ("198.51.100.1", 40000)  # RFC 3581 4
    # Without rport: received is added, the response goes to received:sent-by-port (18.2.2).
    data = (
        raw_request("OPTIONS", branch="z9hG4bKnorport")
        .replace(b";rport", b"")
        .replace(b"127.0.0.1:5070", b"192.0.2.7:5999")
    )
    uas.receive_datagram(data, ("198.51.100.1", 40000), 0.0)
    ((wire, addr),) = uas.datagrams_to_send(0.0)
    assert addr == ("198.51.100.1", 5999)


def test_in_dialog_cseq_order_and_glare() -> None:
    pair = Pair()
    uac_dialog, uas_dialog = establish(pair)
    # The UAS has a re-INVITE outstanding; the UAC's re-INVITE crosses it: 491 (14.2).
    pair.uas.reinvite(uas_dialog, SDP, now=0.0)
    pair.uac.reinvite(uac_dialog, SDP, now=0.0)
    pair.pump()
    uac_events = pair.events(pair.uac)
    uas_events = pair.events(pair.uas)
    glare_statuses = [
        e.response.status for e in uac_events + uas_events if isinstance(e, ResponseReceived)
    ]
    assert 491 in glare_statuses
    assert pair.uas.rejections.get("request_pending") == 1
    # A request with a CSeq lower than the last one seen: 500 with Retry-After (12.2.2).
    dialog = pair.uac.dialog(uac_dialog)
    assert dialog is not None
    dialog.local_seq = 0
    pair.uac.info(uac_dialog, b"Signal=1\r\n", "application/dtmf-relay", now=0.0)
    pair.pump()
    resp = [e for e in pair.events(pair.uac) if isinstance(e, ResponseReceived)]
    assert resp[-1].response.status == 500
    assert resp[-1].response.headers.get("retry-after") is not None
    assert pair.uas.rejections.get("cseq_out_of_order") == 1


def test_reinvite_hold_round_trip() -> None:
    pair = Pair()
    uac_dialog, uas_dialog = establish(pair)
    hold = SDP + b"a=sendonly\r\n"
    pair.uac.reinvite(uac_dialog, hold, now=0.0)
    pair.pump()
    req = first(pair.events(pair.uas), RequestReceived)
    assert isinstance(req, RequestReceived)
    assert req.dialog_id == uas_dialog
    assert req.request.body.endswith(b"a=sendonly\r\n")
    pair.uas.answer(req.transaction_id, SDP + b"a=recvonly\r\n", now=0.0)
    pair.pump()
    assert isinstance(first(pair.events(pair.uas), AckReceived), AckReceived)
    dialog = pair.uac.dialog(uac_dialog)
    assert dialog is not None
    assert not dialog.pending_invite_out


def test_invite_timeout_reported() -> None:
    uac = Endpoint(EndpointConfig(local_port=5070))
    rid = uac.invite("sip:nobody@192.0.2.1", ("192.0.2.1", 5060), now=0.0)
    sent = len(uac.datagrams_to_send(0.0))
    now = 0.0
    while (t := uac.get_timer()) is not None and t < 40:
        now = t
        uac.handle_timer(now)
        sent += len(uac.datagrams_to_send(now))
    assert sent == 7
    event = first(Pair.events(uac), TransactionTimedOut)
    assert event == TransactionTimedOut(rid, "INVITE", event.call_id, False)  # type: ignore[union-attr]


def test_internal_error_becomes_event_and_500(monkeypatch: pytest.MonkeyPatch) -> None:
    uas = Endpoint(EndpointConfig())

    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(uas, "_answer_options", boom)
    out = answer_of(uas, raw_request("OPTIONS"))
    assert out[-1].status == 500
    event = uas.next_event()
    assert isinstance(event, InternalErrorOccurred)
    assert event.call_id == "raw-call-1"
    assert "RuntimeError" in event.error
    assert uas.rejections["internal_error"] == 1


def test_dialog_creating_responses_copy_record_route_in_order() -> None:
    """RFC 3261 12.1.1: the 18x and 2xx that create the dialog carry the INVITE's Record-Route
    values in order, so the caller's ACK and BYE go back through the proxy (Kamailio) that
    dispatched the call; the UAS's own route set is the same list (its BYE goes that way too)."""
    uas = Endpoint(EndpointConfig())
    rr = (
        "Record-Route: <sip:192.0.2.1;lr;ftag=abc>\r\n"
        "Record-Route: <sip:192.0.2.2;lr>, <sip:192.0.2.3;lr>\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n"
    )
    uas.receive_datagram(raw_request("INVITE", extra=rr, body=SDP), UAC_ADDR, 0.0)
    uas.datagrams_to_send(0.0)  # 100 Trying: no dialog, no Record-Route needed
    event = first(Pair.events(uas), RequestReceived)
    assert isinstance(event, RequestReceived)
    want = ["<sip:192.0.2.1;lr;ftag=abc>", "<sip:192.0.2.2;lr>", "<sip:192.0.2.3;lr>"]
    ringing = uas.send_response(event.transaction_id, 180, now=0.0)
    answered = uas.answer(event.transaction_id, SDP, now=0.0)
    for response in (ringing, answered):
        assert response.headers.values("record-route") == want
    assert answered.to is not None
    assert answered.to.tag
    dialog = uas.dialog(DialogId("raw-call-1", answered.to.tag, "abc"))
    assert dialog is not None
    assert [str(r.uri) for r in dialog.route_set] == [w.strip("<>") for w in want]


def test_options_probe_answers_503_while_unavailable_and_in_dialog_options_stays_200() -> None:
    """A load balancer's OPTIONS probe (Kamailio's dispatcher) reads 200 as "send calls here"
    and 503 as "not now"; a keepalive inside a live dialog is answered 200 either way."""
    pair = Pair()
    uac_dialog, _ = establish(pair)
    (ok,) = answer_of(pair.uas, raw_request("OPTIONS", branch="z9hG4bKprobe1"))
    assert ok.status == 200
    assert "INVITE" in (ok.headers.get("allow") or "")
    pair.uas.unavailable_retry_after_s = 5
    (busy,) = answer_of(pair.uas, raw_request("OPTIONS", branch="z9hG4bKprobe2"))
    assert (busy.status, busy.headers.get("retry-after")) == (503, "5")
    pair.uac.options(uac_dialog, now=pair.now)
    pair.pump()
    keepalive = first(pair.events(pair.uac), ResponseReceived)
    assert isinstance(keepalive, ResponseReceived)
    assert keepalive.response.status == 200
    pair.uas.unavailable_retry_after_s = None
    (back,) = answer_of(pair.uas, raw_request("OPTIONS", branch="z9hG4bKprobe3"))
    assert back.status == 200
    assert "overloaded" not in pair.uas.rejections  # a probe's answer is no refusal


# -- registrar and digest -------------------------------------------------------------------------


def register_request(cseq: int, auth: str | None = None) -> bytes:
    extra = "Contact: <sip:alice@127.0.0.1:5070>\r\nExpires: 600\r\n"
    if auth:
        extra += f"Authorization: {auth}\r\n"
    return (
        raw_request(
            "REGISTER", uri="sip:127.0.0.1", branch=f"z9hG4bKreg{cseq}", extra=extra, cseq=cseq
        )
        .replace(b"To: <sip:bob@127.0.0.1>", b"To: <sip:alice@127.0.0.1>")
        .replace(b"From: <sip:alice@127.0.0.1>;tag=abc", b"From: <sip:alice@127.0.0.1>;tag=abc")
    )


def make_registrar_uas(config: EndpointConfig | None = None) -> Endpoint:
    users = {"alice": Password("secret")}
    return Endpoint(
        config or EndpointConfig(),
        registrar=Registrar(),
        authenticator=DigestAuthenticator(realm="acd"),
        user_lookup=users.get,
    )


def test_register_with_digest_challenge_then_200() -> None:
    uas = make_registrar_uas()
    (challenge,) = answer_of(uas, register_request(1))
    assert challenge.status == 401
    client = DigestClient("alice", "secret")
    value = client.authorize(
        challenge.headers.get_all("www-authenticate"), method="REGISTER", uri="sip:127.0.0.1"
    )
    assert "SHA-256" in value  # RFC 8760: the strongest offered algorithm
    (ok,) = answer_of(uas, register_request(2, value), 1.0)
    assert ok.status == 200
    assert ok.contacts[0].expires == 600
    event = uas.next_event()
    assert isinstance(event, RegistrationChanged)
    assert event.aor == "sip:alice@127.0.0.1"
    assert uas.registrar is not None
    assert len(uas.registrar.bindings("sip:alice@127.0.0.1", 1.0)) == 1


def test_register_md5_only_client_accepted() -> None:
    uas = make_registrar_uas()
    (challenge,) = answer_of(uas, register_request(1))
    md5 = [c for c in challenge.headers.get_all("www-authenticate") if "MD5" in c]
    value = DigestClient("alice", "secret").authorize(md5, method="REGISTER", uri="sip:127.0.0.1")
    (ok,) = answer_of(uas, register_request(2, value), 1.0)
    assert ok.status == 200


def test_register_wrong_password_refused_and_counted() -> None:
    uas = make_registrar_uas()
    (challenge,) = answer_of(uas, register_request(1))
    value = DigestClient("alice", "WRONG").authorize(
        challenge.headers.get_all("www-authenticate"), method="REGISTER", uri="sip:127.0.0.1"
    )
    (refused,) = answer_of(uas, register_request(2, value), 1.0)
    assert refused.status == 403
    assert uas.rejections["auth_failed"] == 1
    assert uas.registrar is not None
    assert len(uas.registrar) == 0


def _register_as_alice(uas: Endpoint, contact: str) -> Response:
    """A REGISTER of ``contact`` with alice's right digest answer: the registrar's last word."""
    (challenge,) = answer_of(uas, register_request(1))
    assert challenge.status == 401
    value = DigestClient("alice", "secret").authorize(
        challenge.headers.get_all("www-authenticate"), method="REGISTER", uri="sip:127.0.0.1"
    )
    request = register_request(2, value).replace(b"<sip:alice@127.0.0.1:5070>", contact.encode())
    (answer,) = answer_of(uas, request, 1.0)
    return answer


@pytest.mark.parametrize(
    ("transport", "contact", "status"),
    [
        ("UDP", "<sip:alice@127.0.0.1:5070>", 403),
        ("TCP", "<sip:alice@127.0.0.1:5070;transport=tcp>", 403),
        ("TLS", "<sip:alice@127.0.0.1:5070;transport=udp>", 403),  # over TLS, naming UDP
        ("TLS", "<sip:alice@127.0.0.1:5071;transport=tls>", 200),
        ("TLS", "<sips:alice@127.0.0.1:5071>", 200),
    ],
)
def test_tls_only_user_registers_over_tls_with_a_tls_contact_or_gets_403(
    transport: str, contact: str, status: int
) -> None:
    users = {"alice": Password("secret")}
    uas = Endpoint(
        EndpointConfig(transport=transport),
        registrar=Registrar(),
        authenticator=DigestAuthenticator(realm="acd"),
        user_lookup=users.get,
        tls_only={"alice"}.__contains__,
    )
    answer = _register_as_alice(uas, contact)
    assert answer.status == status
    assert uas.registrar is not None
    assert len(uas.registrar) == (1 if status == 200 else 0)
    if status == 403:
        assert answer.reason == "TLS Required"
        assert uas.rejections == {"bad_register": 1}
        assert "auth_failed" not in uas.rejections  # the password was right: no ban counting


def test_tls_only_spares_other_users() -> None:
    users = {"alice": Password("secret")}
    uas = Endpoint(
        EndpointConfig(transport="UDP"),
        registrar=Registrar(),
        authenticator=DigestAuthenticator(realm="acd"),
        user_lookup=users.get,
        tls_only={"bob"}.__contains__,
    )
    assert _register_as_alice(uas, "<sip:alice@127.0.0.1:5070>").status == 200


def test_client_answers_401_once_with_incremented_cseq() -> None:
    registrar_uas = make_registrar_uas()
    uac = Endpoint(EndpointConfig(local_port=5070))
    pair = Pair(uas=registrar_uas, uac=uac)
    req = Request("REGISTER", "sip:127.0.0.1")
    for name, value in (
        ("From", "<sip:alice@127.0.0.1>;tag=x1"),
        ("To", "<sip:alice@127.0.0.1>"),
        ("Call-ID", "reg-1"),
        ("CSeq", "7 REGISTER"),
        ("Contact", "<sip:alice@127.0.0.1:5070>"),
    ):
        req.headers.add(name, value)
    rid = uac.send_request(req, UAS_ADDR, now=0.0, auth=DigestClient("alice", "secret"))
    pair.pump()
    events = [e for e in pair.events(uac) if isinstance(e, ResponseReceived)]
    assert [e.response.status for e in events] == [200]
    assert events[0].request_id == rid
    assert events[0].response.cseq is not None
    assert events[0].response.cseq.seq == 8
    # With a wrong password the second 401/403 is reported, not retried forever.
    uac2 = Endpoint(EndpointConfig(local_port=5070))
    pair2 = Pair(uas=make_registrar_uas(), uac=uac2)
    req.headers.set("CSeq", "1 REGISTER")
    uac2.send_request(req, UAS_ADDR, now=0.0, auth=DigestClient("alice", "bad"))
    pair2.pump()
    codes = [e.response.status for e in pair2.events(uac2) if isinstance(e, ResponseReceived)]
    assert codes == [403]
    sent = [d for n, d in pair2.wire if n == "uac->uas"]
    assert len(sent) == 2


# -- digest for requests the application admits (a trunk's INVITE, RFC 3261 22.3) ----------------

TRUNKS = {"pbx": Password("trunk-secret")}


def make_trunk_uas(lifetime_s: float = 300.0) -> Endpoint:
    return Endpoint(
        EndpointConfig(),
        authenticator=DigestAuthenticator(realm="acd", nonce_lifetime_s=lifetime_s),
        user_lookup={}.get,  # no agents: only the application's lookup can admit anyone
    )


def admit(pair: Pair) -> list[str]:
    """The application's side: every new INVITE is authenticated against TRUNKS and, when the
    credentials are right, answered 200; the outcomes ``authenticate`` gave, in order."""
    seen = []
    for event in pair.events(pair.uas):
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            result = pair.uas.authenticate(event.transaction_id, TRUNKS.get, now=pair.now)
            seen.append(result.outcome.value)
            if result.ok:
                assert result.username == "pbx"
                pair.uas.answer(event.transaction_id, SDP, now=pair.now)
    return seen


def test_invite_challenged_with_407_then_admitted_with_proxy_authorization() -> None:
    pair = Pair(uas=make_trunk_uas())
    pair.uac.invite(
        "sip:support@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP,
        auth=DigestClient("pbx", "trunk-secret"),
    )  # fmt: skip
    pair.pump()
    assert admit(pair) == ["missing"]
    pair.pump()  # the 407 goes out; the UAC ACKs it (17.1.1.3) and re-sends with credentials
    challenge = parse_message(next(d for n, d in pair.wire if n == "uas->uac" and b" 407 " in d))
    assert isinstance(challenge, Response)
    assert challenge.headers.get_all("www-authenticate") == []
    assert 'realm="acd"' in challenge.headers.get_all("proxy-authenticate")[0]
    assert admit(pair) == ["ok"]
    pair.pump()
    retried = [
        parse_message(d) for n, d in pair.wire if n == "uac->uas" and d.startswith(b"INVITE")
    ]
    assert isinstance(retried[-1], Request)
    assert "proxy-authorization" in retried[-1].headers
    assert statuses(pair) == [100, 407, 100, 200]
    answered = [e for e in pair.events(pair.uac) if isinstance(e, ResponseReceived)]
    assert answered[-1].response.status == 200
    assert pair.uas.rejections.get("auth_failed", 0) == 0


def test_invite_with_wrong_password_gets_403_and_is_counted() -> None:
    pair = Pair(uas=make_trunk_uas())
    pair.uac.invite(
        "sip:support@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP,
        auth=DigestClient("pbx", "WRONG"),
    )  # fmt: skip
    pair.pump()
    assert admit(pair) == ["missing"]
    pair.pump()
    assert admit(pair) == ["bad_credentials"]
    pair.pump()
    assert statuses(pair) == [100, 407, 100, 403]
    assert pair.uas.rejections["auth_failed"] == 1
    codes = [e.response.status for e in pair.events(pair.uac) if isinstance(e, ResponseReceived)]
    assert codes[-1] == 403


def test_invite_with_a_stale_nonce_is_challenged_again_with_stale_true() -> None:
    uas = make_trunk_uas(lifetime_s=10.0)
    uas.receive_datagram(
        raw_request("INVITE", body=SDP, extra="Content-Type: application/sdp\r\n"), UAC_ADDR, 0.0
    )
    (first,) = [e for e in Pair.events(uas) if isinstance(e, RequestReceived)]
    assert uas.authenticate(first.transaction_id, TRUNKS.get, now=0.0).outcome.value == "missing"
    sent = [parse_message(w) for w, _ in uas.datagrams_to_send(0.0)]
    (challenge,) = [m for m in sent if isinstance(m, Response) and m.status == 407]
    credentials = DigestClient("pbx", "trunk-secret").authorize(
        challenge.headers.get_all("proxy-authenticate"), method="INVITE",
        uri="sip:bob@127.0.0.1:5060",
    )  # fmt: skip
    late = raw_request(
        "INVITE", branch="z9hG4bKraw2", cseq=2, body=SDP,
        extra=f"Content-Type: application/sdp\r\nProxy-Authorization: {credentials}\r\n",
    )  # fmt: skip
    uas.receive_datagram(late, UAC_ADDR, 60.0)  # the nonce is older than its 10 s lifetime
    (second,) = [e for e in Pair.events(uas) if isinstance(e, RequestReceived)]
    assert uas.authenticate(second.transaction_id, TRUNKS.get, now=60.0).outcome.value == "stale"
    sent = [parse_message(w) for w, _ in uas.datagrams_to_send(60.0)]
    (again,) = [m for m in sent if isinstance(m, Response) and m.status == 407]
    assert "stale=true" in again.headers.get_all("proxy-authenticate")[0]
    assert uas.rejections.get("auth_failed", 0) == 0


def test_authenticate_without_an_authenticator_is_our_misuse() -> None:
    uas = Endpoint(EndpointConfig())
    uas.receive_datagram(
        raw_request("INVITE", body=SDP, extra="Content-Type: application/sdp\r\n"), UAC_ADDR, 0.0
    )
    (event,) = [e for e in Pair.events(uas) if isinstance(e, RequestReceived)]
    with pytest.raises(LocalProtocolError):
        uas.authenticate(event.transaction_id, TRUNKS.get, now=0.0)


# -- robustness ---------------------------------------------------------------------------------

SEEDS = [
    raw_request("INVITE", body=SDP, extra="Content-Type: application/sdp\r\n"),
    raw_request("REGISTER", uri="sip:127.0.0.1", extra="Contact: <sip:a@1.2.3.4>\r\n"),
    raw_request("BYE", to_tag="t1"),
    raw_request("CANCEL"),
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\n\r\n",
]


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    cuts=st.lists(st.tuples(st.integers(0, 600), st.binary(max_size=8)), max_size=4),
)
def test_any_mutated_datagram_never_raises(seed: bytes, cuts: list[tuple[int, bytes]]) -> None:
    """Like h11's fuzz rule: whatever arrives, receive_datagram returns and our code never fails."""
    uas = Endpoint(EndpointConfig(), registrar=Registrar())
    data = bytearray(seed)
    for at, insert in cuts:
        at = min(at, len(data))
        data[at : at + len(insert)] = insert
    uas.receive_datagram(bytes(data), UAC_ADDR, 0.0)
    while (event := uas.next_event()) is not None:
        assert not isinstance(event, InternalErrorOccurred), event
        if isinstance(event, RequestReceived):
            uas.send_response(event.transaction_id, 200, now=0.0)
    for wire, _ in uas.datagrams_to_send(0.0):
        assert isinstance(parse_message(wire), Response)  # every answer we emit parses
    uas.handle_timer(100.0)
    assert "internal_error" not in uas.rejections


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from([100, 180, 200, 401, 486]),
    cuts=st.lists(st.tuples(st.integers(0, 500), st.binary(max_size=6)), max_size=3),
)
def test_any_mutated_response_to_our_invite_never_raises(
    status: int, cuts: list[tuple[int, bytes]]
) -> None:
    uac = Endpoint(EndpointConfig(local_port=5070))
    uac.invite("sip:bob@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP, auth=DigestClient("a", "b"))
    ((wire, _),) = uac.datagrams_to_send(0.0)
    invite = parse_message(wire)
    assert isinstance(invite, Request)
    headers = [("Contact", "<sip:bob@127.0.0.1:5060>")]
    if status == 401:
        headers = [("WWW-Authenticate", 'Digest realm="r", nonce="n", qop="auth"')]
    data = bytearray(bytes(make_response(invite, status, to_tag="tt", headers=headers)))
    for at, insert in cuts:
        at = min(at, len(data))
        data[at : at + len(insert)] = insert
    uac.receive_datagram(bytes(data), UAS_ADDR, 0.1)
    uac.receive_datagram(bytes(data), UAS_ADDR, 0.2)  # and its retransmission
    uac.handle_timer(100.0)
    events = Pair.events(uac)
    assert not any(isinstance(e, InternalErrorOccurred) for e in events), events


def test_forked_answer_ends_the_other_early_dialog() -> None:
    uac = Endpoint(EndpointConfig(local_port=5070))
    uac.invite("sip:bob@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP)
    ((wire, _),) = uac.datagrams_to_send(0.0)
    invite = parse_message(wire)
    assert isinstance(invite, Request)
    contact = [("Contact", "<sip:bob@127.0.0.1:5060>")]
    ringing = make_response(invite, 180, to_tag="forkA", headers=contact)
    answered = make_response(invite, 200, to_tag="forkB", headers=contact, body=SDP)
    uac.receive_datagram(bytes(ringing), UAS_ADDR, 0.1)
    uac.receive_datagram(bytes(answered), UAS_ADDR, 0.2)
    events = Pair.events(uac)
    ended = [e for e in events if isinstance(e, DialogTerminated)]
    assert [e.dialog_id.remote_tag for e in ended] == ["forkA"]
    ok = [e for e in events if isinstance(e, ResponseReceived) and e.response.status == 200]
    assert ok[0].dialog_id is not None
    assert ok[0].dialog_id.remote_tag == "forkB"
    assert uac.dialog_count == 1
    acks = [d for d, _ in uac.datagrams_to_send(0.2) if d.startswith(b"ACK")]
    assert len(acks) == 1
    assert b";tag=forkB" in acks[0]


@settings(max_examples=60, deadline=None)
@given(lost=st.sets(st.integers(0, 14), max_size=3))
def test_call_completes_whatever_three_messages_are_lost(lost: set[int]) -> None:
    """aiortc-style deterministic loss: drop the n-th datagram on the wire (either direction)."""
    pair = Pair()
    counter = iter(range(10_000))
    pair.drop = lambda direction, data: next(counter) in lost
    rid = pair.uac.invite("sip:bob@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP)
    pair.pump()
    bye_id: int | None = None
    for step in range(400):
        for event in pair.events(pair.uas):
            assert not isinstance(event, InternalErrorOccurred)
            if isinstance(event, RequestReceived):
                pair.uas.answer(event.transaction_id, SDP, now=pair.now)
        for event in pair.events(pair.uac):
            assert not isinstance(event, InternalErrorOccurred | TransactionTimedOut), event
            if (
                isinstance(event, ResponseReceived)
                and event.request_id == rid
                and event.response.status == 200
            ):
                assert bye_id is None  # a retransmitted 2xx is ACKed, not reported again
                assert event.dialog_id is not None
                bye_id = pair.uac.bye(event.dialog_id, now=pair.now)
            if isinstance(event, ResponseReceived) and event.request_id == bye_id:
                assert event.response.status == 200
                assert pair.uas.dialog_count == 0
                assert pair.uac.dialog_count == 0
                return
        pair.pump()
        pair.advance(pair.now + 0.25)
        assert step < 399, "call did not complete"


def test_reliable_transport_no_2xx_retransmission_but_ack_timeout() -> None:
    uas = Endpoint(EndpointConfig(transport="TCP"))
    invite = raw_request("INVITE", body=SDP, extra="Content-Type: application/sdp\r\n")
    uas.receive_datagram(invite, UAC_ADDR, 0.0)
    event = uas.next_event()
    assert isinstance(event, RequestReceived)
    ok = uas.answer(event.transaction_id, SDP, now=0.0)
    assert ok.contacts[0].uri.transport == "tcp"
    assert len(uas.datagrams_to_send(0.0)) == 2  # 100 and 200, to the connection's address
    sent = 0
    now = 0.0
    while (t := uas.get_timer()) is not None and t <= 40.0:
        now = t
        uas.handle_timer(now)
        sent += len(uas.datagrams_to_send(now))
    assert sent == 0  # 13.3.1.4 retransmits for unreliable transports only; TCP delivers
    assert now == pytest.approx(32.0)
    assert isinstance(uas.next_event(), AckTimedOut)
