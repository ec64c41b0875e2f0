"""SIP dialogs (RFC 3261 12, 14, 15), sans-I/O.

How this works: a `Dialog` is the state two UAs share after an INVITE succeeds (or while it is
early): Call-ID, local and remote tags, local and remote CSeq, the remote target (from the peer's
Contact) and the route set (from Record-Route; reversed on the UAC side, 12.1.2). The endpoint
creates one when the UAS sends a 1xx/2xx with a To tag (12.1.1) or when the UAC receives one
(12.1.2), looks it up by `DialogId` for every request carrying a To tag, and asks it to
`validate_request` (12.2.2: CSeq order, 14.2: re-INVITE glare) and to `create_request` for BYE,
re-INVITE, INFO and OPTIONS inside the dialog (12.2.1.1). The dialog never sends anything itself.

The few state changes are one table, like the transaction tables: (state, input) -> next state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final, NamedTuple

from sip.errors import LocalProtocolError
from sip.headers import CSeq, NameAddr
from sip.message import Request, Response
from sip.uri import Uri

__all__ = [
    "DIALOG_TABLE",
    "RETRY_AFTER_S",
    "Dialog",
    "DialogId",
    "DialogInput",
    "DialogState",
]

#: Retry-After on a 500 for an out-of-order or overlapping re-INVITE (RFC 3261 14.2 asks for a
#: random value between 0 and 10 s; a fixed mid value keeps the core deterministic).
RETRY_AFTER_S: Final = 5


class DialogId(NamedTuple):
    """RFC 3261 12: a dialog is identified by Call-ID, local tag and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogInput(enum.Enum):
    PROVISIONAL = "1xx"  # a 1xx with To tag for the dialog-creating INVITE
    ACCEPTED = "2xx"  # a 2xx for it
    REJECTED = "3xx-6xx"  # a non-2xx final for it (early dialog ends, 12.3)
    BYE = "bye"  # BYE sent or received (15)
    TIMED_OUT = (
        "timed_out"  # the ACK never came (13.3.1.4) or a 408/481 inside the dialog (12.2.1.2)
    )


DIALOG_TABLE: Final[dict[tuple[DialogState, DialogInput], DialogState]] = {
    (DialogState.EARLY, DialogInput.PROVISIONAL): DialogState.EARLY,  # 12.1
    (DialogState.EARLY, DialogInput.ACCEPTED): DialogState.CONFIRMED,  # 12.1
    (DialogState.EARLY, DialogInput.REJECTED): DialogState.TERMINATED,  # 12.3
    (DialogState.EARLY, DialogInput.BYE): DialogState.TERMINATED,  # 15 (UAC BYE on early)
    (DialogState.EARLY, DialogInput.TIMED_OUT): DialogState.TERMINATED,
    (DialogState.CONFIRMED, DialogInput.ACCEPTED): DialogState.CONFIRMED,  # 2xx retransmission
    (DialogState.CONFIRMED, DialogInput.PROVISIONAL): DialogState.CONFIRMED,  # late 1xx
    (DialogState.CONFIRMED, DialogInput.REJECTED): DialogState.CONFIRMED,  # re-INVITE failed
    (DialogState.CONFIRMED, DialogInput.BYE): DialogState.TERMINATED,  # 15.1
    (DialogState.CONFIRMED, DialogInput.TIMED_OUT): DialogState.TERMINATED,  # 12.2.1.2
}


def _contact_uri(message: Request | Response) -> Uri | None:
    contacts = message.contacts
    return contacts[0].uri if contacts else None


class Dialog:
    """One dialog, from our side. Build it with `as_uas` or `as_uac`."""

    __slots__ = (
        "id",
        "invite_cseq",
        "is_uas",
        "local_contact",
        "local_seq",
        "local_uri",
        "pending_invite_in",
        "pending_invite_out",
        "remote_seq",
        "remote_target",
        "remote_uri",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        dialog_id: DialogId,
        *,
        is_uas: bool,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        local_seq: int,
        remote_seq: int | None,
        remote_target: Uri,
        route_set: Iterable[NameAddr],
        local_contact: Uri,
        secure: bool,
        invite_cseq: int,
    ) -> None:
        self.id: Final = dialog_id
        self.is_uas: Final = is_uas
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.remote_target = remote_target
        self.route_set: tuple[NameAddr, ...] = tuple(route_set)
        self.local_contact = local_contact
        self.secure = secure
        self.invite_cseq = invite_cseq  # CSeq number of the INVITE in progress (ACK, CANCEL)
        self.state = DialogState.EARLY
        self.pending_invite_out = False  # our (re-)INVITE awaits its final response (14.1)
        self.pending_invite_in = False  # the peer's re-INVITE awaits our final response (14.2)

    # -- construction (12.1.1, 12.1.2) -----------------------------------------------------------

    @classmethod
    def as_uas(cls, request: Request, local_tag: str, local_contact: Uri) -> Dialog:
        """The UAS side of a dialog created by `request` answered with To tag `local_tag`."""
        from_, to, call_id, cseq = request.from_, request.to, request.call_id, request.cseq
        if from_ is None or to is None or call_id is None or cseq is None:
            raise LocalProtocolError("dialog-creating request lacks From/To/Call-ID/CSeq")
        remote_target = _contact_uri(request) or from_.uri
        return cls(
            DialogId(call_id, local_tag, from_.tag or ""),
            is_uas=True,
            local_uri=to.with_tag(local_tag),
            remote_uri=from_,
            local_seq=0,
            remote_seq=cseq.seq,
            remote_target=remote_target,
            route_set=request.record_route,  # 12.1.1: in order
            local_contact=local_contact,
            secure=request.uri.scheme == "sips",
            invite_cseq=cseq.seq,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response, local_contact: Uri) -> Dialog:
        """The UAC side of a dialog created by a 1xx/2xx `response` (with To tag) to `request`."""
        from_, to, call_id, cseq = request.from_, response.to, request.call_id, request.cseq
        if from_ is None or to is None or call_id is None or cseq is None or not to.tag:
            raise LocalProtocolError("dialog-creating response lacks a To tag")
        return cls(
            DialogId(call_id, from_.tag or "", to.tag),
            is_uas=False,
            local_uri=from_,
            remote_uri=to,
            local_seq=cseq.seq,
            remote_seq=None,  # 12.1.2: empty
            remote_target=_contact_uri(response) or request.uri,
            route_set=tuple(reversed(response.record_route)),  # 12.1.2: reversed
            local_contact=local_contact,
            secure=request.uri.scheme == "sips",
            invite_cseq=cseq.seq,
        )

    # -- state -----------------------------------------------------------------------------------

    def handle(self, what: DialogInput) -> DialogState:
        """Apply one input; unlisted inputs (e.g. anything after TERMINATED) change nothing."""
        self.state = DIALOG_TABLE.get((self.state, what), self.state)
        return self.state

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    # -- UAS side: validating requests inside the dialog (12.2.2, 14.2) -------------------------

    def validate_request(self, request: Request) -> tuple[int, str | None] | None:
        """None if `request` may be processed; else (status, Retry-After value or None).

        Updates the remote CSeq and, for a target refresh (re-INVITE), the remote target.
        ACK and CANCEL are not checked (they reuse the INVITE's CSeq number).
        """
        method = request.method
        if method in ("ACK", "CANCEL"):
            return None
        cseq = request.cseq
        if cseq is None:
            return (400, None)
        if self.remote_seq is not None and cseq.seq < self.remote_seq:
            return (500, str(RETRY_AFTER_S))  # 12.2.2: out of order
        self.remote_seq = cseq.seq  # 12.2.2: in order, whatever the answer below
        if method == "INVITE":
            if self.pending_invite_out:
                return (491, None)  # 14.2: glare, our re-INVITE is outstanding
            if self.pending_invite_in:
                return (500, str(RETRY_AFTER_S))  # 14.2: previous re-INVITE still pending
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target  # 12.2.2: target refresh
        elif method == "UPDATE":
            if request.body and self.pending_invite_out:
                return (491, None)  # RFC 3311 5.2: our offer is outstanding
            if request.body and self.pending_invite_in:
                return (500, str(RETRY_AFTER_S))  # RFC 3311 5.2: their re-INVITE's offer
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target  # RFC 3311 5.2: UPDATE is a target refresh
        return None

    # -- UAC side: building requests inside the dialog (12.2.1.1) -------------------------------

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
    ) -> Request:
        """A request inside the dialog, without Via (the endpoint adds it with the branch).

        Increments the local CSeq unless `cseq` is given (ACK and CANCEL reuse the INVITE's).
        """
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri, routes = self._request_uri_and_routes()
        req = Request(method, uri, body=body)
        h = req.headers
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local_uri))
        h.add("To", str(self.remote_uri))
        h.add("Call-ID", self.id.call_id)
        h.add("CSeq", str(CSeq(cseq, method)))
        for route in routes:
            h.add("Route", str(route))
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER", "NOTIFY"):
            h.add("Contact", f"<{self.local_contact}>")  # 12.2.1.1: target refresh requests
        for name, value in headers:
            h.add(name, value)
        if body and content_type:
            h.add("Content-Type", content_type)
        return req

    def _request_uri_and_routes(self) -> tuple[Uri, tuple[NameAddr | Uri, ...]]:
        routes = self.route_set
        if not routes:
            return self.remote_target, ()
        first = routes[0]
        if first.uri.has_param("lr"):
            return self.remote_target, routes  # 12.2.1.1 loose routing
        # 12.2.1.1 strict routing: the first route becomes the Request-URI, the remote target
        # goes last in Route.
        return first.uri.replace(params=()), (*routes[1:], NameAddr(self.remote_target))

    def next_hop(self) -> Uri:
        """Where an in-dialog request goes first: the first Route, else the remote target."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def __repr__(self) -> str:
        return f"<Dialog {self.id.call_id} {self.state.value} uas={self.is_uas}>"
