"""Admin API objects on top of the config file: add, replace, delete by name, the same checks
and named-key errors as the file, and their rows on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import AdminObject, ConfigError, StorageConfig, parse_config
from engine.storage import Store, database_url
from engine.storage.admin import load_objects, put_object

BASE = """
[[queues]]
name = "support"

[[agents]]
id = "1001"
password = "x"
skills = { support = 5 }
queues = { support = 0 }
"""


def test_an_agent_and_a_queue_are_added() -> None:
    cfg = parse_config(
        BASE,
        "acd.toml",
        overlay=[
            AdminObject(
                "queue", "sales", {"strategy": "most_skilled", "requirements": {"sales": 2}}
            ),
            AdminObject("agent", "2001", {"password": "p", "queues": {"sales": 1}}),
        ],
    )
    assert [q.name for q in cfg.queues] == ["support", "sales"]
    assert cfg.queues[1].strategy.value == "most_skilled"
    assert cfg.queues[1].requirements == {"sales": 2}
    assert [a.id for a in cfg.agents] == ["1001", "2001"]
    assert cfg.agents[1].queues == {"sales": 1}


def test_a_file_object_is_replaced_whole_and_the_name_wins() -> None:
    cfg = parse_config(
        BASE, "acd.toml", overlay=[AdminObject("agent", "1001", {"id": "9999", "password": "y"})]
    )
    (agent,) = cfg.agents
    assert (agent.id, agent.password, agent.skills, agent.queues) == ("1001", "y", {}, {})


def test_a_deleted_object_hides_the_files() -> None:
    cfg = parse_config(BASE, "acd.toml", overlay=[AdminObject("agent", "1001", None, deleted=True)])
    assert cfg.agents == ()


def test_a_bad_body_fails_with_the_files_named_key() -> None:
    with pytest.raises(ConfigError) as bad_type:
        parse_config(BASE, "acd.toml", overlay=[AdminObject("queue", "q", {"wrap_up_s": "long"})])
    assert bad_type.value.key_path == "queues[1].wrap_up_s"
    with pytest.raises(ConfigError) as unknown_queue:  # validate.py's cross-field check
        parse_config(BASE, "acd.toml", overlay=[AdminObject("agent", "7", {"queues": {"nope": 0}})])
    assert unknown_queue.value.key_path.startswith("agents[1].queues")
    # deleting a queue an agent of the file is a member of: the file's agent now names nothing
    with pytest.raises(ConfigError) as stranded:
        parse_config(BASE, "acd.toml", overlay=[AdminObject("queue", "support", None, True)])
    assert stranded.value.key_path.startswith("agents[0].queues")


async def test_objects_round_trip_through_a_sqlite_file(tmp_path: Path) -> None:
    url = database_url(StorageConfig(sqlite_path="var/acd.sqlite3"), base_dir=tmp_path)
    store = await Store.open(url)
    try:
        await put_object(store, "agent", "2001", {"password": "p"}, by="ops")
        await put_object(store, "queue", "sales", {"wrap_up_s": 5.0}, by="ops")
        await put_object(store, "agent", "2001", {"password": "q"}, by="ops")
        await put_object(store, "queue", "sales", None, by="ops")
        objects = await load_objects(store)
    finally:
        await store.close()
    assert {(o.kind, o.name): (o.body, o.deleted) for o in objects} == {
        ("agent", "2001"): ({"password": "q"}, False),
        ("queue", "sales"): (None, True),
    }
