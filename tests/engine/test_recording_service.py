"""The engine's recording service with the real writer, real files and a real SQLite index."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from engine.config import parse_config
from engine.recording.service import RecordingService
from engine.storage import Store
from engine.storage.schema import recordings
from sip.rtp.g711 import encode_pcmu

CONFIG = """
[recordings]
dir = "{dir}"
flush_interval_s = 0.2
retention_days = 30
key_file = "{keys}"

[[queues]]
name = "support"

[[queues]]
name = "bank"
encrypt_recordings = true
retention_days = 3650

[[queues]]
name = "quiet"
record = "never"
"""


def tone(hz: float, samples: int, start: int) -> np.ndarray:
    t = (np.arange(samples) + start) / 8000
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def dominant_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / 8000)[np.argmax(spectrum)])


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[RecordingService, Store]]:
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps({"active": "k1", "keys": {"k1": base64.b64encode(os.urandom(32)).decode()}})
    )
    keys.chmod(0o600)
    cfg = parse_config(CONFIG.format(dir=tmp_path / "rec", keys=keys), "t.toml")
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3")
    svc = RecordingService(cfg, store, base_dir=tmp_path)
    await svc.start_writer()
    yield svc, store
    await svc.stop()
    await store.close()


async def record_call(svc: RecordingService, call_id: str, queue: str, seconds: float = 2.0) -> str:
    recording = await svc.start(call_id, queue, "1001")
    assert recording is not None
    frames = int(seconds * 50)
    for i in range(frames):
        pos = i * 160
        recording.feed(0, pos, encode_pcmu(tone(440, 160, pos)), "PCMU")  # caller: left
        recording.feed(1, pos, encode_pcmu(tone(880, 160, pos)), "PCMU")  # agent: right
    recording.close(frames * 160)
    await svc.wait_idle()
    return str(recording.recording_id) if hasattr(recording, "recording_id") else call_id


async def index_row(store: Store, call_id: str) -> dict[str, object]:
    async with store.engine.connect() as conn:
        row = (
            (await conn.execute(sa.select(recordings).where(recordings.c.call_id == call_id)))
            .mappings()
            .one()
        )
    return dict(row)


async def test_recorded_call_is_stereo_in_sync_and_indexed(
    service: tuple[RecordingService, Store],
) -> None:
    svc, store = service
    await record_call(svc, "call-1", "support")
    row = await index_row(store, "call-1")
    assert row["queue"] == "support"
    assert row["agent_id"] == "1001"
    assert row["key_id"] is None
    assert row["duration_s"] == pytest.approx(2.0, abs=0.02)
    path = Path(str(row["path"]))
    assert row["size_bytes"] == path.stat().st_size
    import hashlib

    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).astype(float)
    assert dominant_hz(pcm[:, 0]) == pytest.approx(440, abs=5)
    assert dominant_hz(pcm[:, 1]) == pytest.approx(880, abs=5)


async def test_policy_never_and_encryption_per_queue(
    service: tuple[RecordingService, Store],
) -> None:
    svc, store = service
    assert await svc.start("call-q", "quiet", "1001") is None
    assert await svc.start("call-x", "no-such-queue", None) is None
    await record_call(svc, "call-b", "bank")
    row = await index_row(store, "call-b")
    assert row["key_id"] == "k1"
    raw = Path(str(row["path"])).read_bytes()
    assert b"RIFF" not in raw[:64]
    size, pieces = svc.open_stream(str(row["path"]))
    plain = b"".join(pieces)
    assert len(plain) == size
    assert plain[:4] == b"RIFF"


async def test_purge_respects_retention_and_legal_hold(
    service: tuple[RecordingService, Store],
) -> None:
    svc, store = service
    for call in ("old-1", "old-2", "old-bank"):
        await record_call(svc, call, "bank" if call == "old-bank" else "support", seconds=0.2)
    async with store.engine.begin() as conn:
        ninety_days_ago = time.time() - 90 * 86400
        await conn.execute(recordings.update().values(started_at=ninety_days_ago))
        await conn.execute(
            recordings.update().where(recordings.c.call_id == "old-2").values(legal_hold=True)
        )
    dry = await svc.purge(dry_run=True)
    assert sorted(r.recording_id for r in dry.deleted) == [(await index_row(store, "old-1"))["id"]]
    assert Path(
        str((await index_row(store, "old-1"))["path"])
    ).exists()  # a dry run deletes nothing
    report = await svc.purge()
    assert len(report.deleted) == 1
    assert not Path(str((await index_row(store, "old-1"))["path"])).exists()
    assert (await index_row(store, "old-1"))["purged_at"] is not None
    assert Path(str((await index_row(store, "old-2"))["path"])).exists()  # legal hold
    assert Path(str((await index_row(store, "old-bank"))["path"])).exists()  # 10-year retention


async def test_crash_left_file_is_repaired_and_marked_at_start(tmp_path: Path) -> None:
    cfg = parse_config(
        f'[recordings]\ndir = "{tmp_path / "rec"}"\n[[queues]]\nname = "support"\n', "t.toml"
    )
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3")
    # What a SIGKILL leaves: an index row never completed and a WAV whose header says 0 data bytes.
    path = tmp_path / "rec" / "crashed.wav"
    path.parent.mkdir(parents=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(2 * 8000, "<i2").tobytes())
    data = bytearray(path.read_bytes())
    data[40:44] = (0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    async with store.engine.begin() as conn:
        await conn.execute(
            recordings.insert().values(id="r-crash", call_id="c", queue="support", started_at=1.0,
                                       path=str(path), codec="wav")
        )  # fmt: skip
    svc = RecordingService(cfg, store, base_dir=tmp_path)
    await svc.start_writer()
    await svc.stop()
    async with store.engine.connect() as conn:
        row = (await conn.execute(sa.select(recordings))).mappings().one()
    await store.close()
    assert row["recovered"] is True
    assert row["duration_s"] == pytest.approx(1.0)
    assert row["error"] == "recovered after a crash"
    with wave.open(str(path)) as w:
        assert w.getnframes() == 8000


@pytest.fixture
async def impatient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RecordingService, Store, Path]]:
    """The service on a store whose SQLite busy timeout is 50 ms, so a lock held by another
    connection refuses its writes quickly ("database is locked")."""
    from engine.storage import store as store_module

    monkeypatch.setattr(store_module, "_SQLITE_BUSY_TIMEOUT_MS", 50)
    db = tmp_path / "acd.sqlite3"
    cfg = parse_config(
        f'[recordings]\ndir = "{tmp_path / "rec"}"\nflush_interval_s = 0.2\n'
        '[[queues]]\nname = "support"\n',
        "t.toml",
    )
    store = await Store.open(f"sqlite+aiosqlite:///{db}")
    svc = RecordingService(cfg, store, base_dir=tmp_path)
    await svc.start_writer()
    yield svc, store, db
    await svc.stop()
    await store.close()


def feed_tone(recording: object, seconds: float) -> int:
    frames = int(seconds * 50)
    for i in range(frames):
        pos = i * 160
        recording.feed(0, pos, encode_pcmu(tone(440, 160, pos)), "PCMU")  # type: ignore[attr-defined]
        recording.feed(1, pos, encode_pcmu(tone(880, 160, pos)), "PCMU")  # type: ignore[attr-defined]
    return frames * 160


async def test_a_locked_store_at_the_start_loses_neither_the_call_nor_its_index_row(
    impatient: tuple[RecordingService, Store, Path],
) -> None:
    """Another connection holds the database locked through the start's three tries: the
    recording starts anyway (the call is not dropped), /readyz's check says rows wait, and the
    complete row is inserted when the recording closes, once the store takes writes again."""
    svc, store, db = impatient
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    recording = await svc.start("call-locked", "support", "1001")
    assert recording is not None
    assert svc.index_errors == 1
    assert svc.healthy() == "recording index writes failing: 1 rows wait for the store"
    holder.execute("ROLLBACK")
    holder.close()
    recording.close(feed_tone(recording, 1.0))
    await svc.wait_idle()
    row = await index_row(store, "call-locked")
    assert row["duration_s"] == pytest.approx(1.0, abs=0.02)
    assert row["size_bytes"] == Path(str(row["path"])).stat().st_size
    assert svc.healthy() is None


async def test_a_lock_released_between_tries_is_a_retry_not_an_error(
    impatient: tuple[RecordingService, Store, Path],
) -> None:
    svc, store, db = impatient
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.15, lambda: (holder.execute("ROLLBACK"), holder.close()))
    recording = await svc.start("call-retried", "support", "1001")
    assert recording is not None
    assert svc.index_errors == 0
    row = await index_row(store, "call-retried")  # written by the start's second try
    assert row["duration_s"] is None
    recording.close(feed_tone(recording, 0.5))
    await svc.wait_idle()
    assert (await index_row(store, "call-retried"))["duration_s"] == pytest.approx(0.5, abs=0.02)
