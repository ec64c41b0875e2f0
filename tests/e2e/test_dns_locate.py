"""RFC 3263 against a real DNS server: outbound INVITEs to host names reach SIPp through
NAPTR/SRV/A records, fail over to the next SRV target, and a name that does not exist ends one
attempt cleanly (logged, counted) while the call goes on.

The DNS server is a small authoritative responder for the made-up zone ``acd.test``
(tests/dns_server.py: dnspython's message classes over a UDP socket on 127.0.0.1); the daemon is
pointed at it with ``[sip] dns_servers``. Every SIPp instance has its own ports and is stopped by PID.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.dns_server import DnsServer
from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.peers import sipp, stop
from tests.e2e.test_call_load import front_door, login
from tests.e2e.test_transfer import call_row

pytestmark = pytest.mark.e2e

SCENARIOS = Path(__file__).parent / "sipp" / "scenarios"
ServerFactory = Callable[[dict[tuple[str, str], list[str]]], DnsServer]


@pytest.fixture
def dns_server_factory() -> Iterator[ServerFactory]:
    servers: list[DnsServer] = []

    def start(records: dict[tuple[str, str], list[str]]) -> DnsServer:
        server = DnsServer(records)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def config(
    dns_port: int, proxy: str, agent_contact: str, *, t1_ms: int = 500, failover_s: float = 4.0
) -> str:
    steps = """{ type = "answer" },
  { type = "transfer", trunk = "carrier", number = "5000", timeout_s = 15 },
  { type = "enqueue", queue = "support" }"""
    return (
        front_door(steps)
        + f"""
[sip]
dns_servers = ["127.0.0.1:{dns_port}"]
dns_timeout_s = 2.0
t1_ms = {t1_ms}
failover_timeout_s = {failover_s}

[[trunks]]
name = "carrier"
allow = ["192.0.2.1"]
outbound_proxy = "{proxy}"

[[queues]]
name = "support"

[[agents]]
id = "b1"
login = "static"
contact = "{agent_contact}"
queues = {{ support = 0 }}
"""
    )


def metric(daemon: DaemonProcess, name: str) -> float:
    _, exposition, _ = daemon.get("/metrics")
    match = re.search(rf"^{re.escape(name)} (\S+)$", exposition.decode(), re.M)
    return float(match.group(1)) if match else 0.0


def one_call(daemon: DaemonProcess, tmp_path: Path, hold_ms: int = 2000) -> None:
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", str(hold_ms))
    try:
        assert caller.wait(timeout=60) == 0, caller.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(caller)
    time.sleep(1.5)


def test_transfer_to_a_host_name_goes_through_naptr_srv_and_a(
    start_daemon: DaemonFactory, tmp_path: Path, dns_server_factory: ServerFactory
) -> None:
    far = sipp(tmp_path, ["-sn", "uas"], None, "-m", "1")
    agent = sipp(tmp_path, ["-sn", "uas"], None)
    try:
        server = dns_server_factory(
            {
                ("carrier.acd.test", "NAPTR"): [
                    '10 10 "s" "SIP+D2U" "" _sip._udp.carrier.acd.test.',
                    '20 10 "s" "SIP+D2T" "" _sip._tcp.carrier.acd.test.',  # no TCP listener
                ],
                ("_sip._udp.carrier.acd.test", "SRV"): [
                    f"10 0 {far.sip_port} edge1.carrier.acd.test.",  # type: ignore[attr-defined]
                ],
                ("edge1.carrier.acd.test", "A"): ["127.0.0.1"],
            }
        )
        time.sleep(0.5)
        daemon = start_daemon(
            config(server.port, "carrier.acd.test", f"sip:b1@127.0.0.1:{agent.sip_port}")  # type: ignore[attr-defined]
        )
        login(daemon, "b1")
        one_call(daemon, tmp_path)
        # The far end behind the located SRV target took the one call and saw it end.
        assert far.wait(timeout=30) == 0, far.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(far)
        stop(agent)
    row = call_row(daemon)
    assert (row["disposition"], row["agent_id"]) == ("transferred", None)
    assert json.loads(str(row["flow_data"])).get("transfer_status") is None
    assert server.asked[("carrier.acd.test", "NAPTR")] == 1
    assert server.asked[("_sip._udp.carrier.acd.test", "SRV")] == 1
    assert server.asked[("edge1.carrier.acd.test", "A")] == 1
    assert ("_sip._tcp.carrier.acd.test", "SRV") not in server.asked  # we have no TCP listener
    assert metric(daemon, "acd_sip_dns_failures_total") == 0.0


@pytest.mark.parametrize(
    ("t1_ms", "failover_s", "dead_why"),
    [(50, 0.0, "timeout"), (500, 1.0, "no_response")],
    ids=["timer-b", "failover-timeout"],
)
def test_dead_and_overloaded_srv_targets_fail_over_to_the_next(
    start_daemon: DaemonFactory,
    tmp_path: Path,
    dns_server_factory: ServerFactory,
    t1_ms: int,
    failover_s: float,
    dead_why: str,
) -> None:
    """The dead first target is given up by timer B (64*T1, here 3.2 s) or, sooner, by the
    failover timeout (nothing heard from it for 1 s); the second answers 503; the third takes
    the call."""
    dead_port = free_port(socket.SOCK_DGRAM)  # nothing listens there: no answer at all
    busy = sipp(tmp_path, ["-sf", str(SCENARIOS / "far_end_503.xml")], None, "-m", "1")
    live = sipp(tmp_path, ["-sn", "uas"], None, "-m", "1")
    agent = sipp(tmp_path, ["-sn", "uas"], None)
    try:
        server = dns_server_factory(
            {
                ("_sip._udp.carrier.acd.test", "SRV"): [
                    f"10 0 {dead_port} dead.carrier.acd.test.",
                    f"20 0 {busy.sip_port} busy.carrier.acd.test.",  # type: ignore[attr-defined]
                    f"30 0 {live.sip_port} live.carrier.acd.test.",  # type: ignore[attr-defined]
                ],
                ("dead.carrier.acd.test", "A"): ["127.0.0.1"],
                ("busy.carrier.acd.test", "A"): ["127.0.0.1"],
                ("live.carrier.acd.test", "A"): ["127.0.0.1"],
            }
        )
        time.sleep(0.5)
        daemon = start_daemon(
            config(
                server.port, "sip:carrier.acd.test;transport=udp",
                f"sip:b1@127.0.0.1:{agent.sip_port}",  # type: ignore[attr-defined]
                t1_ms=t1_ms, failover_s=failover_s,
            )
        )  # fmt: skip
        login(daemon, "b1")
        one_call(daemon, tmp_path, hold_ms=8000)  # the caller stays past timer B and the 503
        assert busy.wait(timeout=30) == 0, busy.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
        assert live.wait(timeout=30) == 0, live.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        for proc in (busy, live, agent):
            stop(proc)
    row = call_row(daemon)
    assert (row["disposition"], row["agent_id"]) == ("transferred", None)
    assert ("carrier.acd.test", "NAPTR") not in server.asked  # ;transport= means SRV at once
    failovers = [e for e in daemon.log_lines() if e.get("event") == "sip_failover"]
    assert [e["why"] for e in failovers] == [dead_why, "503"]
    assert metric(daemon, "acd_sip_failovers_total") == 2.0


def test_unknown_host_fails_the_transfer_and_srv_finds_the_agent(
    start_daemon: DaemonFactory, tmp_path: Path, dns_server_factory: ServerFactory
) -> None:
    agent = sipp(tmp_path, ["-sn", "uas"], None, "-m", "1")
    try:
        server = dns_server_factory(
            {
                ("_sip._udp.agents.acd.test", "SRV"): [
                    f"0 0 {agent.sip_port} phone-b1.agents.acd.test.",  # type: ignore[attr-defined]
                ],
                ("phone-b1.agents.acd.test", "A"): ["127.0.0.1"],
            }
        )
        time.sleep(0.5)
        daemon = start_daemon(
            config(server.port, "gone.acd.test", "sip:b1@agents.acd.test;transport=udp")
        )
        login(daemon, "b1")
        one_call(daemon, tmp_path)
        assert agent.wait(timeout=30) == 0, agent.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(agent)
    row = call_row(daemon)
    # The transfer found no address: status "failed", and the flow went on to the queue, whose
    # agent was reached at the SRV target of its contact's host.
    assert json.loads(str(row["flow_data"]))["transfer_status"] == "failed"
    assert (row["disposition"], row["agent_id"]) == ("answered", "b1")
    # NAPTR's NXDOMAIN says the name has no records of any type: the resolver's negative cache
    # answers the A question that ends the lookup (RFC 2308), the server is asked once.
    assert server.asked[("gone.acd.test", "NAPTR")] == 1
    assert ("gone.acd.test", "A") not in server.asked
    lines = [e for e in daemon.log_lines() if e.get("event") == "sip_destination_not_found"]
    assert [(e["reason"], "gone.acd.test" in str(e["detail"])) for e in lines] == [
        ("nxdomain", True)
    ]
    assert metric(daemon, 'acd_sip_dns_failures_total{reason="nxdomain"}') == 1.0
    assert not [e for e in daemon.log_lines() if e.get("level") == "error"]
