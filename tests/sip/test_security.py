"""sip.security on its own, with injected time: flood buckets and the allow-list."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip import security
from sip.security import (
    AllowList,
    FloodDetected,
    FloodLimiter,
    FloodPolicy,
    parse_networks,
)

TRUNKS = AllowList(parse_networks(["192.0.2.0/24", "2001:db8:1::/48"]))
ATTACKER = "203.0.113.9"


def drain(source: FloodLimiter) -> list[object]:
    out = []
    while (event := source.next_event()) is not None:
        out.append(event)
    return out


# -- allow-list -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "inside"),
    [
        ("192.0.2.77", True),
        ("::ffff:192.0.2.77", True),  # a dual-stack socket reports IPv4 peers this way
        ("2001:db8:1::5", True),
        ("[2001:db8:1::5]", True),
        ("2001:db8:1::5%eth0", True),
        ("192.0.3.1", False),
        ("2001:db8:2::5", False),
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_allow_list_membership(address: str, inside: bool) -> None:
    assert (address in TRUNKS) is inside


def test_parse_networks_accepts_hosts_and_names_the_bad_one() -> None:
    assert parse_networks(["198.51.100.7", " 10.1.2.3/8 "]) == (
        ipaddress.ip_network("198.51.100.7/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300/8'"):
        parse_networks(["10.0.0.300/8"])


# -- flood limits ---------------------------------------------------------------------------------


def test_flood_burst_then_drop_and_one_event_per_episode() -> None:
    limiter = FloodLimiter(FloodPolicy(rate_per_s=10, burst=5))
    assert [limiter.admit(ATTACKER, 0.0) for _ in range(5)] == [True] * 5
    assert [limiter.admit(ATTACKER, 0.0) for _ in range(3)] == [False] * 3
    assert limiter.is_flooding(ATTACKER)
    assert drain(limiter) == [FloodDetected(ATTACKER, 0.0)]
    assert limiter.admit("198.51.100.1", 0.0)  # other sources have their own bucket


def test_flood_ends_only_after_a_whole_burst_is_earned_back() -> None:
    limiter = FloodLimiter(FloodPolicy(rate_per_s=10, burst=5))
    for _ in range(6):
        limiter.admit(ATTACKER, 0.0)
    assert limiter.is_flooding(ATTACKER)
    # Slowing down to exactly the rate is not calming down: each token earned is spent again.
    t = 0.0
    for _ in range(50):
        t += 0.1
        assert not limiter.admit(ATTACKER, t)
    # Not yet full again (it costs a token, too) ... then, after 0.5 s = burst / rate of quiet.
    assert not limiter.admit(ATTACKER, t + 0.45)
    assert limiter.admit(ATTACKER, t + 0.45 + 0.5)
    assert not limiter.is_flooding(ATTACKER)
    assert drain(limiter) == [FloodDetected(ATTACKER, 0.0)]


def test_flood_steady_rate_under_the_limit_is_never_dropped() -> None:
    limiter = FloodLimiter(FloodPolicy(rate_per_s=10, burst=2))
    assert all(limiter.admit(ATTACKER, i * 0.1) for i in range(1000))
    assert drain(limiter) == []


def test_flood_allow_listed_source_is_never_dropped() -> None:
    limiter = FloodLimiter(FloodPolicy(rate_per_s=1, burst=1), TRUNKS)
    assert all(limiter.admit("192.0.2.10", 0.0) for _ in range(10_000))
    assert [limiter.admit(ATTACKER, 0.0) for _ in range(2)] == [True, False]


def test_flood_table_forgets_the_least_recently_seen_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(security, "MAX_FLOOD_SOURCES", 3)
    limiter = FloodLimiter(FloodPolicy(rate_per_s=1, burst=1))
    limiter.admit(ATTACKER, 0.0)
    limiter.admit(ATTACKER, 0.0)  # flooding
    for i, host in enumerate(["198.51.100.1", "198.51.100.2", "198.51.100.3"]):
        limiter.admit(host, 0.0)
        assert not limiter.admit(ATTACKER, 0.0), i  # every datagram keeps the flooder young
    assert len(limiter) == 3
    assert limiter.is_flooding(ATTACKER)
    # The first source spent its only token at t=0; forgotten, it starts with a fresh bucket.
    assert limiter.admit("198.51.100.1", 0.0)
    assert not limiter.admit("198.51.100.1", 0.0)


@pytest.mark.parametrize("policy", [{"rate_per_s": 0}, {"rate_per_s": float("inf")}, {"burst": 0}])
def test_flood_policy_rejects_nonsense(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"rate_per_s|burst"):
        FloodPolicy(**policy)  # type: ignore[arg-type]


def _conforming(times: list[float], rate: float, burst: int) -> bool:
    """The token-bucket definition without a bucket: no stretch of arrivals holds more than
    burst + rate * (its length) of them."""
    return all(
        j - i + 1 <= burst + rate * (times[j] - times[i])
        for i in range(len(times))
        for j in range(i, len(times))
    )


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 64), min_size=1, max_size=40),
    rate=st.sampled_from([1.0, 2.0, 4.0, 16.0]),
    burst=st.integers(1, 8),
)
def test_flood_drops_exactly_when_the_arrivals_exceed_the_bucket(
    gaps: list[int], rate: float, burst: int
) -> None:
    # Times in 1/16 s steps and power-of-two rates: the float arithmetic is exact, so the
    # reference and the bucket agree even on the boundary.
    times = []
    t = 0.0
    for gap in gaps:
        t += gap / 16
        times.append(t)
    limiter = FloodLimiter(FloodPolicy(rate_per_s=rate, burst=burst))
    verdicts = [limiter.admit(ATTACKER, at) for at in times]
    first_drop = verdicts.index(False) if False in verdicts else len(times)
    # A source below the threshold is never dropped, and the first drop is the first arrival
    # that makes the sequence exceed it.
    assert _conforming(times[:first_drop], rate, burst)
    if first_drop < len(times):
        assert not _conforming(times[: first_drop + 1], rate, burst)
