"""Start-up time of the daemon: process spawn -> /readyz answers 200, and -> /healthz.

Runs `acd run` N times on a fresh SQLite file each time (so migrations run every time: the cold
first start an operator sees), then once more on the already-migrated file (a restart), and prints
the median and max of each. Usage: python benchmarks/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_once(workdir: Path) -> tuple[float, float]:
    port = free_port()
    cfg = workdir / "acd.toml"
    cfg.write_text(
        f'[log]\nformat = "json"\nlevel = "warning"\n[http]\nport = {port}\n'
        f"[[sip.listeners]]\nport = {free_port()}\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(cfg)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    healthy = ready = 0.0
    try:
        while time.perf_counter() - t0 < 60:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if not healthy:
                        healthy = time.perf_counter() - t0
                    if r.status == 200:
                        ready = time.perf_counter() - t0
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    if not ready:
        raise SystemExit("daemon did not become ready within 60 s")
    return healthy, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cold: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            run_dir = Path(tmp) / f"cold{i}"
            run_dir.mkdir()
            cold.append(start_once(run_dir)[1])
        warm = [start_once(Path(tmp) / "cold0")[1] for _ in range(args.runs)]
    print(f"start-up to /readyz 200, fresh database (migrations run), {args.runs} runs:")
    print(f"  median {statistics.median(cold) * 1000:.0f} ms   max {max(cold) * 1000:.0f} ms")
    print(f"start-up to /readyz 200, existing database (restart), {args.runs} runs:")
    print(f"  median {statistics.median(warm) * 1000:.0f} ms   max {max(warm) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
