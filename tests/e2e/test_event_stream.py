"""The live event stream (``/api/v1/events``) lets go at once: of a client that left, and at shutdown.

A stream handler used to sit in the bus's queue until the next event, so a closed page kept its
handler (and subscription) alive, and SIGTERM waited ``http.shutdown_timeout_s`` for it. Checked here:
SIGTERM with an authenticated client connected ends the real daemon well inside that time and the
client is told 1001 (going away); a client that closes, politely or by dropping TCP, has its
subscription gone within a moment although no event is published meanwhile; a client that falls
behind is still cut off with 4008.

The second test runs the daemon in the test process (``Daemon(config).run()``, what ``acd run``
builds) because the subscriber count is the bus's own figure, not exposed over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.daemon import Daemon
from engine.runtime.events import SUBSCRIBER_QUEUE_EVENTS, Event, EventBus
from tests.e2e.conftest import DaemonFactory, in_process_daemon

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-event-stream-0123"
AGENT = "agent-1001-token-event-stream"
EXTRA = f"""
[[api.tokens]]
name = "ops"
role = "admin"
token = "{ADMIN}"

[[queues]]
name = "support"

[[agents]]
id = "1001"
name = "Alice"
queues = {{ support = 0 }}
api_token = "{AGENT}"
"""


async def _authenticated(
    http: aiohttp.ClientSession, url: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url)
    await ws.send_json({"type": "auth", "token": token})  # how the pages authenticate
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello", hello
    return ws


async def test_sigterm_closes_open_streams_with_going_away_promptly(
    start_daemon: DaemonFactory,
) -> None:
    daemon = start_daemon(EXTRA)
    url = daemon.base_url.replace("http", "ws") + "/api/v1/events"
    async with aiohttp.ClientSession() as http:
        admin = await _authenticated(http, url, ADMIN)
        agent = await _authenticated(http, url, AGENT)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        for ws in (admin, agent):
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE, msg
            assert ws.close_code == 1001, ws.close_code  # going away
            assert msg.extra == "server shutting down"
        code = await asyncio.to_thread(daemon.proc.wait, 10)
        elapsed = time.monotonic() - started
    assert code == 0, daemon.log_path.read_text()[-2000:]
    # http.shutdown_timeout_s is 5 s: a handler that held on would have cost all of it.
    assert elapsed < 2.5, elapsed
    assert any(line.get("event") == "stopped" for line in daemon.log_lines())


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, str]]:
    async with in_process_daemon(tmp_path, EXTRA) as running:
        yield running


async def _raw_stream(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client by hand (RFC 6455), so that it can vanish without a close frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /api/v1/events HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "auth", "token": token}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    writer.write(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)  # FIN, text
    first, length = struct.unpack("!BB", await asyncio.wait_for(reader.readexactly(2), 5))
    assert first == 0x81  # FIN, text
    assert length < 126
    hello = json.loads(await reader.readexactly(length))
    assert hello["type"] == "hello", hello
    return reader, writer


async def _until(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())  # type: ignore[operator]


async def test_a_client_that_leaves_leaves_no_subscriber_behind(
    daemon: tuple[Daemon, str],
) -> None:
    d, base = daemon
    bus = d.api.bus
    assert bus is not None
    url = base.replace("http", "ws") + "/api/v1/events"
    published = bus.published
    async with aiohttp.ClientSession() as http:
        polite = await _authenticated(http, url, ADMIN)
        _reader, rude = await _raw_stream(int(base.rsplit(":", 1)[1]), AGENT)
        assert bus.subscribers == 2
        await polite.close()  # a page closed normally: close frame, then TCP close
        assert await _until(lambda: bus.subscribers == 1, 1.0), bus.subscribers
        rude.close()  # a browser killed, a laptop lid shut: TCP goes without a close frame
        assert await _until(lambda: bus.subscribers == 0, 1.0), bus.subscribers
        await rude.wait_closed()
        # Nothing was published meanwhile: the handlers noticed the sockets themselves.
        assert bus.published == published

        # The stream still works for the next client: a handler that ended took nothing with it.
        again = await _authenticated(http, url, ADMIN)
        status = await asyncio.to_thread(_put_state, base, "1001", "logged_in")
        assert status == 200
        event = await again.receive_json(timeout=5)
        assert (event["type"], event["agent_id"], event["event"]) == ("agent", "1001", "available")
        await again.close()
    assert await _until(lambda: bus.subscribers == 0, 1.0)


def _put_state(base: str, agent_id: str, state: str) -> int:
    import urllib.request

    req = urllib.request.Request(
        f"{base}/api/v1/agents/{agent_id}/state",
        data=json.dumps({"state": state}).encode(),
        method="PUT",
    )
    req.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


async def test_a_client_that_falls_behind_is_cut_off_with_4008(
    daemon: tuple[Daemon, str],
) -> None:
    d, base = daemon
    bus = d.api.bus
    assert bus is not None
    url = base.replace("http", "ws") + "/api/v1/events"
    async with aiohttp.ClientSession() as http:
        ws = await _authenticated(http, url, ADMIN)
        # More events in one go than a subscriber's queue holds, before its handler can run.
        for n in range(SUBSCRIBER_QUEUE_EVENTS + 1):
            bus.publish(Event(type="agent", at=float(n), event="available", agent_id="1001"))
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg  # the end marker comes first
        assert ws.close_code == 4008
        assert msg.extra == "too slow: reconnect and re-read state"
    assert bus.disconnected_slow == 1
    assert await _until(lambda: bus.subscribers == 0, 1.0)


async def test_closing_a_subscription_wakes_its_reader() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    bus.publish(Event(type="agent", at=1.0, event="busy", agent_id="1001"))
    assert await waiting is not None
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(waiting, 1) is None
    assert bus.subscribers == 0
