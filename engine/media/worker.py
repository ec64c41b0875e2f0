"""A media worker process: carries bridged SIP calls (relay, tap, recording) off the daemon's core.

How this works: with ``[media] workers = N`` the daemon starts N of these (``python -m
engine.media.worker FD FD2 ...``, through `engine.runtime.workers.WorkerPool`). When a call is bridged, the
daemon hands both legs over (`engine.media.offload.RemoteBridge`): each leg's `RtpEndpoint.detach`
gives its state (outbound stream, receiver statistics, latch, a DTMF digit in progress) and
duplicates of its RTP and RTCP sockets. The sockets travel on the fd channel (SCM_RIGHTS), the
state in an `Attach` message on the control stream. Here `RtpEndpoint.adopt` carries each leg on
its own socket, and the very same `sip.media.Bridge` relays, rewrites and taps into a
`recordings.RecordingWriter` running in this process (its keyring loaded here from the same
source). Ports stay the daemon's: no second range, no new SDP, nothing the far ends can notice.

While the call is bridged the daemon drives it by messages: hold (`SetRelay`, music on hold with
`Play`/`StopPlay`, `SetHeld`), PCI pause (`PauseRecording`, `PauseTap`) and on-demand recording
(`StartRecording`), and a supervisor listening, whispering or barging: `AttachMonitor` hands
the supervisor's leg over as `Attach` does the call's, a `sip.media.Monitor` mixes it into the
bridge on this process's clock, `SetMonitorMode` switches it, and `DetachMonitor` (or `Stop`)
hands the leg back in `MonitorDetached`. DTMF and media timeouts come back as `Digit` and `TimedOut`, a finished
recording as `RecordingDone` (the daemon completes its index row), the process's media counters as
`Stats` deltas every second. `Stop` ends the bridge (the recording is closed at the bridged
length), hands the legs' state back in `Stopped`, and the daemon carries them again (a transferred
caller continues with the same stream).

Messages are handled one after the other, in order: an `Attach` is complete before the next
message of the call is looked at. A failure with one call (a bug) is reported as `Failed` and
the daemon takes the call back; it never ends the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pickle
import socket
import sys
from typing import Any

import msgspec
import structlog

import recordings as rec
from engine.media.protocol import (
    STATS_INTERVAL_S,
    Attach,
    AttachMonitor,
    DetachMonitor,
    Digit,
    Failed,
    MonitorDetached,
    PauseRecording,
    PauseTap,
    Play,
    RecordingDone,
    Rekey,
    SetHeld,
    SetMonitorMode,
    SetRelay,
    StartRecording,
    Stop,
    Stopped,
    StopPlay,
    TimedOut,
    ToWorker,
    stats_delta,
)
from engine.recording.spec import RecordingSpec
from engine.runtime.workers import (
    MAX_FDS,
    ChannelClosed,
    Ready,
    control_stream,
    encode_frame,
    read_frame,
    worker_main,
)
from recordings import OnDemandRecording
from sip.media import Bridge, LegPlayer, MediaClock, MediaStats, Monitor
from sip.media.endpoint import DtmfReceived, EndpointState, MediaEvent, MediaTimedOut, RtpEndpoint
from sip.media.prompts import PromptCache
from sip.rtp.g711 import DECODERS
from sip.rtp.playback import Playlist
from sip.rtp.srtp import SrtpContext

log = structlog.stdlib.get_logger("acd.media")

# -- the worker ------------------------------------------------------------------------------------


class _Call:
    __slots__ = ("bridge", "codecs", "legs", "monitor", "players", "recording")

    def __init__(self, legs: list[RtpEndpoint], bridge: Bridge, codecs: tuple[str, str]) -> None:
        self.legs = legs
        self.bridge = bridge
        self.codecs = codecs
        self.players: list[LegPlayer | None] = [None, None]
        self.recording: Any = None  # rec.Recording or OnDemandRecording
        self.monitor: Monitor | None = None  # a supervisor mixed in (its leg is legs[2])


class _Worker:
    """The calls of one worker process and the control stream that drives them."""

    def __init__(self, writer: asyncio.StreamWriter, fd_sock: socket.socket) -> None:
        self._writer = writer
        self._fd_sock = fd_sock
        self._loop = asyncio.get_running_loop()
        self.stats = MediaStats()
        self._reported = MediaStats()
        self.clock = MediaClock(self._loop, self.stats)
        self._calls: dict[int, _Call] = {}
        self._prompts = PromptCache()
        self._writers: dict[str, rec.RecordingWriter] = {}

    def send(self, message: msgspec.Struct) -> None:
        if not self._writer.is_closing():
            self._writer.write(encode_frame(message))

    async def serve(self, reader: asyncio.StreamReader) -> None:
        self.clock.start()
        # What the imports made lives as long as the process: out of the collector's full scans,
        # which otherwise stall the relay for tens of ms (bench_media.py: p99 jitter 30 -> 6 ms).
        gc.collect()
        gc.freeze()
        self.send(Ready(os.getpid()))
        try:
            async with asyncio.TaskGroup() as tasks:
                reporter = tasks.create_task(self._report_stats())
                await self._read_until_closed(reader)
                reporter.cancel()  # (on an error the group cancels it)
        finally:
            for sid in list(self._calls):
                self._drop(sid)
            for writer in self._writers.values():
                await asyncio.to_thread(writer.stop)
            self.clock.stop()

    async def _read_until_closed(self, reader: asyncio.StreamReader) -> None:
        decoder = msgspec.msgpack.Decoder(ToWorker)
        while True:
            try:
                message = await read_frame(reader, decoder)
            except ChannelClosed as exc:
                log.info("media_worker_channel_closed", reason=str(exc))
                return
            try:
                await self._dispatch(message)
            except Exception as exc:  # our bug: it ends that call's stay here, not the worker
                log.exception("media_worker_error", sid=message.sid)
                self._drop(message.sid)
                self.send(Failed(message.sid, f"internal error in worker: {exc!r}"))

    async def _dispatch(self, message: Any) -> None:
        if isinstance(message, Attach):
            await self._attach(message)
            return
        call = self._calls.get(message.sid)
        if isinstance(message, AttachMonitor):
            await self._attach_monitor(message, call)
            return
        if call is None:
            return  # failed earlier: the daemon has taken it back
        now = self._loop.time()
        bridge = call.bridge
        if isinstance(message, SetRelay):
            bridge.set_relay(
                now,
                caller_to_agent=message.caller_to_agent,
                agent_to_caller=message.agent_to_caller,
            )
        elif isinstance(message, Play):
            self._stop_player(call, message.leg)
            playlist = Playlist(
                message.codec,
                [self._prompts.get(p) for p in message.prompts],
                loop=[self._prompts.get(p) for p in message.loop],
            )
            player = LegPlayer(call.legs[message.leg], playlist, self.clock)
            call.players[message.leg] = player
            player.start(now)
        elif isinstance(message, StopPlay):
            self._stop_player(call, message.leg)
        elif isinstance(message, SetHeld):
            call.legs[message.leg].set_held(message.held, now)
        elif isinstance(message, PauseRecording):
            if call.recording is not None:
                position = bridge.position(now)
                if message.paused:
                    call.recording.pause(position)
                else:
                    call.recording.resume(position)
        elif isinstance(message, PauseTap):
            if message.reason:
                bridge.pause_recording(now, message.reason)
            else:
                bridge.resume_recording(now)
        elif isinstance(message, StartRecording):
            recording = self._start_recording(message.spec)
            sink = OnDemandRecording(recording, bridge.position(now))
            call.recording = bridge.sink = sink  # the tap rebases on each leg's next packet
        elif isinstance(message, SetMonitorMode):
            if call.monitor is not None:
                call.monitor.set_mode(message.mode, now)
        elif isinstance(message, DetachMonitor):
            self._detach_monitor(message.sid, call, now)
        elif isinstance(message, Rekey):
            if 0 <= message.leg < len(call.legs):
                state = pickle.loads(message.srtp_rx)  # noqa: S301 (the daemon's own, as in Attach)
                call.legs[message.leg].srtp_rx = SrtpContext.restore(state)
        elif isinstance(message, Stop):
            del self._calls[message.sid]
            self._detach_monitor(message.sid, call, now)
            bridge.stop(now)
            for leg in (0, 1):
                self._stop_player(call, leg)
            states = []
            for endpoint in call.legs:
                state, socks = endpoint.detach(park=False)
                for sock in socks:
                    sock.close()
                states.append(pickle.dumps(state))
            self.send(Stopped(message.sid, states[0], states[1]))

    async def _attach(self, message: Attach) -> None:
        _, fds, _, _ = socket.recv_fds(self._fd_sock, 16, MAX_FDS)
        socks = [socket.socket(fileno=fd) for fd in fds]
        if len(socks) != 4:
            for sock in socks:
                sock.close()
            self.send(Failed(message.sid, f"expected 4 sockets, got {len(socks)}"))
            return
        sid = message.sid
        legs: list[RtpEndpoint] = []
        try:
            for index, blob in enumerate((message.caller, message.agent)):
                # the daemon's own state, pickled by this very code (a private socketpair)
                state = pickle.loads(blob)  # noqa: S301
                if not isinstance(state, EndpointState):
                    raise TypeError(f"not an EndpointState: {type(state).__name__}")
                legs.append(
                    await RtpEndpoint.adopt(
                        state,
                        socks[2 * index : 2 * index + 2],
                        stats=self.stats,
                        clock=self.clock,
                        on_event=self._events(sid, index),
                    )
                )
        except BaseException:
            for endpoint in legs:
                _let_go(endpoint)
            for sock in socks:
                sock.close()
            raise
        sink = None
        recording = None
        if message.recording is not None:
            recording = sink = self._start_recording(message.recording)
        bridge = Bridge(
            legs[0],
            legs[1],
            stats=self.stats,
            caller_codec=message.caller_codec,
            agent_codec=message.agent_codec,
            sink=sink,
        )
        call = _Call(legs, bridge, (message.caller_codec, message.agent_codec))
        call.recording = recording
        self._calls[sid] = call
        now = self._loop.time()
        bridge.start(now)
        if not (message.caller_to_agent and message.agent_to_caller):
            bridge.set_relay(
                now,
                caller_to_agent=message.caller_to_agent,
                agent_to_caller=message.agent_to_caller,
            )
        log.debug("media_worker_attached", call_id=message.call_id, sid=sid)

    async def _attach_monitor(self, message: AttachMonitor, call: _Call | None) -> None:
        _, fds, _, _ = socket.recv_fds(self._fd_sock, 16, MAX_FDS)
        socks = [socket.socket(fileno=fd) for fd in fds]
        if call is None or call.monitor is not None or len(socks) != 2:
            for sock in socks:
                sock.close()
            if call is not None:  # a daemon bug: let it carry the whole call again
                self._drop(message.sid)
                self.send(Failed(message.sid, "a supervisor's leg could not be taken"))
            return
        state = pickle.loads(message.supervisor)  # noqa: S301 (the daemon's own, as in Attach)
        if not isinstance(state, EndpointState):
            for sock in socks:
                sock.close()
            raise TypeError(f"not an EndpointState: {type(state).__name__}")
        try:
            leg = await RtpEndpoint.adopt(
                state, socks, stats=self.stats, clock=self.clock,
                on_event=self._events(message.sid, 2),
            )  # fmt: skip
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        caller_codec, agent_codec = call.codecs
        call.legs.append(leg)
        call.monitor = Monitor(
            call.bridge, leg, self.clock, mode=message.mode, caller_codec=caller_codec,
            agent_codec=agent_codec, supervisor_codec=message.codec,
        )  # fmt: skip
        call.monitor.start(self._loop.time())

    def _detach_monitor(self, sid: int, call: _Call, now: float) -> None:
        """The supervisor leaves (or the call ends): the bridge relays both ways again and the
        supervisor's leg goes back to the daemon."""
        monitor, call.monitor = call.monitor, None
        if monitor is None:
            return
        monitor.stop(now)
        leg = call.legs.pop()
        state, socks = leg.detach(park=False)
        for sock in socks:
            sock.close()
        self.send(MonitorDetached(sid, pickle.dumps(state)))

    def _events(self, sid: int, leg: int) -> Any:
        def on_event(event: MediaEvent) -> None:
            if isinstance(event, DtmfReceived):
                call = self._calls.get(sid)
                player = call.players[leg] if call is not None else None
                if player is not None:
                    player.on_dtmf()
                self.send(Digit(sid, leg, event.digit, event.duration_ms, event.method))
            elif isinstance(event, MediaTimedOut):
                self.send(TimedOut(sid, leg, event.reason, event.idle_s))

        return on_event

    def _start_recording(self, spec: RecordingSpec) -> rec.Recording:
        writer = self._writers.get(spec.key_file)
        if writer is None:
            keyring = None
            if spec.encrypt or spec.key_file:
                keyring = (
                    rec.Keyring.from_file(spec.key_file)
                    if spec.key_file
                    else rec.Keyring.from_env()
                )
            writer = rec.RecordingWriter(
                dict(DECODERS),
                rec.WriterConfig(flush_interval_s=spec.flush_interval_s),
                keyring=keyring,
            )
            writer.start()
            self._writers[spec.key_file] = writer
        recording = writer.start_recording(
            spec.recording_id,
            spec.path,
            fmt=rec.RecordingFormat(spec.format),
            encrypt=spec.encrypt,
            call_id=spec.call_id,
        )
        recording.result.add_done_callback(self._recording_done)
        return recording

    def _recording_done(self, future: Any) -> None:
        # on the writer's thread
        if future.cancelled() or future.exception() is not None:
            return
        result = future.result()
        message = RecordingDone(result.recording_id, pickle.dumps(result))
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self.send, message)

    def _stop_player(self, call: _Call, leg: int) -> None:
        player = call.players[leg]
        if player is not None:
            player.stop()
            call.players[leg] = None

    def _drop(self, sid: int) -> None:
        """Let go of a call without handing its state back (it failed, or we are exiting)."""
        call = self._calls.pop(sid, None)
        if call is None:
            return
        now = self._loop.time()
        with contextlib.suppress(Exception):
            if call.monitor is not None:
                call.monitor.stop(now)
            call.bridge.stop(now)
        for leg, endpoint in enumerate(call.legs):
            if leg < 2:
                self._stop_player(call, leg)
            _let_go(endpoint)

    def writer_error(self) -> str:
        for writer in self._writers.values():
            if not writer.healthy():
                return str(writer.last_error or "recording writes failing")
        return ""

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            self.send(stats_delta(self.stats, self._reported, self.writer_error()))


def _let_go(endpoint: RtpEndpoint) -> None:
    """Stop carrying an adopted leg without handing anything back (the daemon still owns it)."""
    with contextlib.suppress(RuntimeError):
        for sock in endpoint.detach(park=False)[1]:
            sock.close()


async def _serve(fds: list[int]) -> None:
    fd_sock = socket.socket(fileno=fds[1])
    fd_sock.setblocking(False)
    with fd_sock:
        async with control_stream(fds[0]) as (reader, writer):
            await _Worker(writer, fd_sock).serve(reader)


def main(argv: list[str]) -> int:
    """``python -m engine.media.worker FD FD2 LOG_LEVEL LOG_FORMAT EVENT_LOOP`` (the daemon runs
    it with ``[media] workers > 0``)."""
    return worker_main(
        argv, module="engine.media.worker", n_fds=2, serve=_serve, context_key="media_worker"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
