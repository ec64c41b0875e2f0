"""Calls per second a UAS built on the sip stack sustains on one core under SIPp `uac` load.

The UAS is tests/e2e/sipp/simple_uas.py (200 OK + SDP to every INVITE, ACK and BYE handled by the
endpoint) in its own process, pinned to one CPU with taskset when available. SIPp's built-in `uac`
scenario (INVITE, ACK, BYE) runs against it at increasing rates; each step runs for a fixed time
and prints the nominal rate, successful/failed calls, the achieved rate (successful calls over the
step's wall time, SIPp included), and the UAS's CPU share and CPU time per call.
The run stops at the first step with a failure (or when SIPp cannot keep the rate).

Usage: python benchmarks/bench_sip_uas.py [--start 200] [--step 200] [--max 3000] [--seconds 5]
       [--loop asyncio|uvloop] [--transport udp|tcp]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UAS = REPO / "tests" / "e2e" / "sipp" / "simple_uas.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_step(port: int, rate: int, seconds: float, transport: str, workdir: Path) -> dict[str, int]:
    calls = int(rate * seconds)
    args = [
        "sipp", "-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.1",
        "-p", str(free_port()), "-cp", str(free_port()),
        "-r", str(rate), "-m", str(calls), "-l", str(max(rate * 4, 100)),
        "-nostdin", "-timeout", str(int(seconds * 4 + 20)),
    ]  # fmt: skip
    if transport == "tcp":
        args += ["-t", "t1"]
    out = subprocess.run(
        args, cwd=workdir, capture_output=True, text=True, timeout=seconds * 6 + 60, check=False
    ).stdout

    def cumulative(label: str) -> int:
        found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", out)
        return int(found[-1]) if found else -1

    retrans = re.findall(r"^\s*\d+\s*:\s*\S+.*?(\d+)\s*$", out, re.M)
    return {
        "calls": calls,
        "ok": cumulative("Successful call"),
        "failed": cumulative("Failed call"),
        "retrans_lines": len(retrans),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", type=int, default=200)
    parser.add_argument("--step", type=int, default=200)
    parser.add_argument("--max", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    args = parser.parse_args()

    port = free_port()
    cmd = [sys.executable, str(UAS), "--port", str(port), "--loop", args.loop]
    cmd += ["--transport", args.transport]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    uas = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert uas.stdout is not None
        if uas.stdout.readline().strip() != "ready":
            raise SystemExit("UAS did not start")
        print(f"UAS pid {uas.pid} on 127.0.0.1:{port} ({args.transport}, {args.loop}), one core")
        print(
            f"{'rate/s':>7} {'calls':>6} {'ok':>6} {'failed':>6} {'achieved/s':>10} "
            f"{'uas cpu %':>9} {'us cpu/call':>11}"
        )
        best = 0
        with tempfile.TemporaryDirectory() as tmp:
            rate = args.start
            while rate <= args.max:
                cpu0, t0 = cpu_seconds(uas.pid), time.monotonic()
                res = run_step(port, rate, args.seconds, args.transport, Path(tmp))
                cpu = cpu_seconds(uas.pid) - cpu0
                wall = time.monotonic() - t0
                per_call_us = cpu / max(res["ok"], 1) * 1e6
                achieved = res["ok"] / wall  # SIPp may not hold the nominal rate: count what ran
                print(
                    f"{rate:>7} {res['calls']:>6} {res['ok']:>6} {res['failed']:>6} "
                    f"{achieved:>10.0f} {100 * cpu / wall:>9.0f} {per_call_us:>11.0f}",
                    flush=True,
                )
                if res["failed"] != 0 or res["ok"] != res["calls"]:
                    break
                best = max(best, int(achieved))
                rate += args.step
        print(f"highest clean achieved rate: {best} calls/s (0 failures)")
    finally:
        uas.send_signal(signal.SIGTERM)  # our own child, by PID
        try:
            uas.wait(timeout=5)
        except subprocess.TimeoutExpired:
            uas.kill()


if __name__ == "__main__":
    main()
