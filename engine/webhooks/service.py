"""Delivering events to the configured ``[[webhooks]]``: signed POSTs, retries, dead letters.

How this works: ``consume`` is an event-bus consumer: it maps a bus event to a webhook event
type (``call.started``, ``call.answered``, ...; ``webhook_event``), encodes the body once per
subscribed webhook and puts the delivery on a bounded queue, never awaiting anything, so a call
is never held up by a slow receiver. ``run`` owns ``DELIVERY_WORKERS`` workers that POST
deliveries with the daemon's aiohttp client: a 2xx is delivered; anything else (another status,
a timeout, a refused connection) is retried after ``backoff_s``, doubled for each further
attempt, by a timer that puts it back on the queue (no worker sleeps). After ``max_attempts``
the delivery goes to the dead-letter table (``webhook_dead_letters``), written by one writer
task that keeps what it could not write and tries again. At shutdown, deliveries still queued,
waiting for a retry or in flight are dead-lettered too, so an event is delivered or listed,
never silently lost (the one exception, counted as ``dropped``: the dead-letter backlog itself
beyond ``MAX_DEAD_BACKLOG`` while the database is down).

Every attempt of one delivery carries the same ``X-Acd-Delivery`` id (receivers de-duplicate on
it) and a fresh ``X-Acd-Signature`` (``signing``). ``retry(id)`` re-sends a dead letter once from
the API with the webhook's current secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import msgspec
import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.exc import SQLAlchemyError

from engine import __version__
from engine.config import Config, WebhookConfig
from engine.runtime.events import Event
from engine.storage import Store
from engine.storage.schema import webhook_dead_letters
from engine.webhooks.signing import signature

log = structlog.stdlib.get_logger("acd.webhooks")

# Concurrent POSTs: enough that one slow receiver (up to its timeout_s) leaves room for the
# others; each is a socket and a coroutine, not a thread.
DELIVERY_WORKERS: Final = 8
# Deliveries waiting for a worker: minutes of a busy center's events. Beyond it a delivery goes
# straight to the dead-letter list (a receiver that far behind is down, in effect).
MAX_QUEUED: Final = 10_000
MAX_BACKOFF_S: Final = 3600.0
MAX_DEAD_BACKLOG: Final = 100_000
# A receiver's answer is not used; read (and drop) at most this much of it.
MAX_RESPONSE_BYTES: Final = 64 * 1024
MAX_DEAD_LETTER_ROWS: Final = 1000
DEAD_LETTER_BATCH: Final = 500  # rows per transaction (and per IN list of the duplicate check)

_TASK_EVENTS: Final = {
    "created": "task.created",
    "accepted": "task.assigned",
    "completed": "task.completed",
}


def webhook_event(event: Event) -> tuple[str, dict[str, Any]] | None:
    """The webhook event type and data of a bus event, or None for events webhooks do not carry."""
    if event.type == "call" and event.event in ("started", "completed"):
        return f"call.{event.event}", {"call_id": event.call_id, **(event.data or {})}
    if event.type == "queue" and event.event == "answer":  # an agent answered the caller
        data = {"call_id": event.call_id, "queue": event.queue, "agent_id": event.agent_id}
        return "call.answered", {**data, **(event.data or {})}
    if event.type == "task" and event.event in _TASK_EVENTS:
        data = {"queue": event.queue, "agent_id": event.agent_id, **(event.data or {})}
        return _TASK_EVENTS[event.event], data
    return None


@dataclass(slots=True)
class Delivery:
    id: str
    hook: WebhookConfig
    event_type: str
    body: bytes
    created_at: float
    attempts: int = 0
    last_error: str = ""


class DeadLetter(msgspec.Struct, frozen=True):
    """A delivery that ran out of attempts (``delivered_at`` set once a retry got through)."""

    id: str  # the delivery's X-Acd-Delivery id
    url: str
    event_type: str
    attempts: int
    last_error: str | None
    created_at: float  # epoch seconds: the event's time
    failed_at: float  # the last failed attempt
    delivered_at: float | None
    event: Any  # the JSON body that was sent


class RetryOutcome(msgspec.Struct, frozen=True):
    delivered: bool
    dead_letter: DeadLetter


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "acd_webhook_deliveries_total",
            "Webhook delivery attempts and their ends: delivered (a 2xx), retried (an attempt "
            "failed, another follows), dead_lettered (out of attempts, or still pending at "
            "shutdown), dropped (not even dead-lettered: the dead-letter backlog was full).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("delivered", "retried", "dead_lettered", "dropped"):
            self.deliveries.labels(outcome=outcome)


class WebhookService:
    def __init__(
        self,
        config: Config,
        store: Store,
        http: aiohttp.ClientSession,
        registry: CollectorRegistry,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._hooks = config.webhooks
        self._store = store
        self._http = http
        self._wall = wall
        self.metrics = WebhookMetrics(registry)
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(MAX_QUEUED)
        self._waiting: dict[str, tuple[asyncio.TimerHandle, Delivery]] = {}
        self._dead: deque[Delivery] = deque()
        self._dead_wake = asyncio.Event()
        self._closed = False

    def apply(self, config: Config) -> None:
        """A reloaded config: new events go to the new list; deliveries already made keep the
        webhook (URL, secret, attempts) they were made for."""
        self._hooks = config.webhooks

    # -- producer (never awaits) ------------------------------------------------------------------

    def consume(self, event: Event) -> None:
        if not self._hooks:
            return
        mapped = webhook_event(event)
        if mapped is None:
            return
        kind, data = mapped
        for hook in self._hooks:
            if hook.events and kind not in hook.events:
                continue
            delivery_id = uuid.uuid4().hex
            body = msgspec.json.encode(
                {"id": delivery_id, "type": kind, "created_at": event.at, "data": data}
            )
            self._enqueue(Delivery(delivery_id, hook, kind, body, event.at))

    def _enqueue(self, delivery: Delivery) -> None:
        if self._closed:
            delivery.last_error = delivery.last_error or "daemon stopping before delivery"
            self._dead_letter(delivery)
            return
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            delivery.last_error = f"delivery queue full ({MAX_QUEUED} waiting)"
            self._dead_letter(delivery)

    # -- delivery ------------------------------------------------------------------------------

    async def attempt(self, delivery: Delivery) -> bool:
        """POST once; True on a 2xx. Failures are recorded in ``delivery.last_error``."""
        delivery.attempts += 1
        timestamp = int(self._wall())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"acd/{__version__}",
            "X-Acd-Event": delivery.event_type,
            "X-Acd-Delivery": delivery.id,
            "X-Acd-Attempt": str(delivery.attempts),
            "X-Acd-Signature": signature(delivery.hook.secret, timestamp, delivery.body),
        }
        try:
            async with asyncio.timeout(delivery.hook.timeout_s):
                async with self._http.post(
                    delivery.hook.url, data=delivery.body, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.content.read(MAX_RESPONSE_BYTES)
                    if 200 <= resp.status < 300:
                        return True
                    delivery.last_error = f"HTTP {resp.status}"
        except TimeoutError:
            delivery.last_error = f"no answer within {delivery.hook.timeout_s} s"
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            delivery.last_error = f"{type(exc).__name__}: {exc}"
        return False

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delivery = await self._queue.get()
            try:
                delivered = await self.attempt(delivery)
            except asyncio.CancelledError:
                delivery.last_error = delivery.last_error or "daemon stopped during the attempt"
                self._dead_letter(delivery)
                raise
            if delivered:
                self.metrics.deliveries.labels(outcome="delivered").inc()
            elif delivery.attempts >= delivery.hook.max_attempts:
                log.warning(
                    "webhook_dead_lettered", url=delivery.hook.url, kind=delivery.event_type,
                    delivery=delivery.id, attempts=delivery.attempts, reason=delivery.last_error,
                )  # fmt: skip
                self._dead_letter(delivery)
            else:
                self.metrics.deliveries.labels(outcome="retried").inc()
                delay = min(delivery.hook.backoff_s * 2 ** (delivery.attempts - 1), MAX_BACKOFF_S)
                handle = loop.call_later(delay, self._retry_due, delivery.id)
                self._waiting[delivery.id] = (handle, delivery)

    def _retry_due(self, delivery_id: str) -> None:
        entry = self._waiting.pop(delivery_id, None)
        if entry is not None:
            self._enqueue(entry[1])

    # -- dead letters ----------------------------------------------------------------------------

    def _dead_letter(self, delivery: Delivery) -> None:
        if len(self._dead) >= MAX_DEAD_BACKLOG:
            self.metrics.deliveries.labels(outcome="dropped").inc()
            log.error("webhook_dropped", url=delivery.hook.url, delivery=delivery.id,
                      reason="dead-letter backlog full")  # fmt: skip
            return
        self.metrics.deliveries.labels(outcome="dead_lettered").inc()
        self._dead.append(delivery)
        self._dead_wake.set()

    async def _write_dead(self) -> None:
        """Write the dead-letter backlog; raises (and keeps it) when the database fails.

        Idempotent: a writer cancelled at shutdown may have committed a batch it had not yet
        taken off the backlog, so rows already in the table are skipped, not inserted twice."""
        table = webhook_dead_letters
        while self._dead:
            batch = [self._dead[i] for i in range(min(len(self._dead), DEAD_LETTER_BATCH))]
            now = self._wall()
            async with self._store.write() as conn:
                ids = [d.id for d in batch]
                known = set(
                    (await conn.execute(sa.select(table.c.id).where(table.c.id.in_(ids)))).scalars()
                )
                rows = [
                    {"id": d.id, "url": d.hook.url, "event_type": d.event_type,
                     "body": d.body.decode(), "attempts": d.attempts,
                     "last_error": d.last_error or None, "created_at": d.created_at,
                     "failed_at": now, "delivered_at": None}
                    for d in batch
                    if d.id not in known
                ]  # fmt: skip
                if rows:
                    await conn.execute(table.insert(), rows)
            for _ in batch:
                self._dead.popleft()

    async def _dead_writer(self) -> None:
        delay = 1.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dead_wake.wait(), delay)
            self._dead_wake.clear()
            try:
                await self._write_dead()
            except (SQLAlchemyError, OSError) as exc:
                log.error(
                    "webhook_dead_letter_write_failed", reason=str(exc), backlog=len(self._dead)
                )
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0

    async def run(self) -> None:
        """The delivery workers and the dead-letter writer, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(DELIVERY_WORKERS):
                group.create_task(self._worker())
            group.create_task(self._dead_writer())

    async def close(self) -> None:
        """After ``run`` was cancelled: dead-letter what is still pending, write the backlog."""
        self._closed = True
        for handle, delivery in self._waiting.values():
            handle.cancel()
            delivery.last_error += " (daemon stopped before the next attempt)"
            self._dead_letter(delivery)
        self._waiting.clear()
        while not self._queue.empty():
            delivery = self._queue.get_nowait()
            delivery.last_error = delivery.last_error or "daemon stopped before delivery"
            self._dead_letter(delivery)
        try:
            await self._write_dead()
        except (SQLAlchemyError, OSError) as exc:
            log.error(
                "webhook_dead_letters_lost_at_shutdown", rows=len(self._dead), reason=str(exc)
            )

    # -- the API's side --------------------------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, the most recent failure first."""
        query = (
            sa.select(webhook_dead_letters)
            .order_by(webhook_dead_letters.c.failed_at.desc())
            .limit(min(limit, MAX_DEAD_LETTER_ROWS))
        )
        async with self._store.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_view(row) for row in rows]

    async def retry(self, delivery_id: str) -> RetryOutcome | str:
        """Re-send one dead letter now; the outcome, or why it was not sent ("not_found",
        "delivered" (already), "not_configured" (no webhook has that URL any more))."""
        table = webhook_dead_letters
        async with self._store.engine.connect() as conn:
            row = (
                (await conn.execute(sa.select(table).where(table.c.id == delivery_id)))
                .mappings()
                .first()
            )
        if row is None:
            return "not_found"
        if row["delivered_at"] is not None:
            return "delivered"
        hook = next((h for h in self._hooks if h.url == row["url"]), None)
        if hook is None:
            return "not_configured"
        delivery = Delivery(
            row["id"], hook, row["event_type"], row["body"].encode(), row["created_at"],
            attempts=row["attempts"],
        )  # fmt: skip
        delivered = await self.attempt(delivery)
        now = self._wall()
        change: dict[str, Any] = {"attempts": delivery.attempts}
        if delivered:
            change["delivered_at"] = now
            self.metrics.deliveries.labels(outcome="delivered").inc()
        else:
            change.update(failed_at=now, last_error=delivery.last_error)
        async with self._store.write() as conn:
            await conn.execute(table.update().where(table.c.id == delivery_id).values(**change))
        return RetryOutcome(delivered, _view({**row, **change}))


def _view(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row["id"], url=row["url"], event_type=row["event_type"], attempts=row["attempts"],
        last_error=row["last_error"], created_at=row["created_at"], failed_at=row["failed_at"],
        delivered_at=row["delivered_at"], event=json.loads(row["body"]),
    )  # fmt: skip
