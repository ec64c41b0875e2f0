"""``acd recordings ...`` operator commands: decrypt, repair, purge.

How this works: ``recordings_cli_main(argv)`` parses its own sub-arguments and returns an exit code,
so the engine's CLI mounts it as a subcommand without knowing its options. Exit codes: 0 success,
1 the operation failed (named on stderr), 2 usage error (argparse).

``purge`` here works from a JSON export of index rows (``--index``/``--retention``) because the index
lives in the engine's store. ``acd recordings purge --config acd.toml`` (no ``--index``) never
reaches this module: the engine answers it from its live store (engine/cli/recordings.py), with the
same ``recordings.retention.purge`` its scheduled job uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recordings.crypto import (
    Keyring,
    KeyringError,
    RecordingCryptoError,
    decrypt_file,
)
from recordings.recovery import recover_file
from recordings.retention import IndexRow, RetentionPolicy, purge


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acd recordings", description="Recording maintenance.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("decrypt", help="decrypt an encrypted recording to a playable file")
    d.add_argument("src", type=Path)
    d.add_argument("-o", "--output", type=Path, required=True, help="destination ('-' = stdout)")
    d.add_argument(
        "--key-file",
        type=Path,
        help="JSON keyring (default: the ACD_RECORDING_KEYS environment variable)",
    )

    r = sub.add_parser(
        "repair", help="make recordings left by a crash playable (WAV sizes, torn tails)"
    )
    r.add_argument("files", type=Path, nargs="+")

    g = sub.add_parser(
        "purge",
        help="delete recordings past their queue's retention",
        description="Purge from a JSON export of index rows. To purge the daemon's own index "
        "with the retention of its config, use: acd recordings purge --config acd.toml "
        "[--dry-run].",
    )
    g.add_argument("--index", type=Path, required=True, help="JSON list of index rows")
    g.add_argument(
        "--retention",
        type=Path,
        required=True,
        help='JSON {"default_days": N|null, "queues": {"name": N|null}}',
    )
    g.add_argument("--root", type=Path, help="refuse to delete anything outside this directory")
    g.add_argument("--now", type=float, help="epoch seconds (default: the current time)")
    g.add_argument("--dry-run", action="store_true")
    return p


def recordings_cli_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        if args.command == "decrypt":
            return _decrypt(args)
        if args.command == "repair":
            return _repair(args)
        return _purge(args)
    except (OSError, RecordingCryptoError, KeyringError, ValueError, KeyError) as exc:
        print(f"acd recordings {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _decrypt(args: argparse.Namespace) -> int:
    keyring = Keyring.from_file(args.key_file) if args.key_file else Keyring.from_env()
    if str(args.output) == "-":
        result = decrypt_file(args.src, sys.stdout.buffer, keyring)
    else:
        result = decrypt_file(args.src, args.output, keyring)
    if result.truncated:
        print(
            f"warning: {args.src} ends before its final chunk (writer crashed); "
            f"decrypted the {result.chunks} complete chunks",
            file=sys.stderr,
        )
    return 0


def _repair(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        res = recover_file(path)
        print(
            json.dumps(
                {
                    "path": str(res.path),
                    "ok": res.ok,
                    "repaired": res.repaired,
                    "duration_s": res.duration_s,
                    "torn_bytes": res.torn_bytes,
                    "problem": res.problem,
                }
            )
        )
        if not res.ok:
            status = 1
    return status


def _purge(args: argparse.Namespace) -> int:
    rows_doc: Any = json.loads(args.index.read_text(encoding="utf-8"))
    ret_doc: Any = json.loads(args.retention.read_text(encoding="utf-8"))
    rows = [
        IndexRow(
            recording_id=str(r["recording_id"]),
            queue=str(r["queue"]),
            started_at=float(r["started_at"]),
            legal_hold=bool(r.get("legal_hold", False)),
            path=str(r["path"]),
        )
        for r in rows_doc
    ]
    policy = RetentionPolicy(dict(ret_doc.get("queues", {})), ret_doc.get("default_days"))
    now = time.time() if args.now is None else args.now
    report = purge(rows, policy, now, dry_run=args.dry_run, root=args.root)
    print(
        json.dumps(
            {
                "dry_run": report.dry_run,
                "deleted": [r.recording_id for r in report.deleted],
                "missing": [r.recording_id for r in report.missing],
                "failed": {r.recording_id: why for r, why in report.failed},
                "bytes_freed": report.bytes_freed,
            }
        )
    )
    return 1 if report.failed else 0
