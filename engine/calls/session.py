"""The caller's and the agent legs' SIP sessions: answering with SDP, re-INVITEs, hold.

How this works: ``answer_caller`` opens the caller's RTP endpoint, answers the INVITE's offer
(PCMU/PCMA, RFC 3264) and indexes the dialog. A re-INVITE (or an UPDATE with an offer, RFC 3311)
from either side is answered from that side's own offer/answer state (same o= session, version
up when our answer changes); a codec change mid-call gets 488. Hold and resume (RFC 3264 8)
change the bridge: an agent's hold gives the caller music, a caller's hold stops our audio to
it, and the recording is paused as "hold" meanwhile unless already paused (PCI).
SRTP (``[media] srtp``, SDES keys in the SDP) is decided by the first offer/answer: a re-offer may
bring a new key from the peer (its receiving context is replaced, ours stays) but cannot turn
SRTP on or off (488).
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any

import structlog

from engine.calls.inbound import refuse_no_room
from engine.calls.media import srtp_mode
from engine.calls.model import CODECS, Call, CallEnded, loop_now
from engine.media.offload import RemoteBridge
from sip.dialog import DialogId
from sip.endpoint import Endpoint, RequestReceived
from sip.media import PortsExhaustedError, RtpEndpoint
from sip.sdp import (
    PCMA,
    PCMU,
    AudioCapabilities,
    OfferAnswerError,
    SdpError,
    SrtpMode,
    negotiate_answer,
    parse_sdp,
)

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


class Session:
    """SDP offer/answer for the call's legs, re-INVITEs and hold."""

    def __init__(self, service: CallService) -> None:
        self._s = service

    def _answer_sdp(self, call: Call, rtp: RtpEndpoint) -> tuple[bytes, Any]:
        offer = parse_sdp(call.request.body)
        host = rtp.local_address[0]
        # trunks[].dtmf = "inband": telephone-event is not offered back, so the caller sends tones
        caps = AudioCapabilities(
            address=host, port=rtp.port, codecs=(PCMU, PCMA),
            telephone_event=call.trunk.dtmf != "inband",
            srtp=srtp_mode(self._s.config, call.trunk),
        )  # fmt: skip
        answer = negotiate_answer(offer, caps)
        call.remote_sdp, call.local_sdp = offer, answer.sdp
        return answer.sdp.to_bytes(), answer.audio

    def reinvite(self, endpoint: Endpoint, event: RequestReceived, now: float) -> None:
        """Answer a re-INVITE (or an UPDATE with an offer, RFC 3311) from the caller or an agent
        leg from that leg's own offer/answer state (same o= session, version up when our answer
        changes), and act on hold/resume. Session timers ride on these answers (sip.endpoint).

        A re-offer that would change the codec mid-call gets 488: RFC 3264 keeps the session
        as it was, and the bridge (and recording) keep their codec."""
        dialog_id = event.dialog_id
        call = self._s.index.by_dialog.get(dialog_id) if dialog_id else None
        leg = (
            None
            if call is not None or not dialog_id
            else self._s.index.legs_by_dialog.get(dialog_id)
        )
        owner = call if call is not None else leg.call if leg is not None else None
        rtp = call.rtp if call is not None else leg.rtp if leg is not None else None
        local = call.local_sdp if call is not None else leg.local_sdp if leg is not None else None
        if owner is None or rtp is None or local is None:
            endpoint.send_response(event.transaction_id, 488, now=now)
            return
        if not event.request.body:  # an offerless re-INVITE: our current SDP is the offer
            endpoint.answer(event.transaction_id, local.to_bytes(), now=now)
            return
        codec = owner.codec if call is not None else leg.codec  # type: ignore[union-attr]
        previous = call.remote_sdp if call is not None else leg.last_offer_in  # type: ignore[union-attr]
        try:
            offer = parse_sdp(event.request.body)
            ours = CODECS.get(codec, PCMU)
            caps = AudioCapabilities(
                address=rtp.local_address[0], port=rtp.port,
                codecs=(ours, *(c for c in (PCMU, PCMA) if c.name != ours.name)),
                telephone_event=call is None or call.trunk.dtmf != "inband",  # an agent leg: always
                # SRTP stays as it is for the call (on: with our key; the peer may re-key its own)
                srtp=SrtpMode.OFFER if rtp.srtp_tx is not None else SrtpMode.OFF,
                crypto=next((c for m in local.media for c in m.crypto), None),
            )  # fmt: skip
            answer = negotiate_answer(
                offer, caps, previous_offer=previous if previous is not None else None,
                previous_answer=local,
            )  # fmt: skip
        except (SdpError, OfferAnswerError):
            endpoint.send_response(event.transaction_id, 488, now=now)
            return
        audio = answer.audio
        encrypted = rtp.srtp_tx is not None
        if audio.codec.name != codec or encrypted != (audio.srtp is not None):
            # the codec, or SRTP on/off, cannot change mid-call: the bridge keeps its legs
            endpoint.send_response(event.transaction_id, 488, now=now)
            return
        theirs = audio.srtp.remote if audio.srtp is not None else None
        if (
            theirs is not None
            and rtp.srtp_rx is not None
            and not rtp.srtp_rx.uses(theirs.key, theirs.salt)
        ):
            rtp.srtp_rx = theirs.context()  # the peer re-keyed (RFC 4568 7.1.4); our key stays
            if isinstance(owner.bridge, RemoteBridge) and rtp.detached:
                owner.bridge.rekey(rtp)  # a media worker carries the leg: it takes the key too
        if call is not None:
            call.remote_sdp, call.local_sdp = offer, answer.sdp
        else:
            assert leg is not None
            leg.last_offer_in, leg.local_sdp = offer, answer.sdp
        if not _unspecified(audio.remote_address):  # c=0.0.0.0 (RFC 2543 hold): keep the old one
            rtp.remote_addr = (audio.remote_address, audio.remote_port)
        endpoint.answer(event.transaction_id, answer.sdp.to_bytes(), now=now)
        side = "caller" if call is not None else "agent"
        if audio.remote_hold != (side in owner.held_by):
            self.hold_changed(owner, side, audio.remote_hold)

    def hold_changed(self, call: Call, side: str, held: bool) -> None:
        """``side`` put the other on hold, or took it off. An agent's hold gives the caller the
        queue's music (as Asterisk does); a caller's hold (its PBX may play its own music, which
        the agent then hears) only stops our audio towards it. The recording is paused as
        "hold" while anyone holds, unless it is already paused for another reason (PCI)."""
        now = loop_now()
        rtp = call.rtp if side == "caller" else self._s.media.leg_of(call)
        if isinstance(call.bridge, RemoteBridge) and call.bridge.stopped_at is None:
            call.bridge.set_held(0 if side == "caller" else 1, held, now)
        elif rtp is not None:
            rtp.set_held(held, now)
        if held:
            call.held_by.add(side)
        else:
            call.held_by.discard(side)
        if side == "agent":  # the caller's time on hold, for the CDR's hold_s
            wall = time.time()
            if held and call.agent_hold_since is None:
                if call.bridge is not None and call.bridge.stopped_at is None:
                    call.agent_hold_since = wall
            elif not held and call.agent_hold_since is not None:
                call.hold_s += wall - call.agent_hold_since
                call.agent_hold_since = None
        log.info("call_hold" if held else "call_resume", by=side, call_id=call.id)
        bridge = call.bridge
        if bridge is None or bridge.stopped_at is not None:
            return
        agent_holds, caller_holds = "agent" in call.held_by, "caller" in call.held_by
        if agent_holds and not caller_holds:
            if call.player is None and not (isinstance(bridge, RemoteBridge) and bridge.playing[0]):
                self._s.media.music_on_hold(call, call.queue)
        else:
            self._s.media.stop_player(call)
        bridge.set_relay(now, caller_to_agent=not agent_holds, agent_to_caller=not call.held_by)
        if call.held_by and bridge.recording_paused_for is None:
            bridge.pause_recording(now, "hold")
        elif not call.held_by and bridge.recording_paused_for == "hold":
            bridge.resume_recording(now)

    async def answer_caller(self, call: Call) -> None:
        if call.answered:
            return
        try:
            call.rtp = await self._s.media.open_rtp(call)
        except PortsExhaustedError as exc:  # taken meanwhile (legs), or not bindable: no room
            refuse_no_room(self._s, call.endpoint, call.transaction_id, "rtp_ports", loop_now())
            self._s.transmit()
            raise CallEnded("no RTP port", "rejected") from exc
        try:
            body, audio = self._answer_sdp(call, call.rtp)
        except (SdpError, OfferAnswerError) as exc:
            call.endpoint.send_response(call.transaction_id, 488, now=loop_now())
            self._s.transmit()
            raise CallEnded("no common codec", "failed") from exc
        call.codec = audio.codec.name
        call.rtp.use_srtp(audio.srtp.contexts() if audio.srtp is not None else None)
        call.rtp.remote_addr = (audio.remote_address, audio.remote_port)
        call.rtp.dtmf_payload_type = audio.telephone_event_pt  # as negotiated, not assumed 101
        self._s.media.listen_for_tones(call, True)  # the flow runs next
        response = call.endpoint.answer(call.transaction_id, body, now=loop_now())
        self._s.transmit()
        to, frm = response.to, response.from_
        if to is not None and frm is not None and to.tag and frm.tag:
            call.dialog_id = DialogId(call.sip_call_id, to.tag, frm.tag)
            self._s.index.by_dialog[call.dialog_id] = call
        call.answered = True


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:  # a host name: a real address
        return False
