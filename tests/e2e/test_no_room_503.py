"""A daemon with no room for another call answers it 503 with Retry-After at once (issue 16).

Two limits, each with its own small daemon and real SIPp callers: the RTP port range ([media]
rtp_port_min/max: two pairs) and the router's ``runtime.max_tasks`` (one). The calls the daemon
has room for are answered and wait in a queue without agents (holding a port pair and a router
slot each); the extra ones, sent while those wait, must get 503 with Retry-After (SIPp's
caller_expect_503 scenario fails on anything else), ``acd_calls_rejected_total`` counts them
under their reason, each gets its CDR row, and nothing ends in call_task_failed.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import configs
from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import free_port_block, sipp, stop

SCENARIOS = Path(__file__).parent / "sipp" / "scenarios"
ADMIN = "no-room-admin-token"


def config(rtp_pairs: int, max_tasks: int) -> str:
    rtp = free_port_block(2 * rtp_pairs + 2)
    return configs.front_door(ADMIN) + (
        f"[runtime]\nmax_tasks = {max_tasks}\n\n"
        f"[media]\nrtp_port_min = {rtp}\nrtp_port_max = {rtp + 2 * rtp_pairs}\n\n"
        '[[queues]]\nname = "support"\njoin_empty = true\n'
    )


def rejected(daemon: DaemonProcess, reason: str) -> float:
    _, body, _ = daemon.get("/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "acd_calls_rejected_total" and sample.labels == {"reason": reason}:
                return float(sample.value)
    return 0.0


def live_calls(daemon: DaemonProcess) -> int:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM calls WHERE ended_at IS NULL").fetchone()[0])


def fill_then_overflow(
    daemon: DaemonProcess, tmp_path: Path, room: int, extra: int, reason: str
) -> None:
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    subprocess.run(  # what caller_tone.xml streams
        ["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", "caller.wav",
         "synth", "1", "sine", "440", "vol", "0.5"],
        check=True, cwd=tmp_path, timeout=30,
    )  # fmt: skip
    # the calls there is room for: answered, then waiting in the queue until SIPp hangs up
    waiting = sipp(tmp_path, ["-sf", str(SCENARIOS / "caller_tone.xml")], target, "-s", "support",
                   "-m", str(room), "-l", str(room), "-r", "50", "-d", "3000")  # fmt: skip
    try:
        wait_until(lambda: live_calls(daemon) == room, 15, f"{room} live calls")
        refused = sipp(tmp_path, ["-sf", str(SCENARIOS / "caller_expect_503_retry_after.xml")], target,
                       "-s", "support", "-m", str(extra), "-l", str(extra), "-r", "50")  # fmt: skip
        assert refused.wait(timeout=20) == 0, refused.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
        assert waiting.wait(timeout=20) == 0, waiting.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
    finally:
        stop(waiting)
    assert rejected(daemon, reason) == extra
    wait_until(lambda: live_calls(daemon) == 0, 10, "every call's row finished")
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute("SELECT disposition, hangup_reason FROM calls").fetchall()
    assert sorted(d for d, _ in rows).count("rejected") == extra
    assert {r for d, r in rows if d == "rejected"} == {f"503 no room ({reason})"}
    assert len(rows) == room + extra
    events = [line.get("event") for line in daemon.log_lines()]
    assert "call_task_failed" not in events
    assert events.count("call_rejected_no_room") == extra
    assert daemon.stop() == 0


def test_rtp_port_range_used_up_answers_503(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    daemon = start_daemon(config(rtp_pairs=2, max_tasks=64))
    fill_then_overflow(daemon, tmp_path, room=2, extra=3, reason="rtp_ports")


def test_router_full_answers_503(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    daemon = start_daemon(config(rtp_pairs=20, max_tasks=1))
    fill_then_overflow(daemon, tmp_path, room=1, extra=3, reason="router_full")
