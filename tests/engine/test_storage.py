"""The CDR store on a real SQLite file and a real PostgreSQL server: migrations, WAL, round trips."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.config import StorageConfig
from engine.storage import StorageError, Store, database_url
from engine.storage.schema import agent_events, audit_log, calls, queue_events, recordings

EXPECTED_TABLES = {"calls", "queue_events", "agent_events", "recordings", "audit_log"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = database_url(StorageConfig(sqlite_path="var/cdr.sqlite3"), base_dir=tmp_path)
    else:
        base = request.getfixturevalue("postgres_url")
        url = database_url(StorageConfig(url=base))
    s = await Store.open(url)
    if (
        s.dialect == "postgresql"
    ):  # one server for the session: start each test from an empty schema
        async with s.engine.begin() as conn:
            for table in (calls, queue_events, agent_events, recordings, audit_log):
                await conn.execute(table.delete())
    yield s
    await s.close()


def test_database_url_forms(tmp_path: Path) -> None:
    assert database_url(StorageConfig(), base_dir=tmp_path) == (
        f"sqlite+aiosqlite:///{tmp_path}/var/acd.sqlite3"
    )
    assert database_url(StorageConfig(url="postgresql://u:p@h/db")) == (
        "postgresql+asyncpg://u:p@h/db"
    )
    assert database_url(StorageConfig(url="postgres://h/db")) == "postgresql+asyncpg://h/db"


async def test_migrations_create_every_table_at_head(store: Store) -> None:
    async with store.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert names >= EXPECTED_TABLES | {"alembic_version"}
    assert await store.revision() == "0005"
    await store.migrate()  # idempotent: a second run at head changes nothing
    assert await store.revision() == "0005"


async def test_cdr_row_round_trip(store: Store) -> None:
    row = {
        "id": "c-1",
        "sip_call_id": "abc@127.0.0.1",
        "trunk": "pbx",
        "caller": "+15551234",
        "queue": "support",
        "agent_id": "1001",
        "arrived_at": 1_795_000_000.123456,
        "ended_at": 1_795_000_060.5,
        "disposition": "answered",
        "wait_s": 12.5,
        "flow_data": {"account": "42", "vip": True},
    }
    async with store.engine.begin() as conn:
        await conn.execute(calls.insert().values(**row))
        await conn.execute(
            queue_events.insert().values(
                at=row["arrived_at"], call_id="c-1", queue="support", event="enter"
            )
        )
    async with store.engine.connect() as conn:
        got = (await conn.execute(sa.select(calls).where(calls.c.id == "c-1"))).mappings().one()
        n_events = (
            await conn.execute(sa.select(sa.func.count()).select_from(queue_events))
        ).scalar()
    assert got["flow_data"] == {"account": "42", "vip": True}
    assert got["arrived_at"] == pytest.approx(1_795_000_000.123456, abs=1e-6)
    assert got["disposition"] == "answered"
    assert n_events == 1


async def test_recordings_index_defaults(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            recordings.insert().values(id="r1", call_id="c1", started_at=1.0, path="/x.wav")
        )
        got = (await conn.execute(sa.select(recordings))).mappings().one()
    assert got["legal_hold"] is False
    assert got["recovered"] is False


async def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.sqlite3"
    s = await Store.open(f"sqlite+aiosqlite:///{path}")
    await s.ping()
    await s.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_unreachable_postgres_is_a_storage_error() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(StorageError, match=r"migration failed|database unreachable"):
        await Store.open("postgresql+asyncpg://acd@127.0.0.1:9/nowhere")


async def test_unwritable_sqlite_location_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError):
        await Store.open(f"sqlite+aiosqlite:///{blocker}/sub/acd.sqlite3")
