"""RFC 3263 on the event loop: asks the DNS what a ``sip.locate.Locator`` needs.

How this works: ``SipResolver.locate(uri, ...)`` builds a Locator, asks each batch of its
queries concurrently through dnspython's asyncio resolver, feeds the answers back and returns the
ordered targets, or raises ``LocateError`` (with a bounded ``reason``) when there are none. Nothing
here blocks the loop: dnspython speaks DNS on asyncio sockets. Answers are cached by dnspython's
LRU cache, which keeps each record set (and NXDOMAIN / no-data answers) for its TTL, so a busy
trunk costs one lookup per TTL, not one per call.

Name servers are the system's (/etc/resolv.conf) unless given as "address" or "address:port"
(``[v6]:port`` for IPv6). With the system's, a host name the DNS does not know is also looked up
with getaddrinfo (in the loop's thread pool): dnspython reads resolv.conf but not /etc/hosts, and
``localhost`` or a hosts-file name in a config must keep working as it did before DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Iterable, Sequence
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

from sip.locate import LocateError, Locator, Naptr, Query, Record, Srv, Target
from sip.uri import Uri

__all__ = ["LocateError", "SipResolver", "Target", "parse_nameserver"]

#: Record sets kept at once; a contact center talks to a handful of carriers and PBXs.
_CACHE_SIZE: Final = 1024


def parse_nameserver(text: str) -> tuple[str, int]:
    """A name server as "192.0.2.53", "192.0.2.53:5353", "2001:db8::53" or "[2001:db8::53]:5353"
    -> (ip, port).
    Raises ValueError for anything else."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"not an address[:port]: {text!r}")
        if rest:
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    ipaddress.ip_address(host)  # raises ValueError
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


class SipResolver:
    """RFC 3263 lookups with a TTL cache. ``nameservers`` empty: the system's."""

    def __init__(self, nameservers: Sequence[str] = (), *, timeout_s: float = 2.0) -> None:
        self.system: Final = not nameservers
        resolver = dns.asyncresolver.Resolver(configure=False)
        if self.system:
            try:
                resolver.read_resolv_conf("/etc/resolv.conf")
            except dns.resolver.NoResolverConfiguration:
                resolver.nameservers = []  # every query fails as "servfail"; hosts file still works
        else:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(n)) for n in nameservers
            ]
        # `lifetime` bounds one question, retries over every server included; `timeout` one try.
        resolver.lifetime = timeout_s
        resolver.timeout = max(timeout_s / 2, 0.1)
        resolver.cache = dns.resolver.LRUCache(_CACHE_SIZE)
        self._resolver: Final = resolver

    async def locate(
        self,
        uri: Uri,
        *,
        transports: Iterable[str],
        rng: random.Random,
        families: Sequence[str] = ("A", "AAAA"),
    ) -> list[Target]:
        """The targets for ``uri`` in the order to try them; raises LocateError when none."""
        locator = Locator(uri, transports=transports, rng=rng, families=families)
        while batch := locator.queries():
            results = await asyncio.gather(*(self._ask(q) for q in batch))
            for query, (records, failure) in zip(batch, results, strict=True):
                if failure:
                    locator.fail(query, failure)
                else:
                    locator.receive(query, records)
        if locator.error is not None:
            raise locator.error
        return locator.targets

    async def _ask(self, query: Query) -> tuple[tuple[Record, ...], str]:
        """(records, "") or ((), reason); never raises for a DNS failure."""
        records, failure = await self._ask_dns(query)
        if not records and self.system and query.rdtype in ("A", "AAAA"):
            from_hosts = await self._ask_system(query)
            if from_hosts:
                return from_hosts, ""
        return records, failure

    async def _ask_dns(self, query: Query) -> tuple[tuple[Record, ...], str]:
        try:
            answer = await self._resolver.resolve(
                query.name + ".", query.rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return (), "nxdomain"
        except dns.exception.Timeout:
            return (), "timeout"
        except dns.resolver.NoNameservers:
            return (), "servfail"  # every server answered SERVFAIL/REFUSED, or there is none
        except dns.exception.DNSException:
            return (), "error"
        rrset = answer.rrset
        return (_records(rrset) if rrset is not None else ()), ""

    async def _ask_system(self, query: Query) -> tuple[Record, ...]:
        family = socket.AF_INET if query.rdtype == "A" else socket.AF_INET6
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(query.name, None, family=family, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            return ()
        out: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in out:
                out.append(address)
        return tuple(out)


def _records(rrset: dns.rrset.RRset) -> tuple[Record, ...]:
    out: list[Record] = []
    for rd in rrset:
        if rd.rdtype == dns.rdatatype.NAPTR:
            out.append(
                Naptr(
                    rd.order, rd.preference, rd.flags.decode("ascii", "replace"),
                    rd.service.decode("ascii", "replace"), rd.regexp.decode("ascii", "replace"),
                    _name(rd.replacement),
                )
            )  # fmt: skip
        elif rd.rdtype == dns.rdatatype.SRV:
            out.append(Srv(rd.priority, rd.weight, rd.port, _name(rd.target)))
        elif rd.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            out.append(rd.address)
    return tuple(out)


def _name(name: dns.name.Name) -> str:
    # The root name ("." in a NAPTR replacement or an SRV target: nothing there) as "".
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True)
