"""EndpointConfig.security: flood limits, bans and scanner drops through in-memory messages."""

from __future__ import annotations

import pytest

from sip.auth import DigestAuthenticator, DigestClient, Password
from sip.endpoint import (
    Addr,
    BanLifted,
    Endpoint,
    EndpointConfig,
    FloodDetected,
    RegistrationChanged,
    ResponseReceived,
    SourceBanned,
)
from sip.message import Response, parse_message
from sip.registrar import Registrar
from sip.security import (
    SCANNER_USER_AGENTS,
    BanPolicy,
    FloodPolicy,
    Guard,
    SecurityEvent,
    SecurityPolicy,
    parse_networks,
)
from tests.sip.test_endpoint import (
    UAC_ADDR,
    UAS_ADDR,
    Pair,
    answer_of,
    make_registrar_uas,
    pair_events,
    raw_request,
    register_request,
)

ELSEWHERE: Addr = ("198.51.100.20", 5060)
TRUNK: Addr = ("192.0.2.10", 5060)
TRUNKS = parse_networks(["192.0.2.0/24"])


def secured(**policy: object) -> EndpointConfig:
    return EndpointConfig(security=SecurityPolicy(**policy))  # type: ignore[arg-type]


def options(n: int, extra: str = "") -> bytes:
    return raw_request("OPTIONS", branch=f"z9hG4bKsec{n}", extra=extra)


def register_with(
    uas: Endpoint, password: str, cseq: int, now: float, source: Addr = UAC_ADDR
) -> int:
    """A REGISTER, its 401, and the REGISTER again with `password`: the final status."""
    (challenge,) = answer_of(uas, register_request(cseq), now, source)
    assert challenge.status == 401
    value = DigestClient("alice", password).authorize(
        challenge.headers.get_all("www-authenticate"), method="REGISTER", uri="sip:127.0.0.1"
    )
    answers = answer_of(uas, register_request(cseq + 1, value), now, source)
    return answers[-1].status if answers else 0


def test_without_a_policy_nothing_is_screened() -> None:
    uas = Endpoint(EndpointConfig())
    assert uas.security is None
    scanner = "User-Agent: friendly-scanner\r\n"
    statuses = [[r.status for r in answer_of(uas, options(n, scanner))] for n in range(300)]
    assert statuses == [[200]] * 300  # a scanner and a flood, both answered as before
    assert uas.rejections == {}


def test_flood_dropped_silently_counted_and_reported_once() -> None:
    uas = Endpoint(secured(allow=TRUNKS, flood=FloodPolicy(rate_per_s=1, burst=3)))
    answered = [len(answer_of(uas, options(n))) for n in range(5)]
    assert answered == [1, 1, 1, 0, 0]
    assert uas.rejections == {"flood_dropped": 2}
    assert pair_events(uas) == [FloodDetected(UAC_ADDR[0], 0.0)]
    assert len(answer_of(uas, options(10), source=ELSEWHERE)) == 1  # its own bucket
    assert all(answer_of(uas, options(20 + n), source=TRUNK) for n in range(50))  # allow-listed
    assert answer_of(uas, options(99), 2.0) == []  # still flooding: not a full burst yet
    assert len(answer_of(uas, options(100), 5.5)) == 1  # calmed down
    assert uas.rejections == {"flood_dropped": 3}


def test_flood_limit_counts_stream_messages_one_by_one() -> None:
    config = EndpointConfig(transport="TCP", security=SecurityPolicy(flood=FloodPolicy(1, 2)))
    uas = Endpoint(config)
    uas.receive_stream(options(1) + options(2) + options(3), UAC_ADDR, 0.0)
    answers = [parse_message(wire) for wire, _ in uas.datagrams_to_send(0.0)]
    assert [a.status for a in answers if isinstance(a, Response)] == [200, 200]
    assert uas.rejections == {"flood_dropped": 1}


def test_scanner_dropped_silently_unless_allow_listed() -> None:
    uas = Endpoint(secured(allow=TRUNKS, scanner_user_agents=SCANNER_USER_AGENTS))
    assert answer_of(uas, options(1, "User-Agent: friendly-scanner\r\n")) == []
    assert answer_of(uas, options(2, "User-Agent: SIPVicious PRO\r\n")) == []
    assert uas.rejections == {"scanner_dropped": 2}
    assert uas.server_transaction_count == 0
    assert len(answer_of(uas, options(3, "User-Agent: Yealink SIP-T46S\r\n"))) == 1
    assert len(answer_of(uas, options(4, "User-Agent: friendly-scanner\r\n"), source=TRUNK)) == 1
    assert pair_events(uas) == []


def test_register_failures_ban_the_source_and_its_requests_are_dropped() -> None:
    bans = BanPolicy(max_failures=3, ban_s=60)
    uas = make_registrar_uas(secured(bans=bans))
    assert [register_with(uas, "WRONG", 2 * i + 1, float(i)) for i in range(3)] == [403] * 3
    assert uas.rejections == {"auth_failed": 3}
    (banned,) = [e for e in pair_events(uas) if isinstance(e, SourceBanned)]
    assert banned == SourceBanned(UAC_ADDR[0], "auth_failures", 2.0, 62.0, 3, 1, "alice")
    # Banned: even the right password gets nowhere, and nothing is answered.
    assert answer_of(uas, register_request(20), 3.0) == []
    assert answer_of(uas, options(1), 3.0) == []
    assert uas.rejections["banned_dropped"] == 2
    assert register_with(uas, "secret", 30, 3.0, source=ELSEWHERE) == 200  # others are fine
    assert uas.security is not None
    assert uas.security.bans is not None
    assert [b.address for b in uas.security.bans.bans(3.0)] == [UAC_ADDR[0]]
    timer = uas.get_timer()
    assert timer is not None
    assert timer <= 62.0


def test_banned_source_answered_403_at_its_source_in_reject_mode() -> None:
    uas = Endpoint(secured(bans=BanPolicy(), banned_action="reject"))
    assert uas.security is not None
    assert uas.security.bans is not None
    source: Addr = ("198.51.100.9", 41000)  # the Via says 127.0.0.1:5070
    uas.security.bans.ban(source[0], 0.0)
    uas.receive_datagram(options(1), source, 1.0)
    ((wire, dest),) = uas.datagrams_to_send(1.0)
    assert dest == source
    answer = parse_message(wire)
    assert isinstance(answer, Response)
    assert answer.status == 403
    uas.receive_datagram(raw_request("ACK", branch="z9hG4bKack"), source, 1.0)
    assert uas.datagrams_to_send(1.0) == []  # never an answer to an ACK
    assert uas.rejections == {"banned_rejected": 2}
    assert uas.server_transaction_count == 0


def test_success_after_a_ban_does_not_reset_its_strikes() -> None:
    uas = make_registrar_uas(secured(bans=BanPolicy(max_failures=2, ban_s=10, max_ban_s=100)))
    register_with(uas, "WRONG", 1, 0.0)
    register_with(uas, "WRONG", 3, 0.0)
    assert uas.get_timer() == 10.0  # the ban ends before any transaction timer
    uas.handle_timer(10.0)
    events = pair_events(uas)
    assert [type(e) for e in events] == [SourceBanned, BanLifted]
    assert events[1] == BanLifted(UAC_ADDR[0], "expired", 10.0)
    assert register_with(uas, "secret", 5, 11.0) == 200
    assert isinstance(pair_events(uas)[-1], RegistrationChanged)
    register_with(uas, "WRONG", 7, 12.0)
    register_with(uas, "WRONG", 9, 12.0)
    (again,) = [e for e in pair_events(uas) if isinstance(e, SourceBanned)]
    assert (again.strikes, again.until) == (
        2,
        32.0,
    )  # doubled: the login in between changed nothing


def test_responses_from_a_banned_source_still_complete_our_transactions() -> None:
    uas = Endpoint(secured(bans=BanPolicy()))
    pair = Pair(uas=uas)
    assert uas.security is not None
    assert uas.security.bans is not None
    uas.security.bans.ban(UAC_ADDR[0], 0.0)  # both sides of the pair live on 127.0.0.1
    request_id = uas.options("sip:alice@127.0.0.1:5070", now=0.0, addr=UAC_ADDR)
    pair.pump()
    responses = [e for e in pair.events(uas) if isinstance(e, ResponseReceived)]
    assert [(e.request_id, e.response.status) for e in responses] == [(request_id, 200)]
    pair.uac.options("sip:bob@127.0.0.1:5060", now=0.0, addr=UAS_ADDR)
    pair.pump()
    assert uas.rejections == {"banned_dropped": 1}


def test_responses_are_never_flood_limited() -> None:
    uas = Endpoint(secured(flood=FloodPolicy(rate_per_s=1, burst=1)))
    pair = Pair(uas=uas)
    ids = [uas.options("sip:alice@127.0.0.1:5070", now=0.0, addr=UAC_ADDR) for _ in range(5)]
    pair.pump()
    responses = [e for e in pair.events(uas) if isinstance(e, ResponseReceived)]
    assert sorted(e.request_id for e in responses) == sorted(ids)
    assert uas.rejections == {}


def test_bans_survive_a_reload_and_lifting_one_is_an_event() -> None:
    config = secured(bans=BanPolicy(max_failures=2, ban_s=600))
    old = make_registrar_uas(config)
    register_with(old, "WRONG", 1, 100.0)
    register_with(old, "WRONG", 3, 100.0)
    assert old.security is not None
    assert old.security.bans is not None
    state = old.security.bans.export_state(160.0)

    new = make_registrar_uas(config)
    assert new.security is not None
    assert new.security.bans is not None
    new.security.bans.import_state(state, 0.0)
    assert answer_of(new, register_request(10), 1.0) == []  # still banned after the reload
    assert new.get_timer() == 540.0  # 600 s from 100, read at 160 -> 540 s left at 0
    assert new.security.bans.lift(UAC_ADDR[0], 2.0) is not None
    assert pair_events(new) == [BanLifted(UAC_ADDR[0], "lifted", 2.0)]
    assert register_with(new, "secret", 20, 3.0) == 200


def registrar_with(guard: Guard) -> Endpoint:
    return Endpoint(
        EndpointConfig(),
        registrar=Registrar(),
        authenticator=DigestAuthenticator(realm="acd"),
        user_lookup={"alice": Password("secret")}.get,
        guard=guard,
    )


def test_a_shared_guard_counts_and_bans_across_endpoints() -> None:
    # The UDP and the TCP listener of one server: failures on both add up, and the ban holds
    # on both. The guard's events go to its own emit, not into either endpoint's queue.
    events: list[SecurityEvent] = []
    guard = Guard(SecurityPolicy(bans=BanPolicy(max_failures=3, ban_s=60)), emit=events.append)
    udp, tcp = registrar_with(guard), registrar_with(guard)
    assert udp.security is guard
    assert tcp.security is guard
    assert register_with(udp, "WRONG", 1, 1.0) == 403
    assert register_with(tcp, "WRONG", 3, 2.0) == 403
    assert register_with(udp, "WRONG", 5, 3.0) == 403
    assert events == [SourceBanned(UAC_ADDR[0], "auth_failures", 3.0, 63.0, 3, 1, "alice")]
    assert answer_of(tcp, options(1), 4.0) == []  # banned on the other listener too
    assert (udp.rejections["auth_failed"], tcp.rejections["auth_failed"]) == (2, 1)
    assert tcp.rejections["banned_dropped"] == 1
    udp.handle_timer(40.0)  # the transactions' timers (J, 32 s) have run out
    tcp.handle_timer(40.0)
    assert udp.get_timer() == tcp.get_timer() == 63.0  # both arm the shared guard's timer
    tcp.handle_timer(63.0)
    udp.handle_timer(63.0)  # the second endpoint finds nothing left to do
    assert events[1:] == [BanLifted(UAC_ADDR[0], "expired", 63.0)]
    assert not any(isinstance(e, SourceBanned | BanLifted) for e in pair_events(udp))
    assert not any(isinstance(e, SourceBanned | BanLifted) for e in pair_events(tcp))


def test_a_guard_and_a_policy_together_are_refused() -> None:
    policy = SecurityPolicy(bans=BanPolicy())
    with pytest.raises(ValueError, match="not both"):
        Endpoint(EndpointConfig(security=policy), guard=Guard(policy))


def test_the_guard_of_a_live_endpoint_is_replaced_keeping_its_bans() -> None:
    # A reload with another policy: the endpoint stays (its transactions and dialogs with it),
    # the guard is rebuilt, and the bans carry over through export_state / import_state.
    old = Guard(SecurityPolicy(bans=BanPolicy(max_failures=2, ban_s=600)))
    uas = registrar_with(old)
    register_with(uas, "WRONG", 1, 100.0)
    register_with(uas, "WRONG", 3, 100.0)
    assert old.bans is not None
    new = Guard(SecurityPolicy(bans=BanPolicy(max_failures=9, ban_s=60), banned_action="reject"))
    assert new.bans is not None
    new.bans.import_state(old.bans.export_state(160.0), 160.0)
    uas.security = new
    (refused,) = answer_of(uas, options(1), 161.0)
    assert refused.status == 403  # the new policy's action, the old ban
    assert new.get_timer() == 700.0  # the ban's own end, not the new ban_s
    uas.handle_timer(700.0)
    assert len(answer_of(uas, options(2), 700.0)) == 1  # the endpoint ran the new guard's timer
    uas.security = None  # and screening can be turned off as well
    assert len(answer_of(uas, options(3), 700.0)) == 1
