"""The CDR store on a real SQLite file and a real PostgreSQL server: migrations, WAL, round trips."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.config import StorageConfig
from engine.storage import StorageError, Store, database_url, head_revision
from engine.storage.schema import (
    admin_objects,
    agent_events,
    audit_log,
    calls,
    metadata,
    queue_events,
    recordings,
    task_events,
    task_messages,
    task_states,
    tasks,
)

EXPECTED_TABLES = {
    "calls",
    "queue_events",
    "agent_events",
    "recordings",
    "audit_log",
    "tasks",
    "task_events",
    "task_messages",
    "task_states",
    "admin_objects",
}
ALL_TABLES = (
    calls, queue_events, agent_events, recordings, audit_log, tasks, task_events, task_messages,
    task_states, admin_objects,
)  # fmt: skip


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
            for table in ALL_TABLES:
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
    assert await store.revision() == head_revision()
    await store.migrate()  # idempotent: a second run at head changes nothing
    assert await store.revision() == head_revision()


async def test_migrated_columns_and_indexes_are_schema_py(store: Store) -> None:
    """The migrations build what schema.py describes (its docstring's promise): every table
    with the same columns, nullability and indexes on both dialects, so a migration and its
    schema.py change cannot drift apart."""

    def inspect(c: sa.Connection) -> dict[str, tuple[set[tuple[str, bool]], set[tuple[str, ...]]]]:
        insp = sa.inspect(c)
        return {
            name: (
                {(col["name"], bool(col["nullable"])) for col in insp.get_columns(name)},
                {tuple(ix["column_names"]) for ix in insp.get_indexes(name)},  # type: ignore[misc]
            )
            for name in metadata.tables
        }

    async with store.engine.connect() as conn:
        got = await conn.run_sync(inspect)
    for name, (columns, indexes) in got.items():
        table = metadata.tables[name]
        assert columns == {(col.name, bool(col.nullable)) for col in table.columns}
        assert indexes == {tuple(col.name for col in ix.columns) for ix in table.indexes}


async def test_task_rows_round_trip_and_external_id_is_unique(store: Store) -> None:
    row = {
        "id": "t-1",
        "external_id": "widget-42",
        "channel": "chat",
        "queue": "support",
        "state": "waiting",
        "priority": 0,
        "customer": {"id": "c9", "name": "Ada", "email": "ada@example.com", "phone": None},
        "data": {"page": "/pricing"},
        "arrived_at": 1_795_000_000.25,
        "enqueued_at": 1_795_000_000.25,
    }
    async with store.engine.begin() as conn:
        await conn.execute(tasks.insert().values(**row))
        await conn.execute(
            task_events.insert().values(task_id="t-1", at=1.0, event="created", actor="widget")
        )
        await conn.execute(
            task_messages.insert().values(task_id="t-1", at=2.0, sender="customer", text="hi")
        )
    async with store.engine.connect() as conn:
        got = (await conn.execute(sa.select(tasks))).mappings().one()
    assert got["customer"]["name"] == "Ada"
    assert got["enqueued_at"] == pytest.approx(1_795_000_000.25)
    with pytest.raises(sa.exc.IntegrityError):
        async with store.engine.begin() as conn:
            await conn.execute(tasks.insert().values(**{**row, "id": "t-2"}))


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
        "csat_score": 4,  # the post-call survey's answer; its second question went unanswered
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
    assert (got["csat_score"], got["csat_second_score"]) == (4, None)
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


def test_migrations_form_one_chain() -> None:
    """Branches that each added a migration must be re-pointed into one line when merged: two
    heads would leave ``upgrade head`` ambiguous. ``head_revision`` names the single head."""
    from alembic.script import ScriptDirectory

    from engine.storage.store import _alembic_config

    script = ScriptDirectory.from_config(_alembic_config())
    assert script.get_heads() == [head_revision()]
    chain = [rev.revision for rev in script.walk_revisions()]
    assert chain[-1] == "0001"
    assert len(chain) == len(set(chain))


async def test_audit_rows_queued_together_are_written_in_one_transaction(store: Store) -> None:
    """insert_audit's group commit: rows queued while one is being written go together in the
    next transaction, in the order queued, and each caller returns with its row on disk; when
    the store fails, every caller of that batch hears it."""
    import asyncio

    from engine.storage.queries import insert_audit

    begins: list[int] = []
    sa.event.listen(store.engine.sync_engine, "begin", lambda _conn: begins.append(1))

    def row(n: int) -> dict[str, object]:
        return {"at": float(n), "actor": f"a{n}", "role": "admin", "action": "test",
                "object_type": None, "object_id": None, "outcome": "allowed",
                "remote_addr": "127.0.0.1", "detail": {"n": n}}  # fmt: skip

    await asyncio.gather(*(insert_audit(store, row(n)) for n in range(6)))
    assert len(begins) == 2  # the first alone, the five queued behind it together
    async with store.engine.connect() as conn:
        actors = (await conn.execute(sa.select(audit_log.c.actor).order_by(audit_log.c.id))).all()
    assert [a for (a,) in actors] == [f"a{n}" for n in range(6)]

    bad = {**row(9), "detail": {"x": object()}}  # not JSON
    outcomes = await asyncio.gather(
        insert_audit(store, row(7)), insert_audit(store, row(8)), insert_audit(store, bad),
        return_exceptions=True,
    )  # fmt: skip
    # the first alone (written), then the other two in one batch that the store refuses
    assert outcomes[0] is None
    assert all(isinstance(o, sa.exc.SQLAlchemyError) for o in outcomes[1:])
