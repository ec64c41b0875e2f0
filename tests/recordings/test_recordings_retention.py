"""Retention selection and purge with real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recordings import IndexRow, RetentionPolicy, purge, recordings_cli_main, select_for_purge

DAY = 86_400.0
NOW = 1_800_000_000.0


def _rows(tmp_path: Path) -> list[IndexRow]:
    spec = [
        ("old-sales", "sales", 40, False),
        ("new-sales", "sales", 10, False),
        ("old-held", "sales", 400, True),
        ("old-support", "support", 100, False),
        ("edge-sales", "sales", 30, False),  # exactly 30 days: kept (strictly older purges)
        ("old-vip", "vip", 5000, False),  # vip keeps forever
        ("old-other", "other", 8, False),  # default 7 days
    ]
    rows = []
    for rid, queue, age_days, hold in spec:
        path = tmp_path / "rec" / f"{rid}.wav"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 100)
        rows.append(IndexRow(rid, queue, NOW - age_days * DAY, hold, str(path)))
    return rows


POLICY = RetentionPolicy({"sales": 30, "support": 90, "vip": None}, default_days=7)


def test_select(tmp_path: Path) -> None:
    picked = {r.recording_id for r in select_for_purge(_rows(tmp_path), POLICY, NOW)}
    assert picked == {"old-sales", "old-support", "old-other"}


def test_purge_deletes_files_only_and_reports(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    Path(rows[3].path).unlink()  # old-support's file already gone
    report = purge(rows, POLICY, NOW, root=tmp_path / "rec")
    assert {r.recording_id for r in report.deleted} == {"old-sales", "old-other"}
    assert {r.recording_id for r in report.missing} == {"old-support"}
    assert report.failed == ()
    assert report.bytes_freed == 200
    left = sorted(p.stem for p in (tmp_path / "rec").iterdir())
    assert left == ["edge-sales", "new-sales", "old-held", "old-vip"]


def test_dry_run_deletes_nothing(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    report = purge(rows, POLICY, NOW, dry_run=True)
    assert report.dry_run
    assert len(report.deleted) == 3
    assert all(Path(r.path).exists() for r in rows)


def test_path_outside_root_refused(tmp_path: Path) -> None:
    victim = tmp_path / "etc-passwd"
    victim.write_text("root:x:0:0")
    row = IndexRow(
        "evil", "sales", NOW - 100 * DAY, False, str(tmp_path / "rec" / ".." / victim.name)
    )
    (tmp_path / "rec").mkdir()
    report = purge([row], POLICY, NOW, root=tmp_path / "rec")
    assert victim.exists()
    assert report.deleted == ()
    assert "outside" in report.failed[0][1]


def test_negative_retention_rejected() -> None:
    with pytest.raises(ValueError, match="retention"):
        RetentionPolicy({"a": -1})


def test_cli_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(tmp_path)
    index = tmp_path / "index.json"
    index.write_text(
        json.dumps(
            [
                {
                    "recording_id": r.recording_id,
                    "queue": r.queue,
                    "started_at": r.started_at,
                    "legal_hold": r.legal_hold,
                    "path": r.path,
                }
                for r in rows
            ]
        )
    )
    ret = tmp_path / "ret.json"
    ret.write_text(
        json.dumps({"default_days": 7, "queues": {"sales": 30, "support": 90, "vip": None}})
    )
    args = ["purge", "--index", str(index), "--retention", str(ret), "--now", str(NOW)]
    assert recordings_cli_main([*args, "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] is True
    assert sorted(out["deleted"]) == ["old-other", "old-sales", "old-support"]
    assert Path(rows[0].path).exists()
    assert recordings_cli_main([*args, "--root", str(tmp_path / "rec")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bytes_freed"] == 300
    assert not Path(rows[0].path).exists()
    assert Path(rows[2].path).exists()  # legal hold
