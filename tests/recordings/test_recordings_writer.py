"""RecordingWriter: placement by position, duration, backpressure, error states, formats."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import pytest
from recordings_testkit import (
    DECODERS,
    FRAME_SAMPLES,
    RATE_HZ,
    dominant_hz,
    frames,
    read_wav,
    tone,
    ulaw_decode,
    ulaw_encode,
    wait_for,
)

from recordings import (
    RecordingFormat,
    RecordingResult,
    RecordingWriter,
    WriterConfig,
)
from recordings.outputs import default_opener

FAST = WriterConfig(flush_interval_s=0.05, reorder_window_s=0.2)


def _run(writer: RecordingWriter, rec_close_at: int, rec: object) -> RecordingResult:
    from recordings import Recording

    assert isinstance(rec, Recording)
    rec.close(rec_close_at)
    return rec.result.result(timeout=10)


def test_stereo_tone_per_channel_duration_exact(tmp_path: Path) -> None:
    seconds = 2
    n = seconds * RATE_HZ
    left = ulaw_encode(tone(440, n))
    right = ulaw_encode(tone(1000, n))
    path = tmp_path / "a.wav"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("r1", path, call_id="c1")
        for pos in range(0, n, FRAME_SAMPLES):
            rec.feed(0, pos, left[pos : pos + FRAME_SAMPLES], "PCMU")
            rec.feed(1, pos, right[pos : pos + FRAME_SAMPLES], "PCMU")
        res = _run(w, n, rec)
    ch, rate, data = read_wav(path)
    assert (ch, rate) == (2, 8000)
    assert len(data) == n  # exactly end_position samples
    assert res.duration_s == pytest.approx(seconds, abs=1e-9)
    assert abs(dominant_hz(data[:, 0]) - 440) < 5
    assert abs(dominant_hz(data[:, 1]) - 1000) < 5
    # The decoded content is bit-exact with an independent G.711 decode.
    expected_left = np.frombuffer(ulaw_decode(left), dtype="<i2")
    assert np.array_equal(data[:, 0], expected_left)
    assert res.error is None
    assert res.size_bytes == path.stat().st_size == 44 + n * 4
    assert res.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert res.format is RecordingFormat.WAV
    assert not res.encrypted
    assert res.key_id is None


def test_reordered_duplicated_and_missing_frames_land_by_position(tmp_path: Path) -> None:
    n = RATE_HZ  # 1 s
    pcm = tone(440, n)
    items = frames(pcm)
    missing = {10, 11, 12}  # 60 ms lost on the caller leg
    fed = [(pos, f) for i, (pos, f) in enumerate(items) if i not in missing]
    rng = random.Random(7)
    # Reorder within a 3-frame window and duplicate some frames, as a network would.
    for i in range(0, len(fed) - 3, 3):
        window = fed[i : i + 3]
        rng.shuffle(window)
        fed[i : i + 3] = window
    fed += [fed[5], fed[20]]
    path = tmp_path / "b.wav"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("r2", path)
        for pos, f in fed:
            rec.feed(0, pos, f, "L16")
        rec.gap(0, 10 * FRAME_SAMPLES, 3 * FRAME_SAMPLES, "loss")  # optional hint: no effect
        res = _run(w, n, rec)
    _, _, data = read_wav(path)
    expected = np.frombuffer(pcm, dtype="<i2").copy()
    for i in missing:
        expected[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] = 0
    assert np.array_equal(data[:, 0], expected)
    assert not data[:, 1].any()  # the agent leg sent nothing: silence, still aligned
    assert res.late_frames == 0
    assert rec.gap_samples == {"loss": 3 * FRAME_SAMPLES}


def test_overlap_last_write_wins(tmp_path: Path) -> None:
    a = np.full(FRAME_SAMPLES, 1000, dtype="<i2").tobytes()
    b = np.full(FRAME_SAMPLES, -2000, dtype="<i2").tobytes()
    path = tmp_path / "c.wav"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("r3", path)
        rec.feed(1, 0, a, "L16")
        rec.feed(1, 80, b, "L16")  # overlaps the second half of a
        _run(w, 400, rec)
    _, _, data = read_wav(path)
    assert (data[:80, 1] == 1000).all()
    assert (data[80:240, 1] == -2000).all()
    assert not data[240:, 1].any()
    assert len(data) == 400


def test_late_frame_beyond_window_is_counted_not_misplaced(tmp_path: Path) -> None:
    path = tmp_path / "d.wav"
    cfg = WriterConfig(flush_interval_s=0.05, reorder_window_s=0.1)
    loud = np.full(FRAME_SAMPLES, 5000, dtype="<i2").tobytes()
    with RecordingWriter(DECODERS, cfg) as w:
        rec = w.start_recording("r4", path)
        for pos, f in frames(tone(440, RATE_HZ)):
            rec.feed(0, pos, f, "L16")
        wait_for(lambda: w.stats().queue_depth == 0 and path.stat().st_size > 44 + 4 * 6000)
        rec.feed(0, 0, loud, "L16")  # position 0 was written long ago
        res = _run(w, RATE_HZ, rec)
    _, _, data = read_wav(path)
    assert res.late_frames == 1
    assert w.stats().late_frames_total == 1
    assert not (data[:FRAME_SAMPLES, 0] == 5000).all()


def test_close_pads_silence_and_cuts_beyond_end(tmp_path: Path) -> None:
    with RecordingWriter(DECODERS, FAST) as w:
        short = w.start_recording("s", tmp_path / "short.wav")
        short.feed(0, 0, tone(440, 800), "L16")
        res_short = _run(w, 4000, short)  # bridge lasted 0.5 s, audio only 0.1 s
        long = w.start_recording("l", tmp_path / "long.wav")
        long.feed(0, 0, tone(440, 4000), "L16")
        res_long = _run(w, 1000, long)
    _, _, d1 = read_wav(tmp_path / "short.wav")
    _, _, d2 = read_wav(tmp_path / "long.wav")
    assert len(d1) == 4000
    assert not d1[800:].any()
    assert len(d2) == 1000
    assert res_short.duration_s == pytest.approx(0.5)
    assert res_long.duration_s == pytest.approx(0.125)


def test_pause_resume_writes_silence_and_reports_span(tmp_path: Path) -> None:
    n = 2 * RATE_HZ
    pcm = tone(440, n)
    path = tmp_path / "p.wav"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("p", path)
        for pos, f in frames(pcm):
            if pos == 4000:
                rec.pause(4000)
                assert rec.paused
            if pos == 12000:
                rec.resume(12000)
            rec.feed(0, pos, f, "L16")
            rec.feed(1, pos, f, "L16")
        res = _run(w, n, rec)
    _, _, data = read_wav(path)
    assert res.paused_spans == ((4000, 12000),)
    assert not data[4000:12000].any()
    expected = np.frombuffer(pcm, dtype="<i2")
    assert np.array_equal(data[:4000, 0], expected[:4000])
    assert np.array_equal(data[12000:, 1], expected[12000:])


def test_open_pause_closes_at_end(tmp_path: Path) -> None:
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("p2", tmp_path / "p2.wav")
        rec.feed(0, 0, tone(440, 1600), "L16")
        rec.pause(800)
        res = _run(w, 1600, rec)
    _, _, data = read_wav(tmp_path / "p2.wav")
    assert res.paused_spans == ((800, 1600),)
    assert data[:800, 0].any()
    assert not data[800:].any()


def test_long_hold_jump_writes_bounded_silence(tmp_path: Path) -> None:
    # 3 minutes with no packets at all (hold with no music): positions jump, the file must follow.
    jump = 180 * RATE_HZ
    path = tmp_path / "j.wav"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("j", path)
        rec.feed(0, 0, tone(440, 160), "L16")
        rec.feed(0, jump, tone(1000, 160), "L16")
        res = _run(w, jump + 160, rec)
    _, _, data = read_wav(path)
    assert len(data) == jump + 160
    assert data[:160, 0].any()
    assert not data[160:jump].any()
    assert np.array_equal(data[jump:, 0], np.frombuffer(tone(1000, 160), dtype="<i2"))
    assert res.error is None


def test_queue_full_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    cfg = WriterConfig(flush_interval_s=0.05, max_queue_frames=10)
    w = RecordingWriter(DECODERS, cfg)  # not started: nothing drains the queue
    rec = w.start_recording("q", tmp_path / "q.wav")
    payload = b"\xff" * 160
    for i in range(25):
        rec.feed(0, i * 160, payload, "PCMU")
    st = w.stats()
    assert st.queue_depth == 10
    assert st.dropped_frames_total == 15
    assert rec.dropped_frames == 15
    w.start()
    rec.close(25 * 160)
    res = rec.result.result(timeout=10)
    w.stop()
    assert res.dropped_frames == 15
    assert w.stats().queue_depth == 0


def test_unknown_codec_and_bad_channel_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "u.wav"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("u", path)
        rec.feed(0, 0, b"\x00" * 160, "G729")
        rec.feed(5, 0, tone(440, 160), "L16")
        rec.feed(1, 0, tone(440, 160), "L16")
        res = _run(w, 160, rec)
        assert rec.bad_frames == 2
    _, _, data = read_wav(path)
    assert not data[:, 0].any()
    assert data[:, 1].any()
    assert res.error is None


def test_stats_bytes_and_active(tmp_path: Path) -> None:
    with RecordingWriter(DECODERS, FAST) as w:
        recs = [w.start_recording(f"s{i}", tmp_path / f"s{i}.wav") for i in range(3)]
        assert w.stats().recordings_active == 3
        for r in recs:
            r.feed(0, 0, tone(440, 800), "L16")
        results = [_run(w, 800, r) for r in recs]
        st = w.stats()
    assert st.recordings_active == 0
    assert st.bytes_written_total == sum(r.size_bytes for r in results) == 3 * (44 + 3200)
    assert st.errors_total == 0
    assert w.healthy()


class _DevFullAfter:
    """Opener that opens real files; ``fill_disk`` later swaps one's fd for /dev/full.

    The kernel then answers every write with ENOSPC: a real full-disk error on the very file
    descriptor the writer uses (a full filesystem cannot be created in this sandbox).
    """

    def __init__(self) -> None:
        self.files: dict[str, BinaryIO] = {}

    def __call__(self, path: Path) -> BinaryIO:
        f = default_opener(path)
        self.files[path.name] = f
        return f

    def fill_disk(self, name: str) -> None:
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            os.dup2(full, self.files[name].fileno())
        finally:
            os.close(full)


def test_enospc_mid_recording_sets_error_state_never_raises(tmp_path: Path) -> None:
    opener = _DevFullAfter()
    path = tmp_path / "full.wav"
    cfg = WriterConfig(flush_interval_s=0.05, unhealthy_after_error_s=60)
    with RecordingWriter(DECODERS, cfg, opener=opener) as w:
        rec = w.start_recording("f", path)
        other = w.start_recording("g", tmp_path / "fine.wav", call_id="ok")
        wait_for(lambda: len(opener.files) == 2)
        rec.feed(0, 0, tone(440, 4000), "L16")
        wait_for(lambda: path.stat().st_size > 44)
        assert w.healthy()
        opener.fill_disk(path.name)
        for pos in range(4000, 40000, 160):
            rec.feed(0, pos, tone(440, 160, start=pos), "L16")  # must never raise
        wait_for(lambda: rec.error is not None)
        other.feed(0, 0, tone(440, 800), "L16")
        res = _run(w, 40000, rec)
        res_other = _run(w, 800, other)
        assert not w.healthy()
        assert w.last_error is not None
        assert "ENOSPC" in w.last_error
        assert w.stats().errors_total >= 1
        rec.feed(0, 0, b"\x00" * 320, "L16")  # after close/error: ignored, no exception
    assert res.error is not None
    assert "ENOSPC" in res.error
    assert res_other.error is None  # one failing file does not affect the others
    assert len(read_wav(tmp_path / "fine.wav")[2]) == 800
    # Health recovers once the error is old enough (time injected, no sleeping).
    assert w.healthy(now=10**9)


class _FailingFile:
    """Seam: a file object whose writes raise the given errno after ``ok_bytes``."""

    def __init__(self, inner: BinaryIO, err: int, ok_bytes: int) -> None:
        self.inner = inner
        self.err = err
        self.left = ok_bytes

    def write(self, data: bytes) -> int:
        if len(data) > self.left:
            raise OSError(self.err, os.strerror(self.err))
        self.left -= len(data)
        return self.inner.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EACCES])
def test_injected_write_errors(tmp_path: Path, err: int) -> None:
    # As root, chmod 0500 does not stop writes, so EACCES/EIO come through this seam.
    def opener(path: Path) -> BinaryIO:
        return _FailingFile(default_opener(path), err, 44 + 8000)  # type: ignore[return-value]

    with RecordingWriter(DECODERS, FAST, opener=opener) as w:
        rec = w.start_recording("e", tmp_path / "e.wav")
        for pos, f in frames(tone(440, 2 * RATE_HZ)):
            rec.feed(0, pos, f, "L16")
        res = _run(w, 2 * RATE_HZ, rec)
    assert res.error is not None
    assert errno.errorcode[err] in res.error
    assert w.stats().errors_total == 1
    assert not w.healthy()


def test_open_failure_real_filesystem_error(tmp_path: Path) -> None:
    # A real ENOTDIR from the kernel: the recordings "directory" is a regular file.
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"x")
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("o", blocker / "rec.wav")
        rec.feed(0, 0, tone(440, 160), "L16")
        res = _run(w, 160, rec)
    assert res.error is not None
    assert "ENOTDIR" in res.error or "EEXIST" in res.error
    assert res.size_bytes == 0
    assert res.sha256 == ""


def test_decoder_bug_ends_one_recording_not_the_thread(tmp_path: Path) -> None:
    def broken(payload: bytes) -> bytes:
        raise ZeroDivisionError("decoder bug")

    with RecordingWriter({"PCMU": broken, "PCMA": DECODERS["PCMA"]}, FAST) as w:
        bad = w.start_recording("bad", tmp_path / "bad.wav")
        bad.feed(0, 0, b"\xff" * 160, "PCMU")
        res_bad = _run(w, 160, bad)
        good = w.start_recording("good", tmp_path / "good.wav")
        good.feed(0, 0, tone(440, 160), "L16")
        res_good = _run(w, 160, good)
        assert all(t.is_alive() for t in threading.enumerate() if t.name.startswith("recordings"))
    assert res_bad.error is not None
    assert "ZeroDivisionError" in res_bad.error
    assert res_good.error is None


def test_stop_interrupts_open_recordings(tmp_path: Path) -> None:
    w = RecordingWriter(DECODERS, FAST)
    w.start()
    rec = w.start_recording("i", tmp_path / "i.wav")
    rec.feed(0, 0, tone(440, 1600), "L16")
    w.stop()
    res = rec.result.result(timeout=1)
    assert res.interrupted
    assert res.error is not None
    _, _, data = read_wav(tmp_path / "i.wav")
    assert len(data) == 1600
    with pytest.raises(RuntimeError):
        w.start_recording("late", tmp_path / "late.wav")


def test_stop_that_gives_up_waiting_still_finishes_a_closing_recording(tmp_path: Path) -> None:
    """A writer thread still busy with a last flush when stop() stops waiting for it (a media
    worker closing hundreds of calls on a busy machine) finishes the recording itself: its
    result arrives, instead of the thread dying on the closer's shutdown."""
    w = RecordingWriter(DECODERS, FAST)
    flushing = threading.Event()
    original = w._final_flush

    def slow_final_flush(rec: object) -> None:
        flushing.set()
        threading.Event().wait(0.5)
        original(rec)  # type: ignore[arg-type]

    w._final_flush = slow_final_flush  # type: ignore[method-assign]
    w.start()
    rec = w.start_recording("slow", tmp_path / "slow.wav")
    rec.feed(0, 0, tone(440, 1600), "L16")
    rec.close(1600)
    assert flushing.wait(5)
    w.stop(timeout_s=0.05)  # gives up on the thread, shuts the closer down
    res = rec.result.result(timeout=5)
    assert res.error is None
    assert not res.interrupted
    _, _, data = read_wav(tmp_path / "slow.wav")
    assert len(data) == 1600


def test_several_writer_threads(tmp_path: Path) -> None:
    cfg = WriterConfig(flush_interval_s=0.05, writer_threads=2)
    with RecordingWriter(DECODERS, cfg) as w:
        recs = [w.start_recording(f"t{i}", tmp_path / f"t{i}.wav") for i in range(6)]
        for i, r in enumerate(recs):
            r.feed(i % 2, 0, tone(300 + 100 * i, RATE_HZ), "L16")
        results = [_run(w, RATE_HZ, r) for r in recs]
    for i, res in enumerate(results):
        _, _, data = read_wav(res.path)
        assert abs(dominant_hz(data[:, i % 2]) - (300 + 100 * i)) < 5


@pytest.mark.parametrize("fmt", [RecordingFormat.FLAC, RecordingFormat.OGG_OPUS])
def test_compressed_formats(tmp_path: Path, fmt: RecordingFormat) -> None:
    n = 2 * RATE_HZ
    path = tmp_path / f"x{fmt.extension}"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("x", path, fmt=fmt)
        for pos, f in frames(tone(440, n)):
            rec.feed(0, pos, f, "L16")
        for pos, f in frames(tone(1000, n)):
            rec.feed(1, pos, f, "L16")
        res = _run(w, n, rec)
    assert res.error is None
    assert res.format is fmt
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.rate
        pcm = np.concatenate([fr.to_ndarray() for fr in c.decode(stream)], axis=1)
    # Planar or packed depending on codec: normalize to [n, 2].
    pcm = pcm.reshape(-1, 2) if pcm.shape[0] == 1 else pcm.T
    assert abs(len(pcm) / rate - 2.0) < 0.03
    mid = pcm[len(pcm) // 4 : 3 * len(pcm) // 4].astype(np.float64)

    def peak(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        return float(np.argmax(spec) * rate / len(x))

    assert abs(peak(mid[:, 0]) - 440) < 5
    assert abs(peak(mid[:, 1]) - 1000) < 5
    if fmt is RecordingFormat.FLAC:  # lossless: bit-exact
        assert np.array_equal(pcm[:, 0].astype(np.int16), np.frombuffer(tone(440, n), "<i2"))
    assert res.size_bytes == path.stat().st_size


def test_compressed_format_removes_live_wav(tmp_path: Path) -> None:
    path = tmp_path / "c.flac"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("c", path, fmt=RecordingFormat.FLAC)
        assert rec.live_path == tmp_path / "c.flac.live.wav"
        rec.feed(0, 0, tone(440, 1600), "L16")
        wait_for(rec.live_path.exists)
        res = _run(w, 1600, rec)
    assert res.path == path
    assert not rec.live_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.flac"]
    assert res.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_transcode_failure_keeps_the_live_wav(tmp_path: Path) -> None:
    def opener(path: Path) -> BinaryIO:
        if path.name.endswith(".part"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return default_opener(path)

    path = tmp_path / "k.flac"
    with RecordingWriter(DECODERS, FAST, opener=opener) as w:
        rec = w.start_recording("k", path, fmt=RecordingFormat.FLAC)
        rec.feed(1, 0, tone(1000, RATE_HZ), "L16")
        res = _run(w, RATE_HZ, rec)
    assert res.error is not None
    assert "ENOSPC" in res.error
    assert res.format is RecordingFormat.WAV
    assert res.path == rec.live_path
    _, _, data = read_wav(res.path)  # the audio is not lost
    assert abs(dominant_hz(data[:, 1]) - 1000) < 5
    assert not path.exists()
    assert not (tmp_path / "k.flac.part").exists()


def test_plain_download_stream(tmp_path: Path) -> None:
    from recordings import open_recording_stream

    path = tmp_path / "d.wav"
    with RecordingWriter(DECODERS, FAST) as w:
        rec = w.start_recording("d", path)
        rec.feed(0, 0, tone(440, 800), "L16")
        _run(w, 800, rec)
    size, pieces = open_recording_stream(path, None, piece_bytes=1000)
    body = b"".join(pieces)
    assert size == len(body) == path.stat().st_size
    assert body == path.read_bytes()


@pytest.mark.parametrize("codec", ["PCMU", "L16"])
def test_shuffled_contiguous_batch_lands_in_order(tmp_path: Path, codec: str) -> None:
    # No loss, no duplicates, but a reordered batch: the vectorized path must sort by position.
    n = RATE_HZ
    pcm = tone(440, n)
    if codec == "PCMU":
        enc = ulaw_encode(pcm)  # one byte per sample
        items = [(p, enc[p : p + FRAME_SAMPLES]) for p in range(0, n, FRAME_SAMPLES)]
    else:
        items = frames(pcm)
    random.Random(3).shuffle(items)
    path = tmp_path / "s.wav"
    w = RecordingWriter(DECODERS, FAST)
    rec = w.start_recording("s", path)
    for pos, f in items:
        rec.feed(1, pos, f, codec)
    w.start()
    res = _run(w, n, rec)
    w.stop()
    _, _, data = read_wav(path)
    expected = np.frombuffer(ulaw_decode(ulaw_encode(pcm)) if codec == "PCMU" else pcm, "<i2")
    assert np.array_equal(data[:, 1], expected)
    assert res.late_frames == 0
