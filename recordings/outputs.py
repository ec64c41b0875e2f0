"""File outputs: where committed stereo PCM goes, plain or encrypted, WAV or compressed.

How this works: the writer thread commits s16le stereo PCM with ``write_pcm`` (already placed by
sample position) and calls ``flush`` once per flush interval. ``flush`` is the crash-safety point:

- plain WAV: the PCM is appended, then the RIFF and data sizes are patched, so the header always
  describes what reached the OS (``recordings.wav``);
- encrypted: everything since the last flush becomes one authenticated chunk (``recordings.crypto``).

FLAC / Ogg Opus (PyAV, i.e. FFmpeg's encoders and muxers) are made at close from the live WAV
(``transcode_live_wav``), in the writer's closer pool. Encoding live was measured and rejected: PyAV
gives every audio encoder its own filter graph with an automatic thread pool (2 threads per call on
this 2-core box, 3000 threads at 1500 calls) and opening one costs about 5 ms of CPU, so 1500 live
encoders fell hopelessly behind. Transcoding one finished call at a time keeps the live path
identical for all formats (same crash safety: a crash leaves the live WAV, which ``repair`` fixes)
and costs about 0.4 ms of CPU per call-second of audio, once. Encrypted in, encrypted out.

Files are opened through an ``Opener`` seam (default: exclusive create, parents made), which is also
how tests put a real failing file descriptor under a recording. ``fsync`` follows ``FsyncPolicy``:
surviving a *process* crash needs only the data in the page cache; surviving a power cut needs fsync.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from recordings import wav
from recordings.crypto import ChunkEncryptor, ContentFormat, DecryptedStream, Keyring

Opener = Callable[[Path], BinaryIO]


class FsyncPolicy(enum.StrEnum):
    NEVER = "never"
    ON_CLOSE = (
        "on_close"  # default: a process crash keeps the page cache; power loss loses <= 1 call
    )
    EVERY_FLUSH = "every_flush"  # survives power loss up to the last flush; costs one fsync per s


class RecordingFormat(enum.StrEnum):
    WAV = "wav"
    FLAC = "flac"
    OGG_OPUS = "opus"

    @property
    def extension(self) -> str:
        return {"wav": ".wav", "flac": ".flac", "opus": ".opus"}[self.value]

    @property
    def content_format(self) -> ContentFormat:
        return {
            "wav": ContentFormat.WAV,
            "flac": ContentFormat.FLAC,
            "opus": ContentFormat.OGG_OPUS,
        }[self.value]


def default_opener(path: Path) -> BinaryIO:
    """Create the file exclusively: a recording never silently overwrites another one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("xb")


class Output(Protocol):
    data_bytes: int  # PCM bytes committed (before compression/encryption)

    @property
    def bytes_written(self) -> int:
        """Bytes handed to the OS so far (header, framing and audio)."""
        ...

    def write_pcm(self, pcm: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _PlainSink:
    def __init__(self, f: BinaryIO, fsync: FsyncPolicy) -> None:
        self.f = f
        self.fsync = fsync
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.bytes_written += len(data)

    def flush(self) -> None:
        self.f.flush()
        if self.fsync is FsyncPolicy.EVERY_FLUSH:
            os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.flush()
        if self.fsync is not FsyncPolicy.NEVER:
            os.fsync(self.f.fileno())
        self.f.close()

    def abort(self) -> None:
        _close_quietly(self.f)


class _EncryptingSink:
    """Buffers plaintext between flushes; each flush is one GCM chunk, close writes the final one."""

    def __init__(self, f: BinaryIO, fsync: FsyncPolicy, encryptor: ChunkEncryptor) -> None:
        self.plain = _PlainSink(f, fsync)
        self.enc = encryptor
        self.pending = bytearray()
        self.plain.write(encryptor.file_header)

    @property
    def bytes_written(self) -> int:
        return self.plain.bytes_written

    def write(self, data: bytes) -> None:
        self.pending += data

    def seal(self) -> None:
        """Turn what is pending into a chunk now (the WAV header is sealed alone as chunk 0)."""
        if self.pending:
            for chunk in self.enc.chunks(bytes(self.pending)):
                self.plain.write(chunk)
            self.pending.clear()

    def flush(self) -> None:
        self.seal()
        self.plain.flush()

    def close(self) -> None:
        for chunk in self.enc.chunks(bytes(self.pending), final=True):
            self.plain.write(chunk)
        self.pending.clear()
        self.plain.close()

    def abort(self) -> None:
        self.plain.abort()


def _close_quietly(f: BinaryIO) -> None:
    # Already failing (ENOSPC/EIO): the error that matters was recorded when it first happened.
    with contextlib.suppress(OSError):
        f.close()


class WavOutput:
    """Canonical WAV, sizes patched at every flush (plain) or rebuilt at decrypt (encrypted)."""

    def __init__(self, f: BinaryIO, fsync: FsyncPolicy, encryptor: ChunkEncryptor | None) -> None:
        self.data_bytes = 0
        self._f = f
        self._sink: _PlainSink | _EncryptingSink
        if encryptor is None:
            self._sink = _PlainSink(f, fsync)
            self._sink.write(wav.wav_header(0))
        else:
            self._sink = _EncryptingSink(f, fsync, encryptor)
            self._sink.write(wav.wav_header(0))  # placeholder sizes; the decryptor rebuilds them
            self._sink.seal()
        self._sink.flush()

    @property
    def bytes_written(self) -> int:
        return self._sink.bytes_written

    def write_pcm(self, pcm: bytes) -> None:
        if self.data_bytes + len(pcm) > wav.MAX_DATA_BYTES:
            raise OSError("WAV data would exceed the 4 GiB RIFF limit")
        self._sink.write(pcm)
        self.data_bytes += len(pcm)

    def _patch_sizes(self) -> None:
        riff_field, data_field = wav.size_fields(self.data_bytes)
        self._f.seek(wav.RIFF_SIZE_OFFSET)
        self._f.write(riff_field)
        self._f.seek(wav.DATA_SIZE_OFFSET)
        self._f.write(data_field)
        self._f.seek(0, os.SEEK_END)

    def flush(self) -> None:
        if isinstance(self._sink, _PlainSink):
            # Data first, then sizes: a kill in between leaves sizes that lag, which players
            # accept and repair() fixes; sizes never point past what reached the OS.
            self._sink.f.flush()
            self._patch_sizes()
        self._sink.flush()

    def close(self) -> None:
        if isinstance(self._sink, _PlainSink):
            self._sink.f.flush()
            self._patch_sizes()
        self._sink.close()

    def abort(self) -> None:
        self._sink.abort()


class _SinkFile:
    """The minimal file object PyAV writes through, forwarding to a plain or encrypting sink."""

    def __init__(self, sink: _PlainSink | _EncryptingSink) -> None:
        self.sink = sink

    def write(self, data: Any) -> int:
        b = bytes(data)
        self.sink.write(b)
        return len(b)

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


# Encoder frame sizes: FLAC blocks of 4096 samples are the libFLAC default for 8 kHz (0.5 s); Opus
# frames are 20 ms, the telephony packet time, and Opus runs at 48 kHz internally (RFC 7587 4.1).
_FLAC_BLOCK_SAMPLES = 4096
_OPUS_RATE_HZ = 48000
_OPUS_BITRATE_BPS = 32000  # stereo speech, transparent for telephony-band input


class AvOutput:
    """FLAC or Ogg Opus through PyAV (FFmpeg's encoders and muxers), plain or encrypted."""

    def __init__(
        self,
        f: BinaryIO,
        fsync: FsyncPolicy,
        encryptor: ChunkEncryptor | None,
        fmt: RecordingFormat,
    ) -> None:
        import av  # imported lazily: WAV-only deployments never load FFmpeg

        self.data_bytes = 0
        self._sink: _PlainSink | _EncryptingSink = (
            _PlainSink(f, fsync) if encryptor is None else _EncryptingSink(f, fsync, encryptor)
        )
        self._fmt = fmt
        container_format = "flac" if fmt is RecordingFormat.FLAC else "ogg"
        self._container: Any = av.open(_SinkFile(self._sink), mode="w", format=container_format)
        if fmt is RecordingFormat.FLAC:
            stream = self._container.add_stream("flac", rate=wav.SAMPLE_RATE_HZ, layout="stereo")
        else:
            stream = self._container.add_stream("libopus", rate=_OPUS_RATE_HZ, layout="stereo")
            stream.bit_rate = _OPUS_BITRATE_BPS
        self._stream: Any = stream
        self._pts = 0
        self._resampler: Any = None
        if fmt is RecordingFormat.OGG_OPUS:
            self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=_OPUS_RATE_HZ)
        self._av = av

    @property
    def bytes_written(self) -> int:
        return self._sink.bytes_written

    def write_pcm(self, pcm: bytes) -> None:
        if not pcm:
            return
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = wav.SAMPLE_RATE_HZ
        frame.pts = self._pts
        self._pts += samples.shape[1] // 2
        self.data_bytes += len(pcm)
        frames = self._resampler.resample(frame) if self._resampler is not None else [frame]
        for fr in frames:
            for packet in self._stream.encode(fr):
                self._container.mux(packet)

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        if self._resampler is not None:
            for fr in self._resampler.resample(None):
                for packet in self._stream.encode(fr):
                    self._container.mux(packet)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._sink.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError, self._av.error.FFmpegError):
            self._container.close()
        self._sink.abort()


def live_path(path: Path, fmt: RecordingFormat) -> Path:
    """Where the crash-safe WAV of a call in progress lives (the final path itself for WAV)."""
    return path if fmt is RecordingFormat.WAV else path.with_name(path.name + ".live.wav")


def open_live_output(
    path: Path,
    *,
    opener: Opener,
    fsync: FsyncPolicy,
    encryptor: ChunkEncryptor | None,
) -> Output:
    """The live WAV (plain or encrypted) that a call in progress is written to."""
    f = opener(path)
    try:
        return WavOutput(f, fsync, encryptor)
    except BaseException:
        _close_quietly(f)
        raise


# Transcoding reads the live WAV in pieces of 10 s of stereo audio: bounded memory for any length.
_TRANSCODE_PIECE_BYTES = 10 * wav.BYTE_RATE


def transcode_live_wav(
    src: Path,
    dst: Path,
    fmt: RecordingFormat,
    *,
    opener: Opener,
    fsync: FsyncPolicy,
    encryption: tuple[str, bytes] | None,
) -> None:
    """Compress a finished live WAV into ``dst`` (FLAC/Opus), then remove the WAV.

    Written as ``dst.part`` and renamed, so ``dst`` is either complete or absent; on any error the
    live WAV stays, playable, and the caller reports it. Encrypted in, encrypted out (same key):
    plaintext never touches the disk.
    """
    pieces: Iterator[bytes]
    if encryption is not None:
        key_id, key = encryption
        pieces = iter(DecryptedStream(src, Keyring({key_id: key})))
    else:
        pieces = _read_pieces(src)
    tmp = dst.with_name(dst.name + ".part")
    tmp.unlink(missing_ok=True)  # left by a crash during an earlier transcode
    f = opener(tmp)
    encryptor = None
    if encryption is not None:
        encryptor = ChunkEncryptor(encryption[0], encryption[1], fmt.content_format)
    try:
        out = AvOutput(f, fsync, encryptor, fmt)
        pending = bytearray()
        header_left = wav.HEADER_BYTES
        for piece in pieces:
            if header_left:
                skip = min(header_left, len(piece))
                header_left -= skip
                piece = piece[skip:]
            pending += piece
            whole = len(pending) - len(pending) % wav.BLOCK_ALIGN_BYTES
            if whole >= _TRANSCODE_PIECE_BYTES:
                out.write_pcm(bytes(pending[:whole]))
                del pending[:whole]
        whole = len(pending) - len(pending) % wav.BLOCK_ALIGN_BYTES
        out.write_pcm(bytes(pending[:whole]))
        out.close()
    except BaseException:
        _close_quietly(f)
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dst)
    src.unlink()


def _read_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(_TRANSCODE_PIECE_BYTES):
            yield piece
