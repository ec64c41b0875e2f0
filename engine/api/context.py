"""What every API handler starts from: the daemon's parts, and query arguments.

How this works: the daemon builds one ``ApiContext`` and fills in its parts (store, CDR writer,
routing, event bus, recordings, calls) as they start; ``add_routes`` puts it on the app under
``CONTEXT_KEY``. Handlers read ``request.app[CONTEXT_KEY]`` and never hold state of their own; a
part that is not running yet is ``None``, and a handler that needs it answers 503. Agent state is
read from and changed in the routing service (the one owner, DESIGN.md section 2).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from engine.config import AdminObject, Config
from engine.recording.service import RecordingService
from engine.routing.service import RoutingService
from engine.runtime.events import EventBus
from engine.storage import Store
from engine.storage.cdr import CdrWriter
from engine.tasks import TaskService
from engine.transcription.service import TranscriptionService
from engine.webhooks import WebhookService


@dataclass
class ApiContext:
    """What the API needs from the daemon; filled in by the daemon as parts start."""

    get_config: Callable[[], Config]
    reload: Callable[[], bool]
    # the admin API's stored agents and queues (engine.api.admin)
    admin_objects: Callable[[], list[AdminObject]] = list
    # ([(kind, name, body or None to delete)], actor): check, store and apply admin changes,
    # all or none
    admin_change: (
        Callable[[Sequence[tuple[str, str, Mapping[str, Any] | None]], str], Awaitable[None]] | None
    ) = None
    store: Store | None = None
    cdr: CdrWriter | None = None
    routing: RoutingService | None = None
    bus: EventBus | None = None
    recordings: RecordingService | None = None
    calls: Any = (
        None  # engine.calls.service.CallService (typed loosely: calls imports this module's peers)
    )
    tasks: TaskService | None = None
    webhooks: WebhookService | None = None
    transcription: TranscriptionService | None = None  # None: [transcription] enabled = false


CONTEXT_KEY = web.AppKey("api_context", ApiContext)


def float_arg(request: web.Request, name: str, default: float | None) -> float | None:
    """The query argument ``name`` as a number, ``default`` when absent; 400 when not a finite
    number (times are epoch seconds, lengths seconds: the OpenAPI document says which)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise web.HTTPBadRequest(text=f"{name} must be a number, found {raw!r}")
    return value


def int_arg(request: web.Request, name: str, default: int, *, minimum: int, maximum: int) -> int:
    """The query argument ``name`` as an integer, ``default`` when absent or empty, clamped to
    ``maximum``; 400 when not an integer or below ``minimum``."""
    raw = request.query.get(name) or None
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, found {raw!r}") from None
    if value < minimum:
        raise web.HTTPBadRequest(text=f"{name} must be at least {minimum}, found {value}")
    return min(value, maximum)
