"""Full-flow calls per second through the ACD on one core, next to the sippy B2BUA in the same run.

SIPp `uac` is the trunk, SIPp `uas` answers for the agents (static contacts), hold time is short.
The system under test is pinned to CPU 0 (taskset), both SIPp processes to CPU 1, so "one core" is
literal. For each system the call rate steps up; a step passes when SIPp reports 0 failed calls,
and the first step that fails is the system's ceiling. CPU per call comes from the process's own
utime+stime (/proc/PID/stat) over the step.

    ACD path: INVITE -> answer (SDP, RTP leg) -> flow -> enqueue -> routing offer -> INVITE agent
              (SDP, RTP leg) -> 200 -> bridge -> caller BYE -> agent BYE -> CDR + queue events.
    sippy:    b2bua_simple relays INVITE/ACK/BYE to the next hop (no media, no queue, no CDR).

Honest ratios (issue 18): each step also measures, over its offered-traffic window, the system's
CPU share of its core and the two SIPp processes' share of theirs. A system's best rate only
counts as its capacity if at its ceiling it used >= 90 % of its core (it was CPU-bound, not held
up by something else) and SIPp used < 90 % of its core (SIPp was not the limit); and a system
that never failed has no ceiling yet. Otherwise the summary says why and prints no ratio. The two
systems run alternately, ``--rounds`` times (default 2: sippy, acd, sippy, acd), and each round's
ratio is printed, so one lucky or unlucky run shows as a disagreement between the two.

sippy is a reference, never a dependency: it is installed on first run with
`pip install --target var/bench-ref sippy`. The memory figure (first acd round only) is RSS growth
per live bridged call with 300 calls held open.

Usage: python benchmarks/bench_acd.py [--rates 100 200 ...] [--seconds 8] [--hold-ms 100]
                                      [--rounds 2] [--only acd|sippy]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
REF = REPO / "var" / "bench-ref"
SIPP = "/usr/bin/sipp"
TICKS = os.sysconf("SC_CLK_TCK")
ADMIN = "bench-admin-token-0123456789"
AGENTS = 400
CPU_BOUND = 0.90  # share of one core: at or above it a process was CPU-bound


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def sipp(args: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    cmd = ["taskset", "-c", "1", SIPP, *args, "-i", "127.0.0.1", "-nostdin",
           "-cp", str(free_port()), "-mp", str(free_port())]  # fmt: skip
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def failed_calls(output: str) -> int:
    match = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", output)
    return int(match[-1]) if match else -1


def acd_config(
    uas_port: int,
    sip_port: int,
    http_port: int,
    rtp_base: int,
    agents_n: int = AGENTS,
    *,
    rtp_ports: int = 9998,
    workers: int = 0,
    record: str = "never",
) -> str:
    """One queue ``q`` of ``agents_n`` static agents at the SIPp UAS, a trunk for SIPp."""
    agents = "".join(
        f'[[agents]]\nid = "a{i}"\nlogin = "static"\ncontact = "sip:a{i}@127.0.0.1:{uas_port}"\n'
        "skills = { s = 1 }\nqueues = { q = 0 }\n"
        for i in range(agents_n)
    )
    return f"""
[log]
level = "warning"
format = "json"
[http]
port = {http_port}
[[sip.listeners]]
port = {sip_port}
[media]
rtp_port_min = {rtp_base}
rtp_port_max = {rtp_base + rtp_ports}
workers = {workers}
[storage]
sqlite_path = "var/acd.sqlite3"
[[api.tokens]]
name = "bench"
role = "admin"
token = "{ADMIN}"
[[trunks]]
name = "sipp"
allow = ["127.0.0.0/8"]
[[routes]]
number = "q"
flow = "q"
[[flows]]
name = "q"
steps = [{{ type = "answer" }}, {{ type = "enqueue", queue = "q" }}]
[[queues]]
name = "q"
requirements = {{ s = 1 }}
wrap_up_s = 0.0
ring_timeout_s = 10.0
record = "{record}"
{agents}"""


def start_acd(
    workdir: Path,
    uas_port: int,
    *,
    command: list[str] | None = None,
    agents_n: int = AGENTS,
    ready_timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the daemon (``command`` + its config path; default: pinned to CPU 0), log agents in."""
    sip_port, http_port = free_port(), free_port()
    cfg = workdir / "acd.toml"
    cfg.write_text(acd_config(uas_port, sip_port, http_port, 40000, agents_n))
    if command is None:
        command = ["taskset", "-c", "0", sys.executable, "-m", "engine.cli", "run", "--config"]
    proc = subprocess.Popen(
        [*command, str(cfg)], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(proc, http_port, ready_timeout_s)
    log_in(http_port, agents_n, ready_timeout_s)
    return proc, sip_port


def wait_ready(proc: subprocess.Popen[bytes], http_port: int, timeout_s: float = 60.0) -> None:
    """Until /readyz answers 200; SystemExit (the daemon stopped) if it dies or does not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"acd exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("acd did not become ready")


def log_in(http_port: int, agents_n: int, timeout_s: float = 60.0) -> None:
    """Static agents a0 .. a{n-1} logged in through the API, as the admin."""
    for i in range(agents_n):
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/api/v1/agents/a{i}/state",
            data=b'{"state": "logged_in"}', method="PUT",
        )  # fmt: skip
        req.add_header("Authorization", f"Bearer {ADMIN}")
        urllib.request.urlopen(req, timeout=timeout_s).close()


def start_sippy(workdir: Path, uas_port: int) -> tuple[subprocess.Popen[bytes], int]:
    if not (REF / "sippy").exists():
        print("installing the sippy reference into var/bench-ref ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(REF), "sippy"],
                       check=True)  # fmt: skip
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REF))
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "sippy.b2bua_simple", "-f", "-l", "127.0.0.1",
         "-p", str(port), "-n", f"127.0.0.1:{uas_port}", "-L", str(workdir / "sippy.log")],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(2.0)
    return proc, port


class Step(NamedTuple):
    rate: int
    failed: int  # SIPp's failed calls (-1: SIPp itself failed)
    achieved: float  # calls/s
    cpu_per_call_s: float
    share: float  # the system's CPU share of its core over the offered window
    sipp_share: float  # both SIPp processes' CPU share of their (one) core, same window


def _cpu_or(pid: int, default: float) -> float:
    try:
        return cpu_s(pid)
    except OSError:  # the process has exited (SIPp gives up early on a broken target)
        return default


def step(pid: int, uas_pid: int, target: str, workdir: Path, rate: int, seconds: float,
         hold_ms: int, service: str) -> Step:  # fmt: skip
    calls = int(rate * seconds)
    before, t0 = cpu_s(pid), time.monotonic()
    uac = sipp(["-sn", "uac", target, "-s", service, "-r", str(rate), "-m", str(calls),
                "-l", str(max(rate, 50)), "-d", str(hold_ms), "-p", str(free_port())], workdir)  # fmt: skip
    chunks: list[bytes] = []
    stdout = uac.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: chunks.append(stdout.read()), daemon=True)
    reader.start()
    # The CPU shares are taken over the window SIPp offers traffic in: after it, a failing step
    # can run on for retransmission timeouts with little to do, which would dilute them.
    time.sleep(0.3)  # SIPp's own start
    w0 = time.monotonic()
    sys0, uas0, uac0 = cpu_s(pid), cpu_s(uas_pid), _cpu_or(uac.pid, 0.0)
    time.sleep(max(seconds - 0.3, 0.2))
    w1 = time.monotonic()
    sys1, uas1, uac1 = cpu_s(pid), cpu_s(uas_pid), _cpu_or(uac.pid, uac0)
    uac.wait(timeout=seconds * 6 + 60)
    reader.join(timeout=10)
    wall = time.monotonic() - t0
    cpu = cpu_s(pid) - before
    failed = failed_calls(b"".join(chunks).decode(errors="replace"))
    if uac.returncode != 0 and failed == 0:
        failed = -1
    window = w1 - w0
    return Step(rate, failed, calls / wall, cpu / calls, (sys1 - sys0) / window,
                ((uas1 - uas0) + (uac1 - uac0)) / window)  # fmt: skip


def verdict(steps: list[Step]) -> str | None:
    """Why the best passing rate is NOT this system's one-core capacity, or None if it is."""
    ceiling = next((s for s in steps if s.failed != 0), None)
    if ceiling is None:
        return "no step failed: the ceiling was not reached (offer higher --rates)"
    if ceiling.sipp_share >= CPU_BOUND:
        return (f"SIPp used {ceiling.sipp_share:.0%} of its core at {ceiling.rate}/s: "
                "SIPp was the limit")  # fmt: skip
    if ceiling.share < CPU_BOUND:
        return (f"it used {ceiling.share:.0%} of its core at {ceiling.rate}/s where calls "
                f"failed: not CPU-bound, so something else limited it")  # fmt: skip
    if ceiling is steps[0]:
        return f"the first step ({ceiling.rate}/s) already failed (offer lower --rates)"
    return None


def run_system(name: str, args: argparse.Namespace, *, memory: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        uas_port = free_port()
        uas = sipp(["-sn", "uas", "-p", str(uas_port)], workdir)
        time.sleep(0.5)
        proc, port = (
            start_acd(workdir, uas_port) if name == "acd" else start_sippy(workdir, uas_port)
        )
        target = f"127.0.0.1:{port}"
        service = "q" if name == "acd" else "service"
        steps: list[Step] = []
        mem = None
        try:
            if memory:
                # Measured first, on a daemon that has only taken a few warm-up calls: after the
                # rate steps the allocator's arenas have already grown and hide the per-call cost.
                warm = sipp(["-sn", "uac", target, "-s", service, "-r", "10", "-m", "20",
                             "-d", "100", "-p", str(free_port())], workdir)  # fmt: skip
                warm.wait(timeout=60)
                time.sleep(1.0)
                base = rss_bytes(proc.pid)
                held = sipp(["-sn", "uac", target, "-s", service, "-r", "100", "-m", "300",
                             "-l", "300", "-d", "15000", "-p", str(free_port())], workdir)  # fmt: skip
                time.sleep(8.0)
                mem = (rss_bytes(proc.pid) - base) / 300
                held.wait(timeout=60)
                time.sleep(2.0)
            for rate in args.rates:
                st = step(proc.pid, uas.pid, target, workdir, rate, args.seconds, args.hold_ms,
                          service)  # fmt: skip
                print(f"  {name:6} {rate:5d}/s offered  {st.achieved:7.1f}/s achieved  "
                      f"{st.cpu_per_call_s * 1000:6.2f} ms CPU/call  failed={st.failed}  "
                      f"CPU {st.share:4.0%} of its core, SIPp {st.sipp_share:4.0%}", flush=True)  # fmt: skip
                steps.append(st)
                if st.failed != 0:
                    break
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            uas.terminate()
            uas.wait(timeout=10)
        passed = [s for s in steps if s.failed == 0]
        return {
            "best": max((s.achieved for s in passed), default=0.0),
            "cpu_ms": min((s.cpu_per_call_s for s in passed), default=0.0) * 1000 or None,
            "mem": mem,
            "refused": verdict(steps),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200, 300, 400, 500, 600, 800])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--hold-ms", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of both systems")
    parser.add_argument("--only", choices=["acd", "sippy"])
    args = parser.parse_args()
    names = [n for n in ("sippy", "acd") if not args.only or n == args.only]
    rounds: list[dict[str, dict[str, object]]] = []
    for i in range(args.rounds):
        results: dict[str, dict[str, object]] = {}
        for name in names:
            print(f"round {i + 1}, {name}: stepping the call rate (hold {args.hold_ms} ms, "
                  f"{args.seconds:g} s per step)", flush=True)  # fmt: skip
            results[name] = run_system(name, args, memory=name == "acd" and i == 0)
        rounds.append(results)
    print("\nsummary (one core, 0 failed calls):")
    for i, results in enumerate(rounds, 1):
        for name, r in results.items():
            mem = (
                f", {float(r['mem']) / 1024:.0f} KiB RSS per live bridged call" if r["mem"] else ""
            )  # type: ignore[arg-type]
            cpu = f"{r['cpu_ms']:.2f} ms CPU/call" if r["cpu_ms"] else "-"
            why = f"  NOT its capacity: {r['refused']}" if r["refused"] else ""
            print(f"  round {i} {name:6} best {r['best']:7.1f} calls/s, {cpu}{mem}{why}")
        if len(results) < 2:
            continue
        refused = [f"{n}: {r['refused']}" for n, r in results.items() if r["refused"]]
        if refused:
            print(f"  round {i} acd / sippy: no ratio ({'; '.join(refused)})")
        else:
            ratio = float(results["acd"]["best"]) / float(results["sippy"]["best"])  # type: ignore[arg-type]
            print(f"  round {i} acd / sippy = {ratio:.2f}x (target: >= 3x)")


if __name__ == "__main__":
    main()
