"""The tasks API's state changes over real HTTP: PATCH and POST .../transitions, who may, 409 with
the allowed states, 422 for a state nobody may ask for, SLA fields and ``not_before`` in the
listing, and the audit rows. Real task service, routing service and SQLite store behind it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web

from engine import api
from engine.api.app import make_app
from engine.config import parse_config
from engine.routing.service import RoutingService
from engine.runtime.metrics import Metrics
from engine.storage import Store
from engine.storage.schema import audit_log, tasks
from engine.storage.tasks import TaskWriter
from engine.tasks import TaskService
from tests.conftest import free_port

CRM = "crm-integration-token-0123"
OPS = "ops-supervisor-token-0123"
AGENT = {"1001": "agent-1001-token-lifecycle", "1002": "agent-1002-token-lifecycle"}
CONFIG = f"""
[[api.tokens]]
name = "crm"
role = "integration"
token = "{CRM}"

[[api.tokens]]
name = "ops"
role = "supervisor"
token = "{OPS}"

[[queues]]
name = "desk"
wrap_up_s = 0.0
sla = {{ ticket = {{ first_response_s = 900.0, resolution_s = 7200.0 }} }}

[[agents]]
id = "1001"
queues = {{ desk = 0 }}
capacity = {{ ticket = 3, chat = 1 }}
api_token = "{AGENT["1001"]}"

[[agents]]
id = "1002"
queues = {{ desk = 1 }}
capacity = {{ ticket = 3 }}
api_token = "{AGENT["1002"]}"
"""


@dataclass
class Api:
    http: aiohttp.ClientSession
    base: str
    service: TaskService
    routing: RoutingService
    store: Store

    async def call(
        self, method: str, path: str, token: str, body: object = None
    ) -> tuple[int, Any]:
        async with self.http.request(
            method, self.base + path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            return r.status, await r.json()


async def until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, *, max_tasks: int = 8192) -> AsyncIterator[Api]:
    config = parse_config(CONFIG, "test.toml")
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3")
    routing = RoutingService(config, loop=asyncio.get_running_loop(), max_tasks=max_tasks)
    writer = TaskWriter(store)
    writes = asyncio.create_task(writer.run())
    service = TaskService(config, routing, writer=writer)
    routing.connect(
        on_offer=lambda _: None,
        on_withdraw=lambda _: None,
        channels={ch: service.handlers() for ch in ("chat", "email", "social", "ticket")},
    )
    tokens = api.TokenTable()
    app = make_app(Metrics(), {}, middlewares=(api.make_auth_middleware(tokens),))
    app[api.TOKENS_KEY] = tokens
    ctx = api.ApiContext(
        get_config=lambda: config, reload=lambda: False, routing=routing, store=store, tasks=service
    )
    api.add_routes(app, ctx)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(http, f"http://127.0.0.1:{port}/api/v1", service, routing, store)
    finally:
        await runner.cleanup()
        service.close()
        routing.close()
        await writer.close()
        await writes
        await store.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Api]:
    async with serve(tmp_path) as a:
        yield a


async def test_a_full_router_answers_503_and_keeps_nothing_of_the_refused_task(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, max_tasks=2) as a:
        made = [
            await a.call("POST", "/tasks", CRM, {"channel": "ticket", "queue": "desk"})
            for _ in range(3)
        ]
        assert [status for status, _ in made] == [201, 201, 503]
        assert "retry later" in made[2][1]["detail"]
        assert sorted(a.service.tasks) == sorted(body["id"] for _, body in made[:2])
        assert a.routing.router.waiting("desk") == 2
        async with a.store.engine.connect() as conn:
            stored = (await conn.execute(sa.select(sa.func.count()).select_from(tasks))).scalar()
            refused = (
                (
                    await conn.execute(
                        sa.select(audit_log.c.outcome).where(audit_log.c.action == "task.create")
                    )
                )
                .scalars()
                .all()
            )
        assert stored == 2
        assert sorted(refused) == ["allowed", "allowed", "refused"]
        # once one ended, the next create is taken again
        await a.service.cancel(made[0][1]["id"], by="test")
        status, _ = await a.call("POST", "/tasks", CRM, {"channel": "ticket", "queue": "desk"})
        assert status == 201


async def test_state_changes_through_patch_and_transitions(served: Api) -> None:
    a = served
    status, made = await a.call("POST", "/tasks", CRM, {"channel": "ticket", "queue": "desk"})
    assert status == 201
    tid = made["id"]
    status, view = await a.call("GET", f"/tasks/{tid}", OPS)
    assert (view["status"], view["state"]) == ("new", "waiting")
    assert view["first_response_due_at"] == pytest.approx(view["arrived_at"] + 900)
    assert view["resolution_due_at"] == pytest.approx(view["arrived_at"] + 7200)
    assert (view["first_response_breached"], view["resolution_breached"]) == (False, False)

    status, refused = await a.call("PATCH", f"/tasks/{tid}", CRM, {"state": "solved"})
    assert status == 409
    assert refused["allowed"] == ["cancelled"]
    assert "waiting" in refused["detail"]
    status, problem = await a.call("PATCH", f"/tasks/{tid}", CRM, {"state": "on_hold"})
    assert status == 422
    assert "state" in problem["detail"]

    a.routing.login("1001")
    await until(lambda: "1001" in a.service.tasks[tid].offered_to)
    assert (await a.call("POST", f"/tasks/{tid}/accept", AGENT["1001"]))[0] == 200
    # 1002 does not hold it; 1001 does
    status, _ = await a.call("PATCH", f"/tasks/{tid}", AGENT["1002"], {"state": "pending"})
    assert status == 403
    status, view = await a.call("PATCH", f"/tasks/{tid}", AGENT["1001"], {"state": "pending"})
    assert status == 200, view
    assert (view["state"], view["status"], view["agent_id"]) == ("pending", "pending", "1001")
    assert view["sla_paused_at"] is not None
    assert view["first_response_at"] is not None
    assert a.routing.agent_load("1001")["ticket"] == (3, 0)

    # the agent who last held it hands it to another department with a note; 1002 may not
    status, _ = await a.call(
        "POST", f"/tasks/{tid}/transfer", AGENT["1002"], {"queue": "desk", "note": "x"}
    )
    assert status == 403
    status, moved = await a.call(
        "POST", f"/tasks/{tid}/transfer", AGENT["1001"], {"queue": "desk", "note": "spares"}
    )
    assert (status, moved["state"], moved["history"][-1]["data"]["note"]) == (
        200,
        "pending",
        "spares",
    )
    status, listed = await a.call("GET", "/tasks?state=pending", OPS)
    assert [(r["id"], r["status"]) for r in listed] == [(tid, "pending")]
    assert listed[0]["resolution_due_at"] == view["resolution_due_at"]

    # the customer's reply, through the integration: open again, to 1001 first
    status, _ = await a.call("POST", f"/tasks/{tid}/messages", CRM, {"text": "photo attached"})
    assert status == 201
    await until(lambda: a.service.tasks[tid].offered_to == {"1001"})
    assert (await a.call("POST", f"/tasks/{tid}/accept", AGENT["1001"]))[0] == 200
    status, view = await a.call(
        "POST", f"/tasks/{tid}/transitions", AGENT["1001"],
        {"state": "solved", "disposition": "replaced", "notes": "new unit sent"},
    )  # fmt: skip
    assert status == 200, view
    assert (view["state"], view["disposition"], view["notes"]) == (
        "solved",
        "replaced",
        "new unit sent",
    )
    status, refused = await a.call("POST", f"/tasks/{tid}/transitions", CRM, {"state": "pending"})
    assert (status, refused["allowed"]) == (409, ["open", "closed"])
    status, view = await a.call("PATCH", f"/tasks/{tid}", OPS, {"state": "closed"})
    assert (status, view["state"], view["status"]) == (200, "closed", "closed")
    status, refused = await a.call("PATCH", f"/tasks/{tid}", OPS, {"state": "open"})
    assert (status, refused["allowed"]) == (409, [])
    status, stored = await a.call("GET", f"/tasks/{tid}", OPS)
    assert [e["event"] for e in stored["history"]][-3:] == ["accepted", "solved", "closed"]
    status, closed = await a.call("GET", "/tasks?state=closed", OPS)
    assert [(r["id"], r["status"]) for r in closed] == [(tid, "closed")]

    async with a.store.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(audit_log.c.actor, audit_log.c.outcome)
                .where(audit_log.c.action == "task.state")
                .order_by(audit_log.c.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("crm", "refused"), ("crm", "refused"), ("agent:1002", "denied"), ("agent:1001", "allowed"),
        ("agent:1001", "allowed"), ("crm", "refused"), ("ops", "allowed"), ("ops", "refused"),
    ]  # fmt: skip


async def test_not_before_schedules_the_task(served: Api) -> None:
    a = served
    a.routing.login("1001")
    when = time.time() + 3600
    status, made = await a.call(
        "POST", "/tasks", CRM,
        {"channel": "ticket", "queue": "desk", "subject": "check-in", "not_before": when},
    )  # fmt: skip
    assert status == 201
    assert made["state"] == "scheduled"
    status, listed = await a.call("GET", "/tasks?state=scheduled", OPS)
    assert [(r["id"], r["not_before"]) for r in listed] == [(made["id"], pytest.approx(when))]
    await asyncio.sleep(0.05)
    assert a.service.tasks[made["id"]].offered_to == set()
    status, problem = await a.call(
        "POST", "/tasks", CRM, {"channel": "ticket", "queue": "desk", "not_before": -1}
    )
    assert status == 422
    assert "not_before" in problem["detail"]
    # an agent may not cancel; the integration may
    status, _ = await a.call("PATCH", f"/tasks/{made['id']}", AGENT["1001"], {"state": "cancelled"})
    assert status == 403
    status, view = await a.call("PATCH", f"/tasks/{made['id']}", CRM, {"state": "cancelled"})
    assert (status, view["state"]) == (200, "cancelled")
