"""``acd recordings purge --config`` against a real SQLite store and real recording files.

The store is built the daemon's way (``Store.open`` runs the migrations) and filled by the real
``RecordingService`` writing real WAV files; rows are then aged by moving ``started_at`` back. The
command runs as an operator runs it (a subprocess, in the daemon's working directory, with
relative paths in the config), and must agree with the daemon's own scheduled purge.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.config import load_config
from engine.recording.service import PURGE_JOB_ACTOR, RecordingService
from engine.storage import Store
from engine.storage.schema import recordings

ACD = [sys.executable, "-m", "engine.cli"]
DAY = 86_400

CONFIG = """
[storage]
sqlite_path = "var/acd.sqlite3"

[recordings]
dir = "var/recordings"
flush_interval_s = 0.2
retention_days = 30

[[queues]]
name = "support"

[[queues]]
name = "bank"
retention_days = 3650
"""

# call id -> (queue, age in days, legal hold)
CALLS = {
    "old": ("support", 90, False),  # past 30 days: purged
    "older": ("support", 400, False),  # purged
    "held": ("support", 90, True),  # past retention, but on legal hold: never touched
    "fresh": ("support", 2, False),  # within retention
    "bank": ("bank", 400, False),  # the bank keeps 10 years
    "gone": ("support", 60, False),  # past retention, file already deleted by hand
}


def acd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ACD, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


async def _build(workdir: Path) -> dict[str, dict[str, object]]:
    config = load_config(workdir / "acd.toml")
    store = await Store.open(f"sqlite+aiosqlite:///{workdir}/var/acd.sqlite3")
    svc = RecordingService(config, store, base_dir=workdir)
    await svc.start_writer()
    try:
        for call_id, (queue, _age, _hold) in CALLS.items():
            recording = await svc.start(call_id, queue, "1001")
            assert recording is not None
            for i in range(25):  # half a second of u-law on both channels
                recording.feed(0, i * 160, b"\x10" * 160, "PCMU")
                recording.feed(1, i * 160, b"\x20" * 160, "PCMU")
            recording.close(25 * 160)
        await svc.wait_idle()
    finally:
        await svc.stop()
    now = time.time()
    async with store.engine.begin() as conn:
        for call_id, (_queue, age, hold) in CALLS.items():
            await conn.execute(
                recordings.update()
                .where(recordings.c.call_id == call_id)
                .values(started_at=now - age * DAY, legal_hold=hold)
            )
        rows = (await conn.execute(sa.select(recordings))).mappings().all()
    await store.close()
    by_call = {str(r["call_id"]): dict(r) for r in rows}
    Path(str(by_call["gone"]["path"])).unlink()
    return by_call


@pytest.fixture
def daemon_dir(tmp_path: Path) -> tuple[Path, dict[str, dict[str, object]]]:
    (tmp_path / "acd.toml").write_text(CONFIG)
    return tmp_path, asyncio.run(_build(tmp_path))


def index(workdir: Path) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return {r["call_id"]: r for r in db.execute("SELECT * FROM recordings")}


def audit_rows(workdir: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM audit_log ORDER BY id").fetchall()


def table(stdout: str) -> dict[str, list[str]]:
    """recording id -> [queue, age_days, size, result...] from the printed table."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ID"))
    return {line.split()[0]: line.split()[1:] for line in lines[header + 1 : -1]}


def test_dry_run_lists_and_deletes_nothing_then_the_real_run_deletes_exactly_the_expired(
    daemon_dir: tuple[Path, dict[str, dict[str, object]]],
) -> None:
    workdir, rows = daemon_dir
    ids = {call: str(row["id"]) for call, row in rows.items()}
    files = {call: Path(str(row["path"])) for call, row in rows.items()}

    dry = acd(workdir, "recordings", "purge", "--config", "acd.toml", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing deleted" in dry.stdout
    listed = table(dry.stdout)
    assert set(listed) == {ids["old"], ids["older"], ids["gone"], ids["held"]}
    assert listed[ids["old"]][:4] == ["support", "90.0", str(files["old"].stat().st_size),
                                      "would"]  # fmt: skip
    assert " ".join(listed[ids["held"]][3:]) == "kept: legal hold"
    assert " ".join(listed[ids["gone"]][3:]) == "file already gone"
    assert dry.stdout.splitlines()[-1].startswith("2 would be deleted")
    assert all(files[c].exists() for c in CALLS if c != "gone")
    assert all(row["purged_at"] is None for row in index(workdir).values())
    assert audit_rows(workdir) == []

    real = acd(workdir, "recordings", "purge", "--config", "acd.toml", "--json")
    assert real.returncode == 0, real.stderr
    doc = json.loads(real.stdout)
    assert doc["dry_run"] is False
    results = {r["id"]: r["result"] for r in doc["recordings"]}
    assert results == {
        ids["old"]: "deleted",
        ids["older"]: "deleted",
        ids["gone"]: "file already gone",
        ids["held"]: "kept: legal hold",
    }
    assert doc["bytes_freed"] == sum(int(str(rows[c]["size_bytes"])) for c in ("old", "older"))
    assert not files["old"].exists()
    assert not files["older"].exists()
    for kept in ("held", "fresh", "bank"):
        assert files[kept].exists(), kept
    after = index(workdir)
    # The rows stay (the CDR links them), marked purged, as the daemon's job marks them.
    assert {c for c, r in after.items() if r["purged_at"] is not None} == {"old", "older", "gone"}
    audits = audit_rows(workdir)
    assert sorted(a["object_id"] for a in audits) == sorted([ids["old"], ids["older"], ids["gone"]])
    for a in audits:
        assert (a["action"], a["outcome"], a["object_type"]) == (
            "recording_purge",
            "done",
            "recording",
        )
        assert str(a["actor"]).startswith("cli")
        detail = json.loads(a["detail"])
        assert detail["queue"] == "support"
        assert detail["retention_days"] == 30

    again = acd(workdir, "recordings", "purge", "--config", "acd.toml")
    assert again.returncode == 0, again.stderr
    assert set(table(again.stdout)) == {ids["held"]}  # only the hold is left to report
    assert again.stdout.splitlines()[-1].startswith("0 deleted")
    assert len(audit_rows(workdir)) == 3


async def test_the_daemons_job_is_the_same_purge(
    daemon_dir: tuple[Path, dict[str, dict[str, object]]],
) -> None:
    workdir, rows = daemon_dir
    config = load_config(workdir / "acd.toml")
    store = await Store.open(f"sqlite+aiosqlite:///{workdir}/var/acd.sqlite3")
    try:
        svc = RecordingService(config, store, base_dir=workdir)
        report = await svc.purge()
    finally:
        await store.close()
    assert {r.recording_id for r in report.deleted} == {rows["old"]["id"], rows["older"]["id"]}
    assert {r.recording_id for r in report.missing} == {rows["gone"]["id"]}
    assert Path(str(rows["held"]["path"])).exists()
    audits = audit_rows(workdir)
    assert {a["actor"] for a in audits} == {PURGE_JOB_ACTOR}
    assert len(audits) == 3
    # The CLI afterwards finds nothing more to do.
    rerun = acd(workdir, "recordings", "purge", "--config", "acd.toml", "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert [r["result"] for r in json.loads(rerun.stdout)["recordings"]] == ["kept: legal hold"]


def test_bad_config_and_missing_store_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[recordings]\nretention_days = "thirty"\n')
    result = acd(tmp_path, "recordings", "purge", "--config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("acd recordings purge: invalid config: ")
    assert "retention_days" in result.stderr

    (tmp_path / "ok.toml").write_text(CONFIG)
    result = acd(tmp_path, "recordings", "purge", "--config", "ok.toml", "--dry-run")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no store at" in result.stderr
    assert not (tmp_path / "var" / "acd.sqlite3").exists()  # not created empty

    result = acd(tmp_path, "recordings", "purge")
    assert result.returncode == 2
    assert "--config" in result.stderr


def test_json_export_mode_still_works_through_acd(tmp_path: Path) -> None:
    old = tmp_path / "rec" / "old.wav"
    old.parent.mkdir()
    old.write_bytes(b"RIFF")
    now = time.time()
    (tmp_path / "rows.json").write_text(
        json.dumps(
            [{"recording_id": "r1", "queue": "q", "started_at": now - 40 * DAY, "path": str(old)}]
        )
    )
    (tmp_path / "ret.json").write_text(json.dumps({"default_days": 30}))
    result = acd(
        tmp_path, "recordings", "purge", "--index", "rows.json", "--retention", "ret.json",
        "--root", str(tmp_path / "rec"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"] == ["r1"]
    assert not old.exists()
