"""The SIP event switch: every endpoint event of every listener, to the phase that handles it.

How this works: each listener's endpoint (sip.endpoint) calls ``Dispatcher.on_event`` with one
event at a time. A new INVITE goes to ``inbound``, a re-INVITE or UPDATE with an offer to
``session``, a response to our INVITE to ``ringing`` (or ``ringing.late_answer`` for one we gave
up on), CANCEL/BYE/dialog ends to ``teardown``, SIP INFO DTMF to ``media``, registrations to the
agent directory. Calls and legs are found through the service's ``CallIndex``. An exception
while handling one event is logged and counted, never raised into the transport.

The listeners' shared guard (engine.calls.security) hands its facts to ``on_security_event``:
each ban is one ``security_ban`` line (logger ``acd.security``) shaped for fail2ban (docs/security.md:
the source address is the first key, so an anchored filter cannot be fooled by text a peer put in
another field), its end one ``security_unban`` line, a source starting to flood one
``security_flood`` line; bans and floods are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from engine.calls.security import iso_utc
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
from sip.security import (
    BanLifted,
    FloodDetected,
    SecurityEvent,
    SecurityPolicy,
    SourceBanned,
)

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")
security_log = structlog.stdlib.get_logger("acd.security")


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
        elif isinstance(event, SourceBanned | BanLifted | FloodDetected):
            self._on_security(event)  # an endpoint with a guard of its own (none of ours)

    # -- the listeners' guard ----------------------------------------------------------------------

    def on_security_event(self, event: SecurityEvent) -> None:
        """A fact of the shared guard, handed over while an endpoint screens a request."""
        try:
            self._on_security(event)
            if isinstance(event, SourceBanned | BanLifted):
                self._s.security.changed()  # kept across a restart
        except Exception:
            self._s.metrics.errors.labels(where="sip_event").inc()
            log.exception("sip_event_failed", sip_event=type(event).__name__)

    def _on_security(self, event: SecurityEvent) -> None:
        security = self._s.security
        if isinstance(event, SourceBanned):
            self._s.metrics.security_bans.labels(reason=event.reason).inc()
            until = iso_utc(security.wall(event.until))
            # The address first: fail2ban's filter anchors on it (docs/security.md). `user` is
            # whatever the peer put in its credentials, so it stays out of `message`.
            security_log.warning(
                "security_ban",
                address=event.address,
                reason=event.reason,
                until=until,
                ban_s=round(event.until - event.since, 3),
                failures=event.failures,
                strikes=event.strikes,
                user=event.user,
                message=f"SIP source {event.address} banned until {until}: {event.reason}, "
                f"{event.failures} failures, ban number {event.strikes}",
            )
        elif isinstance(event, BanLifted):
            self.ban_ended(event.address, event.reason, event.at)
        else:
            self._s.metrics.security_floods.inc()
            security_log.warning(
                "security_flood",
                address=event.address,
                message=f"SIP source {event.address} is flooding: its requests are dropped "
                "until it slows down",
            )

    def ban_ended(self, address: str, reason: str, at: float) -> None:
        """The ban of ``address`` ended: expired, lifted (the API), evicted, or a reload."""
        security_log.info(
            "security_unban",
            address=address,
            reason=reason,
            at=iso_utc(self._s.security.wall(at)),
            message=f"SIP source {address} no longer banned: {reason}",
        )

    def bans_restored(self, active: int) -> None:
        if active:
            security_log.warning(
                "security_bans_restored",
                active=active,
                path=str(self._s.security.state_path),
                message=f"{active} SIP source bans carried over from before the restart",
            )

    def security_policy(self, policy: SecurityPolicy | None, why: str) -> None:
        """One line saying what is screened (at start, and when a reload changes it)."""
        if policy is None:
            security_log.warning("security_policy", why=why, screening="off")
            return
        flood, bans = policy.flood, policy.bans
        security_log.info(
            "security_policy",
            why=why,
            allow=[str(network) for network in policy.allow],
            flood=None if flood is None else f"{flood.rate_per_s:g}/s, burst {flood.burst}",
            bans=None
            if bans is None
            else f"{bans.max_failures} failures in {bans.find_window_s:g} s: {bans.ban_s:g} s",
            banned_action=policy.banned_action,
            drop_scanners=bool(policy.scanner_user_agents),
            ban_scanners=policy.ban_scanners,
        )
