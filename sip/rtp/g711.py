"""G.711 u-law (PCMU) and A-law (PCMA) by lookup tables (ITU-T G.711, RFC 3551 4.5.14).

How this works: every possible input is converted once at import, with the segment/quantisation
arithmetic of the G.711 reference encoder written out in numpy, into four tables:

* decode: 256 entries (code byte -> int16 sample);
* encode: 65,536 entries indexed by the uint16 view of an int16 sample, so encoding a frame is one
  ``np.take``; u-law works on the top 14 bits, A-law on the top 13 bits of the sample, as the
  reference does;
* PCMU <-> PCMA: 256 entries each (decode with one law, encode with the other), for a transcoding
  bridge that never touches linear PCM.

The results are bit-exact with the classic reference implementation (checked against ``audioop`` on
all 65,536 inputs in the tests). `DECODERS` maps codec names to ``Callable[[bytes], bytes]``
functions (payload -> s16le PCM) for the recorder, which runs them batched off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

Decoder = Callable[[bytes], bytes]

_QUANT_MASK = 0x0F
_SEG_SHIFT = 4
_SEG_MASK = 0x70
_SIGN_BIT = 0x80
#: u-law bias (33 in 14-bit terms: 0x84 >> 2) and clip of the 14-bit magnitude (G.711 table 2a).
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
#: Segment end points of the 8 u-law / A-law segments (G.711 tables 2a/1a, in 14/13-bit units).
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & _QUANT_MASK) << 3) + _ULAW_BIAS
    t = t << ((u & _SEG_MASK) >> _SEG_SHIFT)
    return np.where(u & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & _QUANT_MASK) << 4
    seg = (a & _SEG_MASK) >> _SEG_SHIFT
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & _SIGN_BIT, t, -t).astype(np.int16)


def _all_samples() -> npt.NDArray[np.int32]:
    # index i of the encode tables is the uint16 view of the int16 sample
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_samples() >> 2  # 16-bit -> 14-bit, arithmetic shift as the reference
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    mag = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left").astype(np.int32)
    code = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_samples() >> 3  # 16-bit -> 13-bit
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    mag = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left").astype(np.int32)
    segc = np.minimum(seg, 7)
    quant = np.where(segc < 2, mag >> 1, mag >> np.maximum(segc, 1)) & _QUANT_MASK
    code = np.where(seg >= 8, 0x7F, (segc << _SEG_SHIFT) | quant)
    return (code ^ mask).astype(np.uint8)


ULAW_DECODE: npt.NDArray[np.int16] = _build_ulaw_decode()
ALAW_DECODE: npt.NDArray[np.int16] = _build_alaw_decode()
ULAW_ENCODE: npt.NDArray[np.uint8] = _build_ulaw_encode()
ALAW_ENCODE: npt.NDArray[np.uint8] = _build_alaw_encode()
ULAW_TO_ALAW: npt.NDArray[np.uint8] = ALAW_ENCODE[ULAW_DECODE.view(np.uint16)]
ALAW_TO_ULAW: npt.NDArray[np.uint8] = ULAW_ENCODE[ALAW_DECODE.view(np.uint16)]
for _table in (ULAW_DECODE, ALAW_DECODE, ULAW_ENCODE, ALAW_ENCODE, ULAW_TO_ALAW, ALAW_TO_ULAW):
    _table.flags.writeable = False

#: Encoded silence (a zero sample) for padding frames.
ULAW_SILENCE = int(ULAW_ENCODE[0])
ALAW_SILENCE = int(ALAW_ENCODE[0])


def decode_pcmu(payload: bytes) -> bytes:
    """PCMU payload -> s16le PCM."""
    return ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)].astype("<i2").tobytes()


def decode_pcma(payload: bytes) -> bytes:
    """PCMA payload -> s16le PCM."""
    return ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)].astype("<i2").tobytes()


def decode_l16(payload: bytes) -> bytes:
    """The tap's ``L16`` is already s16le (see the tap contract): identity."""
    return bytes(payload)


def encode_pcmu(pcm: bytes) -> bytes:
    """s16le PCM -> PCMU payload."""
    index: npt.NDArray[np.uint16] = np.frombuffer(pcm, dtype="<u2")
    return ULAW_ENCODE[index].tobytes()


def encode_pcma(pcm: bytes) -> bytes:
    """s16le PCM -> PCMA payload."""
    index: npt.NDArray[np.uint16] = np.frombuffer(pcm, dtype="<u2")
    return ALAW_ENCODE[index].tobytes()


def pcmu_to_pcma(payload: bytes) -> bytes:
    return ULAW_TO_ALAW[np.frombuffer(payload, dtype=np.uint8)].tobytes()


def pcma_to_pcmu(payload: bytes) -> bytes:
    return ALAW_TO_ULAW[np.frombuffer(payload, dtype=np.uint8)].tobytes()


def encode_samples(samples: npt.NDArray[np.int16], codec: str) -> bytes:
    """int16 samples -> payload bytes for ``codec`` ("PCMU" or "PCMA")."""
    index = np.ascontiguousarray(samples, dtype=np.int16).view(np.uint16)
    if codec == "PCMU":
        return ULAW_ENCODE[index].tobytes()
    if codec == "PCMA":
        return ALAW_ENCODE[index].tobytes()
    raise ValueError(f"no G.711 encoder for codec {codec!r}")


DECODERS: Mapping[str, Decoder] = MappingProxyType(
    {"PCMU": decode_pcmu, "PCMA": decode_pcma, "L16": decode_l16}
)
#: RFC 3551 table 4 static payload types.
PAYLOAD_TYPES: Mapping[str, int] = MappingProxyType({"PCMU": 0, "PCMA": 8})
SILENCE_BYTE: Mapping[str, int] = MappingProxyType({"PCMU": ULAW_SILENCE, "PCMA": ALAW_SILENCE})
