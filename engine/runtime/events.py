"""Live events for WebSocket clients (wallboards, agent desktops, integrations).

How this works: ``EventBus.publish`` is synchronous and never blocks: it encodes the event once and
puts the bytes on every subscriber's bounded queue. A subscriber that falls behind by more than its
queue holds is cut off (``overflowed`` set, its queue closed) instead of slowing the daemon or
growing memory; a client reconnects and re-reads state from the REST API. Each subscriber may carry
a filter (an agent sees only its own agent events and its queues' events). An agent's
subscription also names its agent (``subscribe(agent_id=)``): the ``agent`` and ``task`` events,
which name the agent they concern, go to that agent's subscriptions and the unnamed ones only, so
one such event costs a dict lookup instead of a filter call per logged-in agent (a thousand agent
desktops made a task's "created" event ask a thousand filters).

Consumers (``set_consumers``: plugins' event consumers, the outbound webhooks) are called with
every event, subscriber or not, synchronously in ``publish``: they must only queue work. One that
raises is logged and counted (``consumer_errors``); the event still reaches everyone else.

The events are the same facts the CDR store records: ``CdrWriter`` publishes each queue event and
agent state change as it queues it for the database, so the stream and the store cannot disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import structlog

log = structlog.stdlib.get_logger("acd.events")

# Events a slow client may lag behind before it is disconnected: about a minute of a busy center.
SUBSCRIBER_QUEUE_EVENTS = 1000


class Event(msgspec.Struct, frozen=True, kw_only=True):
    # "queue" | "agent" | "task" (data.task_id names the task) | "monitor" | "qa" (a QA rule
    # failed) | "call" (started, completed: consumers only, not on the WebSocket stream)
    type: str
    at: float
    event: str  # queue event kind, or the agent's new state
    call_id: str | None = None
    queue: str | None = None
    agent_id: str | None = None
    reason: str | None = None
    data: dict[str, Any] | None = None


# Event types that name the agent they concern in ``agent_id`` (None: no agent): an agent's
# subscription gets these only when they name it.
AGENT_EVENT_TYPES = frozenset({"agent", "task"})

EventFilter = Callable[[Event], bool]
EventConsumer = Callable[[Event], None]
_encoder = msgspec.json.Encoder()


class Subscription:
    def __init__(self, bus: EventBus, accept: EventFilter | None, agent_id: str | None) -> None:
        self._bus = bus
        self.accept = accept
        self.agent_id = agent_id
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIBER_QUEUE_EVENTS)
        self.overflowed = False

    async def get(self) -> bytes | None:
        """The next encoded event, or None once the subscription was cut off or closed."""
        return await self.queue.get()

    def close(self) -> None:
        """Unsubscribe, and wake a ``get`` that is waiting: it returns None instead of waiting for
        an event that may never come (a WebSocket whose client left must not be held open)."""
        self._bus._remove(self)
        self._end()

    def _end(self) -> None:
        # Events still queued are dropped: the end marker must fit and must come first.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._unnamed: set[Subscription] = set()  # those of no agent: every event is offered
        self._by_agent: dict[str, set[Subscription]] = {}
        self.published = 0
        self.disconnected_slow = 0
        self._consumers: tuple[tuple[str, EventConsumer], ...] = ()
        self.consumer_errors = 0

    def set_consumers(self, consumers: Sequence[tuple[str, EventConsumer]]) -> None:
        """Replace the consumers: (name for the log, function called with each event)."""
        self._consumers = tuple(consumers)

    def subscribe(
        self, accept: EventFilter | None = None, *, agent_id: str | None = None
    ) -> Subscription:
        """``accept``: the events it wants; ``agent_id``: the subscriber is that agent, and of
        the AGENT_EVENT_TYPES it gets only those naming it (``accept`` still applies)."""
        sub = Subscription(self, accept, agent_id)
        self._subscribers.add(sub)
        if agent_id is None:
            self._unnamed.add(sub)
        else:
            self._by_agent.setdefault(agent_id, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        self._unnamed.discard(sub)
        if sub.agent_id is not None and (named := self._by_agent.get(sub.agent_id)) is not None:
            named.discard(sub)
            if not named:
                del self._by_agent[sub.agent_id]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Event, *, stream: bool = True) -> None:
        """Hand ``event`` to the consumers and (``stream``) to the WebSocket subscribers; the
        ``call`` events (started, completed) are for consumers only."""
        self.published += 1
        for name, consume in self._consumers:
            try:
                consume(event)
            except Exception as exc:  # a plugin's code: it loses this event, nobody else does
                self.consumer_errors += 1
                log.error("event_consumer_failed", consumer=name, kind=event.event, exc_info=exc)
        if not stream or not self._subscribers:
            return
        if event.type in AGENT_EVENT_TYPES:
            named = None if event.agent_id is None else self._by_agent.get(event.agent_id)
            targets = [*self._unnamed, *named] if named else list(self._unnamed)
            if not targets:
                return
        else:
            targets = list(self._subscribers)
        payload = _encoder.encode(event)
        for sub in targets:
            if sub.accept is not None and not sub.accept(event):
                continue
            try:
                sub.queue.put_nowait(payload)
            except asyncio.QueueFull:
                # Too slow: drop it rather than buffer without bound. Make room for the end marker.
                sub.overflowed = True
                self._remove(sub)
                self.disconnected_slow += 1
                sub._end()
