"""engine.cluster.election against the suite's real PostgreSQL server: one leader at a time, a
standby takes over when the leader goes, and a leader that loses its session steps down.

Each test competes for a lock key of its own, so tests (and other helpers' runs) sharing the
server never see each other's leaders. Time is real here (the lock lives in the server), but
short: 0.1 s rounds.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from engine.cluster import LeaderElection

INTERVAL_S = 0.1


def gauge(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("acd_cluster_leader")


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Poll ``condition`` every round until it holds; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        assert loop.time() - start < timeout_s, "condition never held"
        await asyncio.sleep(INTERVAL_S / 4)
    return loop.time() - start


@pytest.fixture
def key() -> int:
    return secrets.randbits(62)


async def test_one_leader_and_a_standby_takes_over_when_it_stops(
    postgres_url: str, key: int
) -> None:
    regs = [CollectorRegistry(), CollectorRegistry()]
    changes: list[tuple[int, bool]] = []
    nodes = [
        LeaderElection(
            postgres_url, interval_s=INTERVAL_S, registry=reg, lock_key=key,
            on_change=lambda leader, i=i: changes.append((i, leader)),
        )
        for i, reg in enumerate(regs)
    ]  # fmt: skip
    tasks = [asyncio.create_task(n.run()) for n in nodes]
    try:
        await until(lambda: any(n.is_leader for n in nodes))
        await asyncio.sleep(INTERVAL_S * 5)  # several rounds: the standby never gets it too
        assert [n.is_leader for n in nodes].count(True) == 1
        leader = next(i for i, n in enumerate(nodes) if n.is_leader)
        standby = 1 - leader
        assert (gauge(regs[leader]), gauge(regs[standby])) == (1.0, 0.0)
        tasks[leader].cancel()  # a clean stop: closing the session frees the lock
        await asyncio.gather(tasks[leader], return_exceptions=True)
        assert gauge(regs[leader]) == 0.0
        took = await until(lambda: nodes[standby].is_leader)
        assert took < INTERVAL_S * 5, took
        assert gauge(regs[standby]) == 1.0
        assert changes == [(leader, True), (leader, False), (standby, True)]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_leader_whose_session_is_ended_steps_down_and_competes_again(
    postgres_url: str, key: int
) -> None:
    reg = CollectorRegistry()
    node = LeaderElection(postgres_url, interval_s=INTERVAL_S, registry=reg, lock_key=key)
    roles: list[bool] = []
    node._on_change = roles.append
    task = asyncio.create_task(node.run())
    admin = await asyncpg.connect(postgres_url)
    try:
        await until(lambda: node.is_leader)
        # The server ends the leader's session (what it does to a dead peer, or an admin's
        # pg_terminate_backend): the lock is gone with it, and the node must notice.
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
            "WHERE locktype = 'advisory' AND ((classid::bigint << 32) | objid::bigint) = $1",
            key & 0xFFFF_FFFF_FFFF_FFFF,
        )
        assert ended == 1
        await until(lambda: len(roles) >= 3)  # stepped down, then took the free lock again
        assert roles == [True, False, True]
        assert gauge(reg) == 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await admin.close()


async def test_an_unreachable_database_is_a_standby_not_a_crash(key: int) -> None:
    reg = CollectorRegistry()
    node = LeaderElection(
        "postgresql://acd@127.0.0.1:9/nowhere", interval_s=INTERVAL_S, registry=reg, lock_key=key
    )
    task = asyncio.create_task(node.run())
    try:
        await asyncio.sleep(INTERVAL_S * 4)
        assert not task.done()
        assert not node.is_leader
        assert gauge(reg) == 0.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
