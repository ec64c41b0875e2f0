"""Media counters as plain attributes (the engine exports them to Prometheus; sip does not).

Mapping to the engine's metrics: ``sessions_active`` -> ``acd_rtp_sessions_active``,
``packets_received`` / ``packets_sent`` -> ``acd_rtp_packets_total{direction="in"|"out"}``,
``packets_lost`` -> ``acd_rtp_packets_lost_total`` (RFC 3550 A.3 cumulative loss, added as it
grows), ``jitter`` -> the ``acd_rtp_jitter_seconds`` histogram (one observation per leg per report
interval and at close), ``packets_srtp_rejected`` -> ``acd_srtp_packets_rejected_total``, ``dtmf_digits[method]`` with method in {"rfc4733", "info", "inband"}.
"""

from __future__ import annotations

import bisect
from collections import Counter

#: Seconds. Around the usual VoIP thresholds: 5 ms is a quiet LAN, 20-30 ms one packet time,
#: 50-100 ms is where jitter buffers start to discard and calls sound bad.
JITTER_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


class Histogram:
    """Cumulative-friendly bucket counts: ``counts[i]`` observations <= ``bounds[i]``, last = +Inf."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = JITTER_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class MediaStats:
    """One per process (or per worker); endpoints and bridges bump these."""

    __slots__ = (
        "dtmf_digits",
        "jitter",
        "packets_foreign",
        "packets_lost",
        "packets_malformed",
        "packets_received",
        "packets_sent",
        "packets_srtp_rejected",
        "packets_tapped",
        "sessions_active",
        "ticker_errors",
        "timeouts",
    )

    def __init__(self) -> None:
        self.sessions_active = 0
        self.packets_received = 0
        self.packets_sent = 0
        self.packets_lost = 0
        self.packets_malformed = 0
        self.packets_foreign = 0  # from an address other than the latched one: dropped
        self.packets_tapped = 0
        self.packets_srtp_rejected = 0  # SRTP/SRTCP failing authentication or replayed: dropped
        self.timeouts = 0
        self.ticker_errors = 0  # callbacks (tickers, watchers, event handlers) that raised
        self.dtmf_digits: Counter[str] = Counter()
        self.jitter = Histogram()
