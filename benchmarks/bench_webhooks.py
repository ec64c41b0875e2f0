"""What outbound webhooks cost the event loop, and how fast they drain to a local receiver.

Two figures: (1) ``WebhookService.consume`` per bus event with N webhooks subscribed (what every
published event costs on the call path: mapping, JSON body per webhook, queueing), measured
without workers so nothing else runs; (2) deliveries per second to a local aiohttp receiver
answering 200, all in one process and one event loop (receiver included), and the same with a
receiver answering 503 and max_attempts = 1 (every delivery dead-lettered into SQLite).

Usage: python benchmarks/bench_webhooks.py [--events 20000] [--hooks 1 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from engine.config import parse_config
from engine.runtime.events import Event
from engine.storage import Store
from engine.webhooks import WebhookService

SECRET = "bench-secret-0123456789"
EVENT = Event(type="call", at=1.0, event="completed", call_id="c" * 32,
              data={"disposition": "answered", "queue": "support", "talk_s": 42.0,
                    "flow_data": {"account": "1234", "tier": "vip"}})  # fmt: skip


def _hooks(url: str, n: int, extra: str = "") -> str:
    return "".join(
        f'[[webhooks]]\nurl = "{url}?{i}"\nsecret = "{SECRET}"\n{extra}\n' for i in range(n)
    )


async def consume_cost(store: Store, hooks: int, events: int) -> float:
    async with aiohttp.ClientSession() as http:
        cfg = parse_config(_hooks("http://127.0.0.1:9/h", hooks), "bench.toml")
        service = WebhookService(cfg, store, http, CollectorRegistry())
        began = time.perf_counter()
        for _ in range(events):
            service.consume(EVENT)
        took = time.perf_counter() - began
        service._queue = asyncio.Queue()  # drop what was queued: nothing is sent here
    return took / events * 1e6


async def drain(store: Store, events: int, status: int) -> float:
    got = 0
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal got
        await request.read()
        got += 1
        if got == events:
            done.set()
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/h", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        cfg = parse_config(_hooks(f"http://127.0.0.1:{port}/h", 1, "max_attempts = 1"), "b.toml")
        service = WebhookService(cfg, store, http, CollectorRegistry())
        run = asyncio.create_task(service.run())
        began = time.perf_counter()
        for _ in range(events):
            service.consume(EVENT)
        await asyncio.wait_for(done.wait(), 300)
        took = time.perf_counter() - began
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        await service.close()
    await runner.cleanup()
    return events / took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--hooks", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}")
        try:
            for n in args.hooks:
                us = await consume_cost(store, n, args.events)
                print(f"consume, {n} webhook(s): {us:.1f} us per event")
            sent = min(args.events, 5000)
            print(
                f"delivered (200): {await drain(store, sent, 200):.0f} per second ({sent} events)"
            )
            print(f"dead-lettered (503, 1 attempt): {await drain(store, sent, 503):.0f} per second")
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
