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


def test_transfer_through_a_challenging_pbx_bridges_the_caller(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    pbx = sipp(tmp_path, ["-sf", str(SIPP_DIR / "pbx_extension_407.xml")], None,
               "-m", "1", "-trace_msg")  # fmt: skip
    uas = sipp(tmp_path, ["-sn", "uas"], None)  # the queue's agent: must not be needed
    time.sleep(0.5)
    daemon = start_daemon(config(pbx.sip_port, uas.sip_port))  # type: ignore[attr-defined]
    login(daemon, "b1")
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "2000")
    try:
        assert caller.wait(timeout=30) == 0
        assert pbx.wait(timeout=30) == 0, pbx.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(pbx)
        stop(uas)
    time.sleep(1.5)
    row = call_row(daemon)
    assert (row["disposition"], row["agent_id"], row["queue"]) == ("transferred", None, None)
    assert row["hangup_side"] == "caller"
    data = json.loads(str(row["flow_data"]))
    assert (data["transfer_target"], data.get("transfer_status")) == ("5000", None)
    assert 1.5 < float(row["talk_s"]) < 4.0  # the caller's 2 s hold, bridged to the PBX
    trace = next(tmp_path.glob("pbx_extension_407_*_messages.log")).read_text()
    # Both INVITEs (the challenged one and the one with credentials) ask the PBX for 5000.
    assert (
        re.findall(r"^INVITE (\S+) SIP/2.0", trace, re.M)
        == [
            f"sip:5000@127.0.0.1:{pbx.sip_port}"  # type: ignore[attr-defined]
        ]
        * 2
    )
    assert 'Proxy-Authorization: Digest username="trunkuser"' in trace
    assert "X-ACD-Call-ID:" in trace


def test_refused_transfer_goes_on_with_the_flow(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    busy = sipp(tmp_path, ["-sf", str(SIPP_DIR / "scenarios" / "agent_busy.xml")], None,
                "-m", "1", "-trace_msg")  # fmt: skip
    uas = sipp(tmp_path, ["-sn", "uas"], None)
    time.sleep(0.5)
    daemon = start_daemon(config(busy.sip_port, uas.sip_port))  # type: ignore[attr-defined]
    login(daemon, "b1")
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "1000")
    try:
        assert caller.wait(timeout=30) == 0
        assert busy.wait(timeout=10) == 0, busy.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(busy)
        stop(uas)
    time.sleep(1.5)
    row = call_row(daemon)
    # 486 from the far end: the next step queued the caller, and agent b1 took the call.
    assert (row["disposition"], row["agent_id"], row["queue"]) == ("answered", "b1", "support")
    data = json.loads(str(row["flow_data"]))
    assert (data["transfer_target"], data["transfer_status"]) == ("5000", "busy")
