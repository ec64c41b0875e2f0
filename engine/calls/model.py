"""The call layer's model: a call, its agent legs, and the index that finds them by SIP ids.

How this works: a ``Call`` is one trunk INVITE from arrival to the CDR row; each INVITE we send
for it (an agent's phone or softphone, a transfer target) is an ``AgentLeg``. The phases
(inbound, session, media, queueing, ringing, transfers, softphones, teardown) all act on these
objects; ``CallIndex`` is how a SIP event finds its call or leg (transaction and request ids are
per endpoint, so they are keyed with it). ``CallEnded`` ends a call with a disposition from
anywhere inside its task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.config import TrunkConfig
from engine.media.offload import RemoteBridge
from sip import Request
from sip.dialog import DialogId
from sip.endpoint import Endpoint
from sip.media import Bridge, LegPlayer, RtpEndpoint
from sip.sdp import PCMA, PCMU

CODECS = {"PCMU": PCMU, "PCMA": PCMA}
# Final statuses of an INVITE we sent, as the queue_log and transfer outcomes name them.
BUSY = {486, 600}
DECLINED = {603}


@dataclass(eq=False)
class AgentLeg:
    call: Call
    agent_id: str
    rtp: RtpEndpoint
    offer_sdp: Any
    endpoint: Any = None  # the SIP endpoint (UDP, TCP or TLS listener) the leg's INVITE left on
    request_id: int = -1
    dialog_id: DialogId | None = None
    ring_timer: asyncio.TimerHandle | None = None
    rang_at: float = 0.0
    answered: bool = False
    finished: bool = False
    codec: str = "PCMU"
    # A transfer target reached through a trunk (not an agent): its final status lands here.
    final: asyncio.Future[int] | None = None
    # The SDP we last sent on this leg (first our offer, then our answers to its re-INVITEs) and
    # the last offer it sent us (None until its first re-INVITE).
    local_sdp: Any = None
    last_offer_in: Any = None
    # A browser agent's softphone (engine.webrtc.session.Session): the leg's far end is its loopback
    # RTP port, ringing and answering happen over its WebSocket instead of SIP.
    softphone: Any = None
    # RFC 3263 4.3: the targets (listener endpoint, address) still to try if the current one
    # times out or answers 503, and how to send this leg's INVITE to one of them (request id).
    next_targets: list[tuple[Any, tuple[str, int]]] = field(default_factory=list)
    send_invite: Callable[[Any, tuple[str, int]], int] | None = None
    # Armed while the current target has not answered at all and another target is left.
    failover_timer: asyncio.TimerHandle | None = None

    @property
    def external(self) -> bool:
        return self.final is not None


@dataclass(frozen=True, slots=True)
class TransferTarget:
    """Where an agent sends its caller: a queue, or a number through a trunk."""

    queue: str = ""
    number: str = ""
    trunk: str = ""
    by: str = ""  # who asked (agent id or API token name), for the CDR's flow data


#: How long a new bridge waits for a media worker to hand a leg back (a reply takes a millisecond;
#: a worker that died is noticed at once, and the leg is then taken back without it).
MEDIA_HOME_TIMEOUT_S = 2.0


@dataclass(eq=False)
class Call:
    id: str
    sip_call_id: str
    transaction_id: int
    request: Request
    source: tuple[str, int]
    trunk: TrunkConfig
    flow: str
    arrived_at: float
    caller: str
    dialed: str
    endpoint: Any = None  # the SIP endpoint (listener) the caller's INVITE came in on
    rtp: RtpEndpoint | None = None
    codec: str = "PCMU"
    dialog_id: DialogId | None = None
    answered: bool = False
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    player: LegPlayer | None = None
    playback_done: asyncio.Future[bool] | None = None
    legs: dict[str, AgentLeg] = field(default_factory=dict)
    connected: asyncio.Future[AgentLeg] | None = None
    # Set while bridged to an agent: the agent's blind transfer (to a queue or a number) lands here.
    transfer_request: asyncio.Future[TransferTarget] | None = None
    task: asyncio.Task[None] | None = None
    queue: str = ""
    enqueued_at: float | None = None
    # Wall time the caller's place in the queue counts from: enqueued_at, or an earlier time it
    # kept (keep_place_s); the first such time of this call, kept across overflows and transfers.
    place_at: float | None = None
    first_place_at: float | None = None
    first_offer_at: float | None = None
    agent_answered_at: float | None = None
    agent_id: str | None = None
    hangup_side: str = "system"
    hangup_reason: str = ""
    disposition: str = "flow_ended"
    flow_data: dict[str, Any] = field(default_factory=dict)
    recording_id: str | None = None
    recording: Any = None  # recordings.Recording while the bridge feeds it
    recording_on_demand: bool = False  # started through the API mid-call
    priority: int = 0
    overflows: int = 0
    bridge: Bridge | RemoteBridge | None = None
    transfer_answered_at: float | None = None
    # The caller's last SDP offer and our last answer (re-INVITEs are answered from these).
    remote_sdp: Any = None
    local_sdp: Any = None
    held_by: set[str] = field(default_factory=set)  # "caller" / "agent": who put the other on hold
    # The caller's time on the agent's hold while bridged (the CDR's hold_s): the finished holds'
    # seconds, and the wall time the current one began (None: not on hold now).
    hold_s: float = 0.0
    agent_hold_since: float | None = None
    # The last media-worker bridge's "legs are back" future: the next bridge waits for it.
    media_home: asyncio.Future[None] | None = None
    # Post-call survey (queues[].csat): when the agent's part ended while the caller stayed on
    # (wall clock; the agent is then already in wrap-up), and the caller's answers (1-5, None).
    agent_released_at: float | None = None
    csat_score: int | None = None
    csat_second_score: int | None = None


@dataclass(eq=False)
class CallIndex:
    """Live calls by our id, and calls and legs by the SIP ids their events carry."""

    calls: dict[str, Call] = field(default_factory=dict)
    # Transaction and request ids are per endpoint: keyed with it (one per listener).
    by_transaction: dict[tuple[Endpoint, int], Call] = field(default_factory=dict)
    by_dialog: dict[DialogId, Call] = field(default_factory=dict)
    legs_by_request: dict[tuple[Endpoint, int], AgentLeg] = field(default_factory=dict)
    legs_by_dialog: dict[DialogId, AgentLeg] = field(default_factory=dict)


class QueueEmptied(Exception):
    """Set on a waiting call's ``connected`` future when its queue has no member left."""


class CallbackRequested(Exception):
    """A waiting caller pressed its queue's callback key (engine.calls.callbacks)."""


class AgentHungUp(Exception):
    """Set on a bridged call's ``transfer_request`` when the agent hangs up and the caller stays
    on for the queue's post-call survey (engine.calls.surveys)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallEnded(Exception):
    """The call cannot go on (no codec, queue full, max wait): ends it with a disposition."""

    def __init__(self, reason: str, disposition: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.disposition = disposition


def loop_now() -> float:
    """The event loop's clock: what the SIP and media cores are given as ``now``."""
    return asyncio.get_running_loop().time()
