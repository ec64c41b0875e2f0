"""RFC 4028 session timers, RFC 3262 reliable provisional responses, RFC 3311 UPDATE and the
second forked 2xx (RFC 3261 13.2.2.4), on the sans-I/O core with injected time."""

from __future__ import annotations

import pytest

from sip.endpoint import (
    DialogTerminated,
    Endpoint,
    EndpointConfig,
    RequestReceived,
    ResponseReceived,
)
from sip.errors import ParseError
from sip.message import Request, Response, make_response, parse_message
from sip.session_timer import SessionExpires, SessionTimerPolicy, negotiate, too_small
from tests.sip.test_endpoint import SDP, UAC_ADDR, UAS_ADDR, Pair, establish, first, raw_request

TIMERS = SessionTimerPolicy(session_expires_s=1800, min_se_s=90)


def uas_endpoint(**kw: object) -> Endpoint:
    cfg = EndpointConfig(
        local_port=UAS_ADDR[1],
        allow=("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "PRACK", "UPDATE"),
        supported=("100rel",),
        session_timer=TIMERS,
        **kw,  # type: ignore[arg-type]
    )
    return Endpoint(cfg)


def sent(endpoint: Endpoint, now: float) -> list[Request | Response]:
    out = []
    for wire, _addr in endpoint.datagrams_to_send(now):
        msg = parse_message(wire)
        out.append(msg)
    return out


def invite_with(extra: str) -> bytes:
    return raw_request(
        "INVITE",
        extra=f"Contact: <sip:alice@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n{extra}",
        body=SDP,
    )


def offered(uas: Endpoint, extra: str, now: float = 0.0) -> RequestReceived:
    """Feed an INVITE with `extra` headers; the application's event (the 100 is drained)."""
    uas.receive_datagram(invite_with(extra), UAC_ADDR, now)
    req = first(Pair.events(uas), RequestReceived)
    assert isinstance(req, RequestReceived)
    sent(uas, now)
    return req


def accept_invite(uas: Endpoint, extra: str, now: float = 0.0) -> tuple[Response, int]:
    """Feed an INVITE with `extra` headers, answer it with our SDP; the 2xx and its tx id."""
    req = offered(uas, extra, now)
    uas.answer(req.transaction_id, SDP, now=now)
    (ok,) = sent(uas, now)
    assert isinstance(ok, Response)
    assert ok.status == 200
    uas.receive_datagram(
        raw_request("ACK", branch="z9hG4bKack1", to_tag=ok.to.tag or ""),  # type: ignore[union-attr]
        UAC_ADDR,
        now,
    )
    Pair.events(uas)
    return ok, req.transaction_id


def run_timers(endpoint: Endpoint, until: float) -> list[tuple[float, Request | Response]]:
    """Fire `endpoint`'s timers up to `until`; what it sent, with the time it sent it."""
    out: list[tuple[float, Request | Response]] = []
    while (deadline := endpoint.get_timer()) is not None and deadline <= until:
        endpoint.handle_timer(deadline)
        out += [(deadline, m) for m in sent(endpoint, deadline)]
    return out


# -- header parsing and negotiation -------------------------------------------------------------


def test_session_expires_parse_and_render() -> None:
    assert SessionExpires.parse("1800;refresher=UAC") == SessionExpires(1800, "uac")
    assert SessionExpires.parse(" 90 ") == SessionExpires(90, None)
    assert str(SessionExpires(600, "uas")) == "600;refresher=uas"
    for bad in ("", "abc", "-5", "90;refresher=proxy", "99999999999"):
        with pytest.raises(ParseError):
            SessionExpires.parse(bad)


def parsed(extra: str) -> Request:
    msg = parse_message(invite_with(extra))
    assert isinstance(msg, Request)
    return msg


def test_negotiation_follows_rfc4028_section_9() -> None:
    # The UAC supports timers and names no refresher: it refreshes; Require: timer in the 2xx.
    n = negotiate(parsed("Supported: timer\r\nSession-Expires: 600\r\n"), TIMERS)
    assert n is not None
    assert (n.interval_s, n.refresher, n.we_refresh) == (600, "uac", False)
    assert n.response_headers() == [
        ("Session-Expires", "600;refresher=uac"),
        ("Require", "timer"),
    ]
    # The UAC asks us to refresh; a larger interval than ours is cut to ours.
    n = negotiate(parsed("Supported: timer\r\nSession-Expires: 7200;refresher=uas\r\n"), TIMERS)
    assert n is not None
    assert (n.interval_s, n.we_refresh) == (1800, True)
    # No Supported: timer (a proxy inserted Session-Expires): we refresh, never the UAC.
    n = negotiate(parsed("Session-Expires: 300;refresher=uac\r\n"), TIMERS)
    assert n is not None
    assert n.refresher == "uas"
    assert n.response_headers()[1:] == []
    # Never below the request's Min-SE, and too small for a timer-aware UAC is a 422.
    n = negotiate(parsed("Supported: timer\r\nSession-Expires: 1800\r\nMin-SE: 2000\r\n"), TIMERS)
    assert n is not None
    assert n.interval_s == 2000
    assert too_small(parsed("Supported: timer\r\nSession-Expires: 60\r\n"), TIMERS) == 90
    assert too_small(parsed("Session-Expires: 60\r\n"), TIMERS) is None  # raised instead
    n = negotiate(parsed("Session-Expires: 60\r\n"), TIMERS)
    assert n is not None
    assert (n.interval_s, n.refresher) == (90, "uas")
    assert negotiate(parsed("Supported: timer\r\n"), TIMERS) is None  # not asked: no timer
    assert negotiate(parsed("Session-Expires: 600\r\n"), SessionTimerPolicy(mode="refuse")) is None
    with pytest.raises(ValueError):
        SessionTimerPolicy(min_se_s=30)


# -- the UAS core --------------------------------------------------------------------------------


def test_422_with_min_se_and_400_for_a_broken_session_expires() -> None:
    uas = uas_endpoint()
    uas.receive_datagram(invite_with("Supported: timer\r\nSession-Expires: 30\r\n"), UAC_ADDR, 0)
    answers = [m for m in sent(uas, 0) if isinstance(m, Response)]
    assert [r.status for r in answers] == [100, 422]
    assert answers[-1].headers.get("min-se") == "90"
    assert uas.rejections["interval_too_small"] == 1
    assert Pair.events(uas) == []  # the application never saw it
    uas.receive_datagram(
        raw_request("INVITE", branch="z9hG4bKbad", extra="Session-Expires: soon\r\n"), UAC_ADDR, 0
    )
    assert [r.status for r in sent(uas, 0) if isinstance(r, Response)][-1] == 400


def test_2xx_carries_the_timer_and_the_peer_refreshing_keeps_the_call() -> None:
    uas = uas_endpoint()
    ok, _ = accept_invite(uas, "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n")
    assert ok.headers.get("session-expires") == "120;refresher=uac"
    assert "timer" in ok.require
    assert "100rel" in ok.supported
    to_tag = ok.to.tag or ""  # type: ignore[union-attr]
    # The caller refreshes with a bodiless UPDATE at 60 s: the core answers it, timer re-armed.
    update = raw_request(
        "UPDATE",
        branch="z9hG4bKupd1",
        to_tag=to_tag,
        cseq=2,
        extra="Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
    )
    uas.receive_datagram(update, UAC_ADDR, 60.0)
    (answer,) = sent(uas, 60.0)
    assert isinstance(answer, Response)
    assert answer.status == 200
    assert answer.headers.get("session-expires") == "120;refresher=uac"
    assert answer.contacts, "a 2xx to UPDATE carries our Contact (target refresh)"
    assert Pair.events(uas) == []
    # Nothing at the old give-up point (120 - 32 = 88 s); the BYE comes at 60 + 88 s.
    assert run_timers(uas, 147.9) == []
    (at, bye), *retransmissions = run_timers(uas, 150.0)
    assert all(isinstance(m, Request) and m.method == "BYE" for _, m in retransmissions)
    assert at == pytest.approx(148.0)
    assert isinstance(bye, Request)
    assert bye.method == "BYE"
    (ended,) = Pair.events(uas)
    assert isinstance(ended, DialogTerminated)
    assert ended.reason == "session_expired"
    assert uas.dialog_count == 0


def test_we_refresh_with_update_when_the_peer_allows_it() -> None:
    uas = uas_endpoint()
    accept_invite(uas, "Allow: INVITE, ACK, BYE, UPDATE\r\nSession-Expires: 100;refresher=uas\r\n")
    ((at, update),) = run_timers(uas, 50.0)
    assert at == 50.0
    assert isinstance(update, Request)
    assert update.method == "UPDATE"
    assert update.body == b""
    assert update.headers.get("session-expires") == "100;refresher=uac"
    # The peer answers; the next refresh is half an interval later, and nothing is reported.
    ok = make_response(update, 200, headers=[("Session-Expires", "100;refresher=uac")])
    uas.receive_datagram(bytes(ok), UAC_ADDR, 50.1)
    assert Pair.events(uas) == []
    (second,) = [m for t, m in run_timers(uas, 100.1) if isinstance(m, Request)]
    assert second.method == "UPDATE"


def test_we_refresh_with_the_same_sdp_by_reinvite_and_bye_when_it_fails() -> None:
    uas = uas_endpoint(t1_s=0.5)
    accept_invite(uas, "Allow: INVITE, ACK, BYE\r\nSession-Expires: 90;refresher=uas\r\n")
    ((_at, reinvite),) = run_timers(uas, 45.0)
    assert isinstance(reinvite, Request)
    assert reinvite.method == "INVITE"
    assert reinvite.body == SDP  # 7.4: the same offer again, not a new session version
    uas.receive_datagram(bytes(make_response(reinvite, 481)), UAC_ADDR, 45.2)
    out = sent(uas, 45.2)
    methods = [m.method for m in out if isinstance(m, Request)]
    assert methods == ["ACK", "BYE"]  # ACK of the 481 (17.1.1.3), then the BYE (10)
    (ended,) = Pair.events(uas)
    assert isinstance(ended, DialogTerminated)
    assert ended.reason == "session_expired"


def test_refresh_answer_without_session_expires_turns_the_timer_off() -> None:
    uas = uas_endpoint()
    accept_invite(uas, "Allow: UPDATE\r\nSession-Expires: 90;refresher=uas\r\n")
    ((_, update),) = run_timers(uas, 45.0)
    assert isinstance(update, Request)
    uas.receive_datagram(bytes(make_response(update, 200)), UAC_ADDR, 45.1)
    assert [m for _, m in run_timers(uas, 10_000.0) if isinstance(m, Request)] == []
    assert uas.dialog_count == 1
    assert Pair.events(uas) == []


def test_no_session_expires_no_timer() -> None:
    uas = uas_endpoint()
    ok, _ = accept_invite(uas, "Supported: timer\r\n")
    assert ok.headers.get("session-expires") is None
    assert [m for _, m in run_timers(uas, 10_000.0) if isinstance(m, Request)] == []
    assert uas.dialog_count == 1


def test_update_with_an_offer_goes_to_the_application_and_glare_rules_apply() -> None:
    pair = Pair(uas=uas_endpoint())
    uac_dialog, _ = establish(pair)
    dialog = pair.uac.dialog(uac_dialog)
    assert dialog is not None
    update = dialog.create_request("UPDATE", body=SDP, content_type="application/sdp")
    pair.uac.send_request(update, UAS_ADDR, now=1.0, dialog_id=uac_dialog)
    pair.pump()
    got = first(pair.events(pair.uas), RequestReceived)
    assert isinstance(got, RequestReceived)
    assert got.request.method == "UPDATE"
    assert got.dialog_id is not None
    # Our own re-INVITE outstanding: an UPDATE with an offer is glare (RFC 3311 5.2): 491.
    pair.uas.send_response(
        got.transaction_id, 200, now=1.0, body=SDP, content_type="application/sdp"
    )
    pair.pump()
    pair.uas.reinvite(got.dialog_id, SDP, now=2.0)
    pair.drop = lambda direction, data: direction == "uas->uac"  # keep it outstanding
    pair.pump()
    pair.drop = lambda direction, data: False
    again = dialog.create_request("UPDATE", body=SDP, content_type="application/sdp")
    pair.uac.send_request(again, UAS_ADDR, now=2.1, dialog_id=uac_dialog)
    pair.pump()
    assert 491 in statuses_of(pair)


def statuses_of(pair: Pair) -> list[int]:
    return [int(d[8:11]) for name, d in pair.wire if name == "uas->uac" and d.startswith(b"SIP/")]


# -- RFC 3262 ------------------------------------------------------------------------------------


def test_required_100rel_makes_our_180_reliable_until_prack() -> None:
    uas = uas_endpoint(t1_s=0.5)
    req = offered(uas, "Require: 100rel\r\nSupported: timer\r\n")
    uas.send_response(req.transaction_id, 180, now=0.0)
    (ringing,) = sent(uas, 0.0)
    assert isinstance(ringing, Response)
    assert ringing.status == 180
    assert "100rel" in ringing.require
    rseq = int(ringing.headers.get("rseq") or "0")
    assert 1 <= rseq < 2**31
    # A second 1xx before the PRACK is not sent (3).
    uas.send_response(req.transaction_id, 183, now=0.1)
    assert sent(uas, 0.1) == []
    # Retransmitted at T1, 2T1, ... until the PRACK.
    times = [t for t, m in run_timers(uas, 1.6) if isinstance(m, Response) and m.status == 180]
    assert times == [0.5, 1.5]
    to_tag = ringing.to.tag or ""  # type: ignore[union-attr]
    wrong = raw_request(
        "PRACK", branch="z9hG4bKpr0", to_tag=to_tag, cseq=2, extra=f"RAck: {rseq + 7} 1 INVITE\r\n"
    )
    uas.receive_datagram(wrong, UAC_ADDR, 1.7)
    assert [r.status for r in sent(uas, 1.7) if isinstance(r, Response)] == [481]
    prack = raw_request(
        "PRACK", branch="z9hG4bKpr1", to_tag=to_tag, cseq=3, extra=f"RAck: {rseq} 1 INVITE\r\n"
    )
    uas.receive_datagram(prack, UAC_ADDR, 1.8)
    assert [r.status for r in sent(uas, 1.8) if isinstance(r, Response)] == [200]
    assert [
        m for _, m in run_timers(uas, 10.0) if isinstance(m, Response) and m.status == 180
    ] == []
    assert Pair.events(uas) == []  # PRACK is the core's business
    # The next provisional response is reliable again, with the next RSeq.
    uas.send_response(req.transaction_id, 183, now=2.0)
    (progress,) = sent(uas, 2.0)
    assert isinstance(progress, Response)
    assert progress.headers.get("rseq") == str(rseq + 1)
    uas.answer(req.transaction_id, SDP, now=2.1)
    (ok,) = sent(uas, 2.1)
    assert isinstance(ok, Response)
    assert ok.status == 200
    # The 2xx ends the 183's retransmissions.
    assert [m for _, m in run_timers(uas, 3.0) if isinstance(m, Response) and m.status == 183] == []


def test_supported_100rel_alone_keeps_provisionals_unreliable() -> None:
    uas = uas_endpoint()
    req = offered(uas, "Supported: 100rel\r\n")
    uas.send_response(req.transaction_id, 180, now=0.0)
    (ringing,) = sent(uas, 0.0)
    assert isinstance(ringing, Response)
    assert ringing.headers.get("rseq") is None


def test_require_100rel_without_support_is_420() -> None:
    uas = Endpoint(EndpointConfig(local_port=UAS_ADDR[1]))
    uas.receive_datagram(invite_with("Require: 100rel\r\n"), UAC_ADDR, 0.0)
    answers = [r for r in sent(uas, 0.0) if isinstance(r, Response)]
    assert [r.status for r in answers] == [100, 420]
    assert answers[-1].unsupported == ("100rel",)


# -- forking -------------------------------------------------------------------------------------


def test_second_forked_2xx_is_acked_and_hung_up_without_telling_the_application() -> None:
    uac = Endpoint(EndpointConfig(local_port=UAC_ADDR[1]))
    uac.invite("sip:bob@127.0.0.1:5060", UAS_ADDR, now=0.0, body=SDP)
    ((wire, _),) = uac.datagrams_to_send(0.0)
    invite = parse_message(wire)
    assert isinstance(invite, Request)
    first_ok = make_response(
        invite, 200, to_tag="forkA", headers=[("Contact", "<sip:a@127.0.0.1:5061>")], body=SDP
    )
    second_ok = make_response(
        invite, 200, to_tag="forkB", headers=[("Contact", "<sip:b@127.0.0.1:5062>")], body=SDP
    )
    uac.receive_datagram(bytes(first_ok), UAS_ADDR, 0.1)
    uac.receive_datagram(bytes(second_ok), UAS_ADDR, 0.2)
    uac.receive_datagram(bytes(second_ok), UAS_ADDR, 0.3)  # retransmitted: ACKed again
    out = uac.datagrams_to_send(0.3)
    kinds = [(d.split(b" ", 1)[0], addr) for d, addr in out]
    assert kinds == [
        (b"ACK", ("127.0.0.1", 5061)),
        (b"ACK", ("127.0.0.1", 5062)),
        (b"BYE", ("127.0.0.1", 5062)),
        (b"ACK", ("127.0.0.1", 5062)),
    ]
    assert b"tag=forkB" in out[2][0]
    oks = [
        e for e in Pair.events(uac) if isinstance(e, ResponseReceived) and e.response.status == 200
    ]
    assert len(oks) == 1
    assert oks[0].dialog_id is not None
    assert oks[0].dialog_id.remote_tag == "forkA"
    assert uac.dialog_count == 1
    assert uac.rejections["forked_answer"] == 1
