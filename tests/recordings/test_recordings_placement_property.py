"""Placement by position against a naive reference (hypothesis): any order, overlaps, holes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recordings_testkit import DECODERS, read_wav, ulaw_decode

from recordings import RecordingWriter, WriterConfig

frame = st.tuples(
    st.integers(0, 1),  # channel
    st.integers(0, 3000),  # position
    st.sampled_from([80, 160]),  # samples
    st.sampled_from(["PCMU", "L16"]),
    st.integers(0, 2**31),  # content seed
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(frame, max_size=40), end=st.integers(0, 3500), same_codec=st.booleans())
def test_placement_matches_reference(
    frames: list[tuple[int, int, int, str, int]], end: int, same_codec: bool
) -> None:
    expected = np.zeros((max(end, 0), 2), dtype=np.int16)
    fed = []
    for channel, position, n, codec, seed in frames:
        if same_codec:
            codec, n = "PCMU", 160  # the vectorized path's shape
        rng = np.random.default_rng(seed)
        if codec == "L16":
            payload = rng.integers(-30000, 30000, n).astype("<i2").tobytes()
            pcm = np.frombuffer(payload, "<i2")
        else:
            payload = rng.integers(0, 256, n).astype(np.uint8).tobytes()
            pcm = np.frombuffer(ulaw_decode(payload), "<i2")
        fed.append((channel, position, payload, codec))
        lo, hi = position, min(position + n, end)
        if lo < hi:
            expected[lo:hi, channel] = pcm[: hi - lo]  # last write wins, in arrival order
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.wav"
        writer = RecordingWriter(DECODERS, WriterConfig(flush_interval_s=0.05))
        rec = writer.start_recording("p", path)
        for item in fed:
            rec.feed(*item)
        writer.start()  # everything is in one batch: nothing can be late
        rec.close(end)
        res = rec.result.result(timeout=10)
        writer.stop()
        _, _, data = read_wav(path)
    assert res.error is None
    assert res.late_frames == 0
    assert data.shape == expected.shape
    assert np.array_equal(data, expected)
