"""Transaction state machines (RFC 3261 17) with injected time: timers, retransmissions, absorption."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sip.errors import LocalProtocolError
from sip.message import Request, make_response, parse_message
from sip.transaction import (
    INVITE_CLIENT_TABLE,
    INVITE_SERVER_TABLE,
    NON_INVITE_CLIENT_TABLE,
    NON_INVITE_SERVER_TABLE,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Timer,
    TimerConfig,
    TxState,
    server_key,
)

T1, T2, T4 = 0.5, 4.0, 5.0
UDP = TimerConfig(T1, T2, T4)
TCP = TimerConfig(T1, T2, T4, reliable=True)


def request(method: str = "INVITE", branch: str = "z9hG4bKabc123", **over: str) -> Request:
    headers = {
        "Via": f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}",
        "Max-Forwards": "70",
        "From": "<sip:a@example.com>;tag=f1",
        "To": "<sip:b@example.com>",
        "Call-ID": "call-1",
        "CSeq": f"1 {method}",
    }
    headers.update(over)
    return Request(method, "sip:b@example.com", list(headers.items()))


def fire_all(tx: InviteClientTransaction | NonInviteClientTransaction, until: float) -> list[float]:
    """Fire timers up to `until`; the times at which the request was (re)sent."""
    sent: list[float] = []
    tx.outgoing.clear()
    while (deadline := tx.get_timer()) is not None and deadline <= until:
        tx.handle_timer(deadline)
        sent += [deadline] * len(tx.outgoing)
        tx.outgoing.clear()
    return sent


# -- table-driven timer checks -------------------------------------------------------------------


def test_timer_a_doubles_and_timer_b_times_out_after_64_t1() -> None:
    tx = InviteClientTransaction(request(), UDP, 0.0)
    assert tx.outgoing == [bytes(tx.request)]
    sent = fire_all(tx, 100.0)
    # 17.1.1.2: A fires at T1, 3T1, 7T1, ... (intervals double); B at 64*T1 ends it.
    assert sent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.state is TxState.TERMINATED
    assert tx.timed_out


def test_timer_e_caps_at_t2_and_timer_f_times_out() -> None:
    tx = NonInviteClientTransaction(request("OPTIONS"), UDP, 0.0)
    sent = fire_all(tx, 100.0)
    intervals = [b - a for a, b in zip([0.0, *sent], sent, strict=False)]
    assert intervals[:4] == [0.5, 1.0, 2.0, 4.0]
    assert all(i == T2 for i in intervals[4:])
    assert sent[-1] <= 32.0
    assert tx.timed_out
    assert tx.state is TxState.TERMINATED


def test_timer_e_is_t2_once_proceeding() -> None:
    tx = NonInviteClientTransaction(request("OPTIONS"), UDP, 0.0)
    tx.receive_response(make_response(tx.request, 100), 0.1)
    assert tx.state is TxState.PROCEEDING
    sent = fire_all(tx, 12.0)
    assert sent[0] == 0.5  # the already armed E still fires
    assert [b - a for a, b in itertools.pairwise(sent)] == [T2, T2]


@pytest.mark.parametrize(
    ("config", "expected_d"),
    [(UDP, 32.0), (TCP, 0.0)],
)
def test_timer_d_after_non_2xx_and_ack_is_sent(config: TimerConfig, expected_d: float) -> None:
    tx = InviteClientTransaction(request(), config, 0.0)
    tx.outgoing.clear()
    resp = make_response(tx.request, 486, to_tag="t9")
    tx.receive_response(resp, 1.0)
    assert tx.state is TxState.COMPLETED
    ack = parse_message(tx.outgoing[0])
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.to is not None
    assert ack.to.tag == "t9"
    assert ack.via[0].branch == "z9hG4bKabc123"  # 17.1.1.3: same branch as the INVITE
    assert tx.timers == {Timer.D: 1.0 + expected_d}
    # A retransmitted 486 is ACKed again, not reported again.
    tx.outgoing.clear()
    tx.responses.clear()
    tx.receive_response(resp, 2.0)
    assert len(tx.outgoing) == 1
    assert tx.responses == []


def test_reliable_transport_never_retransmits() -> None:
    tx = InviteClientTransaction(request(), TCP, 0.0)
    assert set(tx.timers) == {Timer.B}
    assert fire_all(tx, 100.0) == []
    ntx = NonInviteClientTransaction(request("BYE"), TCP, 0.0)
    assert set(ntx.timers) == {Timer.F}
    ntx.receive_response(make_response(ntx.request, 200), 1.0)
    assert ntx.timers == {Timer.K: 1.0}  # 17.1.2.2: K = 0 for reliable


def test_invite_server_g_doubles_to_t2_h_times_out() -> None:
    tx = InviteServerTransaction(request(), UDP, 0.0)
    tx.send_response(make_response(tx.request, 404, to_tag="x"), 0.0)
    assert tx.state is TxState.COMPLETED
    tx.outgoing.clear()
    sent: list[float] = []
    while (deadline := tx.get_timer()) is not None:
        tx.handle_timer(deadline)
        sent += [deadline] * len(tx.outgoing)
        tx.outgoing.clear()
    intervals = [b - a for a, b in zip([0.0, *sent], sent, strict=False)]
    assert intervals[:4] == [0.5, 1.0, 2.0, 4.0]
    assert all(i == T2 for i in intervals[4:])
    assert tx.timed_out  # H: the ACK never came
    assert tx.state is TxState.TERMINATED


def test_invite_server_ack_confirms_then_timer_i() -> None:
    tx = InviteServerTransaction(request(), UDP, 0.0)
    tx.send_response(make_response(tx.request, 486, to_tag="x"), 0.0)
    ack = request("ACK")
    tx.receive_request(ack, 0.7)
    assert tx.state is TxState.CONFIRMED
    assert tx.timers == {Timer.I: 0.7 + T4}
    tx.outgoing.clear()
    tx.receive_request(ack, 0.8)  # absorbed
    tx.receive_request(tx.request, 0.9)  # absorbed
    assert tx.outgoing == []
    tx.handle_timer(0.7 + T4)
    assert tx.state is TxState.TERMINATED


def test_server_retransmission_gets_last_response() -> None:
    tx = NonInviteServerTransaction(request("OPTIONS"), UDP, 0.0)
    tx.receive_request(tx.request, 0.1)
    assert tx.outgoing == []  # Trying: nothing to repeat yet (17.2.2)
    resp = make_response(tx.request, 200, to_tag="a")
    tx.send_response(resp, 0.2)
    tx.receive_request(tx.request, 0.3)
    assert tx.outgoing == [bytes(resp), bytes(resp)]
    assert tx.timers == {Timer.J: 0.2 + 64 * T1}
    with pytest.raises(LocalProtocolError):
        tx.send_response(make_response(tx.request, 500), 0.4)


def test_invite_server_accepted_absorbs_retransmissions() -> None:
    tx = InviteServerTransaction(request(), UDP, 0.0)
    tx.send_response(make_response(tx.request, 100), 0.0)
    tx.send_response(make_response(tx.request, 200, to_tag="a"), 0.1)
    assert tx.state is TxState.ACCEPTED
    tx.outgoing.clear()
    tx.receive_request(tx.request, 0.2)
    assert tx.outgoing == []  # RFC 6026 7.1: the core retransmits the 2xx, not the transaction
    tx.handle_timer(0.1 + 64 * T1)
    assert tx.state is TxState.TERMINATED


def test_invite_client_2xx_retransmissions_reach_tu() -> None:
    tx = InviteClientTransaction(request(), UDP, 0.0)
    ok = make_response(tx.request, 200, to_tag="z")
    tx.receive_response(ok, 0.1)
    tx.receive_response(ok, 0.6)
    assert tx.state is TxState.ACCEPTED
    assert len(tx.responses) == 2  # RFC 6026 7.2: the TU re-sends its ACK


def test_every_table_entry_cites_a_reachable_state() -> None:
    for table in (
        INVITE_CLIENT_TABLE,
        NON_INVITE_CLIENT_TABLE,
        INVITE_SERVER_TABLE,
        NON_INVITE_SERVER_TABLE,
    ):
        targets = {nxt for _, nxt in table.values()}
        sources = {state for state, _ in table}
        # every non-terminal target state has outgoing transitions
        assert targets - {TxState.TERMINATED} <= sources


def test_server_key_matching_rfc3261_and_2543() -> None:
    inv = request()
    ack = request("ACK")
    cancel = request("CANCEL")
    assert server_key(ack) == server_key(inv)
    key = server_key(cancel)
    assert key is not None
    assert (*key[:-1], "INVITE") == server_key(inv)
    # Differing sent-by: a different transaction even with the same branch (17.2.3).
    other = request(Via="SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKabc123")
    assert server_key(other) != server_key(inv)
    # RFC 2543 peer: no magic cookie -> key on Request-URI, From tag, Call-ID, CSeq, top Via.
    old = request(branch="1234", Via="SIP/2.0/UDP 192.0.2.1:5060;branch=1234")
    old_ack = request("ACK", Via="SIP/2.0/UDP 192.0.2.1:5060;branch=1234")
    k_old = server_key(old)
    assert k_old is not None
    assert k_old[0] == "2543"
    assert server_key(old_ack) == k_old
    assert server_key(
        request(branch="1234", Via="SIP/2.0/UDP 192.0.2.1:5060", CSeq="2 INVITE")
    ) != server_key(request(branch="1234", Via="SIP/2.0/UDP 192.0.2.1:5060"))


# -- hypothesis state machine: a client and a server over a lossy, delayed network ---------------


class InviteOverLossyUdp(RuleBasedStateMachine):
    """An INVITE client and server transaction, messages lost at random, time moving forward.

    Invariants: the client never sends more than 7 INVITEs (A at 0, .5, 1.5, ... 31.5 s), time
    never runs backwards in any timer, and once the server answered 486 and an ACK got through,
    the server stops retransmitting.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.client = InviteClientTransaction(request(), UDP, 0.0)
        self.server: InviteServerTransaction | None = None
        self.invites_sent = len(self.client.outgoing)
        self.to_server: list[bytes] = list(self.client.outgoing)
        self.client.outgoing.clear()
        self.to_client: list[bytes] = []
        self.server_final_sent_at: float | None = None

    def _collect(self) -> None:
        for data in self.client.outgoing:
            msg = parse_message(data)
            if isinstance(msg, Request) and msg.method == "INVITE":
                self.invites_sent += 1
            self.to_server.append(data)
        self.client.outgoing.clear()
        if self.server is not None:
            self.to_client += self.server.outgoing
            self.server.outgoing.clear()

    @rule(lose=st.booleans())
    def deliver_to_server(self, lose: bool) -> None:
        if not self.to_server:
            return
        data = self.to_server.pop(0)
        if lose:
            return
        msg = parse_message(data)
        assert isinstance(msg, Request)
        if self.server is None:
            if msg.method == "INVITE":
                self.server = InviteServerTransaction(msg, UDP, self.now)
        else:
            self.server.receive_request(msg, self.now)
        self._collect()

    @rule(lose=st.booleans())
    def deliver_to_client(self, lose: bool) -> None:
        if not self.to_client:
            return
        data = self.to_client.pop(0)
        if not lose:
            msg = parse_message(data)
            assert not isinstance(msg, Request)
            self.client.receive_response(msg, self.now)
            self._collect()

    @precondition(lambda self: self.server is not None and self.server.last_response is None)
    @rule()
    def server_rejects(self) -> None:
        assert self.server is not None
        self.server.send_response(make_response(self.server.request, 486, to_tag="s"), self.now)
        self.server_final_sent_at = self.now
        self._collect()

    @rule(dt=st.floats(min_value=0.0, max_value=6.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        for tx in (self.client, self.server):
            if tx is None:
                continue
            deadline = tx.get_timer()
            if deadline is not None:
                tx.handle_timer(self.now)
                assert tx.get_timer() is None or tx.get_timer() > self.now  # type: ignore[operator]
        self._collect()

    @invariant()
    def bounded_retransmissions(self) -> None:
        assert self.invites_sent <= 7

    @invariant()
    def client_ends_by_timer_b(self) -> None:
        if self.now > 64 * T1 and self.client.state in (TxState.CALLING, TxState.PROCEEDING):
            raise AssertionError("timer B should have ended the client transaction")

    @invariant()
    def confirmed_server_is_silent(self) -> None:
        if self.server is not None and self.server.state is TxState.CONFIRMED:
            assert self.server.outgoing == []
            assert Timer.G not in self.server.timers


TestInviteOverLossyUdp = InviteOverLossyUdp.TestCase
TestInviteOverLossyUdp.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


class NonInviteClientTimers(RuleBasedStateMachine):
    """Random firing times of a non-INVITE client: E never exceeds T2, F ends it at 64*T1."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.tx = NonInviteClientTransaction(request("OPTIONS"), UDP, 0.0)
        self.sends = [0.0]
        self.tx.outgoing.clear()

    @rule(dt=st.floats(min_value=0.01, max_value=3.0))
    def advance(self, dt: float) -> None:
        self.now += dt
        while (d := self.tx.get_timer()) is not None and d <= self.now:
            self.tx.handle_timer(d)
            self.sends += [d] * len(self.tx.outgoing)
            self.tx.outgoing.clear()

    @precondition(lambda self: self.tx.state is TxState.TRYING)
    @rule()
    def provisional(self) -> None:
        self.tx.receive_response(make_response(self.tx.request, 100), self.now)

    @rule(retransmit=st.booleans())
    def final(self, retransmit: bool) -> None:
        before = self.tx.state
        self.tx.receive_response(make_response(self.tx.request, 200, to_tag="q"), self.now)
        if before in (TxState.TRYING, TxState.PROCEEDING):
            assert self.tx.state is TxState.COMPLETED
            assert self.tx.timers == {Timer.K: self.now + T4}

    @invariant()
    def spacing(self) -> None:
        gaps = [b - a for a, b in zip(self.sends, self.sends[1:], strict=False)]
        assert all(g <= T2 + 1e-9 for g in gaps)
        assert all(s < 64 * T1 for s in self.sends)

    @invariant()
    def terminated_after_f(self) -> None:
        if self.now >= 64 * T1 + T4:
            assert self.tx.state is TxState.TERMINATED


TestNonInviteClientTimers = NonInviteClientTimers.TestCase
TestNonInviteClientTimers.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
