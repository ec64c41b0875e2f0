"""The admin API through the daemon: an agent and a queue PUT through /api/v1/admin take effect
at once (a SIPp phone registers as the new agent and is offered a SIPp caller of the queue),
survive a restart, a bad body is 422 naming the key, a non-admin token 403, every change is an
audit row, and `acd export config` round-trips the effective config."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import DaemonProcess, launch, wait_until
from tests.e2e.peers import free_port_block, sipp, stop
from tests.e2e.test_call_scenarios import SCENARIOS, finished, sip_target, sipp_output

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-admin-api-0001"
SUPERVISOR = "supervisor-token-admin-api-01"


def extra() -> str:
    rtp = free_port_block(20)
    return f"""
[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 18}

[[api.tokens]]
name = "ops"
role = "admin"
token = "{ADMIN}"

[[api.tokens]]
name = "sup"
role = "supervisor"
token = "{SUPERVISOR}"

[[trunks]]
name = "callers"
allow = ["127.0.0.0/8"]

[[routes]]
number = "sales"
flow = "sales"

[[flows]]
name = "sales"
steps = [{{ type = "answer" }}, {{ type = "enqueue", queue = "sales" }}]

[[queues]]
name = "sales"
requirements = {{ sales = 1 }}
ring_timeout_s = 2.0
record = "never"
"""


def call(
    daemon: DaemonProcess, method: str, path: str, body: object = None, token: str = ADMIN
) -> tuple[int, object]:
    request = urllib.request.Request(
        daemon.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
    )
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin_api")


@pytest.fixture(scope="module")
def daemon(workdir: Path) -> Iterator[DaemonProcess]:
    proc = launch(workdir, extra())
    try:
        proc.wait_ready()
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.stop()


def test_a_new_agent_registers_and_takes_a_call_of_the_changed_queue(
    daemon: DaemonProcess, workdir: Path
) -> None:
    status, queue = call(daemon, "PUT", "/api/v1/admin/queues/sales",
                         {"requirements": {"sales": 2}, "ring_timeout_s": 3.0, "wrap_up_s": 0.5,
                          "record": "never"})  # fmt: skip
    assert status == 200, queue
    assert isinstance(queue, dict)
    assert queue["source"] == "api"
    assert queue["wrap_up_s"] == 0.5
    status, billing = call(daemon, "PUT", "/api/v1/admin/queues/billing", {"strategy": "random"})
    assert status == 200, billing
    status, agent = call(daemon, "PUT", "/api/v1/admin/agents/2001",
                         {"password": "new-agent-secret", "skills": {"sales": 7},
                          "queues": {"sales": 0}})  # fmt: skip
    assert status == 200, agent
    status, listed = call(daemon, "GET", "/api/v1/admin/queues")
    assert status == 200
    assert isinstance(listed, list)
    assert {q["name"]: q["source"] for q in listed} == {"sales": "api", "billing": "api"}
    status, live = call(daemon, "GET", "/api/v1/queues")
    assert status == 200
    assert "billing" in json.dumps(live)

    target = sip_target(daemon)
    phone = sipp(workdir, ["-sf", str(SCENARIOS / "agent_answer.xml")], None, "-m", "1")
    caller = None
    try:
        register = sipp(workdir, ["-sf", str(SCENARIOS / "agent_register.xml")], target,
                        "-s", "2001", "-au", "2001", "-ap", "new-agent-secret", "-m", "1",
                        "-key", "contact_port", str(phone.sip_port))  # type: ignore[attr-defined]  # fmt: skip
        assert finished(register, 15) == 0, sipp_output(register)
        wait_until(lambda: call(daemon, "GET", "/api/v1/agents/2001")[1].get("state")  # type: ignore[union-attr]
                   == "available", 15, "agent 2001 registered")  # fmt: skip
        caller = sipp(workdir, ["-sn", "uac"], target, "-s", "sales", "-m", "1", "-d", "500")
        assert finished(caller, 30) == 0, sipp_output(caller)
        assert finished(phone, 30) == 0, sipp_output(phone)
    finally:
        for proc in (caller, phone):
            if proc is not None:
                stop(proc)
    db = workdir / "var" / "acd.sqlite3"

    def answered() -> list[tuple[str, str]]:
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "SELECT queue, agent_id FROM calls WHERE ended_at IS NOT NULL"
                " AND disposition = 'answered'"
            ).fetchall()

    wait_until(answered, 10, "the call's finished CDR row")
    assert answered() == [("sales", "2001")]


def test_a_bad_body_is_422_naming_the_key(daemon: DaemonProcess) -> None:
    status, body = call(daemon, "PUT", "/api/v1/admin/agents/2002", {"skills": {"sales": 500}})
    assert status == 422, body
    assert isinstance(body, dict)
    assert body["key"].endswith(".skills.sales"), body
    status, body = call(daemon, "PATCH", "/api/v1/admin/queues/sales", {"wrap_up_s": "long"})
    assert status == 422, body
    assert isinstance(body, dict)
    assert body["key"].endswith("wrap_up_s"), body
    assert call(daemon, "GET", "/api/v1/admin/agents/2002")[0] == 404


def test_the_openapi_document_lists_the_admin_paths(daemon: DaemonProcess) -> None:
    status, doc = call(daemon, "GET", "/api/v1/openapi.json")
    assert status == 200
    assert isinstance(doc, dict)
    one = doc["paths"]["/api/v1/admin/agents/{name}"]
    assert set(one) == {"get", "put", "patch", "delete"}
    assert {"403", "409", "422"} <= set(one["put"]["responses"])
    assert set(doc["paths"]["/api/v1/admin/queues"]) == {"get"}
    assert set(doc["paths"]["/api/v1/admin/skills/{name}"]) == {"get", "put", "delete"}


def test_a_non_admin_token_is_403(daemon: DaemonProcess) -> None:
    assert call(daemon, "GET", "/api/v1/admin/agents", token=SUPERVISOR)[0] == 403
    status, _ = call(daemon, "PUT", "/api/v1/admin/agents/2003", {"password": "x"}, SUPERVISOR)
    assert status == 403
    assert call(daemon, "GET", "/api/v1/admin/agents/2003")[0] == 404


def test_skills_set_and_taken_through_the_agents(daemon: DaemonProcess) -> None:
    status, skill = call(daemon, "PUT", "/api/v1/admin/skills/billing", {"agents": {"2001": 4}})
    assert status == 200, skill
    assert skill == {"name": "billing", "agents": {"2001": 4}, "queues": {}}
    status, agent = call(daemon, "GET", "/api/v1/admin/agents/2001")
    assert isinstance(agent, dict)
    assert agent["skills"] == {"sales": 7, "billing": 4}
    status, body = call(daemon, "PUT", "/api/v1/admin/skills/billing", {"agents": {"nobody": 1}})
    assert status == 422, body
    assert isinstance(body, dict)
    assert body["key"] == "agents.nobody"
    status, body = call(daemon, "PUT", "/api/v1/admin/skills/billing", {"agents": {"2001": 0}})
    assert status == 422, body  # validate.py: a level is 1..100
    assert isinstance(body, dict)
    assert body["key"].endswith(".skills.billing"), body
    assert call(daemon, "DELETE", "/api/v1/admin/skills/billing")[0] == 204
    assert call(daemon, "GET", "/api/v1/admin/skills/billing")[0] == 404
    status, agent = call(daemon, "GET", "/api/v1/admin/agents/2001")
    assert isinstance(agent, dict)
    assert agent["skills"] == {"sales": 7}


def test_changes_are_audited_and_survive_a_restart_and_export_round_trips(
    daemon: DaemonProcess, workdir: Path
) -> None:
    status, _ = call(daemon, "DELETE", "/api/v1/admin/queues/billing")
    assert status == 204
    with sqlite3.connect(workdir / "var" / "acd.sqlite3") as conn:
        audited = conn.execute(
            "SELECT action, object_id, outcome FROM audit_log WHERE action LIKE 'admin_%'"
            " ORDER BY id"
        ).fetchall()
    assert audited == [
        ("admin_put_queue", "sales", "done"),
        ("admin_put_queue", "billing", "done"),
        ("admin_put_agent", "2001", "done"),
        ("admin_put_agent", "2002", "invalid"),
        ("admin_patch_queue", "sales", "invalid"),
        ("admin_put_skill", "billing", "done"),
        ("admin_put_skill", "billing", "invalid"),
        ("admin_put_skill", "billing", "invalid"),
        ("admin_delete_skill", "billing", "done"),
        ("admin_delete_queue", "billing", "done"),
    ]
    exported = subprocess.run(
        [sys.executable, "-m", "engine.cli", "export", "config", "--config",
         str(daemon.config_path)],
        cwd=workdir, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    out = workdir / "exported.toml"
    out.write_text(exported)
    checked = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check-config", str(out)],
        cwd=workdir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'id = "2001"' in exported
    assert 'name = "billing"' not in exported

    assert daemon.stop() == 0
    # the same file again: the stored agent and queue are back, the deleted queue stays gone
    with daemon.log_path.open("a") as log_file:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(daemon.config_path)],
            cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    daemon.wait_ready()
    status, agent = call(daemon, "GET", "/api/v1/admin/agents/2001")
    assert status == 200, agent
    assert isinstance(agent, dict)
    assert agent["source"] == "api"
    assert agent["skills"] == {"sales": 7}
    status, queues = call(daemon, "GET", "/api/v1/admin/queues")
    assert isinstance(queues, list)
    assert [q["name"] for q in queues] == ["sales"], queues
    assert queues[0]["wrap_up_s"] == 0.5
