"""The admin API's stored agents and queues (table ``admin_objects``, migration 0014).

How this works: ``load_objects`` reads every row as an ``engine.config.AdminObject`` (the config
layer applies them on top of the file); ``put_objects`` writes some (create, replace, or the
deleted flag) in one transaction. A failing store raises SQLAlchemy's errors to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.config import AdminObject
from engine.storage.schema import admin_objects
from engine.storage.store import Store


async def load_objects(store: Store) -> list[AdminObject]:
    """Every stored object, oldest change first (the order they are applied in)."""
    query = sa.select(admin_objects).order_by(admin_objects.c.updated_at, admin_objects.c.name)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        AdminObject(
            kind=row["kind"], name=row["name"], body=row["body"], deleted=bool(row["deleted"])
        )
        for row in rows
    ]


async def put_objects(
    store: Store, changes: Iterable[tuple[str, str, Mapping[str, Any] | None]], *, by: str
) -> None:
    """Store (or replace) objects, all in one transaction; a ``body`` None marks one deleted."""
    now = time.time()
    async with store.write() as conn:
        for kind, name, body in changes:
            values = {
                "body": None if body is None else dict(body),
                "deleted": body is None,
                "updated_at": now,
                "updated_by": by,
            }
            key = (admin_objects.c.kind == kind) & (admin_objects.c.name == name)
            updated = await conn.execute(sa.update(admin_objects).where(key).values(**values))
            if updated.rowcount == 0:
                await conn.execute(sa.insert(admin_objects).values(kind=kind, name=name, **values))


async def put_object(
    store: Store, kind: str, name: str, body: Mapping[str, Any] | None, *, by: str
) -> None:
    """Store (or replace) one object; ``body`` None marks it deleted."""
    await put_objects(store, [(kind, name, body)], by=by)
