"""The daemon's side of the SIP media workers: bridged calls carried by other processes.

One core relays about 380 bridged, tapped and recorded calls here (benchmarks/bench_media.py:
``sendmsg``/``recvmsg`` and the Python around them per packet, nothing left to batch). With
``[media] workers = N`` a bridged call's media runs in one of N worker processes
(engine/media/worker.py, whose docstring tells how a call is handed over) and the daemon's loop
keeps signalling, routing, flows, prompts and music for callers in queue.

`RemoteBridge` has `sip.media.Bridge`'s API, so the call layer drives either the same way, plus
`play`/`stop_play`/`set_held` for hold (the legs' sockets are the worker's while bridged, so the
caller's music on hold is played there), and `add_monitor` for a supervisor: its leg is handed
to the same worker, which mixes it in (`RemoteMonitor` has `sip.media.Monitor`'s API; carried
here, the call gets a local `Monitor`). `RemoteRecording` stands for a recording the worker
writes: the daemon still writes its index row first and completes it from `RecordingDone`.

When no worker is up, when one refuses a call (`Failed`) or dies, the bridge is carried here:
the legs are reattached (from the state the worker handed back, else from the daemon's own) and
a local `Bridge` relays them with the same hold state (and a local `Monitor` mixes the
supervisor in, if one is on the call). A call is never lost with its worker, nor
its recording: the file the worker wrote is repaired up to its death (`RecordingLost`; the
recording service completes its row at once), and `RemoteBridge.on_recording_lost` lets the call
layer record the rest of the call here, in a new file that ``continues`` the first
(`record_here`; still paused for PCI if it was).

A call with an SRTP leg (``[media] srtp``) goes to a worker like any other: `RtpEndpoint.detach`
exports its contexts (key, ROCs, replay windows) into the leg's state, which crosses only the
socket pair to our own child process; a re-key in a re-offer follows with `Rekey`.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

import recordings as rec
from engine.media.protocol import (
    Attach,
    AttachMonitor,
    DetachMonitor,
    Digit,
    Failed,
    FromWorker,
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
    Stats,
    Stop,
    Stopped,
    StopPlay,
    TimedOut,
    add_stats,
)
from engine.recording.service import RecordingLost
from engine.recording.spec import RecordingSpec
from engine.runtime.workers import WorkerPool, WorkerProcess, settle
from sip.media import Bridge, LegPlayer, MediaClock, MediaStats, Monitor, RecordingSink
from sip.media.endpoint import DtmfReceived, EndpointState, MediaTimedOut, RtpEndpoint
from sip.media.prompts import PromptCache
from sip.rtp.playback import Playlist

log = structlog.stdlib.get_logger("acd.media")

SAMPLE_RATE = 8000
WORKER_DIED = "media worker died"
#: At shutdown: how long a worker may take to finish the recordings of the calls that just ended.
RECORDING_CLOSE_TIMEOUT_S = 5.0
#: At shutdown: how long legs still coming home (a take-back) may take before they are cancelled.
#: Reattaching a leg is two ``create_datagram_endpoint`` calls on sockets it already holds (well
#: under a millisecond): this long means it is stuck.
TAKE_BACK_CLOSE_TIMEOUT_S = 1.0


class MediaWorkerGone(Exception):
    """No media worker can take the call (none running, shutting down)."""


class RemoteRecording:
    """A recording written by a media worker; its result comes back as `RecordingDone`."""

    __slots__ = ("_bridge", "_paused", "result", "spec")

    def __init__(self, spec: RecordingSpec, result: asyncio.Future[rec.RecordingResult]) -> None:
        self.spec = spec
        self.result = result
        self._paused = False
        self._bridge: RemoteBridge | None = None

    @property
    def recording_id(self) -> str:
        return self.spec.recording_id

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, position: int) -> None:
        del position  # the worker takes its own bridge's position
        self._paused = True
        if self._bridge is not None:
            self._bridge.send(PauseRecording(0, True))

    def resume(self, position: int) -> None:
        del position
        self._paused = False
        if self._bridge is not None:
            self._bridge.send(PauseRecording(0, False))

    def close(self, end_position: int) -> None:
        """Never fed (the call ended before its bridge took it): nothing was written."""
        del end_position
        settle(self.result, exc=RuntimeError("the call ended before the recording started"))


class RemoteMonitor:
    """A supervisor on a `RemoteBridge`'s call, with `sip.media.Monitor`'s API: mixed by the
    call's worker, or by a local `Monitor` while the call is carried here."""

    __slots__ = ("_bridge", "codec", "in_worker", "local", "mode", "running", "supervisor")

    def __init__(self, bridge: RemoteBridge, supervisor: RtpEndpoint, codec: str, mode: str):
        self._bridge = bridge
        self.supervisor = supervisor
        self.codec = codec
        self.mode = mode
        self.running = True
        self.in_worker = False
        self.local: Monitor | None = None

    def set_mode(self, mode: str, now: float) -> None:
        self.mode = mode
        if self.local is not None:
            self.local.set_mode(mode, now)
        elif self.in_worker:
            self._bridge.send(SetMonitorMode(0, mode))

    def stop(self, now: float) -> None:
        """Leave the call (idempotent): the bridge relays both ways again; a leg the worker
        carries comes home with `MonitorDetached`."""
        if not self.running:
            return
        self.running = False
        if self.local is not None:
            self.local.stop(now)
            self.local = None
        if self.in_worker:
            self.in_worker = False
            self._bridge.send(DetachMonitor(0))

    def start_local(self, bridge: Bridge, clock: MediaClock, codecs: tuple[str, str]) -> None:
        if not self.running or self.supervisor.closed or self.supervisor.detached:
            return
        self.local = Monitor(
            bridge, self.supervisor, clock, mode=self.mode, caller_codec=codecs[0],
            agent_codec=codecs[1], supervisor_codec=self.codec,
        )  # fmt: skip
        self.local.start(asyncio.get_running_loop().time())


class MediaWorkers:
    """The pool of SIP media workers, their metrics, and the recordings they write."""

    def __init__(
        self,
        count: int,
        registry: CollectorRegistry,
        stats: MediaStats,
        *,
        args: list[str],
        on_unexpected: Callable[[], None],
    ) -> None:
        self.stats = stats
        self.workers_up = Gauge(
            "acd_media_workers",
            "SIP media worker processes running ([media] workers).",
            registry=registry,
        )
        self.restarts = Counter(
            "acd_media_worker_restarts_total",
            "SIP media worker processes that died and were restarted.",
            registry=registry,
        )
        self.handoffs = Counter(
            "acd_media_handoffs_total",
            "Bridged calls handed to a media worker, by outcome (carried; local: no worker was "
            "up or one refused the call; taken_back: its worker died while carrying it).",
            ["outcome"],
            registry=registry,
        )
        self.pool = WorkerPool(
            "media",
            "engine.media.worker",
            count,
            msgspec.msgpack.Decoder(FromWorker),
            args=args,
            workers_gauge=self.workers_up,
            restarts=self.restarts,
            gone=MediaWorkerGone,
            on_unexpected=on_unexpected,
            on_other=self._other,
            fd_channel=True,
        )
        self._recordings: dict[str, RemoteRecording] = {}
        self._writer_errors: dict[int, str] = {}
        #: Bridges' legs being reattached here (`take_back`): `close` waits for them.
        self._taking_back: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.pool.start()

    async def close(self) -> None:
        """Shutdown, after the calls ended: recordings still being finished by a worker get
        `RECORDING_CLOSE_TIMEOUT_S` to come back, then the workers stop, and the legs they still
        carried come home (`TAKE_BACK_CLOSE_TIMEOUT_S`)."""
        pending = [r.result for r in self._recordings.values()]
        if pending:
            await asyncio.wait(pending, timeout=RECORDING_CLOSE_TIMEOUT_S)
        await self.pool.close()  # the calls it carried come home: more take-backs
        await self._end_take_backs()
        for recording in self._recordings.values():
            settle(recording.result, exc=RuntimeError("the daemon stopped its media workers"))
        self._recordings.clear()

    def not_ready(self) -> str | None:
        return self.pool.not_ready()

    def take_back(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a bridge's take-back (its legs reattached here), owned by the pool: `close` waits
        for it, and cancels it after `TAKE_BACK_CLOSE_TIMEOUT_S`."""
        task = asyncio.get_running_loop().create_task(work)
        self._taking_back.add(task)
        task.add_done_callback(self._taking_back.discard)

    async def _end_take_backs(self) -> None:
        if not self._taking_back:
            return
        _, stuck = await asyncio.wait(set(self._taking_back), timeout=TAKE_BACK_CLOSE_TIMEOUT_S)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck)

    def writer_error(self) -> str | None:
        """A worker's recording writer is failing (for /readyz), or None."""
        errors = [f"media worker {slot}: {e}" for slot, e in self._writer_errors.items() if e]
        return "; ".join(errors) or None

    def new_recording(self, spec: RecordingSpec) -> RemoteRecording:
        future: asyncio.Future[rec.RecordingResult] = asyncio.get_running_loop().create_future()
        recording = RemoteRecording(spec, future)
        self._recordings[spec.recording_id] = recording
        future.add_done_callback(lambda _: self._recordings.pop(spec.recording_id, None))
        return recording

    def _other(self, worker: WorkerProcess, message: Any) -> None:
        if isinstance(message, Stats):
            add_stats(self.stats, message)
            self._writer_errors[worker.slot] = message.writer_error
        elif isinstance(message, RecordingDone):
            recording = self._recordings.pop(message.recording_id, None)
            if recording is not None:
                # our own worker's RecordingResult, over a private socketpair
                result = pickle.loads(message.result)  # noqa: S301
                settle(recording.result, result)

    def recording_lost(self, recording: RemoteRecording, why: str) -> None:
        """Its worker will never finish it: the recording service repairs what was written."""
        self._recordings.pop(recording.recording_id, None)
        spec = recording.spec
        settle(
            recording.result,
            exc=RecordingLost(why, spec.recording_id, spec.path, spec.format, spec.call_id),
        )


class RemoteBridge:
    """`sip.media.Bridge`'s API for a call whose media a worker carries (see the module doc)."""

    def __init__(
        self,
        workers: MediaWorkers,
        caller: RtpEndpoint,
        agent: RtpEndpoint,
        *,
        stats: MediaStats,
        clock: MediaClock,
        prompts: PromptCache,
        call_id: str,
        caller_codec: str = "PCMU",
        agent_codec: str = "PCMU",
        sink: RemoteRecording | None = None,
    ) -> None:
        self.legs = [caller, agent]
        self._workers = workers
        self._stats = stats
        self._clock = clock
        self._prompts = prompts
        self._call_id = call_id
        self._codecs = (caller_codec, agent_codec)
        self.recording = sink
        self.started_at = 0.0
        self.stopped_at: float | None = None
        self._worker: WorkerProcess | None = None
        self._sid = 0
        # What the call layer asked for, replayed on a local bridge if the worker goes away.
        self._relay = (True, True)
        self._tap_paused: str | None = None
        self._music: list[tuple[str, list[str], list[str]] | None] = [None, None]
        self._local: Bridge | None = None
        self._players: list[LegPlayer | None] = [None, None]
        #: Done when the legs are carried by this process again (after `stop`, or a take-back):
        #: a new bridge of the same leg must wait for it.
        self.home: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: The call layer's hook for a recording that ended early with its worker (the recording
        #: and why): it starts a new one here and hands it to `record_here`.
        self.on_recording_lost: Callable[[RemoteRecording, str], object] | None = None
        self._here_sink: RecordingSink | None = None
        #: A supervisor on the call, and supervisors' legs the worker carries, in the order they
        #: went (a leaving one is still there until its `MonitorDetached`).
        self._monitor: RemoteMonitor | None = None
        self._monitors_away: list[RtpEndpoint] = []

    # -- the Bridge API ------------------------------------------------------------------------------

    @property
    def carried_by(self) -> int | None:
        """PID of the worker carrying the call, None when carried here."""
        return self._worker.pid if self._worker is not None else None

    def start(self, now: float) -> None:
        self.started_at = now
        assigned = self._workers.pool.assign_now(self)
        if assigned is None:
            self._workers.handoffs.labels(outcome="local").inc()
            self._start_local()
            return
        worker, sid = assigned
        states: list[EndpointState] = []
        socks = []
        try:
            for leg in self.legs:
                state, handed = leg.detach()
                states.append(state)
                socks.extend(handed)
        except RuntimeError as exc:  # a leg not carried here (closed meanwhile): stay local
            for sock in socks:
                sock.close()
            worker.clients.pop(sid, None)
            self._workers.handoffs.labels(outcome="local").inc()
            self._take_back(f"handoff failed: {exc}")
            return
        self._worker, self._sid = worker, sid
        if self.recording is not None:
            self.recording._bridge = self
        message = Attach(
            sid,
            self._call_id,
            pickle.dumps(states[0]),
            pickle.dumps(states[1]),
            self._codecs[0],
            self._codecs[1],
            True,
            True,
            self.recording.spec if self.recording is not None else None,
        )
        try:
            worker.send_with_fds(socks, message)
        except OSError as exc:
            worker.clients.pop(sid, None)
            self._worker = None
            self._workers.handoffs.labels(outcome="local").inc()
            self._take_back(f"handoff failed: {exc}")
            return
        self._workers.handoffs.labels(outcome="carried").inc()

    def stop(self, now: float) -> int:
        if self.stopped_at is None:
            self.stopped_at = now
            if self._worker is not None:
                self.send(Stop(0))  # the legs come back with Stopped
            elif self._local is not None:
                self._local.stop(now)  # closes a recording that continues here
                self._stop_players()
            elif self._here_sink is not None:  # still reattaching the legs
                self._here_sink.close(self.position(now))
        return round((self.stopped_at - self.started_at) * SAMPLE_RATE)

    def set_relay(self, now: float, *, caller_to_agent: bool, agent_to_caller: bool) -> None:
        if self.stopped_at is not None:
            return
        self._relay = (caller_to_agent, agent_to_caller)
        if self._local is not None:
            self._local.set_relay(
                now, caller_to_agent=caller_to_agent, agent_to_caller=agent_to_caller
            )
        else:
            self.send(SetRelay(0, caller_to_agent, agent_to_caller))

    def position(self, now: float) -> int:
        return max(0, round((now - self.started_at) * SAMPLE_RATE))

    @property
    def recording_paused_for(self) -> str | None:
        return self._tap_paused

    def pause_recording(self, now: float, reason: str = "paused") -> None:
        # Kept even with no recording at the moment: one that continues a lost recording
        # must start paused (PCI) if the call layer paused it meanwhile.
        if self._tap_paused is None:
            self._tap_paused = reason
            if self._local is not None:
                self._local.pause_recording(now, reason)
            elif self.recording is not None:
                self.send(PauseTap(0, reason))

    def resume_recording(self, now: float) -> None:
        if self._tap_paused is not None:
            self._tap_paused = None
            if self._local is not None:
                self._local.resume_recording(now)
            elif self.recording is not None:
                self.send(PauseTap(0, ""))

    def start_recording(self, recording: RemoteRecording) -> None:
        """On demand: the worker records from now on (its position 0 is now)."""
        self.recording = recording
        if self._worker is None:
            self._lose_recording("the call's media worker is gone")
            return
        recording._bridge = self
        self.send(StartRecording(0, recording.spec))

    def record_here(self, sink: RecordingSink) -> None:
        """Record the rest of the call in this process (the worker's recording was lost): the
        local bridge's tap feeds ``sink``, paused if the call layer paused the recording."""
        if self.stopped_at is not None:  # hung up meanwhile
            sink.close(self.position(self.stopped_at))
            return
        self._here_sink = sink
        local = self._local
        if local is not None:
            local.sink = sink
            if self._tap_paused is not None:
                local.pause_recording(asyncio.get_running_loop().time(), self._tap_paused)

    # -- a supervisor --------------------------------------------------------------------------

    def add_monitor(self, supervisor: RtpEndpoint, codec: str, mode: str) -> RemoteMonitor:
        """A supervisor joins in ``mode``: its leg goes to the call's worker, which mixes it in;
        carried here, a local `Monitor` does. One at a time (RuntimeError for a second)."""
        if self._monitor is not None and self._monitor.running:
            raise RuntimeError("the call already has a supervisor")
        monitor = self._monitor = RemoteMonitor(self, supervisor, codec, mode)
        if self.stopped_at is not None:
            monitor.running = False
        elif self._worker is not None:
            self._monitor_to_worker(monitor)
        elif self._local is not None:
            monitor.start_local(self._local, self._clock, self._codecs)
        # else the legs are coming home: `_start_local` starts it
        return monitor

    def _monitor_to_worker(self, monitor: RemoteMonitor) -> None:
        worker = self._worker
        assert worker is not None
        try:
            state, socks = monitor.supervisor.detach()
        except RuntimeError:  # the leg closed meanwhile
            monitor.running = False
            return
        self._monitors_away.append(monitor.supervisor)
        monitor.in_worker = True
        message = AttachMonitor(self._sid, pickle.dumps(state), monitor.codec, monitor.mode)
        try:
            worker.send_with_fds(socks, message)
        except OSError as exc:
            self._take_back(f"monitor handoff failed: {exc}")

    def _monitor_home(self, state: EndpointState | None) -> None:
        """The oldest supervisor's leg back from the worker: carried here again, and closed at
        once if the call layer closed it meanwhile (its RTCP BYE first)."""
        if self._monitors_away:
            leg = self._monitors_away.pop(0)
            if leg.detached:
                self._workers.take_back(leg.reattach(state))

    # -- hold ------------------------------------------------------------------------------------

    def play(self, leg: int, codec: str, prompts: list[str], loop: list[str]) -> None:
        """Play files on ``leg`` (0 caller, 1 agent): music on hold."""
        self._music[leg] = (codec, prompts, loop)
        if self._local is not None:
            self._play_here(leg)
        else:
            self.send(Play(0, leg, codec, prompts, loop))

    def stop_play(self, leg: int) -> None:
        if self._music[leg] is None:
            return
        self._music[leg] = None
        if self._local is not None:
            player = self._players[leg]
            if player is not None:
                player.stop()
                self._players[leg] = None
        else:
            self.send(StopPlay(0, leg))

    @property
    def playing(self) -> list[bool]:
        return [m is not None for m in self._music]

    def set_held(self, leg: int, held: bool, now: float) -> None:
        if self._local is not None or self._worker is None:
            self.legs[leg].set_held(held, now)
        else:
            self.send(SetHeld(0, leg, held))

    # -- the worker's side ---------------------------------------------------------------------

    def rekey(self, leg: RtpEndpoint) -> None:
        """``leg``'s peer re-keyed (the call layer set its new ``srtp_rx`` here): the worker
        carrying it unprotects with the new key from now on."""
        if leg.srtp_rx is None:
            return
        away = self._monitors_away
        index = self.legs.index(leg) if leg in self.legs else 2 if away and away[-1] is leg else -1
        if index >= 0:
            self.send(Rekey(0, index, pickle.dumps(leg.srtp_rx.export())))

    def send(self, message: Any) -> None:
        """A message about this call to its worker (``sid`` filled in); dropped once carried here."""
        if self._worker is not None:
            message.sid = self._sid
            self._worker.send(message)

    def received(self, message: Any) -> None:
        if isinstance(message, Digit):
            self.legs[message.leg].on_event(
                DtmfReceived(message.digit, message.duration_ms, message.method)
            )
        elif isinstance(message, TimedOut):
            away = self._monitors_away
            leg = self.legs[message.leg] if message.leg < 2 else away[-1] if away else None
            if leg is not None:
                leg.on_event(MediaTimedOut(message.reason, message.idle_s))
        elif isinstance(message, MonitorDetached):
            self._monitor_home(pickle.loads(message.supervisor))  # noqa: S301 (as Stopped)
        elif isinstance(message, Stopped):
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.clients.pop(self._sid, None)
            states = [pickle.loads(message.caller), pickle.loads(message.agent)]  # noqa: S301
            self._reattach(states)
        elif isinstance(message, Failed):
            log.error("media_handoff_failed", call_id=self._call_id, reason=message.reason)
            self._take_back(message.reason)

    def worker_died(self) -> None:
        self._take_back(WORKER_DIED)

    def detach(self) -> None:
        """The pool is shutting down: the legs come home so the call can still be hung up."""
        self._take_back("media workers stopped")

    # -- carrying the call here ----------------------------------------------------------------

    def _take_back(self, why: str) -> None:
        carried = self._worker is not None
        if self._worker is not None:
            self._worker.clients.pop(self._sid, None)
        self._worker = None
        if carried and self.stopped_at is None:
            self._workers.handoffs.labels(outcome="taken_back").inc()
        log.warning("media_taken_back", call_id=self._call_id, reason=why)
        self._lose_recording(why)
        if self._monitor is not None:
            self._monitor.in_worker = False
        if any(leg.detached for leg in self.legs):
            self._reattach([None, None])  # the daemon's own (older) state; a new source marked
        else:
            while self._monitors_away:
                self._monitor_home(None)
            self._start_local()

    def _lose_recording(self, why: str) -> None:
        lost, self.recording = self.recording, None
        if lost is None:
            return
        self._workers.recording_lost(lost, why)
        if self.stopped_at is None and self.on_recording_lost is not None:
            self.on_recording_lost(lost, why)

    def _reattach(self, states: list[Any]) -> None:
        async def reattach() -> None:
            try:
                for leg, state in zip(self.legs, states, strict=True):
                    await leg.reattach(state)
                away, self._monitors_away = self._monitors_away, []
                for supervisor in away:  # the worker never handed them back
                    if supervisor.detached:
                        await supervisor.reattach(None)
            finally:
                settle(self.home)
            if self.stopped_at is None:
                self._start_local()

        self._workers.take_back(reattach())

    def _start_local(self) -> None:
        settle(self.home)
        now = asyncio.get_running_loop().time()
        bridge = Bridge(
            self.legs[0],
            self.legs[1],
            stats=self._stats,
            caller_codec=self._codecs[0],
            agent_codec=self._codecs[1],
            sink=self._here_sink,
        )
        bridge.start(now)
        bridge.started_at = self.started_at
        if self._tap_paused is not None:
            bridge.pause_recording(now, self._tap_paused)
        caller_to_agent, agent_to_caller = self._relay
        if not (caller_to_agent and agent_to_caller):
            bridge.set_relay(now, caller_to_agent=caller_to_agent, agent_to_caller=agent_to_caller)
        self._local = bridge
        for leg in (0, 1):
            self._play_here(leg)
        if self._monitor is not None and self._monitor.running:
            self._monitor.start_local(bridge, self._clock, self._codecs)

    def _play_here(self, leg: int) -> None:
        music = self._music[leg]
        player = self._players[leg]
        if player is not None:
            player.stop()
            self._players[leg] = None
        if music is None or self.legs[leg].closed:
            return
        codec, prompts, loop = music
        playlist = Playlist(
            codec,
            [self._prompts.get(p) for p in prompts],
            loop=[self._prompts.get(p) for p in loop],
        )
        player = self._players[leg] = LegPlayer(self.legs[leg], playlist, self._clock)
        player.start(asyncio.get_running_loop().time())

    def _stop_players(self) -> None:
        for leg in (0, 1):
            player = self._players[leg]
            if player is not None:
                player.stop()
                self._players[leg] = None
