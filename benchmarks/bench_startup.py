"""Start-up time of the daemon: process spawn -> /readyz answers 200.

Three cases, each printed as median and max:
- first start after an install: an empty numba cache (NUMBA_CACHE_DIR pointed at a new directory),
  so the routing kernels compile, and a fresh SQLite file (migrations run). `acd precompile` (which
  scripts/run runs after installing) moves the compile out of the start: this row shows what it saves;
- first start on a fresh database with the kernels cached: what `scripts/run` does after installing;
- a restart on the already-migrated file.

Usage: python benchmarks/bench_startup.py [--runs N] [--cold-runs N]
"""

from __future__ import annotations

import argparse
import os
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


def start_once(workdir: Path, numba_cache: Path | None = None) -> tuple[float, float]:
    port = free_port()
    cfg = workdir / "acd.toml"
    cfg.write_text(
        f'[log]\nformat = "json"\nlevel = "warning"\n[http]\nport = {port}\n'
        f"[[sip.listeners]]\nport = {free_port()}\n"
    )
    env = dict(os.environ)
    if numba_cache is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(cfg)],
        cwd=workdir,
        env=env,
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


def _row(title: str, times: list[float]) -> None:
    print(f"{title}, {len(times)} runs:")
    print(f"  median {statistics.median(times) * 1000:.0f} ms   max {max(times) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold-runs", type=int, default=2, help="runs with an empty numba cache")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        first: list[float] = []
        for i in range(args.cold_runs):
            run_dir = Path(tmp) / f"install{i}"
            run_dir.mkdir()
            cache = run_dir / "numba-cache"
            cache.mkdir()
            first.append(start_once(run_dir, numba_cache=cache)[1])
        cold: list[float] = []
        for i in range(args.runs):
            run_dir = Path(tmp) / f"cold{i}"
            run_dir.mkdir()
            cold.append(start_once(run_dir)[1])
        warm = [start_once(Path(tmp) / "cold0")[1] for _ in range(args.runs)]
    if first:
        _row("first start after an install (empty numba cache, fresh database)", first)
    _row("start-up to /readyz 200, fresh database (migrations run), kernels cached", cold)
    _row("start-up to /readyz 200, existing database (restart)", warm)


if __name__ == "__main__":
    main()
