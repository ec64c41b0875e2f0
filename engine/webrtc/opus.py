"""Opus with the browser, coded on the event loop by PyAV's libopus.

How this works: the call side is 8 kHz G.711 (engine/webrtc/g711.py). Towards the browser,
`OpusEncoder` turns the call's 8 kHz PCM straight into narrowband Opus, which the lean sender
(engine/webrtc/track.py) sends; from the browser, `OpusDecoder` decodes to 48 kHz and resamples
to 8 kHz, and the leg sends that as PCMU. aiortc's own path decodes on a thread per leg and
encodes in a thread pool at 48 kHz stereo; handing every 20 ms frame to those threads and back
(and the GIL switches it forces) cost more than the codec work itself.
"""

from __future__ import annotations

from typing import Any

import av

from engine.webrtc.g711 import FRAME_SAMPLES, SAMPLE_RATE, TIME_BASE

#: Opus's RTP clock is 48 kHz whatever the audio's bandwidth (RFC 7587 4.1).
OPUS_RATE = 48000
#: Towards the browser the audio is the call's, 8 kHz G.711: narrowband Opus carries all of it,
#: and libopus takes 8 kHz mono as it is (no resampler; aiortc's encoder works at 48 kHz stereo).
OPUS_BITRATE = 24000


class OpusEncoder:
    """8 kHz mono PCM -> 20 ms Opus packets, with PyAV's libopus, on the event loop."""

    def __init__(self) -> None:
        codec: Any = av.CodecContext.create("libopus", "w")
        codec.sample_rate = SAMPLE_RATE
        codec.format = "s16"
        codec.layout = "mono"
        codec.bit_rate = OPUS_BITRATE
        codec.time_base = TIME_BASE
        # complexity 5 of 10: a fifth less CPU per frame than the default, and the source is
        # already 8 kHz G.711, which narrowband Opus at this rate carries without audible loss
        codec.options = {"application": "voip", "compression_level": "5"}
        self._codec = codec
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes | None:
        """One 20 ms frame in; its packet, or None while libopus still fills its look-ahead."""
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = TIME_BASE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        packets = self._codec.encode(frame)
        return bytes(packets[0]) if packets else None


class OpusDecoder:
    """Opus packets from the browser -> 8 kHz mono s16 PCM, with PyAV, on the event loop.

    libopus decodes at 48 kHz here whatever is asked; FFmpeg's resampler takes it to 8 kHz (with
    its anti-aliasing filter, as aiortc's path did after aiortc's own decoder thread).
    """

    def __init__(self) -> None:
        codec: Any = av.CodecContext.create("libopus", "r")
        codec.format = "s16"
        codec.layout = "mono"
        self._codec = codec
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def decode(self, payload: bytes) -> list[Any]:
        """The PCM of one packet, as int16 arrays (empty while the resampler fills)."""
        out = []
        for frame in self._codec.decode(av.Packet(payload)):
            for resampled in self._resampler.resample(frame):
                out.append(resampled.to_ndarray().reshape(-1))
        return out
