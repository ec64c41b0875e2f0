"""A tiny authoritative DNS server for tests: the made-up zone ``acd.test`` on 127.0.0.1.

dnspython's message and rdata classes over a UDP socket, answered from a thread, so a test can
point a real resolver (the daemon's ``[sip] dns_servers``) at records it chose: NAPTR, SRV, A...
"""

from __future__ import annotations

import socket
import threading
from collections import Counter

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tests.conftest import free_port

ZONE = "acd.test"
SOA = f"ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60"


class DnsServer:
    """Authoritative for ``acd.test``: ``records`` maps (name, type) to rdata texts; other types
    of a known name answer NOERROR with no data, unknown names NXDOMAIN (both with the SOA, so a
    resolver may cache the negative answer). Names in ``mute`` are never answered (the resolver
    times out), names in ``servfail`` get SERVFAIL. ``asked`` counts the questions that reached
    it; answers carry ``ttl``."""

    def __init__(
        self,
        records: dict[tuple[str, str], list[str]],
        *,
        ttl: int = 30,
        mute: frozenset[str] = frozenset(),
        servfail: frozenset[str] = frozenset(),
    ) -> None:
        self.ttl, self.mute, self.servfail = ttl, mute, servfail
        self.records = {(name.lower().rstrip("."), t): v for (name, t), v in records.items()}
        self.names = {name for name, _ in self.records}
        self.asked: Counter[tuple[str, str]] = Counter()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port(socket.SOCK_DGRAM)))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self._answer(data)
            if answer is not None:
                self.sock.sendto(answer, peer)

    def _answer(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.asked[(name, rdtype)] += 1
        if name in self.mute:
            return None
        rdatas = self.records.get((name, rdtype))
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif rdatas:
            response.answer.append(
                dns.rrset.from_text(question.name, self.ttl, dns.rdataclass.IN, rdtype, *rdatas)
            )
        else:
            if name not in self.names:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(
                dns.rrset.from_text(f"{ZONE}.", 60, dns.rdataclass.IN, "SOA", SOA)
            )
        return response.to_wire()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
