"""Transcripts in the store (SQLite and PostgreSQL): sealed when the recording is encrypted,
deleted with the recording by the retention purge, kept under its legal hold."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import recordings as rec
from engine.config import StorageConfig, TranscriptionConfig, parse_config
from engine.recording.service import RecordingService
from engine.storage import Store, database_url, head_revision
from engine.storage.schema import recordings, transcripts
from engine.transcription.asr import Word
from engine.transcription.pipeline import Transcript, transcribe_recording
from engine.transcription.qa import RuleResult
from engine.transcription.store import load_transcript, save_transcript
from tests.engine.test_recording_service import CONFIG, index_row, record_call
from tests.engine.transcription.test_pipeline import _Recorder

KEYRING = rec.Keyring({"k1": os.urandom(32)}, "k1")


def transcript(words: str) -> Transcript:
    agent = [Word(w, i * 0.3, i * 0.3 + 0.2, 0.9) for i, w in enumerate(words.split())]
    return Transcript(
        "test", 3.0, {"caller": [Word("hello", 0.1, 0.4, 0.8)], "agent": agent}, {"caller": [], "agent": []},
        [], 0, [RuleResult("risk disclosure", "required", False)],
    )  # fmt: skip


def recording_row(rid: str, key_id: str | None) -> dict[str, object]:
    return {
        "id": rid, "call_id": f"call-{rid}", "queue": "sales", "agent_id": "1001",
        "started_at": time.time(), "key_id": key_id,
    }  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = database_url(StorageConfig(sqlite_path="var/cdr.sqlite3"), base_dir=tmp_path)
    else:
        url = database_url(StorageConfig(url=request.getfixturevalue("postgres_url")))
    s = await Store.open(url)
    async with s.engine.begin() as conn:
        await conn.execute(transcripts.delete())
    yield s
    await s.close()


async def test_clear_and_sealed_round_trip(store: Store) -> None:
    assert await store.revision() == head_revision()
    await save_transcript(store, recording_row("r1", None), transcript("you may lose money"), None)
    await save_transcript(
        store, recording_row("r2", "k1"), transcript("secret words here"), KEYRING
    )
    async with store.engine.connect() as conn:
        rows = {r.recording_id: r for r in (await conn.execute(sa.select(transcripts))).all()}
    assert "agent: you may lose money" in rows["r1"].text
    assert rows["r1"].qa_passed is False
    assert rows["r1"].qa == [
        {"rule": "risk disclosure", "type": "required", "passed": False, "times": []}
    ]
    assert rows["r2"].text is None
    assert rows["r2"].key_id == "k1"
    assert b"secret" not in bytes(rows["r2"].body)
    got = await load_transcript(store, "r2", KEYRING)
    assert got is not None
    assert [w["text"] for w in got["words"]["agent"]] == ["secret", "words", "here"]
    assert (await load_transcript(store, "r1", None))["words"]["agent"][0]["text"] == "you"  # type: ignore[index]
    with pytest.raises(rec.KeyringError):
        await load_transcript(store, "r2", None)
    # a sealed body moved onto another recording's row does not open
    async with store.engine.begin() as conn:
        await conn.execute(transcripts.update().where(transcripts.c.recording_id == "r1")
                           .values(body=rows["r2"].body, key_id="k1"))  # fmt: skip
    with pytest.raises(rec.ChunkAuthenticationError):
        await load_transcript(store, "r1", KEYRING)
    assert await load_transcript(store, "nope", KEYRING) is None


async def test_purge_deletes_the_transcript_and_legal_hold_keeps_it(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(
        f'{{"active": "k1", "keys": {{"k1": "{base64.b64encode(os.urandom(32)).decode()}"}}}}'
    )
    keys.chmod(0o600)
    cfg = parse_config(CONFIG.format(dir=tmp_path / "rec", keys=keys), "t.toml")
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3")
    svc = RecordingService(cfg, store, base_dir=tmp_path)
    await svc.start_writer()
    try:
        for call in ("gone", "held"):
            await record_call(svc, call, "bank", seconds=0.5)  # encrypted queue
            row = await index_row(store, call)
            t = transcribe_recording(
                _Recorder(), str(row["path"]), "wav", svc.keyring, [], TranscriptionConfig(), "bank"
            )
            assert t.words["agent"]  # the fake heard the (decrypted) tone
            await save_transcript(store, row, t, svc.keyring)
        async with store.engine.begin() as conn:
            await conn.execute(recordings.update().values(started_at=time.time() - 4000 * 86400))
            await conn.execute(
                recordings.update().where(recordings.c.call_id == "held").values(legal_hold=True)
            )
        report = await svc.purge()
        assert len(report.deleted) == 1
        async with store.engine.connect() as conn:
            left = (await conn.execute(sa.select(transcripts.c.call_id))).scalars().all()
        assert left == ["held"]
    finally:
        await svc.stop()
        await store.close()
