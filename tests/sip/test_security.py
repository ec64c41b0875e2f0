"""sip.security on its own, with injected time: flood buckets, bans, scanner names, the guard."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip import security
from sip.security import (
    BANNED_DROPPED,
    BANNED_REJECTED,
    FLOOD_DROPPED,
    SCANNER_DROPPED,
    SCANNER_USER_AGENTS,
    AllowList,
    BanLifted,
    BanPolicy,
    BanTracker,
    FloodDetected,
    FloodLimiter,
    FloodPolicy,
    Guard,
    ScannerMatcher,
    SecurityPolicy,
    SourceBanned,
    parse_networks,
)

TRUNKS = AllowList(parse_networks(["192.0.2.0/24", "2001:db8:1::/48"]))
ATTACKER = "203.0.113.9"


def drain(source: FloodLimiter | BanTracker | Guard) -> list[object]:
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


# -- bans -----------------------------------------------------------------------------------------


POLICY = BanPolicy(
    max_failures=3, find_window_s=60, ban_s=100, max_ban_s=350, forget_s=1000, user_max_failures=5
)


def fail(
    tracker: BanTracker, times: list[float], address: str = ATTACKER, user: str | None = None
) -> list[object]:
    return [tracker.record_failure(address, user, t) for t in times]


def test_below_threshold_nothing_at_threshold_a_ban_with_its_facts() -> None:
    tracker = BanTracker(POLICY)
    assert fail(tracker, [0.0, 1.0], user="1001") == [None, None]
    assert not tracker.is_banned(ATTACKER, 1.0)
    ban = tracker.record_failure(ATTACKER, "1001", 2.0)
    assert ban is not None
    assert (ban.address, ban.reason, ban.since, ban.until) == (
        ATTACKER,
        "auth_failures",
        2.0,
        102.0,
    )
    assert (ban.failures, ban.strikes, ban.user) == (3, 1, "1001")
    assert tracker.is_banned(ATTACKER, 101.9)
    assert not tracker.is_banned(ATTACKER, 102.0)
    assert not tracker.is_banned("198.51.100.1", 50.0)
    assert drain(tracker) == [SourceBanned(ATTACKER, "auth_failures", 2.0, 102.0, 3, 1, "1001")]
    assert tracker.bans(50.0) == [ban]
    assert tracker.ban_of(ATTACKER, 50.0) == ban
    assert tracker.bans(102.0) == []


def test_window_slides_old_failures_out() -> None:
    tracker = BanTracker(POLICY)
    assert fail(tracker, [0.0, 40.0, 80.0, 121.0]) == [None] * 4  # no 60 s hold three
    assert tracker.record_failure(ATTACKER, None, 140.0) is None  # 80 is 60 s old: out
    assert tracker.record_failure(ATTACKER, None, 141.0) is not None  # 121, 140, 141


def test_repeat_offenders_ban_time_doubles_up_to_the_cap() -> None:
    tracker = BanTracker(POLICY)
    lengths = []
    t = 0.0
    for _ in range(5):
        ban = fail(tracker, [t, t, t])[-1]
        assert ban is not None
        lengths.append(ban.until - ban.since)
        t = ban.until
    assert lengths == [100, 200, 350, 350, 350]
    assert tracker.strikes(ATTACKER) == 5


def test_strikes_are_forgotten_after_a_quiet_spell() -> None:
    tracker = BanTracker(POLICY)
    first = fail(tracker, [0.0, 0.0, 0.0])[-1]
    assert first is not None
    again = fail(tracker, [first.until + 999.0] * 3)[-1]
    assert again is not None
    assert again.strikes == 2  # 999 s after the ban ended: still remembered
    fresh = fail(tracker, [again.until + 1000.0] * 3)[-1]
    assert fresh is not None
    assert (fresh.strikes, fresh.until - fresh.since) == (1, 100)


def test_failures_while_banned_change_nothing() -> None:
    tracker = BanTracker(POLICY)
    ban = fail(tracker, [0.0, 0.0, 0.0])[-1]
    assert fail(tracker, [1.0] * 10) == [None] * 10
    assert tracker.ban_of(ATTACKER, 1.0) == ban
    assert tracker.strikes(ATTACKER) == 1


def test_one_user_failing_from_many_addresses_bans_each_address_past_the_threshold() -> None:
    tracker = BanTracker(POLICY)
    hosts = [f"198.51.100.{i}" for i in range(1, 8)]
    results = [tracker.record_failure(host, "1001", float(i)) for i, host in enumerate(hosts)]
    assert results[:4] == [None] * 4  # each host failed once: under max_failures
    assert all(ban is not None and ban.reason == "user_auth_failures" for ban in results[4:])
    assert [ban.address for ban in tracker.bans(10.0)] == hosts[4:]
    assert results[4] is not None
    assert (results[4].user, results[4].failures) == ("1001", 5)
    # Another user name from a fresh address is not affected.
    assert tracker.record_failure("198.51.100.50", "1002", 7.0) is None


def test_user_rule_off_and_long_user_names_cut() -> None:
    tracker = BanTracker(BanPolicy(max_failures=3, user_max_failures=None))
    assert all(tracker.record_failure(f"198.51.100.{i}", "1001", 0.0) is None for i in range(50))
    tracker = BanTracker(POLICY)
    ban = fail(tracker, [0.0] * 3, user="x" * 10_000)[-1]
    assert ban is not None
    assert ban.user == "x" * security.MAX_USER_CHARS


def test_allow_listed_source_is_never_banned_not_even_by_hand() -> None:
    tracker = BanTracker(POLICY, TRUNKS)
    assert fail(tracker, [0.0] * 100, address="192.0.2.5", user="1001") == [None] * 100
    assert tracker.ban("192.0.2.5", 0.0) is None
    assert not tracker.is_banned("192.0.2.5", 0.0)
    assert len(tracker) == 0
    # ... and its failures do not count against the user either.
    assert tracker.record_failure(ATTACKER, "1001", 1.0) is None


def test_lift_keeps_the_strikes_and_says_so() -> None:
    tracker = BanTracker(POLICY)
    fail(tracker, [0.0] * 3)
    drain(tracker)
    lifted = tracker.lift(ATTACKER, 10.0)
    assert lifted is not None
    assert lifted.address == ATTACKER
    assert not tracker.is_banned(ATTACKER, 10.0)
    assert drain(tracker) == [BanLifted(ATTACKER, "lifted", 10.0)]
    assert tracker.lift(ATTACKER, 11.0) is None
    again = fail(tracker, [20.0] * 3)[-1]
    assert again is not None
    assert again.strikes == 2
    assert again.until - again.since == 200


def test_manual_ban_counts_as_a_strike_and_respects_an_active_one() -> None:
    tracker = BanTracker(POLICY)
    ban = tracker.ban(ATTACKER, 0.0, duration_s=5.0)
    assert ban is not None
    assert (ban.reason, ban.until, ban.strikes) == ("manual", 5.0, 1)
    assert tracker.ban(ATTACKER, 1.0, reason="scanner") == ban
    nxt = tracker.ban(ATTACKER, 6.0, reason="scanner")
    assert nxt is not None
    assert (nxt.reason, nxt.until - nxt.since, nxt.strikes) == ("scanner", 200, 2)
    with pytest.raises(ValueError, match="reason"):
        tracker.ban(ATTACKER, 0.0, reason="bored")


def test_timer_query_and_expiry_events() -> None:
    tracker = BanTracker(POLICY)
    assert tracker.get_timer() is None
    fail(tracker, [0.0] * 3)
    fail(tracker, [5.0] * 3, address="198.51.100.1")
    drain(tracker)
    assert tracker.get_timer() == 100.0
    tracker.handle_timer(99.0)
    assert drain(tracker) == []
    tracker.handle_timer(100.0)
    assert drain(tracker) == [BanLifted(ATTACKER, "expired", 100.0)]
    assert tracker.get_timer() == 105.0
    tracker.lift("198.51.100.1", 50.0)  # a lifted ban's timer entry goes stale
    assert tracker.get_timer() is None


def test_expiry_noticed_without_the_timer() -> None:
    tracker = BanTracker(POLICY)
    fail(tracker, [0.0] * 3)
    drain(tracker)
    assert tracker.record_failure(ATTACKER, None, 150.0) is None  # timer never ran
    assert drain(tracker) == [BanLifted(ATTACKER, "expired", 100.0)]


def test_full_table_forgets_the_idle_not_the_attacker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "MAX_BAN_SOURCES", 3)
    tracker = BanTracker(POLICY)
    fail(tracker, [0.0] * 3, address="198.51.100.1")  # banned, then goes quiet
    fail(tracker, [0.0] * 3)  # banned, keeps sending
    drain(tracker)
    for i in range(2, 6):
        assert tracker.is_banned(ATTACKER, 1.0)
        tracker.record_failure(f"198.51.100.{i}", None, 1.0)
    assert len(tracker) == 3
    assert tracker.is_banned(ATTACKER, 1.0)
    assert not tracker.is_banned("198.51.100.1", 1.0)
    assert drain(tracker) == [BanLifted("198.51.100.1", "evicted", 1.0)]
    assert tracker.get_timer() == 100.0  # the evicted ban's entry is stale, the attacker's live
    # A ban that ran out unnoticed (no timer call) and is then forgotten still ends with an event.
    for i in range(6, 9):
        tracker.record_failure(f"198.51.100.{i}", None, 500.0)
    assert BanLifted(ATTACKER, "expired", 100.0) in drain(tracker)


def test_export_import_across_clocks() -> None:
    tracker = BanTracker(POLICY)
    fail(tracker, [1000.0] * 3)  # banned until 1100, strike 1
    first = fail(tracker, [1000.0] * 3, address="198.51.100.1")[-1]
    assert first is not None
    tracker.lift("198.51.100.1", 1010.0)  # strikes remembered, no ban
    fail(tracker, [1040.0, 1045.0], address="198.51.100.2", user="1001")  # two failures pending
    fail(tracker, [0.0], address="198.51.100.3")  # slid out of the window: nothing to keep
    state = json.loads(json.dumps(tracker.export_state(1050.0)))  # JSON all the way through
    assert [s["address"] for s in state["sources"]] == [ATTACKER, "198.51.100.1", "198.51.100.2"]

    restored = BanTracker(POLICY)
    restored.import_state(state, 5.0)  # a new process: its monotonic clock starts low
    ban = restored.ban_of(ATTACKER, 5.0)
    assert ban is not None
    assert (ban.since, ban.until, ban.strikes, ban.reason) == (-45.0, 55.0, 1, "auth_failures")
    assert restored.get_timer() == 55.0
    assert drain(restored) == []  # restoring is no news
    assert not restored.is_banned("198.51.100.1", 5.0)
    again = fail(restored, [6.0] * 3, address="198.51.100.1")[-1]
    assert again is not None
    assert again.strikes == 2  # the repeat offender is still one
    # The pending failures are still inside the window: one more bans.
    assert restored.record_failure("198.51.100.2", "1001", 6.0) is not None
    assert restored.export_state(5.0)["version"] == security.STATE_VERSION


def test_import_after_downtime_ages_everything_by_it() -> None:
    """A restart: the state file was written, the daemon was down 30 s (the wall clock says so),
    the new process's monotonic clock starts anywhere. Bans end when they would have."""
    tracker = BanTracker(POLICY)
    fail(tracker, [1000.0] * 3)  # banned 1000..1100
    fail(tracker, [1000.0] * 3, address="198.51.100.1")  # banned 1000..1100 too
    tracker.lift("198.51.100.1", 1001.0)
    fail(tracker, [1040.0, 1045.0], address="198.51.100.2")  # two failures pending
    state = tracker.export_state(1050.0)
    restored = BanTracker(POLICY)
    restored.import_state(state, 7.0, elapsed_s=30.0)
    ban = restored.ban_of(ATTACKER, 7.0)
    assert ban is not None
    assert (ban.since, ban.until) == (-73.0, 27.0)  # 50 s old at export, 80 s now: 20 s left
    assert restored.get_timer() == 27.0
    assert not restored.is_banned(ATTACKER, 27.0)
    # The pending failures are 40 and 35 s old now: still inside the 60 s window, one more bans.
    assert restored.record_failure("198.51.100.2", None, 7.0) is not None
    # Down longer than the ban: it is over, but its strike counts for the next one.
    late = BanTracker(POLICY)
    late.import_state(state, 7.0, elapsed_s=60.0)
    assert late.bans(7.0) == []
    assert late.strikes(ATTACKER) == 1
    again = fail(late, [8.0] * 3)[-1]
    assert again is not None
    assert again.strikes == 2
    with pytest.raises(ValueError, match="elapsed_s"):
        late.import_state(state, 7.0, elapsed_s=-1.0)
    assert late.strikes(ATTACKER) == 2  # a refused import changes nothing


def test_import_skips_what_is_allow_listed_now_and_what_ran_out() -> None:
    tracker = BanTracker(POLICY)
    fail(tracker, [0.0] * 3, address="192.0.2.5")
    fail(tracker, [0.0] * 3)
    state = tracker.export_state(10.0)
    restored = BanTracker(POLICY, TRUNKS)
    restored.import_state(state, 0.0)
    assert [b.address for b in restored.bans(0.0)] == [ATTACKER]
    later = BanTracker(POLICY)
    state["sources"][1]["ban"]["remaining_s"] = 0  # type: ignore[index]
    later.import_state(state, 0.0)
    assert [b.address for b in later.bans(0.0)] == ["192.0.2.5"]
    assert later.get_timer() == 90.0
    assert later.strikes(ATTACKER) == 1  # its ban ran out, its strike did not


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 99, "sources": [], "users": []},
        {"version": 1, "sources": "x", "users": []},
        {"version": 1, "sources": [{"address": ""}], "users": []},
        {"version": 1, "sources": [{"address": "a", "strikes": -1}], "users": []},
        {
            "version": 1,
            "sources": [{"address": "a", "strikes": 1, "failure_ages_s": ["x"]}],
            "users": [],
        },
        {"version": 1, "sources": [], "users": [{"user": "u", "failure_ages_s": [float("nan")]}]},
        {"version": 1, "sources": [], "users": [{"user": "u", "failure_ages_s": [-5.0]}]},
        {
            "version": 1,
            "sources": [
                {
                    "address": "a",
                    "strikes": 1,
                    "failure_ages_s": [],
                    "last_ban_age_s": None,
                    "ban": {
                        "reason": "nope",
                        "user": None,
                        "age_s": 1,
                        "remaining_s": 1,
                        "failures": 1,
                    },
                }
            ],
            "users": [],
        },
    ],
)
def test_import_rejects_a_broken_state_and_keeps_the_old_one(state: dict[str, object]) -> None:
    tracker = BanTracker(POLICY)
    fail(tracker, [0.0] * 3)
    with pytest.raises(ValueError, match=r"ban state"):
        tracker.import_state(state, 1.0)
    assert tracker.is_banned(ATTACKER, 1.0)


def test_ban_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_failures"):
        BanPolicy(max_failures=0)
    with pytest.raises(ValueError, match="ban_s"):
        BanPolicy(ban_s=float("nan"))
    with pytest.raises(ValueError, match="max_ban_s"):
        BanPolicy(ban_s=100, max_ban_s=10)
    assert BanPolicy().ban_time_s(10_000) == BanPolicy().max_ban_s  # no overflow, capped


failure_times = st.lists(st.integers(0, 400).map(float), max_size=30).map(sorted)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["192.0.2.1", "192.0.2.200", ATTACKER, "2001:db8:1::9"]),
            st.sampled_from(["1001", "1002", None]),
        ),
        max_size=60,
    ),
    manual=st.lists(st.sampled_from(["192.0.2.1", "2001:db8:1::9"]), max_size=3),
)
def test_no_allow_listed_address_is_ever_banned(
    events: list[tuple[str, str | None]], manual: list[str]
) -> None:
    tracker = BanTracker(POLICY, TRUNKS)
    for i, (address, user) in enumerate(events):
        tracker.record_failure(address, user, i * 0.5)
    for address in manual:
        tracker.ban(address, 40.0)
    banned = {b.address for b in tracker.bans(40.0)} | {
        e.address for e in drain(tracker) if isinstance(e, SourceBanned)
    }
    assert not any(address in TRUNKS for address in banned)


@settings(max_examples=300, deadline=None)
@given(times=failure_times)
def test_a_source_is_banned_exactly_when_a_window_holds_enough_failures(times: list[float]) -> None:
    tracker = BanTracker(POLICY)
    for i, t in enumerate(times):
        ban = tracker.record_failure(ATTACKER, None, t)
        in_window = [u for u in times[: i + 1] if u > t - POLICY.find_window_s]
        assert (ban is not None) == (len(in_window) >= POLICY.max_failures)
        if ban is not None:
            return  # the reference only describes the way to the first ban


# -- scanners -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_agent",
    [
        "friendly-scanner",
        "Friendly-Scanner",
        "sipvicious",
        "SIPVicious PRO 1.0",
        "sipcli/v1.8",
        "sip-scan",
        "VaxSIPUserAgent/3.1",
        "pplsip",
        "iWar",
        "sundayddr",
        "SIVuS Scanner",
    ],
)
def test_scanner_user_agents_match_case_insensitively(user_agent: str) -> None:
    assert ScannerMatcher().matches(user_agent)


@pytest.mark.parametrize(
    "user_agent",
    [
        None,
        "",
        "Yealink SIP-T46S 66.85.0.5",
        "PolycomVVX-VVX_411-UA/6.3.0.14929",
        "Z 5.6.1 v2.10.19.9",
        "MicroSIP/3.21.3",
        "Linphone Desktop/5.0.0",
        "Asterisk PBX 18.20.0",
        "baresip v2.0.0 (x86_64/linux)",
        "Grandstream GXP2170 1.0.11.3",
        "sipsak 0.9.8",  # operators' health checks
        "acd",
    ],
)
def test_ordinary_phones_and_servers_are_no_scanners(user_agent: str | None) -> None:
    assert not ScannerMatcher().matches(user_agent)


def test_scanner_list_is_configurable() -> None:
    matcher = ScannerMatcher(["EvilDialer", " "])
    assert matcher.user_agents == ("evildialer",)
    assert matcher.matches("the EVILDIALER 2")
    assert not matcher.matches("friendly-scanner")
    assert not ScannerMatcher([]).matches("friendly-scanner")
    assert "friendly-scanner" in SCANNER_USER_AGENTS


# -- the guard ------------------------------------------------------------------------------------


def test_guard_off_parts_screen_nothing() -> None:
    guard = Guard(SecurityPolicy())
    assert (guard.flood, guard.bans, guard.scanners) == (None, None, None)
    assert guard.screen(ATTACKER, 0.0) is None
    assert guard.screen_request(ATTACKER, "friendly-scanner", 0.0) is None
    guard.auth_failed(ATTACKER, "1001", 0.0)
    assert guard.get_timer() is None
    assert guard.next_event() is None


def test_guard_checks_the_flood_limit_before_bans() -> None:
    guard = Guard(SecurityPolicy(flood=FloodPolicy(rate_per_s=1, burst=2), bans=POLICY))
    assert guard.bans is not None
    guard.bans.ban(ATTACKER, 0.0)
    assert guard.screen(ATTACKER, 0.0) is BANNED_DROPPED
    assert guard.screen(ATTACKER, 0.0) is BANNED_DROPPED
    assert guard.screen(ATTACKER, 0.0) is FLOOD_DROPPED  # banned or not, a flood is a flood
    assert guard.screen_request(ATTACKER, None, 0.0) is None  # "drop" mode refused it already
    assert [type(e) for e in drain(guard)] == [SourceBanned, FloodDetected]  # as they happened


def test_guard_reject_mode_answers_403_after_parsing() -> None:
    guard = Guard(SecurityPolicy(bans=POLICY, banned_action="reject"))
    for _ in range(3):
        guard.auth_failed(ATTACKER, "1001", 0.0)
    assert guard.screen(ATTACKER, 1.0) is None
    refusal = guard.screen_request(ATTACKER, "Yealink", 1.0)
    assert refusal is BANNED_REJECTED
    assert (refusal.reason, refusal.status) == ("banned_rejected", 403)
    assert guard.get_timer() == 100.0
    guard.handle_timer(100.0)
    assert [type(e) for e in drain(guard)] == [SourceBanned, BanLifted]


def test_guard_scanners_dropped_banned_on_request_but_not_when_allow_listed() -> None:
    policy = SecurityPolicy(
        allow=TRUNKS.networks,
        bans=POLICY,
        scanner_user_agents=SCANNER_USER_AGENTS,
        ban_scanners=True,
    )
    guard = Guard(policy)
    assert guard.screen_request(ATTACKER, "friendly-scanner", 0.0) is SCANNER_DROPPED
    assert guard.screen(ATTACKER, 1.0) is BANNED_DROPPED
    (banned,) = drain(guard)
    assert isinstance(banned, SourceBanned)
    assert banned.reason == "scanner"
    assert guard.screen_request("192.0.2.9", "friendly-scanner", 0.0) is None


def test_security_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="banned_action"):
        SecurityPolicy(banned_action="shrug")
    with pytest.raises(ValueError, match="ban_scanners"):
        SecurityPolicy(scanner_user_agents=SCANNER_USER_AGENTS, ban_scanners=True)
