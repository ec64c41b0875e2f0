"""Full-flow calls per second through the ACD on one core, next to the sippy B2BUA in the same run.

SIPp `uac` is the trunk, SIPp `uas` answers for the agents (static contacts), hold time is short.
The system under test is pinned to CPU 0 (taskset), both SIPp processes to CPU 1, so "one core" is
literal. For each system the call rate steps up; a step passes when SIPp reports 0 failed calls.
CPU per call comes from the process's own utime+stime (/proc/PID/stat) over the step.

    ACD path: INVITE -> answer (SDP, RTP leg) -> flow -> enqueue -> routing offer -> INVITE agent
              (SDP, RTP leg) -> 200 -> bridge -> caller BYE -> agent BYE -> CDR + queue events.
    sippy:    b2bua_simple relays INVITE/ACK/BYE to the next hop (no media, no queue, no CDR).

sippy is a reference, never a dependency: it is installed on first run with
`pip install --target var/bench-ref sippy`. The memory figure is RSS growth per live bridged call
with 300 calls held open.

Usage: python benchmarks/bench_acd.py [--rates 100 200 ...] [--seconds 8] [--hold-ms 100]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REF = REPO / "var" / "bench-ref"
SIPP = "/usr/bin/sipp"
TICKS = os.sysconf("SC_CLK_TCK")
ADMIN = "bench-admin-token-0123456789"
AGENTS = 400


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
    uas_port: int, sip_port: int, http_port: int, rtp_base: int, agents_n: int = AGENTS
) -> str:
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
rtp_port_max = {rtp_base + 9998}
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
record = "never"
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
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"acd exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.terminate()
        raise SystemExit("acd did not become ready")
    for i in range(agents_n):
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/api/v1/agents/a{i}/state",
            data=b'{"state": "logged_in"}', method="PUT",
        )  # fmt: skip
        req.add_header("Authorization", f"Bearer {ADMIN}")
        urllib.request.urlopen(req, timeout=ready_timeout_s).close()
    return proc, sip_port


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


def step(pid: int, target: str, workdir: Path, rate: int, seconds: float, hold_ms: int,
         service: str) -> tuple[int, float, float]:  # fmt: skip
    calls = int(rate * seconds)
    before, t0 = cpu_s(pid), time.monotonic()
    uac = sipp(["-sn", "uac", target, "-s", service, "-r", str(rate), "-m", str(calls),
                "-l", str(max(rate, 50)), "-d", str(hold_ms), "-p", str(free_port())], workdir)  # fmt: skip
    out, _ = uac.communicate(timeout=seconds * 6 + 60)
    wall = time.monotonic() - t0
    cpu = cpu_s(pid) - before
    failed = failed_calls(out.decode(errors="replace"))
    if uac.returncode != 0 and failed == 0:
        failed = -1
    return failed, calls / wall, cpu / calls


def run_system(name: str, args: argparse.Namespace) -> dict[str, object]:
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
        best = 0.0
        per_call: list[float] = []
        try:
            memory = None
            if name == "acd":
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
                memory = (rss_bytes(proc.pid) - base) / 300
                held.wait(timeout=60)
                time.sleep(2.0)
            for rate in args.rates:
                failed, achieved, cpu_per_call = step(
                    proc.pid, target, workdir, rate, args.seconds, args.hold_ms, service
                )
                ok = failed == 0
                print(f"  {name:6} {rate:5d}/s offered  {achieved:7.1f}/s achieved  "
                      f"{cpu_per_call * 1000:6.2f} ms CPU/call  failed={failed}", flush=True)  # fmt: skip
                if not ok:
                    break
                best = max(best, achieved)
                per_call.append(cpu_per_call)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            uas.terminate()
            uas.wait(timeout=10)
        return {"best": best, "cpu_ms": min(per_call) * 1000 if per_call else None, "mem": memory}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200, 300, 400, 500, 600, 800])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--hold-ms", type=int, default=100)
    parser.add_argument("--only", choices=["acd", "sippy"])
    args = parser.parse_args()
    results = {}
    for name in ("sippy", "acd"):
        if args.only and name != args.only:
            continue
        print(
            f"{name}: stepping the call rate (hold {args.hold_ms} ms, {args.seconds:g} s per step)"
        )
        results[name] = run_system(name, args)
    print("\nsummary (one core, 0 failed calls):")
    for name, r in results.items():
        mem = f", {r['mem'] / 1024:.0f} KiB RSS per live bridged call" if r["mem"] else ""
        cpu = f"{r['cpu_ms']:.2f} ms CPU/call" if r["cpu_ms"] else "-"
        print(f"  {name:6} best {r['best']:7.1f} calls/s, {cpu}{mem}")
    if "acd" in results and "sippy" in results and results["sippy"]["best"]:
        ratio = float(results["acd"]["best"]) / float(results["sippy"]["best"])  # type: ignore[arg-type]
        print(f"  acd / sippy = {ratio:.2f}x (target: >= 2x)")


if __name__ == "__main__":
    main()
