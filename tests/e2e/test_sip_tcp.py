"""Calls over TCP: a SIPp trunk over TCP into the ACD's TCP listener, the agent's phone reached over
TCP because its contact says ;transport=tcp, alongside the UDP listener. And a bad TLS listener is
refused with the file and key named."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, self_signed_cert
from tests.e2e.conftest import DaemonFactory
from tests.e2e.peers import Baresip, sipp, stop
from tests.e2e.test_call_load import front_door, login

pytestmark = pytest.mark.e2e


@pytest.fixture
def uas(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start SIPp UAS agents; every one is stopped (by PID) when the test ends, failed or not."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = sipp(tmp_path, ["-sn", "uas", *args], None, "-trace_msg")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc)


def test_trunk_and_agent_over_tcp(
    start_daemon: DaemonFactory, tmp_path: Path, uas: Callable[..., subprocess.Popen[bytes]]
) -> None:
    agent = uas("-t", "t1")
    time.sleep(0.5)
    tcp_port = free_port()
    daemon = start_daemon(
        front_door()
        + f"""
[[sip.listeners]]
transport = "tcp"
bind = "127.0.0.1"
port = {tcp_port}

[[queues]]
name = "support"

[[agents]]
id = "a1"
login = "static"
contact = "sip:a1@127.0.0.1:{agent.sip_port};transport=tcp"
queues = {{ support = 0 }}
"""  # type: ignore[attr-defined]
    )
    login(daemon, "a1")
    ready = daemon.wait_for_log("ready")
    assert ready["sip_listeners"][1] == f"tcp:127.0.0.1:{tcp_port}"  # type: ignore[index]
    caller = sipp(tmp_path, ["-sn", "uac", "-t", "t1"], f"127.0.0.1:{tcp_port}",
                  "-s", "support", "-m", "1", "-d", "1000", "-trace_msg")  # fmt: skip
    try:
        assert caller.wait(timeout=30) == 0, caller.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(caller)
        stop(agent)  # now, so its message trace is complete
    time.sleep(1.5)
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (row,) = db.execute("SELECT agent_id, disposition, hangup_side FROM calls").fetchall()
    assert row == ("a1", "answered", "caller")
    # The agent leg really went over TCP: every request we sent it has our TCP Via and Contact.
    (trace,) = tmp_path.glob("uas_*_messages.log")
    text = trace.read_text()
    vias = re.findall(r"^Via: SIP/2.0/(\w+) 127.0.0.1:(\d+)", text, re.M)
    assert len(vias) >= 3  # INVITE, ACK, BYE
    assert set(vias) == {("TCP", str(tcp_port))}
    assert re.search(rf"^Contact: <sip:[^>]*127.0.0.1:{tcp_port};transport=tcp>", text, re.M)
    # A malformed request over TCP gets its 400 and is counted like one over UDP.
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as conn:
        conn.sendall(
            b"OPTIONS sip:acd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            b"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:acd@127.0.0.1>\r\nCall-ID: tcp-bad\r\n"
            b"CSeq: 1 OPTIONS\r\nMax-Forwards: seventy\r\nContent-Length: 0\r\n\r\n"
        )
        assert conn.recv(4096).startswith(b"SIP/2.0 400 ")
    _, exposition, _ = daemon.get("/metrics")
    assert re.search(r'^acd_sip_parse_errors_total\{reason="bad_header"\} 1\.0$',
                     exposition.decode(), re.M)  # fmt: skip


def test_tls_listener_needs_its_certificate(tmp_path: Path) -> None:
    config = tmp_path / "acd.toml"
    config.write_text(
        '[[sip.listeners]]\ntransport = "tls"\nport = 5061\ncert_file = "missing.pem"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check-config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "sip.listeners[0].cert_file" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_caller_over_tls(
    start_daemon: DaemonFactory, tmp_path: Path, uas: Callable[..., subprocess.Popen[bytes]]
) -> None:
    agent = uas()
    time.sleep(0.5)
    cert, key = self_signed_cert(tmp_path)
    tls_port = free_port()
    daemon = start_daemon(
        front_door()
        + f"""
[[sip.listeners]]
transport = "tls"
bind = "127.0.0.1"
port = {tls_port}
cert_file = "{cert}"
key_file = "{key}"

[[queues]]
name = "support"

[[agents]]
id = "a1"
login = "static"
contact = "sip:a1@127.0.0.1:{agent.sip_port}"
queues = {{ support = 0 }}
"""  # type: ignore[attr-defined]
    )
    login(daemon, "a1")
    sip = f"127.0.0.1:{tls_port};transport=tls"
    caller = Baresip(
        tmp_path / "caller", f"<sip:5551234@{sip}>;regint=0;audio_codecs=PCMU", 440,
        dial=f"sip:support@{sip}",
    )  # fmt: skip
    try:
        caller.wait_for("Call established", 20)
        time.sleep(1.0)
        caller.command("hangup")
        caller.wait_for("terminated (duration", 10)
    finally:
        caller.stop()
        stop(agent)
    time.sleep(1.5)
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (row,) = db.execute("SELECT agent_id, disposition, hangup_side FROM calls").fetchall()
    assert row == ("a1", "answered", "caller")
