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

import asyncio
import time
from typing import Any

import msgspec
import sqlalchemy as sa

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
    async with store.write() as conn:
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


def _open_row(row: Any, keyring: rec.Keyring | None) -> dict[str, Any]:
    """A stored row's transcript (decrypted in memory) with its index fields."""
    body = bytes(row["body"])
    if row["key_id"] is not None:
        if keyring is None:
            raise rec.KeyringError("the transcript is encrypted and no keyring is configured")
        body = open_blob(keyring, body, row["recording_id"].encode())
    out: dict[str, Any] = msgspec.json.decode(body)
    out.update(
        recording_id=row["recording_id"], call_id=row["call_id"], queue=row["queue"],
        agent_id=row["agent_id"], started_at=row["started_at"], created_at=row["created_at"],
        encrypted=row["key_id"] is not None, qa_passed=row["qa_passed"],
    )  # fmt: skip
    return out


async def call_transcripts(
    store: Store, call_id: str, keyring: rec.Keyring | None
) -> list[dict[str, Any]]:
    """Every transcript of a call's recordings (a call may have several: on-demand, continued
    after a lost writer), in recording order, decrypted in memory."""
    query = (
        transcripts.select()
        .where(transcripts.c.call_id == call_id)
        .order_by(transcripts.c.started_at)
    )
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [_open_row(row, keyring) for row in rows]


def _index_fields(row: Any) -> dict[str, Any]:
    return {
        "recording_id": row["recording_id"], "call_id": row["call_id"], "queue": row["queue"],
        "agent_id": row["agent_id"], "started_at": row["started_at"],
        "qa_passed": row["qa_passed"], "qa": row["qa"] or [],
    }  # fmt: skip


def _filters(
    query: Any, *, queue: str | None, agent: str | None, since: float | None, until: float | None
) -> Any:
    if queue is not None:
        query = query.where(transcripts.c.queue == queue)
    if agent is not None:
        query = query.where(transcripts.c.agent_id == agent)
    if since is not None:
        query = query.where(transcripts.c.started_at >= since)
    if until is not None:
        query = query.where(transcripts.c.started_at < until)
    return query


# Sealed transcripts cannot be searched in SQL: at most this many of the newest that match the
# other filters are decrypted (in memory) and searched per request; narrow with since/queue/agent.
MAX_SEALED_SCAN = 2000


def _matches(words: list[str], text: str) -> bool:
    return all(w in text for w in words)


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_transcripts(
    store: Store,
    keyring: rec.Keyring | None,
    *,
    words: list[str],
    queue: str | None,
    agent: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """Transcripts holding every one of ``words`` (lower case, on either channel), newest first;
    and how many sealed transcripts were decrypted to search them."""
    clear = _filters(
        sa.select(transcripts).where(transcripts.c.key_id.is_(None)),
        queue=queue, agent=agent, since=since, until=until,
    )  # fmt: skip
    for word in words:
        clear = clear.where(
            sa.func.lower(transcripts.c.text).like(f"%{_escape_like(word)}%", escape="\\")
        )
    sealed = _filters(
        sa.select(transcripts).where(transcripts.c.key_id.is_not(None)),
        queue=queue, agent=agent, since=since, until=until,
    )  # fmt: skip
    async with store.engine.connect() as conn:
        found = list(
            (await conn.execute(clear.order_by(transcripts.c.started_at.desc()).limit(limit)))
            .mappings()
            .all()
        )
        candidates = (
            (
                await conn.execute(
                    sealed.order_by(transcripts.c.started_at.desc()).limit(MAX_SEALED_SCAN)
                )
            )
            .mappings()
            .all()
        )
    if candidates:

        def scan() -> list[Any]:
            hits = []
            for row in candidates:
                t = _open_row(row, keyring)
                text = " ".join(w["text"] for ws in t["words"].values() for w in ws).lower()
                if _matches(words, text):
                    hits.append(row)
            return hits

        found += await asyncio.to_thread(scan)
    found.sort(key=lambda r: r["started_at"], reverse=True)
    return [_index_fields(r) for r in found[:limit]], len(candidates)


async def flagged_calls(
    store: Store,
    *,
    queue: str | None,
    agent: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Transcribed recordings whose QA failed at least one rule, newest first (no words: the QA
    outcomes and their times are kept in clear)."""
    query = _filters(
        sa.select(transcripts).where(transcripts.c.qa_passed.is_(False)),
        queue=queue, agent=agent, since=since, until=until,
    )  # fmt: skip
    async with store.engine.connect() as conn:
        rows = (
            (await conn.execute(query.order_by(transcripts.c.started_at.desc()).limit(limit)))
            .mappings()
            .all()
        )
    out = []
    for row in rows:
        item = _index_fields(row)
        item["failed"] = [r["rule"] for r in item["qa"] if not r["passed"]]
        out.append(item)
    return out
