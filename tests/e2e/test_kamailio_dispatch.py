"""Real Kamailio (the shipped config/kamailio/kamailio.cfg) in front of three acd nodes.

SIPp calls Kamailio (caller_via_proxy.xml: ACK and BYE follow the Record-Route), which dispatches
round robin to the nodes; each node queues the call and rings one of its own static agents (one
SIPp `uas` answers for all of them). Each node has its own config, ports and CDR store (SQLite
files, PostgreSQL for node 0), so the calls a node took are the CDR rows in its store (the shared
routing authority is the next slice of issue 22). One Kamailio and three nodes serve the whole
module, in order:

1. calls are spread over all three nodes, every one answered; a phone (baresip) registering
   with Kamailio as its registrar is registered on exactly one node;
2. SIGKILL one node: calls sent to it meanwhile fail over to the next node when it stays silent,
   Kamailio marks it down (a failed call or its OPTIONS probing, whichever comes first), and every
   call after that goes to the two survivors, none failed;
3. SIGTERM another one while it holds a live call: draining, it answers the probes 503, Kamailio
   takes it out of rotation while its process still runs, and new calls all go to the last node;
4. take the last node's database away (node 0 keeps its CDRs in the suite's PostgreSQL): its
   /readyz fails, its probes get 503, Kamailio has no node left and answers 503 itself; give the
   database back and the node rejoins at its next probe and takes calls again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e import configs
from tests.e2e.conftest import DaemonProcess, render_config
from tests.e2e.peers import Baresip, Kamailio, free_port_block, sipp, stop
from tests.e2e.test_call_load import ADMIN, login

pytestmark = pytest.mark.e2e

NODES = 3
AGENTS_PER_NODE = 4
CALLER = Path(__file__).parent / "sipp" / "scenarios" / "caller_via_proxy.xml"
ROAMER, ROAMER_PASSWORD = "roamer", "roamer-secret-42"
PING_INTERVAL_S = 1  # Kamailio's probe interval (the cfg's PING_INTERVAL_S)
FR_TIMER_MS = 500  # how long a node may stay silent before it counts as down (FR_TIMER_MS)


def node_config(name: str, uas_port: int, rtp_base: int) -> str:
    agents = "".join(
        f'[[agents]]\nid = "{name}-a{i}"\nlogin = "static"\n'
        f'contact = "sip:{name}-a{i}@127.0.0.1:{uas_port}"\n'
        "skills = { support = 5 }\nqueues = { support = 0 }\n\n"
        for i in range(AGENTS_PER_NODE)
    )
    # An agent every node knows, in no queue: its phone registers through Kamailio.
    agents += f'[[agents]]\nid = "{ROAMER}"\npassword = "{ROAMER_PASSWORD}"\n\n'
    return (
        configs.front_door(ADMIN, trunk="kamailio", rtp_base=rtp_base)
        + """
[runtime]
drain_timeout_s = 20.0

[[queues]]
name = "support"
requirements = { support = 1 }
ring_timeout_s = 5.0
wrap_up_s = 0.0
record = "never"

"""
        + agents
    )


def start_node(
    workdir: Path, name: str, uas_port: int, storage: str = ""
) -> tuple[DaemonProcess, int]:
    workdir.mkdir()
    http_port, sip_port = free_port(), free_port(socket.SOCK_DGRAM)
    config_path = workdir / "acd.toml"
    extra = node_config(name, uas_port, free_port_block(100))
    config_path.write_text(render_config(http_port, sip_port, extra, storage))
    log_path = workdir / "acd.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(config_path)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    return DaemonProcess(proc, http_port, workdir, config_path, log_path), sip_port


def probe(target: str) -> tuple[int, str | None]:
    """One OPTIONS to ``target`` ("host:port") from a socket of our own, like Kamailio's probe:
    (status, Retry-After) of the answer."""
    host, port = target.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        me = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:{target} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKprobe{me};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\n"
                f"To: <sip:{target}>\r\nCall-ID: probe-{me}\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            (host, int(port)),
        )
        data = s.recv(65535).decode()
    status = int(data.split(" ", 2)[1])
    retry = re.search(r"(?im)^Retry-After:\s*(\S+)", data)
    return status, retry.group(1) if retry else None


class Postgres:
    """Node 0's own database on the suite's PostgreSQL server, through psql as the cluster owner:
    created, counted, and taken away and given back (a real storage outage)."""

    def __init__(self, server_url: str, database: str) -> None:
        self.database = database
        self.server_url = server_url
        self.url = server_url.rsplit("/", 1)[0] + "/" + database
        self.sql(f"CREATE DATABASE {database}")

    def sql(self, statement: str, url: str | None = None) -> str:
        psql = next(Path("/usr/lib/postgresql").glob("*/bin/psql"))
        out = subprocess.run(
            [str(psql), url or self.server_url, "-tAc", statement],
            capture_output=True, text=True, timeout=15, check=True,
        )  # fmt: skip
        return out.stdout.strip()

    def outage(self, down: bool) -> None:
        """``down``: no new connections, and the node's open ones closed; else allowed again."""
        self.sql(f"ALTER DATABASE {self.database} ALLOW_CONNECTIONS {'false' if down else 'true'}")
        if down:
            self.sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{self.database}'"
            )


@dataclass
class Cluster:
    kamailio: Kamailio
    nodes: list[DaemonProcess]
    uris: list[str]  # each node's dispatcher destination, in the order of `nodes`
    workdir: Path
    postgres: Postgres  # node 0's store; the others have SQLite files

    def calls(self, count: int, rate: int = 20) -> tuple[int, int, str]:
        """``count`` SIPp calls to Kamailio; (SIPp's exit status, its PID, its log)."""
        return self.finish(self.start_calls(count, rate))

    def finish(self, uac: subprocess.Popen[bytes]) -> tuple[int, int, str]:
        """Wait for a SIPp run: (exit status, PID, its screen log followed by its error log)."""
        code = uac.wait(timeout=60)
        errors = self.workdir / f"sipp-{uac.sip_port}-errors.log"  # type: ignore[attr-defined]
        text = uac.log_path.read_text(errors="replace")  # type: ignore[attr-defined]
        if errors.exists():
            text += errors.read_text(errors="replace")
        return code, uac.pid, text

    def start_calls(self, count: int, rate: int = 20) -> subprocess.Popen[bytes]:
        return sipp(self.workdir, ["-sf", str(CALLER)], f"127.0.0.1:{self.kamailio.port}",
                   "-s", "support", "-r", str(rate), "-m", str(count), "-l", "20", "-d", "200",
                   "-recv_timeout", "10000")  # fmt: skip

    def answered_per_node(self, sipp_pid: int, expected: int, timeout_s: float = 10.0) -> list[int]:
        """Answered CDR rows of one SIPp run (its Call-IDs end in -PID@host) in each node's store,
        polled until they add up to ``expected`` (the CDR writer flushes in batches)."""
        deadline = time.monotonic() + timeout_s
        while True:
            counts = [self._answered(i, sipp_pid) for i in range(len(self.nodes))]
            if sum(counts) >= expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.1)

    def _answered(self, i: int, sipp_pid: int) -> int:
        query = "SELECT count(*) FROM calls WHERE sip_call_id LIKE '%-{}@%' AND disposition = "
        if i == 0:
            return int(self.postgres.sql(query.format(sipp_pid) + "'answered'", self.postgres.url))
        db_path = self.nodes[i].workdir / "var" / "acd.sqlite3"
        with sqlite3.connect(db_path, timeout=5) as db:
            (n,) = db.execute(
                "SELECT count(*) FROM calls WHERE sip_call_id LIKE ? AND disposition = 'answered'",
                (f"%-{sipp_pid}@%",),
            ).fetchone()
        return int(n)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("kamailio")
    postgres = Postgres(postgres_url, f"kamailio_n0_{os.getpid()}")
    uas = sipp(workdir, ["-sn", "uas"], None)
    nodes: list[DaemonProcess] = []
    kamailio: Kamailio | None = None
    try:
        sip_ports = []
        for i in range(NODES):  # started together: their start-ups overlap
            storage = f'url = "{postgres.url}"' if i == 0 else ""
            node, sip_port = start_node(workdir / f"node{i}", f"n{i}", uas.sip_port, storage)  # type: ignore[attr-defined]
            nodes.append(node)
            sip_ports.append(sip_port)
        for i, node in enumerate(nodes):
            node.wait_ready()
            for a in range(AGENTS_PER_NODE):
                login(node, f"n{i}-a{a}")
        kamailio = Kamailio(
            workdir / "kamailio",
            free_port(socket.SOCK_DGRAM),
            [("127.0.0.1", port) for port in sip_ports],
            defines={"PING_INTERVAL_S": str(PING_INTERVAL_S), "FR_TIMER_MS": str(FR_TIMER_MS)},
        )
        uris = [f"sip:127.0.0.1:{port}" for port in sip_ports]
        # Up once each node has answered a probe 200 (every node is "AP": active, probed).
        kamailio.wait_for_flags(lambda seen: all(seen.get(u) == "AP" for u in uris))
        yield Cluster(kamailio, nodes, uris, workdir, postgres)
    finally:
        if kamailio is not None:
            kamailio.stop()
        for node in nodes:
            if node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()
        stop(uas)


def test_calls_are_spread_over_every_node(cluster: Cluster) -> None:
    code, pid, log = cluster.calls(30)
    assert code == 0, log[-3000:]
    per_node = cluster.answered_per_node(pid, 30)
    assert sum(per_node) == 30, per_node
    assert all(n >= 5 for n in per_node), per_node  # round robin: about 10 each
    for node in cluster.nodes:  # ready: the node answers a probe 200
        target = str(node.wait_for_log("ready")["sip"]).removeprefix("udp:")
        assert probe(target) == (200, None)


def agent_state(node: DaemonProcess, agent_id: str) -> str:
    request = urllib.request.Request(f"{node.base_url}/api/v1/agents/{agent_id}")
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return str(json.loads(resp.read())["state"])


def test_a_phone_registers_through_kamailio_on_one_node(cluster: Cluster) -> None:
    """REGISTER goes to one node (hash over the To URI), digest challenge and all, and the 200
    comes back through Kamailio: a real phone (baresip) with Kamailio as its registrar."""
    phone = Baresip(
        cluster.workdir / "roamer",
        f"<sip:{ROAMER}@127.0.0.1:{cluster.kamailio.port}>;auth_pass={ROAMER_PASSWORD};"
        "regint=60;audio_codecs=PCMU",
        880,
    )
    try:
        phone.wait_for("200 OK")  # registered with digest auth, through Kamailio
        deadline = time.monotonic() + 10
        while True:
            states = [agent_state(node, ROAMER) for node in cluster.nodes]
            if "available" in states or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sorted(states) == ["available", "logged_out", "logged_out"], states
    finally:
        phone.stop()  # unregisters (or its binding expires): the agent is in no queue anyway


def test_a_killed_node_is_marked_down_and_the_survivors_take_every_call(cluster: Cluster) -> None:
    dead, uri = cluster.nodes[2], cluster.uris[2]
    killed_at = time.monotonic()
    dead.proc.send_signal(signal.SIGKILL)  # the process this module started
    dead.proc.wait()
    # Calls placed at once, before any probe noticed: the ones sent to the dead node get no
    # answer within FR_TIMER_MS and go to the next node (failure_route, ds_next_dst).
    in_window = cluster.start_calls(6, rate=50)
    view = cluster.kamailio.wait_for_flags(lambda seen: seen.get(uri, "").startswith("I"))
    detected_s = time.monotonic() - killed_at
    code, pid, log = cluster.finish(in_window)
    assert code == 0, log[-3000:]
    assert sum(cluster.answered_per_node(pid, 6)) == 6
    # ... and some did take that path (round robin sent every third to the dead node, faster
    # than a probe's FR_TIMER_MS could notice).
    assert f"acd node {uri} failed (408), marked down" in cluster.kamailio.output
    # Detection window: at most one probe interval plus the silence a probe waits for, with
    # slack for a loaded machine.
    assert detected_s < PING_INTERVAL_S + FR_TIMER_MS / 1000 + 3.0, detected_s
    assert all(view[u] == "AP" for u in cluster.uris[:2]), view
    code, pid, log = cluster.calls(20)
    assert code == 0, log[-3000:]  # 0 failed calls after the detection window
    per_node = cluster.answered_per_node(pid, 20)
    assert per_node[2] == 0, per_node  # (its store: nothing new could land there)
    assert sum(per_node) == 20, per_node
    assert min(per_node[:2]) >= 5, per_node  # still round robin over the two left
    print(
        f"node killed: marked down after {detected_s:.2f} s; calls per node after: {per_node[:2]}"
    )


def test_a_draining_node_answers_probes_503_and_gets_no_new_calls(cluster: Cluster) -> None:
    draining, uri = cluster.nodes[1], cluster.uris[1]
    # A live call held on the node (straight to it, not through Kamailio) keeps it draining.
    ready = draining.wait_for_log("ready")
    target = str(ready["sip"]).removeprefix("udp:")

    def bridged() -> int:
        return sum(line.get("event") == "call_bridged" for line in draining.log_lines())

    before = bridged()
    held = sipp(cluster.workdir, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "15000")
    try:
        deadline = time.monotonic() + 10
        while bridged() == before:  # polling the node's log for the held call's bridge
            assert time.monotonic() < deadline, "the held call never got bridged"
            time.sleep(0.05)
        draining.proc.send_signal(signal.SIGTERM)
        view = cluster.kamailio.wait_for_flags(lambda seen: seen.get(uri, "").startswith("I"))
        assert draining.proc.poll() is None  # still up, draining its live call
        assert view[cluster.uris[0]] == "AP", view
        status, retry_after = probe(target)  # what Kamailio's probe got
        assert (status, retry_after) == (503, "5")
        code, pid, log = cluster.calls(10)
        assert code == 0, log[-3000:]
        assert draining.proc.poll() is None  # the calls went elsewhere while it still ran
        per_node = cluster.answered_per_node(pid, 10)
        assert per_node == [10, 0, 0], per_node
    finally:
        stop(held)


def test_a_node_whose_storage_goes_away_leaves_the_rotation_and_rejoins(cluster: Cluster) -> None:
    node, uri = cluster.nodes[0], cluster.uris[0]  # the last node taking calls
    target = str(node.wait_for_log("ready")["sip"]).removeprefix("udp:")
    cluster.postgres.outage(down=True)
    try:
        # /readyz fails its storage check; within a second the probes get 503 too.
        cluster.kamailio.wait_for_flags(lambda seen: seen.get(uri, "").startswith("I"))
        assert probe(target) == (503, "5")
        status, body = node.get_json("/readyz")
        assert status == 503, body
        code, _, log = cluster.calls(2)
        assert code == 1  # no node is up: Kamailio answers 503 itself
        assert "SIP/2.0 503 No acd node available" in log
    finally:
        cluster.postgres.outage(down=False)
    view = cluster.kamailio.wait_for_flags(lambda seen: seen.get(uri) == "AP")
    assert probe(target) == (200, None)
    code, pid, log = cluster.calls(10)
    assert code == 0, log[-3000:]
    assert cluster.answered_per_node(pid, 10)[0] == 10
    assert view[uri] == "AP"
