"""The call's media: RTP legs, prompts and music on hold, DTMF, the bridge and its recording.

How this works: the caller's and each agent leg's RTP endpoint come from one port allocator and
share one ``MediaClock``. Prompts are WAV files read once and cached as encoded frames (a name is
looked up once per reload), played by a ``LegPlayer`` that DTMF may barge in on. DTMF arrives as
RFC 4733 events, SIP INFO, or (``trunks[].dtmf``, while a flow runs) tones found in the caller's
audio (``listen_for_tones``). When an agent
answers, ``new_bridge`` joins the two legs: here (``sip.media.Bridge``) or, with ``[media]
workers > 0``, in a media worker (``engine.media.offload.RemoteBridge``); both take the same
commands. The recording tap is attached at the start, or on demand (``start_recording``), and
paused for PCI (``pause_recording``); a worker that dies mid-call hands the recording back
(``_continue_recording``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import structlog

from engine.calls.announcements import SHIPPED_PROMPTS
from engine.calls.model import CODECS, MEDIA_HOME_TIMEOUT_S, AgentLeg, Call, CallEnded, loop_now
from engine.config import Config, TrunkConfig
from engine.media.offload import MediaWorkers, RemoteBridge, RemoteRecording
from engine.recording.service import RecordingRefused
from engine.runtime.metrics import Metrics
from engine.runtime.workers import worker_args
from recordings import OnDemandRecording
from sip.media import (
    Bridge,
    DtmfReceived,
    LegPlayer,
    MediaClock,
    MediaEvent,
    MediaStats,
    MediaTimedOut,
    PlaybackFinished,
    PortAllocator,
    PortsExhaustedError,
    RtpEndpoint,
    open_endpoint,
)
from sip.media.prompts import PromptCache
from sip.rtp.playback import Playlist
from sip.sdp import PCMU, SrtpMode, make_offer

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


class CallMedia:
    """RTP legs, prompts, DTMF and bridges of the call layer."""

    def __init__(self, service: CallService) -> None:
        self._s = service
        config = service.config
        self.stats = MediaStats()
        # [media] workers > 0: bridged calls' media in worker processes (engine/media/offload.py)
        self.workers: MediaWorkers | None = None
        self.ports = PortAllocator(config.media.rtp_port_min, config.media.rtp_port_max)
        self.prompts = PromptCache(("PCMU", "PCMA"))
        self.clock: MediaClock | None = None
        # Prompt name -> loaded prompt: the file lookup (a stat per directory) happens once per
        # name, not on every play; a reload (prompts_dir may change) starts over.
        self._prompt_by_name: dict[str, Any] = {}

    def apply(self, config: Config) -> None:
        self._prompt_by_name = {}

    async def start(self, metrics: Metrics) -> None:
        """The shared media clock, and with ``[media] workers > 0`` the worker processes."""
        config = self._s.config
        self.clock = MediaClock(asyncio.get_running_loop(), self.stats)
        self.clock.start()
        if config.media.workers > 0 and self.workers is None:
            self.workers = MediaWorkers(
                config.media.workers,
                metrics.registry,
                self.stats,
                args=worker_args(config),
                on_unexpected=metrics.unexpected_errors.inc,
            )
            await self.workers.start()
            if self._s.recordings is not None:
                self._s.recordings.remote_writer_error = self.workers.writer_error

    async def close(self) -> None:
        if self.workers is not None:
            await self.workers.close()
        if self.clock is not None:
            self.clock.stop()

    def pause_recording(self, call_id: str, paused: bool) -> bool:
        """PCI: stop (or resume) writing a bridged call's recording; False if nothing to pause."""
        call = self._s.calls.get(call_id)
        if call is None or call.bridge is None or call.recording is None:
            return False
        now = loop_now()
        position = call.bridge.position(now)
        if paused:
            # The span is written as silence and listed in the index (a worker's recording is
            # paused at its own position).
            call.recording.pause(position)
            call.bridge.pause_recording(now, "paused")
        else:
            call.bridge.resume_recording(now)
            call.recording.resume(position)
        return True

    async def start_recording(self, call_id: str, requested_by: str) -> str:
        """On demand (API): record a bridged call from now until it ends; the new recording's id.

        The tap is attached to the live bridge with the bridge's current position as the file's
        position 0, so the file lasts from the request to the hang-up. Raises ``RecordingRefused``
        (not bridged, already recorded, the queue's policy is ``never``, the call ended meanwhile)
        or ``KeyError`` for a call that is not live."""
        call = self._s.calls[call_id]
        bridge = call.bridge
        if bridge is None or bridge.stopped_at is not None:
            raise RecordingRefused("the call is not bridged to an agent")
        if call.recording is not None:
            raise RecordingRefused("the call is already being recorded")
        if self._s.recordings is None:
            raise RecordingRefused("recording is unavailable: the recording service did not start")
        remote = isinstance(bridge, RemoteBridge) and bridge.carried_by is not None
        recording = await self._s.recordings.start_on_demand(
            call.id, call.queue, call.agent_id, requested_by=requested_by,
            remote=self.workers if remote else None,
        )  # fmt: skip
        if bridge.stopped_at is not None:  # hung up while the index row was written
            recording.close(0)
            raise RecordingRefused("the call ended before the recording could start")
        if isinstance(bridge, RemoteBridge):
            if not isinstance(recording, RemoteRecording):  # taken back meanwhile: not recorded
                recording.close(0)
                raise RecordingRefused("the call's media moved while the recording was started")
            call.recording, call.recording_id = recording, recording.recording_id
            call.recording_on_demand = True
            bridge.start_recording(recording)  # the worker's position 0 is now
            log.info(
                "recording_started_on_demand", recording_id=recording.recording_id, by=requested_by
            )
            return recording.recording_id
        sink = OnDemandRecording(recording, bridge.position(loop_now()))
        call.recording, call.recording_id = sink, sink.recording_id
        call.recording_on_demand = True
        bridge.sink = sink  # the tap rebases on the next packet of each leg
        log.info("recording_started_on_demand", recording_id=sink.recording_id, by=requested_by)
        return sink.recording_id

    def new_bridge(
        self, call: Call, other: RtpEndpoint, other_codec: str, recording: Any
    ) -> Bridge | RemoteBridge:
        """The caller bridged to ``other`` (an agent or a transfer target): in a media worker
        when [media] workers > 0 (``recording`` is then a RemoteRecording, or None), else here."""
        assert call.rtp is not None
        assert self.clock is not None
        self.listen_for_tones(call, False)  # bridged: the tones reach the far end as audio
        if self.workers is not None and (
            recording is None or isinstance(recording, RemoteRecording)
        ):
            bridge = RemoteBridge(
                self.workers, call.rtp, other, stats=self.stats, clock=self.clock,
                prompts=self.prompts, call_id=call.id, caller_codec=call.codec,
                agent_codec=other_codec, sink=recording,
            )  # fmt: skip
            call.media_home = bridge.home
            bridge.on_recording_lost = lambda lost, why: self._s.spawn(
                self._continue_recording(call, bridge, lost, why), call.id
            )
            return bridge
        return Bridge(
            call.rtp, other, stats=self.stats, caller_codec=call.codec,
            agent_codec=other_codec, sink=recording,
        )  # fmt: skip

    async def _continue_recording(
        self, call: Call, bridge: RemoteBridge, lost: RemoteRecording, why: str
    ) -> None:
        """The worker writing this call's recording died (or refused the call): the file so far
        is repaired by the recording service, and the rest of the call is recorded here in a new
        file whose index row ``continues`` the lost one, paused if the call's recording is
        (PCI). Nothing is recorded twice and nothing after the loss goes unrecorded, bar the
        moments the new row takes to write."""
        if self._s.recordings is None:
            return
        try:
            recording = await self._s.recordings.start(
                call.id, call.queue, call.agent_id, continues=lost.recording_id
            )
        except sa.exc.SQLAlchemyError as exc:
            self._s.recordings.index_errors += 1
            log.error("recording_continue_failed", call_id=call.id, reason=str(exc))
            return
        if recording is None:  # the queue is no longer configured
            return
        sink = OnDemandRecording(recording, bridge.position(loop_now()))
        if lost.paused:
            sink.pause(0)
        if call.bridge is bridge and call.recording is lost:
            call.recording = sink  # call.recording_id stays the first file's (the CDR's link)
        bridge.record_here(sink)  # closed at once if the call ended meanwhile
        log.warning(
            "recording_continued",
            call_id=call.id,
            recording_id=sink.recording_id,
            continues=lost.recording_id,
            why=why,
        )

    async def media_home(self, call: Call) -> None:
        """Wait (briefly) until a media worker has handed the caller's leg back from the last
        bridge (a transferred caller bridged again): a leg is carried by one process at a time."""
        home = call.media_home
        if home is not None and not home.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(home), MEDIA_HOME_TIMEOUT_S)

    def leg_of(self, call: Call) -> RtpEndpoint | None:
        """The bridged far leg's RTP endpoint (the agent's, or a transfer target's)."""
        bridge = call.bridge
        return None if bridge is None else bridge.legs[1]

    async def open_rtp(self, call: Call) -> RtpEndpoint:
        def on_media(event: MediaEvent) -> None:
            if isinstance(event, DtmfReceived):
                self.digit(call, event.digit, event.method)
            elif isinstance(event, MediaTimedOut):
                self._s.teardown.caller_gone(call, f"media timeout ({event.reason})")

        timeout = self._s.config.media.inactivity_timeout_s or None
        return await open_endpoint(
            self.ports,
            self.stats,
            host=self._s.listeners.endpoint.config.local_host,
            clock=self.clock,
            inactivity_timeout_s=timeout,
            on_event=on_media,
        )

    def _prompt(self, name: str) -> Any:
        prompt = self._prompt_by_name.get(name)
        if prompt is not None:
            return prompt
        prompt = self._prompt_by_name[name] = self.prompts.get(self._prompt_path(name))
        return prompt

    def _prompt_path(self, name: str) -> Path:
        extra = self._s.config.media.prompts_dir
        for base in ([Path(extra)] if extra else []) + [SHIPPED_PROMPTS]:
            path = base / f"{name}.wav"
            if path.exists():
                return path
        raise CallEnded(f"prompt {name!r} not found", "failed")

    async def play(self, call: Call, prompts: Sequence[str], *, barge_in: bool) -> str | None:
        if call.rtp is None or self.clock is None:
            return None
        playlist = Playlist(call.codec, [self._prompt(p) for p in prompts], barge_in=barge_in)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def finished(event: PlaybackFinished) -> None:
            if not done.done():
                done.set_result(event.interrupted_by_dtmf)

        self.stop_player(call)
        call.player = LegPlayer(call.rtp, playlist, self.clock, on_finished=finished)
        call.playback_done = done
        call.player.start(loop_now())
        barged = await done
        call.player = None
        if barged and not call.digits.empty():
            return call.digits.get_nowait()
        return None

    async def play_on(self, rtp: RtpEndpoint, codec: str, prompts: Sequence[str]) -> None:
        """Play ``prompts`` on one leg (an agent's whisper before a callback is dialled), to
        the end."""
        if self.clock is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def finished(_: PlaybackFinished) -> None:
            if not done.done():
                done.set_result(None)

        playlist = Playlist(codec, [self._prompt(p) for p in prompts], barge_in=False)
        player = LegPlayer(rtp, playlist, self.clock, on_finished=finished)
        player.start(loop_now())
        try:
            await done
        finally:
            player.stop()

    def stop_player(self, call: Call) -> None:
        if isinstance(call.bridge, RemoteBridge) and call.bridge.stopped_at is None:
            call.bridge.stop_play(0)
        if call.player is not None:
            call.player.stop()
            call.player = None
        if call.playback_done is not None and not call.playback_done.done():
            call.playback_done.set_result(False)

    def music_on_hold(self, call: Call, queue: str) -> None:
        if call.rtp is None or self.clock is None:
            return
        qcfg = next((q for q in self._s.config.queues if q.name == queue), None)
        music = qcfg.music_on_hold if qcfg is not None else "moh"  # a transferred call: no queue
        if isinstance(call.bridge, RemoteBridge) and call.bridge.stopped_at is None:
            # the caller's socket is the worker's while bridged: the music is played there
            call.bridge.play(0, call.codec, [], [str(self._prompt_path(music))])
            return
        playlist = Playlist(call.codec, [], loop=[self._prompt(music)])
        self.stop_player(call)
        call.player = LegPlayer(call.rtp, playlist, self.clock)
        call.player.start(loop_now())

    def listen_for_tones(self, call: Call, on: bool) -> None:
        """In-band DTMF detection on the caller's leg (``trunks[].dtmf``): on while a flow may
        read digits, for callers whose trunk sends tones ("inband", or "auto" without
        telephone-event in the answer); off while queued or bridged, so a leg pays for the
        Goertzel pass (sip.rtp.inband) only when a digit could matter."""
        rtp = call.rtp
        if rtp is None:
            return
        mode = call.trunk.dtmf
        tones = mode == "inband" or (mode == "auto" and rtp.dtmf_payload_type is None)
        rtp.detect_inband_dtmf(on and tones)

    def digit(self, call: Call, digit: str, method: str) -> None:
        if method == "info":  # the RTP endpoint counts its own (RFC 4733 and in-band) digits
            self.stats.dtmf_digits[method] = self.stats.dtmf_digits.get(method, 0) + 1
        call.digits.put_nowait(digit)
        barged = call.player is not None and call.player.on_dtmf()
        if barged and call.playback_done is not None and not call.playback_done.done():
            call.playback_done.set_result(True)

    async def open_leg(
        self,
        call: Call,
        name: str,
        on_event: Callable[[MediaEvent], None] | None = None,
        *,
        secure: bool = False,
        trunk: TrunkConfig | None = None,
    ) -> AgentLeg:
        """An outbound leg's RTP endpoint and SDP offer (in the caller's codec: no transcoding
        unless the far end insists). Its media events go to ``on_event`` (default: an agent's or
        transfer target's, whose media timeout ends the call). SRTP as ``trunk`` says when the
        leg goes through one, RTP/SAVP only when ``secure``. Raises OSError when no port can
        be had (``PortsExhaustedError``, counted and logged here once; the caller sends the call
        back to the queue or ends it)."""
        try:
            rtp = await open_endpoint(
                self.ports, self.stats, host=self._s.listeners.endpoint.config.local_host,
                clock=self.clock, inactivity_timeout_s=self._s.config.media.inactivity_timeout_s or None,
                on_event=on_event or (lambda e: self._agent_media(call, e)),
            )  # fmt: skip
        except PortsExhaustedError as exc:
            self._s.metrics.legs_without_port.inc()
            log.warning("leg_no_rtp_port", call_id=call.id, leg=name, error=str(exc))
            raise
        # [media] srtp: "offer" puts our SDES key on RTP/AVP, "require" offers RTP/SAVP only
        sdp = make_offer(
            rtp.local_address[0], rtp.port, (CODECS.get(call.codec, PCMU),),
            srtp=SrtpMode.REQUIRE if secure else srtp_mode(self._s.config, trunk),
        )  # fmt: skip
        return AgentLeg(call, name, rtp, sdp, rang_at=loop_now(), codec=call.codec, local_sdp=sdp)

    def _agent_media(self, call: Call, event: MediaEvent) -> None:
        if not isinstance(event, MediaTimedOut):
            return
        if call.agent_id is not None:
            self._s.teardown.caller_gone(
                call, f"agent media timeout ({event.reason})", side="agent"
            )
        elif call.transfer_answered_at is not None:
            self._s.teardown.caller_gone(
                call, f"transfer media timeout ({event.reason})", side="callee"
            )


def srtp_mode(config: Config, trunk: TrunkConfig | None) -> SrtpMode:
    """SRTP on a leg: its trunk's ``srtp`` when it has one, else ``[media] srtp``."""
    return SrtpMode((trunk.srtp if trunk is not None else "") or config.media.srtp)
