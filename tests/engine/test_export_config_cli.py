"""`acd export config`: the file with the stored admin objects on top, as TOML that `acd
check-config` accepts and that, read as the file with an empty store, is the same config."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.cli.main import main
from engine.config import Config, StorageConfig
from engine.plugins import load_config
from engine.storage import Store, database_url
from engine.storage.admin import load_objects, put_object


def _config(tmp_path: Path, db: str) -> Path:
    path = tmp_path / "acd.toml"
    path.write_text(
        f"""
[storage]
sqlite_path = "{tmp_path / db}"

[[queues]]
name = "support"
requirements = {{ support = 1 }}

[[agents]]
id = "1001"
password = "x"
skills = {{ support = 5 }}
queues = {{ support = 0 }}

[[agents]]
id = "1002"
password = "y"
""",
        encoding="utf-8",
    )
    return path


async def _store_objects(path: Path) -> None:
    config, _ = load_config(path)
    store = await Store.open(database_url(config.storage, base_dir=path.parent))
    try:
        await put_object(store, "queue", "sales", {"strategy": "most_skilled"}, by="t")
        await put_object(store, "agent", "2001", {"password": "p", "queues": {"sales": 2}}, by="t")
        await put_object(store, "agent", "1002", None, by="t")
        await put_object(
            store, "agent", "1001", {"password": "z", "skills": {"support": 9}}, by="t"
        )
    finally:
        await store.close()


async def _objects(path: Path) -> int:
    config, _ = load_config(path)
    store = await Store.open(database_url(config.storage, base_dir=path.parent))
    try:
        return len(await load_objects(store))
    finally:
        await store.close()


def test_export_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    path = _config(tmp_path, "acd.sqlite3")
    asyncio.run(_store_objects(path))
    out = tmp_path / "export.toml"
    assert main(["export", "config", "--config", str(path), "-o", str(out)]) == 0
    assert main(["check-config", str(out)]) == 0
    capsys.readouterr()

    stored = asyncio.run(_load_overlay(path))
    # the export, read as a file over a fresh (empty) store, is the same effective config
    text = out.read_text(encoding="utf-8").replace(
        str(tmp_path / "acd.sqlite3"), str(tmp_path / "e.sqlite3")
    )
    out.write_text(text, encoding="utf-8")
    exported, _ = load_config(out)
    assert asyncio.run(_objects(out)) == 0
    same = msgspec.structs.replace(
        exported,
        source=stored.source,
        storage=StorageConfig(sqlite_path=stored.storage.sqlite_path),
    )
    assert same == stored
    assert [a.id for a in stored.agents] == ["1001", "2001"]
    assert stored.agents[0].password == "z"
    assert [q.name for q in stored.queues] == ["support", "sales"]


async def _load_overlay(path: Path) -> Config:
    config, _ = load_config(path)
    store = await Store.open(database_url(config.storage, base_dir=path.parent))
    try:
        objects = await load_objects(store)
    finally:
        await store.close()
    return load_config(path, overlay=objects)[0]
