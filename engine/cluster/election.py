"""Leader election through a PostgreSQL advisory lock: exactly one leader, a standby takes over.

How this works: every node with ``[cluster] leader_election = true`` runs one ``LeaderElection``
(``run`` is a task the daemon owns). It keeps a connection of its own (asyncpg, outside the CDR
store's pool: the lock belongs to one database session) to the database of ``storage.url`` and
asks for one session-level advisory lock with ``pg_try_advisory_lock(LOCK_KEY)``, which never
waits: the node that gets it is the leader; the others are standbys and ask again every
``interval_s``. PostgreSQL is the arbiter, so there is no consensus of our own: the lock lives
exactly as long as the leader's session, and two sessions can never hold it at once.

- The leader dies (SIGKILL, crash, host reboot that closes its sockets): its connection closes,
  the server ends the session and frees the lock, and the first standby to ask next takes it,
  so the takeover takes one ``interval_s`` at most (plus the standby's round trip).
- The leader's host vanishes without closing the connection (power cut, partition): the server
  finds the dead peer by TCP keepalives, which our session sets to about ``KEEPALIVE_FACTOR``
  intervals (``tcp_keepalives_*``), and only then frees the lock.
- The leader loses the database (its check ``SELECT 1`` fails or takes longer than
  ``interval_s``): it steps down at once and drops its connection, within about two intervals,
  before the server can free the lock for someone else (the keepalive bound above is longer).
  It competes again like any standby when the database answers.

Every change of role is logged (``cluster_role``) and shown by the gauge ``acd_cluster_leader``
(1 on the leader, 0 elsewhere), and reported to ``on_change``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Gauge

log = structlog.stdlib.get_logger("acd.cluster")

#: The advisory lock all nodes of one database compete for: a fixed 64-bit key, the first 8
#: bytes of sha256("acd routing authority") as a signed integer, so no other application's
#: locks (which usually pick small integers) collide with it by accident.
LOCK_KEY = -0x11FE_9E77_D204_91EC
#: The server gives up on a silent leader after about this many intervals (TCP keepalives): more
#: than the two intervals a leader cut off from the database needs to step down by itself.
KEEPALIVE_FACTOR = 4


class LeaderElection:
    """One node's part in the election. ``is_leader`` is its current role."""

    def __init__(
        self,
        dsn: str,
        *,
        interval_s: float,
        registry: CollectorRegistry,
        on_change: Callable[[bool], None] | None = None,
        lock_key: int = LOCK_KEY,
    ) -> None:
        self._dsn = dsn
        self._interval_s = interval_s
        self._on_change = on_change
        self._lock_key = lock_key
        self._conn: asyncpg.Connection | None = None
        self.is_leader = False
        self._gauge = Gauge(
            "acd_cluster_leader",
            "1 while this node is the cluster's routing authority (holds the leader lock), else 0.",
            registry=registry,
        )
        self._gauge.set(0)

    async def run(self) -> None:
        """Compete, lead or stand by until cancelled; the lock is given up on the way out."""
        try:
            while True:
                try:
                    await self.step()
                except Exception as exc:  # our bug: this node stands by, the daemon goes on
                    log.error("cluster_election_failed", error=repr(exc))
                    self._set(False, "internal error")
                    await self._drop()
                await asyncio.sleep(self._interval_s)
        finally:
            # Stand down before the lock is free: never two nodes that think they lead.
            self._set(False, "stopped")
            await self._drop()  # closing the session frees the lock for a standby at once

    async def step(self) -> None:
        """One round: a standby asks for the lock, the leader checks it still holds its session."""
        try:
            if self.is_leader and (self._conn is None or self._conn.is_closed()):
                # The server ended our session (a terminated backend, a restart): the lock went
                # with it. A new session would hold nothing, so compete again like a standby.
                self._set(False, "session lost")
            conn = await self._connection()
            if self.is_leader:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._interval_s)
            else:
                got = await asyncio.wait_for(
                    conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key),
                    self._interval_s,
                )
                if got:
                    self._set(True, "lock taken")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cluster_database_unreachable", reason=str(exc) or type(exc).__name__)
            self._set(False, "database unreachable")
            await self._drop()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncio.wait_for(self._connect(), self._interval_s)
        return self._conn

    async def _connect(self) -> asyncpg.Connection:
        idle = max(1, math.ceil(self._interval_s * KEEPALIVE_FACTOR / 2))
        every = max(1, math.ceil(self._interval_s))
        return await asyncpg.connect(
            self._dsn,
            server_settings={
                "application_name": "acd leader election",
                "tcp_keepalives_idle": str(idle),
                "tcp_keepalives_interval": str(every),
                "tcp_keepalives_count": "2",
            },
        )

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), self._interval_s)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn.terminate()

    def _set(self, leader: bool, why: str) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        self._gauge.set(1 if leader else 0)
        log.info("cluster_role", role="leader" if leader else "standby", why=why)
        if self._on_change is not None:
            self._on_change(leader)
