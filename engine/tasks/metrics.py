"""Prometheus metrics of the non-voice tasks, with ``channel`` as a bounded label.

``channel`` takes the four task channels only (chat, email, social, ticket), ``queue`` the
configured queues, ``outcome`` and ``sender`` a fixed handful each: never a task id or a customer.
Counters change where things happen; the waiting figures are read from the Router at scrape time
(``TaskCollector``), as ``RoutingCollector`` does for calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.config import SERVICE_CHANNELS
from engine.runtime.metrics import WAIT_BUCKETS

if TYPE_CHECKING:
    from engine.tasks.service import TaskService

TASK_OUTCOMES = ("completed", "closed", "cancelled")
SLA_KINDS = ("first_response", "resolution")
OFFER_OUTCOMES = ("accepted", "rejected", "timeout", "withdrawn")


class TaskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.created = Counter(
            "acd_tasks_arrived_total",
            "Tasks created (arrived) by channel.",
            ["channel"],
            registry=r,
        )
        self.ended = Counter(
            "acd_tasks_total",
            "Tasks that ended, by channel and outcome (completed, cancelled).",
            ["channel", "outcome"],
            registry=r,
        )
        self.offers = Counter(
            "acd_task_offers_total",
            "Task offers to agents by channel and outcome (accepted, rejected, timeout, withdrawn).",
            ["channel", "outcome"],
            registry=r,
        )
        self.wait = Histogram(
            "acd_task_wait_seconds",
            "From a task's arrival to an agent accepting it, by queue and channel.",
            ["queue", "channel"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.messages = Counter(
            "acd_task_messages_total",
            "Messages posted to tasks by channel and sender (customer, agent).",
            ["channel", "sender"],
            registry=r,
        )
        self.states = Counter(
            "acd_task_state_changes_total",
            "Tasks entering a state, by channel and state (scheduled, waiting, offered, "
            "assigned, pending, solved, completed, closed, cancelled).",
            ["channel", "state"],
            registry=r,
        )
        self.sla_breaches = Counter(
            "acd_task_sla_breaches_total",
            "Tasks whose SLA due time passed unmet, by queue, channel and kind (first_response, "
            "resolution).",
            ["queue", "channel", "kind"],
            registry=r,
        )
        for channel in SERVICE_CHANNELS:  # every series exists from the start: rates work at once
            self.created.labels(channel=channel)
            for outcome in TASK_OUTCOMES:
                self.ended.labels(channel=channel, outcome=outcome)
            for outcome in OFFER_OUTCOMES:
                self.offers.labels(channel=channel, outcome=outcome)


class TaskCollector(Collector):
    """Waiting tasks per queue and channel, and open tasks per channel and state, at scrape time."""

    def __init__(self, service: Callable[[], TaskService | None]) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        service = self._service()
        waiting = GaugeMetricFamily(
            "acd_queue_waiting_tasks",
            "Tasks of a channel waiting in the queue (not yet accepted: waiting or offered).",
            labels=["queue", "channel"],
        )
        oldest = GaugeMetricFamily(
            "acd_queue_oldest_task_wait_seconds",
            "How long the queue's longest-waiting task of a channel has waited.",
            labels=["queue", "channel"],
        )
        open_tasks = GaugeMetricFamily(
            "acd_tasks_open",
            "Live tasks by channel and state (scheduled, waiting, offered, assigned, pending, "
            "solved).",
            labels=["channel", "state"],
        )
        if service is not None:
            for queue, channel, n, wait_s in service.queue_figures():
                waiting.add_metric([queue, channel], n)
                oldest.add_metric([queue, channel], wait_s)
            for (channel, state), n in sorted(service.open_counts().items()):
                open_tasks.add_metric([channel, state], n)
        yield waiting
        yield oldest
        yield open_tasks

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
