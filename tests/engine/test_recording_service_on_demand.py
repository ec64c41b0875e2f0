"""On-demand recordings in the engine's recording service: the real writer, files and index.

The bridge counts sample positions from its own start; an on-demand recording attached later must
start its file at the request (``OnDemandRecording`` shifts every position), keep only the part of
a frame that straddles the request, shift PCI pause spans the same way, and be refused for a queue
whose policy is ``never``.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from engine.config import parse_config
from engine.recording.service import RecordingRefused, RecordingService
from engine.storage import Store
from engine.storage.schema import recordings
from recordings import OnDemandRecording
from sip.rtp.g711 import decode_pcmu, encode_pcmu

CONFIG = """
[recordings]
dir = "{dir}"
flush_interval_s = 0.2

[[queues]]
name = "support"
record = "on_demand"

[[queues]]
name = "sampled"
record = "0%"

[[queues]]
name = "quiet"
record = "never"
"""


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[RecordingService, Store]]:
    cfg = parse_config(CONFIG.format(dir=tmp_path / "rec"), "t.toml")
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3")
    svc = RecordingService(cfg, store, base_dir=tmp_path)
    await svc.start_writer()
    yield svc, store
    await svc.stop()
    await store.close()


async def row_of(store: Store, call_id: str) -> dict[str, object]:
    async with store.engine.connect() as conn:
        result = await conn.execute(sa.select(recordings).where(recordings.c.call_id == call_id))
        return dict(result.mappings().one())


def ramp(start: int, samples: int) -> bytes:
    """u-law of a slow ramp: each sample's value says where it was on the bridge's time line."""
    pcm = ((np.arange(start, start + samples) % 4000) * 4).astype(np.int16)
    return encode_pcmu(pcm.tobytes())


async def test_the_file_starts_at_the_request_and_ends_at_the_hang_up(
    service: tuple[RecordingService, Store],
) -> None:
    svc, store = service
    assert await svc.start("c1", "support", "1001") is None  # on_demand: nothing at bridge time
    recording = await svc.start_on_demand("c1", "support", "1001", requested_by="agent:1001")
    offset = 8000 * 3 + 37  # the request came 3.005 s into the bridge, mid-frame
    sink = OnDemandRecording(recording, offset)
    first = offset - 37  # the frame that straddles the request
    for pos in range(first, first + 160 * 100, 160):  # 2 s of audio on both channels
        sink.feed(0, pos, ramp(pos, 160), "PCMU")
        sink.feed(1, pos, ramp(pos, 160), "PCMU")
    sink.pause(first + 8000)  # PCI pause 1 s into the recording, for half a second
    sink.resume(first + 12000)
    sink.close(first + 160 * 100)
    await svc.wait_idle()

    row = await row_of(store, "c1")
    assert (row["on_demand"], row["started_by"]) == (True, "agent:1001")
    expected_samples = 160 * 100 - 37
    assert row["duration_s"] == pytest.approx(expected_samples / 8000, abs=1e-6)
    with wave.open(str(row["path"])) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert len(stereo) == expected_samples
    # Sample 0 of the file is the bridge's sample `offset`: the ramp continues from there.
    carried = np.frombuffer(decode_pcmu(ramp(offset, 200)), "<i2")
    assert np.array_equal(stereo[:200, 0], carried)
    assert np.array_equal(stereo[:200, 1], carried)
    ((start, end),) = row["paused_spans"]  # type: ignore[misc]
    assert (start, end) == (8000 - 37, 12000 - 37)
    assert not stereo[start:end].any()  # written as silence
    assert stereo[end + 10 : end + 200, 1].any()


async def test_policy_never_is_refused_and_other_policies_allow_it(
    service: tuple[RecordingService, Store],
) -> None:
    svc, store = service
    with pytest.raises(RecordingRefused, match='record = "never"'):
        await svc.start_on_demand("c2", "quiet", "1001", requested_by="ops")
    with pytest.raises(RecordingRefused, match="no longer configured"):
        await svc.start_on_demand("c3", "gone", "1001", requested_by="ops")
    # A sampled queue's call that was not drawn may still be recorded when someone asks.
    assert await svc.start("c4", "sampled", "1001") is None
    recording = await svc.start_on_demand("c4", "sampled", "1001", requested_by="ops")
    recording.close(0)
    await svc.wait_idle()
    async with store.engine.connect() as conn:
        calls = (await conn.execute(sa.select(recordings.c.call_id))).scalars().all()
    assert calls == ["c4"]


async def test_two_requests_racing_start_one_recording(
    service: tuple[RecordingService, Store],
) -> None:
    svc, store = service
    results = await asyncio.gather(
        svc.start_on_demand("c5", "support", "1001", requested_by="agent:1001"),
        svc.start_on_demand("c5", "support", "1001", requested_by="ops"),
        return_exceptions=True,
    )
    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RecordingRefused)]
    assert len(started) == 1
    assert len(refused) == 1
    assert "already being started" in str(refused[0])
    started[0].close(0)
    await svc.wait_idle()
    assert (await row_of(store, "c5"))["started_by"] == "agent:1001"
