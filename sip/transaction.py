"""SIP transactions (RFC 3261 17, RFC 6026), sans-I/O.

How this works: a transaction is a small state machine driven by three kinds of input: a message
from the peer, a message from the transaction user (TU), and a timer that fired. Every legal
transition is one entry of a table below, ``(state, input) -> (action, next state)``, with the RFC
section beside it, in the style of h11's ``_state.py``. An input the table does not list for a state
is handled explicitly by the ``_unlisted`` policy of each machine: peer input is absorbed (a late
or duplicated message must never break us), TU input raises `LocalProtocolError` (our bug).

Time is injected. Each transaction keeps its armed timers as absolute deadlines in seconds;
`get_timer()` returns the earliest one and `handle_timer(now)` fires every timer that is due. Timers
A, E and G double up to T2 (17.1.1.2, 17.1.2.2, 17.2.1). On a reliable transport the retransmission
timers are never armed and the wait timers D, I, J, K are zero (17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2).

A transaction never touches a socket: what it wants sent accumulates in `outgoing` (bytes) and what
the TU should learn in `events`; the endpoint drains both after each call.

After a 2xx the INVITE transactions enter RFC 6026's Accepted state instead of terminating, so a
retransmitted INVITE is absorbed and retransmitted 2xx reach the UAC core (which re-sends its ACK);
the UAS core, not the transaction, retransmits its 2xx until the ACK comes (13.3.1.4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final

from sip.errors import LocalProtocolError
from sip.message import BRANCH_MAGIC_COOKIE, Request, Response

__all__ = [
    "DEFAULT_T1_S",
    "DEFAULT_T2_S",
    "DEFAULT_T4_S",
    "INVITE_CLIENT_TABLE",
    "INVITE_SERVER_TABLE",
    "NON_INVITE_CLIENT_TABLE",
    "NON_INVITE_SERVER_TABLE",
    "Action",
    "ClientTransaction",
    "Input",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "Timer",
    "TimerConfig",
    "Transaction",
    "TransactionKey",
    "TxState",
    "client_key_of_response",
    "server_key",
]

#: RFC 3261 17.1.1.1: T1, the RTT estimate; 500 ms is the RFC default.
DEFAULT_T1_S: Final = 0.5
#: RFC 3261 17.1.2.2: the longest interval between non-INVITE retransmissions.
DEFAULT_T2_S: Final = 4.0
#: RFC 3261 17.1.2.2: how long a message may stay in the network.
DEFAULT_T4_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The RFC 3261 timer base values (Table 4), and whether the transport is reliable."""

    t1_s: float = DEFAULT_T1_S
    t2_s: float = DEFAULT_T2_S
    t4_s: float = DEFAULT_T4_S
    reliable: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.t1_s <= self.t2_s or self.t4_s < 0:
            raise ValueError("need 0 < t1_s <= t2_s and t4_s >= 0")

    @property
    def timeout_s(self) -> float:
        """64*T1: timers B, F, H, J (unreliable), L, M and the 2xx give-up (13.3.1.4)."""
        return 64 * self.t1_s


class TxState(enum.Enum):
    CALLING = "calling"  # INVITE client, 17.1.1.2
    TRYING = "trying"  # non-INVITE client and server, 17.1.2.2 / 17.2.2
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"  # INVITE server, 17.2.1
    ACCEPTED = "accepted"  # INVITE client and server after a 2xx, RFC 6026 7.1 / 7.2
    TERMINATED = "terminated"


class Timer(enum.Enum):
    A = "A"  # INVITE request retransmit (unreliable), 17.1.1.2
    B = "B"  # INVITE transaction timeout, 17.1.1.2
    D = "D"  # wait for response retransmits, 17.1.1.2
    E = "E"  # non-INVITE request retransmit (unreliable), 17.1.2.2
    F = "F"  # non-INVITE transaction timeout, 17.1.2.2
    G = "G"  # INVITE final response retransmit (unreliable), 17.2.1
    H = "H"  # wait for ACK receipt, 17.2.1
    I = "I"  # wait for ACK retransmits, 17.2.1  # noqa: E741
    J = "J"  # wait for non-INVITE request retransmits, 17.2.2
    K = "K"  # wait for response retransmits, 17.1.2.2
    L = "L"  # wait for INVITE retransmits after a 2xx, RFC 6026 8.7
    M = "M"  # wait for 2xx retransmits, RFC 6026 8.4


class Input(enum.Enum):
    """What can happen to a transaction (timer inputs are `Timer` members)."""

    REQUEST = "request"  # the request (a retransmission, for a server)
    ACK = "ack"  # an ACK matching an INVITE server transaction (non-2xx ACK, 17.2.3)
    R1XX = "1xx"  # a provisional response
    R2XX = "2xx"
    R3456 = "3xx-6xx"
    TRANSPORT_ERROR = "transport_error"


class Action(enum.Enum):
    NONE = "none"
    PASS_UP = "pass_up"  # noqa: S105 - report the response to the TU
    ACK_PASS_UP = "ack_pass_up"  # noqa: S105 - send the ACK for a non-2xx, report the response
    RESEND_ACK = "resend_ack"  # a retransmitted non-2xx final: ACK it again
    RETRANSMIT = "retransmit"  # client: send the request again
    RESEND_LAST = "resend_last"  # server: send the last response again
    SEND = "send"  # server: send the TU's response
    TIMEOUT = "timeout"  # report TransactionTimedOut
    TRANSPORT_FAILED = "transport_failed"
    ABSORB = "absorb"  # a retransmission we deliberately swallow


Table = dict[tuple[TxState, "Input | Timer"], tuple[Action, TxState]]

S = TxState
A = Action

# -- INVITE client, RFC 3261 17.1.1.2 (figure 5) with RFC 6026 7.2 Accepted -----------------
INVITE_CLIENT_TABLE: Final[Table] = {
    (S.CALLING, Timer.A): (A.RETRANSMIT, S.CALLING),  # 17.1.1.2 "retransmit, double A"
    (S.CALLING, Timer.B): (A.TIMEOUT, S.TERMINATED),  # 17.1.1.2 "inform TU of timeout"
    (S.CALLING, Input.R1XX): (A.PASS_UP, S.PROCEEDING),  # 17.1.1.2
    (S.CALLING, Input.R2XX): (A.PASS_UP, S.ACCEPTED),  # RFC 6026 7.2
    (S.CALLING, Input.R3456): (A.ACK_PASS_UP, S.COMPLETED),  # 17.1.1.2, ACK per 17.1.1.3
    (S.CALLING, Input.TRANSPORT_ERROR): (A.TRANSPORT_FAILED, S.TERMINATED),  # 17.1.4
    (S.PROCEEDING, Input.R1XX): (A.PASS_UP, S.PROCEEDING),  # 17.1.1.2
    (S.PROCEEDING, Input.R2XX): (A.PASS_UP, S.ACCEPTED),  # RFC 6026 7.2
    (S.PROCEEDING, Input.R3456): (A.ACK_PASS_UP, S.COMPLETED),  # 17.1.1.2
    (S.PROCEEDING, Timer.B): (A.TIMEOUT, S.TERMINATED),  # 17.1.1.2 (B keeps running)
    (S.PROCEEDING, Timer.A): (A.NONE, S.PROCEEDING),  # A stops on a provisional
    (S.COMPLETED, Input.R3456): (A.RESEND_ACK, S.COMPLETED),  # 17.1.1.2 "resend ACK"
    (S.COMPLETED, Timer.D): (A.NONE, S.TERMINATED),  # 17.1.1.2
    (S.COMPLETED, Input.TRANSPORT_ERROR): (A.TRANSPORT_FAILED, S.TERMINATED),  # 17.1.1.2
    (S.ACCEPTED, Input.R2XX): (A.PASS_UP, S.ACCEPTED),  # RFC 6026 7.2: TU re-sends its ACK
    (S.ACCEPTED, Timer.M): (A.NONE, S.TERMINATED),  # RFC 6026 7.2
}

# -- non-INVITE client, RFC 3261 17.1.2.2 (figure 6) --------------------------------------------
NON_INVITE_CLIENT_TABLE: Final[Table] = {
    (S.TRYING, Timer.E): (A.RETRANSMIT, S.TRYING),  # min(2E, T2)
    (S.TRYING, Timer.F): (A.TIMEOUT, S.TERMINATED),
    (S.TRYING, Input.R1XX): (A.PASS_UP, S.PROCEEDING),
    (S.TRYING, Input.R2XX): (A.PASS_UP, S.COMPLETED),
    (S.TRYING, Input.R3456): (A.PASS_UP, S.COMPLETED),
    (S.TRYING, Input.TRANSPORT_ERROR): (A.TRANSPORT_FAILED, S.TERMINATED),
    (S.PROCEEDING, Timer.E): (A.RETRANSMIT, S.PROCEEDING),  # every T2 once proceeding
    (S.PROCEEDING, Timer.F): (A.TIMEOUT, S.TERMINATED),
    (S.PROCEEDING, Input.R1XX): (A.PASS_UP, S.PROCEEDING),
    (S.PROCEEDING, Input.R2XX): (A.PASS_UP, S.COMPLETED),
    (S.PROCEEDING, Input.R3456): (A.PASS_UP, S.COMPLETED),
    (S.PROCEEDING, Input.TRANSPORT_ERROR): (A.TRANSPORT_FAILED, S.TERMINATED),
    (S.COMPLETED, Timer.K): (A.NONE, S.TERMINATED),
}

# -- INVITE server, RFC 3261 17.2.1 (figure 7) with RFC 6026 7.1 Accepted ------------------------
INVITE_SERVER_TABLE: Final[Table] = {
    (S.PROCEEDING, Input.REQUEST): (A.RESEND_LAST, S.PROCEEDING),  # 17.2.1 resend provisional
    (S.PROCEEDING, Input.R1XX): (A.SEND, S.PROCEEDING),  # 17.2.1, from the TU
    (S.PROCEEDING, Input.R2XX): (A.SEND, S.ACCEPTED),  # RFC 6026 7.1
    (S.PROCEEDING, Input.R3456): (A.SEND, S.COMPLETED),  # 17.2.1, arm G and H
    (S.PROCEEDING, Input.TRANSPORT_ERROR): (A.TRANSPORT_FAILED, S.TERMINATED),
    (S.COMPLETED, Input.REQUEST): (A.RESEND_LAST, S.COMPLETED),  # 17.2.1
    (S.COMPLETED, Timer.G): (A.RESEND_LAST, S.COMPLETED),  # min(2G, T2)
    (S.COMPLETED, Timer.H): (A.TIMEOUT, S.TERMINATED),  # 17.2.1: ACK never came
    (S.COMPLETED, Input.ACK): (A.NONE, S.CONFIRMED),  # 17.2.1, arm I
    (S.COMPLETED, Input.TRANSPORT_ERROR): (A.TRANSPORT_FAILED, S.TERMINATED),
    (S.CONFIRMED, Input.ACK): (A.ABSORB, S.CONFIRMED),  # 17.2.1 "absorb ACKs"
    (S.CONFIRMED, Input.REQUEST): (A.ABSORB, S.CONFIRMED),
    (S.CONFIRMED, Timer.I): (A.NONE, S.TERMINATED),
    (S.CONFIRMED, Timer.G): (A.NONE, S.CONFIRMED),  # G stops on the ACK
    (S.ACCEPTED, Input.REQUEST): (A.ABSORB, S.ACCEPTED),  # RFC 6026 7.1: core resends 2xx
    (S.ACCEPTED, Input.R2XX): (A.SEND, S.ACCEPTED),  # RFC 6026 7.1: core's 2xx retransmits
    (S.ACCEPTED, Timer.L): (A.NONE, S.TERMINATED),  # RFC 6026 7.1
}

# -- non-INVITE server, RFC 3261 17.2.2 (figure 8) ---------------------------------------------
NON_INVITE_SERVER_TABLE: Final[Table] = {
    (S.TRYING, Input.REQUEST): (A.ABSORB, S.TRYING),  # 17.2.2 "discard"
    (S.TRYING, Input.R1XX): (A.SEND, S.PROCEEDING),
    (S.TRYING, Input.R2XX): (A.SEND, S.COMPLETED),
    (S.TRYING, Input.R3456): (A.SEND, S.COMPLETED),
    (S.PROCEEDING, Input.REQUEST): (A.RESEND_LAST, S.PROCEEDING),
    (S.PROCEEDING, Input.R1XX): (A.SEND, S.PROCEEDING),
    (S.PROCEEDING, Input.R2XX): (A.SEND, S.COMPLETED),
    (S.PROCEEDING, Input.R3456): (A.SEND, S.COMPLETED),
    (S.PROCEEDING, Input.TRANSPORT_ERROR): (A.TRANSPORT_FAILED, S.TERMINATED),
    (S.COMPLETED, Input.REQUEST): (A.RESEND_LAST, S.COMPLETED),
    (S.COMPLETED, Timer.J): (A.NONE, S.TERMINATED),
    (S.COMPLETED, Input.TRANSPORT_ERROR): (A.TRANSPORT_FAILED, S.TERMINATED),
}

del S, A

#: Server transaction key (17.2.3): ("3261", branch, sent-by, method) or the RFC 2543 fallback
#: ("2543", Request-URI, From tag, Call-ID, CSeq number, top Via, method). ACK is keyed as INVITE.
TransactionKey = tuple[object, ...]


def _status_input(status: int) -> Input:
    if status < 200:
        return Input.R1XX
    return Input.R2XX if status < 300 else Input.R3456


def server_key(request: Request) -> TransactionKey | None:
    """The key a request matches server transactions by (RFC 3261 17.2.3); None if no Via/CSeq.

    ACK maps to the INVITE it acknowledges; CANCEL keeps its own method (it is a transaction of
    its own) - look the INVITE up with `server_key(cancel)[:-1] + ("INVITE",)`.
    """
    vias = request.via
    cseq = request.cseq
    if not vias or cseq is None:
        return None
    top = vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    branch = top.branch
    if branch and branch.startswith(BRANCH_MAGIC_COOKIE) and len(branch) > len(BRANCH_MAGIC_COOKIE):
        return ("3261", branch, top.sent_by.lower(), method)
    # RFC 3261 17.2.3 last paragraphs: an RFC 2543 peer's branch is not unique. The To tag is
    # compared separately (for an ACK it is the tag of our response, not of the INVITE).
    from_ = request.from_
    return (
        "2543",
        str(request.uri),
        from_.tag if from_ is not None else None,
        request.call_id,
        cseq.seq,
        str(top),
        method,
    )


def client_key_of_response(response: Response) -> TransactionKey | None:
    """Key of the client transaction a response belongs to (RFC 3261 17.1.3): branch + method."""
    vias = response.via
    cseq = response.cseq
    if not vias or cseq is None or not vias[0].branch:
        return None
    method = "INVITE" if cseq.method == "ACK" else cseq.method
    return (vias[0].branch, method)


class Transaction:
    """Common machinery: the table walk, timers, and the outgoing/event queues."""

    table: ClassVar[Table] = {}

    def __init__(self, request: Request, config: TimerConfig, now: float) -> None:
        self.request: Request = request
        self.config: Final = config
        self.state = TxState.TERMINATED
        self.created_at: Final = now
        self.timers: dict[Timer, float] = {}
        self._intervals: dict[Timer, float] = {}
        self.outgoing: list[bytes] = []
        self.responses: list[Response] = []  # responses to report to the TU, in order
        self.timed_out = False
        self.transport_failed = False

    @property
    def terminated(self) -> bool:
        return self.state is TxState.TERMINATED

    def get_timer(self) -> float | None:
        """Earliest armed timer deadline, or None."""
        return min(self.timers.values()) if self.timers else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is at or before `now`, earliest first."""
        while self.timers:
            timer, deadline = min(self.timers.items(), key=lambda item: item[1])
            if deadline > now:
                return
            del self.timers[timer]
            self._step(timer, now, None)

    def transport_error(self, now: float) -> None:
        """The transport could not deliver a message of this transaction (RFC 3261 17.1.4)."""
        self._step(Input.TRANSPORT_ERROR, now, None)

    def _arm(self, timer: Timer, now: float, interval_s: float) -> None:
        self.timers[timer] = now + interval_s
        self._intervals[timer] = interval_s

    def _step(self, what: Input | Timer, now: float, message: Request | Response | None) -> None:
        entry = self.table.get((self.state, what))
        if entry is None:
            self._unlisted(what)
            return
        action, next_state = entry
        self._act(action, what, now, message)
        if next_state is not self.state:
            self.state = next_state
            self._entered(next_state, now)

    def _unlisted(self, what: Input | Timer) -> None:
        # Anything from the peer or a stale timer that the table does not list is absorbed:
        # late duplicates are normal on UDP and must never break the transaction.
        return

    def _act(
        self, action: Action, what: Input | Timer, now: float, message: Request | Response | None
    ) -> None:
        raise NotImplementedError

    def _entered(self, state: TxState, now: float) -> None:
        if state is TxState.TERMINATED:
            self.timers.clear()


# -- client transactions -------------------------------------------------------------------------


class ClientTransaction(Transaction):
    """Sends `request` (already carrying its Via branch) and matches responses to it."""

    def __init__(self, request: Request, config: TimerConfig, now: float) -> None:
        super().__init__(request, config, now)
        self.wire: bytes = bytes(request)
        vias = request.via
        if not vias or not vias[0].branch:
            raise LocalProtocolError("client transaction request needs a Via with a branch")
        self.key: Final[TransactionKey] = (vias[0].branch, request.method)

    def receive_response(self, response: Response, now: float) -> None:
        self._step(_status_input(response.status), now, response)

    def _act(
        self, action: Action, what: Input | Timer, now: float, message: Request | Response | None
    ) -> None:
        if action is Action.PASS_UP or action is Action.ACK_PASS_UP:
            assert isinstance(message, Response)
            self.responses.append(message)
            if action is Action.ACK_PASS_UP:
                self.outgoing.append(bytes(self.ack_for(message)))
        elif action is Action.RESEND_ACK:
            assert isinstance(message, Response)
            self.outgoing.append(bytes(self.ack_for(message)))
        elif action is Action.RETRANSMIT:
            assert isinstance(what, Timer)
            self.outgoing.append(self.wire)
            interval = min(self._intervals[what] * 2, self._retransmit_cap())
            self._arm(what, now, interval)
        elif action is Action.TIMEOUT:
            self.timed_out = True
        elif action is Action.TRANSPORT_FAILED:
            self.transport_failed = True

    def _retransmit_cap(self) -> float:
        raise NotImplementedError

    def ack_for(self, response: Response) -> Request:
        """The ACK for a non-2xx final response (RFC 3261 17.1.1.3)."""
        req = self.request
        ack = Request("ACK", req.uri)
        h = ack.headers
        h.add("Via", req.headers.values("via")[0])
        for value in req.headers.get_all("route"):
            h.add("Route", value)
        h.add("Max-Forwards", "70")
        h.add("From", req.headers.get("from") or "")
        to = response.headers.get("to")
        h.add("To", to if to is not None else req.headers.get("to") or "")
        h.add("Call-ID", req.headers.get("call-id") or "")
        cseq = req.cseq
        h.add("CSeq", f"{cseq.seq if cseq else 1} ACK")
        return ack


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 17.1.1: created in Calling; the request is in `outgoing` at once."""

    table = INVITE_CLIENT_TABLE

    def __init__(self, request: Request, config: TimerConfig, now: float) -> None:
        super().__init__(request, config, now)
        self.state = TxState.CALLING
        self.outgoing.append(self.wire)
        if not config.reliable:
            self._arm(Timer.A, now, config.t1_s)
        self._arm(Timer.B, now, config.timeout_s)

    def _retransmit_cap(self) -> float:
        return float("inf")  # 17.1.1.2: A doubles without cap; B ends it after 64*T1

    def _entered(self, state: TxState, now: float) -> None:
        cfg = self.config
        if state is TxState.PROCEEDING:
            self.timers.pop(Timer.A, None)
        elif state is TxState.COMPLETED:
            self.timers.clear()
            # 17.1.1.2: D >= 32 s for unreliable transports, 0 for reliable ones.
            self._arm(Timer.D, now, 0.0 if cfg.reliable else max(32.0, cfg.timeout_s / 2))
        elif state is TxState.ACCEPTED:
            self.timers.clear()
            self._arm(Timer.M, now, cfg.timeout_s)
        super()._entered(state, now)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 17.1.2: created in Trying; the request is in `outgoing` at once."""

    table = NON_INVITE_CLIENT_TABLE

    def __init__(self, request: Request, config: TimerConfig, now: float) -> None:
        super().__init__(request, config, now)
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"{request.method} needs no non-INVITE transaction")
        self.state = TxState.TRYING
        self.outgoing.append(self.wire)
        if not config.reliable:
            self._arm(Timer.E, now, config.t1_s)
        self._arm(Timer.F, now, config.timeout_s)

    def _retransmit_cap(self) -> float:
        return self.config.t2_s

    def _entered(self, state: TxState, now: float) -> None:
        cfg = self.config
        if state is TxState.PROCEEDING and Timer.E in self.timers:
            # 17.1.2.2: in Proceeding, retransmit every T2.
            self._intervals[Timer.E] = cfg.t2_s
        elif state is TxState.COMPLETED:
            self.timers.clear()
            self._arm(Timer.K, now, 0.0 if cfg.reliable else cfg.t4_s)
        super()._entered(state, now)


# -- server transactions -------------------------------------------------------------------------


class ServerTransaction(Transaction):
    """Absorbs request retransmissions and re-sends the last response (RFC 3261 17.2)."""

    def __init__(self, request: Request, config: TimerConfig, now: float) -> None:
        super().__init__(request, config, now)
        key = server_key(request)
        if key is None:
            raise LocalProtocolError("server transaction request needs Via and CSeq")
        self.key: Final[TransactionKey] = key
        self.last_response: Response | None = None
        self._last_wire: bytes | None = None
        self.acked = False

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    def receive_request(self, request: Request, now: float) -> None:
        """A retransmission of the request (or, for INVITE, the ACK of a non-2xx)."""
        self._step(Input.ACK if request.method == "ACK" else Input.REQUEST, now, request)

    def send_response(self, response: Response, now: float) -> None:
        """The TU's response; raises LocalProtocolError where the table forbids it."""
        self._step(_status_input(response.status), now, response)

    def _unlisted(self, what: Input | Timer) -> None:
        if what in (Input.R1XX, Input.R2XX, Input.R3456):
            raise LocalProtocolError(
                f"cannot send a {what.value} response in state {self.state.value}"
            )

    def _act(
        self, action: Action, what: Input | Timer, now: float, message: Request | Response | None
    ) -> None:
        if action is Action.SEND:
            assert isinstance(message, Response)
            self.last_response = message
            self._last_wire = bytes(message)
            self.outgoing.append(self._last_wire)
        elif action is Action.RESEND_LAST:
            if self._last_wire is not None:
                self.outgoing.append(self._last_wire)
            if isinstance(what, Timer):
                self._arm(what, now, min(self._intervals[what] * 2, self.config.t2_s))
        elif action is Action.TIMEOUT:
            self.timed_out = True
        elif action is Action.TRANSPORT_FAILED:
            self.transport_failed = True


#: What a server transaction keeps of its request once the final response is out: enough to
#: match retransmissions and report a timeout (17.2.3), not the body and the other headers, which
#: for 64*T1 would otherwise dominate the memory of a busy UAS (about half of ~9 kB per call).
_SLIM_KEYS: Final = frozenset({"via", "from", "to", "call-id", "cseq"})


def _slim(request: Request) -> Request:
    headers = request.headers
    kept = [(n, v) for (n, v), k in zip(headers, headers.keys(), strict=True) if k in _SLIM_KEYS]
    return Request(request.method, request.uri, kept)


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 17.2.1: created in Proceeding (the endpoint sends 100 Trying at once)."""

    table = INVITE_SERVER_TABLE

    def __init__(self, request: Request, config: TimerConfig, now: float) -> None:
        super().__init__(request, config, now)
        self.state = TxState.PROCEEDING

    def _entered(self, state: TxState, now: float) -> None:
        cfg = self.config
        if state in (TxState.COMPLETED, TxState.ACCEPTED):
            self.request = _slim(self.request)
        if state is TxState.COMPLETED:
            if not cfg.reliable:
                self._arm(Timer.G, now, cfg.t1_s)
            self._arm(Timer.H, now, cfg.timeout_s)
        elif state is TxState.CONFIRMED:
            self.acked = True
            self.timers.clear()
            self._arm(Timer.I, now, 0.0 if cfg.reliable else cfg.t4_s)
        elif state is TxState.ACCEPTED:
            self._arm(Timer.L, now, cfg.timeout_s)
        super()._entered(state, now)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 17.2.2: created in Trying."""

    table = NON_INVITE_SERVER_TABLE

    def __init__(self, request: Request, config: TimerConfig, now: float) -> None:
        super().__init__(request, config, now)
        self.state = TxState.TRYING

    def _entered(self, state: TxState, now: float) -> None:
        cfg = self.config
        if state is TxState.COMPLETED:
            self.request = _slim(self.request)
            self._arm(Timer.J, now, 0.0 if cfg.reliable else cfg.timeout_s)
        super()._entered(state, now)
