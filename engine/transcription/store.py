"""Transcripts in the CDR store: written (sealed when the recording is encrypted) and read back.

How this works: ``save_transcript`` stores one ``Transcript`` against its recording's index row.
If the recording has a ``key_id``, the JSON body is sealed with the recordings keyring
(``recordings.crypto.seal_blob``, AES-256-GCM, the recording id as associated data) and no clear
text column is kept; otherwise ``text`` holds the words for search. The QA outcomes and times are
kept in clear in ``qa`` (rule names, pass/fail, start/end seconds; never the words heard).
Deletion is the retention purge's (engine/recording/service.py ``purge_index``), in the same
transaction that marks the recording purged.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

import recordings as rec
from engine.storage import Store
from engine.storage.schema import transcripts
from engine.transcription.pipeline import Transcript
from recordings.crypto import open_blob, seal_blob


def qa_summary(t: Transcript) -> list[dict[str, Any]]:
    return [
        {
            "rule": r.rule, "type": r.type, "passed": r.passed,
            "times": [[e.start_s, e.end_s] for e in r.evidence], **({"detail": dict(r.detail)} if r.detail else {}),
        }
        for r in t.qa
    ]  # fmt: skip


async def save_transcript(
    store: Store, recording: dict[str, Any], t: Transcript, keyring: rec.Keyring | None
) -> None:
    """Insert (or replace) the transcript of ``recording`` (its index row as a mapping)."""
    body = msgspec.json.encode(t)
    key_id: str | None = None
    text: str | None = f"caller: {t.text('caller')}\nagent: {t.text('agent')}"
    if recording["key_id"] is not None:
        if keyring is None:
            raise rec.KeyringError("the recording is encrypted and no keyring is configured")
        key_id, body = seal_blob(keyring, body, recording["id"].encode())
        text = None
    summary = qa_summary(t)
    row = {
        "recording_id": recording["id"], "call_id": recording["call_id"],
        "queue": recording["queue"], "agent_id": recording["agent_id"],
        "started_at": recording["started_at"], "created_at": time.time(), "engine": t.engine,
        "key_id": key_id, "text": text, "body": body, "qa": summary,
        "qa_passed": all(r["passed"] for r in summary) if summary else None,
    }  # fmt: skip
    async with store.engine.begin() as conn:
        await conn.execute(
            transcripts.delete().where(transcripts.c.recording_id == recording["id"])
        )
        await conn.execute(transcripts.insert().values(**row))


async def load_transcript(
    store: Store, recording_id: str, keyring: rec.Keyring | None
) -> dict[str, Any] | None:
    """The stored transcript as JSON-ready data (decrypted in memory), or None."""
    async with store.engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    transcripts.select().where(transcripts.c.recording_id == recording_id)
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    body = bytes(row["body"])
    if row["key_id"] is not None:
        if keyring is None:
            raise rec.KeyringError("the transcript is encrypted and no keyring is configured")
        body = open_blob(keyring, body, recording_id.encode())
    out: dict[str, Any] = msgspec.json.decode(body)
    out.update(recording_id=recording_id, call_id=row["call_id"], qa_passed=row["qa_passed"])
    return out
