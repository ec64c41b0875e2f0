"""Transcription run by the daemon (engine.daemon.Daemon on the test's loop, real SQLite file,
real PocketSphinx in a worker process): recordings the store holds untranscribed are picked up at
start (what a crash or a restart leaves), an encrypted one is decrypted and its transcript sealed,
an unreadable one is retried with backoff and then counted failed, one indexed while running is
queued from the recording service's hook and its failed QA rule reaches the event bus; the API
answers the transcript, the search and the flagged list, audits reads, and refuses bad arguments.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np
import pytest

import recordings as rec
from engine.config import StorageConfig
from engine.storage import Store, database_url
from engine.storage.schema import recordings
from tests.e2e.conftest import in_process_daemon
from tests.engine.transcription.speech import espeak_8k, stereo_wav
from tests.engine.transcription.test_pipeline import CALLER, DISCLOSURE, _encrypt

SUPERVISOR = "supervisor-token-0123456789"
AGENT_TOKEN = "agent-1001-token-0123456789"
OTHER = "we can talk about the weather tomorrow"
KEY = os.urandom(32)

CONFIG = f"""
[[api.tokens]]
name = "qa-lead"
role = "supervisor"
token = "{SUPERVISOR}"

[[queues]]
name = "sales"
encrypt_recordings = true

[[queues]]
name = "support"

[[agents]]
id = "1001"
password = "alice-secret-1001"
api_token = "{AGENT_TOKEN}"
queues = {{ sales = 0 }}

[transcription]
enabled = true
workers = 1
queues = ["sales"]
max_attempts = 2
retry_backoff_s = 0.2

[[transcription.rules]]
name = "risk disclosure"
type = "required"
queues = ["sales"]
phrases = ["this product carries investment risk", "you may lose money"]
"""


async def _seed(db: Path, rows: list[dict[str, Any]]) -> None:
    store = await Store.open(database_url(StorageConfig(sqlite_path=str(db)), base_dir=db.parent))
    try:
        async with store.engine.begin() as conn:
            await conn.execute(recordings.insert(), rows)
    finally:
        await store.close()


def _row(rid: str, path: Path, queue: str, key_id: str | None, seconds: float) -> dict[str, Any]:
    return {
        "id": rid, "call_id": f"call-{rid}", "queue": queue, "agent_id": "1001",
        "started_at": time.time() - 60, "path": str(path), "codec": "wav", "key_id": key_id,
        "duration_s": seconds, "size_bytes": path.stat().st_size,
    }  # fmt: skip


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
async def test_daemon_transcribes_retries_and_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACD_RECORDING_KEYS", f"k1={base64.b64encode(KEY).decode()}")
    keyring = rec.Keyring({"k1": KEY}, "k1")
    caller = espeak_8k(CALLER, tmp_path, "c")
    lead = np.zeros(4000, np.int16)
    disclosure = np.concatenate([lead, espeak_8k(DISCLOSURE, tmp_path, "a")])
    other = np.concatenate([lead, espeak_8k(OTHER, tmp_path, "o")])
    files = tmp_path / "files"
    files.mkdir()
    plain = stereo_wav(files / "plain.wav", caller, disclosure)
    _encrypt(plain, files / "a.wav", keyring)  # sealed like a recording of an encrypting queue
    (files / "plain.wav").unlink()
    stereo_wav(files / "b.wav", np.zeros_like(other), other)  # a silent caller is not decoded
    (files / "broken.wav").write_bytes(b"RIFF but not really a wave file")
    stereo_wav(files / "support.wav", caller, other)  # a queue not in [transcription] queues
    seconds = len(disclosure) / 8000
    db = tmp_path / "acd.sqlite3"
    # What a daemon that stopped (or crashed) before transcribing them leaves in the index.
    await _seed(
        db,
        [
            _row("a", files / "a.wav", "sales", "k1", seconds),
            _row("broken", files / "broken.wav", "sales", None, 3.0),
            _row("sup", files / "support.wav", "support", None, seconds),
        ],
    )
    auth = {"Authorization": f"Bearer {SUPERVISOR}"}
    async with (
        in_process_daemon(tmp_path, CONFIG) as (daemon, base),
        aiohttp.ClientSession(headers=auth) as http,
    ):
        service = daemon.transcription
        assert service is not None
        await asyncio.wait_for(service.wait_idle(), 120)
        # A recording finished while running: the recording service's hook queues it.
        events = daemon.bus.subscribe()
        await _seed_running(daemon, _row("b", files / "b.wav", "sales", None, seconds))
        daemon.recordings.on_indexed("b")
        await asyncio.wait_for(service.wait_idle(), 120)
        event = msgspec.json.decode(await asyncio.wait_for(events.get(), 5))
        assert (event["type"], event["event"], event["call_id"]) == ("qa", "failed", "call-b")
        assert event["data"]["failed"] == ["risk disclosure"]

        async with http.get(f"{base}/api/v1/calls/call-a/transcript") as resp:
            assert resp.status == 200
            body = await resp.json()
        (t,) = body["transcripts"]
        agent_words = {w["text"] for w in t["words"]["agent"]}
        print("agent:", sorted(agent_words))
        assert {"lose", "money"} <= agent_words
        assert "money" not in {w["text"] for w in t["words"]["caller"]}
        assert (t["encrypted"], t["qa_passed"]) == (True, True)
        (rule,) = t["qa"]
        assert rule["passed"]
        assert rule["evidence"][0]["channel"] == "agent"

        async with http.get(f"{base}/api/v1/transcripts", params={"q": "Money"}) as resp:
            assert resp.status == 200
            assert [r["call_id"] for r in await resp.json()] == ["call-a"]  # sealed, decrypted
        async with http.get(f"{base}/api/v1/transcripts", params={"q": "tomorrow"}) as resp:
            assert [r["call_id"] for r in await resp.json()] == ["call-b"]  # clear, in SQL
        async with http.get(f"{base}/api/v1/qa/flagged") as resp:
            flagged = await resp.json()
        assert [(f["call_id"], f["failed"]) for f in flagged] == [("call-b", ["risk disclosure"])]
        async with http.get(f"{base}/api/v1/calls/call-sup/transcript") as resp:
            assert resp.status == 404  # its queue is not transcribed
        for path, problem in (
            ("/api/v1/transcripts?q=", "q must hold"),
            ("/api/v1/transcripts?q=money&limit=many", "limit must be"),
            ("/api/v1/transcripts?q=money&since=yesterday", "since must be"),
            ("/api/v1/qa/flagged?queues=sales", "unknown query argument 'queues'"),
            ("/api/v1/qa/flagged?limit=0", "limit must be"),
        ):
            async with http.get(base + path) as resp:
                assert resp.status == 400, path
                assert problem in await resp.text(), path
        agent = {"Authorization": f"Bearer {AGENT_TOKEN}"}
        for path in ("/api/v1/calls/call-a/transcript", "/api/v1/qa/flagged"):
            async with http.get(base + path, headers=agent) as resp:
                assert resp.status == 403

        async with http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    assert _sample(metrics, 'acd_transcriptions_total{outcome="done"}') == 2
    assert _sample(metrics, 'acd_transcriptions_total{outcome="retry"}') == 1
    assert _sample(metrics, 'acd_transcriptions_total{outcome="failed"}') == 1
    qa = 'acd_qa_results_total{{outcome="{}",queue="sales",rule="risk disclosure"}}'
    assert _sample(metrics, qa.format("pass")) == 1
    assert _sample(metrics, qa.format("fail")) == 1
    assert _sample(metrics, "acd_transcription_backlog") == 0
    assert _sample(metrics, "acd_transcription_workers_up") == 1
    assert _sample(metrics, "acd_transcription_duration_seconds_count") == 2

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        stored = {r["recording_id"]: r for r in conn.execute("SELECT * FROM transcripts")}
        audits = [
            (r["action"], r["outcome"], r["actor"])
            for r in conn.execute("SELECT * FROM audit_log WHERE action LIKE 'transcript%'")
        ]
    assert set(stored) == {"a", "b"}  # not the broken file, not the support queue's
    assert stored["a"]["text"] is None
    assert b"money" not in bytes(stored["a"]["body"])
    assert "tomorrow" in stored["b"]["text"]
    assert ("transcript_read", "allowed", "qa-lead") in audits
    assert ("transcript_search", "allowed", "qa-lead") in audits
    assert json.loads(stored["b"]["qa"])[0]["passed"] is False


async def _seed_running(daemon: Any, row: dict[str, Any]) -> None:
    async with daemon.store.engine.begin() as conn:
        await conn.execute(recordings.insert().values(**row))


async def test_unusable_model_is_reported_and_calls_stay_ready(tmp_path: Path) -> None:
    """A model directory that exists (check-config accepts it) but holds no model: the start-up
    warm-up names ``transcription.model``, the pool shows as dead in the metrics, and /readyz
    stays 200: calls do not depend on transcription."""
    empty = tmp_path / "model"
    empty.mkdir()
    extra = f'[[queues]]\nname = "sales"\n[transcription]\nenabled = true\nmodel = "{empty}"\n'
    async with (
        in_process_daemon(tmp_path, extra) as (daemon, base),
        aiohttp.ClientSession() as http,
    ):
        service = daemon.transcription
        deadline = time.monotonic() + 60
        while service.dead is None:
            assert time.monotonic() < deadline, "the warm-up never reported the model"
            await asyncio.sleep(0.05)
        assert service.dead.startswith("transcription.model: ")
        assert str(empty) in service.dead
        service.recording_indexed("r1")  # kept for later, not lost: the store still lists it
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    assert _sample(metrics, "acd_transcription_workers_up") == 0
    assert _sample(metrics, "acd_transcription_backlog") == 1


async def test_a_worker_that_dies_is_replaced_and_a_reload_changes_the_rules(
    tmp_path: Path,
) -> None:
    """A worker killed mid-job: the pool is replaced, counted, and the recording retried to a
    stored transcript. Then a reload adds a forbidden-phrase rule: the next recording is checked
    against it (a change of workers would need a restart, and says so)."""
    # Short and on one channel (the silent caller's is not decoded): three decodes here.
    agent = espeak_8k("you may lose money", tmp_path, "a")
    path = tmp_path / "r.wav"
    stereo_wav(path, np.zeros_like(agent), agent)
    extra = (
        '[[queues]]\nname = "sales"\n[transcription]\nenabled = true\nretry_backoff_s = 0.1\n'
        '[[transcription.rules]]\nname = "risk disclosure"\ntype = "required"\n'
        'phrases = ["you may lose money"]\n'
        f'[[api.tokens]]\nname = "ops"\nrole = "admin"\ntoken = "{SUPERVISOR}"\n'
    )
    async with (
        in_process_daemon(tmp_path, extra) as (daemon, base),
        aiohttp.ClientSession() as http,
    ):
        service = daemon.transcription
        await asyncio.wait_for(service.wait_idle(), 120)  # warmed up, nothing in the store
        pool = service._pool
        (worker,) = pool._processes.values()  # the process this test's daemon started
        await _seed_running(daemon, _row("r", path, "sales", None, len(agent) / 8000))
        daemon.recordings.on_indexed("r")
        os.kill(worker.pid, 9)  # out of memory, a crash in native code...
        await asyncio.wait_for(service.wait_idle(), 120)
        assert service._pool is not pool
        async with http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
        async with http.get(f"{base}/api/v1/qa/flagged", headers={"Authorization": "x"}) as resp:
            assert resp.status == 401

        config_file = tmp_path / "acd.toml"
        config_file.write_text(
            config_file.read_text()
            + '[[transcription.rules]]\nname = "no loss talk"\ntype = "forbidden"\n'
            'phrases = ["you may lose money"]\n'
        )
        admin = {"Authorization": f"Bearer {SUPERVISOR}"}
        async with http.post(f"{base}/api/v1/reload", headers=admin) as resp:
            assert resp.status == 200
        await _seed_running(daemon, _row("r2", path, "sales", None, len(agent) / 8000))
        daemon.recordings.on_indexed("r2")
        await asyncio.wait_for(service.wait_idle(), 120)
        async with http.get(f"{base}/api/v1/qa/flagged", headers=admin) as resp:
            flagged = await resp.json()
        assert [(f["recording_id"], f["failed"]) for f in flagged] == [("r2", ["no loss talk"])]
        more_workers = msgspec.structs.replace(
            daemon.config,
            transcription=msgspec.structs.replace(daemon.config.transcription, workers=3),
        )
        assert service.apply(more_workers) == ["transcription.workers"]
    assert _sample(metrics, "acd_transcription_worker_restarts_total") == 1
    assert _sample(metrics, 'acd_transcriptions_total{outcome="retry"}') == 1
    assert _sample(metrics, 'acd_transcriptions_total{outcome="done"}') == 1  # before r2
    assert _sample(metrics, "acd_transcription_workers_up") == 1
    with sqlite3.connect(tmp_path / "acd.sqlite3") as conn:
        (passed,) = conn.execute(
            "SELECT qa_passed FROM transcripts WHERE recording_id = 'r'"
        ).fetchone()
    assert passed == 1


async def test_a_bug_in_the_service_stops_transcription_not_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.transcription.service import TranscriptionService

    async def broken(self: TranscriptionService) -> list[str]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(TranscriptionService, "_pending_from_store", broken)
    extra = '[[queues]]\nname = "sales"\n[transcription]\nenabled = true\n'
    async with (
        in_process_daemon(tmp_path, extra) as (daemon, base),
        aiohttp.ClientSession() as http,
    ):
        deadline = time.monotonic() + 60
        while daemon.transcription.dead is None:
            assert time.monotonic() < deadline, "the failure was never noticed"
            await asyncio.sleep(0.05)
        assert "a bug" in daemon.transcription.dead
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    assert _sample(metrics, 'acd_unexpected_errors_total{where="transcription"}') == 1
    assert _sample(metrics, "acd_transcription_workers_up") == 0
