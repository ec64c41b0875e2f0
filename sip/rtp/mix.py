"""Mixing G.711 frames for a conference of a few legs (supervisor listen / whisper / barge).

How this works: who hears whom is a square 0/1 matrix, ``hears[dst][src]`` (never a leg itself).
One 20 ms frame per leg is decoded with the `sip.rtp.g711` tables into a row of an int32 array
(a missing frame is a row of zeros), each output row is the matrix product of its row of ``hears``
with the frames (a sum of the sources it hears, in int32 so three full-scale int16 cannot wrap),
clipped to int16 (saturation, as a hardware mixer does, rather than wrap-around clicks) and
encoded with the destination leg's law. Pure: arrays in, bytes out; the clock and the sockets
are `sip.media.monitor`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sip.rtp.g711 import ALAW_DECODE, ALAW_ENCODE, ULAW_DECODE, ULAW_ENCODE

#: 20 ms at 8 kHz.
FRAME_SAMPLES = 160

_DECODE = {"PCMU": ULAW_DECODE, "PCMA": ALAW_DECODE}
_ENCODE = {"PCMU": ULAW_ENCODE, "PCMA": ALAW_ENCODE}
_INT16_MIN = -32768
_INT16_MAX = 32767


def decode_frame(payload: bytes, codec: str, out: npt.NDArray[np.int32]) -> None:
    """Decode one G.711 ``payload`` into ``out`` (FRAME_SAMPLES int32); short frames pad with 0."""
    table = _DECODE.get(codec)
    if table is None:
        raise ValueError(f"no G.711 decoder for codec {codec!r}")
    codes = np.frombuffer(payload, dtype=np.uint8)[:FRAME_SAMPLES]
    out[: len(codes)] = table[codes]
    out[len(codes) :] = 0


def mix(frames: npt.NDArray[np.int32], hears: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    """``frames`` (legs x samples, int32 linear) mixed per ``hears`` (legs x legs, 0/1):
    row d of the result is the saturating sum of the frames of every leg d hears."""
    summed: npt.NDArray[np.int32] = hears @ frames
    clipped: npt.NDArray[np.int16] = np.clip(summed, _INT16_MIN, _INT16_MAX).astype(np.int16)
    return clipped


def encode_frame(samples: npt.NDArray[np.int16], codec: str) -> bytes:
    """One row of `mix` -> a G.711 payload for ``codec``."""
    table = _ENCODE.get(codec)
    if table is None:
        raise ValueError(f"no G.711 encoder for codec {codec!r}")
    return table[np.ascontiguousarray(samples).view(np.uint16)].tobytes()


def mix_payloads(
    payloads: Sequence[bytes | None], codecs: Sequence[str], hears: Sequence[Sequence[int]]
) -> list[bytes | None]:
    """Convenience for tests and one-off mixes: payload per leg (None = silence) -> the payload
    each leg receives (None for a leg that hears nobody)."""
    n = len(payloads)
    frames = np.zeros((n, FRAME_SAMPLES), dtype=np.int32)
    for i, (payload, codec) in enumerate(zip(payloads, codecs, strict=True)):
        if payload is not None:
            decode_frame(payload, codec, frames[i])
    matrix = np.asarray(hears, dtype=np.int32)
    mixed = mix(frames, matrix)
    return [encode_frame(mixed[d], codecs[d]) if matrix[d].any() else None for d in range(n)]


#: Leg order of the monitoring matrices.
CALLER, AGENT, SUPERVISOR = 0, 1, 2

#: Who hears whom, ``hears[dst][src]``, per supervisor monitoring mode. Listen: the supervisor
#: hears both, nobody hears the supervisor. Whisper: the agent also hears the supervisor, the
#: caller still hears only the agent. Barge: everyone hears the other two.
MONITOR_MODES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "listen": ((0, 1, 0), (1, 0, 0), (1, 1, 0)),
    "whisper": ((0, 1, 0), (1, 0, 1), (1, 1, 0)),
    "barge": ((0, 1, 1), (1, 0, 1), (1, 1, 0)),
}
