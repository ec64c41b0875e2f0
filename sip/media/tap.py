"""The media tap contract towards the recorder (structural: sip never imports recordings).

The bridge calls a `RecordingSink` from its datagram callback with ENCODED payloads and an
RTP-time-aligned sample position; the recorder decodes later, in batches, off the event loop, with
the `Decoder` functions the engine injects (``sip.rtp.g711.DECODERS``).

* ``channel``: 0 = caller (left), 1 = agent (right).
* ``position``: sample index at 8 kHz since the recording started. Per leg the bridge unwraps the
  32-bit RTP timestamp and rebases it at the leg's first packet (and whenever the far end restarts
  its stream with a new SSRC) to the wall-clock offset since bridge start; after that it follows RTP
  time exactly, so both channels stay aligned even though packets arrive with jitter.
* ``payload``: the RTP payload as received; ``codec`` is "PCMU", "PCMA" or "L16" (s16le).
* ``gap``: explicit silence ("loss", "hold", "paused"); positions already imply gaps.
* ``close``: the bridge ended at ``end_position``; the file lasts end_position / 8000 s.

Positions may arrive slightly out of order or overlap (duplicates): the sink places audio by position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Decoder = Callable[[bytes], bytes]

CHANNEL_CALLER = 0
CHANNEL_AGENT = 1


class RecordingSink(Protocol):
    def feed(self, channel: int, position: int, payload: bytes, codec: str) -> None: ...

    def gap(self, channel: int, position: int, samples: int, reason: str) -> None: ...

    def close(self, end_position: int) -> None: ...
