"""Transcripts and QA results: a call's transcript, full-text search, the calls QA flagged.

How this works: rows come from the store's ``transcripts`` table (engine/transcription/store.py),
filled by the daemon's transcription workers. Transcripts hold what callers said: supervisors and
admins only, and every read and search is audited (a search's words included, so an auditor sees
what was looked for). Sealed transcripts (of encrypted recordings) are decrypted in memory for the
answer; a search decrypts at most ``MAX_SEALED_SCAN`` of them per request. ``/api/v1/qa/flagged``
lists recordings whose QA failed a rule, with the rules and the times, never the words. Query
arguments are checked: an unknown one, a number that is not one, an empty search is a 400.
"""

from __future__ import annotations

import re

from aiohttp import web

import recordings as rec
from engine.api.app import json_response
from engine.api.auth import audit, require_role
from engine.api.context import CONTEXT_KEY, ApiContext, float_arg
from engine.config import Role
from engine.storage import Store
from engine.transcription.store import call_transcripts, flagged_calls, search_transcripts

# One answer holds at most this many rows; page back with `until` = the oldest started_at seen.
MAX_TRANSCRIPT_ROWS = 500
# A search is a few words; a longer q is a mistake (or an attempt to make the scan expensive).
MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 10
_WORD_RE = re.compile(r"[\w']+")


def _check_args(request: web.Request, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise web.HTTPBadRequest(
            text=f"unknown query argument {unknown[0]!r}: expected {', '.join(allowed)}"
        )


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TRANSCRIPT_ROWS:
        raise web.HTTPBadRequest(
            text=f"limit must be an integer 1..{MAX_TRANSCRIPT_ROWS}, found {raw!r}"
        )
    return int(raw)


def _store(ctx: ApiContext) -> Store:
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    return ctx.store


def _keyring(ctx: ApiContext) -> rec.Keyring | None:
    return None if ctx.recordings is None else ctx.recordings.keyring


async def get_call_transcript(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.SUPERVISOR)
    _check_args(request, ())
    store = _store(ctx)
    call_id = request.match_info["call_id"]
    try:
        found = await call_transcripts(store, call_id, _keyring(ctx))
    except (rec.KeyringError, rec.RecordingCryptoError) as exc:
        await audit(ctx, request, action="transcript_read", outcome="failed",
                    object_type="call", object_id=call_id, detail={"why": str(exc)})  # fmt: skip
        raise web.HTTPServiceUnavailable(text=f"cannot open the transcript: {exc}") from None
    if not found:
        enabled = ctx.transcription is not None
        raise web.HTTPNotFound(
            text=f"no transcript of call {call_id!r}"
            + ("" if enabled else " ([transcription] is not enabled)")
        )
    await audit(ctx, request, action="transcript_read", outcome="allowed", object_type="call",
                object_id=call_id, detail={"recordings": [t["recording_id"] for t in found]})  # fmt: skip
    return json_response({"call_id": call_id, "transcripts": found})


async def search(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.SUPERVISOR)
    _check_args(request, ("q", "queue", "agent", "since", "until", "limit"))
    store = _store(ctx)
    q = request.query.get("q", "")
    words = [w.lower() for w in _WORD_RE.findall(q)]
    if not words or len(q) > MAX_QUERY_CHARS or len(words) > MAX_QUERY_WORDS:
        raise web.HTTPBadRequest(
            text=f"q must hold 1-{MAX_QUERY_WORDS} words (at most {MAX_QUERY_CHARS} characters);"
            " a transcript matches when it holds every one"
        )
    since, until = float_arg(request, "since", None), float_arg(request, "until", None)
    limit = _limit(request)
    try:
        rows, decrypted = await search_transcripts(
            store, _keyring(ctx), words=words, queue=request.query.get("queue"),
            agent=request.query.get("agent"), since=since, until=until, limit=limit,
        )  # fmt: skip
    except (rec.KeyringError, rec.RecordingCryptoError) as exc:
        await audit(ctx, request, action="transcript_search", outcome="failed",
                    detail={"q": q, "why": str(exc)})  # fmt: skip
        raise web.HTTPServiceUnavailable(text=f"cannot open a sealed transcript: {exc}") from None
    await audit(ctx, request, action="transcript_search", outcome="allowed",
                detail={"q": q, "results": len(rows), "sealed_scanned": decrypted})  # fmt: skip
    return json_response(rows)


async def list_flagged(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.SUPERVISOR)
    _check_args(request, ("queue", "agent", "since", "until", "limit"))
    store = _store(ctx)
    since, until = float_arg(request, "since", None), float_arg(request, "until", None)
    rows = await flagged_calls(
        store, queue=request.query.get("queue"), agent=request.query.get("agent"),
        since=since, until=until, limit=_limit(request),
    )  # fmt: skip
    return json_response(rows)


def add_transcript_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/calls/{call_id}/transcript", get_call_transcript)
    app.router.add_get("/api/v1/transcripts", search)
    app.router.add_get("/api/v1/qa/flagged", list_flagged)
