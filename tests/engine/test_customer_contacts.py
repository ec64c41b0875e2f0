"""Customer identity across channels: a customer's calls and tasks found by phone, e-mail or CRM
id, on a real SQLite file: the matching rules, the migration that fills the keys of tasks that
existed before it, and the two API routes (who may, what they answer, the audit rows) over real
HTTP with the real task service behind them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from engine.storage import Store
from engine.storage.customers import contacts, customer_keys, normalize_phone
from engine.storage.schema import audit_log, calls, tasks
from engine.storage.store import _alembic_config
from tests.engine.test_api_tasks_lifecycle import AGENT, CRM, OPS, serve, until


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("+1 (555) 010-2000", "+15550102000"),
        ("555.010.2000", "5550102000"),
        ("tel:+15550102000", "+15550102000"),
        ("sip:+15550102000@pbx.example", "+15550102000"),
        ("anonymous", None),
        ("", None),
        (None, None),
    ],
)
def test_phone_numbers_are_their_digits_and_plus(raw: str | None, normal: str | None) -> None:
    assert normalize_phone(raw) == normal


def test_task_keys_from_its_customer() -> None:
    keys = customer_keys({"id": 4711, "email": " Ann@Example.COM ", "phone": "+49 30 1234"})
    assert keys == {"customer_phone": "+49301234", "customer_email": "ann@example.com",
                    "customer_ref": "4711"}  # fmt: skip
    assert customer_keys(None) == dict.fromkeys(keys)


def _call(call_id: str, caller: str, at: float, ended: bool = True) -> dict[str, object]:
    return {"id": call_id, "sip_call_id": f"{call_id}@pbx", "caller": caller, "arrived_at": at,
            "queue": "sales", "agent_id": "1001", "disposition": "answered" if ended else None,
            "talk_s": 30.0 if ended else None, "ended_at": at + 40 if ended else None}  # fmt: skip


def _task(task_id: str, at: float, customer: dict[str, str], channel: str = "email") -> dict[str, object]:  # fmt: skip
    return {"id": task_id, "channel": channel, "queue": "desk", "state": "completed",
            "priority": 0, "arrived_at": at, "enqueued_at": at, "customer": customer,
            "subject": f"about {task_id}", "handle_s": 12.0, **customer_keys(customer)}  # fmt: skip


async def test_contacts_merge_calls_and_tasks_newest_first(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3")
    now = time.time()
    try:
        async with store.engine.begin() as conn:
            await conn.execute(calls.insert(), [
                _call("c-old", "15550102000", now - 500),   # trunk sent it without the +
                _call("c-live", "+15550102000", now - 10, ended=False),
                _call("c-other", "15550109999", now - 20),  # another customer
            ])  # fmt: skip
            await conn.execute(tasks.insert(), [
                _task("t-mail", now - 300, {"email": "Ann@Example.com"}),
                _task("t-chat", now - 100, {"phone": "+1 555 010 2000"}, "chat"),
                _task("t-crm", now - 50, {"id": "crm-7"}, "ticket"),
                _task("t-else", now - 40, {"email": "bob@example.com"}),
            ])  # fmt: skip
        found = await contacts(store, phone="+1-555-010-2000", email="ann@example.com")
        assert [(r["kind"], r["id"], r["channel"]) for r in found] == [
            ("call", "c-live", "voice"), ("task", "t-chat", "chat"),
            ("task", "t-mail", "email"), ("call", "c-old", "voice"),
        ]  # fmt: skip
        assert found[0]["state"] == "live"
        assert found[3]["state"] == "ended"
        assert found[1]["subject"] == "about t-chat"
        assert found[1]["talk_s"] == 12.0
        screen_pop = await contacts(store, phone="15550102000", finished_calls_only=True, limit=2)
        assert [r["id"] for r in screen_pop] == ["t-chat", "c-old"]
        assert [r["id"] for r in await contacts(store, ref="crm-7")] == ["t-crm"]
        assert await contacts(store) == []
    finally:
        await store.close()


async def test_the_migration_fills_the_keys_of_tasks_that_existed(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3", migrate=False)
    try:

        def upgrade(connection: sa.Connection, revision: str) -> None:
            cfg = _alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)

        async with store.engine.begin() as conn:
            await conn.run_sync(upgrade, "0011")
            await conn.execute(sa.text(
                "INSERT INTO tasks (id, channel, queue, state, priority, arrived_at, enqueued_at,"
                " customer) VALUES ('old', 'email', 'desk', 'completed', 0, 1, 1,"
                " '{\"email\": \"Ann@Example.com\", \"phone\": \"+1 555 0102\", \"id\": \"c1\"}')"
            ))  # fmt: skip
        await store.migrate()
        async with store.engine.connect() as conn:
            row = (await conn.execute(sa.select(tasks).where(tasks.c.id == "old"))).mappings().one()
        assert (row["customer_phone"], row["customer_email"], row["customer_ref"]) == (
            "+15550102",
            "ann@example.com",
            "c1",
        )
    finally:
        await store.close()


async def test_api_customer_contacts_and_a_tasks_contacts(tmp_path: Path) -> None:
    async with serve(tmp_path) as a:
        async with a.store.engine.begin() as conn:
            await conn.execute(calls.insert(), [_call("c1", "4930123", time.time() - 900)])
        customer = {"name": "Ann", "email": "ann@example.com", "phone": "+49 30 123"}
        status, first = await a.call("POST", "/tasks", CRM, {
            "channel": "ticket", "queue": "desk", "customer": customer, "subject": "Broken",
        })  # fmt: skip
        assert status == 201
        status, second = await a.call("POST", "/tasks", CRM, {
            "channel": "chat", "queue": "desk", "customer": {"email": "ANN@example.com"},
        })  # fmt: skip
        assert status == 201

        # By the number: the ticket that gave it, the call from it, and the chat known only by
        # the e-mail address the ticket also gave.
        status, rows = await a.call("GET", "/customers/contacts?phone=%2B4930123", OPS)
        assert status == 200
        assert [(r["kind"], r["id"]) for r in rows] == [
            ("task", second["id"]), ("task", first["id"]), ("call", "c1"),
        ]  # fmt: skip
        status, rows = await a.call("GET", "/customers/contacts?email=ann@example.com&limit=1", OPS)
        assert (status, [r["id"] for r in rows]) == (200, [second["id"]])
        assert (await a.call("GET", "/customers/contacts", OPS))[0] == 422
        assert (await a.call("GET", "/customers/contacts?phone=anonymous", OPS))[0] == 422
        assert (await a.call("GET", "/customers/contacts?phone=4930123", AGENT["1001"]))[0] == 403
        assert (await a.call("GET", "/customers/contacts?phone=4930123", CRM))[0] == 403

        # The agent offered the chat sees the customer's other contacts, not the chat itself.
        a.routing.login("1001")
        offered = a.service.get(second["id"])
        assert offered is not None
        await until(lambda: bool(offered.offered_to))
        holder = next(iter(offered.offered_to))
        status, rows = await a.call("GET", f"/tasks/{second['id']}/contacts", AGENT[holder])
        assert status == 200
        assert [(r["kind"], r["id"]) for r in rows] == [("task", first["id"]), ("call", "c1")]
        stranger = next(aid for aid in AGENT if aid != holder)
        status, _ = await a.call("GET", f"/tasks/{second['id']}/contacts", AGENT[stranger])
        assert status == 403

        async with a.store.engine.connect() as conn:
            audited = (await conn.execute(
                sa.select(audit_log.c.actor, audit_log.c.object_type)
                .where(audit_log.c.action == "customer_contacts").order_by(audit_log.c.id)
            )).all()  # fmt: skip
        assert [tuple(r) for r in audited] == [("ops", "customer"), ("ops", "customer"),
                                               (f"agent:{holder}", "task")]  # fmt: skip
