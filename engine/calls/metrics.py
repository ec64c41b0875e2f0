"""The call layer's metrics: calls, waits, rings and SIP/RTP figures (prefix ``acd_``).

How this works: ``CallMetrics`` holds the counters, gauges and histograms the phases update as
things happen (bounded labels only: queue, outcome, reason, method, code). ``SipMediaCollector``
reads the SIP cores' rejection counters and the RTP statistics at scrape time instead, since
those are plain integers the hot paths bump without touching prometheus-client.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.calls.listeners import Listeners
from engine.calls.security import Security
from engine.runtime.metrics import WAIT_BUCKETS, Metrics
from sip.media import MediaStats

#: ``acd_calls_rejected_total`` reasons (bounded label values).
REJECT_REASONS = ("rtp_ports", "router_full")


class CallMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.active = Gauge("acd_calls_active", "Calls in progress (any phase).", registry=r)
        self.total = Counter(
            "acd_calls_total", "Finished calls by outcome.", ["outcome"], registry=r
        )
        self.wait = Histogram(
            "acd_queue_wait_seconds",
            "Time callers waited in queue until answered or abandoned.",
            ["queue", "outcome"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.ring_no_answer = Counter(
            "acd_ring_no_answer_total",
            "Agent rings that ended without answer (timeout, busy, declined).",
            ["queue", "reason"],
            registry=r,
        )
        self.sip_requests = Counter(
            "acd_sip_requests_total", "SIP requests received by method.", ["method"], registry=r
        )
        self.sip_responses = Counter(
            "acd_sip_responses_total",
            "SIP responses received to our requests, by status class.",
            ["code"],
            registry=r,
        )
        self.announcements = Counter(
            "acd_queue_announcements_total",
            "Position / expected-wait announcements played to waiting callers.",
            ["queue"],
            registry=r,
        )
        self.dns_failures = Counter(
            "acd_sip_dns_failures_total",
            "RFC 3263 lookups of an outbound INVITE's destination that gave no target, by reason "
            "(nxdomain, no_records, timeout, servfail, error, unsupported_transport, address_family).",
            ["reason"],
            registry=r,
        )
        self.sip_failovers = Counter(
            "acd_sip_failovers_total",
            "Outbound INVITEs sent to the next RFC 3263 target after a timeout or 503.",
            registry=r,
        )
        self.security_bans = Counter(
            "acd_security_bans_total",
            "SIP sources banned, by reason (auth_failures, user_auth_failures, scanner).",
            ["reason"],
            registry=r,
        )
        self.security_floods = Counter(
            "acd_security_floods_total",
            "Times a SIP source went over its flood limit (its drops are in "
            'acd_sip_parse_errors_total{reason="flood_dropped"}).',
            registry=r,
        )
        self.security_state_errors = Counter(
            "acd_security_state_errors_total",
            "Failures to read (op=load, at start) or write (op=save) the bans' state file "
            "(runtime.var_dir/security-bans.json); the log says why.",
            ["op"],
            registry=r,
        )
        self.monitor_sessions = Counter(
            "acd_monitor_sessions_total",
            "Supervisor monitoring sessions that joined a call (the supervisor answered), by the "
            "mode they joined in (listen, whisper, barge).",
            ["mode"],
            registry=r,
        )
        for mode in ("listen", "whisper", "barge"):
            self.monitor_sessions.labels(mode=mode)
        self.monitors_active = Gauge(
            "acd_monitor_sessions_active",
            "Supervisors on a call now (listening, whispering or barging).",
            registry=r,
        )
        self.rejected = Counter(
            "acd_calls_rejected_total",
            "Trunk calls refused with 503 (Retry-After) because the daemon had no room, by reason "
            "(rtp_ports: the [media] RTP port range is used up; router_full: runtime.max_tasks).",
            ["reason"],
            registry=r,
        )
        self.legs_without_port = Counter(
            "acd_call_legs_no_rtp_port_total",
            "Outbound legs (agent rings, transfers, callbacks, supervisors) not dialled because "
            "the RTP port range was used up; the call went back to the queue or ended.",
            registry=r,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        self.errors = metrics.unexpected_errors


class SipMediaCollector(Collector):
    """SIP rejections and RTP figures, read from the stack's plain counters at scrape time."""

    def __init__(self, listeners: Listeners, media_stats: MediaStats) -> None:
        self._listeners = listeners
        self._media_stats = media_stats

    def collect(self) -> Any:
        parse = CounterMetricFamily(
            "acd_sip_parse_errors",
            "SIP messages rejected or dropped, by reason.",
            labels=["reason"],
        )
        totals: dict[str, int] = {}
        for transport in self._listeners.transports:  # every listener's core: UDP, TCP and TLS
            for reason, n in transport.endpoint.rejections.items():
                totals[reason] = totals.get(reason, 0) + n
        for reason, n in sorted(totals.items()):
            parse.add_metric([reason], n)
        yield parse
        m = self._media_stats
        yield GaugeMetricFamily(
            "acd_rtp_sessions_active", "RTP legs open.", value=m.sessions_active
        )
        packets = CounterMetricFamily(
            "acd_rtp_packets", "RTP packets by direction.", labels=["direction"]
        )
        packets.add_metric(["in"], m.packets_received)
        packets.add_metric(["out"], m.packets_sent)
        yield packets
        yield CounterMetricFamily(
            "acd_rtp_packets_lost", "RTP packets lost (RFC 3550 A.3).", value=m.packets_lost
        )
        yield CounterMetricFamily(
            "acd_srtp_packets_rejected",
            "SRTP/SRTCP packets dropped: failed authentication, replayed or malformed.",
            value=m.packets_srtp_rejected,
        )
        dtmf = CounterMetricFamily(
            "acd_dtmf_digits", "DTMF digits received by method.", labels=["method"]
        )
        for method, n in sorted(m.dtmf_digits.items()):
            dtmf.add_metric([method], n)
        yield dtmf

    def describe(self) -> Any:
        return iter(())


class SecurityCollector(Collector):
    """Bans in force and failed digest logins, read from the guard and the SIP cores at scrape
    time (the drops a guard causes are in ``acd_sip_parse_errors_total``: flood_dropped,
    banned_dropped, banned_rejected, scanner_dropped)."""

    def __init__(self, listeners: Listeners, security: Security) -> None:
        self._listeners = listeners
        self._security = security

    def collect(self) -> Any:
        yield GaugeMetricFamily(
            "acd_security_bans_active",
            "SIP source addresses banned right now.",
            value=len(self._security.bans(self._security.now())),
        )
        failed = sum(
            t.endpoint.rejections.get("auth_failed", 0) for t in self._listeners.transports
        )
        unknown = min(self._listeners.unknown_user_failures, failed)
        auth = CounterMetricFamily(
            "acd_sip_auth_failures",
            "Failed digest logins (REGISTER answered 403), by reason: unknown_user (no such "
            "agent) or bad_credentials (wrong password, replayed or foreign nonce, another "
            "agent's credentials).",
            labels=["reason"],
        )
        auth.add_metric(["unknown_user"], unknown)
        auth.add_metric(["bad_credentials"], failed - unknown)
        yield auth

    def describe(self) -> Any:
        return iter(())
