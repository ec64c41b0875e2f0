"""The daemon as a process: health, readiness, metrics checked by promtool, reload, clean stop."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.conftest import DaemonFactory
from tests.e2e.peers import sipp

pytestmark = pytest.mark.e2e


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[bytes]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/test installs the Debian package 'prometheus'"
    return subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )


def test_health_ready_metrics_and_clean_sigterm(start_daemon: DaemonFactory) -> None:
    daemon = start_daemon()
    assert daemon.get_json("/healthz") == (200, {"status": "ok", "version": "0.1.0"})
    status, body = daemon.get_json("/readyz")
    assert status == 200
    assert body == {
        "status": "ready",
        "checks": {"storage": "ok", "listeners": "ok", "cdr": "ok", "recordings": "ok"},
    }

    time.sleep(0.6)  # let the loop-lag monitor take a couple of samples
    status, exposition, content_type = daemon.get("/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    text = exposition.decode()
    assert 'acd_build_info{python="' in text
    assert 'version="0.1.0"' in text
    assert "acd_event_loop_lag_seconds_bucket" in text
    count = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("acd_event_loop_lag_seconds_count")
    )
    assert count >= 1
    assert "process_resident_memory_bytes" in text
    assert "acd_ready 1.0" in text
    checked = promtool_check(exposition)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    assert (daemon.workdir / "var" / "acd.sqlite3").is_file()
    assert daemon.stop() == 0
    events = [line["event"] for line in daemon.log_lines()]
    assert events[-2:] == ["stopping", "stopped"]


def test_var_dir_holds_the_database_and_the_recordings(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    # Neither storage.sqlite_path nor recordings.dir in the file: runtime.var_dir places both.
    daemon = start_daemon('[runtime]\nvar_dir = "state"\n', storage='url = ""')
    sip = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    # No trunk allows anyone: the INVITE gets 403, and its attempt a CDR row.
    caller = sipp(tmp_path, ["-sn", "uac"], sip, "-s", "support", "-m", "1", "-timeout", "10")
    assert caller.wait(timeout=15) == 1  # SIPp's uac wanted a 200
    assert daemon.stop() == 0
    state = daemon.workdir / "state"
    assert (state / "recordings").is_dir()
    assert not (daemon.workdir / "var").exists()
    with sqlite3.connect(state / "acd.sqlite3") as db:
        rows = db.execute("SELECT disposition, hangup_reason FROM calls").fetchall()
    assert rows == [("rejected", "403 Source not allowed")]


def test_sigint_also_stops_with_exit_zero(start_daemon: DaemonFactory) -> None:
    daemon = start_daemon()
    daemon.signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=20) == 0


def test_openapi_document_and_api_errors_as_problem_json(start_daemon: DaemonFactory) -> None:
    daemon = start_daemon()
    status, doc = daemon.get_json("/api/v1/openapi.json")
    assert status == 200
    assert isinstance(doc, dict)
    assert doc["openapi"] == "3.1.0"
    assert {"/healthz", "/readyz", "/metrics", "/api/v1/"} <= set(doc["paths"])
    assert "Readiness" in doc["components"]["schemas"]
    status, index = daemon.get_json("/api/v1/")
    assert status == 200
    assert index["api"] == "v1"
    status, body, content_type = daemon.get("/api/v1/no-such-thing")
    assert status == 401  # unauthenticated: nothing about the API is revealed
    assert content_type == "application/problem+json"
    assert b'"status":401' in body


def test_sighup_reload_keeps_running_config_when_invalid(start_daemon: DaemonFactory) -> None:
    daemon = start_daemon('[[queues]]\nname = "support"\n')
    original = daemon.config_path.read_text()

    daemon.config_path.write_text(
        original.replace('name = "support"', 'name = "support"\nring_timeout_s = "soon"')
    )
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_for_log("reload_rejected")
    assert "queues[0].ring_timeout_s" in str(rejected["reason"])
    assert str(daemon.config_path) in str(rejected["reason"])
    assert daemon.get("/healthz")[0] == 200

    daemon.config_path.write_text(original.replace('"support"', '"billing"'))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("reload_applied")
    _, exposition, _ = daemon.get("/metrics")
    text = exposition.decode()
    assert 'acd_config_reloads_total{outcome="rejected"} 1.0' in text
    assert 'acd_config_reloads_total{outcome="applied"} 1.0' in text
    assert daemon.stop() == 0


def test_readyz_reports_unreachable_storage_and_start_fails_cleanly(
    start_daemon: DaemonFactory,
) -> None:
    daemon = start_daemon(storage='url = "postgresql://acd@127.0.0.1:9/nowhere"', wait=False)
    assert daemon.proc.wait(timeout=30) == 1
    failed = daemon.wait_for_log("storage_open_failed")
    assert "127.0.0.1:9" in str(failed["url"])


def test_port_in_use_is_reported_not_a_traceback(start_daemon: DaemonFactory) -> None:
    first = start_daemon()
    clash = start_daemon(http_port=first.http_port, wait=False)
    assert clash.proc.wait(timeout=30) == 1
    failed = clash.wait_for_log("http_listen_failed")
    assert failed["port"] == first.http_port
    assert "Traceback" not in clash.log_path.read_text()
    assert first.get("/healthz")[0] == 200
    assert first.stop() == 0


def test_readme_run_command_starts_and_stops_the_daemon(repo_root: Path, tmp_path: Path) -> None:
    """README command 1 (`scripts/run`) on this checkout: up, healthy, and SIGTERM exits 0."""
    http_port = free_port()
    cfg = tmp_path / "acd.toml"
    cfg.write_text(
        (repo_root / "config" / "acd.toml")
        .read_text()
        .replace("port = 8080", f"port = {http_port}")
        .replace("port = 5060", f"port = {free_port()}")
        .replace('sqlite_path = "var/acd.sqlite3"', f'sqlite_path = "{tmp_path}/acd.sqlite3"')
    )
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [str(repo_root / "scripts" / "run"), "--config", str(cfg)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300  # first use may (re)install the package into .venv
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/healthz", timeout=1
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
            assert proc.poll() is None, log_path.read_text()
        else:
            raise AssertionError("scripts/run did not bring the daemon up")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_systemd_readiness_watchdog_reload_and_stop(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Under Type=notify (config/acd.service): READY=1 only once /readyz answers 200, WATCHDOG=1
    at half of WATCHDOG_USEC from the event loop, RELOADING=1 then READY=1 around a SIGHUP
    reload, STOPPING=1 when SIGTERM starts the drain. The test's socket plays systemd."""
    import socket

    path = tmp_path / "notify.sock"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(path))
    systemd.settimeout(20)
    received: list[dict[str, str]] = []

    def next_message() -> dict[str, str]:
        fields = dict(line.split("=", 1) for line in systemd.recv(4096).decode().splitlines())
        received.append(fields)
        return fields

    def wait_message(key: str) -> dict[str, str]:
        while True:
            fields = next_message()
            if key in fields:
                return fields

    try:
        daemon = start_daemon(
            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}, wait=False
        )
        ready = wait_message("READY")
        assert daemon.get_json("/readyz")[0] == 200  # never READY=1 before ready
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("ready: SIP udp:127.0.0.1:")
        began = time.monotonic()
        pings = 0
        while time.monotonic() - began < 1.0:
            pings += "WATCHDOG" in next_message()
        assert 3 <= pings <= 8  # every 0.2 s
        daemon.signal(signal.SIGHUP)
        reloading = wait_message("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert wait_message("READY")["STATUS"].endswith("config reloaded")
        daemon.signal(signal.SIGTERM)
        assert wait_message("STOPPING")["STATUS"] == "draining 0 live calls"
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        systemd.close()
    assert all(set(m) <= {"READY", "STATUS", "WATCHDOG", "RELOADING", "MONOTONIC_USEC",
                          "STOPPING"} for m in received)  # fmt: skip


def test_the_shipped_systemd_unit_runs_what_acd_accepts(repo_root: Path) -> None:
    """config/acd.service: Type=notify with a watchdog, and an ExecStart the CLI parses."""
    import configparser
    import shlex

    from engine.cli.main import build_parser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(repo_root / "config" / "acd.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    program, *args = shlex.split(service["ExecStart"])
    assert program.endswith("/bin/acd")
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.config) == ("run", "/etc/acd/acd.toml")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
