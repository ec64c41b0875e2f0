"""VIP tiers and priority aging through the daemon.

A CRM (an HTTP server in this test, on a port it picks) answers the flow's lookup with
``{"tier": "vip"}`` for the caller "vera" and nothing for anyone else; the flow's ``set`` turns
the tier into a priority. Queue ``support`` does not age: vera, arriving after nora, is ahead of
her and answered first. Queue ``aged`` ages two points a second with the VIP worth one point:
olga, who came a second before vera, has two points more by then and stays ahead of her (without
aging vera would be first). Callers are SIPp (scenario ``caller_as``: its From user is the caller id); agents are
SIPp UAS processes at static contacts, logged in only once everybody waits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import free_port
from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory
from tests.e2e.peers import free_port_block
from tests.e2e.test_call_scenarios import (
    ADMIN,
    SCENARIOS,
    Peers,
    Proc,
    api,
    cdr,
    finished,
    peers,  # noqa: F401 - the fixture
    sip_target,
    sipp_output,
    wait_until,
)

pytestmark = pytest.mark.e2e


class Crm(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps({"tier": "vip"} if body.get("caller") == "vera" else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def crm() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Crm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/crm"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_vip_arriving_later_is_answered_first_and_aging_lets_the_older_caller_catch_up(
    start_daemon: DaemonFactory,
    peers: Peers,  # noqa: F811
    crm: str,
) -> None:
    phones = {"A": peers.agent("agent_answer"), "B": peers.agent("agent_answer")}
    steps = '[{{ type = "answer" }}, {{ type = "lookup", url = "{crm}" }}, '
    steps += (
        '{{ type = "set", queue = "{queue}", tier = "{{tier}}", priorities = {{ vip = {vip} }} }}, '
    )
    steps += '{{ type = "enqueue" }}]'
    flows = "".join(
        f'[[routes]]\nnumber = "{q}"\nflow = "{q}"\n'
        f'[[flows]]\nname = "{q}"\nsteps = {steps.format(crm=crm, queue=q, vip=vip)}\n'
        for q, vip in (("support", 10), ("aged", 1))
    )
    queues = "".join(
        f'[[queues]]\nname = "{q}"\nwrap_up_s = 0.0\nrecord = "never"\n{extra}'
        for q, extra in (("support", ""), ("aged", "priority_aging_per_min = 120.0\n"))
    )
    agents = "".join(
        f'[[agents]]\nid = "{name}"\nlogin = "static"\n'
        f'contact = "sip:{name}@127.0.0.1:{phones[name].sip_port}"\nqueues = {{ {q} = 0 }}\n'  # type: ignore[attr-defined]
        for name, q in (("A", "support"), ("B", "aged"))
    )
    daemon = start_daemon(
        front_door(ADMIN, numbers=(), rtp_base=free_port_block(60)) + flows + queues + agents
    )

    def caller(name: str, queue: str) -> Proc:
        scenario = ["-sf", str(SCENARIOS / "caller_as.xml")]
        return peers._start(scenario, sip_target(daemon), "-s", queue, "-m", "1",
                            "-key", "caller", name, "-d", "4000")  # fmt: skip

    def positions(queue: str) -> dict[str, int]:
        live = api(daemon, "/api/v1/calls")
        return {
            c["caller"]: c["position"]  # type: ignore[index]
            for c in live  # type: ignore[union-attr]
            if c["phase"] == "queued" and c["queue"] == queue  # type: ignore[index]
        }

    callers = [caller("nora", "support"), caller("olga", "aged")]
    wait_until(lambda: positions("support") == {"nora": 1}, 10, "nora queued")
    wait_until(lambda: positions("aged") == {"olga": 1}, 10, "olga queued")
    # Two points a second: by now olga has at least two, so she stays ahead of a vera who
    # joins with her tier's one point and gains them at the same pace.
    time.sleep(1.0)
    callers += [caller("vera", "support"), caller("vera", "aged")]
    wait_until(lambda: len(positions("support")) == len(positions("aged")) == 2, 10, "vera queued")
    assert positions("support") == {"vera": 1, "nora": 2}  # the VIP, though she came later
    assert positions("aged") == {"olga": 1, "vera": 2}  # aged past the VIP
    for name in ("A", "B"):
        api(daemon, f"/api/v1/agents/{name}/state", {"state": "logged_in"})
    for proc in callers:
        assert finished(proc, 20) == 0, sipp_output(proc)
    rows, _ = cdr(daemon, 4)
    first = {}
    for row in sorted(rows, key=lambda r: r["agent_answered_at"] or float("inf")):
        if row["agent_answered_at"] is not None:
            first.setdefault(row["queue"], row["caller"])
    assert first == {"support": "vera", "aged": "olga"}
    vip = [r for r in rows if r["caller"] == "vera"]
    assert all(json.loads(r["flow_data"])["tier"] == "vip" for r in vip)
    for phone in phones.values():
        assert finished(phone, 10) == 0, sipp_output(phone)
    assert daemon.stop() == 0
