"""The finance pack in the real daemon: a baresip phone calls the bank line and types its account
number, PIN and one-time code as RFC 4733 DTMF; the pack checks them against a local aiohttp
"bank" service (its own thread) and routes the wealth client to the advisors' queue. The pack is
found through the entry point pyproject.toml declares (tests/engine/test_pack_finance.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.peers import Baresip, free_port_block
from tests.engine.test_pack_finance import register_packs

pytestmark = pytest.mark.e2e


@dataclass
class Bank:
    port: int
    asked: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.asked)


@pytest.fixture
def bank() -> Iterator[Bank]:
    svc = Bank(free_port())
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []

    async def verify(request: web.Request) -> web.Response:
        body = await request.json()
        with svc.lock:
            svc.asked.append(("verify", body))
        ok = body["account"] == "1234" and body["pin"] == "9876"
        return web.json_response(
            {"verified": ok, "customer_id": "C-1234", "segment": "wealth", "otp_required": True}
        )

    async def otp(request: web.Request) -> web.Response:
        body = await request.json()
        with svc.lock:
            svc.asked.append(("otp", body))
        return web.json_response({"verified": body["code"] == "2468"})

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/verify", verify)
        app.router.add_post("/otp", otp)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", svc.port).start()
        runners.append(runner)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield svc
    asyncio.run_coroutine_threadsafe(runners[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _config(bank: Bank) -> str:
    rtp = free_port_block(20)
    return f"""
[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 18}

[plugins]
enabled = ["finance"]

[plugins.finance]
verify_url = "http://127.0.0.1:{bank.port}/verify"
otp_url = "http://127.0.0.1:{bank.port}/otp"

[[trunks]]
name = "callers"
allow = ["127.0.0.0/8"]

[[routes]]
number = "bank"
flow = "bank"

[[flows]]
name = "bank"
steps = [
  {{ type = "answer" }},
  {{ type = "verify_identity", account_digits = 4, pin_digits = 4, otp_digits = 4, timeout_s = 4.0, vip_flow = "vip", verified_flow = "retail" }},
  {{ type = "hangup" }},
]

[[flows]]
name = "vip"
steps = [{{ type = "set", priority = 5 }}, {{ type = "enqueue", queue = "advisors" }}]

[[flows]]
name = "retail"
steps = [{{ type = "enqueue", queue = "retail" }}]

[[queues]]
name = "advisors"
requirements = {{ certified_advisor = 1 }}
record = "never"

[[queues]]
name = "retail"
record = "never"
"""


def _row(daemon: DaemonProcess) -> sqlite3.Row:
    path = daemon.workdir / "var" / "acd.sqlite3"
    deadline = time.monotonic() + 15
    while True:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM calls WHERE ended_at IS NOT NULL").fetchall()
        if rows or time.monotonic() > deadline:
            assert len(rows) == 1
            return rows[0]
        time.sleep(0.1)


def test_caller_verified_by_dtmf_goes_to_the_advisors(
    start_daemon: DaemonFactory, tmp_path: Path, bank: Bank
) -> None:
    site = register_packs(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    daemon = start_daemon(_config(bank), env=env)
    ready = daemon.wait_for_log("ready")
    assert ready["plugins"] == ["finance"]
    sip = str(ready["sip"]).removeprefix("udp:")
    caller = Baresip(
        tmp_path / "caller", f"<sip:5550100@{sip}>;regint=0;audio_codecs=PCMU", 440,
        dial=f"sip:bank@{sip}",
    )  # fmt: skip
    try:
        caller.wait_for("Call established")
        # account, PIN (then the bank is asked), one-time code (asked again)
        for digits, asked_before, asked_after in (("1234", 0, 0), ("9876", 0, 1), ("2468", 1, 2)):
            assert len(bank.seen()) == asked_before
            for digit in digits:
                reply = caller.command("sndcode", digit)
                assert reply.get("ok") is True, reply
                time.sleep(0.15)
            deadline = time.monotonic() + 10
            while len(bank.seen()) < asked_after:
                assert time.monotonic() < deadline, bank.seen()
                time.sleep(0.05)
        assert bank.seen() == [
            ("verify", {"account": "1234", "pin": "9876", "caller": "5550100", "dialed": "bank"}),
            ("otp", {"customer_id": "C-1234", "code": "2468", "caller": "5550100"}),
        ]
        # Verified, a wealth client: waiting in the advisors' queue, then the caller hangs up.
        deadline = time.monotonic() + 10
        while _waiting(daemon, "advisors") != 1:
            assert time.monotonic() < deadline, "the caller never waited for an advisor"
            time.sleep(0.05)
        caller.command("hangup")
    finally:
        caller.stop()
    row = _row(daemon)
    assert row["queue"] == "advisors"
    assert row["disposition"] == "abandoned"
    data = json.loads(row["flow_data"])
    assert data["verified"] is True
    assert data["customer_id"] == "C-1234"
    assert data["segment"] == "wealth"
    assert data["account_last4"] == "1234"
    assert "9876" not in row["flow_data"]
    assert "2468" not in row["flow_data"]
    assert daemon.stop() == 0


def _waiting(daemon: DaemonProcess, queue: str) -> float:
    _, body, _ = daemon.get("/metrics")
    prefix = f'acd_queue_waiting_calls{{queue="{queue}"}}'
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0
