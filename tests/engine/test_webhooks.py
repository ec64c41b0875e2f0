"""Outbound webhooks against a real aiohttp receiver and a real SQLite store (migrated): signed
deliveries, the events filter, retries with backoff then a dead letter, re-sending it, and
nothing lost at shutdown. tests/e2e/test_webhooks_call.py does the same through the daemon.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from engine.config import parse_config
from engine.runtime.events import Event
from engine.storage import Store
from engine.webhooks import WebhookService, signature, verify, webhook_event
from tests.conftest import free_port

SECRET = "s3cret-for-tests-0123"


# -- signing ------------------------------------------------------------------------------------


def test_signature_verifies_and_any_change_fails() -> None:
    body = b'{"id":"1","type":"call.started"}'
    header = signature(SECRET, 1_800_000_000, body)
    assert header.startswith("t=1800000000,v1=")
    assert verify(SECRET, header, body, now=1_800_000_010)
    assert not verify(SECRET, header, body + b" ", now=1_800_000_010)  # body changed
    assert not verify("another-secret-0123", header, body, now=1_800_000_010)
    assert not verify(SECRET, header, body, now=1_800_000_000 + 301)  # too old: a replay
    tampered = header.replace("t=1800000000", "t=1800000300")  # a new time on an old digest
    assert not verify(SECRET, tampered, body, now=1_800_000_300)


@given(st.text(max_size=200), st.binary(max_size=64))
def test_any_header_verifies_false_or_true_never_raises(header: str, body: bytes) -> None:
    assert verify(SECRET, header, body, now=time.time()) in (True, False)


def test_bus_events_map_to_webhook_events() -> None:
    assert webhook_event(Event(type="queue", at=1.0, event="enter", call_id="c")) is None
    kind, data = webhook_event(
        Event(type="queue", at=1.0, event="answer", call_id="c", queue="q", agent_id="a")
    ) or ("", {})
    assert (kind, data) == ("call.answered", {"call_id": "c", "queue": "q", "agent_id": "a"})
    task = Event(type="task", at=1.0, event="accepted", queue="q", agent_id="a",
                 data={"task_id": "t1", "channel": "chat"})  # fmt: skip
    assert webhook_event(task) == (
        "task.assigned",
        {"queue": "q", "agent_id": "a", "task_id": "t1", "channel": "chat"},
    )
    assert webhook_event(Event(type="task", at=1.0, event="message")) is None


# -- delivery -----------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A local aiohttp server answering ``status`` (after ``delay_s``) and keeping what it got."""

    url: str
    status: int = 200
    delay_s: float = 0.0
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    rx = Receiver(f"http://127.0.0.1:{port}/hook")

    async def hook(request: web.Request) -> web.Response:
        rx.got.append((dict(request.headers), await request.read()))
        rx.arrived.set()
        if rx.delay_s:
            await asyncio.sleep(rx.delay_s)
        return web.Response(status=rx.status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield rx
    await runner.cleanup()


async def _wait(predicate, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    st_ = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'acd.sqlite3'}")
    yield st_
    await st_.close()


def _config(*hooks: str) -> object:
    return parse_config("".join(f"[[webhooks]]\n{h}\n" for h in hooks), "t.toml")


@pytest.fixture
async def make_service(store: Store) -> AsyncIterator:  # type: ignore[type-arg]
    started: list[tuple[WebhookService, asyncio.Task[None]]] = []
    http = aiohttp.ClientSession()

    def make(*hooks: str) -> WebhookService:
        service = WebhookService(_config(*hooks), store, http, CollectorRegistry())  # type: ignore[arg-type]
        started.append((service, asyncio.create_task(service.run())))
        return service

    yield make
    for service, task in started:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await service.close()
    await http.close()


def _count(service: WebhookService, outcome: str) -> float:
    return service.metrics.deliveries.labels(outcome=outcome)._value.get()


CALL_DONE = Event(type="call", at=1_800_000_000.5, event="completed", call_id="c1",
                  data={"disposition": "answered", "talk_s": 12.5})  # fmt: skip


async def test_delivery_is_signed_json_with_its_headers(make_service, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    service = make_service(f'url = "{receiver.url}"\nsecret = "{SECRET}"')
    service.consume(CALL_DONE)
    service.consume(Event(type="agent", at=1.0, event="available", agent_id="a1"))  # not carried
    await _wait(lambda: _count(service, "delivered") == 1)
    ((headers, body),) = receiver.got
    assert verify(SECRET, headers["X-Acd-Signature"], body, now=time.time())
    sent = json.loads(body)
    assert sent["type"] == "call.completed"
    assert sent["created_at"] == 1_800_000_000.5
    assert sent["data"] == {"call_id": "c1", "disposition": "answered", "talk_s": 12.5}
    assert headers["X-Acd-Event"] == "call.completed"
    assert headers["X-Acd-Delivery"] == sent["id"]
    assert headers["X-Acd-Attempt"] == "1"
    assert headers["Content-Type"] == "application/json"


async def test_events_filter_and_several_webhooks(make_service, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    service = make_service(
        f'url = "{receiver.url}"\nsecret = "{SECRET}"\nevents = ["call.started"]',
        f'url = "{receiver.url}?all"\nsecret = "{SECRET}"',
    )
    service.consume(Event(type="call", at=1.0, event="started", call_id="c1", data={}))
    service.consume(CALL_DONE)
    await _wait(lambda: _count(service, "delivered") == 3)
    kinds = sorted(h["X-Acd-Event"] for h, _b in receiver.got)
    assert kinds == ["call.completed", "call.started", "call.started"]


async def test_failing_receiver_retries_with_backoff_then_dead_letter_then_retry(
    make_service,
    receiver: Receiver,
    store: Store,  # type: ignore[no-untyped-def]
) -> None:
    receiver.status = 503
    service = make_service(
        f'url = "{receiver.url}"\nsecret = "{SECRET}"\nmax_attempts = 3\nbackoff_s = 0.1'
    )
    service.consume(CALL_DONE)
    await _wait(lambda: _count(service, "dead_lettered") == 1)
    assert [h["X-Acd-Attempt"] for h, _b in receiver.got] == ["1", "2", "3"]
    assert len({h["X-Acd-Delivery"] for h, _b in receiver.got}) == 1  # one delivery, retried
    assert _count(service, "retried") == 2
    letters = []
    for _ in range(100):
        letters = await service.dead_letters()
        if letters:
            break
        await asyncio.sleep(0.02)
    (letter,) = letters
    assert letter.id == receiver.got[0][0]["X-Acd-Delivery"]
    assert (letter.attempts, letter.last_error, letter.delivered_at) == (3, "HTTP 503", None)
    assert letter.event["data"]["call_id"] == "c1"
    # The receiver is fixed: re-sending delivers the same body under the same id.
    receiver.status = 200
    outcome = await service.retry(letter.id)
    assert not isinstance(outcome, str)
    assert outcome.delivered
    assert outcome.dead_letter.attempts == 4
    assert receiver.got[-1][1] == receiver.got[0][1]
    assert receiver.got[-1][0]["X-Acd-Delivery"] == letter.id
    assert await service.retry(letter.id) == "delivered"
    assert await service.retry("nope") == "not_found"
    (after,) = await service.dead_letters()
    assert after.delivered_at is not None


async def test_backoff_doubles(make_service, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    arrivals: list[float] = []
    receiver.status = 500
    service = make_service(
        f'url = "{receiver.url}"\nsecret = "{SECRET}"\nmax_attempts = 3\nbackoff_s = 0.2'
    )
    service.consume(CALL_DONE)
    for _ in range(3):
        await asyncio.wait_for(receiver.arrived.wait(), 5)
        receiver.arrived.clear()
        arrivals.append(time.monotonic())
    first, second = arrivals[1] - arrivals[0], arrivals[2] - arrivals[1]
    assert first == pytest.approx(0.2, abs=0.15)
    assert second == pytest.approx(0.4, abs=0.15)


async def test_unreachable_and_slow_receivers_fail_within_timeout(
    make_service, receiver: Receiver
) -> None:  # type: ignore[no-untyped-def]
    receiver.delay_s = 1.0
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    service = make_service(
        f'url = "{receiver.url}"\nsecret = "{SECRET}"\nmax_attempts = 1\ntimeout_s = 0.2',
        f'url = "{dead}"\nsecret = "{SECRET}"\nmax_attempts = 1',
    )
    began = time.monotonic()
    service.consume(CALL_DONE)
    await _wait(lambda: _count(service, "dead_lettered") == 2)
    assert time.monotonic() - began < 1.5
    letters = []
    for _ in range(100):
        letters = await service.dead_letters()
        if len(letters) == 2:
            break
        await asyncio.sleep(0.02)
    errors = sorted(str(letter.last_error) for letter in letters)
    assert errors[0].startswith("ClientConnectorError")
    assert errors[1] == "no answer within 0.2 s"


async def test_pending_deliveries_are_dead_lettered_at_shutdown(
    store: Store, receiver: Receiver
) -> None:
    receiver.status = 500
    cfg = _config(f'url = "{receiver.url}"\nsecret = "{SECRET}"\nmax_attempts = 5\nbackoff_s = 60')
    async with aiohttp.ClientSession() as http:
        service = WebhookService(cfg, store, http, CollectorRegistry())  # type: ignore[arg-type]
        run = asyncio.create_task(service.run())
        service.consume(CALL_DONE)  # fails once, then waits 60 s for its retry
        await asyncio.wait_for(receiver.arrived.wait(), 5)
        await _wait(lambda: _count(service, "retried") == 1)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        await service.close()
        (letter,) = await service.dead_letters()
    assert letter.attempts == 1
    assert letter.last_error == "HTTP 500 (daemon stopped before the next attempt)"


@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        ('url = "ftp://x"', "webhooks[0].url", "expected an http(s) URL, found 'ftp://x'"),
        ('events = ["call.ended"]', "webhooks[0].events[0]", "expected one of 'call.started'"),
        ('secret = "short"', "webhooks[0].secret", "at least 16 characters, found 5"),
        ("timeout_s = 0", "webhooks[0].timeout_s", "expected a number > 0"),
        ("max_attempts = 0", "webhooks[0].max_attempts", "expected 1 to 100, found 0"),
        ("backoff_s = -1", "webhooks[0].backoff_s", "expected a number >= 0"),
        ("retries = 3", "webhooks[0].retries", "unknown key"),
    ],
)
def test_webhook_config_errors_name_the_key(line: str, key: str, problem: str) -> None:
    from engine.config import ConfigError

    base = {"url": 'url = "http://127.0.0.1:9/h"', "secret": f'secret = "{SECRET}"'}
    name = line.split(" ", 1)[0]
    text = "[[webhooks]]\n" + "\n".join([*(v for k, v in base.items() if k != name), line])
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hooks.toml")
    assert caught.value.key_path == key
    assert problem in caught.value.problem


async def test_dead_letter_writes_are_idempotent(store: Store) -> None:
    """A writer cancelled after its commit but before taking the batch off the backlog leaves
    rows that close() writes again: they are skipped, and the rest of the batch is kept."""
    from engine.webhooks.service import Delivery

    cfg = _config(f'url = "http://127.0.0.1:9/h"\nsecret = "{SECRET}"')
    async with aiohttp.ClientSession() as http:
        service = WebhookService(cfg, store, http, CollectorRegistry())  # type: ignore[arg-type]
        hook = cfg.webhooks[0]  # type: ignore[attr-defined]
        first = Delivery("a" * 32, hook, "call.started", b'{"n":1}', 1.0, 1, "HTTP 500")
        second = Delivery("b" * 32, hook, "call.started", b'{"n":2}', 2.0, 1, "HTTP 500")
        service._dead.append(first)
        await service._write_dead()
        service._dead.extend([first, second])  # first again, as after a cancelled writer
        await service.close()
        letters = await service.dead_letters()
    assert sorted(letter.id for letter in letters) == ["a" * 32, "b" * 32]
