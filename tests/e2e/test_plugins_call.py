"""A plugin in the real daemon: installed as a distribution (``.dist-info`` on the daemon's
``PYTHONPATH``), enabled in its config, driven by SIPp calls.

One daemon, four calls: a plugin step that raises ends that call (480 to SIPp, CDR
``hangup_reason`` ``plugin_error``, counted) and the next call still runs the plugin's other
steps and its lookup provider (flow data written by the plugin in the CDR); a queued call's
events (call started, queue enter and abandon, call completed) reach the plugin's event consumer; a reload with settings the plugin refuses is rejected naming the plugin and key,
and the daemon keeps serving with the plugins it had.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.peers import free_port_block, sipp, stop
from tests.plugin_testkit import install_plugin

pytestmark = pytest.mark.e2e

SCENARIOS = Path(__file__).parent / "sipp" / "scenarios"


def _config(events_file: Path, flow: str, vip_prefix: str = '"7"') -> str:
    """Every number dialled runs ``flow``; a reload switches it."""
    rtp = free_port_block(20)
    return f"""
[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 18}

[plugins]
enabled = ["testplug"]

[plugins.testplug]
vip_prefix = {vip_prefix}
events_file = "{events_file}"

[[trunks]]
name = "callers"
allow = ["127.0.0.0/8"]

[[routes]]
pattern = ".*"
flow = "{flow}"

[[flows]]
name = "boom"
steps = [{{ type = "explode", message = "vault closed" }}, {{ type = "hangup" }}]

[[flows]]
name = "vip"
steps = [
  {{ type = "set", data = {{ account = "7123" }} }},
  {{ type = "classify", var = "account" }},
  {{ type = "lookup", provider = "tier", on_error = "hangup" }},
  {{ type = "leave", reason = "classified" }},
]

[[flows]]
name = "queued"
steps = [{{ type = "answer" }}, {{ type = "enqueue", queue = "support" }}]

[[queues]]
name = "support"
record = "never"
"""


def _calls(daemon: DaemonProcess, n: int) -> list[sqlite3.Row]:
    path = daemon.workdir / "var" / "acd.sqlite3"
    deadline = time.monotonic() + 15
    while True:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM calls ORDER BY arrived_at").fetchall()
        if len(rows) >= n or time.monotonic() > deadline:
            assert len(rows) == n, [dict(r) for r in rows]
            return rows
        time.sleep(0.1)


def _metric(daemon: DaemonProcess, prefix: str) -> float:
    _, body, _ = daemon.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def _reload(daemon: DaemonProcess, text: str, outcome: str) -> None:
    before = _metric(daemon, f'acd_config_reloads_total{{outcome="{outcome}"}}')
    daemon.config_path.write_text(text)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _metric(daemon, f'acd_config_reloads_total{{outcome="{outcome}"}}') <= before:
        assert time.monotonic() < deadline, daemon.log_path.read_text()[-3000:]
        time.sleep(0.05)


def _refused_call(daemon: DaemonProcess, target: str, workdir: Path) -> None:
    proc = sipp(workdir, ["-sf", str(SCENARIOS / "caller_expect_480.xml")], target,
                "-s", "x", "-m", "1")  # fmt: skip
    try:
        assert proc.wait(timeout=20) == 0, proc.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(proc)


def _queued_call(daemon: DaemonProcess, target: str, workdir: Path, events: Path, n: int) -> None:
    """SIPp's uac: answered, queued (nobody to take it), hangs up after 300 ms: the call's
    events must reach the plugin's consumer (its events file), in order."""
    caller = sipp(workdir, ["-sn", "uac"], target, "-s", "x", "-m", "1", "-d", "300")
    try:
        assert caller.wait(timeout=20) == 0, caller.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(caller)
    queued = _calls(daemon, n)[n - 1]
    assert queued["flow"] == "queued"
    deadline = time.monotonic() + 10
    while True:
        lines = events.read_text().splitlines() if events.exists() else []
        mine = [
            (e["type"], e["event"])
            for e in map(json.loads, lines)
            if e.get("call_id") == queued["id"]
        ]
        if ("call", "completed") in mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mine == [("call", "started"), ("queue", "enter"), ("queue", "abandon"),
                    ("call", "completed")]  # fmt: skip


def test_plugin_steps_errors_consumers_and_reload_in_the_daemon(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    site = install_plugin(tmp_path / "site")
    events = tmp_path / "events.jsonl"
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    daemon = start_daemon(_config(events, "boom"), env=env)
    ready = daemon.wait_for_log("ready")
    assert ready["plugins"] == ["testplug"]
    target = str(ready["sip"]).removeprefix("udp:")

    # 1. The plugin's step raises: that call ends with 480 and plugin_error.
    _refused_call(daemon, target, tmp_path)
    (boom,) = _calls(daemon, 1)
    assert boom["flow"] == "boom"
    assert boom["hangup_reason"] == "plugin_error"
    assert _metric(daemon, 'acd_unexpected_errors_total{where="plugin"}') == 1.0
    failed = daemon.wait_for_log("plugin_failed")
    assert failed["error"] == "RuntimeError: vault closed"
    assert failed["call_id"] == boom["id"]

    # 2. The daemon serves on: the next call runs the plugin's steps (reload to the vip flow).
    _reload(daemon, _config(events, "vip"), "applied")
    _refused_call(daemon, target, tmp_path)
    vip = _calls(daemon, 2)[1]
    assert vip["hangup_reason"] == "classified"
    vip_data = json.loads(vip["flow_data"])
    assert vip_data["tier"] == "standard"  # the provider's answer (caller "sipp") came last
    assert vip_data["looked_up"] is True

    # 3. A queued caller who hangs up: enter and abandon reach the plugin's consumer.
    _reload(daemon, _config(events, "queued"), "applied")
    _queued_call(daemon, target, tmp_path, events, n=3)

    # 4. A reload with settings the plugin refuses: rejected, naming plugin and key; still serving.
    _reload(daemon, _config(events, "vip", vip_prefix="5"), "rejected")
    rejected = daemon.wait_for_log("reload_rejected")
    assert "plugins.testplug.vip_prefix: expected a string, found integer 5" in str(
        rejected["reason"]
    )
    _queued_call(daemon, target, tmp_path, events, n=4)  # the running config, plugin and all
