"""Screening SIP sources: flood limits, auth-failure bans and scanner detection, sans-I/O.

How this works
--------------
Every piece is fed a source address (the host string the transport reports) and ``now``, and
reads no clock of its own, like the rest of the core:

- `FloodLimiter` is Kamailio's pike: a token bucket per source address, checked per request
  before anything is parsed. A source that empties its bucket is *flooding*: its requests are
  dropped until it has kept under the rate long enough to earn a whole burst back.
- `BanTracker` is fail2ban over Asterisk's security log, or Kamailio's htable ``ipban``: failed
  digest attempts are counted per source address and per user name within a window; reaching
  the threshold bans the source address, for twice as long at each repeat offence (capped).
- `ScannerMatcher` recognises the User-Agent strings of SIP scanners and war-dialers.
- `AllowList` holds the networks (trunks, management) that none of the above ever touches.

`Guard` puts them together in front of `sip.endpoint.Endpoint` (``EndpointConfig.security``): it
answers "drop or answer this" with a `Refusal` naming the counter to bump. Facts worth a log
line (`SourceBanned`, `BanLifted`, `FloodDetected`) are queued and drained with
``next_event()``, or handed to an ``emit`` callable (the endpoint passes its own event queue's
``append``, so they come out of ``Endpoint.next_event()`` in the order they happened); ban
expiry is a timer query (``get_timer()`` / ``handle_timer(now)``). Memory is bounded: each table keeps at most a
fixed number of sources and forgets the least recently seen one first, which is never a source
still attacking, since every arrival refreshes it.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "BANNED_ACTIONS",
    "BANNED_DROPPED",
    "BANNED_REJECTED",
    "BAN_REASONS",
    "FLOOD_DROPPED",
    "LIFT_REASONS",
    "MAX_BAN_SOURCES",
    "MAX_BAN_USERS",
    "MAX_FLOOD_SOURCES",
    "MAX_USER_CHARS",
    "SCANNER_DROPPED",
    "SCANNER_USER_AGENTS",
    "STATE_VERSION",
    "AllowList",
    "Ban",
    "BanLifted",
    "BanPolicy",
    "BanTracker",
    "FloodDetected",
    "FloodLimiter",
    "FloodPolicy",
    "Guard",
    "IPNetwork",
    "Refusal",
    "ScannerMatcher",
    "SecurityEvent",
    "SecurityPolicy",
    "SourceBanned",
    "parse_networks",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Most sources a `FloodLimiter` keeps a bucket for. ipset's hash:ip sets default to 65536
#: entries (maxelem), which is what fail2ban's ipset actions and most iptables anti-flood recipes
#: live with; a bucket takes ~230 bytes with its key, so ~15 MB at most. A UDP flood from spoofed
#: sources churns the table, but a real flooder is refreshed by every request it sends and is
#: never the one forgotten.
MAX_FLOOD_SOURCES: Final = 65536
#: Most sources a `BanTracker` remembers (failures, strikes, bans): same bound as ipset's, since
#: an active ban here is what an ipset entry is to fail2ban. A source and the user name it
#: tried take ~500 bytes together, so both tables stay within ~32 MB.
MAX_BAN_SOURCES: Final = 65536
#: Most user names whose failures are counted; a guesser cycling through names fills it.
MAX_BAN_USERS: Final = 65536
#: User names longer than this are cut before they are counted or reported. RFC 3261 sets no
#: limit, real logins and extensions are short, and the cut bounds the user table (a header line
#: may be 16 KiB, `sip.limits.MAX_LINE_BYTES`) and the log lines the engine writes from events.
MAX_USER_CHARS: Final = 128
#: Version of the `BanTracker.export_state` format.
STATE_VERSION: Final = 1

#: User-Agent substrings of SIP scanners, war-dialers and fuzzers, matched case-insensitively
#: anywhere in the header, as the Kamailio and OpenSIPS security guides do (``$ua =~ "..."``).
#: "friendly-scanner" is SIPVicious' default (svmap, svwar, svcrack); "sipvicious" its newer
#: versions; "sipcli", "sip-scan", "sipscan" and "sundayddr" are scanners; "VaxSIPUserAgent"
#: is the SDK that dialers for toll fraud are built on; "pplsip", "iWar" (war-dialer) and
#: "SIVuS" (vulnerability scanner) complete the lists those guides share. Left out on purpose:
#: "sipsak" (operators use it for health checks, Kamailio's own docs among them) and short
#: tokens such as "smap" that would match inside unrelated product names.
SCANNER_USER_AGENTS: Final = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "vaxsipuseragent",
    "pplsip",
    "iwar",
    "sivus",
)

#: Why a source is banned: its own digest failures, failures against one user name from
#: anywhere, a scanner User-Agent (`SecurityPolicy.ban_scanners`), or an operator.
BAN_REASONS: Final = frozenset({"auth_failures", "user_auth_failures", "scanner", "manual"})
#: Why a ban ended: its time ran out, `BanTracker.lift`, or the table was full (`MAX_BAN_SOURCES`).
LIFT_REASONS: Final = frozenset({"expired", "lifted", "evicted"})
#: What the endpoint does with a banned source's requests: drop them unseen (fail2ban's iptables
#: DROP, Kamailio's ipban + ``exit``), or answer 403 so a misconfigured phone's owner sees why.
BANNED_ACTIONS: Final = frozenset({"drop", "reject"})

#: The ban heap is rebuilt from its live entries when it grows past this many per tracked source
#: (the registrar's heap keeps the same slack).
_HEAP_SLACK_FACTOR: Final = 2
#: The ban doubling stops here: 2**32 times any ban_s already exceeds every sensible max_ban_s,
#: and a float overflows past 2**1023.
_MAX_DOUBLINGS: Final = 32


# -- addresses ------------------------------------------------------------------------------------


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of a transport address: brackets and an IPv6 zone (``%eth0``) removed, and an
    IPv4-mapped IPv6 address (a dual-stack socket) read as the IPv4 address it carries."""
    host = address.strip("[]").partition("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_networks(specs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from strings ("192.0.2.0/24", "2001:db8::/32", "198.51.100.7"); host bits set
    are accepted (``strict=False``) as the engine's trunk allow-lists do. ValueError names a
    string that is no network."""
    out: list[IPNetwork] = []
    for spec in specs:
        try:
            out.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP network: {spec!r}") from exc
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AllowList:
    """Networks whose sources are never flood-limited, banned or dropped as scanners."""

    networks: tuple[IPNetwork, ...] = ()

    def __contains__(self, address: object) -> bool:
        if not self.networks or not isinstance(address, str):
            return False
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceBanned:
    """`address` is banned until `until` (`reason` in `BAN_REASONS`); `user` is the user name
    whose failures tipped it, `failures` how many were counted, `strikes` how many bans this
    source has had (this one included), which doubled its ban time."""

    address: str
    reason: str
    since: float
    until: float
    failures: int
    strikes: int
    user: str | None


@dataclass(frozen=True, slots=True)
class BanLifted:
    """The ban of `address` ended at `at`; `reason` in `LIFT_REASONS`. Its strikes are kept."""

    address: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class FloodDetected:
    """`address` started flooding at `at`; its requests are dropped until it calms down. Once
    per episode: the drops themselves are only counted."""

    address: str
    at: float


SecurityEvent = SourceBanned | BanLifted | FloodDetected


# -- flood limits (Kamailio pike) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FloodPolicy:
    """A token bucket per source: `burst` requests at once, `rate_per_s` sustained.

    Kamailio's stock config allows 16 requests per 2 s per source (pike sampling_time_unit 2,
    reqs_density_per_unit 16). A contact center sees whole floors of phones behind one NAT
    address, each re-registering, subscribing and calling, so the default is far above one
    site's signalling and still far below a scanner's, which sends as fast as its link allows.
    Allow-list trunks: one busy trunk alone exceeds any per-source rate that would stop a flood.
    """

    rate_per_s: float = 50.0
    burst: int = 100

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ValueError(f"rate_per_s must be a positive number, not {self.rate_per_s!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, not {self.burst!r}")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when `tokens` was last brought up to date
    exempt: bool  # allow-listed: looked up once, when the source is first seen
    flooding: bool = False


class FloodLimiter:
    """Per-source token buckets; `admit` is the whole per-request cost (one dict lookup and a
    little arithmetic, no parsing)."""

    def __init__(
        self,
        policy: FloodPolicy,
        allow: AllowList | None = None,
        *,
        emit: Callable[[FloodDetected], None] | None = None,
    ) -> None:
        self.policy: Final = policy
        self.allow: Final = allow or AllowList()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._queue: deque[FloodDetected] = deque()
        self._emit: Final = emit if emit is not None else self._queue.append

    def admit(self, address: str, now: float) -> bool:
        """Count one request from `address`; False if it is to be dropped (flooding).

        While a source floods, its dropped requests still take tokens, so a flooder that merely
        slows down to the limit stays out; it is let in again once its bucket is full, i.e. it
        has kept under `rate_per_s` for about `burst / rate_per_s` seconds.
        """
        buckets = self._buckets
        bucket = buckets.get(address)
        policy = self.policy
        if bucket is None:
            bucket = _Bucket(float(policy.burst), now, address in self.allow)
            buckets[address] = bucket
            if len(buckets) > MAX_FLOOD_SOURCES:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(address)
        if bucket.exempt:
            return True
        elapsed = now - bucket.at
        tokens = bucket.tokens
        if elapsed > 0:
            tokens = min(float(policy.burst), tokens + elapsed * policy.rate_per_s)
            bucket.at = now
        if bucket.flooding and tokens >= policy.burst:
            bucket.flooding = False  # calmed down
        if not bucket.flooding and tokens >= 1:
            bucket.tokens = tokens - 1
            return True
        if not bucket.flooding:
            bucket.flooding = True
            self._emit(FloodDetected(address, now))
        bucket.tokens = max(0.0, tokens - 1)
        return False

    def is_flooding(self, address: str) -> bool:
        """Was `address` flooding as of its last request?"""
        bucket = self._buckets.get(address)
        return bucket is not None and bucket.flooding

    def __len__(self) -> int:
        return len(self._buckets)

    def next_event(self) -> FloodDetected | None:
        """The next queued event (never any when constructed with `emit`)."""
        return self._queue.popleft() if self._queue else None


# -- auth-failure bans (fail2ban, Kamailio htable ipban) ------------------------------------------


@dataclass(frozen=True, slots=True)
class BanPolicy:
    """When digest failures ban a source, and for how long.

    The defaults are fail2ban's jail.conf (maxretry 5, findtime 10m, bantime 10m) with its
    ``bantime.increment`` on: each further ban of the same source lasts twice as long, up to
    `max_ban_s`; a source banned nowhere for `forget_s` (fail2ban's dbpurgeage, 1 day) starts
    over. `user_max_failures` also bans any source that fails for a user name which has failed
    that often within the window from anywhere (a guesser spread over many addresses); None turns
    that off. Mind NAT: one misconfigured phone bans the whole office behind its address, so
    allow-list the sites you know.
    """

    max_failures: int = 5
    find_window_s: float = 600.0
    ban_s: float = 600.0
    max_ban_s: float = 7 * 86400.0
    forget_s: float = 86400.0
    user_max_failures: int | None = 10

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, not {self.max_failures!r}")
        if self.user_max_failures is not None and self.user_max_failures < 1:
            raise ValueError(
                f"user_max_failures must be at least 1, not {self.user_max_failures!r}"
            )
        for name in ("find_window_s", "ban_s", "max_ban_s", "forget_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.max_ban_s < self.ban_s:
            raise ValueError("max_ban_s must not be shorter than ban_s")

    def ban_time_s(self, strikes: int) -> float:
        """Length of a source's `strikes`-th ban: ban_s, doubling, at most max_ban_s."""
        doublings = min(max(strikes - 1, 0), _MAX_DOUBLINGS)
        return min(math.ldexp(self.ban_s, doublings), self.max_ban_s)


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban of `address` for `reason` from `since` until `until` (see `SourceBanned`)."""

    address: str
    reason: str
    since: float
    until: float
    failures: int
    strikes: int
    user: str | None = None


@dataclass(slots=True, eq=False)
class _Source:
    #: Times of the failures inside the window, oldest first, at most max_failures of them. A
    #: list, not a deque: a few floats in a list take ~100 bytes, an empty deque already 760.
    failures: list[float] = field(default_factory=list)
    strikes: int = 0
    ban: Ban | None = None
    last_ban_until: float = -math.inf  # when its last ban ended: strikes are forgotten from it


class BanTracker:
    """Failed digest attempts per source and per user name -> bans of source addresses.

    A successful authentication resets nothing: fail2ban counts failures only, and clearing them
    on success would let an attacker with one valid account (its own phone) mix logins in with
    guesses at other accounts and never reach the threshold. A banned source's failures are not
    counted (it is being refused anyway), and neither are an allow-listed source's.
    """

    def __init__(
        self,
        policy: BanPolicy,
        allow: AllowList | None = None,
        *,
        emit: Callable[[SourceBanned | BanLifted], None] | None = None,
    ) -> None:
        self.policy: Final = policy
        self.allow: Final = allow or AllowList()
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._users: OrderedDict[str, list[float]] = OrderedDict()
        self._queue: deque[SourceBanned | BanLifted] = deque()
        self._emit: Final = emit if emit is not None else self._queue.append
        # (until, seq, address) with lazy deletion: an entry counts only while its source still
        # has that very ban (see `_live`); lifted or evicted bans leave stale entries behind.
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0

    # -- commands --

    def record_failure(self, address: str, user: str | None, now: float) -> Ban | None:
        """One failed digest attempt from `address` for `user`; the ban it caused, if any."""
        if address in self.allow:
            return None
        source = self._touch(address, now)
        if self._active(address, source, now) is not None:
            return None
        policy = self.policy
        window_start = now - policy.find_window_s
        failures = source.failures
        failures.append(now)
        _slide(failures, window_start, policy.max_failures)
        user = user[:MAX_USER_CHARS] if user else None
        user_failures = 0
        if user is not None and policy.user_max_failures is not None:
            times = self._user_failures(user)
            times.append(now)
            _slide(times, window_start, policy.user_max_failures)
            user_failures = len(times)
        if len(failures) >= policy.max_failures:
            return self._ban(address, source, "auth_failures", user, len(failures), now, None)
        if policy.user_max_failures is not None and user_failures >= policy.user_max_failures:
            return self._ban(address, source, "user_auth_failures", user, user_failures, now, None)
        return None

    def ban(
        self,
        address: str,
        now: float,
        *,
        reason: str = "manual",
        duration_s: float | None = None,
        user: str | None = None,
    ) -> Ban | None:
        """Ban `address` now (an operator, or a scanner seen): for `duration_s`, or as long as
        its next strike earns. Counts as a strike. An active ban is returned unchanged; an
        allow-listed address is never banned (None)."""
        if reason not in BAN_REASONS:
            raise ValueError(f"unknown ban reason {reason!r}")
        if duration_s is not None and not (duration_s > 0 and math.isfinite(duration_s)):
            raise ValueError(f"duration_s must be a positive number, not {duration_s!r}")
        if address in self.allow:
            return None
        source = self._touch(address, now)
        active = self._active(address, source, now)
        if active is not None:
            return active
        user = user[:MAX_USER_CHARS] if user else None
        return self._ban(address, source, reason, user, len(source.failures), now, duration_s)

    def lift(self, address: str, now: float) -> Ban | None:
        """End the ban of `address` now (its strikes stay); the ban lifted, or None."""
        source = self._sources.get(address)
        if source is None or self._active(address, source, now) is None:
            return None
        ban = source.ban
        assert ban is not None
        self._end(address, source, "lifted", now)
        return ban

    def get_timer(self) -> float | None:
        """When the next ban runs out (call `handle_timer` then), or None."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        """End every ban whose time is up at `now` (one `BanLifted` each)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._live(entry):
                until, _, address = entry
                self._end(address, self._sources[address], "expired", until)

    def next_event(self) -> SourceBanned | BanLifted | None:
        """The next queued event (never any when constructed with `emit`)."""
        return self._queue.popleft() if self._queue else None

    # -- queries --

    def is_banned(self, address: str, now: float) -> bool:
        """Is `address` banned at `now`? The per-request check: one dict lookup. A banned source
        that keeps sending is moved to the young end of the table, so it is never forgotten
        while it attacks."""
        source = self._sources.get(address)
        if source is None:
            return False
        ban = source.ban
        if ban is None or now >= ban.until:
            return False
        self._sources.move_to_end(address)
        return True

    def ban_of(self, address: str, now: float) -> Ban | None:
        source = self._sources.get(address)
        ban = source.ban if source is not None else None
        return ban if ban is not None and now < ban.until else None

    def bans(self, now: float) -> list[Ban]:
        """The bans active at `now`, oldest first."""
        out = [s.ban for s in self._sources.values() if s.ban is not None and now < s.ban.until]
        out.sort(key=lambda ban: (ban.since, ban.address))
        return out

    def strikes(self, address: str) -> int:
        source = self._sources.get(address)
        return source.strikes if source is not None else 0

    def __len__(self) -> int:
        """Sources tracked (failing, banned, or remembered for their strikes)."""
        return len(self._sources)

    # -- keeping bans across a reload --

    def export_state(self, now: float) -> dict[str, object]:
        """Everything worth keeping, as JSON-ready data with times relative to `now` (ages and
        remaining seconds), so it can be imported under another clock (a new process's
        monotonic time). Sources with nothing left to remember are left out."""
        policy = self.policy
        sources: list[dict[str, object]] = []
        for address, source in self._sources.items():
            failures = [now - t for t in source.failures if t > now - policy.find_window_s]
            ban = self.ban_of(address, now)
            remembered = ban is not None or now - source.last_ban_until < policy.forget_s
            if not failures and not (remembered and source.strikes):
                continue
            last = source.last_ban_until
            sources.append(
                {
                    "address": address,
                    "strikes": source.strikes if remembered else 0,
                    "failure_ages_s": failures,
                    "last_ban_age_s": now - last if math.isfinite(last) else None,
                    "ban": None if ban is None else _ban_state(ban, now),
                }
            )
        users = [
            {"user": user, "failure_ages_s": [now - t for t in times]}
            for user, times in self._users.items()
            if times and times[-1] > now - self.policy.find_window_s
        ]
        return {"version": STATE_VERSION, "sources": sources, "users": users}

    def import_state(
        self, state: Mapping[str, object], now: float, *, elapsed_s: float = 0.0
    ) -> None:
        """Replace everything tracked with `state` from `export_state`, read at `now`.

        `elapsed_s` is the time that passed since the export while nothing tracked (a restart's
        downtime, which the caller reads off the wall clock; 0 for a reload in the same process):
        ages grow by it and bans' remaining times shrink by it, so a ban ends when it would
        have; one that ran out meanwhile is remembered as ended then (for its strikes). Sources
        that are allow-listed now are skipped. No events: the caller knows what it restored, and
        `bans()` lists it. ValueError (nothing changed) if `state` is not what export_state
        makes or `elapsed_s` is no number of seconds.
        """
        if not (math.isfinite(elapsed_s) and elapsed_s >= 0):
            raise ValueError(f"elapsed_s must be seconds >= 0, found {elapsed_s!r}")
        sources, users = _read_state(state)
        self._sources.clear()
        self._users.clear()
        self._heap.clear()
        for address, strikes, failure_ages, last_ban_age, ban in sources[-MAX_BAN_SOURCES:]:
            if address in self.allow:
                continue
            times = sorted(now - age - elapsed_s for age in failure_ages)
            source = _Source(times[-self.policy.max_failures :], strikes)
            if last_ban_age is not None:
                source.last_ban_until = now - last_ban_age - elapsed_s
            if ban is not None:
                reason, user, age_s, remaining_s, failures = ban
                until = now + remaining_s - elapsed_s
                if until > now:
                    since = now - age_s - elapsed_s
                    source.ban = Ban(address, reason, since, until, failures, strikes, user)
                    self._push(source.ban)
                else:
                    source.last_ban_until = max(source.last_ban_until, until)
            self._sources[address] = source
        user_max = self.policy.user_max_failures
        if user_max is not None:
            for user, failure_ages in users[-MAX_BAN_USERS:]:
                self._users[user] = sorted(now - age - elapsed_s for age in failure_ages)[
                    -user_max:
                ]

    # -- internals --

    def _touch(self, address: str, now: float) -> _Source:
        sources = self._sources
        source = sources.get(address)
        if source is not None:
            sources.move_to_end(address)
            return source
        source = _Source()
        sources[address] = source
        if len(sources) > MAX_BAN_SOURCES:
            old_address, old = sources.popitem(last=False)
            ban = old.ban
            if ban is not None:  # every ban ends with a BanLifted, even a forgotten one
                running = now < ban.until
                reason, at = ("evicted", now) if running else ("expired", ban.until)
                self._emit(BanLifted(old_address, reason, at))
        return source

    def _user_failures(self, user: str) -> list[float]:
        users = self._users
        times = users.get(user)
        if times is not None:
            users.move_to_end(user)
            return times
        times = users[user] = []
        if len(users) > MAX_BAN_USERS:
            users.popitem(last=False)
        return times

    def _active(self, address: str, source: _Source, now: float) -> Ban | None:
        """The source's ban if still running; one that ran out is ended here (its timer may not
        have fired yet)."""
        ban = source.ban
        if ban is None:
            return None
        if now < ban.until:
            return ban
        self._end(address, source, "expired", ban.until)
        return None

    def _ban(
        self,
        address: str,
        source: _Source,
        reason: str,
        user: str | None,
        failures: int,
        now: float,
        duration_s: float | None,
    ) -> Ban:
        policy = self.policy
        if source.strikes and now - source.last_ban_until >= policy.forget_s:
            source.strikes = 0  # a day without a ban: a first offender again
        source.strikes += 1
        length = duration_s if duration_s is not None else policy.ban_time_s(source.strikes)
        ban = Ban(address, reason, now, now + length, failures, source.strikes, user)
        source.ban = ban
        source.failures.clear()  # as fail2ban: the ban answers the failures that caused it
        self._push(ban)
        self._emit(SourceBanned(address, reason, now, ban.until, failures, source.strikes, user))
        return ban

    def _end(self, address: str, source: _Source, reason: str, at: float) -> None:
        source.ban = None
        source.last_ban_until = at
        self._emit(BanLifted(address, reason, at))

    def _push(self, ban: Ban) -> None:
        heap = self._heap
        if len(heap) >= _HEAP_SLACK_FACTOR * MAX_BAN_SOURCES:
            # Lifted and evicted bans leave entries until their time comes (up to max_ban_s):
            # under churn, rebuild from the live ones so the heap stays bounded too.
            heap[:] = [entry for entry in heap if self._live(entry)]
            heapq.heapify(heap)
        self._seq += 1
        heapq.heappush(heap, (ban.until, self._seq, ban.address))

    def _live(self, entry: tuple[float, int, str]) -> bool:
        until, _, address = entry
        source = self._sources.get(address)
        return source is not None and source.ban is not None and source.ban.until == until


def _ban_state(ban: Ban, now: float) -> dict[str, object]:
    return {
        "reason": ban.reason,
        "user": ban.user,
        "age_s": now - ban.since,
        "remaining_s": ban.until - now,
        "failures": ban.failures,
    }


def _slide(times: list[float], start: float, keep: int) -> None:
    """Drop the times at or before `start` (out of the window), and all but the last `keep`:
    a threshold of `keep` never needs more."""
    drop = 0
    while drop < len(times) and times[drop] <= start:
        drop += 1
    drop = max(drop, len(times) - keep)
    if drop:
        del times[:drop]


#: A ban as read from an exported state: reason, user, age_s, remaining_s, failures.
_StateBan = tuple[str, str | None, float, float, int]
#: A source as read from an exported state: address, strikes, failure ages, last ban age, ban.
_StateSource = tuple[str, int, list[float], float | None, _StateBan | None]


def _read_state(
    state: Mapping[str, object],
) -> tuple[list[_StateSource], list[tuple[str, list[float]]]]:
    """Check an exported state completely before anything is replaced (ValueError otherwise)."""
    if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
        raise ValueError(f"not a version {STATE_VERSION} ban state")
    raw_sources, raw_users = state.get("sources"), state.get("users")
    if not isinstance(raw_sources, list) or not isinstance(raw_users, list):
        raise ValueError("ban state: 'sources' and 'users' must be lists")
    sources: list[_StateSource] = []
    for item in raw_sources:
        entry = _mapping(item, "source")
        address = _text(entry, "address")
        strikes = entry.get("strikes")
        if not isinstance(strikes, int) or isinstance(strikes, bool) or strikes < 0:
            raise ValueError(f"ban state of {address!r}: strikes must be a count")
        last = entry.get("last_ban_age_s")
        raw_ban = entry.get("ban")
        ban = None
        if raw_ban is not None:
            b = _mapping(raw_ban, "ban")
            reason = _text(b, "reason")
            if reason not in BAN_REASONS:
                raise ValueError(f"ban state of {address!r}: unknown ban reason {reason!r}")
            user = b.get("user")
            if user is not None and not isinstance(user, str):
                raise ValueError(f"ban state of {address!r}: ban user must be text or null")
            failures = b.get("failures")
            if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
                raise ValueError(f"ban state of {address!r}: ban failures must be a count")
            remaining = _seconds(b.get("remaining_s"), address, age=False)
            if remaining > 0:  # a ban that ran out in between is not restored
                ban = (reason, user, _seconds(b.get("age_s"), address), remaining, failures)
        sources.append(
            (
                address,
                strikes,
                _ages(entry.get("failure_ages_s"), address),
                None if last is None else _seconds(last, address),
                ban,
            )
        )
    users = []
    for item in raw_users:
        entry = _mapping(item, "user")
        user_name = _text(entry, "user")[:MAX_USER_CHARS]
        users.append((user_name, _ages(entry.get("failure_ages_s"), user_name)))
    return sources, users


def _mapping(item: object, what: str) -> Mapping[str, object]:
    if not isinstance(item, Mapping):
        raise ValueError(f"ban state: each {what} must be an object")
    return item


def _text(entry: Mapping[str, object], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"ban state: {key!r} must be non-empty text")
    return value


def _seconds(value: object, owner: str, *, age: bool = True) -> float:
    """A finite number of seconds; an age (how long ago) is never negative."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (age and value < 0)
    ):
        raise ValueError(f"ban state of {owner!r}: {value!r} is not a number of seconds")
    return float(value)


def _ages(value: object, owner: str) -> list[float]:
    if not isinstance(value, list):
        raise ValueError(f"ban state of {owner!r}: failure ages must be a list")
    return [_seconds(v, owner) for v in value]


# -- scanners -------------------------------------------------------------------------------------


class ScannerMatcher:
    """Case-insensitive substring match of a User-Agent against known scanner names."""

    def __init__(self, user_agents: Iterable[str] = SCANNER_USER_AGENTS) -> None:
        names = sorted({name.strip().lower() for name in user_agents if name.strip()})
        self.user_agents: Final = tuple(names)
        self._pattern: Final = (
            re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE) if names else None
        )

    def matches(self, user_agent: str | None) -> bool:
        if not user_agent or self._pattern is None:
            return False
        return self._pattern.search(user_agent) is not None


# -- the endpoint's guard -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """What `Guard` screens (`EndpointConfig.security`); each part is off until set.

    `allow`: networks never limited, banned or dropped (trunks, management; see
    `parse_networks`). `flood`: pike-style limits per source. `bans`: auth-failure bans, with
    `banned_action` "drop" (silently) or "reject" (403 Forbidden, RFC 3261 21.4.4) for a banned
    source's requests. `scanner_user_agents`: requests whose User-Agent contains one of these are
    dropped silently (`SCANNER_USER_AGENTS` is the list to use); with `ban_scanners` the source
    is banned as well (reason "scanner"), so everything else it sends is refused too.
    """

    allow: tuple[IPNetwork, ...] = ()
    flood: FloodPolicy | None = None
    bans: BanPolicy | None = None
    banned_action: str = "drop"
    scanner_user_agents: tuple[str, ...] = ()
    ban_scanners: bool = False

    def __post_init__(self) -> None:
        if self.banned_action not in BANNED_ACTIONS:
            raise ValueError(f"banned_action must be drop or reject, not {self.banned_action!r}")
        if self.ban_scanners and (self.bans is None or not self.scanner_user_agents):
            raise ValueError("ban_scanners needs both bans and scanner_user_agents")


@dataclass(frozen=True, slots=True)
class Refusal:
    """What to do with a message instead of handling it: count `reason` (a key of
    `Endpoint.rejections`) and answer `status` statelessly, or drop it when None."""

    reason: str
    status: int | None = None


FLOOD_DROPPED: Final = Refusal("flood_dropped")
BANNED_DROPPED: Final = Refusal("banned_dropped")
BANNED_REJECTED: Final = Refusal("banned_rejected", 403)
SCANNER_DROPPED: Final = Refusal("scanner_dropped")


class Guard:
    """The screening an `Endpoint` does, built from a `SecurityPolicy`.

    ``screen(address, now)`` runs before a request's datagram (or framed stream message) is
    parsed: the flood limit, then a dropped banned source. ``screen_request`` runs once the
    request has parsed: a rejected banned source, then the User-Agent. ``auth_failed`` feeds the
    ban tracker. Responses are never screened (pike, too, counts requests only): they can only
    complete transactions we started, so a flood of them is our own doing (a ring-all offer to
    fifty phones behind one NAT address), and an agent's phone must not lose its calls to its
    office's ban.
    """

    def __init__(
        self, policy: SecurityPolicy, *, emit: Callable[[SecurityEvent], None] | None = None
    ) -> None:
        self.policy: Final = policy
        self.allow: Final = AllowList(policy.allow)
        self._queue: deque[SecurityEvent] = deque()
        sink = emit if emit is not None else self._queue.append
        flood, bans = policy.flood, policy.bans
        self.flood: Final = FloodLimiter(flood, self.allow, emit=sink) if flood else None
        self.bans: Final = BanTracker(bans, self.allow, emit=sink) if bans else None
        agents = policy.scanner_user_agents
        self.scanners: Final = ScannerMatcher(agents) if agents else None
        self._drop_banned: Final = policy.banned_action == "drop"

    def screen(self, address: str, now: float) -> Refusal | None:
        flood = self.flood
        if flood is not None and not flood.admit(address, now):
            return FLOOD_DROPPED
        bans = self.bans
        if bans is not None and self._drop_banned and bans.is_banned(address, now):
            return BANNED_DROPPED
        return None

    def screen_request(self, address: str, user_agent: str | None, now: float) -> Refusal | None:
        bans = self.bans
        if bans is not None and not self._drop_banned and bans.is_banned(address, now):
            return BANNED_REJECTED
        scanners = self.scanners
        if scanners is not None and scanners.matches(user_agent) and address not in self.allow:
            if bans is not None and self.policy.ban_scanners:
                bans.ban(address, now, reason="scanner")
            return SCANNER_DROPPED
        return None

    def auth_failed(self, address: str, user: str | None, now: float) -> None:
        if self.bans is not None:
            self.bans.record_failure(address, user, now)

    def get_timer(self) -> float | None:
        return self.bans.get_timer() if self.bans is not None else None

    def handle_timer(self, now: float) -> None:
        if self.bans is not None:
            self.bans.handle_timer(now)

    def next_event(self) -> SecurityEvent | None:
        """The next event of any part, in the order they happened (none when given `emit`)."""
        return self._queue.popleft() if self._queue else None
