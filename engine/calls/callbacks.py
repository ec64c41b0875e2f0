"""Callbacks that keep the caller's place (virtual hold): the caller's side.

How this works: in a queue with ``callback`` (``engine.config.CallbackConfig``) each periodic
announcement ends with the offer prompt, and ``queueing`` listens for the key while the caller
waits, during the announcements too (RFC 4733 or SIP INFO; in-band detection stays off in the
queue). A key while an agent's phone rings for the call is ignored: that call goes on. On the
key the call leaves the routing core, then ``create_task`` (wired by the daemon to the task
service, since calls never import tasks) makes a ``callback`` task in the same queue with the
call's priority, requirements and the wall time its place counted from, so the callback waits
where the caller stood (the Router counts it among the calls, on the agents' voice capacity);
the caller hears the confirmation and we hang up. If the task cannot be made the call goes back
to the router at its place and the caller waits on, told nothing new.

Linking: the call's CDR row ends with disposition ``callback_requested`` and
``flow_data.callback_task`` naming the task; the task's ``data.call_id`` (and its
``external_id`` ``callback:<call id>``) names the call; a queue event ``callback`` (queue_log
EXITWITHKEY) has the task id as its target. ``acd_callbacks_total{queue,outcome}`` counts
``requested`` and ``failed``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter

import routing_core as rc
from engine.calls.model import Call, CallEnded
from engine.config import QueueConfig
from engine.runtime.metrics import Metrics
from engine.storage.cdr import QueueEventData

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """What the task service needs to make a waiting caller's callback task."""

    call_id: str
    queue: str
    number: str  # the caller id to call back
    trunk: str  # the trunk the call came in on
    dialed: str  # the number the caller had called (our caller id when we call back)
    priority: int
    place_at: float  # wall time the caller's place counted from (its effective enqueue time)
    requirements: dict[str, int] | None = None  # the call's (None: the queue's)


def callable_back(call: Call) -> bool:
    """Whether the caller has a number to call back (an anonymous caller is not offered)."""
    return bool(call.caller) and call.caller.lower() not in ("anonymous", "unknown")


class CallbackMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.total = Counter(
            "acd_callbacks_total",
            "Callbacks by queue and outcome: requested (a waiting caller pressed the key and a "
            "callback task keeps its place); agent_first: connected (the customer answered and "
            "was bridged to the agent), retry (the customer did not answer, was busy or could "
            "not be reached: dialled again after retry_s); failed (the task could not be "
            "stored, and the caller stayed in line; or the last attempt failed).",
            ["queue", "outcome"],
            registry=metrics.registry,
        )


class Callbacks:
    """Waiting callers of ``callback`` queues who ask to be called back."""

    def __init__(self, service: CallService, metrics: Metrics) -> None:
        self._s = service
        self.metrics = CallbackMetrics(metrics)
        # Set by the daemon: makes the callback task, returns its id (raises if not stored).
        self.create_task: Callable[[CallbackRequest], Awaitable[str]] | None = None
        # Set by the daemon: (priority, wall time its place counts from) of each callback task
        # still waiting in a queue (offered counts: not yet taken), for the callers' positions.
        self.waiting: Callable[[str], list[tuple[int, float]]] | None = None

    def places(self, queue: str) -> list[tuple[int, float]]:
        return [] if self.waiting is None else self.waiting(queue)

    async def requested(
        self, call: Call, qcfg: QueueConfig, requirements: dict[str, int] | None
    ) -> bool:
        """The caller pressed the key: True once the callback task exists and the call is to
        end (after the confirmation), False if it could not be made (the caller waits on, in
        the place it had). ``requirements``: the call's, which the task keeps."""
        callback = qcfg.callback
        if callback is None or self.create_task is None or call.connected is None:
            return False
        if call.connected.done() or any(not leg.finished for leg in call.legs.values()):
            return False  # an agent is already ringing or answered: the call goes on
        place_at = call.place_at or call.enqueued_at or time.time()
        # Out of the router first, so no agent is offered the call while the task is stored.
        with contextlib.suppress(rc.RoutingError):
            self._s.routing.abandon(call.id)
        request = CallbackRequest(
            call_id=call.id, queue=call.queue, number=call.caller, trunk=call.trunk.name,
            dialed=call.dialed,
            priority=call.priority, place_at=place_at, requirements=requirements,
        )  # fmt: skip
        try:
            task_id = await self.create_task(request)
        except Exception as exc:  # storage down, a bad number: the caller keeps waiting
            log.warning("callback_failed", queue=call.queue, reason=str(exc))
            self.metrics.total.labels(queue=call.queue, outcome="failed").inc()
            self._back_in_line(call, place_at, requirements)
            return False
        now_wall = time.time()
        waited = now_wall - (call.enqueued_at or now_wall)
        call.disposition = "callback_requested"
        call.flow_data["callback_task"] = task_id
        self.metrics.total.labels(queue=call.queue, outcome="requested").inc()
        self._s.metrics.wait.labels(queue=call.queue, outcome="callback").observe(waited)
        if self._s.cdr:
            self._s.cdr.queue_event(
                "callback", call_id=call.id, queue=call.queue,
                data=QueueEventData(
                    wait_s=waited, target=task_id, reason=callback.key,
                    position=self._s.queueing.position(call),
                ),
            )  # fmt: skip
        log.info("callback_requested", queue=call.queue, task_id=task_id, waited_s=waited)
        self._s.media.stop_player(call)
        if callback.confirm_prompt:
            await self._s.media.play(call, [callback.confirm_prompt], barge_in=False)
        call.hangup_side, call.hangup_reason = "system", "callback requested"
        return True

    def _back_in_line(
        self, call: Call, place_at: float, requirements: dict[str, int] | None
    ) -> None:
        """The task was not made: the call goes back to the router where it stood."""
        routing = self._s.routing
        try:
            routing.enqueue(
                call.id, call.queue, priority=call.priority, requirements=requirements,
                enqueue_time=routing.now - max(0.0, time.time() - place_at),
            )  # fmt: skip
        except rc.QueueFull:  # its place was taken meanwhile (the queue's max_length)
            raise CallEnded("queue full", "overflowed") from None
        except rc.CapacityExceeded:  # the router filled up meanwhile (runtime.max_tasks)
            raise CallEnded("router full", "overflowed") from None
