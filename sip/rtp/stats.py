"""Receiver statistics for one RTP source (RFC 3550 appendix A.1, A.3, A.8).

How this works: call `ReceiverStats.update(sequence, timestamp, arrival_s)` for every RTP packet of
one SSRC. Sequence numbers go through the A.1 validation: a new source is on probation until
`MIN_SEQUENTIAL` packets arrive in order, 16-bit wraparound is counted in `cycles`, a large jump is
believed only when the next packet confirms it (the sender restarted). `update` returns False for a
packet the A.1 algorithm does not count (probation or an unconfirmed jump); relays forward it anyway.
`report(now)` gives the A.3 numbers (expected, cumulative lost, fraction lost since the last report)
and the A.8 interarrival jitter, in timestamp units as RTCP wants it and in seconds for metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

RTP_SEQ_MOD = 1 << 16
#: A.1: a forward jump of fewer than this many sequence numbers is loss, not a restart.
MAX_DROPOUT = 3000
#: A.1: a backward step of at most this many is a late (reordered) or duplicate packet.
MAX_MISORDER = 100
#: A.1: packets in sequence before a new source is believed.
MIN_SEQUENTIAL = 2
#: RFC 3550 6.4.1: the cumulative-lost field is a signed 24-bit number and is clamped to it.
_LOST_MAX = 0x7FFFFF
_LOST_MIN = -0x800000


@dataclass(frozen=True, slots=True)
class ReceptionReport:
    """The numbers an RTCP report block carries (RFC 3550 6.4.1), for one source."""

    extended_highest_sequence: int
    expected: int
    received: int
    cumulative_lost: int
    fraction_lost: int  # fixed point, lost/expected * 256 over the last interval
    jitter: int  # timestamp units, as in the report block
    jitter_s: float


class ReceiverStats:
    """A.1 sequence validation + A.3 loss + A.8 jitter for one SSRC."""

    __slots__ = (
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "expected_prior",
        "jitter",
        "max_seq",
        "probation",
        "received",
        "received_prior",
        "transit",
    )

    def __init__(self, first_sequence: int, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self._init_seq(first_sequence)
        # A.1: "s->max_seq = seq - 1; s->probation = MIN_SEQUENTIAL" for a newly heard source.
        self.max_seq = (first_sequence - 1) % RTP_SEQ_MOD
        self.probation = MIN_SEQUENTIAL
        self.jitter = 0.0
        self.transit: float | None = None

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1  # so that seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update_sequence(self, seq: int) -> bool:
        """A.1 ``update_seq``: True if the packet counts as received."""
        udelta = (seq - self.max_seq) % RTP_SEQ_MOD
        if self.probation:
            if seq == (self.max_seq + 1) % RTP_SEQ_MOD:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            # in order, with a permissible gap
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # a very large jump: believe it only if the next packet follows it (sender restarted)
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) % RTP_SEQ_MOD
                return False
        # else: duplicate or reordered packet, counted as received (A.3 notes duplicates can make
        # "lost" negative)
        self.received += 1
        return True

    def update_jitter(self, timestamp: int, arrival_s: float) -> None:
        """A.8: J += (|D(i-1,i)| - J) / 16, everything in timestamp units.

        ``arrival_s`` is any monotonic clock in seconds; only differences matter. A difference
        beyond 2**31 is a 32-bit timestamp wraparound between two packets, not a 13-hour delay.
        """
        transit = arrival_s * self.clock_rate - timestamp
        previous = self.transit
        self.transit = transit
        if previous is not None:
            d = transit - previous
            if d < 0:
                d = -d
            if d > 2147483648.0:
                d = 4294967296.0 - d
            self.jitter += (d - self.jitter) * 0.0625

    def update(self, seq: int, timestamp: int, arrival_s: float) -> bool:
        """`update_sequence` + `update_jitter` for one packet; True if it counted."""
        # fast path, the usual case: the next packet in order of an established source
        if seq == (self.max_seq + 1) & 0xFFFF and not self.probation:
            if seq == 0:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
            self.received += 1
        elif not self.update_sequence(seq):
            return False
        self.update_jitter(timestamp, arrival_s)
        return True

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        # A.3: before the first counted packet nothing is expected yet
        if self.probation:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def report(self) -> ReceptionReport:
        """A.3 numbers, and start a new interval for the fraction lost."""
        expected = self.expected
        lost = max(_LOST_MIN, min(_LOST_MAX, expected - self.received))
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = (lost_interval << 8) // expected_interval
        return ReceptionReport(
            extended_highest_sequence=self.extended_max & 0xFFFFFFFF,
            expected=expected,
            received=self.received,
            cumulative_lost=lost,
            fraction_lost=min(fraction, 255),
            jitter=int(self.jitter),
            jitter_s=self.jitter / self.clock_rate,
        )
