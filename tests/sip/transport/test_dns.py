"""sip.transport.dns: RFC 3263 lookups through dnspython against a real DNS server on 127.0.0.1
(tests/dns_server.py): the answers reach the Locator, the cache keeps them for their TTL, and a
server that is silent, failing or ignorant gives a LocateError with the right reason."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from sip import Uri
from sip.locate import Target
from sip.transport.dns import LocateError, SipResolver, parse_nameserver
from tests.dns_server import DnsServer

RECORDS = {
    ("carrier.acd.test", "NAPTR"): [
        '10 20 "s" "SIP+D2T" "" _sip._tcp.carrier.acd.test.',
        '10 10 "s" "SIP+D2U" "" _sip._udp.carrier.acd.test.',
    ],
    ("_sip._udp.carrier.acd.test", "SRV"): [
        "10 0 5070 a.carrier.acd.test.",
        "20 0 5080 b.carrier.acd.test.",
    ],
    ("_sip._tcp.carrier.acd.test", "SRV"): ["10 0 5090 a.carrier.acd.test."],
    ("a.carrier.acd.test", "A"): ["192.0.2.1"],
    ("a.carrier.acd.test", "AAAA"): ["2001:db8::1"],
    ("b.carrier.acd.test", "A"): ["192.0.2.2"],
    ("slow.acd.test", "A"): ["192.0.2.9"],
}


@pytest.fixture
def server() -> Iterator[DnsServer]:
    s = DnsServer(
        RECORDS, mute=frozenset({"slow.acd.test"}), servfail=frozenset({"broken.acd.test"})
    )
    yield s
    s.close()


def resolver_for(server: DnsServer, timeout_s: float = 2.0) -> SipResolver:
    return SipResolver([f"127.0.0.1:{server.port}"], timeout_s=timeout_s)


async def locate(resolver: SipResolver, uri: str, **kw: object) -> list[Target]:
    return await resolver.locate(
        Uri.parse(uri), transports=kw.pop("transports", ("udp", "tcp")), rng=random.Random(0),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_naptr_srv_and_addresses_from_a_real_server(server: DnsServer) -> None:
    targets = await locate(resolver_for(server), "sip:5000@carrier.acd.test")
    assert targets == [
        Target("udp", "192.0.2.1", 5070, "a.carrier.acd.test"),
        Target("udp", "2001:db8::1", 5070, "a.carrier.acd.test"),
        Target("udp", "192.0.2.2", 5080, "b.carrier.acd.test"),
        Target("tcp", "192.0.2.1", 5090, "a.carrier.acd.test"),
        Target("tcp", "2001:db8::1", 5090, "a.carrier.acd.test"),
    ]


async def test_answers_are_cached_for_their_ttl() -> None:
    short = DnsServer(RECORDS, ttl=1)
    try:
        resolver = resolver_for(short)
        first = await locate(resolver, "sip:carrier.acd.test;transport=udp", families=("A",))
        asked = sum(short.asked.values())
        assert asked == 3  # SRV, then A for each of the two targets
        assert (
            await locate(resolver, "sip:carrier.acd.test;transport=udp", families=("A",)) == first
        )
        assert sum(short.asked.values()) == asked  # all from the cache
        await asyncio.sleep(1.2)  # the 1 s TTL ran out
        await locate(resolver, "sip:carrier.acd.test;transport=udp", families=("A",))
        assert sum(short.asked.values()) == 2 * asked
    finally:
        short.close()


async def test_silent_server_times_out_with_its_reason(server: DnsServer) -> None:
    started = time.monotonic()
    with pytest.raises(LocateError) as caught:
        await locate(resolver_for(server, timeout_s=0.5), "sip:slow.acd.test:5060")
    assert caught.value.reason == "timeout"
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("sip:broken.acd.test:5060", "servfail"),
        ("sip:nowhere.acd.test", "nxdomain"),
        ("sip:carrier.acd.test:5060", "no_records"),  # the name exists, with no A/AAAA
        ("sip:carrier.acd.test;transport=tls", "unsupported_transport"),  # no TLS listener
    ],
)
async def test_failures_have_reasons(server: DnsServer, uri: str, reason: str) -> None:
    with pytest.raises(LocateError) as caught:
        await locate(resolver_for(server), uri)
    assert caught.value.reason == reason


async def test_numeric_host_asks_nothing(server: DnsServer) -> None:
    targets = await locate(resolver_for(server), "sip:a@[::1]:5062;transport=tcp")
    assert targets == [Target("tcp", "::1", 5062, "::1")]
    assert not server.asked


async def test_no_server_answering_at_all_is_a_failure_not_a_hang() -> None:
    with DnsServer({}) as dead:
        port = dead.port
    resolver = SipResolver([f"127.0.0.1:{port}"], timeout_s=0.5)
    with pytest.raises(LocateError) as caught:
        await locate(resolver, "sip:x.acd.test:5060")
    assert caught.value.reason in ("timeout", "servfail")


async def test_system_resolver_still_knows_the_hosts_file() -> None:
    targets = await locate(
        SipResolver(timeout_s=0.5), "sip:localhost:5077", families=("A",), transports=("udp",)
    )
    assert Target("udp", "127.0.0.1", 5077, "localhost") in targets


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("192.0.2.53:5353", ("192.0.2.53", 5353)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
    ],
)
def test_nameserver_forms(text: str, parsed: tuple[str, int]) -> None:
    assert parse_nameserver(text) == parsed


@pytest.mark.parametrize("text", ["ns.example.com", "192.0.2.53:0", "192.0.2.53:x", "[::1", ""])
def test_bad_nameservers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)
