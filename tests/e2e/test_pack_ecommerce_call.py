"""The e-commerce pack in the real daemon: SIPp callers type order 4321 as RFC 4733 DTMF, the pack
asks a local aiohttp "order service" (its own thread) and speaks the status, opens an after-sales
ticket linked to the call (a row of the store's ``tasks``, in the tickets' lifecycle) and queues
the caller. An order service that answers 503 or too late sends the caller to the fallback
branch (an agent, no ticket); a ticket the task service refuses ends that call alone with
``plugin_error``; the peak-hour overflow (a queue's ``max_wait_s`` and
``overflow``) opens a call-back ticket about the order the caller asked about.

One daemon for the module; the fragments the answer is assembled from are replaced by 0.1 s
tones (``media.prompts_dir``) so that a call takes a few seconds; which fragments are said is
tests/engine/test_pack_ecommerce.py's to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.e2e.conftest import DaemonProcess, running_daemon, wait_until
from tests.e2e.peers import free_port_block, sipp, stop, write_tone
from tests.e2e.test_call_scenarios import SCENARIOS, sip_target, sipp_output
from tests.e2e.test_csat_survey import metric
from tests.engine.test_pack_finance import register_packs

pytestmark = pytest.mark.e2e

# Every fragment a call of this module plays, as a short tone.
FRAGMENTS = ("order-number", "order-your-order", "digit-4", "digit-3", "digit-2", "digit-1",
             "order-shipped", "order-arrives-in", "days", "order-unavailable", "ticket-opened",
             "peak-callback", "moh")  # fmt: skip


@dataclass
class Shop:
    """The order service: order 4321 shipped by DHL, 3 days; the dialed number picks a fault."""

    port: int
    asked: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, dialed: str) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.asked if a.get("dialed") == dialed]


@contextlib.contextmanager
def order_service(
    answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Iterator[Shop]:
    svc = Shop(free_port())
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []

    async def order(request: web.Request) -> web.Response:
        body = await request.json()
        with svc.lock:
            svc.asked.append(body)
        if answer is not None:
            return web.json_response(answer(body))
        if body.get("dialed") == "orders-down":
            return web.Response(status=503)
        if body.get("dialed") == "orders-slow":
            await asyncio.sleep(2.0)  # the pack's timeout_s is 0.5
        if body.get("order") != "4321":
            return web.json_response({"found": False})
        return web.json_response({"found": True, "status": "shipped", "carrier": "DHL",
                                  "tracking": "JD0123", "eta_days": 3, "warehouse": "B"})  # fmt: skip

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/{path}", order)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", svc.port).start()
        runners.append(runner)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield svc
    finally:
        asyncio.run_coroutine_threadsafe(runners[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


ORDER_STEP = ('{ type = "order_status", timeout_s = 2.0, found_flow = "aftersales", '
              'not_found_flow = "agent", failed_flow = "agent" }')  # fmt: skip


def _config(port: int, prompts: Path) -> str:
    rtp = free_port_block(40)
    return f"""
[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 38}
prompts_dir = "{prompts}"

[plugins]
enabled = ["ecommerce"]

[plugins.ecommerce]
order_url = "http://127.0.0.1:{port}/order"
timeout_s = 0.5

[[trunks]]
name = "shop"
allow = ["127.0.0.0/8"]

[[routes]]
number = "orders"
flow = "orders"
[[routes]]
number = "orders-down"
flow = "orders"
[[routes]]
number = "orders-slow"
flow = "orders"
[[routes]]
number = "broken"
flow = "broken"
[[routes]]
number = "peak"
flow = "peak"

[[flows]]
name = "orders"
steps = [{{ type = "answer" }}, {ORDER_STEP}]

[[flows]]
name = "aftersales"
steps = [
  {{ type = "create_ticket", queue = "aftersales", subject = "Order {{order_number}} ({{order_status}})", prompt = "ticket-opened" }},
  {{ type = "enqueue", queue = "orders" }},
]

[[flows]]
name = "agent"
steps = [{{ type = "set", data = {{ route = "agent" }} }}, {{ type = "enqueue", queue = "orders" }}]

[[flows]]
name = "broken"
steps = [
  {{ type = "answer" }},
  {{ type = "order_status", timeout_s = 2.0 }},
  {{ type = "create_ticket", queue = "aftersales", requirements = {{ no_one_has_this = 1 }} }},
  {{ type = "enqueue", queue = "orders" }},
]

[[flows]]
name = "peak"
steps = [{{ type = "answer" }}, {{ type = "order_status", timeout_s = 2.0 }}, {{ type = "enqueue", queue = "peak" }}]

[[flows]]
name = "peak-callback"
steps = [
  {{ type = "create_ticket", queue = "aftersales", subject = "Call back {{caller}} about {{order_number}}", priority = 5 }},
  {{ type = "hangup", prompt = "peak-callback" }},
]

[[queues]]
name = "orders"
record = "never"

[[queues]]
name = "peak"
record = "never"
max_wait_s = 0.5
overflow = "peak-callback"

[[queues]]
name = "aftersales"
"""


@dataclass
class Running:
    daemon: DaemonProcess
    shop: Shop


@contextlib.contextmanager
def started_daemon(
    workdir: Path,
    fragments: tuple[str, ...],
    config: Callable[[int, Path], str],
    answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Iterator[Running]:
    """``acd run`` with the packs registered, ``fragments`` as short tones in its prompts_dir and
    ``config(service_port, prompts_dir)``; the order service (or, with ``answer``, a service
    answering every POST with ``answer(body)``) in its own thread. Stopped by PID, exit 0."""
    site = register_packs(workdir / "site")
    prompts = workdir / "prompts"
    prompts.mkdir()
    for i, name in enumerate(fragments):
        write_tone(prompts / f"{name}.wav", 400 + 50 * i, 0.1)
    with order_service(answer) as shop:
        pythonpath = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
        with running_daemon(
            workdir, config(shop.port, prompts), env={"PYTHONPATH": pythonpath}
        ) as daemon:
            yield Running(daemon, shop)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with started_daemon(tmp_path_factory.mktemp("shop"), FRAGMENTS, _config) as r:
        yield r


def _db(daemon: DaemonProcess) -> sqlite3.Connection:
    db = sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3")
    db.row_factory = sqlite3.Row
    return db


def call(running: Running, tmp_path: Path, dialed: str, scenario: str) -> sqlite3.Row:
    """One SIPp caller to ``dialed`` (must exit 0); its finished CDR row."""
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")  # SIPp's RFC 2833 digit captures
    daemon = running.daemon
    caller = sipp(tmp_path, ["-sf", str(SCENARIOS / scenario)], sip_target(daemon),
                  "-s", dialed, "-m", "1")  # fmt: skip
    try:
        assert caller.wait(timeout=30) == 0, sipp_output(caller)
    finally:
        stop(caller)

    def row() -> sqlite3.Row | None:
        with contextlib.closing(_db(daemon)) as db:
            return db.execute(  # type: ignore[no-any-return]
                "SELECT * FROM calls WHERE dialed = ? AND ended_at IS NOT NULL", (dialed,)
            ).fetchone()

    wait_until(lambda: row() is not None, 10, f"the CDR row of the call to {dialed}")
    found = row()
    assert found is not None
    return found


def tickets(daemon: DaemonProcess, call_id: str) -> list[sqlite3.Row]:
    with contextlib.closing(_db(daemon)) as db:
        rows = db.execute("SELECT * FROM tasks WHERE channel = 'ticket'").fetchall()
    return [r for r in rows if json.loads(r["data"] or "{}").get("call_id") == call_id]


def test_found_order_is_told_and_opens_a_ticket_linked_to_the_call(
    running: Running, tmp_path: Path
) -> None:
    row = call(running, tmp_path, "orders", "caller_order.xml")
    assert running.shop.seen("orders") == [
        {"order": "4321", "caller": "5550177", "dialed": "orders"}
    ]
    data = json.loads(row["flow_data"])
    assert data["order_result"] == "found"
    assert (data["order_number"], data["order_status"], data["order_eta_days"]) == (
        "4321",
        "shipped",
        3,
    )
    assert (data["order_carrier"], data["order_tracking"]) == ("DHL", "JD0123")
    # told, ticket opened, then waiting for an agent until the caller hung up
    assert (row["queue"], row["disposition"]) == ("orders", "abandoned")
    [ticket] = tickets(running.daemon, row["id"])
    assert data["ticket_id"] == ticket["id"]
    assert (ticket["queue"], ticket["state"], ticket["created_by"]) == (
        "aftersales",
        "waiting",
        "pack:ecommerce",
    )
    assert ticket["subject"] == "Order 4321 (shipped)"
    assert ticket["external_id"] == f"call:{row['id']}:ticket"
    assert json.loads(ticket["customer"]) == {"phone": "5550177"}
    assert json.loads(ticket["data"]) == {
        "call_id": row["id"], "caller": "5550177", "order_number": "4321",
        "order_status": "shipped", "order_carrier": "DHL", "order_tracking": "JD0123",
        "order_result": "found",
    }  # fmt: skip


@pytest.mark.parametrize("dialed", ["orders-down", "orders-slow"])
def test_failing_or_slow_order_service_sends_the_caller_to_the_fallback(
    running: Running, tmp_path: Path, dialed: str
) -> None:
    row = call(running, tmp_path, dialed, "caller_order.xml")
    assert len(running.shop.seen(dialed)) == 1
    data = json.loads(row["flow_data"])
    assert data["order_result"] == "service_error"
    assert data["route"] == "agent"  # the failed_flow
    assert "ticket_id" not in data
    assert (row["queue"], row["disposition"]) == ("orders", "abandoned")
    assert tickets(running.daemon, row["id"]) == []


def test_a_refused_ticket_ends_only_that_call_with_plugin_error(
    running: Running, tmp_path: Path
) -> None:
    before = metric(running.daemon, "acd_unexpected_errors_total", where="plugin")
    row = call(running, tmp_path, "broken", "caller_order_awaits_bye.xml")
    assert row["hangup_reason"] == "plugin_error"
    assert row["queue"] is None
    assert json.loads(row["flow_data"])["order_result"] == "found"
    assert tickets(running.daemon, row["id"]) == []
    assert metric(running.daemon, "acd_unexpected_errors_total", where="plugin") == before + 1
    failed = [line for line in running.daemon.log_lines() if line.get("event") == "plugin_failed"]
    assert [line.get("call_id") for line in failed] == [row["id"]]
    assert "no_one_has_this" in str(failed[0]["error"])
    assert running.daemon.proc.poll() is None
    assert running.daemon.get("/readyz")[0] == 200


def test_peak_hour_overflow_opens_a_call_back_ticket(running: Running, tmp_path: Path) -> None:
    row = call(running, tmp_path, "peak", "caller_order_awaits_bye.xml")
    assert (row["queue"], row["disposition"]) == ("peak", "flow_ended")
    [ticket] = tickets(running.daemon, row["id"])
    assert ticket["subject"] == "Call back 5550177 about 4321"
    assert json.loads(ticket["data"])["order_status"] == "shipped"
    assert (ticket["queue"], ticket["priority"], ticket["state"]) == ("aftersales", 5, "waiting")
