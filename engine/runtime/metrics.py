"""Prometheus metrics: one registry per daemon, names per DESIGN.md section 7.

Prefix ``acd_``, base units in names, counters end in ``_total``, bounded labels only. A registry per
daemon instance (not the global default) keeps tests that start several daemons in one process honest.

``EventLoopLagMonitor`` measures how late the loop wakes a timer: it schedules itself every
``interval_s`` and observes ``actual - expected``. Lag here is what delays SIP retransmissions and RTP
pacing, so it is the first number to look at when calls sound bad.
"""

from __future__ import annotations

import asyncio
import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from engine import __version__

# Loop-lag buckets: 1 ms is healthy, 20 ms is one RTP packet time (audible), 100 ms+ is an outage.
_LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Queue waits: the usual service-level thresholds contact centers report against.
WAIT_BUCKETS = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)


class Metrics:
    """Every metric the daemon exports, created on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build_info = Info(
            "acd_build", "Build information of the running daemon.", registry=self.registry
        )
        self.build_info.info(
            {"version": __version__, "python": platform.python_version()},
        )
        self.event_loop_lag = Histogram(
            "acd_event_loop_lag_seconds",
            "How late the event loop ran a timer that was due (scheduling lag).",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "acd_config_reloads_total",
            "Configuration reloads by outcome (applied, rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.storage_errors = Counter(
            "acd_storage_errors_total",
            "Failed writes or health checks against the CDR store.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "acd_ready",
            "1 when listeners are open and storage is reachable (what /readyz answers).",
            registry=self.registry,
        )
        self.unexpected_errors = Counter(
            "acd_unexpected_errors_total",
            "Exceptions that escaped a task and were contained (a bug to report).",
            ["where"],
            registry=self.registry,
        )


class EventLoopLagMonitor:
    """Samples scheduling lag into a histogram; owned and stopped by the daemon."""

    def __init__(self, histogram: Histogram, interval_s: float = 0.25) -> None:
        self._histogram = histogram
        self._interval_s = interval_s

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self._interval_s
            await asyncio.sleep(self._interval_s)
            self._histogram.observe(max(0.0, loop.time() - expected))
