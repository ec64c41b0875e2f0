"""The CDR store: an async SQLAlchemy engine over SQLite (aiosqlite) or PostgreSQL (asyncpg).

How this works: ``Store.open()`` creates the engine, applies alembic migrations up to head inside one
transaction (the migration scripts live in ``migrations/versions``), and from then on the daemon writes
through the table objects of :mod:`engine.storage.schema`. SQLite runs in WAL mode with
``synchronous=NORMAL``: readers (API queries, exports) never block the writer, and a crash loses at
most the last transactions, never the database.

Every write goes through ``Store.write()`` (a transaction, committed on exit). On SQLite those
transactions run one at a time, behind one asyncio lock: SQLite has a single writer per database,
and our writers (CDR rows, tasks, recording index, audit, webhooks, transcripts) each on their
own pooled connection would otherwise wait on each other's file lock inside SQLite, and fail with
"database is locked" when that wait passes ``busy_timeout`` (seen under load). Queued on the
lock they wait in the event loop instead, in order, and SQLite's busy timeout is left for what
we do not control (another process, a checkpoint). Readers (``engine.connect()``) are not
serialised: WAL lets them read beside the writer. PostgreSQL writes concurrently, unlocked.
A SQLite file gets a pool of five connections and no overflow: SQLite keeps the descriptors of a
closed connection open while the process holds others on the file, so overflow connections
opened by a burst were open files for good (3 -> 21 in a soak); a sixth concurrent reader now
waits for a connection instead.

Failures are translated once, here, into :class:`StorageError`; callers count and log them and keep
the call going (a CDR that cannot be written must never drop a live call).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from engine.config import StorageConfig

_MIGRATIONS = Path(__file__).with_name("migrations")
# How long a SQLite writer waits on a lock before failing: long enough to ride out a checkpoint,
# short enough that a stuck database shows up in /readyz instead of hanging calls.
_SQLITE_BUSY_TIMEOUT_MS = 5000
# Connections to one SQLite file at most: one writer at a time and four readers beside it (the
# API's queries, exports, reports), the pool_size SQLAlchemy keeps by default.
_SQLITE_CONNECTIONS = 5


class StorageError(Exception):
    """The database could not be opened, migrated, read or written. The cause is in ``__cause__``."""


def database_url(cfg: StorageConfig, *, base_dir: Path | None = None) -> str:
    """The SQLAlchemy URL for a storage config (SQLite path relative to ``base_dir``)."""
    url = cfg.url
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    path = Path(cfg.sqlite_path)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return f"sqlite+aiosqlite:///{path}"


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision the migrations folder holds: what ``Store.open()`` migrates to."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise StorageError(f"no migrations under {_MIGRATIONS}")
    return head


class Store:
    """Owns the database engine. ``await Store.open(url)``, then read with ``engine.connect()``,
    write in ``async with store.write() as conn``; ``await close()``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite: one write transaction at a time (module docstring); PostgreSQL: none needed
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``engine.begin()``): committed when the block ends, rolled back
        when it raises. On SQLite it waits, in the event loop, for the one before it to end."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Store:
        if url.startswith("sqlite"):
            db_path = url.split(":///", 1)[1] if ":///" in url else ""
            if db_path and db_path != ":memory:":
                try:
                    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StorageError(f"cannot create the directory for {db_path}: {exc}") from exc
        try:
            if url.startswith("sqlite") and ":memory:" not in url and ":///" in url:
                # No overflow connections: SQLite (unix VFS) keeps a closed connection's file
                # descriptor open while another connection of the process holds a lock on the
                # file (every WAL connection does), to be reused by the next open. So each
                # overflow connection a burst opened stayed as an open file for good (a soak: 7
                # -> 21). Five are all one file needs: writes go
                # one at a time (write()) and readers wait for a free connection.
                pool: dict[str, Any] = {"pool_size": _SQLITE_CONNECTIONS, "max_overflow": 0}
            else:
                pool = {"pool_pre_ping": not url.startswith("sqlite")}
            engine = create_async_engine(url, **pool)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(f"invalid database URL: {exc}") from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        store = cls(engine)
        if migrate:
            try:
                await store.migrate()
            except BaseException:
                await engine.dispose()
                raise
        return store

    async def migrate(self) -> None:
        """Apply every pending migration, in one transaction."""

        def upgrade(connection: sa.Connection) -> None:
            cfg = _alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

        try:
            async with self.write() as conn:
                await conn.run_sync(upgrade)
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"migration failed: {exc}") from exc

    async def revision(self) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                row = result.first()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the schema revision: {exc}") from exc
        return None if row is None else str(row[0])

    async def ping(self) -> None:
        """A round trip to the database; raises StorageError when it is unreachable."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"database unreachable: {exc}") from exc

    async def close(self) -> None:
        await self.engine.dispose()
