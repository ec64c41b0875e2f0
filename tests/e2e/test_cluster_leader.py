"""Two `acd run` nodes on one PostgreSQL database elect one leader; SIGKILL it and the standby
takes over within a few seconds (engine.cluster.election, ``[cluster] leader_election``).

Each node says its role in ``acd_cluster_leader`` on /metrics. The database is the test's own on
the suite's PostgreSQL server, so no other test's nodes compete for the lock. A clean stop
(the daemon cancels the election task: it stands down, then closes its session) is covered
without daemons in tests/engine/test_cluster_election.py.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid

import asyncpg
import pytest

from tests.e2e.conftest import DaemonFactory, DaemonProcess

pytestmark = pytest.mark.e2e

INTERVAL_S = 0.5
CLUSTER = f"[cluster]\nleader_election = true\ncheck_interval_s = {INTERVAL_S}\n"


def fresh_database(server_url: str) -> str:
    name = f"acd_cluster_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    asyncio.run(create())
    return server_url.rsplit("/", 1)[0] + "/" + name


def leader_gauge(node: DaemonProcess) -> float | None:
    _, body, _ = node.get("/metrics")
    match = re.search(r"^acd_cluster_leader (\S+)$", body.decode(), re.MULTILINE)
    return float(match.group(1)) if match else None


def wait_gauge(node: DaemonProcess, value: float, timeout_s: float = 10.0) -> float:
    """Poll the node's /metrics (every 50 ms) until acd_cluster_leader is ``value``; seconds."""
    start = time.monotonic()
    while leader_gauge(node) != value:
        assert time.monotonic() - start < timeout_s, f"acd_cluster_leader never {value}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_one_leader_and_the_standby_takes_over_after_sigkill(
    start_daemon: DaemonFactory, postgres_url: str
) -> None:
    storage = f'url = "{fresh_database(postgres_url)}"'
    first = start_daemon(CLUSTER, storage=storage)  # alone: it leads
    wait_gauge(first, 1.0)
    second = start_daemon(CLUSTER, storage=storage)
    wait_gauge(second, 0.0)
    # Several rounds later the standby still stands by and the leader still leads.
    deadline = time.monotonic() + INTERVAL_S * 4
    while time.monotonic() < deadline:
        assert (leader_gauge(first), leader_gauge(second)) == (1.0, 0.0)
        time.sleep(0.1)
    first.signal(signal.SIGKILL)  # the process this test started
    first.proc.wait()
    took = wait_gauge(second, 1.0)
    # One round to notice the free lock, plus the server ending the dead session, with slack.
    assert took < INTERVAL_S * 2 + 2.0, took
    roles = [line for line in second.log_lines() if line.get("event") == "cluster_role"]
    assert [r["role"] for r in roles] == ["leader"]
    print(f"takeover after SIGKILL of the leader: {took:.2f} s (check_interval_s {INTERVAL_S})")
    assert second.stop() == 0
