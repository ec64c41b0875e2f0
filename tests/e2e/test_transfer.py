"""The flow's `transfer` step: a blind transfer through a PBX trunk that challenges with 407, and a
refused transfer (486) after which the flow goes on into a queue. SIPp on every side."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.peers import sipp, stop
from tests.e2e.test_call_load import front_door, login

pytestmark = pytest.mark.e2e

SIPP_DIR = Path(__file__).parent / "sipp"

STEPS = """{ type = "answer" },
  { type = "transfer", trunk = "pbx", number = "5000", timeout_s = 10 },
  { type = "enqueue", queue = "support" }"""


def config(pbx_port: int, uas_port: int) -> str:
    return (
        front_door(STEPS)
        + f"""
[[trunks]]
name = "pbx"
allow = ["192.0.2.1"]
outbound_proxy = "127.0.0.1:{pbx_port}"
outbound_username = "trunkuser"
outbound_password = "trunksecret"

[[queues]]
name = "support"

[[agents]]
id = "b1"
login = "static"
contact = "sip:b1@127.0.0.1:{uas_port}"
queues = {{ support = 0 }}
"""
    )


def call_row(daemon: DaemonProcess) -> dict[str, object]:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        (row,) = db.execute("SELECT * FROM calls").fetchall()
    return dict(row)


def transfer_call(
    start_daemon: DaemonFactory, tmp_path: Path, far_end: Path, hold_ms: int
) -> tuple[DaemonProcess, dict[str, object], int]:
    """One SIPp caller into the transfer flow; ``far_end`` is the SIPp scenario behind the trunk,
    a SIPp uas is agent b1 of the queue the flow falls back to. (daemon, CDR row, far end's port);
    every SIPp is stopped by PID whatever happens."""
    pbx = sipp(tmp_path, ["-sf", str(far_end)], None, "-m", "1", "-trace_msg")
    uas = sipp(tmp_path, ["-sn", "uas"], None)
    caller = None
    try:
        time.sleep(0.5)
        daemon = start_daemon(config(pbx.sip_port, uas.sip_port))  # type: ignore[attr-defined]
        login(daemon, "b1")
        target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
        caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1",
                      "-d", str(hold_ms))  # fmt: skip
        assert caller.wait(timeout=30) == 0
        assert pbx.wait(timeout=30) == 0, pbx.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        for proc in (caller, pbx, uas):
            if proc is not None:
                stop(proc)
    time.sleep(1.5)
    return daemon, call_row(daemon), int(pbx.sip_port)  # type: ignore[attr-defined]


def test_transfer_through_a_challenging_pbx_bridges_the_caller(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    _, row, pbx_port = transfer_call(
        start_daemon, tmp_path, SIPP_DIR / "pbx_extension_407.xml", hold_ms=2000
    )
    assert (row["disposition"], row["agent_id"], row["queue"]) == ("transferred", None, None)
    assert row["hangup_side"] == "caller"
    data = json.loads(str(row["flow_data"]))
    assert (data["transfer_target"], data.get("transfer_status")) == ("5000", None)
    assert 1.5 < float(row["talk_s"]) < 4.0  # the caller's 2 s hold, bridged to the PBX
    trace = next(tmp_path.glob("pbx_extension_407_*_messages.log")).read_text()
    # Both INVITEs (the challenged one and the one with credentials) ask the PBX for 5000.
    assert (
        re.findall(r"^INVITE (\S+) SIP/2.0", trace, re.M) == [f"sip:5000@127.0.0.1:{pbx_port}"] * 2
    )
    assert 'Proxy-Authorization: Digest username="trunkuser"' in trace
    assert "X-ACD-Call-ID:" in trace


def test_refused_transfer_goes_on_with_the_flow(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    _, row, _ = transfer_call(
        start_daemon, tmp_path, SIPP_DIR / "scenarios" / "agent_busy.xml", hold_ms=1000
    )
    # 486 from the far end: the next step queued the caller, and agent b1 took the call.
    assert (row["disposition"], row["agent_id"], row["queue"]) == ("answered", "b1", "support")
    data = json.loads(str(row["flow_data"]))
    assert (data["transfer_target"], data["transfer_status"]) == ("5000", "busy")
