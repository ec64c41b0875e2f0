"""The media worker's wire protocol: the messages between the daemon and a media worker process.

How this works: both sides import this module and nothing of each other. The daemon's side
(`engine.media.offload`) sends `ToWorker` messages for a bridged call (`Attach` hands the legs
over, SRTP keys included; `SetRelay`, `Play`/`StopPlay`, `SetHeld`, `PauseRecording`,
`PauseTap`, `StartRecording`, `Rekey` and `Stop` drive it; `AttachMonitor`, `SetMonitorMode` and `DetachMonitor` bring a supervisor's
leg in and out); the worker (`engine.media.worker`) answers with `FromWorker` messages
(`Digit`, `TimedOut`, `Stopped`, `MonitorDetached`, `Failed`, `RecordingDone`, and `Stats`
deltas every `STATS_INTERVAL_S`). Framing and the start-up handshake are `engine.runtime.workers`'; a
recording's parameters are `engine.recording.spec.RecordingSpec`, which the recording service
fills in without knowing about workers.
"""

from __future__ import annotations

import msgspec

from engine.recording.spec import RecordingSpec
from engine.runtime.workers import Ready
from sip.media import MediaStats

#: Media counters reach the daemon's /metrics this often.
STATS_INTERVAL_S = 0.25

# -- messages ----------------------------------------------------------------------------------------


class Attach(msgspec.Struct, tag=True, array_like=True):
    """Take a bridged call; its four sockets (caller RTP, RTCP, agent RTP, RTCP) are on the fd
    channel. ``caller`` / ``agent`` are pickled `EndpointState`s."""

    sid: int
    call_id: str
    caller: bytes
    agent: bytes
    caller_codec: str
    agent_codec: str
    caller_to_agent: bool
    agent_to_caller: bool
    recording: RecordingSpec | None


class SetRelay(msgspec.Struct, tag=True, array_like=True):
    sid: int
    caller_to_agent: bool
    agent_to_caller: bool


class Play(msgspec.Struct, tag=True, array_like=True):
    """Play ``prompts`` then loop ``loop`` (files) on leg ``leg`` (0 caller, 1 agent)."""

    sid: int
    leg: int
    codec: str
    prompts: list[str]
    loop: list[str]


class StopPlay(msgspec.Struct, tag=True, array_like=True):
    sid: int
    leg: int


class SetHeld(msgspec.Struct, tag=True, array_like=True):
    sid: int
    leg: int
    held: bool


class PauseRecording(msgspec.Struct, tag=True, array_like=True):
    """PCI: the recording writes the span as silence and lists it (``Recording.pause``)."""

    sid: int
    paused: bool


class PauseTap(msgspec.Struct, tag=True, array_like=True):
    """``Bridge.pause_recording(reason)``, or ``resume_recording`` when reason is ""."""

    sid: int
    reason: str


class StartRecording(msgspec.Struct, tag=True, array_like=True):
    """On demand: record from now on (the file's position 0 is now)."""

    sid: int
    spec: RecordingSpec


class Stop(msgspec.Struct, tag=True, array_like=True):
    """End the bridge: a supervisor's leg comes back first (`MonitorDetached`), then the legs
    (`Stopped`)."""

    sid: int


class AttachMonitor(msgspec.Struct, tag=True, array_like=True):
    """A supervisor joins the call in ``mode`` (listen, whisper, barge): its leg's two sockets
    (RTP, RTCP) are on the fd channel, ``supervisor`` is its pickled `EndpointState`."""

    sid: int
    supervisor: bytes
    codec: str
    mode: str


class SetMonitorMode(msgspec.Struct, tag=True, array_like=True):
    sid: int
    mode: str


class Rekey(msgspec.Struct, tag=True, array_like=True):
    """The peer of leg ``leg`` (0 caller, 1 agent, 2 the supervisor) re-keyed its SRTP in a
    re-offer (RFC 4568 7.1.4): ``srtp_rx`` is the pickled `SrtpState` to unprotect with."""

    sid: int
    leg: int
    srtp_rx: bytes


class DetachMonitor(msgspec.Struct, tag=True, array_like=True):
    """The supervisor leaves: the bridge relays both ways again, the leg comes back in
    `MonitorDetached`."""

    sid: int


class Digit(msgspec.Struct, tag=True, array_like=True):
    sid: int
    leg: int
    digit: str
    duration_ms: int
    method: str


class TimedOut(msgspec.Struct, tag=True, array_like=True):
    """Leg 0 caller, 1 agent, 2 a supervisor."""

    sid: int
    leg: int
    reason: str
    idle_s: float


class Stopped(msgspec.Struct, tag=True, array_like=True):
    """The legs' states, pickled, for the daemon to carry them again."""

    sid: int
    caller: bytes
    agent: bytes


class MonitorDetached(msgspec.Struct, tag=True, array_like=True):
    """The supervisor's leg state, pickled, for the daemon to carry (and close) it again."""

    sid: int
    supervisor: bytes


class Failed(msgspec.Struct, tag=True, array_like=True):
    """This call could not be (or no longer is) carried here: the daemon takes it back."""

    sid: int
    reason: str


class RecordingDone(msgspec.Struct, tag=True, array_like=True):
    """A recording was finished by this worker's writer: a pickled `RecordingResult`."""

    recording_id: str
    result: bytes


class Stats(msgspec.Struct, tag=True, array_like=True):
    """Deltas of this process's `MediaStats` since the last report, and its writer's health."""

    packets_received: int
    packets_sent: int
    packets_lost: int
    packets_malformed: int
    packets_foreign: int
    packets_tapped: int
    packets_srtp_rejected: int
    timeouts: int
    ticker_errors: int
    dtmf_digits: dict[str, int]
    jitter_counts: list[int]
    jitter_sum: float
    writer_error: str


ToWorker = (
    Attach
    | SetRelay
    | Play
    | StopPlay
    | SetHeld
    | PauseRecording
    | PauseTap
    | StartRecording
    | Stop
    | AttachMonitor
    | SetMonitorMode
    | DetachMonitor
    | Rekey
)
FromWorker = Ready | Digit | TimedOut | Stopped | MonitorDetached | Failed | RecordingDone | Stats

_COUNTERS = (
    "packets_received",
    "packets_sent",
    "packets_lost",
    "packets_malformed",
    "packets_foreign",
    "packets_tapped",
    "packets_srtp_rejected",
    "timeouts",
    "ticker_errors",
)


def stats_delta(now: MediaStats, before: MediaStats, writer_error: str) -> Stats:
    """What changed in ``now`` since ``before`` (then make ``before`` a copy of ``now``)."""
    counts = {name: getattr(now, name) - getattr(before, name) for name in _COUNTERS}
    delta = Stats(
        **counts,
        dtmf_digits={
            k: v - before.dtmf_digits.get(k, 0)
            for k, v in now.dtmf_digits.items()
            if v != before.dtmf_digits.get(k, 0)
        },
        jitter_counts=[a - b for a, b in zip(now.jitter.counts, before.jitter.counts, strict=True)],
        jitter_sum=now.jitter.sum - before.jitter.sum,
        writer_error=writer_error,
    )
    for name in _COUNTERS:
        setattr(before, name, getattr(now, name))
    before.dtmf_digits = now.dtmf_digits.copy()
    before.jitter.counts = list(now.jitter.counts)
    before.jitter.sum = now.jitter.sum
    before.jitter.count = now.jitter.count
    return delta


def add_stats(into: MediaStats, delta: Stats) -> None:
    """The daemon's side of `stats_delta`: a worker's counters join the process's."""
    for name in _COUNTERS:
        setattr(into, name, getattr(into, name) + getattr(delta, name))
    into.dtmf_digits.update(delta.dtmf_digits)
    if len(delta.jitter_counts) == len(into.jitter.counts):
        for i, n in enumerate(delta.jitter_counts):
            into.jitter.counts[i] += n
        into.jitter.count += sum(delta.jitter_counts)
        into.jitter.sum += delta.jitter_sum
