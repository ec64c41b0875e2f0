"""A supervisor on a bridged call: listen, whisper or barge, mixed on the shared 20 ms clock.

How this works: the `Bridge` keeps relaying caller <-> agent packet by packet wherever a leg hears
exactly its counterpart (both ways in listen, agent -> caller in whisper). `Monitor` sets each
bridge way's ``listener`` and the supervisor endpoint's ``on_rtp`` to queue every leg's audio
payloads (a few frames deep: arrival and clock are not in phase; older frames are dropped rather
than let latency grow), and registers as a `MediaClock` ticker. Every 20 ms it pops one frame per
leg (silence when none came), mixes with `sip.rtp.mix` for every leg that must hear more than its
counterpart (the supervisor always; the agent in whisper and barge; the caller in barge), and
sends those mixes through the legs' `OutboundStream` (a switch between relay and mix is a new
source: marker bit, timestamps continue). The bridge ways whose far end now hears a mix stop
forwarding; the recording tap goes on, so the recording keeps caller left, agent right. What the
caller hears is recorded: in barge the supervisor's voice is added to the agent's channel (the
company's side), frame by frame as the tap records the agent's packets (the way's ``tap_mix``,
fed from the supervisor frames the clock takes); listening and whispering are not recorded.
While the bridge holds a way off (`Bridge.set_relay`: a hold) the leg it leads to gets no mix
either: that leg hears the music on hold (whose player owns its stream) or nothing, and the
supervisor hears no more of that way than its far end does. `stop` gives the bridge back exactly as it was.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from sip.media.bridge import Bridge
from sip.media.clock import MediaClock
from sip.media.endpoint import RtpEndpoint
from sip.rtp.mix import (
    AGENT,
    CALLER,
    FRAME_SAMPLES,
    MONITOR_MODES,
    SUPERVISOR,
    decode_frame,
    encode_frame,
    mix,
)
from sip.rtp.packet import FIXED_HEADER_LEN, RtpError, parse_rtp

#: Frames queued per leg at most (60 ms): enough for loopback and LAN jitter; beyond it the
#: oldest frame goes, so a sender running fast cannot build up delay.
MAX_QUEUED_FRAMES = 3

_COUNTERPART = {CALLER: AGENT, AGENT: CALLER}


class _Input:
    """One leg's received audio, queued for the mixer."""

    __slots__ = ("audio_pts", "codec", "frames")

    def __init__(self, endpoint: RtpEndpoint, codec: str) -> None:
        self.codec = codec
        self.audio_pts = frozenset(
            pt for pt, name in endpoint.payload_types.items() if name == codec
        )
        self.frames: deque[bytes] = deque(maxlen=MAX_QUEUED_FRAMES)

    def __call__(self, data: bytes) -> None:
        if data[1] & 0x7F not in self.audio_pts:
            return  # telephone-event and anything else is not audio to mix
        if not data[0] & 0x3F:
            self.frames.append(data[FIXED_HEADER_LEN:])
            return
        try:
            self.frames.append(parse_rtp(data).payload)
        except RtpError:
            return

    def on_rtp(self, data: bytes, seq: int, ts: int, ssrc: int, now: float) -> None:
        self(data)


class Monitor:
    """Supervisor ``supervisor`` joined to ``bridge`` in ``mode`` (see `sip.rtp.mix.MONITOR_MODES`)."""

    __slots__ = (
        "_clock",
        "_frames",
        "_hears",
        "_inputs",
        "_pts",
        "_recorded",
        "bridge",
        "legs",
        "mode",
        "running",
    )

    def __init__(
        self,
        bridge: Bridge,
        supervisor: RtpEndpoint,
        clock: MediaClock,
        *,
        mode: str,
        caller_codec: str = "PCMU",
        agent_codec: str = "PCMU",
        supervisor_codec: str = "PCMU",
    ) -> None:
        if mode not in MONITOR_MODES:
            raise ValueError(f"unknown monitor mode {mode!r}")
        self.bridge = bridge
        self._clock = clock
        caller, agent = bridge.legs
        self.legs = [caller, agent, supervisor]
        codecs = [caller_codec, agent_codec, supervisor_codec]
        self._inputs = [_Input(leg, codec) for leg, codec in zip(self.legs, codecs, strict=True)]
        self._pts = [
            next((pt for pt, name in sorted(leg.payload_types.items()) if name == codec), 0)
            for leg, codec in zip(self.legs, codecs, strict=True)
        ]
        self._frames = np.zeros((3, FRAME_SAMPLES), dtype=np.int32)
        # the supervisor's frames still to add to the agent's channel of the recording (barge)
        self._recorded: deque[npt.NDArray[np.int32]] = deque(maxlen=MAX_QUEUED_FRAMES)
        self.mode = mode
        self._hears = np.asarray(MONITOR_MODES[mode], dtype=np.int32)
        self.running = False

    def _mixed(self, leg: int) -> bool:
        """Whether ``leg`` hears a mix (rather than the relay, or nothing)."""
        row = self._hears[leg]
        if leg in _COUNTERPART:
            return int(row.sum()) != 1 or not row[_COUNTERPART[leg]]
        return bool(row.any())

    def _barging(self) -> bool:
        """The caller hears the supervisor: what the caller hears is recorded."""
        return bool(self._hears[CALLER][SUPERVISOR])

    def _apply(self, now: float) -> None:
        # way 0 is caller -> agent (the agent hears it), way 1 agent -> caller (the agent's
        # channel of the recording)
        if not self._barging():
            self._recorded.clear()
        for way, src, dst in ((0, CALLER, AGENT), (1, AGENT, CALLER)):
            mix_in = self._record_supervisor if way == 1 and self._barging() else None
            self.bridge.set_way(
                way, now, forward=not self._mixed(dst), listener=self._inputs[src], tap_mix=mix_in
            )

    def _record_supervisor(self, payload: bytes, codec: str) -> bytes:
        """The agent's tapped ``payload`` with the supervisor's next frame added (same length)."""
        if not self._recorded or codec not in ("PCMU", "PCMA"):
            return payload
        supervisor = self._recorded.popleft()
        n = min(len(payload), FRAME_SAMPLES)
        samples = np.empty(FRAME_SAMPLES, dtype=np.int32)
        decode_frame(payload[:n], codec, samples)
        samples += supervisor
        mixed = np.clip(samples[:n], -32768, 32767).astype(np.int16)
        return encode_frame(mixed, codec) + payload[n:]

    def start(self, now: float) -> None:
        if self.running:
            return
        self.running = True
        self.legs[2].on_rtp = self._inputs[2].on_rtp
        self.legs[2].stream.begin_source(now)
        self._apply(now)
        self._clock.add(self)

    def set_mode(self, mode: str, now: float) -> None:
        if mode not in MONITOR_MODES:
            raise ValueError(f"unknown monitor mode {mode!r}")
        self.mode = mode
        self._hears = np.asarray(MONITOR_MODES[mode], dtype=np.int32)
        if self.running:
            self._apply(now)

    def stop(self, now: float) -> None:
        """Leave the call: the bridge relays both ways again (idempotent)."""
        if not self.running:
            return
        self.running = False
        self._clock.remove(self)
        if self.bridge.stopped_at is None:
            for way in (0, 1):
                self.bridge.set_way(way, now, forward=True, listener=None, tap_mix=None)
        self._recorded.clear()
        if self.legs[2].on_rtp == self._inputs[2].on_rtp:
            self.legs[2].on_rtp = None

    def tick(self, now: float) -> None:
        if self.bridge.stopped_at is not None:
            self.stop(now)
            return
        frames = self._frames
        for i, queued in enumerate(self._inputs):
            if queued.frames:
                decode_frame(queued.frames.popleft(), queued.codec, frames[i])
            else:
                frames[i] = 0
        if self._barging():
            self._recorded.append(frames[SUPERVISOR].copy())
        mixed = mix(frames, self._hears)
        for i, leg in enumerate(self.legs):
            if leg.closed or not self._mixed(i):
                continue
            if i in _COUNTERPART and not self.bridge.relaying(1 - i):
                continue  # on hold: the music (or nothing) is what this leg hears
            payload = encode_frame(mixed[i], self._inputs[i].codec)
            leg.send(leg.stream.send(self._pts[i], payload, now, FRAME_SAMPLES))
