"""Locating SIP servers (RFC 3263): from a SIP or SIPS URI to an ordered list of targets.

How this works: a ``Locator`` is built from the URI, the transports we can send on and an injected
``random.Random`` (RFC 2782's weighted choice is random; tests pass a seeded one). It never
touches the network: ``queries()`` says which DNS questions it needs answered now (a batch that
may be asked concurrently), the caller feeds each answer back with ``receive()`` (records, or an
empty tuple for NXDOMAIN / no data) or ``fail()`` (timeout, SERVFAIL), and once ``queries()`` is
empty the lookup is ``done``: ``targets`` holds the (transport, IP address, port) list to try in
order (RFC 3263 4.3: the next one after a timeout, a transport error or a 503), or ``error`` says
why there is none.

The steps, with their sections:
- maddr, when present, is the TARGET instead of the host (4).
- A numeric IP: no DNS; the URI's transport and port, or the defaults (4.1, 4.2).
- A port in the URI: A/AAAA of the host only, at that port (4.2).
- A ``transport=`` parameter: SRV for that transport (``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``
  for TLS), falling back to A/AAAA at the default port (4.2).
- Otherwise NAPTR of the host; the records whose service we support (SIP+D2U, SIP+D2T, SIPS+D2T;
  only SIPS+ for a sips: URI) in order/preference, each an SRV name (4.1). No usable NAPTR: an SRV
  query per supported transport, in our order of preference. No SRV either: A/AAAA of the host at
  the default port, UDP for sip:, TLS for sips: (4.1 last paragraph, 4.2).
- SRV records are ordered by priority, then by RFC 2782's weighted random selection inside each
  priority; each target name's A/AAAA addresses follow in the order the answer gave them.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sip.uri import Uri

__all__ = [
    "DEFAULT_PORTS",
    "MAX_TARGETS",
    "LocateError",
    "Locator",
    "Naptr",
    "Query",
    "Record",
    "Srv",
    "Target",
    "order_srv",
]

#: RFC 3261 19.1.2 / RFC 3263 4.2: 5060 for UDP and TCP, 5061 for TLS.
DEFAULT_PORTS: Final = {"udp": 5060, "tcp": 5060, "tls": 5061}
#: Transports in the order we prefer them when the server leaves the choice to us (4.1: "the
#: client MAY use any transport protocol it desires which is supported by the server"). UDP first,
#: as Kamailio and Asterisk do for a plain sip: URI.
PREFERENCE: Final = ("udp", "tcp", "tls")
#: NAPTR service field (RFC 3263 4.1, case-insensitive) -> our transport name. SCTP (D2S) and
#: WebSocket (D2W, RFC 7118) are not transports we send on.
_NAPTR_SERVICES: Final = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
#: SRV owner-name prefix per transport (4.1; TLS uses _sips even for a sip: URI, 4.2).
_SRV_PREFIX: Final = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
#: Bound on the failover list: a zone with hundreds of SRV targets must not make one call attempt
#: resolve them all. Kamailio's DNS failover stops at a similar small count (dns_max_ips).
MAX_TARGETS: Final = 16
#: How many SRV target names get A/AAAA lookups (each may give several addresses).
_MAX_SRV_HOSTS: Final = 8

#: Failure reasons, worst first: the one a failed lookup reports (bounded: a metric label).
_REASONS: Final = (
    "unsupported_transport",
    "timeout",
    "servfail",
    "error",
    "nxdomain",
    "no_records",
)


@dataclass(frozen=True, slots=True)
class Query:
    """One DNS question: ``name`` (lower case, no trailing dot) and ``rdtype``."""

    name: str
    rdtype: str  # "NAPTR" | "SRV" | "A" | "AAAA"


@dataclass(frozen=True, slots=True)
class Naptr:
    """A NAPTR record (RFC 3403) as it matters here."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    """An SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send: ``transport`` ("udp", "tcp", "tls"), an IP ``address`` and ``port``;
    ``name`` is the host name it was found under (TLS server name, logs)."""

    transport: str
    address: str
    port: int
    name: str = ""

    @property
    def addr(self) -> tuple[str, int]:
        return (self.address, self.port)


class LocateError(Exception):
    """No target for the URI. ``reason`` is one of a few fixed words (a metric label):
    unsupported_transport, timeout, servfail, error, nxdomain, no_records."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


Record = Naptr | Srv | str  # A/AAAA answers are address strings


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _numeric(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def order_srv(records: Iterable[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782 "Usage rules": lowest priority first; inside a priority, repeatedly pick at random
    with probability proportional to weight (weight-0 records placed first, so they are chosen
    only rarely, when the running sum starts at 0 and the draw is 0)."""
    by_priority: dict[int, list[Srv]] = {}
    for record in records:
        if _norm(record.target) == "":
            continue  # "." alone: the service is decidedly not available (RFC 2782)
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[Srv] = []
    for priority in sorted(by_priority):
        # Zero weights first, the rest in the order received: RFC 2782 allows any order here,
        # and a stable one keeps a seeded draw reproducible.
        group = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            draw = rng.randint(0, total)
            running = 0
            for i, record in enumerate(group):
                running += record.weight
                if running >= draw:
                    ordered.append(group.pop(i))
                    break
    return ordered


class Locator:
    """One RFC 3263 lookup for ``uri``, fed DNS answers by its caller (see the module notes).

    ``transports`` are the ones we can send on ("udp", "tcp", "tls"); ``families`` the address
    record types worth asking ("A", "AAAA"), in the order their addresses should be tried.
    Raises nothing: a URI we cannot reach ends ``done`` with ``error`` set."""

    def __init__(
        self,
        uri: Uri,
        *,
        transports: Iterable[str],
        rng: random.Random,
        families: Sequence[str] = ("A", "AAAA"),
    ) -> None:
        self.uri: Final = uri
        self.supported: Final = tuple(t for t in PREFERENCE if t in {x.lower() for x in transports})
        self.families: Final = tuple(f for f in families if f in ("A", "AAAA"))
        self._rng = rng
        self.secure: Final = uri.scheme == "sips"
        self.host: Final = _norm(uri.param("maddr") or uri.host)
        self.targets: list[Target] = []
        self.error: LocateError | None = None
        self._pending: dict[Query, tuple[Record, ...] | None] = {}
        self._failures: list[str] = []
        self._stage = ""
        # SRV step: (transport, owner name) in the order their records are to be used.
        self._srv_names: list[tuple[str, str]] = []
        self._fallback_transport = ""
        self._addr_port = 0
        self._addr_transport = ""
        self._srv_order: list[tuple[str, Srv]] = []
        self._start()

    # -- the caller's side --

    @property
    def done(self) -> bool:
        return not self._pending

    def queries(self) -> tuple[Query, ...]:
        """The questions to ask now (all of them may be asked at once); empty when done."""
        return tuple(q for q, answer in self._pending.items() if answer is None)

    def receive(self, query: Query, records: Sequence[Record]) -> None:
        """The answer to ``query``: its records; an empty sequence for NXDOMAIN or no data
        (tell NXDOMAIN apart with ``fail(query, "nxdomain")`` where it matters for the log)."""
        if self._pending.get(query, ()) is not None:
            return  # not asked, or already answered
        self._pending[query] = tuple(records)
        self._advance()

    def fail(self, query: Query, reason: str) -> None:
        """``query`` got no usable answer: "timeout", "servfail", "nxdomain" or "error". The lookup
        goes on as if the name had no such records, and reports the worst reason if it ends
        without targets."""
        if self._pending.get(query, ()) is not None:
            return
        reason = reason if reason in _REASONS else "error"
        # NXDOMAIN for an SRV or NAPTR owner is normal (the zone has none); only the host's own
        # absence is worth reporting as such.
        if reason != "nxdomain" or self._stage == "addr":
            self._failures.append(reason)
        self._pending[query] = ()
        self._advance()

    # -- the steps --

    def _fail_now(self, reason: str, detail: str) -> None:
        self._pending.clear()
        self.error = LocateError(reason, detail)

    def _start(self) -> None:
        uri = self.uri
        if uri.scheme not in ("sip", "sips"):
            self._fail_now("unsupported_transport", f"not a sip: or sips: URI: {uri}")
            return
        explicit = uri.transport
        if explicit is not None:
            if explicit == "tcp" and self.secure:
                explicit = "tls"  # sips: over TCP is TLS (RFC 3261 26.2.2)
            if explicit not in DEFAULT_PORTS or (self.secure and explicit != "tls"):
                self._fail_now("unsupported_transport", f"transport={uri.transport} in {uri}")
                return
            if explicit not in self.supported:
                self._fail_now("unsupported_transport", f"no {explicit} listener for {uri}")
                return
        default = explicit or self._default_transport()
        if not default:
            self._fail_now("unsupported_transport", f"no listener can reach {uri}")
            return
        address = _numeric(self.host)
        if address is not None:  # 4.1/4.2: a numeric IP needs no DNS
            port = uri.port or DEFAULT_PORTS[default]
            self.targets = [Target(default, address, port, address)]
            return
        if not self.host:
            self._fail_now("no_records", f"no host in {uri}")
            return
        if uri.port is not None:  # 4.2: A/AAAA only
            self._ask_addresses(default, uri.port)
        elif explicit is not None:  # 4.2: SRV for that transport
            self._fallback_transport = explicit
            self._ask_srv([(explicit, _SRV_PREFIX[explicit] + self.host)])
        else:
            self._stage = "naptr"
            self._pending[Query(self.host, "NAPTR")] = None

    def _default_transport(self) -> str:
        if self.secure:
            return "tls" if "tls" in self.supported else ""
        return self.supported[0] if self.supported else ""

    def _ask_srv(self, names: list[tuple[str, str]]) -> None:
        self._stage = "srv"
        self._srv_names = names
        for _, name in names:
            self._pending[Query(name, "SRV")] = None

    def _ask_addresses(self, transport: str, port: int) -> None:
        self._stage = "addr"
        self._addr_transport, self._addr_port = transport, port
        for family in self.families:
            self._pending[Query(self.host, family)] = None
        if not self.families:
            self._fail_now("unsupported_transport", "no address family to look up")

    def _answers(self) -> dict[Query, tuple[Record, ...]]:
        out: dict[Query, tuple[Record, ...]] = {}
        for query, answer in self._pending.items():
            if answer is None:
                return {}  # still waiting for part of the batch
            out[query] = answer
        return out

    def _advance(self) -> None:
        answers = self._answers()
        if not answers:
            return
        self._pending = {}
        if self._stage == "naptr":
            self._after_naptr(next(iter(answers.values())))
        elif self._stage == "srv":
            self._after_srv(answers)
        elif self._stage == "hosts":
            self._after_hosts(answers)
        else:
            self._after_addresses(answers)

    def _after_naptr(self, records: tuple[Record, ...]) -> None:
        usable: list[Naptr] = []
        for r in records:
            if not isinstance(r, Naptr):
                continue
            transport = _NAPTR_SERVICES.get(r.service.lower())
            # 4.1: SIP NAPTRs are "s" records with an empty regexp; a sips: URI takes only SIPS+.
            if (
                transport is None
                or transport not in self.supported
                or r.flags.lower() != "s"
                or r.regexp
                or not _norm(r.replacement)
                or (self.secure and transport != "tls")
            ):
                continue
            usable.append(r)
        usable.sort(key=lambda r: (r.order, r.preference))
        names: list[tuple[str, str]] = []
        for r in usable:
            entry = (_NAPTR_SERVICES[r.service.lower()], _norm(r.replacement))
            if entry not in names:
                names.append(entry)
        if names:
            self._fallback_transport = names[0][0]
        else:  # 4.1: no NAPTR: an SRV query per transport we support
            candidates = ["tls"] if self.secure else list(self.supported)
            names = [(t, _SRV_PREFIX[t] + self.host) for t in candidates if t in self.supported]
            self._fallback_transport = self._default_transport()
        self._ask_srv(names)

    def _after_srv(self, answers: dict[Query, tuple[Record, ...]]) -> None:
        ordered: list[tuple[str, Srv]] = []
        found = False
        for transport, name in self._srv_names:
            records = [r for r in answers.get(Query(name, "SRV"), ()) if isinstance(r, Srv)]
            found = found or bool(records)
            ordered.extend((transport, r) for r in order_srv(records, self._rng))
        if not found:  # 4.2: no SRV: A/AAAA of the host at the default port
            transport = self._fallback_transport
            self._ask_addresses(transport, DEFAULT_PORTS[transport])
            return
        if not ordered:
            self._fail_now("no_records", f"SRV for {self.host} says the service is not available")
            return
        self._srv_order = ordered
        self._stage = "hosts"
        names: list[str] = []
        for _, record in ordered:
            name = _norm(record.target)
            if _numeric(name) is None and name not in names and len(names) < _MAX_SRV_HOSTS:
                names.append(name)
        for name in names:
            for family in self.families:
                self._pending[Query(name, family)] = None
        if not self._pending:
            self._after_hosts({})

    def _after_hosts(self, answers: dict[Query, tuple[Record, ...]]) -> None:
        for transport, record in self._srv_order:
            name = _norm(record.target)
            numeric = _numeric(name)
            addresses = [numeric] if numeric is not None else self._addresses(answers, name)
            for address in addresses:
                self._add(Target(transport, address, record.port, name))
        self._finish()

    def _after_addresses(self, answers: dict[Query, tuple[Record, ...]]) -> None:
        for address in self._addresses(answers, self.host):
            self._add(Target(self._addr_transport, address, self._addr_port, self.host))
        self._finish()

    def _addresses(self, answers: dict[Query, tuple[Record, ...]], name: str) -> list[str]:
        out: list[str] = []
        for family in self.families:
            for r in answers.get(Query(name, family), ()):
                if isinstance(r, str) and (address := _numeric(r)) is not None:
                    out.append(address)
        return out

    def _add(self, target: Target) -> None:
        key = (target.transport, target.address, target.port)
        seen = {(t.transport, t.address, t.port) for t in self.targets}
        if key not in seen and len(self.targets) < MAX_TARGETS:
            self.targets.append(target)

    def _finish(self) -> None:
        if self.targets:
            return
        reason = next((r for r in _REASONS if r in self._failures), "no_records")
        self.error = LocateError(reason, f"no address for {self.host} ({self.uri})")
