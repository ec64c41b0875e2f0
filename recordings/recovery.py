"""Start-up recovery of recordings a crash left open, plain or encrypted.

How this works: the engine knows from its index which recordings were never closed and calls
``recover_file`` on each path (``Recording.live_path``: for FLAC/Opus the live WAV, since those are
only produced at close). A plain WAV goes through ``recordings.wav.repair`` (sizes from the file
length, torn sample frame cut). An encrypted file needs no header patch, since its decryptor rebuilds
the WAV sizes, but a chunk torn by the crash is cut off so the file ends on a chunk boundary; the
missing final chunk stays missing and the file keeps reporting ``truncated`` when decrypted, which
is the truth. No key is needed: only the framing is read.
"""

from __future__ import annotations

import os
from pathlib import Path

from recordings.crypto import TAG_BYTES, ContentFormat, is_encrypted, scan
from recordings.wav import BYTE_RATE, HEADER_BYTES, RepairResult, repair


def recover_file(path: str | os.PathLike[str]) -> RepairResult:
    """Make a recording left by a crash playable; ``repaired`` says whether it was touched."""
    p = Path(path)
    if not is_encrypted(p):
        return repair(p)
    with p.open("r+b") as f:
        info = scan(f)
        if info.torn_bytes:
            f.truncate(f.seek(0, os.SEEK_END) - info.torn_bytes)
            f.flush()
            os.fsync(f.fileno())
    plaintext = sum(c.length - TAG_BYTES for c in info.chunks)
    data = max(0, plaintext - HEADER_BYTES) if info.content_format is ContentFormat.WAV else 0
    data -= data % 4
    return RepairResult(
        path=p,
        repaired=info.torn_bytes > 0,
        ok=True,
        header_data_bytes=data,
        data_bytes=data,
        torn_bytes=info.torn_bytes,
        duration_s=data / BYTE_RATE,
        problem="encrypted file ends before its final chunk" if info.truncated else "",
    )
