"""Canonical 44-byte WAV header, crash-safe patching and repair after a crash.

How this works: a recording is a canonical RIFF/WAVE file (one ``fmt `` chunk, one ``data`` chunk,
header exactly 44 bytes). The writer appends PCM and then patches the two size fields (RIFF size at
offset 4, data size at offset 40) at every flush, so between flushes the header always describes a
prefix of the file: a SIGKILL leaves a playable file that ends at the last flush. ``repair()``
handles what a crash can still leave behind: sizes that lag (or lead) the real file length, and a
torn last sample frame (a write cut inside one 4-byte stereo frame).

Only our own canonical layout is repaired; anything else is reported, never rewritten.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE_HZ = 8000  # G.711 telephony rate: everything the bridge hands us is 8 kHz
CHANNELS = 2  # caller left (0), agent right (1)
SAMPLE_BYTES = 2  # signed 16-bit little-endian
BLOCK_ALIGN_BYTES = CHANNELS * SAMPLE_BYTES
BYTE_RATE = SAMPLE_RATE_HZ * BLOCK_ALIGN_BYTES
HEADER_BYTES = 44
RIFF_SIZE_OFFSET = 4
DATA_SIZE_OFFSET = 40
# RIFF sizes are 32-bit; at 32 000 B/s this is about 37 hours, far beyond any call.
MAX_DATA_BYTES = 0xFFFFFFFF - (HEADER_BYTES - 8)

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_WAVE_FORMAT_PCM = 1


def wav_header(
    data_bytes: int,
    *,
    channels: int = CHANNELS,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
) -> bytes:
    """The canonical 44-byte header for ``data_bytes`` of s16le PCM."""
    block_align = channels * SAMPLE_BYTES
    return _HEADER.pack(
        b"RIFF",
        HEADER_BYTES - 8 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_PCM,
        channels,
        sample_rate_hz,
        sample_rate_hz * block_align,
        block_align,
        SAMPLE_BYTES * 8,
        b"data",
        data_bytes,
    )


def size_fields(data_bytes: int) -> tuple[bytes, bytes]:
    """(RIFF size, data size) as they are patched at offsets 4 and 40."""
    return struct.pack("<I", HEADER_BYTES - 8 + data_bytes), struct.pack("<I", data_bytes)


@dataclass(frozen=True, slots=True)
class WavLayout:
    """The fields of a canonical header that repair needs."""

    channels: int
    sample_rate_hz: int
    block_align: int
    riff_size: int
    data_size: int


class NotCanonicalWavError(ValueError):
    """The file is not a canonical 44-byte-header PCM WAV as this package writes.

    Raised by ``parse_header``; ``repair`` reports it instead of raising. You do not get it for a
    file that is merely truncated or has stale sizes: those are what repair fixes.
    """


def parse_header(header: bytes) -> WavLayout:
    if len(header) < HEADER_BYTES:
        raise NotCanonicalWavError(f"header is {len(header)} bytes, need {HEADER_BYTES}")
    (
        riff,
        riff_size,
        wave,
        fmt,
        fmt_size,
        fmt_tag,
        channels,
        rate,
        _byte_rate,
        block_align,
        bits,
        data,
        data_size,
    ) = _HEADER.unpack(header[:HEADER_BYTES])
    if (riff, wave, fmt, data) != (b"RIFF", b"WAVE", b"fmt ", b"data"):
        raise NotCanonicalWavError("chunk ids are not RIFF/WAVE/fmt /data")
    if fmt_size != 16 or fmt_tag != _WAVE_FORMAT_PCM or bits != 16:
        raise NotCanonicalWavError("not 16-bit PCM with a 16-byte fmt chunk")
    if channels < 1 or block_align != channels * SAMPLE_BYTES:
        raise NotCanonicalWavError("inconsistent channels/block align")
    return WavLayout(channels, rate, block_align, riff_size, data_size)


@dataclass(frozen=True, slots=True)
class RepairResult:
    """What ``repair`` found and did. The engine marks the index row "recovered" when ``repaired``."""

    path: Path
    repaired: bool
    ok: bool  # False: not a file we can repair (see ``problem``); it was left untouched
    header_data_bytes: int  # the data size the header claimed before repair
    data_bytes: int  # the data size after repair (whole stereo frames only)
    torn_bytes: int  # bytes cut from a torn last sample frame
    duration_s: float
    problem: str = ""


def repair(path: str | os.PathLike[str]) -> RepairResult:
    """Make a WAV left by a crash valid: sizes from the file length, torn tail frame cut off.

    Idempotent: a valid file is reported with ``repaired=False`` and not written.
    """
    p = Path(path)
    file_bytes = p.stat().st_size
    with p.open("r+b") as f:
        head = f.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            # Killed before the first header write reached the OS: nothing playable to keep, but
            # a valid empty file is better than a broken one in the index.
            f.seek(0)
            f.truncate(0)
            f.write(wav_header(0))
            return RepairResult(p, True, True, 0, 0, file_bytes, 0.0, "header was incomplete")
        try:
            layout = parse_header(head)
        except NotCanonicalWavError as exc:
            return RepairResult(p, False, False, 0, 0, 0, 0.0, str(exc))
        available = file_bytes - HEADER_BYTES
        torn = available % layout.block_align
        data_bytes = min(available - torn, MAX_DATA_BYTES - MAX_DATA_BYTES % layout.block_align)
        duration_s = data_bytes / (layout.block_align * layout.sample_rate_hz)
        sizes_ok = layout.riff_size == HEADER_BYTES - 8 + data_bytes
        if sizes_ok and layout.data_size == data_bytes and torn == 0:
            return RepairResult(p, False, True, layout.data_size, data_bytes, 0, duration_s)
        if torn:
            f.truncate(HEADER_BYTES + data_bytes)
        riff_field, data_field = size_fields(data_bytes)
        f.seek(RIFF_SIZE_OFFSET)
        f.write(riff_field)
        f.seek(DATA_SIZE_OFFSET)
        f.write(data_field)
        f.flush()
        os.fsync(f.fileno())
    return RepairResult(p, True, True, layout.data_size, data_bytes, torn, duration_s)
