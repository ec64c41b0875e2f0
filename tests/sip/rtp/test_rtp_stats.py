"""RFC 3550 A.1/A.3/A.8 receiver statistics with hand-computed expectations."""

from __future__ import annotations

import pytest

from sip.rtp.stats import ReceiverStats


def feed(stats: ReceiverStats, seqs: list[int]) -> list[bool]:
    return [stats.update_sequence(s) for s in seqs]


def test_in_order_stream_after_probation() -> None:
    s = ReceiverStats(100)
    counted = feed(s, list(range(100, 110)))
    # A.1 probation with MIN_SEQUENTIAL = 2: packet 100 is not counted, 101 re-inits the source,
    # so base_seq = 101 and packets 101..109 are counted: 9 received, 109 - 101 + 1 = 9 expected.
    assert counted == [False] + [True] * 9
    assert (s.base_seq, s.received, s.expected, s.lost) == (101, 9, 9, 0)


def test_loss_and_fraction_lost_per_interval() -> None:
    s = ReceiverStats(0)
    feed(s, [0, 1, 2, 3, 5, 6, 9, 10])  # 4, 7, 8 lost
    r = s.report()
    # base 1 (0 was probation); received 1,2,3,5,6,9,10 = 7; expected 10 - 1 + 1 = 10; lost 3
    # fraction = (3 << 8) // 10 = 768 // 10 = 76
    assert (r.expected, r.received, r.cumulative_lost, r.fraction_lost) == (10, 7, 3, 76)
    feed(s, [11, 12, 13, 14, 16, 17, 18, 19, 20])  # 15 lost
    r = s.report()
    # interval: expected 20 - 10 = 10, received 9, lost 1 -> (1 << 8) // 10 = 25;
    # cumulative: expected 20, received 16, lost 4
    assert (r.expected, r.received, r.cumulative_lost, r.fraction_lost) == (20, 16, 4, 25)
    r = s.report()
    # nothing new: expected_interval 0 -> fraction 0
    assert r.fraction_lost == 0
    assert r.cumulative_lost == 4


def test_duplicates_make_lost_negative_and_fraction_zero() -> None:
    s = ReceiverStats(0)
    feed(s, [0, 1, 2, 3, 3, 4])
    r = s.report()
    # counted 1, 2, 3, 3, 4 = 5; expected 4 - 1 + 1 = 4; lost = 4 - 5 = -1; A.3: fraction 0
    assert (r.received, r.expected, r.cumulative_lost, r.fraction_lost) == (5, 4, -1, 0)


def test_reordering_is_not_loss() -> None:
    s = ReceiverStats(0)
    counted = feed(s, [0, 1, 2, 4, 3, 5])
    # 3 arrives after 4: udelta = (3 - 4) mod 65536 = 65535 > 65536 - 100 -> reordered, counted
    assert counted == [False, True, True, True, True, True]
    assert (s.max_seq, s.cycles, s.received, s.expected, s.lost) == (5, 0, 5, 5, 0)


def test_sequence_wraparound_counts_a_cycle() -> None:
    s = ReceiverStats(65533)
    feed(s, [65533, 65534, 65535, 0, 1, 2])
    r = s.report()
    # base 65534; after 0 the cycle count is 65536; extended max = 65536 + 2 = 65538
    # expected = 65538 - 65534 + 1 = 5 = received (65534, 65535, 0, 1, 2)
    assert s.cycles == 65536
    assert (r.extended_highest_sequence, r.expected, r.received, r.cumulative_lost) == (
        65538,
        5,
        5,
        0,
    )


def test_large_jump_believed_only_when_confirmed() -> None:
    s = ReceiverStats(0)
    feed(s, list(range(11)))
    # jump 10 -> 20000: udelta 19990 >= MAX_DROPOUT 3000 -> not counted, bad_seq = 20001
    assert s.update_sequence(20000) is False
    assert s.bad_seq == 20001
    # 20001 confirms the restart: init_seq(20001) and it counts as the first packet
    assert s.update_sequence(20001) is True
    assert (s.base_seq, s.received, s.expected) == (20001, 1, 1)


def test_probation_restarts_on_out_of_order_start() -> None:
    s = ReceiverStats(5)
    # 5 then 9: not sequential -> probation back to MIN_SEQUENTIAL - 1 = 1, max_seq = 9
    assert feed(s, [5, 9]) == [False, False]
    assert s.probation == 1
    # 10 follows 9 -> probation 0, base 10
    assert s.update_sequence(10) is True
    assert (s.base_seq, s.received) == (10, 1)


def test_interarrival_jitter_a8() -> None:
    s = ReceiverStats(0, clock_rate=8000)
    # (seq, rtp ts, arrival s); 20 ms frames = 160 samples
    s.update(0, 0, 0.000)  # probation: not counted, no jitter update
    s.update(1, 160, 0.020)  # transit = 0.020 * 8000 - 160 = 0 (first transit)
    s.update(2, 320, 0.045)  # transit = 360 - 320 = 40; D = 40; J = 0 + (40 - 0) / 16 = 2.5
    assert s.jitter == pytest.approx(2.5)
    s.update(3, 480, 0.060)  # transit 0; |D| = 40; J = 2.5 + (40 - 2.5) / 16 = 4.84375
    assert s.jitter == pytest.approx(4.84375)
    s.update(4, 640, 0.080)  # transit 0; D = 0; J = 4.84375 - 4.84375 / 16 = 4.541015625
    r = s.report()
    assert s.jitter == pytest.approx(4.541015625)
    assert r.jitter == 4
    assert r.jitter_s == pytest.approx(4.541015625 / 8000)


def test_jitter_survives_timestamp_wraparound() -> None:
    s = ReceiverStats(0)
    base = 2**32 - 320
    for i in range(6):  # timestamps cross 2**32 at i = 2; perfectly paced arrivals
        s.update(i, (base + 160 * i) % 2**32, 0.02 * i)
    assert s.jitter == pytest.approx(0.0, abs=1e-6)
