"""The SIP event switch: every endpoint event of every listener, to the phase that handles it.

How this works: each listener's endpoint (sip.endpoint) calls ``Dispatcher.on_event`` with one
event at a time. A new INVITE goes to ``inbound``, a re-INVITE or UPDATE with an offer to
``session``, a response to our INVITE to ``ringing`` (or ``ringing.late_answer`` for one we gave
up on), CANCEL/BYE/dialog ends to ``teardown``, SIP INFO DTMF to ``media``, registrations to the
agent directory. Calls and legs are found through the service's ``CallIndex``. An exception
while handling one event is logged and counted, never raised into the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from sip.endpoint import (
    AckReceived,
    ByeReceived,
    CancelReceived,
    DialogTerminated,
    Endpoint,
    EndpointEvent,
    InfoReceived,
    InternalErrorOccurred,
    RegistrationChanged,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from sip.rtp.dtmf import DtmfError, parse_sip_info

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


class Dispatcher:
    """Routes endpoint events to the call layer's phases."""

    def __init__(self, service: CallService) -> None:
        self._s = service

    def on_event(self, endpoint: Endpoint, event: EndpointEvent) -> None:
        try:
            self._on_event(endpoint, event)
        except Exception:
            # One misbehaving event must not take the SIP transport down with it.
            self._s.metrics.errors.labels(where="sip_event").inc()
            log.exception("sip_event_failed", sip_event=type(event).__name__)

    def _on_event(self, endpoint: Endpoint, event: EndpointEvent) -> None:
        now = asyncio.get_running_loop().time()
        if isinstance(event, RequestReceived):
            self._s.metrics.sip_requests.labels(method=event.request.method).inc()
            if event.request.method == "INVITE" and event.dialog_id is None:
                self._s.inbound.new_invite(endpoint, event, now)
            elif event.request.method in ("INVITE", "UPDATE") and event.dialog_id is not None:
                self._s.session.reinvite(endpoint, event, now)  # an UPDATE here carries an offer
            else:
                endpoint.send_response(event.transaction_id, 405, now=now)
        elif isinstance(event, ResponseReceived):
            self._s.metrics.sip_responses.labels(code=f"{event.response.status // 100}xx").inc()
            leg = self._s.index.legs_by_request.get((endpoint, event.request_id))
            if leg is not None:
                self._s.ringing.agent_response(leg, event, now)
            else:
                self._s.ringing.late_answer(endpoint, event, now)
        elif isinstance(event, AckReceived):
            pass
        elif isinstance(event, CancelReceived):
            call = self._s.index.by_transaction.get((endpoint, event.transaction_id))
            if call is not None:
                self._s.teardown.caller_gone(call, "cancel")
        elif isinstance(event, ByeReceived):
            call = self._s.index.by_dialog.get(event.dialog_id)
            if call is not None:
                self._s.teardown.caller_gone(call, "bye")
            leg = self._s.index.legs_by_dialog.get(event.dialog_id)
            if leg is not None:
                self._s.teardown.agent_gone(leg, "bye")
        elif isinstance(event, InfoReceived):
            call = self._s.index.by_dialog.get(event.dialog_id)
            if call is not None:
                ctype = event.request.content_type
                with contextlib.suppress(DtmfError):
                    info = parse_sip_info(ctype.mime if ctype else "", event.request.body)
                    self._s.media.digit(call, info.digit, "info")
        elif isinstance(event, DialogTerminated):
            if event.reason in ("timed_out", "session_expired"):
                # The core has given the dialog up (no ACK, 408/481 inside it, or RFC 4028: the
                # session was not refreshed): the call or the agent's leg ends with it.
                why = "ack timeout" if event.reason == "timed_out" else "session expired"
                call = self._s.index.by_dialog.get(event.dialog_id)
                if call is not None:
                    self._s.teardown.caller_gone(call, why)
                leg = self._s.index.legs_by_dialog.get(event.dialog_id)
                if leg is not None:
                    self._s.teardown.agent_gone(leg, why)
        elif isinstance(event, TransactionTimedOut):
            if not event.is_server and event.method == "INVITE":
                leg = self._s.index.legs_by_request.get((endpoint, event.transaction_id))
                if leg is not None:
                    self._s.ringing.leg_timed_out(leg)
        elif isinstance(event, RegistrationChanged):
            self._s.agents.registration_changed(event.aor)
        elif isinstance(event, InternalErrorOccurred):
            self._s.metrics.errors.labels(where="sip_core").inc()
            log.error("sip_internal_error", call_id=event.call_id, error=event.error)
