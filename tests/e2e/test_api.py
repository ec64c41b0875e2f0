"""The control API of a running daemon over real HTTP: roles, agent state, audit, CDR search, stats."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import DaemonFactory, DaemonProcess

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"
SUPERVISOR = "supervisor-token-0123456789"
AGENT_1001 = "agent-1001-token-0123"
AGENT_1002 = "agent-1002-token-0123"

EXTRA = f"""
[[api.tokens]]
name = "ops"
role = "admin"
token = "{ADMIN}"

[[api.tokens]]
name = "sup"
role = "supervisor"
token_sha256 = "{__import__("hashlib").sha256(SUPERVISOR.encode()).hexdigest()}"

[[queues]]
name = "support"
requirements = {{ support = 1 }}
service_level_s = 20.0

[[queues]]
name = "sales"
requirements = {{ sales = 1 }}

[[agents]]
id = "1001"
name = "Alice"
skills = {{ support = 8, sales = 3 }}
queues = {{ support = 0, sales = 1 }}
api_token = "{AGENT_1001}"

[[agents]]
id = "1002"
name = "Bob"
skills = {{ sales = 9 }}
queues = {{ sales = 0 }}
api_token = "{AGENT_1002}"
"""


def call(
    daemon: DaemonProcess, method: str, path: str, token: str | None, body: object = None
) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.base_url + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def daemon(start_daemon: DaemonFactory) -> DaemonProcess:
    return start_daemon(EXTRA)


def test_tokens_and_roles(daemon: DaemonProcess) -> None:
    assert call(daemon, "GET", "/api/v1/agents", None)[0] == 401
    assert call(daemon, "GET", "/api/v1/agents", "wrong-token-xxxxxxxx")[0] == 401
    status, agents = call(daemon, "GET", "/api/v1/agents", SUPERVISOR)  # hashed token in config
    assert status == 200
    assert [a["id"] for a in agents] == ["1001", "1002"]  # type: ignore[union-attr, index]
    status, own = call(daemon, "GET", "/api/v1/agents", AGENT_1001)
    assert status == 200
    assert [a["id"] for a in own] == ["1001"]  # type: ignore[union-attr, index]
    status, problem = call(daemon, "GET", "/api/v1/agents/1002", AGENT_1001)
    assert status == 403
    assert problem["detail"] == "agents may only see and change themselves"  # type: ignore[index]
    assert call(daemon, "POST", "/api/v1/reload", SUPERVISOR)[0] == 403
    assert call(daemon, "POST", "/api/v1/reload", ADMIN) == (200, {"reloaded": True})
    # SIP source bans are the admins' business
    assert call(daemon, "GET", "/api/v1/security/bans", SUPERVISOR)[0] == 403
    assert call(daemon, "DELETE", "/api/v1/security/bans/192.0.2.1", SUPERVISOR)[0] == 403
    assert call(daemon, "GET", "/api/v1/security/bans", ADMIN) == (200, [])


def test_agent_state_changes_go_through_routing_and_are_audited(daemon: DaemonProcess) -> None:
    status, view = call(daemon, "GET", "/api/v1/agents/1001", AGENT_1001)
    assert (status, view["state"]) == (200, "logged_out")  # type: ignore[index]
    status, view = call(
        daemon, "PUT", "/api/v1/agents/1001/state", AGENT_1001, {"state": "logged_in"}
    )
    assert (status, view["state"]) == (200, "available")  # type: ignore[index]
    status, view = call(
        daemon,
        "PUT",
        "/api/v1/agents/1001/state",
        SUPERVISOR,
        {"state": "not_ready", "reason": "coaching"},
    )
    assert status == 200
    assert view == {  # type: ignore[comparison-overlap]
        "id": "1001",
        "name": "Alice",
        "state": "not_ready",
        "reason": "coaching",
        "queues": {"support": 0, "sales": 1},
        "skills": {"support": 8, "sales": 3},
        "wrap_up_remaining_s": None,  # only in wrap-up (tests/engine/test_api_agents.py)
    }
    # An agent cannot change another agent; a bad body is a 400; an impossible transition a 409.
    assert (
        call(daemon, "PUT", "/api/v1/agents/1001/state", AGENT_1002, {"state": "ready"})[0] == 403
    )
    assert call(daemon, "PUT", "/api/v1/agents/1001/state", ADMIN, {"state": "asleep"})[0] == 400
    assert call(daemon, "PUT", "/api/v1/agents/1001/state", ADMIN, {"mood": "ok"})[0] == 400
    assert call(daemon, "PUT", "/api/v1/agents/1002/state", ADMIN, {"state": "ready"})[0] == 409
    assert call(daemon, "PUT", "/api/v1/agents/9999/state", ADMIN, {"state": "ready"})[0] == 404

    status, queues = call(daemon, "GET", "/api/v1/queues", SUPERVISOR)
    assert status == 200
    support = next(q for q in queues if q["name"] == "support")  # type: ignore[union-attr]
    assert support["agents"]["not_ready"] == 1
    assert support["waiting"] == 0
    status, mine = call(daemon, "GET", "/api/v1/queues", AGENT_1002)
    assert [q["name"] for q in mine] == ["sales"]  # type: ignore[union-attr, index]

    time.sleep(1.0)  # the agent-event writer flushes every 0.5 s
    db = daemon.workdir / "var" / "acd.sqlite3"
    with sqlite3.connect(db) as conn:
        audit = conn.execute(
            "SELECT actor, role, action, object_id, outcome, json_extract(detail, '$.state') "
            "FROM audit_log ORDER BY id"
        ).fetchall()
        events = conn.execute(
            "SELECT agent_id, state, reason FROM agent_events ORDER BY id"
        ).fetchall()
    assert audit[:3] == [
        ("agent:1001", "agent", "agent_state", "1001", "done", "logged_in"),
        ("sup", "supervisor", "agent_state", "1001", "done", "not_ready"),
        ("ops", "admin", "agent_state", "1002", "refused", "ready"),
    ]
    assert events == [("1001", "available", "api:agent:1001"), ("1001", "not_ready", "coaching")]


def test_cdr_search_and_interval_stats(daemon: DaemonProcess) -> None:
    now = time.time()
    base = now - 3600
    rows = [
        # id, queue, agent, arrived_at, answered_at, disposition, wait, talk, wrap, CSAT score
        ("c1", "support", "1001", base + 10, base + 25, "answered", 15.0, 100.0, 10.0, 4),
        ("c2", "support", "1001", base + 20, base + 60, "answered", 40.0, 200.0, 10.0, 5),
        ("c3", "support", None, base + 30, None, "abandoned", 30.0, None, None, None),
        ("c4", "sales", "1002", base + 1000, base + 1005, "answered", 5.0, 50.0, 0.0, None),
    ]
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as conn:
        conn.executemany(
            "INSERT INTO calls (id, sip_call_id, queue, agent_id, arrived_at, agent_answered_at, "
            "disposition, wait_s, talk_s, wrap_up_s, csat_score, ended_at) "
            "VALUES (?, 'x', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row, row[3] + 500) for row in rows],  # finished calls: live rows are no figures
        )
    status, found = call(daemon, "GET", "/api/v1/cdr?queue=support", SUPERVISOR)
    assert status == 200
    assert [r["id"] for r in found] == ["c3", "c2", "c1"]  # type: ignore[union-attr, index]
    status, own = call(daemon, "GET", "/api/v1/cdr", AGENT_1002)
    assert [r["id"] for r in own] == ["c4"]  # type: ignore[union-attr, index]
    assert call(daemon, "GET", "/api/v1/cdr?agent=1001", AGENT_1002)[0] == 403
    assert call(daemon, "GET", "/api/v1/cdr?since=yesterday", SUPERVISOR)[0] == 400
    assert call(daemon, "GET", "/api/v1/cdr?since=nan", SUPERVISOR)[0] == 400
    assert call(daemon, "GET", "/api/v1/cdr?limit=0", SUPERVISOR)[0] == 400
    assert call(daemon, "GET", "/api/v1/cdr?limit=1", SUPERVISOR)[1][0]["id"] == "c4"  # type: ignore[index]
    # Every list takes its bounds the same way: a bad limit is the caller's 400, never our 500.
    assert call(daemon, "GET", "/api/v1/recordings?limit=x", SUPERVISOR)[0] == 400

    status, stats = call(
        daemon,
        "GET",
        f"/api/v1/stats/intervals?since={base}&until={now}&interval_s=900",
        SUPERVISOR,
    )
    assert status == 200
    assert status == 200
    assert [(s["start"], s["queue"]) for s in stats] == [(base, "support"), (base + 900, "sales")]  # type: ignore[index, union-attr]
    assert stats[0]["figures"] == {  # type: ignore[index]
        "offered": 3,
        "answered": 2,
        "abandoned": 1,
        "service_level": 0.5,  # 15 s within 20 s, 40 s not
        "asa_s": 27.5,
        "aht_s": 150.0,  # talk (100 + 200) / 2; wrap-up comes from the agent log (none here)
        "abandon_rate": pytest.approx(1 / 3),
        "csat_responses": 2,  # c1 rated 4, c2 rated 5; c3 was never asked
        "csat_average": 4.5,
    }
    assert stats[0]["sl_definition"] == "a"  # type: ignore[index]
    assert stats[0]["service_level_by_definition"] == 0.5  # type: ignore[index]
    assert stats[1]["figures"]["service_level"] == 1.0  # type: ignore[index]
    # Definition c counts the abandon (30 s, after T) against: 1 within / 3 offered.
    status, by_c = call(
        daemon, "GET", f"/api/v1/stats/intervals?since={base}&until={now}&sl=c", SUPERVISOR
    )
    assert by_c[0]["service_level_by_definition"] == pytest.approx(1 / 3, abs=1e-6)  # type: ignore[index]
    status, problem = call(daemon, "GET", "/api/v1/stats/intervals?sl=z", SUPERVISOR)
    assert status == 400
    assert "a, b, c, d, e" in json.dumps(problem)
    request = urllib.request.Request(
        f"{daemon.base_url}/api/v1/stats/intervals?since={base}&until={now}",
        headers={"Authorization": f"Bearer {SUPERVISOR}", "Accept": "text/csv"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(resp.read().decode())))
    assert [(r["queue"], r["figures.offered"]) for r in table] == [("support", "3"), ("sales", "1")]
    status, agents = call(
        daemon, "GET", f"/api/v1/stats/agents?since={base}&until={now}", SUPERVISOR
    )
    assert status == 200
    by_agent = {a["agent"]: a for a in agents}  # type: ignore[union-attr, index]
    assert (by_agent["1001"]["calls_answered"], by_agent["1001"]["talk_s"]) == (2, 150.0)
    assert call(daemon, "GET", "/api/v1/stats/agents?format=xml", SUPERVISOR)[0] == 400
    assert call(daemon, "GET", "/api/v1/stats/agents", AGENT_1001)[0] == 403
    assert call(daemon, "GET", "/api/v1/stats/intervals", AGENT_1001)[0] == 403


def test_openapi_lists_the_control_api(daemon: DaemonProcess) -> None:
    status, doc = call(daemon, "GET", "/api/v1/openapi.json", None)
    assert status == 200
    paths = doc["paths"]  # type: ignore[index]
    assert {"/api/v1/queues", "/api/v1/agents/{agent_id}/state", "/api/v1/cdr"} <= set(paths)
    assert paths["/api/v1/agents/{agent_id}/state"]["put"]["security"] == [{"bearer": []}]
    assert "QueueView" in doc["components"]["schemas"]  # type: ignore[index]
    assert set(paths["/api/v1/security/bans"]) == {"get"}
    lift = paths["/api/v1/security/bans/{address}"]["delete"]
    assert {"200", "400", "401", "403", "404"} <= set(lift["responses"])
    assert lift["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BanView"
    }
    ban = doc["components"]["schemas"]["BanView"]  # type: ignore[index]
    assert {"address", "reason", "since", "until", "failures", "strikes", "user"} <= set(
        ban["properties"]
    )


async def test_event_stream_over_websocket(daemon: DaemonProcess) -> None:
    import asyncio

    import aiohttp

    url = daemon.base_url.replace("http", "ws") + "/api/v1/events"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            await ws.send_json({"type": "auth", "token": "not-a-token-at-all"})
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4401

        async with session.ws_connect(url) as sup, session.ws_connect(url) as agent:
            await sup.send_json({"type": "auth", "token": SUPERVISOR})
            await agent.send_json({"type": "auth", "token": AGENT_1002})
            assert (await sup.receive_json(timeout=5)) == {"type": "hello", "principal": "sup"}
            assert (await agent.receive_json(timeout=5))["principal"] == "agent:1002"

            def put_state(agent_id: str, state: str) -> int:
                return call(
                    daemon, "PUT", f"/api/v1/agents/{agent_id}/state", ADMIN, {"state": state}
                )[0]

            assert await asyncio.to_thread(put_state, "1001", "logged_in") == 200
            assert await asyncio.to_thread(put_state, "1002", "logged_in") == 200
            seen_by_sup = [await sup.receive_json(timeout=5) for _ in range(2)]
            assert [(e["type"], e["agent_id"], e["event"]) for e in seen_by_sup] == [
                ("agent", "1001", "available"),
                ("agent", "1002", "available"),
            ]
            # Agent 1002 sees only itself: the first event it gets is its own login.
            own = await agent.receive_json(timeout=5)
            assert (own["agent_id"], own["event"]) == ("1002", "available")


def test_operator_commands(daemon: DaemonProcess) -> None:
    import os
    import subprocess
    import sys

    def acd(*args: str, token: str = ADMIN) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ACD_TOKEN=token)
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args, "--url", daemon.base_url],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip

    done = acd("agent", "1001", "login")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1001: available"
    assert (
        acd("agent", "1001", "not-ready", "--reason", "lunch").stdout.strip() == "1001: not_ready"
    )
    agents = acd("agents")
    assert agents.returncode == 0
    lines = agents.stdout.splitlines()
    assert lines[0].split() == ["agent", "name", "state", "queues:penalty", "skills"]
    assert lines[1].split()[:4] == ["1001", "Alice", "not_ready", "(lunch)"]
    queues = acd("queues", "--json")
    assert {q["name"] for q in json.loads(queues.stdout)} == {"support", "sales"}
    denied = acd("agent", "1002", "login", token=AGENT_1001)
    assert denied.returncode == 1
    assert "403 agents may only see and change themselves" in denied.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "engine.cli", "queues", "--url", "http://127.0.0.1:9", "--token", ADMIN],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unreachable.returncode == 1
    assert "cannot reach the daemon at http://127.0.0.1:9" in unreachable.stderr


def test_recording_download_is_authorised_and_audited(daemon: DaemonProcess) -> None:
    import asyncio
    import sqlite3 as sq
    import urllib.request as ur

    import numpy as np

    from engine.config import load_config
    from engine.recording.service import RecordingService
    from engine.storage import Store
    from sip.rtp.g711 import encode_pcmu

    async def make_recording() -> str:
        # The daemon's own database (WAL lets two processes share it) and recordings directory.
        cfg = load_config(daemon.config_path)
        store = await Store.open(f"sqlite+aiosqlite:///{daemon.workdir}/var/acd.sqlite3")
        svc = RecordingService(cfg, store, base_dir=daemon.workdir)
        await svc.start_writer()
        recording = await svc.start("call-77", "support", "1001")
        assert recording is not None
        pcm = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype(np.int16)
        for i in range(50):
            recording.feed(0, i * 160, encode_pcmu(pcm), "PCMU")
        recording.close(50 * 160)
        await svc.wait_idle()
        await svc.stop()
        await store.close()
        return str(recording.recording_id)

    recording_id = asyncio.run(make_recording())
    status, listed = call(daemon, "GET", "/api/v1/recordings?call_id=call-77", SUPERVISOR)
    assert status == 200
    assert [r["id"] for r in listed] == [recording_id]  # type: ignore[union-attr, index]

    request = ur.Request(f"{daemon.base_url}/api/v1/recordings/{recording_id}/audio")
    request.add_header("Authorization", f"Bearer {SUPERVISOR}")
    with ur.urlopen(request, timeout=10) as resp:
        body = resp.read()
        assert resp.headers["Content-Type"] == "audio/wav"
    assert body[:4] == b"RIFF"
    assert len(body) == 44 + 50 * 160 * 4  # 1 s of 8 kHz 16-bit stereo

    # Agent 1001 handled the call, but agents_download_own is off: denied, and audited.
    assert call(daemon, "GET", f"/api/v1/recordings/{recording_id}/audio", AGENT_1001)[0] == 403
    assert call(daemon, "GET", "/api/v1/recordings", AGENT_1001)[0] == 403
    hold = {"legal_hold": True}
    assert (
        call(daemon, "PUT", f"/api/v1/recordings/{recording_id}/legal_hold", SUPERVISOR, hold)[0]
        == 403
    )
    assert call(daemon, "PUT", f"/api/v1/recordings/{recording_id}/legal_hold", ADMIN, hold) == (
        200,
        {"id": recording_id, "legal_hold": True},
    )
    with sq.connect(daemon.workdir / "var" / "acd.sqlite3") as conn:
        audit = conn.execute(
            "SELECT actor, action, outcome FROM audit_log WHERE object_id = ? ORDER BY id",
            (recording_id,),
        ).fetchall()
    assert audit == [
        ("sup", "recording_download", "allowed"),
        ("agent:1001", "recording_download", "denied"),
        ("ops", "legal_hold", "done"),
    ]
