"""RFC 3263 server location (sip.locate): the lookup plan and target order for each case, fed
DNS answers by hand; RFC 2782 weighted SRV selection with a seeded RNG."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from sip import Uri
from sip.locate import MAX_TARGETS, Locator, Naptr, Query, Record, Srv, Target, order_srv

ALL = ("udp", "tcp", "tls")


def run(
    uri: str,
    zone: Mapping[tuple[str, str], Sequence[Record] | str],
    *,
    transports: Sequence[str] = ALL,
    seed: int = 1,
    families: Sequence[str] = ("A", "AAAA"),
) -> tuple[Locator, list[list[Query]]]:
    """Drive a Locator against ``zone``: (name, type) -> records, or a failure word; names absent
    from the zone answer NXDOMAIN. Returns the locator and every batch it asked."""
    locator = Locator(
        Uri.parse(uri), transports=transports, rng=random.Random(seed), families=families
    )
    batches: list[list[Query]] = []
    while batch := locator.queries():
        batches.append(sorted(batch, key=lambda q: (q.name, q.rdtype)))
        for query in batch:
            answer = zone.get((query.name, query.rdtype))
            if answer is None:
                locator.fail(query, "nxdomain")
            elif isinstance(answer, str):
                locator.fail(query, answer)
            else:
                locator.receive(query, answer)
        assert len(batches) < 10, "the lookup must end"
    assert locator.done
    return locator, batches


def q(name: str, rdtype: str) -> Query:
    return Query(name, rdtype)


# -- no DNS at all -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("sip:1001@192.0.2.7", Target("udp", "192.0.2.7", 5060, "192.0.2.7")),
        ("sip:1001@192.0.2.7:5080;transport=TCP", Target("tcp", "192.0.2.7", 5080, "192.0.2.7")),
        ("sips:1001@192.0.2.7", Target("tls", "192.0.2.7", 5061, "192.0.2.7")),
        ("sips:1001@192.0.2.7;transport=tcp", Target("tls", "192.0.2.7", 5061, "192.0.2.7")),
        ("sip:1001@[2001:DB8::1]:5070", Target("udp", "2001:db8::1", 5070, "2001:db8::1")),
        ("sip:1001@pbx.example.com;maddr=192.0.2.9", Target("udp", "192.0.2.9", 5060, "192.0.2.9")),
    ],
)
def test_numeric_host_needs_no_dns(uri: str, target: Target) -> None:
    locator, batches = run(uri, {})
    assert batches == []
    assert locator.error is None
    assert locator.targets == [target]


def test_numeric_host_without_udp_listener_uses_what_we_have() -> None:
    locator, _ = run("sip:1001@192.0.2.7", {}, transports=("tcp",))
    assert locator.targets == [Target("tcp", "192.0.2.7", 5060, "192.0.2.7")]


@pytest.mark.parametrize(
    ("uri", "transports"),
    [
        ("sip:a@192.0.2.7;transport=tcp", ("udp",)),  # no TCP listener
        ("sips:a@192.0.2.7", ("udp", "tcp")),  # no TLS listener
        ("sips:a@192.0.2.7;transport=udp", ALL),  # SIPS never over UDP
        ("sip:a@192.0.2.7;transport=sctp", ALL),
        ("sip:a@example.com;transport=ws", ALL),
    ],
)
def test_unreachable_transport_is_an_error_not_an_exception(
    uri: str, transports: Sequence[str]
) -> None:
    locator, batches = run(uri, {}, transports=transports)
    assert batches == []
    assert locator.targets == []
    assert locator.error is not None
    assert locator.error.reason == "unsupported_transport"


def test_tel_uri_is_refused() -> None:
    locator, _ = run("tel:+15551234567", {})
    assert locator.error is not None
    assert locator.error.reason == "unsupported_transport"


# -- explicit port: A/AAAA only --------------------------------------------------------------------


def test_explicit_port_asks_addresses_only() -> None:
    zone = {
        ("pbx.example.com", "A"): ["192.0.2.10", "192.0.2.11"],
        ("pbx.example.com", "AAAA"): ["2001:db8::10"],
        # present but must not be asked: the port rules SRV and NAPTR out (4.2)
        ("_sip._udp.pbx.example.com", "SRV"): [Srv(0, 0, 9999, "other.example.com")],
    }
    locator, batches = run("sip:1001@PBX.example.com.:5080", zone)
    assert batches == [[q("pbx.example.com", "A"), q("pbx.example.com", "AAAA")]]
    assert [t.addr for t in locator.targets] == [
        ("192.0.2.10", 5080), ("192.0.2.11", 5080), ("2001:db8::10", 5080),
    ]  # fmt: skip
    assert {t.transport for t in locator.targets} == {"udp"}


def test_explicit_port_on_sips_uses_tls() -> None:
    locator, _ = run("sips:pbx.example.com:5999", {("pbx.example.com", "A"): ["192.0.2.10"]})
    assert locator.targets == [Target("tls", "192.0.2.10", 5999, "pbx.example.com")]


def test_ipv4_only_listeners_ask_no_aaaa() -> None:
    zone = {("pbx.example.com", "A"): ["192.0.2.10"], ("pbx.example.com", "AAAA"): ["::1"]}
    locator, batches = run("sip:pbx.example.com:5060", zone, families=("A",))
    assert batches == [[q("pbx.example.com", "A")]]
    assert [t.address for t in locator.targets] == ["192.0.2.10"]


def test_ipv6_first_when_asked_so() -> None:
    zone = {("pbx.example.com", "A"): ["192.0.2.10"], ("pbx.example.com", "AAAA"): ["2001:db8::a"]}
    locator, _ = run("sip:pbx.example.com:5060", zone, families=("AAAA", "A"))
    assert [t.address for t in locator.targets] == ["2001:db8::a", "192.0.2.10"]


# -- transport parameter: SRV for that transport ---------------------------------------------------


def test_transport_param_asks_srv_for_that_transport() -> None:
    zone = {
        ("_sip._tcp.carrier.net", "SRV"): [
            Srv(20, 0, 5060, "b.carrier.net"),
            Srv(10, 0, 5062, "a.carrier.net."),
        ],
        ("a.carrier.net", "A"): ["198.51.100.1"],
        ("b.carrier.net", "A"): ["198.51.100.2"],
        ("carrier.net", "NAPTR"): [Naptr(10, 10, "s", "SIP+D2U", "", "_sip._udp.carrier.net")],
    }
    locator, batches = run("sip:+15551234567@carrier.net;transport=TCP", zone)
    assert batches[0] == [q("_sip._tcp.carrier.net", "SRV")]  # no NAPTR (4.1)
    assert batches[1] == [
        q("a.carrier.net", "A"), q("a.carrier.net", "AAAA"),
        q("b.carrier.net", "A"), q("b.carrier.net", "AAAA"),
    ]  # fmt: skip
    assert locator.targets == [
        Target("tcp", "198.51.100.1", 5062, "a.carrier.net"),
        Target("tcp", "198.51.100.2", 5060, "b.carrier.net"),
    ]


def test_transport_tls_on_sip_uri_uses_sips_srv() -> None:
    zone = {
        ("_sips._tcp.carrier.net", "SRV"): [Srv(0, 0, 5061, "tls.carrier.net")],
        ("tls.carrier.net", "A"): ["198.51.100.5"],
    }
    locator, batches = run("sip:carrier.net;transport=tls", zone)
    assert batches[0] == [q("_sips._tcp.carrier.net", "SRV")]
    assert locator.targets == [Target("tls", "198.51.100.5", 5061, "tls.carrier.net")]


def test_transport_param_without_srv_falls_back_to_addresses_at_default_port() -> None:
    zone = {("carrier.net", "A"): ["198.51.100.9"]}
    locator, batches = run("sip:carrier.net;transport=tcp", zone)
    assert batches == [
        [q("_sip._tcp.carrier.net", "SRV")],
        [q("carrier.net", "A"), q("carrier.net", "AAAA")],
    ]
    assert locator.targets == [Target("tcp", "198.51.100.9", 5060, "carrier.net")]


# -- NAPTR, then SRV, then addresses ---------------------------------------------------------------


def naptr_zone() -> dict[tuple[str, str], Sequence[Record] | str]:
    return {
        ("example.com", "NAPTR"): [
            # order first, then preference; SCTP and a regexp record are skipped
            Naptr(50, 50, "s", "SIPS+D2T", "", "_sips._tcp.example.com"),
            Naptr(90, 50, "s", "SIP+D2T", "", "_sip._tcp.example.com"),
            Naptr(90, 40, "S", "sip+d2u", "", "_sip._udp.example.com."),
            Naptr(10, 10, "s", "SIP+D2S", "", "_sip._sctp.example.com"),
            Naptr(20, 10, "u", "E2U+sip", "!^.*$!sip:info@example.com!", "."),
        ],
        ("_sips._tcp.example.com", "SRV"): [Srv(0, 0, 5061, "tls.example.com")],
        ("_sip._tcp.example.com", "SRV"): [Srv(0, 0, 5060, "tcp.example.com")],
        ("_sip._udp.example.com", "SRV"): [Srv(0, 0, 5060, "udp.example.com")],
        ("tls.example.com", "A"): ["192.0.2.1"],
        ("tcp.example.com", "A"): ["192.0.2.2"],
        ("udp.example.com", "A"): ["192.0.2.3"],
        ("udp.example.com", "AAAA"): ["2001:db8::3"],
    }


def test_naptr_orders_transports_then_srv_then_addresses() -> None:
    locator, batches = run("sip:support@example.com", naptr_zone())
    assert batches[0] == [q("example.com", "NAPTR")]
    assert batches[1] == [
        q("_sip._tcp.example.com", "SRV"), q("_sip._udp.example.com", "SRV"),
        q("_sips._tcp.example.com", "SRV"),
    ]  # fmt: skip
    assert locator.targets == [
        Target("tls", "192.0.2.1", 5061, "tls.example.com"),
        Target("udp", "192.0.2.3", 5060, "udp.example.com"),  # preference 40 before 50
        Target("udp", "2001:db8::3", 5060, "udp.example.com"),
        Target("tcp", "192.0.2.2", 5060, "tcp.example.com"),
    ]


def test_naptr_skips_transports_we_do_not_listen_on() -> None:
    locator, batches = run("sip:support@example.com", naptr_zone(), transports=("udp",))
    assert batches[1] == [q("_sip._udp.example.com", "SRV")]
    assert [t.transport for t in locator.targets] == ["udp", "udp"]


def test_sips_uri_takes_only_sips_naptr() -> None:
    locator, batches = run("sips:support@example.com", naptr_zone())
    assert batches[1] == [q("_sips._tcp.example.com", "SRV")]
    assert locator.targets == [Target("tls", "192.0.2.1", 5061, "tls.example.com")]


def test_no_naptr_probes_srv_per_supported_transport_in_our_order() -> None:
    zone = {
        ("example.org", "NAPTR"): [],  # no data
        ("_sip._tcp.example.org", "SRV"): [Srv(0, 0, 5070, "sip.example.org")],
        ("sip.example.org", "A"): ["192.0.2.44"],
    }
    locator, batches = run("sip:example.org", zone, transports=("tcp", "udp"))
    assert batches[1] == [q("_sip._tcp.example.org", "SRV"), q("_sip._udp.example.org", "SRV")]
    assert locator.targets == [Target("tcp", "192.0.2.44", 5070, "sip.example.org")]


def test_sips_without_naptr_probes_only_sips_srv() -> None:
    zone = {("example.org", "A"): ["192.0.2.45"]}
    locator, batches = run("sips:example.org", zone)
    assert batches[1] == [q("_sips._tcp.example.org", "SRV")]
    assert locator.targets == [Target("tls", "192.0.2.45", 5061, "example.org")]


def test_nothing_but_an_address_record_gives_udp_5060() -> None:
    zone = {("pbx.example.net", "A"): ["203.0.113.5"]}
    locator, batches = run("sip:1001@pbx.example.net", zone)
    assert [b[0].rdtype for b in batches] == ["NAPTR", "SRV", "A"]
    assert locator.targets == [Target("udp", "203.0.113.5", 5060, "pbx.example.net")]


def test_naptr_whose_srv_is_empty_falls_back_to_addresses_with_its_transport() -> None:
    zone: dict[tuple[str, str], Sequence[Record] | str] = {
        ("example.net", "NAPTR"): [Naptr(10, 10, "s", "SIP+D2T", "", "_sip._tcp.example.net")],
        ("example.net", "A"): ["203.0.113.6"],
    }
    locator, _ = run("sip:example.net", zone)
    assert locator.targets == [Target("tcp", "203.0.113.6", 5060, "example.net")]


def test_srv_target_dot_means_not_available() -> None:
    zone = {
        ("_sip._udp.example.net", "SRV"): [Srv(0, 0, 0, "")],
        ("example.net", "A"): ["203.0.113.6"],  # must not be used: the zone said no
    }
    locator, _ = run("sip:example.net;transport=udp", zone)
    assert locator.targets == []
    assert locator.error is not None
    assert locator.error.reason == "no_records"


# -- failures ------------------------------------------------------------------------------------


def test_unknown_host_reports_nxdomain() -> None:
    locator, batches = run("sip:1001@nowhere.invalid", {})
    assert [b[0].rdtype for b in batches] == ["NAPTR", "SRV", "A"]
    assert locator.targets == []
    assert locator.error is not None
    assert locator.error.reason == "nxdomain"
    assert "nowhere.invalid" in str(locator.error)


def test_host_without_addresses_reports_no_records() -> None:
    zone = {("empty.example", "A"): [], ("empty.example", "AAAA"): []}
    locator, _ = run("sip:empty.example:5060", zone)
    assert locator.error is not None
    assert locator.error.reason == "no_records"


def test_timeout_anywhere_is_the_reason_when_nothing_is_found() -> None:
    zone: dict[tuple[str, str], Sequence[Record] | str] = {("slow.example", "NAPTR"): "timeout"}
    locator, _ = run("sip:slow.example", zone)
    assert locator.error is not None
    assert locator.error.reason == "timeout"


def test_timeout_on_one_srv_target_still_uses_the_others() -> None:
    zone: dict[tuple[str, str], Sequence[Record] | str] = {
        ("_sip._udp.x.example", "SRV"): [
            Srv(1, 0, 5060, "a.x.example"),
            Srv(2, 0, 5060, "b.x.example"),
        ],
        ("a.x.example", "A"): "timeout",
        ("b.x.example", "A"): ["192.0.2.77"],
    }
    locator, _ = run("sip:x.example;transport=udp", zone, families=("A",))
    assert locator.error is None
    assert locator.targets == [Target("udp", "192.0.2.77", 5060, "b.x.example")]


def test_answers_to_questions_not_asked_are_ignored() -> None:
    locator = Locator(Uri.parse("sip:h.example:5060"), transports=ALL, rng=random.Random(0))
    locator.receive(Query("evil.example", "A"), ["192.0.2.66"])
    locator.receive(Query("h.example", "A"), ["192.0.2.1"])
    locator.receive(Query("h.example", "A"), ["192.0.2.99"])  # a second answer: ignored
    locator.receive(Query("h.example", "AAAA"), ["not an address"])
    assert locator.done
    assert [t.address for t in locator.targets] == ["192.0.2.1"]


def test_target_list_is_bounded() -> None:
    many = [Srv(0, 1, 5060, f"h{i}.big.example") for i in range(40)]
    zone: dict[tuple[str, str], Sequence[Record] | str] = {("_sip._udp.big.example", "SRV"): many}
    for i in range(40):
        zone[(f"h{i}.big.example", "A")] = [f"10.0.{i}.1", f"10.0.{i}.2", f"10.0.{i}.3"]
    locator, batches = run("sip:big.example;transport=udp", zone, families=("A",))
    assert len(batches[1]) <= 8
    assert len(locator.targets) == MAX_TARGETS


# -- RFC 2782 ordering ---------------------------------------------------------------------------


def test_srv_priority_orders_before_weight() -> None:
    records = [Srv(20, 1000, 1, "low"), Srv(10, 0, 2, "high-a"), Srv(10, 0, 3, "high-b")]
    ordered = order_srv(records, random.Random(3))
    assert [r.priority for r in ordered] == [10, 10, 20]


def test_srv_weighted_selection_is_deterministic_with_a_seed() -> None:
    records = [Srv(0, 60, 1, "a"), Srv(0, 30, 2, "b"), Srv(0, 10, 3, "c")]
    first = [r.target for r in order_srv(records, random.Random(42))]
    again = [r.target for r in order_srv(records, random.Random(42))]
    assert first == again
    assert sorted(first) == ["a", "b", "c"]


def test_srv_weights_share_first_place_in_proportion() -> None:
    records = [Srv(0, 60, 1, "a"), Srv(0, 30, 2, "b"), Srv(0, 10, 3, "c"), Srv(0, 0, 4, "z")]
    rng = random.Random(7)
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(20000))
    # Expected shares: (w + 1/total-ish) ~ 60/101, 30/101, 10/101, 1/101 (z only on a 0 draw).
    assert abs(firsts["a"] / 20000 - 60 / 101) < 0.02
    assert abs(firsts["b"] / 20000 - 30 / 101) < 0.02
    assert abs(firsts["c"] / 20000 - 10 / 101) < 0.02
    assert firsts["z"] / 20000 < 0.02


def test_srv_all_zero_weights_are_all_kept() -> None:
    records = [Srv(0, 0, p, f"t{p}") for p in range(5)]
    assert sorted(r.port for r in order_srv(records, random.Random(0))) == [0, 1, 2, 3, 4]


def test_srv_order_reaches_the_locator_targets() -> None:
    zone: dict[tuple[str, str], Sequence[Record] | str] = {
        ("_sip._udp.w.example", "SRV"): [
            Srv(0, 1, 5060, "a.w.example"),
            Srv(0, 99, 5060, "b.w.example"),
        ],
        ("a.w.example", "A"): ["192.0.2.1"],
        ("b.w.example", "A"): ["192.0.2.2"],
    }
    seen = Counter(
        run("sip:w.example;transport=udp", zone, seed=s, families=("A",))[0].targets[0].address
        for s in range(300)
    )
    assert seen["192.0.2.2"] > 250  # weight 99 of 100 comes first nearly always
    assert seen["192.0.2.1"] >= 1
