"""CDR store: SQLite by default (WAL), PostgreSQL when configured; one code path, alembic migrations."""

from engine.storage.store import StorageError, Store, database_url, head_revision

__all__ = ["StorageError", "Store", "database_url", "head_revision"]
