"""A recording started mid-call: the bridge's sample positions, shifted so the request is 0.

How this works: the media bridge counts samples from its own start; a recording asked for later
(an on-demand start) must not begin with the silence of everything before the request, so the
file covers the request to the hang-up. `OnDemandRecording` wraps the `Recording` and subtracts
the offset from every position it is given (a frame straddling the request keeps only its samples
from the request on). It is the tap's `RecordingSink` and has the pause/resume the API uses, like
`Recording` itself. Pure arithmetic: no SIP, no clock.
"""

from __future__ import annotations

from recordings.writer import Recording


class OnDemandRecording:
    """A recording started mid-call: the bridge's positions, shifted so the request is position 0.

    The bridge counts samples from its own start; a recording asked for later must not begin with
    the silence of everything before the request (the file covers the request to the hang-up).
    Implements the tap's ``RecordingSink`` and the pause/resume the API uses, like ``Recording``.
    """

    __slots__ = ("_offset", "_recording")

    def __init__(self, recording: Recording, offset: int) -> None:
        self._recording = recording
        self._offset = max(0, offset)

    @property
    def recording_id(self) -> str:
        return self._recording.recording_id

    @property
    def paused(self) -> bool:
        return self._recording.paused

    def feed(self, channel: int, position: int, payload: bytes, codec: str) -> None:
        position -= self._offset
        if position < 0:
            # a frame straddling the request: keep only its samples from the request on
            width = 2 if codec == "L16" else 1
            payload = payload[-position * width :]
            if not payload:
                return
            position = 0
        self._recording.feed(channel, position, payload, codec)

    def gap(self, channel: int, position: int, samples: int, reason: str) -> None:
        start = position - self._offset
        if start < 0:
            samples += start
            start = 0
        if samples > 0:
            self._recording.gap(channel, start, samples, reason)

    def close(self, end_position: int) -> None:
        self._recording.close(max(0, end_position - self._offset))

    def pause(self, position: int) -> None:
        self._recording.pause(max(0, position - self._offset))

    def resume(self, position: int) -> None:
        self._recording.resume(max(0, position - self._offset))
