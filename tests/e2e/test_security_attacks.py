"""Real attacker tools against the real daemon: SIPVicious (svcrack, svmap) and a SIPp flood.

- svcrack guesses agent 1001's password from a dictionary of 300 wrong ones followed by the right
  one: the daemon bans it after ``max_failures`` guesses, so it never reaches the right one, and
  a real phone (baresip) registers as 1001 meanwhile from its own address. The ban is in the API,
  in /metrics, and in the log as the line docs/security.md's fail2ban filter matches.
- svmap (a scanner: User-Agent friendly-scanner) finds nothing while ``drop_scanners`` is on,
  and finds the daemon once a reload turns it off.
- SIPp sends INVITEs from 127.0.0.2 far over the flood limit: they are dropped and counted, while
  a legitimate SIPp call from 127.0.0.1 reaches an agent and completes.

sipvicious 0.3.3 (Debian) parses svcrack's ``-b/--bindingip`` but never passes it on: svcrack
binds 0.0.0.0 and its packets to 127.0.0.1 leave from 127.0.0.1. So in the svcrack test the
attacker is 127.0.0.1 and the trunk allow-list leaves 127.0.0.1 out; the phone registers from
127.0.0.4. svmap does honour ``-b`` and scans from 127.0.0.2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import Baresip, free_port_block, sipp, stop
from tests.e2e.test_call_load import ADMIN, login

pytestmark = pytest.mark.e2e

PASSWORD = "alice-secret-1001"
AGENT_1001 = f"""
[[queues]]
name = "support"

[[agents]]
id = "1001"
password = "{PASSWORD}"
queues = {{ support = 0 }}
"""
REPO = Path(__file__).resolve().parents[2]


def sip_port(daemon: DaemonProcess) -> int:
    return int(str(daemon.wait_for_log("ready")["sip"]).rsplit(":", 1)[1])


def api(daemon: DaemonProcess, path: str) -> object:
    request = urllib.request.Request(daemon.base_url + path)
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    _, body, _ = daemon.get("/metrics")
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{wanted}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, body.decode(), re.M)
    return float(match.group(1)) if match else 0.0


def sipvicious(tool: str, *args: str, cwd: Path, timeout_s: float = 60) -> str:
    """Run one SIPVicious tool to its end (each stops by itself once nothing answers for
    ``--maximumtime``/its timeout); its output. Stopped by its PID if it overruns."""
    binary = shutil.which(tool)
    assert binary, f"{tool} is missing: apt-get install sipvicious (scripts/test does)"
    env = dict(os.environ, HOME=str(cwd))  # it may keep sessions under ~/.sipvicious
    with (cwd / f"{tool}.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{tool} ran over {timeout_s} s") from None
    return (cwd / f"{tool}.log").read_text(errors="replace")


def fail2ban_filter() -> re.Pattern[str]:
    """The failregex of docs/security.md's filter, with fail2ban's <HOST> (its IPv4/IPv6 forms)."""
    doc = (REPO / "docs" / "security.md").read_text()
    (line,) = re.findall(r"^failregex = (.+)$", doc, re.M)
    host = r"(?P<host>(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+)"
    return re.compile(line.replace("<HOST>", host))


def test_svcrack_is_banned_before_it_finds_the_password_and_a_phone_still_registers(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    daemon = start_daemon(
        front_door(ADMIN, allow=("127.0.0.3/32",))  # not 127.0.0.1: svcrack comes from there
        + AGENT_1001
        # svcrack says User-Agent: friendly-scanner; with drop_scanners (the default) it would be
        # dropped at its first packet (test_svmap_... below): here it is the bans that must stop it.
        + "[security]\ndrop_scanners = false\n"
    )
    port = sip_port(daemon)
    guesses = [f"guess-{i:03d}" for i in range(300)] + [PASSWORD]
    (tmp_path / "passwords.txt").write_text("\n".join(guesses) + "\n")
    phone: Baresip | None = None
    started = time.monotonic()
    with (tmp_path / "svcrack.log").open("wb") as log:
        attack = subprocess.Popen(
            [shutil.which("svcrack") or "svcrack", "-u", "1001", "-d", "passwords.txt",
             "-p", str(port), "-P", str(free_port()), "--maximumtime", "4", "127.0.0.1"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, HOME=str(tmp_path)),
        )  # fmt: skip
    try:
        # the agent's real phone, from its own address, while the attack goes on
        phone = Baresip(
            tmp_path / "phone",
            f"<sip:1001@127.0.0.1:{port}>;auth_pass={PASSWORD};regint=60;audio_codecs=PCMU",
            880,
            host="127.0.0.4",
        )
        phone.wait_for("200 OK")
        wait_until(
            lambda: api(daemon, "/api/v1/agents/1001")["state"] == "available",  # type: ignore[index]
            10,
            "agent 1001 available",
        )
        attack.wait(timeout=60)  # svcrack stops 4 s after its last answer
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
        if phone is not None:
            phone.stop()
    took = time.monotonic() - started
    out = (tmp_path / "svcrack.log").read_text(errors="replace")
    assert "The password for" not in out, out
    assert PASSWORD not in out, out
    assert "since we last received a response" in out, out  # it gave up: the daemon went silent

    guessed = metric(daemon, "acd_sip_auth_failures_total", reason="bad_credentials")
    assert guessed == 5  # max_failures: every guess after that was dropped unseen
    (ban,) = api(daemon, "/api/v1/security/bans")  # type: ignore[misc]
    assert (ban["address"], ban["reason"], ban["failures"], ban["user"]) == (
        "127.0.0.1", "auth_failures", 5, "1001",
    )  # fmt: skip
    assert metric(daemon, "acd_security_bans_active") == 1
    assert metric(daemon, "acd_sip_parse_errors_total", reason="banned_dropped") >= 1

    # the fail2ban filter of docs/security.md matches the ban line, and no other line
    pattern = fail2ban_filter()
    raw = daemon.log_path.read_text().splitlines()
    matched = [m.group("host") for m in map(pattern.search, raw) if m is not None]
    assert matched == ["127.0.0.1"], [line for line in raw if "security" in line]
    print(f"svcrack: {guessed:.0f} guesses reached the digest check of 301 tried, {took:.1f} s")


def test_svmap_finds_nothing_while_scanners_are_dropped(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    daemon = start_daemon(front_door(ADMIN, allow=("127.0.0.3/32",)) + AGENT_1001)
    port = sip_port(daemon)
    scan = ["-b", "127.0.0.2", "-P", str(free_port()), "-p", str(port), "127.0.0.1"]
    out = sipvicious("svmap", *scan, cwd=tmp_path)
    assert "127.0.0.1:" not in out, out  # no SIP device found
    assert metric(daemon, "acd_sip_parse_errors_total", reason="scanner_dropped") >= 1
    assert api(daemon, "/api/v1/security/bans") == []  # dropped, not banned (ban_scanners off)

    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text + "\n[security]\ndrop_scanners = false\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("reload_applied")
    out = sipvicious("svmap", *scan, cwd=tmp_path)
    assert f"127.0.0.1:{port}" in out, out  # the same scan finds it now


def test_an_invite_flood_is_dropped_while_a_legitimate_call_completes(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    agent = sipp(tmp_path, ["-sn", "uas"], None)
    agent_port = agent.sip_port  # type: ignore[attr-defined]
    rtp = free_port_block(100)
    flood = caller = None
    try:
        time.sleep(0.5)
        daemon = start_daemon(
            front_door(ADMIN, allow=("127.0.0.1/32",))  # the legitimate trunk; 127.0.0.2 is not
            + f"""
[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 98}

[[queues]]
name = "support"
record = "never"

[[agents]]
id = "a1"
login = "static"
contact = "sip:a1@127.0.0.1:{agent_port}"
queues = {{ support = 0 }}
"""
        )
        login(daemon, "a1")
        target = f"127.0.0.1:{sip_port(daemon)}"
        # 400 INVITEs/s from one address, 8 times the default flood limit, for 5 s (SIPp then
        # waits for answers that never come to the dropped ones: it is stopped by its PID)
        flood = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-r", "400", "-m", "2000",
                     host="127.0.0.2")  # fmt: skip
        wait_until(
            lambda: metric(daemon, "acd_sip_parse_errors_total", reason="flood_dropped") > 100,
            10,
            "the flood to be dropped",
        )
        caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "1000")
        assert caller.wait(timeout=30) == 0, caller.log_path.read_text()  # type: ignore[attr-defined]
        assert flood.poll() is None  # the call was made while the flood went on
    finally:
        for proc in (flood, caller, agent):
            if proc is not None:
                stop(proc)
    dropped = metric(daemon, "acd_sip_parse_errors_total", reason="flood_dropped")
    assert metric(daemon, "acd_security_floods_total") >= 1
    assert 'acd_calls_total{outcome="answered"} 1.0' in daemon.get("/metrics")[1].decode()
    floods = [line for line in daemon.log_lines() if line.get("event") == "security_flood"]
    assert {line["address"] for line in floods} == {"127.0.0.2"}
    print(f"flood: {dropped:.0f} INVITEs from 127.0.0.2 dropped; the legitimate call completed")
