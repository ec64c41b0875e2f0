"""Screening SIP sources: flood limits, sans-I/O.

How this works
--------------
Every piece is fed a source address (the host string the transport reports) and ``now``, and
reads no clock of its own, like the rest of the core:

- `FloodLimiter` is Kamailio's pike: a token bucket per source address, checked per request
  before anything is parsed. A source that empties its bucket is *flooding*: its requests are
  dropped until it has kept under the rate long enough to earn a whole burst back.
- `AllowList` holds the networks (trunks, management) it never touches.

The start of a flood (`FloodDetected`) is queued and drained with ``next_event()``, or handed to
an ``emit`` callable. Memory is bounded: at most a fixed number of sources is tracked, and the
least recently seen one is forgotten first, which is never a source still flooding, since every
request refreshes it.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_FLOOD_SOURCES",
    "AllowList",
    "FloodDetected",
    "FloodLimiter",
    "FloodPolicy",
    "IPNetwork",
    "parse_networks",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Most sources a `FloodLimiter` keeps a bucket for. ipset's hash:ip sets default to 65536
#: entries (maxelem), which is what fail2ban's ipset actions and most iptables anti-flood recipes
#: live with; a bucket takes ~230 bytes with its key, so ~15 MB at most. A UDP flood from spoofed
#: sources churns the table, but a real flooder is refreshed by every request it sends and is
#: never the one forgotten.
MAX_FLOOD_SOURCES: Final = 65536


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
    """Networks whose sources are never flood-limited."""

    networks: tuple[IPNetwork, ...] = ()

    def __contains__(self, address: object) -> bool:
        if not self.networks or not isinstance(address, str):
            return False
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FloodDetected:
    """`address` started flooding at `at`; its requests are dropped until it calms down. Once
    per episode: the drops themselves are only counted."""

    address: str
    at: float


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
