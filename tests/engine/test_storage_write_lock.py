"""Our own writers never see "database is locked" on SQLite (engine.storage.store, issue 16).

Many concurrent writers of each kind the daemon has (CDR writers flushing, task writers, the
audit log's group commit, recording index rows) on one real SQLite file in WAL mode, while a
slow reader holds a read transaction open until they are done. SQLite's busy timeout is set to
0 for the test: any two of our write transactions that met inside SQLite would fail at once with
"database is locked", so every write succeeding shows they went one at a time through
``Store.write()``. Then the same writers without the lock (``engine.begin()`` directly) to show
the test can fail on this machine. And a burst of readers and writers leaves no more open files
than the pool's connections hold (21 on this machine before the pool lost its overflow).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from engine.calls.record import rejected_attempt
from engine.config import StorageConfig
from engine.runtime.metrics import Metrics
from engine.storage import Store, database_url
from engine.storage import store as store_module
from engine.storage.cdr import CdrWriter
from engine.storage.queries import insert_audit
from engine.storage.schema import audit_log, calls, recordings, tasks
from engine.storage.tasks import TaskWrite, TaskWriter

WRITERS = 8  # of each kind
ROWS = 10  # each writes


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    monkeypatch.setattr(store_module, "_SQLITE_BUSY_TIMEOUT_MS", 0)
    s = await Store.open(database_url(StorageConfig(sqlite_path="cdr.sqlite3"), base_dir=tmp_path))
    yield s
    await s.close()


def task_row(n: int) -> dict[str, Any]:
    return {"id": f"t-{n}", "external_id": None, "channel": "chat", "queue": "support",
            "state": "waiting", "priority": 0, "customer": {}, "data": {},
            "arrived_at": float(n), "enqueued_at": float(n)}  # fmt: skip


def audit_row(n: int) -> dict[str, Any]:
    return {"at": float(n), "actor": f"a{n}", "role": "admin", "action": "test",
            "object_type": None, "object_id": None, "outcome": "allowed",
            "remote_addr": "127.0.0.1", "detail": {"n": n}}  # fmt: skip


async def slow_reader(store: Store, started: asyncio.Event, done: asyncio.Event) -> int:
    """A read transaction (a report, an export) held open until the writers are done."""
    async with store.engine.connect() as conn:
        await conn.exec_driver_sql("BEGIN")
        n = (await conn.execute(sa.select(sa.func.count()).select_from(calls))).scalar_one()
        started.set()
        await done.wait()
        await conn.rollback()
    return int(n)


async def run_writers(
    store: Store, write: Callable[[], Any], first: int = 0
) -> list[BaseException]:
    """Every kind of writer, WRITERS of each, at once, each to its end; ``write`` is the
    transaction the recording index rows use (as RecordingService does). What they raised."""
    counter = itertools.count(first)  # row numbers, unique across runs given their first

    async def cdr_writer() -> None:
        writer = CdrWriter(store, Metrics())
        for _ in range(ROWS):
            n = next(counter)
            writer.call_ended(rejected_attempt(
                sip_call_id=f"s{n}", trunk="pbx", caller="+1555", dialed="100", status=503,
                reason="test", node="n1",
            ))  # fmt: skip
            await writer.flush()
            assert writer.last_error is None, writer.last_error

    async def task_writer() -> None:
        writer = TaskWriter(store)
        runner = asyncio.create_task(writer.run())
        try:
            for _ in range(ROWS):
                await writer.submit(TaskWrite(task_row(next(counter)), insert=True))
        finally:
            await writer.close()
            await runner
        assert writer.failures == 0

    async def auditor() -> None:
        for _ in range(ROWS):
            await insert_audit(store, audit_row(next(counter)))

    async def recording_index() -> None:
        for _ in range(ROWS):
            n = next(counter)
            async with write() as conn:
                await conn.execute(
                    recordings.insert().values(id=f"r{n}", call_id=f"c{n}", started_at=1.0,
                                               path=f"/r{n}.wav")
                )  # fmt: skip

    kinds: list[Callable[[], Awaitable[None]]] = [cdr_writer, task_writer, auditor, recording_index]
    results = await asyncio.gather(
        *(kind() for kind in kinds for _ in range(WRITERS)), return_exceptions=True
    )
    return [r for r in results if isinstance(r, BaseException)]


async def count(store: Store, table: sa.Table) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def test_concurrent_writers_and_a_slow_reader_never_see_database_locked(
    store: Store,
) -> None:
    started, done = asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(slow_reader(store, started, done))
    await started.wait()
    try:
        failed = await run_writers(store, store.write)
    finally:
        done.set()
    assert failed == []
    assert await reader == 0  # its snapshot, taken before any write
    for table in (calls, tasks, audit_log, recordings):
        assert await count(store, table) == WRITERS * ROWS, table.name
    async with store.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "wal"


async def test_without_the_lock_the_same_writers_do_collide(store: Store) -> None:
    """The control: ``engine.begin()`` around the recording rows, beside the locked writers,
    meets them inside SQLite (busy timeout 0) and fails, so the test above can fail."""

    @contextlib.asynccontextmanager
    async def unlocked() -> AsyncIterator[Any]:
        async with store.engine.begin() as conn:
            yield conn
            await asyncio.sleep(
                0
            )  # hold the write lock across a turn of the loop, as real work does

    failed = await run_writers(store, unlocked)
    assert any(isinstance(e, OperationalError) and "database is locked" in str(e) for e in failed)


def open_files(path: Path) -> int:
    """This process's open file descriptors on the database and its -wal/-shm files."""
    names = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            names += str(fd.readlink()).startswith(str(path))
    return names


async def test_a_burst_of_readers_and_writers_leaves_no_open_files_behind(
    store: Store, tmp_path: Path
) -> None:
    """SQLite keeps a closed connection's descriptor while the process holds others on the file,
    so every connection a burst opens beyond the pool would stay an open file: the pool's five
    connections are the most a burst may leave, and later bursts add none."""
    db = tmp_path / "cdr.sqlite3"

    async def read() -> int:
        async with store.engine.connect() as conn:
            await conn.exec_driver_sql("BEGIN")
            n = (await conn.execute(sa.select(sa.func.count()).select_from(calls))).scalar_one()
            await asyncio.sleep(0)  # held across a turn of the loop, beside the others
            await conn.rollback()
        return int(n)

    after: list[int] = []
    for burst in range(3):
        readers = [asyncio.create_task(read()) for _ in range(30)]
        assert await run_writers(store, store.write, first=burst * 10_000) == []
        await asyncio.gather(*readers)
        after.append(open_files(db))
    # the pool's five connections: the database and its -wal each, one -shm; then no more
    assert after[0] <= 2 * 5 + 1
    assert after == [after[0]] * 3
    assert await count(store, audit_log) == 3 * WRITERS * ROWS


def test_every_write_transaction_of_the_daemon_goes_through_store_write() -> None:
    """A writer on ``engine.begin()`` would skip the lock and could meet the others in SQLite."""
    root = Path(__file__).resolve().parents[2] / "engine"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "store.py" and ".engine.begin()" in path.read_text()
    ]
    assert offenders == []
