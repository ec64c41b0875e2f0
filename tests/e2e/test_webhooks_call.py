"""Outbound webhooks from the real daemon for a real SIPp call: a caller (SIPp uac) answered by a
static agent (SIPp uas). A local aiohttp receiver (on its own thread) gets call.started,
call.answered and call.completed with valid signatures; a second receiver that answers 503 gets
the completed call twice, then it is in the dead-letter list of the API, and a re-send through
the API reaches it once it answers 200; a third, slower than its timeout_s, is cut off and
dead-lettered after its one attempt. The call itself is held up by none of them. A chat task
created, accepted and completed through the API gives task.created, task.assigned and
task.completed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from engine.webhooks import verify
from tests.conftest import free_port
from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.test_call_scenarios import (
    ADMIN,
    Peers,
    cdr,
    config,
    finished,
    login,
    sipp_output,
    wait_until,
)

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret-0123"


@dataclass
class Receiver:
    """An aiohttp server on a thread of its own; ``status`` per path, what arrived kept."""

    port: int
    status: dict[str, int] = field(
        default_factory=lambda: {"/good": 200, "/bad": 503, "/slow": 200}
    )
    delay_s: dict[str, float] = field(default_factory=lambda: {"/slow": 1.0})
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.got if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(free_port())
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        with rx.lock:
            rx.got.append((request.path, dict(request.headers), body))
        await asyncio.sleep(rx.delay_s.get(request.path, 0.0))
        return web.Response(status=rx.status.get(request.path, 404))

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/{name}", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", rx.port).start()
        runner_box.append(runner)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert started.wait(10)
    yield rx
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _api(
    daemon: DaemonProcess,
    path: str,
    method: str = "GET",
    body: object = None,
    *,
    token: str = ADMIN,
) -> tuple[int, object]:
    data = None if method == "GET" else json.dumps(body or {}).encode()
    request = urllib.request.Request(daemon.base_url + path, method=method, data=data)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _offered(daemon: DaemonProcess, task_id: str) -> bool:
    status, task = _api(daemon, f"/api/v1/tasks/{task_id}")
    return status == 200 and isinstance(task, dict) and "c1" in task["offered_to"]


def _metric(daemon: DaemonProcess, outcome: str) -> float:
    _, body, _ = daemon.get("/metrics")
    prefix = f'acd_webhook_deliveries_total{{outcome="{outcome}"}}'
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    raise AssertionError(f"no {prefix} in /metrics")


def test_call_events_reach_webhooks_failures_dead_letter_and_retry(
    start_daemon: DaemonFactory, tmp_path: Path, receiver: Receiver
) -> None:
    peers = Peers(tmp_path)
    try:
        agent = peers.agent("agent_answer")
        hooks = f"""
[[webhooks]]
url = "{receiver.url("/good")}"
secret = "{SECRET}"

[[webhooks]]
url = "{receiver.url("/bad")}"
secret = "{SECRET}"
events = ["call.completed"]
max_attempts = 2
backoff_s = 0.2

[[webhooks]]
url = "{receiver.url("/slow")}"
secret = "{SECRET}"
events = ["call.started"]
timeout_s = 0.3
max_attempts = 1
"""
        # c1 answers chats only (no voice capacity), with a token of its own
        chat_agent = """
[[agents]]
id = "c1"
login = "static"
contact = "sip:c1@127.0.0.1:9"
skills = { support = 5 }
queues = { support = 0 }
capacity = { chat = 1 }
api_token = "c1-token-0123456789"
"""
        daemon = start_daemon(config({"a1": agent.sip_port}) + chat_agent + hooks)  # type: ignore[attr-defined]
        login(daemon, "a1")
        began = time.monotonic()
        call = peers.caller(daemon, 500)
        assert finished(call, 20) == 0, sipp_output(call)
        assert finished(agent, 10) == 0, sipp_output(agent)
        call_s = time.monotonic() - began
        (row,), _events = cdr(daemon)
        assert row["disposition"] == "answered"

        # The good receiver: the call's three events, signed, about this call.
        wait_until(lambda: len(receiver.received("/good")) >= 3, 10, "three events")
        good = receiver.received("/good")
        now = time.time()
        for headers, body in good:
            assert verify(SECRET, headers["X-Acd-Signature"], body, now=now)
        sent = [json.loads(body) for _h, body in good]
        assert [s["type"] for s in sent] == ["call.started", "call.answered", "call.completed"]
        assert {s["data"]["call_id"] for s in sent} == {row["id"]}
        assert sent[1]["data"]["agent_id"] == "a1"
        assert sent[2]["data"]["disposition"] == "answered"
        assert sent[2]["data"]["talk_s"] == pytest.approx(row["talk_s"])

        # The failing receiver: two attempts of one delivery, then a dead letter in the API.
        wait_until(lambda: _metric(daemon, "dead_lettered") == 2, 10, "two dead letters")
        bad = receiver.received("/bad")
        assert [h["X-Acd-Attempt"] for h, _b in bad] == ["1", "2"]
        delivery = bad[0][0]["X-Acd-Delivery"]
        assert bad[1][0]["X-Acd-Delivery"] == delivery

        def both_listed() -> bool:
            letters = _api(daemon, "/api/v1/webhooks/dead-letters")[1]
            return isinstance(letters, list) and len(letters) == 2

        wait_until(both_listed, 10, "both listed")
        status, letters = _api(daemon, "/api/v1/webhooks/dead-letters")
        assert status == 200
        assert isinstance(letters, list)
        by_url = {entry["url"]: entry for entry in letters}
        # The slow receiver: one attempt (max_attempts = 1), cut off at its timeout_s.
        slow = by_url[receiver.url("/slow")]
        assert (slow["event_type"], slow["attempts"]) == ("call.started", 1)
        assert slow["last_error"] == "no answer within 0.3 s"
        letter = by_url[receiver.url("/bad")]
        assert letter["id"] == delivery
        assert letter["attempts"] == 2
        assert letter["last_error"] == "HTTP 503"
        assert letter["event"]["data"]["call_id"] == row["id"]
        # The failing receiver never held the call up: it ended as scripted (500 ms hold).
        assert call_s < 10

        # Still failing: 502, counted; then fixed: re-sent, delivered, marked.
        status, problem = _api(daemon, f"/api/v1/webhooks/dead-letters/{delivery}/retry", "POST")
        assert status == 502, problem
        assert "HTTP 503" in str(problem)
        receiver.status["/bad"] = 200
        status, outcome = _api(daemon, f"/api/v1/webhooks/dead-letters/{delivery}/retry", "POST")
        assert status == 200, outcome
        assert isinstance(outcome, dict)
        assert outcome["delivered"] is True
        assert outcome["dead_letter"]["attempts"] == 4
        last_headers, last_body = receiver.received("/bad")[-1]
        assert last_headers["X-Acd-Delivery"] == delivery
        assert last_body == bad[0][1]
        assert verify(SECRET, last_headers["X-Acd-Signature"], last_body, now=time.time())
        status, _ = _api(daemon, f"/api/v1/webhooks/dead-letters/{delivery}/retry", "POST")
        assert status == 409
        status, _ = _api(daemon, "/api/v1/webhooks/dead-letters/unknown/retry", "POST")
        assert status == 404

        # A chat's life: created, assigned (c1 accepts the offer), completed.
        login(daemon, "c1")
        status, created = _api(
            daemon, "/api/v1/tasks", "POST", {"channel": "chat", "queue": "support"}
        )
        assert status == 201, created
        assert isinstance(created, dict)
        wait_until(lambda: _offered(daemon, created["id"]), 5, "the chat offered to c1")
        for action, body in (("accept", None), ("complete", {"disposition": "resolved"})):
            status, answer = _api(daemon, f"/api/v1/tasks/{created['id']}/{action}", "POST", body,
                                  token="c1-token-0123456789")  # fmt: skip
            assert status == 200, answer
        wait_until(lambda: len(receiver.received("/good")) >= 6, 10, "the task's three events")
        task_events = [json.loads(b) for _h, b in receiver.received("/good")[3:]]
        assert [e["type"] for e in task_events] == [
            "task.created",
            "task.assigned",
            "task.completed",
        ]
        assert {e["data"]["task_id"] for e in task_events} == {created["id"]}
        assert task_events[1]["data"]["agent_id"] == "c1"
        assert task_events[2]["data"]["disposition"] == "resolved"
        assert (
            _metric(daemon, "delivered") == 7
        )  # three call events, one re-sent, three task events
        assert daemon.stop() == 0
    finally:
        peers.stop_all()
