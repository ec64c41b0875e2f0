"""What a recording writer outside the daemon's process needs to know, and who provides one.

How this works: `RecordingService.start` writes a recording's index row, then either starts the
file in its own writer or, when the call's media runs in a worker, asks a `RemoteRecorder` (the
media worker pool, `engine.media.offload.MediaWorkers`) to write it from a `RecordingSpec`. This
module is the whole of what the recording side knows of that: the media side imports it, never
the other way round.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec


class RecordingSpec(msgspec.Struct, array_like=True):
    """Where and how to record; the daemon has written the index row already."""

    recording_id: str
    path: str
    format: str
    encrypt: bool
    call_id: str
    key_file: str  # "" = the keyring from the environment (ACD_RECORDING_KEYS...)
    flush_interval_s: float


class RemoteRecorder(Protocol):
    """Writes recordings somewhere else (a media worker); returns the recording to feed the tap."""

    def new_recording(self, spec: RecordingSpec) -> Any: ...
