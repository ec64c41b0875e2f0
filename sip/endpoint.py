"""The sans-I/O SIP user agent core: transactions, dialogs and the answers a UAS owes.

How this works (aioquic style): the transport feeds bytes in with `receive_datagram(data, addr,
now)` (UDP) or `receive_stream(data, addr, now)` (TCP/TLS, framed per connection by
`sip.StreamFramer`), then drains `datagrams_to_send(now)` -> ``[(bytes, addr)]`` and `next_event()`,
and re-arms one timer at `get_timer()`, calling `handle_timer(now)` when it fires. The application
(the engine) reacts to events with commands: `send_response`, `answer`, `invite`, `cancel`, `bye`,
`reinvite`, `info`, `options`, `send_request`, and `authenticate` (digest-check a request it was
given, e.g. a trunk's INVITE: 407 / 403 answered here, RFC 3261 22.3). Nothing here sleeps, reads a
clock or opens a socket.

One `Endpoint` serves one transport (`EndpointConfig.transport`): responses and in-dialog requests
leave through the same transport the endpoint was fed by.

Per request the core does, in order: RFC 3581 received/rport on the top Via (18.2.1); server
transaction matching (17.2.3, with the RFC 2543 fallback), so retransmissions are absorbed and
answered with the last response; CANCEL (9.2); the mandatory-header check (8.1.1 -> 400); the UAS
checks of 8.2 (501 + Allow, 416, 420 + Unsupported, 415 + Accept, 406, 483 for the methods we relay);
then dialog matching (12.2.2: 481, 500 + Retry-After, 491) and the method's own handling: OPTIONS,
BYE and INFO are answered here (an OPTIONS outside a dialog, a load balancer's health probe, gets
503 + Retry-After while the application says it takes no calls: `unavailable_retry_after_s`),
REGISTER goes to the registrar with digest auth, INVITE and the rest are reported to the
application. A message that does not parse is answered statelessly with its
`status_hint` when it has Via, Call-ID and CSeq lines (the ones that do not parse are left out of
the answer, which goes to the source address), and dropped otherwise. Every rejection
increments `rejections[reason]` (a bounded key set, `REJECTION_REASONS`). An exception raised while
handling one message never escapes: it becomes `InternalErrorOccurred` and a 500 where answerable.

With `EndpointConfig.security` set (or a `sip.security.Guard` passed in, which several endpoints
may share), the guard screens sources first: the flood limit and (in "drop" mode) a banned source
before a request is parsed, then a banned source in "reject" mode (403) and scanner User-Agents
before the request is handled; REGISTER digest failures feed its ban tracker. Its refusals are
counted in `rejections` too, and its facts (`SourceBanned`, `BanLifted`, `FloodDetected`) come out
of `next_event()` with the others (a guard passed in hands them to its own ``emit`` instead).

The UAS core retransmits its 2xx to INVITE until the ACK arrives (13.3.1.4: T1 doubling to T2) and
reports `AckTimedOut` after 64*T1 so the application can send BYE. The UAC core ACKs 2xx itself
(13.2.2.4) and answers 401/407 challenges once per request with `sip.auth.DigestClient`.
"""

from __future__ import annotations

import heapq
import ipaddress
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from sip.auth import AuthHeaderError as _AuthHeaderError
from sip.auth import (
    AuthOutcome,
    AuthResult,
    DigestAuthenticator,
    DigestClient,
    NoUsableChallengeError,
    UserSecret,
    parse_challenge,
)
from sip.dialog import Dialog, DialogId, DialogInput, DialogState
from sip.errors import LocalProtocolError, ParseError
from sip.framing import (
    FramingFailed,
    KeepalivePingReceived,
    MessageReceived,
    MessageRejected,
    StreamFramer,
)
from sip.headers import (
    CSeq,
    NameAddr,
    Via,
    canonical_key,
    parse_call_id,
    parse_cseq,
    parse_name_addr,
    parse_via_list,
)
from sip.message import (
    Request,
    Response,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from sip.registrar import ContactRequest, RegisterResult, Registrar
from sip.security import BanLifted, FloodDetected, Guard, SecurityPolicy, SourceBanned
from sip.session_timer import (
    Negotiated,
    SessionExpires,
    SessionTimerPolicy,
    negotiate,
    parse_allow,
    too_small,
)
from sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    TimerConfig,
    TransactionKey,
    TxState,
    client_key_of_response,
    server_key,
)
from sip.uri import Uri

__all__ = [
    "MAX_DIALOGS",
    "MAX_SERVER_TRANSACTIONS",
    "REJECTION_REASONS",
    "AckReceived",
    "AckTimedOut",
    "Addr",
    "BanLifted",
    "ByeReceived",
    "CancelReceived",
    "DialogTerminated",
    "Endpoint",
    "EndpointConfig",
    "EndpointEvent",
    "FloodDetected",
    "InfoReceived",
    "InternalErrorOccurred",
    "RegistrationChanged",
    "RequestReceived",
    "ResponseReceived",
    "SecretLookup",
    "SourceBanned",
    "TransactionTimedOut",
    "uri_addr",
]

Addr = tuple[str, int]
SecretLookup = Callable[[str], UserSecret | None]

#: Most live server transactions. Each call leaves two for 64*T1 = 32 s after its final responses
#: (INVITE in Accepted, timer L; BYE in Completed, timer J), so 1000 calls/s keep ~64k alive at
#: ~6 kB each. 100k bounds memory (~600 MB) under a flood (PROTOS, scanners); beyond it: 503.
MAX_SERVER_TRANSACTIONS: Final = 100_000
#: Most live dialogs; a contact center node runs hundreds to a few thousand calls.
MAX_DIALOGS: Final = 20000
#: Most TCP/TLS connections with a framer; every open connection holds at most one message buffer.
MAX_STREAMS: Final = 4096

#: Every key `Endpoint.rejections` may hold: the parse reasons of `sip.errors` plus the UAS checks.
REJECTION_REASONS: Final = frozenset(
    {
        "bad_start_line",
        "bad_version",
        "bad_request_uri",
        "bad_header_line",
        "bad_header",
        "bad_content_length",
        "truncated_body",
        "missing_content_length",
        "no_header_end",
        "cseq_mismatch",
        "missing_header",
        "duplicate_header",
        "too_large",
        "unparsable_dropped",  # no Via, Call-ID or CSeq line at all: dropped without answer
        "malformed_response",  # a response that does not parse: dropped (RFC 4475 3.1.2.5)
        "unmatched_response",  # a response matching no client transaction (17.1.3)
        "unsupported_method",  # 501 (8.2.1)
        "method_not_allowed",  # 405 (21.4.6): a known method we do not serve
        "unsupported_uri_scheme",  # 416 (8.2.2.1)
        "bad_extension",  # 420 (8.2.2.3)
        "unsupported_media_type",  # 415 (8.2.3)
        "not_acceptable",  # 406 (8.2.3 / 21.4.7)
        "too_many_hops",  # 483 (16.3, for the methods we relay)
        "no_dialog",  # 481 (12.2.2)
        "no_transaction",  # 481 to a CANCEL (9.2)
        "cseq_out_of_order",  # 500 (12.2.2)
        "request_pending",  # 491 / 500 (14.2)
        "auth_failed",  # 403 after digest verification failed
        "bad_register",  # REGISTER refused by the registrar rules (400/423/403/500)
        "overloaded",  # 503: transaction table full
        "framing_failed",  # a stream could not be framed; connection closed
        "internal_error",  # our bug while handling a message: 500
        "interval_too_small",  # 422 (RFC 4028 6): Session-Expires below our Min-SE
        "no_matching_rseq",  # 481 to a PRACK acknowledging nothing we sent (RFC 3262 3)
        "forked_answer",  # a second fork's 2xx to our INVITE: ACKed and hung up (13.2.2.4)
        "flood_dropped",  # sip.security: the source is over its flood limit, dropped unparsed
        "banned_dropped",  # sip.security: a banned source's request, dropped unparsed
        "banned_rejected",  # sip.security: a banned source's request, answered 403
        "scanner_dropped",  # sip.security: a scanner's User-Agent, dropped without answer
    }
)

_DEFAULT_ACCEPT: Final = ("application/sdp", "application/dtmf-relay", "application/dtmf")
_URI_SCHEMES: Final = frozenset({"sip", "sips", "tel"})
# Methods of RFC 3261 and its common extensions (3262, 3311, 3428, 3515, 3903, 6086, 6665): not in
# our Allow they get 405 (21.4.6); anything else is unknown to us and gets 501 (21.5.2).
_KNOWN_METHODS: Final = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "PRACK", "UPDATE",
        "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH",
    }
)  # fmt: skip
_PARSE_STATUS_PHRASES: Final = {
    "bad_start_line": "Bad Request Line",
    "bad_request_uri": "Bad Request-URI",
    "bad_header_line": "Bad Header Line",
    "bad_header": "Bad Header Field",
    "bad_content_length": "Bad Content-Length",
    "truncated_body": "Body Shorter Than Content-Length",
    "missing_content_length": "Missing Content-Length",
    "no_header_end": "Missing Empty Line",
    "cseq_mismatch": "CSeq Method Mismatch",
    "missing_header": "Missing Mandatory Header",
    "duplicate_header": "Duplicated Single-Value Header",
}


#: Who challenges how (RFC 3261 22.1): kind -> (status, challenge header, credentials header).
_CHALLENGES: Final = {
    # 22.2 / 22.4: a UAS, and a registrar for REGISTER, answers 401 with WWW-Authenticate and
    # reads Authorization.
    "www": (401, "WWW-Authenticate", "authorization"),
    # 22.3: 407 with Proxy-Authenticate, read from Proxy-Authorization. A B2BUA admitting a
    # trunk's INVITE sits where the PBX's or carrier's SBC expects a proxy, and this is what
    # Kamailio (auth_challenge: 407 for every method but REGISTER), FreeSWITCH (auth-calls) and
    # Asterisk's chan_sip answer INVITEs with; a UAC must handle either (8.1.3.5).
    "proxy": (407, "Proxy-Authenticate", "proxy-authorization"),
}
#: What the core answers per verification outcome (RFC 3261 22.2-22.4, RFC 7616 3.3):
#: None lets the request through.
_DIGEST_ANSWERS: Final[dict[AuthOutcome, str | None]] = {
    AuthOutcome.OK: None,
    AuthOutcome.MISSING: "challenge",  # 22.2: no credentials, ask for them
    AuthOutcome.MALFORMED: "challenge",  # unreadable credentials: a fresh challenge (as Kamailio)
    AuthOutcome.STALE: "challenge_stale",  # RFC 7616 3.3: right digest, old nonce: stale=true
    AuthOutcome.BAD_CREDENTIALS: "forbidden",  # 403: wrong password, unknown user, replay
}


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Settings of one endpoint. `local_host`/`local_port` go into Via and Contact."""

    local_host: str = "127.0.0.1"
    local_port: int = 5060
    transport: str = "UDP"  # "UDP", "TCP" or "TLS"; TCP/TLS are reliable (timers per 17.1/17.2)
    t1_s: float = 0.5
    t2_s: float = 4.0
    t4_s: float = 5.0
    contact_user: str = "acd"
    user_agent: str = "acd"
    #: Methods we implement; anything else gets 501 with this list in Allow (8.2.1).
    allow: tuple[str, ...] = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REGISTER")
    #: Option tags we support (8.2.2.3); a Require outside this set gets 420. With "100rel" an
    #: INVITE that requires it gets its provisional responses reliably (RFC 3262); "timer" is
    #: added by `session_timer`.
    supported: tuple[str, ...] = ()
    #: RFC 4028 session timers as a UAS (INVITE and UPDATE); None never uses them.
    session_timer: SessionTimerPolicy | None = None
    #: Body types we accept (8.2.3); another Content-Type gets 415.
    accept: tuple[str, ...] = _DEFAULT_ACCEPT
    #: Methods we relay to another leg (B2BUA): Max-Forwards 0 gets 483 for these (16.3 step 3).
    #: OPTIONS is never listed: a UAS answers it even with Max-Forwards 0 (11, RFC 4475 3.3.11).
    relayed_methods: tuple[str, ...] = ()
    #: Send responses back to the packet's source port even without rport in Via (what
    #: Kamailio calls force_rport): needed behind NAT and for peers with a bogus sent-by.
    force_rport: bool = False
    #: Flood limits, auth-failure bans and scanner drops (`sip.security`); None screens nothing.
    security: SecurityPolicy | None = None

    @property
    def reliable(self) -> bool:
        return self.transport.upper() in ("TCP", "TLS", "WS", "WSS")

    @property
    def timers(self) -> TimerConfig:
        return TimerConfig(self.t1_s, self.t2_s, self.t4_s, reliable=self.reliable)


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the application: answer it with `send_response(transaction_id, ...)`.

    INVITE (initial and re-INVITE) and methods the core does not answer itself arrive here.
    `dialog_id` is set for requests inside a dialog.
    """

    transaction_id: int
    request: Request
    source: Addr
    dialog_id: DialogId | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response to one of our requests (`request_id` as returned by the command)."""

    request_id: int
    response: Response
    dialog_id: DialogId | None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The ACK for our 2xx arrived (13.3.1.4): the call is up."""

    dialog_id: DialogId
    request: Request


@dataclass(frozen=True, slots=True)
class AckTimedOut:
    """Our 2xx was retransmitted for 64*T1 without an ACK (13.3.1.4): send BYE."""

    dialog_id: DialogId


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """The peer cancelled the INVITE of `transaction_id`; 487 was already sent (9.2)."""

    transaction_id: int
    request: Request


@dataclass(frozen=True, slots=True)
class ByeReceived:
    """The peer hung up; 200 was already sent (15.1.2)."""

    dialog_id: DialogId
    request: Request


@dataclass(frozen=True, slots=True)
class InfoReceived:
    """INFO inside a dialog (e.g. DTMF relay, application/dtmf-relay); 200 already sent."""

    dialog_id: DialogId
    request: Request


@dataclass(frozen=True, slots=True)
class DialogTerminated:
    """A dialog ended: "bye_received", "bye_sent", "rejected", "cancelled", "timed_out" (no
    answer, or 408/481 inside the dialog) or "session_expired" (RFC 4028: no session refresh in
    time, or our refresh failed; the core has sent the BYE)."""

    dialog_id: DialogId
    reason: str


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """A transaction's timeout timer (B, F or H) fired (17.1.1.2, 17.1.2.2, 17.2.1)."""

    transaction_id: int
    method: str
    call_id: str | None
    is_server: bool


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    """A REGISTER changed bindings, or bindings expired (`result` is None then)."""

    aor: str
    result: RegisterResult | None
    expired: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InternalErrorOccurred:
    """Our own code raised while handling one message; it was answered 500 where possible."""

    call_id: str | None
    error: str


EndpointEvent = (
    RequestReceived
    | ResponseReceived
    | AckReceived
    | AckTimedOut
    | CancelReceived
    | ByeReceived
    | InfoReceived
    | DialogTerminated
    | TransactionTimedOut
    | RegistrationChanged
    | InternalErrorOccurred
    | SourceBanned
    | BanLifted
    | FloodDetected
)


# -- internal bookkeeping ---------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _ServerCtx:
    tx: ServerTransaction
    tx_id: int
    dest: Addr
    source: Addr  # where the request came from (dest follows the Via: 18.2.2)
    to_tag: str
    dialog_id: DialogId | None = None
    rseq: int = 0  # RSeq of our last reliable provisional response (RFC 3262 3)


@dataclass(slots=True, eq=False)
class _ClientCtx:
    request_id: int
    tx: ClientTransaction
    dest: Addr
    auth: DigestClient | None
    dialog_id: DialogId | None
    auth_attempts: int = 0
    creates_dialog: bool = False
    ack: _UacAck | None = None  # our ACK of the 2xx, re-sent for its retransmissions
    cancel_pending: bool = False
    cancelled: bool = False
    #: A session refresh the core sent itself (RFC 4028): its responses are not reported.
    refresh: bool = False
    #: ACKs of 2xx from other forks than the one taken, by To tag (13.2.2.4), re-sent when
    #: those 2xx are retransmitted.
    fork_acks: dict[str, _UacAck] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Retransmit2xx:
    """13.3.1.4: the UAS core's 2xx retransmission until the ACK."""

    dialog_id: DialogId
    wire: bytes
    dest: Addr
    cseq: int
    next_at: float | None
    interval_s: float
    give_up_at: float
    done: bool = False

    def get_timer(self) -> float | None:
        if self.done:
            return None
        return self.give_up_at if self.next_at is None else min(self.next_at, self.give_up_at)


@dataclass(slots=True, eq=False)
class _Reliable1xx:
    """RFC 3262 3: our reliable provisional response, re-sent until its PRACK (T1 doubling)."""

    dialog_id: DialogId
    rseq: int
    cseq: int
    wire: bytes
    dest: Addr
    next_at: float | None
    interval_s: float
    give_up_at: float
    acked: bool = False
    done: bool = False  # no more retransmissions (PRACKed, final response sent, or gave up)

    def get_timer(self) -> float | None:
        if self.done:
            return None
        return self.give_up_at if self.next_at is None else min(self.next_at, self.give_up_at)


@dataclass(slots=True, eq=False)
class _SessionTimer:
    """RFC 4028 10: when we refresh the session (we are the refresher) or give up on it (BYE
    before expiry: the peer is the refresher and no refresh came)."""

    dialog_id: DialogId
    interval_s: int
    we_refresh: bool
    deadline: float
    expires_at: float  # when the session itself expires
    done: bool = False

    @property
    def give_up_at(self) -> float:
        return self.expires_at - min(32.0, self.interval_s / 3)

    def get_timer(self) -> float | None:
        return None if self.done else self.deadline


@dataclass(slots=True, eq=False)
class _UacAck:
    wire: bytes
    dest: Addr
    cseq: int
    to_tag: str


@dataclass(slots=True)
class _Heap:
    """Deadlines with lazy deletion: entries whose owner moved on are skipped when popped."""

    entries: list[tuple[float, int, object]] = field(default_factory=list)
    seq: int = 0

    def push(self, deadline: float | None, owner: object) -> None:
        if deadline is not None:
            self.seq += 1
            heapq.heappush(self.entries, (deadline, self.seq, owner))


def _deadline_of(owner: object) -> float | None:
    if isinstance(owner, _ServerCtx):
        return None if owner.tx.terminated else owner.tx.get_timer()
    if isinstance(owner, _ClientCtx):
        return None if owner.tx.terminated else owner.tx.get_timer()
    if isinstance(owner, (_Retransmit2xx, _Reliable1xx, _SessionTimer)):
        return owner.get_timer()
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def uri_addr(uri: Uri) -> Addr:
    """Host and port a request to `uri` goes to (no DNS here: RFC 3263 belongs to the caller)."""
    maddr = uri.param("maddr")
    host = maddr or uri.host
    default = 5061 if uri.scheme == "sips" else 5060
    return (host.strip("[]"), uri.port or default)


# -- the endpoint -----------------------------------------------------------------------------------


class Endpoint:
    """A SIP user agent core (UAC + UAS + registrar), fed bytes and time, giving bytes and events."""

    def __init__(
        self,
        config: EndpointConfig | None = None,
        *,
        registrar: Registrar | None = None,
        authenticator: DigestAuthenticator | None = None,
        user_lookup: SecretLookup | None = None,
        guard: Guard | None = None,
        tls_only: Callable[[str], bool] | None = None,
    ) -> None:
        self.config: Final = config or EndpointConfig()
        self._timers: Final = self.config.timers
        self.registrar: Final = registrar
        self.authenticator: Final = authenticator
        self.user_lookup: Final = user_lookup
        #: User names (AOR users) whose phones must register over TLS with TLS contacts (sips:
        #: or ;transport=tls): their REGISTER over UDP/TCP, or naming another contact, gets
        #: 403 "TLS Required" once authenticated (`bad_register`). Looked up per REGISTER, so a
        #: caller may change the answer (a reload).
        self.tls_only: Callable[[str], bool] | None = tls_only
        if authenticator is not None and user_lookup is None:
            raise ValueError("an authenticator needs a user_lookup")
        self.rejections: dict[str, int] = {}
        self._events: deque[EndpointEvent] = deque()
        #: The source screening (its `bans` answer "who is banned", lift bans and export/import
        #: them), or None. Built from `EndpointConfig.security`, its events join ours, in order.
        #: Or passed in as `guard` and then possibly shared: several endpoints (the UDP, TCP and
        #: TLS listeners of one server) that hold one `Guard` count every source's requests and
        #: failures together and refuse a banned source on all of them; such a guard's events go
        #: to its own ``emit`` (or queue), since they belong to no one endpoint. The attribute may
        #: be replaced between calls (a reloaded policy: carry bans over with
        #: `BanTracker.export_state` / `import_state`); the next `get_timer` follows the new one.
        screening = self.config.security
        if guard is not None and screening is not None:
            raise ValueError("pass either EndpointConfig.security or a guard, not both")
        if guard is None and screening is not None:
            guard = Guard(screening, emit=self._events.append)
        self.security: Guard | None = guard
        #: Whether the application takes new calls: None when it does (out-of-dialog OPTIONS gets
        #: 200), else the Retry-After seconds of the 503 such an OPTIONS gets (RFC 3261 21.5.4)
        #: while it starts, drains or is not ready. That answer is how a load balancer probing
        #: the node (Kamailio's dispatcher) takes it out of rotation and back. OPTIONS inside a
        #: dialog always gets 200: the dialog is alive. Set by the application between calls.
        self.unavailable_retry_after_s: int | None = None
        self._outbox: list[tuple[bytes, Addr]] = []
        self._heap = _Heap()
        self._server: dict[TransactionKey, _ServerCtx] = {}
        self._server_by_id: dict[int, _ServerCtx] = {}
        self._client: dict[TransactionKey, _ClientCtx] = {}
        self._client_by_id: dict[int, _ClientCtx] = {}
        self._dialogs: dict[DialogId, Dialog] = {}
        self._retx_2xx: dict[DialogId, _Retransmit2xx] = {}
        self._rel_1xx: dict[DialogId, list[_Reliable1xx]] = {}
        self._sessions: dict[DialogId, _SessionTimer] = {}
        #: Our last SDP in each dialog (the body of our last 2xx or offer): a refresh re-INVITE
        #: re-sends it unchanged (RFC 4028 7.4, same o= version: no new session).
        self._local_sdp: dict[DialogId, tuple[bytes, str]] = {}
        #: Methods in the peer's Allow, per dialog: UPDATE there makes refreshes cheap.
        self._peer_allow: dict[DialogId, frozenset[str]] = {}
        self._framers: dict[Addr, StreamFramer] = {}
        self._to_close: list[Addr] = []
        self._next_id = 0
        allow = self.config.allow
        if registrar is None:
            allow = tuple(m for m in allow if m != "REGISTER")
        self._allow: Final = frozenset(allow)
        self._allow_value: Final = ", ".join(allow)
        self._accept: Final = frozenset(a.lower() for a in self.config.accept)
        supported = [s.lower() for s in self.config.supported]
        policy = self.config.session_timer
        if policy is not None and policy.mode != "refuse" and "timer" not in supported:
            supported.append("timer")
        self._session_policy: Final = (
            policy if policy is not None and policy.mode != "refuse" else None
        )
        self._supported: Final = frozenset(supported)
        self._supported_value: Final = ", ".join(supported)
        cfg = self.config
        # sip: with ;transport=tls over TLS, as Kamailio and Asterisk send it: a sips: Contact
        # only where the request was sips: (RFC 3261 8.1.1.8, RFC 5630 3.1.3); many UAs that
        # call over TLS with a sip: URI cannot route to a sips: one.
        self.contact_uri: Final = Uri(
            "sip",
            user=cfg.contact_user,
            host=cfg.local_host,
            port=cfg.local_port,
            params=(("transport", cfg.transport.lower()),) if cfg.reliable else (),
        )
        self._sips_contact_uri: Final = self.contact_uri.replace(scheme="sips", params=())

    def _contact_for(self, uri: object) -> Uri:
        """Our Contact for a dialog with ``uri`` as its Request-URI: sips: only for a sips:
        request over TLS."""
        if self.config.transport.upper() == "TLS" and getattr(uri, "scheme", "") == "sips":
            return self._sips_contact_uri
        return self.contact_uri

    # -- aioquic-style I/O surface --------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """One UDP datagram from `addr`. Never raises."""
        try:
            if not data.lstrip(b"\r\n").startswith(b"SIP/") and self._screened_out(addr, now):
                return
            self._receive_bytes(data, addr, now)
        except Exception as exc:
            self._internal_error(None, exc)

    def receive_stream(self, data: bytes, addr: Addr, now: float) -> None:
        """Bytes from the stream connection to `addr` (TCP/TLS). Never raises."""
        try:
            framer = self._framers.get(addr)
            if framer is None:
                if len(self._framers) >= MAX_STREAMS:
                    self._to_close.append(addr)
                    self._count("overloaded")
                    return
                framer = self._framers[addr] = StreamFramer()
            for event in framer.feed(data):
                if isinstance(event, MessageReceived):
                    message = event.message
                    if isinstance(message, Response) or not self._screened_out(addr, now):
                        self._dispatch(message, addr, now)
                elif isinstance(event, MessageRejected):
                    if not self._screened_out(addr, now):
                        self._reject_unparsed(event.raw, event.error, addr)
                elif isinstance(event, KeepalivePingReceived):
                    self._outbox.append((b"\r\n", addr))  # RFC 5626 3.5.1 pong
                elif isinstance(event, FramingFailed):
                    self._count("framing_failed")
                    self._to_close.append(addr)
                    self._framers.pop(addr, None)
        except Exception as exc:
            self._internal_error(None, exc)

    def connection_lost(self, addr: Addr) -> None:
        """The transport closed the stream connection to `addr`."""
        self._framers.pop(addr, None)

    def connections_to_close(self) -> list[Addr]:
        """Stream connections the transport should close (framing failed); drained."""
        out, self._to_close = self._to_close, []
        return out

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """Everything the core wants sent, in order; drained."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> EndpointEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline at which `handle_timer` must be called, or None."""
        heap = self._heap.entries
        while heap:
            deadline, _, owner = heap[0]
            if _deadline_of(owner) == deadline:
                break
            heapq.heappop(heap)
        best = heap[0][0] if heap else None
        for expiry in (
            self.registrar.next_expiry() if self.registrar is not None else None,
            self.security.get_timer() if self.security is not None else None,
        ):
            if expiry is not None and (best is None or expiry < best):
                best = expiry
        return best

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now`. Never raises."""
        heap = self._heap.entries
        while heap and heap[0][0] <= now:
            deadline, _, owner = heapq.heappop(heap)
            if _deadline_of(owner) != deadline:
                continue  # stale entry: the owner re-armed or finished
            try:
                if isinstance(owner, _ServerCtx):
                    owner.tx.handle_timer(now)
                    self._flush_server(owner, now)
                elif isinstance(owner, _ClientCtx):
                    owner.tx.handle_timer(now)
                    self._flush_client(owner, now)
                elif isinstance(owner, _Retransmit2xx):
                    self._fire_2xx(owner, now)
                elif isinstance(owner, _Reliable1xx):
                    self._fire_1xx(owner, now)
                elif isinstance(owner, _SessionTimer):
                    self._fire_session(owner, now)
            except Exception as exc:
                self._internal_error(None, exc)
        if self.registrar is not None:
            expiry = self.registrar.next_expiry()
            if expiry is not None and expiry <= now:
                by_aor: dict[str, list[str]] = {}
                for binding in self.registrar.expire(now):
                    by_aor.setdefault(binding.aor, []).append(binding.contact)
                for aor, contacts in by_aor.items():
                    self._events.append(RegistrationChanged(aor, None, tuple(contacts)))
        if self.security is not None:
            self.security.handle_timer(now)

    # -- introspection ---------------------------------------------------------------------------

    def dialog(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    @property
    def server_transaction_count(self) -> int:
        return len(self._server)

    @property
    def client_transaction_count(self) -> int:
        return len(self._client)

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    # -- commands: UAS -----------------------------------------------------------------------------

    def send_response(
        self,
        transaction_id: int,
        status: int,
        reason: str | None = None,
        *,
        now: float,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Answer the request of `transaction_id` (from `RequestReceived`).

        For INVITE, a 101-299 creates (or updates) the UAS dialog and carries our Contact; a 2xx
        is retransmitted until the ACK (13.3.1.4). Raises `KeyError` for an unknown or finished
        transaction and `LocalProtocolError` for a response the transaction state forbids.
        """
        ctx = self._server_by_id[transaction_id]
        request = ctx.tx.request
        method = request.method
        extra = list(headers)
        if body and content_type:
            extra.append(("Content-Type", content_type))
        is_invite = method == "INVITE"
        to_tag = ctx.to_tag if status > 100 else None
        accepted = 200 <= status < 300 and method in ("INVITE", "UPDATE")
        session: Negotiated | None = None
        reliable = False
        if (is_invite and 100 < status < 300) or accepted:  # target refresh (RFC 3311 5.2)
            extra.insert(0, ("Contact", f"<{self._contact_for(request.uri)}>"))
            to = request.to
            if is_invite and to is not None and not to.tag:
                # 12.1.1: a response that creates a dialog carries the request's Record-Route
                # values, in order, so the caller's ACK and BYE go back through the proxies
                # (Kamailio in front of several nodes) that asked to stay on the path.
                rr = [("Record-Route", v) for v in request.headers.values("record-route")]
                extra[1:1] = rr
        if accepted:
            extra.append(("Allow", self._allow_value))
            if self._supported_value:
                extra.append(("Supported", self._supported_value))
            if self._session_policy is not None:
                session = negotiate(request, self._session_policy)
                if session is not None:
                    extra += session.response_headers()
        elif is_invite and 100 < status < 200 and self._reliable_wanted(request):
            if self._unacked_1xx(ctx.dialog_id):
                # RFC 3262 3: no second reliable provisional before the first is PRACKed;
                # a provisional response is only progress information, so it is not sent.
                return make_response(request, status, reason, to_tag=to_tag, headers=extra)
            reliable = True
            ctx.rseq = ctx.rseq + 1 if ctx.rseq else secrets.randbelow(2**31 - 2) + 1
            extra += [("Require", "100rel"), ("RSeq", str(ctx.rseq))]
        response = make_response(request, status, reason, to_tag=to_tag, headers=extra, body=body)
        ctx.tx.send_response(response, now)  # may slim ctx.tx.request: use `request` below
        if is_invite:
            self._uas_invite_response(ctx, request, response, now)
            if reliable:
                self._start_1xx(ctx, request, response, now)
            elif status >= 200 and ctx.dialog_id is not None:
                for rel in self._rel_1xx.get(ctx.dialog_id, ()):
                    rel.done = True  # a final response ends the retransmissions (RFC 3262 3)
        if accepted and ctx.dialog_id is not None and ctx.dialog_id in self._dialogs:
            self._accepted_offer_answer(ctx.dialog_id, request, session, body, content_type, now)
        self._flush_server(ctx, now)
        return response

    def answer(
        self,
        transaction_id: int,
        body: bytes,
        *,
        now: float,
        content_type: str = "application/sdp",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """200 OK with a body (the SDP answer) to an INVITE."""
        return self.send_response(
            transaction_id, 200, now=now, headers=headers, body=body, content_type=content_type
        )

    def authenticate(self, transaction_id: int, lookup: SecretLookup, *, now: float) -> AuthResult:
        """Digest-authenticate a request the application was given (`RequestReceived`), as a
        B2BUA does a trunk's INVITE from a source it does not know (RFC 3261 22.3, with this
        endpoint's authenticator and ``lookup`` for the users it may be).

        Credentials come in Proxy-Authorization, answering our 407 + Proxy-Authenticate. Only
        when the result is ``ok`` is the request still the application's to answer; otherwise
        the core has answered it: 407 again without (or with unreadable) credentials or with a
        stale nonce (stale=true), 403 for wrong ones (counted as ``auth_failed`` and fed to the
        security guard's ban tracker). Raises `KeyError` for an unknown transaction and
        `LocalProtocolError` when the endpoint has no authenticator.
        """
        if self.authenticator is None:
            raise LocalProtocolError("authenticate() needs an endpoint with an authenticator")
        return self._digest(self._server_by_id[transaction_id], lookup, "proxy", now)

    # -- commands: UAC -----------------------------------------------------------------------------

    def send_request(
        self,
        request: Request,
        addr: Addr,
        *,
        now: float,
        auth: DigestClient | None = None,
        dialog_id: DialogId | None = None,
    ) -> int:
        """Send `request` (without Via: we add ours) in a new client transaction; its id.

        ACK is sent without a transaction (17.1.1.3 / 13.2.2.4) and gets id -1.
        """
        if "max-forwards" not in request.headers:
            request.headers.insert(0, "Max-Forwards", "70")
        request.headers.insert(0, "Via", str(self._our_via()))
        if request.method == "ACK":
            self._outbox.append((bytes(request), addr))
            return -1
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = InviteClientTransaction(request, self._timers, now)
        else:
            tx = NonInviteClientTransaction(request, self._timers, now)
        ctx = _ClientCtx(self._new_id(), tx, addr, auth, dialog_id)
        ctx.creates_dialog = request.method == "INVITE" and dialog_id is None
        self._client[tx.key] = ctx
        self._client_by_id[ctx.request_id] = ctx
        self._flush_client(ctx, now)
        return ctx.request_id

    def invite(
        self,
        to: str | Uri,
        addr: Addr,
        *,
        now: float,
        body: bytes = b"",
        content_type: str = "application/sdp",
        from_uri: str | Uri | None = None,
        from_display: str | None = None,
        request_uri: str | Uri | None = None,
        headers: Iterable[tuple[str, str]] = (),
        auth: DigestClient | None = None,
    ) -> int:
        """Start a call: an INVITE to `to`, sent to `addr`. Returns the request id."""
        to_uri = to if isinstance(to, Uri) else Uri.parse(to)
        cfg = self.config
        from_ = NameAddr(
            from_uri if from_uri is not None else self.contact_uri.replace(params=()),
            from_display,
        ).with_tag(new_tag())
        req = Request("INVITE", request_uri if request_uri is not None else to_uri, body=body)
        h = req.headers
        h.add("From", str(from_))
        h.add("To", str(NameAddr(to_uri)))
        h.add("Call-ID", new_call_id(cfg.local_host))
        h.add("CSeq", "1 INVITE")
        h.add("Contact", f"<{self._contact_for(to_uri)}>")
        h.add("Allow", self._allow_value)
        h.add("User-Agent", cfg.user_agent)
        for name, value in headers:
            h.add(name, value)
        if body:
            h.add("Content-Type", content_type)
        return self.send_request(req, addr, now=now, auth=auth)

    def cancel(self, request_id: int, *, now: float) -> None:
        """Cancel our INVITE (9.1): sent once a provisional response has arrived."""
        ctx = self._client_by_id[request_id]
        if ctx.cancelled or ctx.tx.request.method != "INVITE":
            return
        if ctx.tx.state is TxState.PROCEEDING:
            self._send_cancel(ctx, now)
        elif ctx.tx.state is TxState.CALLING:
            ctx.cancel_pending = True

    def bye(self, dialog_id: DialogId, *, now: float) -> int:
        """Hang up (15.1.1): BYE inside the dialog; the dialog ends at once. Returns request id."""
        dialog = self._dialogs[dialog_id]
        request = dialog.create_request("BYE")
        self._end_dialog(dialog, "bye_sent")
        return self.send_request(request, uri_addr(dialog.next_hop()), now=now, dialog_id=dialog_id)

    def reinvite(
        self,
        dialog_id: DialogId,
        body: bytes,
        *,
        now: float,
        content_type: str = "application/sdp",
    ) -> int:
        """A re-INVITE (hold/unhold, session refresh; 14.1). Only one may be pending."""
        dialog = self._dialogs[dialog_id]
        if dialog.pending_invite_out or dialog.pending_invite_in:
            raise LocalProtocolError("a re-INVITE is already pending in this dialog (14.1)")
        request = dialog.create_request("INVITE", body=body, content_type=content_type)
        dialog.pending_invite_out = True
        if body:
            self._local_sdp[dialog_id] = (body, content_type)
        return self.send_request(request, uri_addr(dialog.next_hop()), now=now, dialog_id=dialog_id)

    def info(self, dialog_id: DialogId, body: bytes, content_type: str, *, now: float) -> int:
        """INFO inside the dialog (e.g. application/dtmf-relay)."""
        dialog = self._dialogs[dialog_id]
        request = dialog.create_request("INFO", body=body, content_type=content_type)
        return self.send_request(request, uri_addr(dialog.next_hop()), now=now, dialog_id=dialog_id)

    def options(self, target: DialogId | Uri | str, *, now: float, addr: Addr | None = None) -> int:
        """OPTIONS inside a dialog (session keepalive) or to a URI (trunk keepalive, 11.1)."""
        if isinstance(target, DialogId):
            dialog = self._dialogs[target]
            request = dialog.create_request("OPTIONS")
            return self.send_request(
                request, addr or uri_addr(dialog.next_hop()), now=now, dialog_id=target
            )
        uri = target if isinstance(target, Uri) else Uri.parse(target)
        req = Request("OPTIONS", uri)
        h = req.headers
        h.add("From", str(NameAddr(self.contact_uri.replace(params=())).with_tag(new_tag())))
        h.add("To", str(NameAddr(uri)))
        h.add("Call-ID", new_call_id(self.config.local_host))
        h.add("CSeq", "1 OPTIONS")
        h.add("Accept", ", ".join(self.config.accept))
        return self.send_request(req, addr or uri_addr(uri), now=now)

    # -- receiving ----------------------------------------------------------------------------------

    def _receive_bytes(self, data: bytes, addr: Addr, now: float) -> None:
        if not data.strip(b"\r\n\t "):
            return  # RFC 5626 4.4.1 / common practice: CRLF keep-alives on UDP
        try:
            message = parse_message(data)
        except ParseError as exc:
            self._reject_unparsed(data, exc, addr)
            return
        self._dispatch(message, addr, now)

    def _dispatch(self, message: Request | Response, addr: Addr, now: float) -> None:
        if isinstance(message, Response):
            try:
                self._on_response(message, now)
            except ParseError:
                self._count("malformed_response")
            except Exception as exc:
                self._internal_error(message.headers.get("call-id"), exc)
            return
        guard = self.security
        if guard is not None:
            refusal = guard.screen_request(addr[0], message.headers.get("user-agent"), now)
            if refusal is not None:
                self._count(refusal.reason)
                if refusal.status is not None:
                    self._answer_stateless(message, refusal.status, addr, None, to_source=True)
                return
        try:
            self._on_request(message, addr, now)
        except ParseError as exc:
            self._count(exc.reason)
            self._answer_stateless(message, exc.status_hint, addr, _phrase(exc))
        except Exception as exc:
            self._internal_error(message.headers.get("call-id"), exc)
            self._answer_stateless(message, 500, addr, None)

    # -- requests ---------------------------------------------------------------------------------

    def _on_request(self, req: Request, addr: Addr, now: float) -> None:
        vias = req.via
        if not vias:
            self._count("missing_header")  # nowhere to send an answer (8.1.1.7): drop
            return
        self._stamp_via(req, vias, addr)
        key = server_key(req)
        if key is None:  # Via present, CSeq absent
            self._count("missing_header")
            self._answer_stateless(req, 400, addr, "Missing CSeq")
            return
        method = req.method
        ctx = self._server.get(key)
        if method == "ACK":
            if (
                ctx is not None
                and isinstance(ctx.tx, InviteServerTransaction)
                and (ctx.tx.last_response is None or ctx.tx.last_response.status >= 300)
            ):
                if key[0] == "2543" and not self._ack_matches_2543(req, ctx):
                    return
                ctx.tx.receive_request(req, now)  # 17.2.3: ACK of our non-2xx
                self._flush_server(ctx, now)
                return
            self._on_ack(req)
            return
        if ctx is not None and (key[0] == "3261" or self._to_tag_matches(req, ctx)):
            ctx.tx.receive_request(req, now)  # 17.2.1 / 17.2.2: retransmission
            self._flush_server(ctx, now)
            return
        if "max-forwards" not in req.headers:
            # RFC 2543 peers omit Max-Forwards (RFC 4475 3.4.1); as a UAS we read it as 70.
            req.headers.add("Max-Forwards", "70")
        req.check_mandatory()  # 8.1.1: 400 via the ParseError handler
        # URIs inside name-addrs are parsed lazily; read the ones we will use now, so a broken one
        # is a 400 here and never a surprise for the application later.
        for name_addr in (req.from_, req.to, *req.contacts, *req.record_route):
            if name_addr is not None:
                name_addr.uri  # noqa: B018
        if len(self._server) >= MAX_SERVER_TRANSACTIONS:
            self._count("overloaded")
            self._answer_stateless(req, 503, addr, None, (("Retry-After", "10"),))
            return
        ctx = self._new_server_ctx(req, key, addr, now)
        if method == "CANCEL":
            self._on_cancel(ctx, key, now)
            return
        if method == "INVITE":
            self._respond(ctx, 100, now)  # 17.2.1: at once, so the client stops retransmitting
        status = self._uas_checks(req)
        if status is not None:
            code, _reason, extra = status
            self._respond(ctx, code, now, headers=extra)
            return
        to = req.to
        assert to is not None  # check_mandatory
        if to.tag:
            self._in_dialog(ctx, to.tag, now)
        else:
            self._out_of_dialog(ctx, now)

    def _stamp_via(self, req: Request, vias: tuple[Via, ...], addr: Addr) -> None:
        """RFC 3261 18.2.1 received, RFC 3581 4 rport on the top Via."""
        top = vias[0]
        changed = top
        if top.host.strip("[]") != addr[0]:
            changed = changed.with_param("received", addr[0])
        if top.has_rport:
            if top.host.strip("[]") == addr[0] and changed is top:
                changed = changed.with_param("received", addr[0])
            changed = changed.with_param("rport", str(addr[1]))
        if changed is not top:
            req.via = (changed, *vias[1:])

    def _response_dest(self, req: Request, addr: Addr) -> Addr:
        """RFC 3261 18.2.2 / RFC 3581 4: where responses to `req` go."""
        if self.config.reliable or self.config.force_rport:
            return addr
        top = req.via[0]
        rport = top.rport
        host = top.received or top.host.strip("[]")
        if rport is not None:
            return (host, rport)
        return (host, top.port or 5060)

    def _new_server_ctx(
        self, req: Request, key: TransactionKey, addr: Addr, now: float
    ) -> _ServerCtx:
        tx: ServerTransaction
        if req.method == "INVITE":
            tx = InviteServerTransaction(req, self._timers, now)
        else:
            tx = NonInviteServerTransaction(req, self._timers, now)
        to = req.to
        tag = to.tag if to is not None and to.tag else new_tag()
        ctx = _ServerCtx(tx, self._new_id(), self._response_dest(req, addr), addr, tag)
        self._server[key] = ctx
        self._server_by_id[ctx.tx_id] = ctx
        return ctx

    def _uas_checks(self, req: Request) -> tuple[int, str, list[tuple[str, str]]] | None:
        """RFC 3261 8.2.1-8.2.3 in order; (status, reason, headers) to reject with, or None."""
        method = req.method
        if method not in self._allow:
            if method in _KNOWN_METHODS:  # 21.4.6: understood, but not served here
                self._count("method_not_allowed")
                return (405, "Method Not Allowed", [("Allow", self._allow_value)])
            self._count("unsupported_method")
            return (501, "Not Implemented", [("Allow", self._allow_value)])  # 8.2.1
        if req.uri.scheme not in _URI_SCHEMES:
            self._count("unsupported_uri_scheme")
            return (416, "Unsupported URI Scheme", [])  # 8.2.2.1
        if method != "CANCEL":
            unknown = [opt for opt in req.require if opt.lower() not in self._supported]
            if unknown:
                self._count("bad_extension")
                return (420, "Bad Extension", [("Unsupported", ", ".join(unknown))])  # 8.2.2.3
        if req.body:
            ctype = req.content_type
            encoding = req.headers.get("content-encoding")
            if (
                (ctype is None and method != "ACK")
                or (ctype is not None and ctype.mime not in self._accept)
                or (encoding is not None and encoding.strip().lower() != "identity")
            ):
                self._count("unsupported_media_type")
                return (415, "Unsupported Media Type", [("Accept", ", ".join(self.config.accept))])
        if method == "INVITE" and "accept" in req.headers:
            accepted = {v.split(";")[0].strip().lower() for v in req.headers.values("accept")}
            if accepted and not accepted & {"application/sdp", "application/*", "*/*"}:
                self._count("not_acceptable")  # we can only answer with SDP (21.4.7)
                return (406, "Not Acceptable", [("Accept", "application/sdp")])
        if method in self.config.relayed_methods and req.max_forwards == 0:
            self._count("too_many_hops")
            return (483, "Too Many Hops", [])  # 16.3 step 3
        if method in ("INVITE", "UPDATE") and self._session_policy is not None:
            min_se = too_small(req, self._session_policy)  # a bad header raises ParseError: 400
            if min_se is not None:
                self._count("interval_too_small")
                return (422, "Session Interval Too Small", [("Min-SE", str(min_se))])
        return None

    def _in_dialog(self, ctx: _ServerCtx, to_tag: str, now: float) -> None:
        req = ctx.tx.request
        from_ = req.from_
        assert from_ is not None
        assert req.call_id is not None
        dialog = self._dialogs.get(DialogId(req.call_id, to_tag, from_.tag or ""))
        if dialog is None or dialog.terminated:
            if req.method == "OPTIONS":
                self._answer_options(ctx, now)  # still a fine keepalive answer
                return
            self._count("no_dialog")
            self._respond(ctx, 481, now)  # 12.2.2
            return
        verdict = dialog.validate_request(req)
        if verdict is not None:
            code, retry_after = verdict
            cseq = req.cseq
            out_of_order = cseq is not None and cseq.seq != dialog.remote_seq
            self._count("cseq_out_of_order" if out_of_order else "request_pending")
            extra = [("Retry-After", retry_after)] if retry_after else []
            self._respond(ctx, code, now, headers=extra)
            return
        ctx.dialog_id = dialog.id
        method = req.method
        if method == "BYE":
            self._respond(ctx, 200, now)  # 15.1.2
            self._events.append(ByeReceived(dialog.id, req))
            self._end_dialog(dialog, "bye_received")
        elif method == "INFO":
            self._respond(ctx, 200, now)
            self._events.append(InfoReceived(dialog.id, req))
        elif method == "OPTIONS":
            self._answer_options(ctx, now)
        elif method == "PRACK":
            self._on_prack(ctx, dialog, now)
        elif method == "UPDATE" and not req.body:
            # No offer: a session refresh (RFC 4028 7.4) or a target refresh; answered here.
            self.send_response(ctx.tx_id, 200, now=now)
        else:
            if method == "INVITE":
                dialog.pending_invite_in = True
            self._events.append(RequestReceived(ctx.tx_id, req, ctx.dest, dialog.id))

    def _out_of_dialog(self, ctx: _ServerCtx, now: float) -> None:
        req = ctx.tx.request
        method = req.method
        if method == "OPTIONS":
            retry_after = self.unavailable_retry_after_s
            if retry_after is None:
                self._answer_options(ctx, now)  # 11.2
            else:  # a health probe: not taking calls now (21.5.4)
                self._respond(ctx, 503, now, headers=[("Retry-After", str(retry_after))])
        elif method == "REGISTER":
            self._on_register(ctx, now)
        elif method in ("BYE", "INFO", "PRACK", "UPDATE"):
            self._count("no_dialog")
            self._respond(ctx, 481, now)  # these only exist inside a dialog
        else:
            if method == "INVITE" and len(self._dialogs) >= MAX_DIALOGS:
                self._count("overloaded")
                self._respond(ctx, 503, now, headers=[("Retry-After", "10")])
                return
            self._events.append(RequestReceived(ctx.tx_id, req, ctx.dest, None))

    def _answer_options(self, ctx: _ServerCtx, now: float) -> None:
        headers = [  # 11.2: what we would do with an INVITE
            ("Allow", self._allow_value),
            ("Accept", ", ".join(self.config.accept)),
            ("Supported", ", ".join(self.config.supported)),
        ]
        self._respond(ctx, 200, now, headers=headers)

    def _on_cancel(self, ctx: _ServerCtx, key: TransactionKey, now: float) -> None:
        """RFC 3261 9.2: 200 to the CANCEL, 487 to the INVITE if it has no final response."""
        cancel = ctx.tx.request  # before the 200 below slims the transaction's copy
        invite_ctx = self._server.get((*key[:-1], "INVITE"))
        if invite_ctx is None or not isinstance(invite_ctx.tx, InviteServerTransaction):
            self._count("no_transaction")
            self._respond(ctx, 481, now)
            return
        self._respond(ctx, 200, now)
        if not invite_ctx.tx.final_sent:
            self.send_response(invite_ctx.tx_id, 487, now=now)
            self._events.append(CancelReceived(invite_ctx.tx_id, cancel))

    def _on_ack(self, req: Request) -> None:
        """ACK for a 2xx (13.3.1.4): a request of its own, matched to the dialog."""
        to, from_, call_id, cseq = req.to, req.from_, req.call_id, req.cseq
        if to is None or from_ is None or call_id is None or cseq is None or not to.tag:
            return
        dialog_id = DialogId(call_id, to.tag, from_.tag or "")
        retx = self._retx_2xx.get(dialog_id)
        if retx is None or retx.cseq != cseq.seq:
            return  # ACK retransmission, or for a dialog we do not know: no response to an ACK
        retx.done = True
        del self._retx_2xx[dialog_id]
        self._events.append(AckReceived(dialog_id, req))

    def _on_register(self, ctx: _ServerCtx, now: float) -> None:
        req = ctx.tx.request
        registrar = self.registrar
        assert registrar is not None  # REGISTER is only in Allow with a registrar
        to = req.to
        assert to is not None
        to_uri = to.uri
        if not to_uri.is_sip or not to_uri.user:  # 10.3 step 3: To must be a SIP AOR
            self._count("bad_register")
            self._respond(ctx, 400, now, reason="Invalid Address-Of-Record")
            return
        if self.authenticator is not None and not self._authorize(ctx, to_uri, now):
            return
        if self.tls_only is not None and self.tls_only(to_uri.user) and not self._tls_register(req):
            self._count("bad_register")
            self._respond(ctx, 403, now, reason="TLS Required")
            return
        aor = f"sip:{to_uri.user}@{to_uri.host.lower()}"
        contacts = (
            [ContactRequest("*")]
            if req.contact_star
            else [ContactRequest(str(c.uri), c.expires, c.q) for c in req.contacts]
        )
        cseq = req.cseq
        assert cseq is not None
        assert req.call_id is not None
        result = registrar.register(
            aor, contacts, call_id=req.call_id, cseq=cseq.seq, expires=req.expires, now=now
        )
        headers: list[tuple[str, str]] = []
        if result.ok:
            for c in result.contacts:
                q = "" if c.q is None else f";q={c.q:g}"
                headers.append(("Contact", f"<{c.uri}>;expires={c.expires_s}{q}"))
            headers.append(("Date", "Sat, 01 Jan 2000 00:00:00 GMT"))
        else:
            self._count("bad_register")
            if result.min_expires_s is not None:
                headers.append(("Min-Expires", str(result.min_expires_s)))
        self._respond(ctx, result.status_code, now, reason=result.reason, headers=headers)
        if result.added or result.refreshed or result.removed:
            self._events.append(RegistrationChanged(aor, result))

    def _tls_register(self, req: Request) -> bool:
        """Over TLS, and every contact one a request reaches over TLS (`tls_only`)."""
        if self.config.transport.upper() != "TLS":
            return False
        return all(
            c.uri.scheme == "sips" or (c.uri.transport or "").lower() == "tls" for c in req.contacts
        )

    def _authorize(self, ctx: _ServerCtx, aor_uri: Uri, now: float) -> bool:
        """Digest check of a REGISTER (22.4): a registrar challenges with 401; True when the
        credentials are right and name the AOR's user, else the answer has been sent."""
        assert self.user_lookup is not None
        result = self._digest(ctx, self.user_lookup, "www", now, expected_user=aor_uri.user)
        return result.ok

    def _digest(
        self,
        ctx: _ServerCtx,
        lookup: SecretLookup,
        kind: str,
        now: float,
        *,
        expected_user: str | None = None,
    ) -> AuthResult:
        """Verify the request's credentials of ``kind`` (`_CHALLENGES`) and, unless they are
        right, send what `_DIGEST_ANSWERS` says for the outcome."""
        auth = self.authenticator
        assert auth is not None
        status, challenge_header, credentials_header = _CHALLENGES[kind]
        req = ctx.tx.request
        offered = req.headers.get_all(credentials_header)
        # RFC 3261 22.3: a request may carry credentials for several realms; take ours.
        values = [v for v in offered if f'"{auth.realm}"' in v] or offered[:1]
        result = auth.verify(
            values[0] if values else None,
            method=req.method,
            request_uri=str(req.uri),
            lookup=lookup,
            now=now,
            body=req.body,
        )
        if result.ok and expected_user is not None and result.username != expected_user:
            # Right password, someone else's AOR: RFC 3261 22.4 leaves it to policy; we refuse.
            result = AuthResult(AuthOutcome.BAD_CREDENTIALS, result.username, "user is not the AOR")
        answer = _DIGEST_ANSWERS[result.outcome]
        if answer is None:
            return result
        if answer != "forbidden":
            stale = answer == "challenge_stale"
            challenges = [(challenge_header, c) for c in auth.challenge(now, stale=stale)]
            self._respond(ctx, status, now, headers=challenges)
            return result
        self._count("auth_failed")
        if self.security is not None:
            self.security.auth_failed(ctx.source[0], result.username or expected_user, now)
        self._respond(ctx, 403, now)
        return result

    def _ack_matches_2543(self, ack: Request, ctx: _ServerCtx) -> bool:
        to = ack.to
        last = ctx.tx.last_response
        last_to = last.to if last is not None else None
        return to is not None and last_to is not None and to.tag == last_to.tag

    def _to_tag_matches(self, req: Request, ctx: _ServerCtx) -> bool:
        to, orig = req.to, ctx.tx.request.to
        return (to.tag if to else None) == (orig.tag if orig else None)

    # -- UAS INVITE responses: dialogs and 2xx retransmission ---------------------------------------

    def _uas_invite_response(
        self, ctx: _ServerCtx, req: Request, response: Response, now: float
    ) -> None:
        status = response.status
        to = req.to
        in_dialog = to is not None and bool(to.tag)
        dialog = self._dialogs.get(ctx.dialog_id) if ctx.dialog_id else None
        if in_dialog:
            if dialog is not None and status >= 200:
                dialog.pending_invite_in = False
                if status < 300:
                    self._start_2xx(dialog, response, ctx, now)
            return
        if 100 < status < 300 and dialog is None:
            dialog = Dialog.as_uas(req, ctx.to_tag, self._contact_for(req.uri))
            self._dialogs[dialog.id] = dialog
            ctx.dialog_id = dialog.id
        if dialog is None:
            return
        if status < 200:
            dialog.handle(DialogInput.PROVISIONAL)
        elif status < 300:
            dialog.handle(DialogInput.ACCEPTED)
            self._start_2xx(dialog, response, ctx, now)
        else:
            self._end_dialog(dialog, "cancelled" if status == 487 else "rejected")

    def _start_2xx(self, dialog: Dialog, response: Response, ctx: _ServerCtx, now: float) -> None:
        cfg = self._timers
        cseq = response.cseq
        retx = _Retransmit2xx(
            dialog.id,
            bytes(response),
            ctx.dest,
            cseq.seq if cseq else 0,
            None if cfg.reliable else now + cfg.t1_s,
            cfg.t1_s,
            now + cfg.timeout_s,
        )
        old = self._retx_2xx.get(dialog.id)
        if old is not None:
            old.done = True
        self._retx_2xx[dialog.id] = retx
        self._heap.push(retx.get_timer(), retx)

    # -- RFC 3262: reliable provisional responses -------------------------------------------------

    def _reliable_wanted(self, req: Request) -> bool:
        """Only when the INVITE requires it: with Supported alone, plain 1xx are fine (3)."""
        return "100rel" in self._supported and any(r.lower() == "100rel" for r in req.require)

    def _unacked_1xx(self, dialog_id: DialogId | None) -> bool:
        if dialog_id is None:
            return False
        return any(not rel.acked for rel in self._rel_1xx.get(dialog_id, ()))

    def _start_1xx(self, ctx: _ServerCtx, req: Request, response: Response, now: float) -> None:
        if ctx.dialog_id is None:
            return
        cfg = self._timers
        cseq = req.cseq
        rel = _Reliable1xx(
            ctx.dialog_id,
            ctx.rseq,
            cseq.seq if cseq else 0,
            bytes(response),
            ctx.dest,
            None if cfg.reliable else now + cfg.t1_s,
            cfg.t1_s,
            now + cfg.timeout_s,
        )
        self._rel_1xx.setdefault(ctx.dialog_id, []).append(rel)
        self._heap.push(rel.get_timer(), rel)

    def _fire_1xx(self, rel: _Reliable1xx, now: float) -> None:
        if now >= rel.give_up_at:
            # 3 suggests rejecting the INVITE here; the call goes on instead: its 2xx does not
            # need the PRACK (our provisional responses carry no SDP), and a caller is not lost
            # over a peer's missing PRACK.
            rel.done = True
            return
        self._outbox.append((rel.wire, rel.dest))
        rel.interval_s *= 2  # 3: T1, doubling, for 64*T1
        rel.next_at = now + rel.interval_s
        self._heap.push(rel.get_timer(), rel)

    def _on_prack(self, ctx: _ServerCtx, dialog: Dialog, now: float) -> None:
        """7.2: a PRACK matching an unacknowledged reliable 1xx by RAck gets 200, else 481."""
        rack = ctx.tx.request.headers.get("rack")
        parts = rack.split() if rack else []
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            self._count("bad_header")
            self._respond(ctx, 400, now, reason="Bad RAck")
            return
        rseq, cseq, method = int(parts[0]), int(parts[1]), parts[2].upper()
        for rel in self._rel_1xx.get(dialog.id, ()):
            if rel.rseq == rseq and rel.cseq == cseq and method == "INVITE" and not rel.acked:
                rel.acked = rel.done = True
                self._respond(ctx, 200, now)
                return
        self._count("no_matching_rseq")
        self._respond(ctx, 481, now)

    # -- RFC 4028: session timers ------------------------------------------------------------------

    def _accepted_offer_answer(
        self,
        dialog_id: DialogId,
        req: Request,
        session: Negotiated | None,
        body: bytes,
        content_type: str | None,
        now: float,
    ) -> None:
        """After our 2xx to an INVITE or UPDATE: remember our SDP and the peer's Allow, and
        (re)arm or drop the session timer as this 2xx negotiated it (a refresh without
        Session-Expires turns the timer off: 9)."""
        if body:
            self._local_sdp[dialog_id] = (body, content_type or "application/sdp")
        allow = req.headers.values("allow")
        if allow:
            self._peer_allow[dialog_id] = parse_allow(allow)
        if session is None:
            self._arm_session(dialog_id, None, False, now)
        else:
            self._arm_session(dialog_id, session.interval_s, session.we_refresh, now)

    def _arm_session(
        self, dialog_id: DialogId, interval_s: int | None, we_refresh: bool, now: float
    ) -> None:
        old = self._sessions.pop(dialog_id, None)
        if old is not None:
            old.done = True
        if interval_s is None:
            return
        timer = _SessionTimer(dialog_id, interval_s, we_refresh, 0.0, now + interval_s)
        # 10: the refresher at half the interval; the other side BYEs min(32 s, interval/3)
        # before expiry. The refresher also gives up at that point if its refresh got nowhere.
        timer.deadline = now + interval_s / 2 if we_refresh else timer.give_up_at
        self._sessions[dialog_id] = timer
        self._heap.push(timer.get_timer(), timer)

    def _fire_session(self, timer: _SessionTimer, now: float) -> None:
        dialog = self._dialogs.get(timer.dialog_id)
        if dialog is None or self._sessions.get(timer.dialog_id) is not timer:
            timer.done = True
            return
        if not timer.we_refresh or now >= timer.give_up_at:
            timer.done = True
            self._expire_session(dialog, now)
            return
        if (
            dialog.pending_invite_out
            or dialog.pending_invite_in
            or dialog.state is not DialogState.CONFIRMED
        ):
            # An offer/answer in progress: try again shortly (a refresh may not overlap it).
            timer.deadline = min(now + 2.0, timer.give_up_at)
            self._heap.push(timer.get_timer(), timer)
            return
        headers = [
            ("Session-Expires", f"{timer.interval_s};refresher=uac"),  # we keep refreshing
            ("Supported", self._supported_value or "timer"),
        ]
        if "UPDATE" in self._peer_allow.get(dialog.id, ()):
            request = dialog.create_request("UPDATE", headers=headers)  # 7.4: no SDP needed
        else:
            sdp = self._local_sdp.get(dialog.id)
            if sdp is None:  # nothing to re-offer: let the session run to its give-up point
                timer.deadline = timer.give_up_at
                self._heap.push(timer.get_timer(), timer)
                return
            request = dialog.create_request(
                "INVITE", body=sdp[0], content_type=sdp[1], headers=headers
            )
            dialog.pending_invite_out = True
        request_id = self.send_request(
            request, uri_addr(dialog.next_hop()), now=now, dialog_id=dialog.id
        )
        ctx = self._client_by_id.get(request_id)
        if ctx is not None:
            ctx.refresh = True
        timer.deadline = timer.give_up_at  # re-armed from the 2xx; BYE if none comes in time
        self._heap.push(timer.get_timer(), timer)

    def _refresh_answered(self, ctx: _ClientCtx, response: Response, now: float) -> None:
        """The answer to our own session refresh: never reported to the application."""
        status = response.status
        dialog = self._dialogs.get(ctx.dialog_id) if ctx.dialog_id is not None else None
        if ctx.tx.request.method == "INVITE":
            if 200 <= status < 300 and self._uac_invite_response(ctx, response, now):
                return  # a retransmitted 2xx, ACKed again
            if status >= 200 and dialog is not None:
                dialog.pending_invite_out = False
        if status < 200 or dialog is None:
            return
        if status < 300:
            value = response.headers.get("session-expires")
            try:
                se = SessionExpires.parse(value) if value is not None else None
            except ParseError:
                se = None
            if se is None:
                self._arm_session(dialog.id, None, False, now)  # 7.2: no timer any more
            else:
                self._arm_session(dialog.id, se.delta_s, se.refresher != "uas", now)
        elif status in (408, 481):
            self._expire_session(dialog, now)  # 10: the session is gone
        # Any other failure: the timer waits at its give-up point and BYEs then.

    def _expire_session(self, dialog: Dialog, now: float) -> None:
        """10: BYE, and tell the application the dialog ended as "session_expired"."""
        request = dialog.create_request("BYE")
        self._end_dialog(dialog, "session_expired")
        self.send_request(request, uri_addr(dialog.next_hop()), now=now, dialog_id=dialog.id)

    # -- forking: a second 2xx to our INVITE -------------------------------------------------------

    def _hang_up_fork(self, ctx: _ClientCtx, response: Response, to_tag: str, now: float) -> None:
        """13.2.2.4: another fork answered after we took a 2xx: ACK it (again, for each of its
        retransmissions) and end that dialog with a BYE, so the far phone is not left in a call
        nobody is on. The application never hears of it."""
        old = ctx.fork_acks.get(to_tag)
        if old is not None:
            self._outbox.append((old.wire, old.dest))
            return
        self._count("forked_answer")
        dialog = Dialog.as_uac(ctx.tx.request, response, self.contact_uri)
        dialog.handle(DialogInput.ACCEPTED)
        contacts = response.contacts
        if contacts:
            dialog.remote_target = contacts[0].uri
        cseq = response.cseq
        seq = cseq.seq if cseq else dialog.invite_cseq
        ack = dialog.create_request("ACK", cseq=seq)
        ack.headers.insert(0, "Via", str(self._our_via()))
        dest = uri_addr(dialog.next_hop())
        wire = bytes(ack)
        ctx.fork_acks[to_tag] = _UacAck(wire, dest, seq, to_tag)
        self._outbox.append((wire, dest))
        self.send_request(dialog.create_request("BYE"), dest, now=now)

    def _fire_2xx(self, retx: _Retransmit2xx, now: float) -> None:
        if now >= retx.give_up_at:
            retx.done = True
            self._retx_2xx.pop(retx.dialog_id, None)
            self._events.append(AckTimedOut(retx.dialog_id))
            return
        self._outbox.append((retx.wire, retx.dest))
        retx.interval_s = min(retx.interval_s * 2, self._timers.t2_s)
        retx.next_at = now + retx.interval_s
        self._heap.push(retx.get_timer(), retx)

    # -- responses ----------------------------------------------------------------------------------

    def _on_response(self, response: Response, now: float) -> None:
        key = client_key_of_response(response)
        ctx = self._client.get(key) if key is not None else None
        if ctx is None:
            self._count("unmatched_response")  # 17.1.3 / 18.1.2: drop
            return
        ctx.tx.receive_response(response, now)
        self._flush_client(ctx, now)

    def _flush_client(self, ctx: _ClientCtx, now: float) -> None:
        tx = ctx.tx
        for wire in tx.outgoing:
            self._outbox.append((wire, ctx.dest))
        tx.outgoing.clear()
        responses, tx.responses = tx.responses, []
        for response in responses:
            self._uac_response(ctx, response, now)
        if tx.timed_out or tx.transport_failed:
            tx.timed_out = tx.transport_failed = False
            self._events.append(
                TransactionTimedOut(ctx.request_id, tx.request.method, tx.request.call_id, False)
            )
            self._uac_failed(ctx, now)
        if tx.terminated:
            if self._client.get(tx.key) is ctx:
                del self._client[tx.key]
            if self._client_by_id.get(ctx.request_id) is ctx:
                del self._client_by_id[ctx.request_id]
        else:
            self._heap.push(tx.get_timer(), ctx)

    def _uac_failed(self, ctx: _ClientCtx, now: float) -> None:
        dialog = self._dialogs.get(ctx.dialog_id) if ctx.dialog_id is not None else None
        if dialog is None:
            return
        if ctx.tx.request.method == "INVITE":
            dialog.pending_invite_out = False
            if dialog.state is DialogState.EARLY:
                self._end_dialog(dialog, "timed_out")
                return
        if ctx.refresh:
            self._expire_session(dialog, now)  # RFC 4028 10: the refresh got no answer

    def _uac_response(self, ctx: _ClientCtx, response: Response, now: float) -> None:
        req = ctx.tx.request
        status = response.status
        if (
            status in (401, 407)
            and ctx.auth is not None
            and self._retry_with_auth(ctx, response, now)
        ):
            return
        if ctx.refresh:
            self._refresh_answered(ctx, response, now)
            return
        if req.method == "INVITE":
            if ctx.cancel_pending and status < 200:
                ctx.cancel_pending = False
                self._send_cancel(ctx, now)
            if self._uac_invite_response(ctx, response, now):
                return  # a retransmitted 2xx: ACKed again, reported once
        elif ctx.dialog_id is not None and status in (408, 481):
            dialog = self._dialogs.get(ctx.dialog_id)
            if dialog is not None:
                self._end_dialog(dialog, "timed_out")  # 12.2.1.2
        dialog_id = ctx.dialog_id
        self._events.append(ResponseReceived(ctx.request_id, response, dialog_id))

    def _uac_invite_response(self, ctx: _ClientCtx, response: Response, now: float) -> bool:
        """Dialog bookkeeping for a response to our INVITE; True for a 2xx retransmission."""
        status = response.status
        req = ctx.tx.request
        ack = ctx.ack
        if ack is not None and 200 <= status < 300:
            to_tag = response.to.tag if response.to is not None else None
            cseq = response.cseq
            if to_tag == ack.to_tag and cseq is not None and cseq.seq == ack.cseq:
                self._outbox.append((ack.wire, ack.dest))  # 13.2.2.4: a retransmitted 2xx
                return True
            if ctx.creates_dialog and to_tag:
                self._hang_up_fork(ctx, response, to_tag, now)
                return True
        dialog = self._dialogs.get(ctx.dialog_id) if ctx.dialog_id is not None else None
        if not ctx.creates_dialog:  # a re-INVITE (14.1)
            if dialog is None:
                return False
            if status >= 200:
                dialog.pending_invite_out = False
            if 200 <= status < 300:
                return self._ack_2xx(dialog, response, ctx)
            if status in (408, 481):
                self._end_dialog(dialog, "timed_out")  # 12.2.1.2
            return False
        to = response.to
        if to is not None and to.tag and 100 < status < 300:
            from_ = req.from_
            did = DialogId(req.call_id or "", (from_.tag if from_ else None) or "", to.tag)
            dialog = self._dialogs.get(did)
            if dialog is None and ctx.dialog_id is not None and status < 200:
                return False  # a second early dialog (forking): not tracked
            previous = self._dialogs.get(ctx.dialog_id) if ctx.dialog_id is not None else None
            if (
                status >= 200
                and previous is not None
                and previous.id != did
                and previous.state is DialogState.EARLY
            ):
                self._end_dialog(previous, "rejected")  # another fork answered (13.2.2.4)
            if dialog is None:
                dialog = Dialog.as_uac(req, response, self.contact_uri)
                self._dialogs[did] = dialog
            ctx.dialog_id = did
            if status < 200:
                dialog.handle(DialogInput.PROVISIONAL)
                return False
            return self._ack_2xx(dialog, response, ctx)
        if status >= 300 and dialog is not None and dialog.state is DialogState.EARLY:
            self._end_dialog(dialog, "rejected")  # 12.3
        return False

    def _ack_2xx(self, dialog: Dialog, response: Response, ctx: _ClientCtx) -> bool:
        """ACK a 2xx (13.2.2.4); False (a first 2xx: report it)."""
        cseq = response.cseq
        seq = cseq.seq if cseq else dialog.invite_cseq
        dialog.handle(DialogInput.ACCEPTED)
        contacts = response.contacts
        if contacts:
            dialog.remote_target = contacts[0].uri  # 12.2.1.2 target refresh
        ack = dialog.create_request("ACK", cseq=seq)
        ack.headers.insert(0, "Via", str(self._our_via()))
        dest = uri_addr(dialog.next_hop())
        wire = bytes(ack)
        # Kept by the INVITE's context, which lives as long as its transaction (timer M): a 2xx
        # retransmitted even after our BYE is ACKed again and never re-creates the dialog.
        ctx.ack = _UacAck(wire, dest, seq, dialog.id.remote_tag)
        self._outbox.append((wire, dest))
        return False

    def _retry_with_auth(self, ctx: _ClientCtx, response: Response, now: float) -> bool:
        """Re-send with credentials (22.2): once per challenge, twice at most (stale nonce)."""
        auth = ctx.auth
        assert auth is not None
        header = "www-authenticate" if response.status == 401 else "proxy-authenticate"
        challenges = response.headers.get_all(header)
        if not challenges or ctx.auth_attempts >= 2:
            return False
        if ctx.auth_attempts == 1:
            try:
                stale = any(parse_challenge(c).stale for c in challenges)
            except _AuthHeaderError:
                stale = False
            if not stale:
                return False  # 22.2: the credentials were refused; do not loop
        old = ctx.tx.request
        try:
            value = auth.authorize(challenges, method=old.method, uri=str(old.uri), body=old.body)
        except (_AuthHeaderError, NoUsableChallengeError):
            return False
        new = Request(old.method, old.uri, body=old.body)
        cred_name = "Authorization" if response.status == 401 else "Proxy-Authorization"
        cseq = old.cseq
        seq = (cseq.seq if cseq else 0) + 1
        for (name, val), key in zip(old.headers, old.headers.keys(), strict=True):
            if key == "via" or canonical_key(name) in ("authorization", "proxy-authorization"):
                continue
            if key == "cseq":
                val = str(CSeq(seq, old.method))
            new.headers.add(name, val)
        new.headers.add(cred_name, value)
        if ctx.dialog_id is not None and ctx.dialog_id in self._dialogs:
            dialog = self._dialogs[ctx.dialog_id]
            dialog.local_seq = max(dialog.local_seq, seq)
        new.headers.insert(0, "Via", str(self._our_via()))
        tx: ClientTransaction
        if new.method == "INVITE":
            tx = InviteClientTransaction(new, self._timers, now)
        else:
            tx = NonInviteClientTransaction(new, self._timers, now)
        # The old transaction finishes on its own (ACK sent, timer D/K); the id follows the new one.
        old_ctx = _ClientCtx(-1, ctx.tx, ctx.dest, None, None)
        self._client[ctx.tx.key] = old_ctx
        self._heap.push(ctx.tx.get_timer(), old_ctx)
        ctx.tx = tx
        ctx.auth_attempts += 1
        self._client[tx.key] = ctx
        for wire in tx.outgoing:
            self._outbox.append((wire, ctx.dest))
        tx.outgoing.clear()
        self._heap.push(tx.get_timer(), ctx)
        return True

    def _send_cancel(self, ctx: _ClientCtx, now: float) -> None:
        """RFC 3261 9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via."""
        req = ctx.tx.request
        cancel = Request("CANCEL", req.uri)
        h = cancel.headers
        h.add("Via", req.headers.values("via")[0])
        for value in req.headers.get_all("route"):
            h.add("Route", value)
        h.add("Max-Forwards", "70")
        h.add("From", req.headers.get("from") or "")
        h.add("To", req.headers.get("to") or "")
        h.add("Call-ID", req.headers.get("call-id") or "")
        cseq = req.cseq
        h.add("CSeq", f"{cseq.seq if cseq else 1} CANCEL")
        tx = NonInviteClientTransaction(cancel, self._timers, now)
        cctx = _ClientCtx(self._new_id(), tx, ctx.dest, None, None)
        self._client[tx.key] = cctx
        self._client_by_id[cctx.request_id] = cctx
        ctx.cancelled = True
        self._flush_client(cctx, now)

    # -- helpers ------------------------------------------------------------------------------------

    def _respond(
        self,
        ctx: _ServerCtx,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        req = ctx.tx.request
        to_tag = ctx.to_tag if status > 100 else None
        response = make_response(req, status, reason, to_tag=to_tag, headers=headers)
        ctx.tx.send_response(response, now)
        if req.method == "INVITE" and status >= 300:
            self._uas_invite_response(ctx, req, response, now)
        self._flush_server(ctx, now)

    def _flush_server(self, ctx: _ServerCtx, now: float) -> None:
        tx = ctx.tx
        for wire in tx.outgoing:
            self._outbox.append((wire, ctx.dest))
        tx.outgoing.clear()
        if tx.timed_out or tx.transport_failed:
            tx.timed_out = tx.transport_failed = False
            self._events.append(
                TransactionTimedOut(ctx.tx_id, tx.request.method, tx.request.call_id, True)
            )
        if tx.terminated:
            if self._server.get(tx.key) is ctx:
                del self._server[tx.key]
            self._server_by_id.pop(ctx.tx_id, None)
        else:
            self._heap.push(tx.get_timer(), ctx)

    def _end_dialog(self, dialog: Dialog, reason: str) -> None:
        dialog.handle(DialogInput.BYE if reason.startswith("bye") else DialogInput.TIMED_OUT)
        dialog.state = DialogState.TERMINATED
        did = dialog.id
        self._dialogs.pop(did, None)
        retx = self._retx_2xx.pop(did, None)
        if retx is not None:
            retx.done = True
        for rel in self._rel_1xx.pop(did, ()):
            rel.done = True
        session = self._sessions.pop(did, None)
        if session is not None:
            session.done = True
        self._local_sdp.pop(did, None)
        self._peer_allow.pop(did, None)
        self._events.append(DialogTerminated(dialog.id, reason))

    def _our_via(self) -> Via:
        cfg = self.config
        return Via(
            cfg.transport.upper(),
            cfg.local_host,
            cfg.local_port,
            (("branch", new_branch()), ("rport", None)),
        )

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _screened_out(self, addr: Addr, now: float) -> bool:
        """The guard's check of a request before parsing (responses skip it: see
        `sip.security.Guard`); True (and counted) if it is dropped."""
        guard = self.security
        if guard is None:
            return False
        refusal = guard.screen(addr[0], now)
        if refusal is None:
            return False
        self._count(refusal.reason)
        return True

    def _count(self, reason: str) -> None:
        if reason not in REJECTION_REASONS:
            reason = "bad_header"
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def _internal_error(self, call_id: str | None, exc: BaseException) -> None:
        self._count("internal_error")
        self._events.append(InternalErrorOccurred(call_id, f"{type(exc).__name__}: {exc}"))

    def _answer_stateless(
        self,
        req: Request,
        status: int,
        addr: Addr,
        reason: str | None,
        headers: Iterable[tuple[str, str]] = (),
        *,
        to_source: bool = False,
    ) -> None:
        """A response without a transaction (8.2.6 allows it for errors), never to an ACK.

        `to_source` sends it where the request came from whatever its Via says: for a source
        we refuse before reading its Via, which may name someone else (a reflection attack).
        """
        if req.method == "ACK":
            return
        try:
            try:
                response = make_response(req, status, reason, to_tag=new_tag(), headers=headers)
            except ParseError:  # a To whose URI does not parse cannot take a tag: copy it as is
                response = make_response(req, status, reason, headers=headers)
            cfg = self.config
            dest = addr if to_source or cfg.reliable or cfg.force_rport else None
            if dest is None:
                try:
                    dest = self._response_dest(req, addr)
                except ParseError:
                    dest = addr
            self._outbox.append((bytes(response), dest))
        except Exception as exc:
            self._internal_error(None, exc)

    def _reject_unparsed(self, data: bytes, error: ParseError, addr: Addr) -> None:
        """RFC 3261 16.3 / RFC 4475: answer a bad request statelessly if we can address it."""
        if data.lstrip(b"\r\n")[:4].upper() == b"SIP/":
            self._count("malformed_response")  # never answer a response
            return
        salvaged = _salvage(data)
        if salvaged is None:
            self._count("unparsable_dropped")
            return
        found, unreadable = salvaged
        self._count(error.reason)
        phrase = _phrase(error)
        if unreadable and error.reason == "bad_header":
            phrase = f"Bad {unreadable[0]} Header Field"  # 21.4.1: name the problem
        response = Response(error.status_hint, phrase)
        for name, value in found:
            response.headers.add(name, value)
        # The source address, never the Via: it may be the broken part (18.2.2, RFC 3581 4).
        self._outbox.append((bytes(response), addr))


def _phrase(error: ParseError) -> str | None:
    if error.status_hint != 400:
        return None
    return _PARSE_STATUS_PHRASES.get(error.reason, "Bad Request")


_SALVAGED: Final[dict[str, tuple[str, Callable[[list[str]], object]]]] = {
    "via": ("Via", parse_via_list),
    "from": ("From", parse_name_addr),
    "to": ("To", parse_name_addr),
    "call-id": ("Call-ID", parse_call_id),
    "cseq": ("CSeq", parse_cseq),
}


def _salvage(data: bytes) -> tuple[list[tuple[str, str]], list[str]] | None:
    """Via, From, To, Call-ID and CSeq of a request that did not parse, and the names of those
    present but unreadable; None if unanswerable.

    Only values that parse on their own are copied (8.2.6.2 copies them; a broken one would make
    the answer unreadable too, so RFC 4475 3.1.2.1 badinv01 is answered without its Via and 3.1.2.4
    scalar02 without its CSeq). Via, Call-ID and CSeq lines must be there, readable or not: without
    them the bytes are no SIP request (8.1.1), and answering any junk sent to the port would make
    us a reflector.
    """
    head = data[:8192].split(b"\r\n\r\n", 1)[0]
    if head.startswith(b"\r\n"):
        head = head.lstrip(b"\r\n")
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    found: list[tuple[str, str]] = []
    unreadable: list[str] = []
    present: set[str] = set()
    seen: set[str] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = canonical_key(name.strip())
        known = _SALVAGED.get(key)
        value = value.strip()
        if known is None or not value:
            continue
        present.add(key)
        if key != "via" and key in seen:
            continue
        display, parser = known
        try:
            parser([value])
        except ParseError:
            unreadable.append(display)
            continue
        seen.add(key)
        found.append((display, value))
    if not {"via", "call-id", "cseq"} <= present:
        return None
    return found, unreadable
