"""Tasks (chat, email, ...) against the running daemon: one router for calls and tasks, per-channel
capacity, offers on the event stream, reject / offer timeout to the next agent, roles and audit,
and tasks that survive a restart in their order. The voice call is a real SIPp call. A ticket's
lifecycle (pending, the customer's reply back to its agent, solved, closed by itself), its SLA
breach, a scheduled follow-up and SLA due times across a restart ride on the same daemons."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.test_call_scenarios import Peers, finished, peers, sipp_output, wait_until

pytestmark = pytest.mark.e2e
__all__ = ["peers"]  # the fixture, used by the call test

ADMIN = "admin-token-0123456789"
WIDGET = "widget-token-0123456789"  # the chat widget's integration token
TOKENS = {"a1": "agent-a1-token-012345", "b2": "agent-b2-token-012345", "z0": "agent-z0-token-0123"}


# Tickets: a first response due 0.5 s after arrival, a reopened ticket to its last agent for 30 s,
# a solved one closed after 0.5 s.
TICKETS = (
    "sla = { ticket = { first_response_s = 0.5, resolution_s = 3600.0 } }\n"
    "reopen_sticky_s = 30.0\nclose_solved_after_s = 0.5\n"
)


def config(
    agents: dict[str, tuple[int, str]], *, offer_timeout_s: float = 5.0, queue_extra: str = ""
) -> str:
    """Admin and integration tokens, a loopback trunk to `support`, static agents (SIP port,
    capacity) in the support queue with the penalty of their order; ``queue_extra``: more keys
    of the queue."""
    members = "".join(
        f'[[agents]]\nid = "{agent}"\nlogin = "static"\n'
        f'contact = "sip:{agent}@127.0.0.1:{port}"\n'
        f"skills = {{ support = 5 }}\nqueues = {{ support = {i} }}\n"
        f'capacity = {capacity}\napi_token = "{TOKENS[agent]}"\n\n'
        for i, (agent, (port, capacity)) in enumerate(agents.items())
    )
    return f"""
[[api.tokens]]
name = "ops"
role = "admin"
token = "{ADMIN}"

[[api.tokens]]
name = "widget"
role = "integration"
token = "{WIDGET}"

[[trunks]]
name = "callers"
allow = ["127.0.0.0/8"]

[[routes]]
number = "support"
flow = "support"

[[flows]]
name = "support"
steps = [{{ type = "answer" }}, {{ type = "enqueue", queue = "support" }}]

[[queues]]
name = "support"
requirements = {{ support = 1 }}
wrap_up_s = 0.0
offer_timeout_s = {offer_timeout_s}
record = "never"
{queue_extra}
{members}"""


def call(
    daemon: DaemonProcess, method: str, path: str, token: str, body: object = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.base_url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def login(daemon: DaemonProcess, agent: str) -> None:
    status, _ = call(daemon, "PUT", f"/api/v1/agents/{agent}/state", ADMIN, {"state": "logged_in"})
    assert status == 200


def new_chat(daemon: DaemonProcess, **extra: object) -> str:
    status, body = call(
        daemon, "POST", "/api/v1/tasks", WIDGET, {"channel": "chat", "queue": "support", **extra}
    )
    assert status == 201, body
    return str(body["id"])


def offered_to(daemon: DaemonProcess, agent: str) -> list[str]:
    status, rows = call(daemon, "GET", f"/api/v1/tasks?agent={agent}", TOKENS[agent])
    assert status == 200, rows
    return sorted(r["id"] for r in rows if agent in r["offered_to"])


def task(daemon: DaemonProcess, task_id: str) -> dict[str, Any]:
    status, body = call(daemon, "GET", f"/api/v1/tasks/{task_id}", ADMIN)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def test_one_agent_holds_a_call_and_two_chats_never_a_third(
    start_daemon: DaemonFactory, peers: Peers
) -> None:
    phone = peers.agent("agent_answer")
    daemon = start_daemon(
        config({"a1": (phone.sip_port, "{ voice = 1, chat = 2 }")})  # type: ignore[attr-defined]
    )
    login(daemon, "a1")
    chats = [new_chat(daemon) for _ in range(3)]
    caller = peers.caller(daemon, 3000)
    wait_until(lambda: "INVITE sip:" in peers.messages("agent_answer", phone), 5, "a1 rung")
    wait_until(lambda: len(offered_to(daemon, "a1")) == 2, 5, "two chats offered")
    assert offered_to(daemon, "a1") == sorted(chats[:2])  # the oldest two
    for chat in chats[:2]:
        assert call(daemon, "POST", f"/api/v1/tasks/{chat}/accept", TOKENS["a1"])[0] == 200
    time.sleep(0.3)
    third = task(daemon, chats[2])
    assert (third["state"], third["offered_to"]) == ("waiting", [])
    _, agent = call(daemon, "GET", "/api/v1/agents/a1", ADMIN)
    assert agent["state"] == "busy"
    _, (queue,) = call(daemon, "GET", "/api/v1/queues", ADMIN)
    assert queue["waiting"] == 0  # the call is bridged; the chat waiting is no caller
    chat_figures = queue["tasks"]["chat"]
    assert chat_figures["waiting"] == 1
    assert chat_figures["oldest_wait_s"] > 0
    today = chat_figures["today"]
    assert (today["offered"], today["answered"], today["abandoned"]) == (3, 2, 0)
    assert today["service_level"] == 1.0
    assert queue["tasks"]["email"]["today"]["offered"] == 0
    done = {"disposition": "answered", "notes": "sent the link"}
    status, body = call(daemon, "POST", f"/api/v1/tasks/{chats[0]}/complete", TOKENS["a1"], done)
    assert status == 200, body
    assert body["state"] == "completed"
    wait_until(lambda: offered_to(daemon, "a1") == [chats[2]], 5, "the third chat offered")
    assert finished(caller, 20) == 0, sipp_output(caller)
    assert finished(phone, 10) == 0, sipp_output(phone)
    assert daemon.stop() == 0


def test_reject_and_offer_timeout_go_to_the_next_agent_never_to_chat_capacity_0(
    start_daemon: DaemonFactory,
) -> None:
    # z0 comes first by penalty but has no chat capacity; a1 then b2 have one each.
    agents = {"z0": (9, "{ voice = 1, chat = 0 }"), "a1": (9, "{ chat = 1 }"),
              "b2": (9, "{ chat = 1 }")}  # fmt: skip
    daemon = start_daemon(config(agents, offer_timeout_s=1.0))
    for agent in agents:
        login(daemon, agent)
    chat = new_chat(daemon, customer={"id": "c7", "name": "Ada"}, subject="Refund")
    wait_until(lambda: offered_to(daemon, "a1") == [chat], 5, "a1 offered")
    # only the agent offered may accept; an agent may not create tasks
    assert call(daemon, "POST", f"/api/v1/tasks/{chat}/accept", TOKENS["b2"])[0] == 409
    assert call(daemon, "POST", "/api/v1/tasks", TOKENS["a1"], {})[0] == 403
    assert call(daemon, "POST", f"/api/v1/tasks/{chat}/reject", TOKENS["a1"])[0] == 200
    wait_until(lambda: offered_to(daemon, "b2") == [chat], 5, "b2 offered")
    began = time.monotonic()
    wait_until(lambda: task(daemon, chat)["state"] == "waiting", 5, "b2's offer timed out")
    assert 0.5 < time.monotonic() - began < 3.0
    history = task(daemon, chat)["history"]
    assert [(e["event"], e["agent_id"]) for e in history] == [
        ("created", None), ("offered", "a1"), ("rejected", "a1"), ("offered", "b2"),
        ("offer_timeout", "b2"),
    ]  # fmt: skip
    assert history[0]["actor"] == "widget"
    assert history[2]["actor"] == "agent:a1"

    # bad input names the field; the same external_id returns the first task
    for body, field in (
        ({"channel": "fax", "queue": "support"}, "channel"),
        ({"channel": "chat", "queue": "nowhere"}, "queue"),
        ({"channel": "chat"}, "queue"),
        ({"channel": "chat", "queue": "support", "requirements": {"karate": 2}}, "requirements.karate"),
    ):  # fmt: skip
        status, problem = call(daemon, "POST", "/api/v1/tasks", WIDGET, body)
        assert status == 422, problem
        assert field in problem["detail"]
    first = call(daemon, "POST", "/api/v1/tasks", WIDGET,
                 {"channel": "email", "queue": "support", "external_id": "mail-77"})  # fmt: skip
    again = call(daemon, "POST", "/api/v1/tasks", WIDGET,
                 {"channel": "email", "queue": "support", "external_id": "mail-77"})  # fmt: skip
    assert (first[0], again[0]) == (201, 200)
    assert again[1]["id"] == first[1]["id"]
    assert again[1]["created"] is False

    # the integration role reaches the tasks only
    for path in ("/api/v1/cdr", "/api/v1/recordings", "/api/v1/calls", "/api/v1/agents"):
        assert call(daemon, "GET", path, WIDGET)[0] == 403, path
    _, metrics, _ = daemon.get("/metrics")
    text = metrics.decode()
    assert 'acd_task_offers_total{channel="chat",outcome="rejected"} 1.0' in text
    assert 'acd_task_offers_total{channel="chat",outcome="timeout"} 1.0' in text
    assert 'acd_queue_waiting_tasks{channel="chat",queue="support"} 1.0' in text
    assert 'acd_queue_waiting_calls{queue="support"} 0.0' in text  # a chat is not a caller
    promtool = shutil.which("promtool")
    if promtool:  # the exposition passes Prometheus' own lint
        lint = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True,
                              timeout=30, check=False)  # fmt: skip
        assert b"acd_task" not in lint.stdout + lint.stderr, lint
    assert daemon.stop() == 0
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        audited = db.execute(
            "SELECT actor, action, outcome FROM audit_log WHERE object_type = 'task' OR "
            "action LIKE 'task.%' ORDER BY id"
        ).fetchall()
    assert ("widget", "task.create", "allowed") in audited
    assert ("agent:a1", "task.reject", "allowed") in audited
    assert ("agent:b2", "task.accept", "refused") in audited
    assert ("agent:a1", "task.create", "denied") in audited
    assert ("widget", "task.create", "replayed") in audited


async def test_offers_and_messages_on_the_event_stream_and_a_tickets_life(
    start_daemon: DaemonFactory,
) -> None:
    import aiohttp

    agents = {"a1": (9, "{ chat = 1, ticket = 1 }"), "b2": (9, "{ ticket = 1 }")}
    daemon = start_daemon(config(agents, queue_extra=TICKETS))
    url = daemon.base_url.replace("http", "ws") + "/api/v1/events"

    async def next_task_event(
        ws: aiohttp.ClientWebSocketResponse, event: str, sender: str | None = None
    ) -> dict[str, Any]:
        while True:
            msg = await ws.receive_json(timeout=5)
            wanted = sender is None or msg.get("data", {}).get("sender") == sender
            if msg.get("type") == "task" and msg["event"] == event and wanted:
                return msg  # type: ignore[no-any-return]

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as agent_ws,
        session.ws_connect(url) as widget_ws,
    ):
        await agent_ws.send_json({"type": "auth", "token": TOKENS["a1"]})
        await widget_ws.send_json({"type": "auth", "token": WIDGET})
        assert (await agent_ws.receive_json(timeout=5))["principal"] == "agent:a1"
        assert (await widget_ws.receive_json(timeout=5))["principal"] == "widget"
        await asyncio.to_thread(login, daemon, "a1")
        chat = await asyncio.to_thread(new_chat, daemon, subject="Where is my parcel?")
        offer = await next_task_event(agent_ws, "offered")
        assert offer["agent_id"] == "a1"
        assert offer["data"]["task_id"] == chat
        assert offer["data"]["subject"] == "Where is my parcel?"
        assert offer["data"]["offer_timeout_s"] == 5.0
        accepted = await asyncio.to_thread(
            call, daemon, "POST", f"/api/v1/tasks/{chat}/accept", TOKENS["a1"]
        )
        assert accepted[0] == 200
        said = await asyncio.to_thread(
            call, daemon, "POST", f"/api/v1/tasks/{chat}/messages", WIDGET, {"text": "hello?"}
        )
        assert said[0] == 201
        heard = await next_task_event(agent_ws, "message")
        assert (heard["data"]["sender"], heard["data"]["text"]) == ("customer", "hello?")
        reply = {"text": "It ships today"}
        said = await asyncio.to_thread(
            call, daemon, "POST", f"/api/v1/tasks/{chat}/messages", TOKENS["a1"], reply
        )
        assert said[0] == 201
        heard = await next_task_event(widget_ws, "message", sender="agent")
        assert (heard["data"]["sender"], heard["data"]["text"]) == ("agent", "It ships today")
        done = await asyncio.to_thread(
            call, daemon, "POST", f"/api/v1/tasks/{chat}/complete", TOKENS["a1"],
            {"disposition": "resolved"},
        )  # fmt: skip
        assert done[0] == 200
        assert (await next_task_event(widget_ws, "completed"))["data"]["task_id"] == chat

        # A ticket: a1 (penalty 0) passes it on, b2 takes it and answers late (SLA breach), asks
        # the customer (pending: b2's ticket capacity is free again); the customer's reply brings
        # it back to b2 alone although a1 is free and first by penalty (sticky); b2 solves it, and
        # it closes by itself.
        await asyncio.to_thread(login, daemon, "b2")
        status, made = await asyncio.to_thread(
            call, daemon, "POST", "/api/v1/tasks", WIDGET,
            {"channel": "ticket", "queue": "support", "subject": "Broken kettle"},
        )  # fmt: skip
        assert status == 201
        ticket = made["id"]
        assert (await next_task_event(agent_ws, "offered"))["data"]["task_id"] == ticket
        status, _ = await asyncio.to_thread(
            call, daemon, "POST", f"/api/v1/tasks/{ticket}/reject", TOKENS["a1"]
        )
        assert status == 200
        await asyncio.to_thread(
            wait_until, lambda: offered_to(daemon, "b2") == [ticket], 5, "b2 offered the ticket"
        )
        status, _ = await asyncio.to_thread(
            call, daemon, "POST", f"/api/v1/tasks/{ticket}/accept", TOKENS["b2"]
        )
        assert status == 200
        breach = await next_task_event(widget_ws, "sla_breached")
        assert (breach["data"]["task_id"], breach["data"]["kind"]) == (ticket, "first_response")
        status, view = await asyncio.to_thread(
            call, daemon, "PATCH", f"/api/v1/tasks/{ticket}", TOKENS["b2"], {"state": "pending"}
        )
        assert (status, view["state"], view["first_response_breached"]) == (200, "pending", True)
        assert (await next_task_event(widget_ws, "pending"))["data"]["task_id"] == ticket
        status, late = await asyncio.to_thread(
            call, daemon, "GET", "/api/v1/tasks?breached=any", ADMIN
        )
        assert (status, [r["id"] for r in late]) == (200, [ticket])
        status, refused = await asyncio.to_thread(
            call, daemon, "PATCH", f"/api/v1/tasks/{ticket}", TOKENS["b2"], {"state": "closed"}
        )
        assert (status, refused["allowed"]) == (409, ["open", "solved"])
        said = await asyncio.to_thread(
            call, daemon, "POST", f"/api/v1/tasks/{ticket}/messages", WIDGET,
            {"text": "It still leaks"},
        )  # fmt: skip
        assert said[0] == 201
        await asyncio.to_thread(
            wait_until, lambda: offered_to(daemon, "b2") == [ticket], 5, "b2 offered it again"
        )
        assert await asyncio.to_thread(offered_to, daemon, "a1") == []
        for action, body in (("accept", None), ("complete", {"disposition": "replaced"})):
            status, view = await asyncio.to_thread(
                call, daemon, "POST", f"/api/v1/tasks/{ticket}/{action}", TOKENS["b2"], body
            )
            assert status == 200, view
        assert (view["state"], view["status"]) == ("solved", "solved")
        closed = await next_task_event(widget_ws, "closed")  # close_solved_after_s = 0.5
        assert (closed["data"]["task_id"], closed["data"]["reason"]) == (ticket, "solved_timeout")
    _, metrics, _ = await asyncio.to_thread(daemon.get, "/metrics")
    text = metrics.decode()
    line = 'acd_task_sla_breaches_total{channel="ticket",kind="first_response",queue="support"} 1.0'
    assert line in text
    assert 'acd_task_state_changes_total{channel="ticket",state="pending"} 1.0' in text
    assert 'acd_tasks_total{channel="ticket",outcome="closed"} 1.0' in text

    def closed_and_breached(kind: str) -> list[str]:  # from the store
        status, rows = call(daemon, "GET", f"/api/v1/tasks?state=closed&breached={kind}", ADMIN)
        assert status == 200, rows
        return [r["id"] for r in rows]

    # The timer's close is published as it happens and written behind it: wait for the row.
    await asyncio.to_thread(
        wait_until, lambda: closed_and_breached("first_response") == [ticket], 5, "the closed row"
    )
    assert await asyncio.to_thread(closed_and_breached, "resolution") == []
    lived = await asyncio.to_thread(task, daemon, ticket)
    assert [e["event"] for e in lived["history"]] == [
        "created", "offered", "rejected", "offered", "accepted", "sla_breached", "pending",
        "customer_replied", "offered", "accepted", "solved", "closed",
    ]  # fmt: skip
    stored = await asyncio.to_thread(task, daemon, chat)  # from the store, once completed
    assert stored["state"] == "completed"
    assert stored["disposition"] == "resolved"
    assert [m["sender"] for m in stored["messages"]] == ["customer", "agent"]
    assert [e["event"] for e in stored["history"]] == [
        "created",
        "offered",
        "accepted",
        "completed",
    ]
    assert daemon.stop() == 0
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        moves = db.execute(
            "SELECT from_state, to_state FROM task_states WHERE task_id = ? ORDER BY id", (ticket,)
        ).fetchall()
        held = db.execute(
            "SELECT agent_id, state, reason FROM agent_events WHERE channel = 'ticket' ORDER BY id"
        ).fetchall()
    assert moves[-4:] == [
        ("waiting", "offered"), ("offered", "assigned"), ("assigned", "solved"),
        ("solved", "closed"),
    ]  # fmt: skip
    assert held == [
        ("a1", "task_offered", None), ("a1", "task_ended", "rejected"),
        ("b2", "task_offered", None), ("b2", "task_accepted", None),
        ("b2", "task_ended", "released"), ("b2", "task_offered", None),
        ("b2", "task_accepted", None), ("b2", "task_ended", "released"),
    ]  # fmt: skip


def test_runtime_max_tasks_sizes_the_router_a_create_beyond_it_answers_503(
    start_daemon: DaemonFactory,
) -> None:
    daemon = start_daemon(config({"a1": (9, "{ chat = 1 }")}) + "\n[runtime]\nmax_tasks = 2\n")
    made = [new_chat(daemon), new_chat(daemon)]
    status, refused = call(
        daemon, "POST", "/api/v1/tasks", WIDGET, {"channel": "chat", "queue": "support"}
    )
    assert status == 503, refused
    assert "max_tasks=2" in refused["detail"]
    status, rows = call(daemon, "GET", "/api/v1/tasks?state=waiting", ADMIN)
    assert sorted(r["id"] for r in rows) == sorted(made)  # nothing kept of the refused one
    cancel = {"state": "cancelled"}
    assert call(daemon, "PATCH", f"/api/v1/tasks/{made[0]}", WIDGET, cancel)[0] == 200
    new_chat(daemon)  # a slot is free again
    assert daemon.stop() == 0


def test_waiting_tasks_come_back_in_order_after_a_restart(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    storage = f'sqlite_path = "{tmp_path / "shared.sqlite3"}"'
    sla = TICKETS.replace("first_response_s = 0.5", "first_response_s = 2.0")
    text = config({"a1": (9, "{ chat = 1 }")}, queue_extra=sla)  # no ticket capacity
    first = start_daemon(text, storage=storage)
    chats = [new_chat(first, subject=f"chat {i}") for i in range(3)]
    before = {c: task(first, c)["enqueued_at"] for c in chats}

    def follow_up(daemon: DaemonProcess, in_s: float) -> tuple[str, float]:
        status, made = call(
            daemon, "POST", "/api/v1/tasks", WIDGET,
            {"channel": "ticket", "queue": "support", "not_before": time.time() + in_s},
        )  # fmt: skip
        assert (status, made["state"]) == (201, "scheduled")
        return str(made["id"]), float(task(daemon, made["id"])["not_before"])

    # Follow-ups: one due at once, one due while the daemon is down, one in an hour; and a
    # ticket whose first response falls due while the daemon is down.
    (soon, _), (down, down_at), (later, _) = (
        follow_up(first, 0.2),
        follow_up(first, 2.0),
        follow_up(first, 3600),
    )
    wait_until(lambda: task(first, soon)["state"] == "waiting", 5, "a follow-up due")
    assert task(first, later)["state"] == "scheduled"
    ticket = call(first, "POST", "/api/v1/tasks", WIDGET, {"channel": "ticket", "queue": "support"})
    assert ticket[0] == 201
    due = task(first, ticket[1]["id"])["first_response_due_at"]
    assert first.stop() == 0
    time.sleep(max(0.0, due - time.time(), down_at - time.time()))

    second = start_daemon(text, storage=storage)
    status, rows = call(second, "GET", "/api/v1/tasks?state=waiting&channel=chat", ADMIN)
    assert status == 200
    assert {r["id"]: r["enqueued_at"] for r in rows} == before
    late = task(second, ticket[1]["id"])
    assert (late["first_response_due_at"], late["first_response_breached"]) == (due, True)
    assert late["history"][-1]["event"] == "sla_breached"
    assert late["history"][-1]["data"] == {
        "kind": "first_response", "due_at": due, "during_downtime": True,
    }  # fmt: skip
    wait_until(lambda: task(second, down)["state"] == "waiting", 5, "the follow-up due meanwhile")
    assert task(second, later)["state"] == "scheduled"  # still waiting for its time
    login(second, "a1")
    served = []
    for _ in chats:
        wait_until(lambda: len(offered_to(second, "a1")) == 1, 5, "a1 offered the next chat")
        (chat,) = offered_to(second, "a1")
        served.append(chat)
        for action, body in (("accept", None), ("complete", {"disposition": "done"})):
            status, _ = call(second, "POST", f"/api/v1/tasks/{chat}/{action}", TOKENS["a1"], body)
            assert status == 200
    assert served == chats  # oldest first, as before the restart
    assert task(second, chats[0])["history"][1]["event"] == "requeued_after_restart"
    assert second.stop() == 0
