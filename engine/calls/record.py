"""The call's CDR row: built here, from a finished call or from an attempt that never became one.

How this works: ``record_of(call, ended_at=None)`` is the row of a live call, written when it
arrives, is queued and is answered (``CdrWriter.call_open``), so a crash leaves a row for it;
``teardown.finish`` writes ``record_of(call, ...)`` when a call ends, completing that row; a trunk
INVITE that is refused before it becomes a call (draining, unknown source, no route) still gets
a row from ``rejected_attempt`` so every attempt is counted. Both are ``engine.storage.cdr.
CallRecord`` values that the CDR writer queues for the store.
"""

from __future__ import annotations

import time
import uuid

from engine.calls.model import Call
from engine.storage.cdr import CallRecord


def record_of(call: Call, *, ended_at: float | None, talk_s: float | None, node: str) -> CallRecord:
    """The CDR row of a call that has ended at wall-clock ``ended_at``, or (None) as it stands."""
    wait_s = None
    ended = ended_at is not None
    waited_until = call.agent_answered_at or ended_at
    if call.enqueued_at is not None and waited_until is not None:
        wait_s = waited_until - call.enqueued_at
    hold_s = None
    if call.agent_answered_at is not None:  # a hold still on counts up to the end (or now)
        since = call.agent_hold_since
        hold_s = call.hold_s + (0.0 if since is None else (ended_at or time.time()) - since)
    return CallRecord(
        id=call.id, sip_call_id=call.sip_call_id, arrived_at=call.arrived_at,
        trunk=call.trunk.name, caller=call.caller, dialed=call.dialed, flow=call.flow,
        queue=call.queue or None, agent_id=call.agent_id,
        enqueued_at=call.enqueued_at, first_offer_at=call.first_offer_at,
        agent_answered_at=call.agent_answered_at, ended_at=ended_at,
        # A live call has no outcome yet (the Call's defaults are what it would be if it ended now)
        disposition=call.disposition if ended else None,
        hangup_side=call.hangup_side if ended else None,
        hangup_reason=(call.hangup_reason or None) if ended else None, wait_s=wait_s, talk_s=talk_s,
        hold_s=hold_s,
        flow_data=call.flow_data or None, recording_id=call.recording_id, node=node,
        csat_score=call.csat_score, csat_second_score=call.csat_second_score,
    )  # fmt: skip


def rejected_attempt(
    *,
    sip_call_id: str,
    trunk: str | None,
    caller: str,
    dialed: str,
    status: int,
    reason: str,
    node: str,
) -> CallRecord:
    """The CDR row of an INVITE answered ``status reason`` before it became a call."""
    wall = time.time()
    return CallRecord(
        id=uuid.uuid4().hex, sip_call_id=sip_call_id, arrived_at=wall, trunk=trunk,
        caller=caller, dialed=dialed, ended_at=wall, disposition="rejected",
        hangup_side="system", hangup_reason=f"{status} {reason}", node=node,
    )  # fmt: skip
