"""Playing a `Playlist` (prompts, then music on hold) on one leg, driven by the shared clock.

How this works: `LegPlayer.start` marks a new source on the leg's outbound stream and registers
with the `MediaClock`; every 20 ms tick pulls one encoded frame from the pure `Playlist` and sends it
through ``endpoint.stream``, so sequence numbers and timestamps continue whatever played before.
When the playlist ends, the player unregisters and reports `PlaybackFinished` through its callback.
`on_dtmf()` is the barge-in flag: the engine calls it when a digit arrives while prompts play.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sip.media.clock import MediaClock
from sip.media.endpoint import RtpEndpoint
from sip.rtp.g711 import PAYLOAD_TYPES
from sip.rtp.playback import FRAME_SAMPLES, Playlist


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    interrupted_by_dtmf: bool


def _ignore(event: PlaybackFinished) -> None:
    del event


class LegPlayer:
    __slots__ = ("_barged", "_clock", "endpoint", "on_finished", "payload_type", "playlist")

    def __init__(
        self,
        endpoint: RtpEndpoint,
        playlist: Playlist,
        clock: MediaClock,
        *,
        payload_type: int | None = None,
        on_finished: Callable[[PlaybackFinished], None] = _ignore,
    ) -> None:
        self.endpoint = endpoint
        self.playlist = playlist
        self._clock = clock
        self.payload_type = PAYLOAD_TYPES[playlist.codec] if payload_type is None else payload_type
        self.on_finished = on_finished
        self._barged = False

    def start(self, now: float) -> None:
        self.endpoint.stream.begin_source(now)
        self._clock.add(self)

    def stop(self) -> None:
        """Stop without a `PlaybackFinished` (the owner switches the leg to something else)."""
        self._clock.remove(self)
        self.playlist.stop()

    def on_dtmf(self) -> bool:
        barged = self.playlist.on_dtmf()
        self._barged = self._barged or barged
        return barged

    def tick(self, now: float) -> None:
        if self.endpoint.closed:
            self._clock.remove(self)
            return
        frame = self.playlist.next_frame()
        if frame is None:
            self._clock.remove(self)
            self.on_finished(PlaybackFinished(self._barged))
            return
        self.endpoint.send(self.endpoint.stream.send(self.payload_type, frame, now, FRAME_SAMPLES))
