"""In-band DTMF detection with the Goertzel algorithm (optional, for trunks that send tones as audio).

How this works: 8 kHz PCM is cut into blocks of `BLOCK_SAMPLES` (205 samples, 25.6 ms: the classic
size whose frequency resolution separates the DTMF rows and columns). For each block the power at
the 8 DTMF frequencies is computed at once, as the dot product of the block with precomputed complex
exponentials (the Goertzel value, evaluated directly). A block holds a digit when (ITU-T Q.24 style
tests, thresholds as named constants below):

* the block is loud enough (`MIN_LEVEL_DBFS`),
* the strongest row and column tones each beat the others of their group by `RELATIVE_PEAK_DB`,
* the twist (column vs row power) is within `MAX_NORMAL_TWIST_DB` / `MAX_REVERSE_TWIST_DB`,
* the two tones carry at least `MIN_TONE_FRACTION` of the block's energy (speech and noise spread
  their energy, a DTMF pair concentrates it).

A digit is reported once, after `CONFIRM_BLOCKS` consecutive blocks agree (about 51 ms, above the
40 ms Q.24 minimum), and not again until a block without it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
#: 205 samples at 8 kHz: bins of ~39 Hz, fine enough for the 73 Hz row spacing (the usual N).
BLOCK_SAMPLES = 205
ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COLUMN_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
#: Quieter blocks are silence; -40 dBFS is about -37 dBm0, below Q.24's -25..-30 dBm0 reject level.
MIN_LEVEL_DBFS = -40.0
#: The winning tone must beat the runner-up of its group by this much (leakage at N=205 is ~-10 dB).
RELATIVE_PEAK_DB = 8.0
#: Q.24: receivers accept column tones up to 8 dB below the row tone (normal twist) and 4 dB above.
MAX_NORMAL_TWIST_DB = 8.0
MAX_REVERSE_TWIST_DB = 4.0
#: Share of block energy in the two tones; a clean pair gives ~1.0, speech well below 0.5.
MIN_TONE_FRACTION = 0.7
#: Consecutive agreeing blocks before a digit counts (2 x 25.6 ms >= Q.24's 40 ms).
CONFIRM_BLOCKS = 2

_FREQS = np.array(ROW_HZ + COLUMN_HZ)
_N = np.arange(BLOCK_SAMPLES)
_BASIS: npt.NDArray[np.complex128] = np.exp(-2j * np.pi * np.outer(_FREQS, _N) / SAMPLE_RATE)
_FULL_SCALE = 32768.0


def _db(ratio: float) -> float:
    return float(10.0 * np.log10(max(ratio, 1e-20)))


def classify_block(block: npt.NDArray[np.float64]) -> str | None:
    """The digit in one block of `BLOCK_SAMPLES` samples, or None."""
    if len(block) != BLOCK_SAMPLES:
        raise ValueError(f"a block is {BLOCK_SAMPLES} samples, got {len(block)}")
    energy = float(np.dot(block, block))
    if energy <= 0.0:
        return None
    mean_power = energy / BLOCK_SAMPLES
    # a full-scale sine has mean power FULL_SCALE**2 / 2: that is 0 dBFS
    if _db(mean_power / (_FULL_SCALE**2 / 2)) < MIN_LEVEL_DBFS:
        return None
    spectrum = _BASIS @ block
    # |X|^2 * 2 / N is the energy of a sine at that frequency in the block
    tone_energy = (spectrum.real**2 + spectrum.imag**2) * (2.0 / BLOCK_SAMPLES)
    rows, cols = tone_energy[:4], tone_energy[4:]
    r = int(np.argmax(rows))
    c = int(np.argmax(cols))
    row_e, col_e = float(rows[r]), float(cols[c])
    if (row_e + col_e) / energy < MIN_TONE_FRACTION:
        return None
    twist_db = _db(col_e / row_e) if row_e > 0 else float("inf")
    if twist_db < -MAX_NORMAL_TWIST_DB or twist_db > MAX_REVERSE_TWIST_DB:
        return None
    for group, peak, idx in ((rows, row_e, r), (cols, col_e, c)):
        others = np.delete(group, idx)
        if _db(peak / max(float(others.max()), 1e-20)) < RELATIVE_PEAK_DB:
            return None
    return KEYPAD[r][c]


class InbandDtmfDetector:
    """Feed 8 kHz int16 PCM in any chunk sizes; get each digit once per press."""

    __slots__ = ("_buffer", "_candidate", "_count", "_reported")

    def __init__(self) -> None:
        self._buffer = np.zeros(0, dtype=np.float64)
        self._candidate: str | None = None
        self._count = 0
        self._reported = False

    def feed(self, samples: npt.NDArray[np.int16]) -> list[str]:
        data = np.concatenate((self._buffer, samples.astype(np.float64)))
        digits: list[str] = []
        whole = len(data) // BLOCK_SAMPLES * BLOCK_SAMPLES
        for start in range(0, whole, BLOCK_SAMPLES):
            digit = classify_block(data[start : start + BLOCK_SAMPLES])
            if digit is not None and digit == self._candidate:
                self._count += 1
            else:
                self._candidate = digit
                self._count = 1
                self._reported = False
            if digit is not None and not self._reported and self._count >= CONFIRM_BLOCKS:
                digits.append(digit)
                self._reported = True
        self._buffer = data[whole:]
        return digits
