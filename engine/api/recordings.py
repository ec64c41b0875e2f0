"""The recordings index: search it, download a recording (decrypted), set a legal hold.

How this works: rows come from the CDR store's ``recordings`` table. Supervisors hear every
recording; an agent hears its own calls only when ``[recordings] agents_download_own`` allows it.
A download is streamed from the recording service (decrypted on the fly, read in a thread) and
every attempt, allowed, denied or failed, is audited. A purged recording answers 410; legal hold is
for admins.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import Principal, audit, principal_of, require_role
from engine.api.cdr import MAX_CDR_ROWS
from engine.api.context import CONTEXT_KEY, ApiContext, float_arg, int_arg
from engine.config import Role
from engine.recording.service import CONTENT_TYPES
from engine.storage import queries


async def _recording_row(ctx: ApiContext, recording_id: str) -> dict[str, Any] | None:
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    return await queries.recording_row(ctx.store, recording_id)


def _may_hear(ctx: ApiContext, principal: Principal, row: dict[str, Any]) -> bool:
    if principal.at_least(Role.SUPERVISOR):
        return True
    own = row["agent_id"] is not None and row["agent_id"] == principal.agent_id
    return own and ctx.get_config().recordings.agents_download_own


async def list_recordings(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    limit = int_arg(request, "limit", 100, minimum=1, maximum=MAX_CDR_ROWS)
    since = float_arg(request, "since", None)
    agent = request.query.get("agent")
    if not principal.at_least(Role.SUPERVISOR):
        if not ctx.get_config().recordings.agents_download_own or agent not in (
            None,
            principal.agent_id,
        ):
            raise web.HTTPForbidden(
                text="recordings are for supervisors (or own calls when allowed)"
            )
        agent = principal.agent_id
    rows = await queries.search_recordings(
        ctx.store,
        limit=limit,
        call_id=request.query.get("call_id"),
        queue=request.query.get("queue"),
        since=since,
        agent=agent,
    )
    return json_response(rows)


async def download_recording(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    recording_id = request.match_info["recording_id"]
    row = await _recording_row(ctx, recording_id)
    if row is None:
        raise web.HTTPNotFound(text=f"no recording {recording_id!r}")
    if not _may_hear(ctx, principal, row):
        await audit(ctx, request, action="recording_download", outcome="denied",
                    object_type="recording", object_id=recording_id)  # fmt: skip
        raise web.HTTPForbidden(text="not allowed to hear this recording")
    if ctx.recordings is None or row["purged_at"] is not None:
        raise web.HTTPGone(text="the recording is no longer stored")
    try:
        size, pieces = await asyncio.to_thread(ctx.recordings.open_stream, row["path"])
    except (OSError, ValueError) as exc:
        await audit(ctx, request, action="recording_download", outcome="failed",
                    object_type="recording", object_id=recording_id, detail={"why": str(exc)})  # fmt: skip
        raise web.HTTPServiceUnavailable(text=f"cannot open the recording: {exc}") from None
    await audit(ctx, request, action="recording_download", outcome="allowed",
                object_type="recording", object_id=recording_id,
                detail={"call_id": row["call_id"], "encrypted": row["key_id"] is not None})  # fmt: skip
    response = web.StreamResponse(
        headers={
            "Content-Type": CONTENT_TYPES.get(row["codec"] or "wav", "application/octet-stream"),
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{recording_id}.{row["codec"] or "wav"}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    iterator = iter(pieces)
    while True:
        piece = await asyncio.to_thread(next, iterator, None)
        if piece is None:
            break
        await response.write(piece)
    await response.write_eof()
    return response


class LegalHold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    legal_hold: bool


async def set_legal_hold(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    recording_id = request.match_info["recording_id"]
    if await _recording_row(ctx, recording_id) is None:
        raise web.HTTPNotFound(text=f"no recording {recording_id!r}")
    try:
        hold = msgspec.json.decode(await request.read(), type=LegalHold)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f'expected {{"legal_hold": true|false}}: {exc}') from None
    assert ctx.store is not None  # checked by _recording_row
    await queries.update_legal_hold(ctx.store, recording_id, hold.legal_hold)
    await audit(ctx, request, action="legal_hold", outcome="done", object_type="recording",
                object_id=recording_id, detail={"legal_hold": hold.legal_hold})  # fmt: skip
    return json_response({"id": recording_id, "legal_hold": hold.legal_hold})
