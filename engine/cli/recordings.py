"""``acd recordings ...``: the engine's front door to recordings maintenance.

How this works: ``acd recordings purge --config PATH [--dry-run]`` purges against the daemon's own
store (the SQLite file or PostgreSQL URL in ``[storage]``) with the per-queue retention of that
config, through ``engine.recording.service.purge_index``: the very function the daemon's scheduled
job runs, so the two cannot disagree on what expires, never touch a legal-hold file, and both mark
the index rows ``purged_at`` and write one audit row per deletion. Every other form goes unchanged
to ``recordings.cli`` (decrypt, repair, and purge from a JSON export with ``--index``/``--retention``):
``recordings/`` must not import the engine, so the engine owns the part that needs the store.

Relative paths in the config (``[storage] sqlite_path``, ``[recordings] dir``) resolve against the
working directory, as they do for ``acd run``: run it where the daemon runs. A SQLite file that does
not exist is an error, not a new empty store. Exit codes: 0 done, 1 the store could not be used or
a file could not be deleted (named), 2 a bad config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from engine.config import Config, ConfigError
from engine.plugins import load_config
from engine.recording.service import (
    IndexPurge,
    PurgeLine,
    purge_index,
    recordings_root,
    retention_policy,
)
from engine.storage import StorageError, Store, database_url
from recordings.cli import recordings_cli_main

PROG = "acd recordings purge"


def recordings_main(argv: Sequence[str]) -> int:
    """``acd recordings ARGS``: the live-index purge here, everything else in recordings.cli."""
    args = list(argv)
    if args[:1] == ["purge"] and not any(a == "--index" or a.startswith("--index=") for a in args):
        return purge_main(args[1:])
    return recordings_cli_main(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Delete recordings past their queue's retention from the daemon's own store "
        "(the same purge the daemon runs every [recordings] purge_interval_s). Legal-hold "
        "recordings are never touched; they are listed when the hold is what keeps them. "
        "Deletions are written to the audit log. For a JSON export of index rows instead: "
        "acd recordings purge --index ROWS.json --retention RETENTION.json [--dry-run].",
    )
    p.add_argument("--config", required=True, metavar="PATH", help="the daemon's config (acd.toml)")
    p.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    return p


def purge_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        config, _plugins = load_config(args.config)
    except ConfigError as exc:
        print(f"{PROG}: invalid config: {exc}", file=sys.stderr)
        return 2
    base_dir = Path.cwd()
    url = database_url(config.storage, base_dir=base_dir)
    problem = _missing_sqlite_file(url)
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 1
    policy = retention_policy(config)
    if policy.default_days is None and not any(
        d is not None for d in policy.days_by_queue.values()
    ):
        print(
            f"{PROG}: {args.config}: no retention configured ([recordings] retention_days and "
            "every queue's retention_days are 0 or unset): recordings are kept forever",
            file=sys.stderr,
        )
    try:
        result = asyncio.run(_purge(config, url, base_dir, dry_run=args.dry_run))
    except StorageError as exc:
        print(f"{PROG}: cannot use the store {_safe(url)}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_as_json(result)))
    else:
        _print_table(result, _safe(url))
    for line in result.lines:
        if line.outcome == "failed":
            print(f"{PROG}: not deleted {line.recording_id}: {line.why}", file=sys.stderr)
    return 1 if result.report.failed else 0


async def _purge(config: Config, url: str, base_dir: Path, *, dry_run: bool) -> IndexPurge:
    store = await Store.open(url)
    try:
        return await purge_index(
            store,
            retention_policy(config),
            recordings_root(config, base_dir),
            now=time.time(),
            dry_run=dry_run,
            actor=_actor(),
        )
    except sa.exc.SQLAlchemyError as exc:  # the index read or the marking failed
        raise StorageError(str(exc)) from exc
    finally:
        await store.close()


def _missing_sqlite_file(url: str) -> str | None:
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1]
    if path in ("", ":memory:") or Path(path).is_file():
        return None
    return (
        f"no store at {path}: run it in the daemon's working directory (relative paths in the "
        "config resolve against it), or give [storage] an absolute path"
    )


def _actor() -> str:
    """Who, for the audit log: the operating-system user running the command."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (OSError, KeyError):  # no login name in a bare container
        return "cli"


def _safe(url: str) -> str:
    """The store for messages: a SQLite file's path, or the URL without its password."""
    if url.startswith("sqlite") and ":///" in url:
        return url.split(":///", 1)[1]
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _size(line: PurgeLine) -> str:
    return "-" if line.size_bytes is None else str(line.size_bytes)


def _print_table(result: IndexPurge, where: str) -> None:
    report = result.report
    print(
        f"recordings purge of {where}" + (" (dry run: nothing deleted)" if report.dry_run else "")
    )
    if result.lines:
        width = max(len(line.recording_id) for line in result.lines)
        print(f"{'ID':<{width}}  {'QUEUE':<16} {'AGE_DAYS':>8} {'SIZE_BYTES':>11}  RESULT")
        for line in result.lines:
            outcome = f"{line.outcome}: {line.why}" if line.why else line.outcome
            print(
                f"{line.recording_id:<{width}}  {line.queue:<16} {line.age_days:>8.1f} "
                f"{_size(line):>11}  {outcome}"
            )
    verb = "would be deleted" if report.dry_run else "deleted"
    held = sum(1 for line in result.lines if line.outcome == "kept: legal hold")
    print(
        f"{len(report.deleted)} {verb} ({report.bytes_freed} bytes), "
        f"{len(report.missing)} already gone, {held} kept on legal hold, "
        f"{len(report.failed)} failed"
    )


def _as_json(result: IndexPurge) -> dict[str, object]:
    return {
        "dry_run": result.report.dry_run,
        "bytes_freed": result.report.bytes_freed,
        "recordings": [
            {
                "id": line.recording_id,
                "queue": line.queue,
                "age_days": line.age_days,
                "size_bytes": line.size_bytes,
                "path": line.path,
                "result": line.outcome,
                **({"why": line.why} if line.why else {}),
            }
            for line in result.lines
        ],
    }
