"""Retention: which recordings are past their queue's retention, and deleting their files.

How this works: the index (the engine's CDR store) hands rows in; ``select_for_purge`` is a pure
function of rows, policy and ``now`` (epoch seconds, passed in so tests and dry runs are exact).
A row is purged when its queue keeps recordings for N days and it started more than N days before
``now``; rows under legal hold never are, and queues with no retention (``None``) keep forever.
``purge`` deletes the files only and returns what happened per row, so the engine updates the index
in its own transaction. A row whose path escapes the recordings root is refused, not deleted: a
corrupted or hostile index must not turn purge into "delete any file".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True, slots=True)
class IndexRow:
    """The fields of an index row retention needs."""

    recording_id: str
    queue: str
    started_at: float  # epoch seconds (UTC)
    legal_hold: bool
    path: str


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days to keep per queue; ``None`` means keep forever."""

    days_by_queue: Mapping[str, int | None] = field(default_factory=dict)
    default_days: int | None = None

    def __post_init__(self) -> None:
        for queue, days in {**self.days_by_queue, "<default>": self.default_days}.items():
            if days is not None and days < 0:
                raise ValueError(f"retention for {queue!r} must be >= 0 days, got {days}")

    def days_for(self, queue: str) -> int | None:
        return self.days_by_queue.get(queue, self.default_days)


def select_for_purge(
    rows: Iterable[IndexRow], policy: RetentionPolicy, now: float
) -> list[IndexRow]:
    out: list[IndexRow] = []
    for row in rows:
        if row.legal_hold:
            continue
        days = policy.days_for(row.queue)
        if days is None:
            continue
        if now - row.started_at > days * SECONDS_PER_DAY:
            out.append(row)
    return out


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """Per-row outcome; the engine deletes (or marks) ``deleted`` and ``missing`` index rows."""

    deleted: tuple[IndexRow, ...]  # file removed now (or would be, in a dry run)
    missing: tuple[IndexRow, ...]  # file already gone: the index row is stale
    failed: tuple[tuple[IndexRow, str], ...]  # not deleted: why (permission, outside root, ...)
    dry_run: bool
    bytes_freed: int


def purge(
    rows: Iterable[IndexRow],
    policy: RetentionPolicy,
    now: float,
    *,
    dry_run: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> PurgeReport:
    """Delete the files of the rows ``select_for_purge`` picks. Never touches legal-hold rows."""
    root_path = Path(root).resolve() if root is not None else None
    deleted: list[IndexRow] = []
    missing: list[IndexRow] = []
    failed: list[tuple[IndexRow, str]] = []
    freed = 0
    for row in select_for_purge(rows, policy, now):
        path = Path(row.path)
        if root_path is not None and not path.resolve().is_relative_to(root_path):
            failed.append((row, f"path is outside the recordings root {root_path}"))
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            missing.append(row)
            continue
        except OSError as exc:
            failed.append((row, str(exc)))
            continue
        if not dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                missing.append(row)
                continue
            except OSError as exc:
                failed.append((row, str(exc)))
                continue
        deleted.append(row)
        freed += size
    return PurgeReport(tuple(deleted), tuple(missing), tuple(failed), dry_run, freed)
