"""Soak: recorded calls through the whole ACD for an hour, watching for leaks (issue 16).

SIPp is the trunk (tests/e2e/sipp/scenarios/caller_tone.xml: a caller streaming a 440 Hz tone,
hanging up after ``--hold-s``) and the static agents' phones (agent_answer_tone.xml: answers at
once and streams 880 Hz), so RTP flows both ways on every leg. Every call is recorded (stereo WAV, the daemon's default
encryption setting) and written to the CDR store. The offered rate is steady and modest, so the
daemon is never near its ceiling: what is measured is whether what a call takes is given back.

Sampled every ``--sample-s`` seconds from /proc and /metrics: RSS, open file descriptors (and how
many are sockets), threads, live calls, open RTP legs. Verdict, printed with its numbers:

* memory flat: after a warm-up of ``--warmup-s`` at the same rate, the least-squares slope of
  RSS over the soak is within ``--rss-bound-mib`` per hour, and the last sample is within that
  bound of the first one under load;
* file descriptors and RTP ports all returned: once the last call ended, the daemon has no live
  call and no RTP leg, and as many descriptors (and sockets) as before the first call;
* no call lost: SIPp reports 0 failed calls, the CDR store has one finished ``answered`` row per
  call and one recording per row.

Not a CI test (an hour); never asserts on wall time. Exit status 1 when a criterion fails.

Usage: python benchmarks/soak.py [--seconds 3600] [--rate 5] [--agents 80] [--hold-s 8] [--sample-s 30]
                                 [--warmup-s 120] [--rss-bound-mib 16] [--workers 0]
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_acd import acd_config, failed_calls, free_port, log_in, rss_bytes, wait_ready

SIPP = "/usr/bin/sipp"
POOL = 5  # connections SQLAlchemy's pool keeps (pool_size)
SCENARIOS = Path(__file__).resolve().parent.parent / "tests" / "e2e" / "sipp" / "scenarios"


class Sample(NamedTuple):
    t: float
    rss: int
    fds: int
    sockets: int
    store_files: int
    threads: int
    calls: float
    rtp: float


def metric(http_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


def fd_links(pid: int) -> dict[str, str]:
    """Each open descriptor's number and what it is (a path, socket:[inode], anon_inode:...)."""
    links = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed while we looked
    return links


def sample(pid: int, http_port: int, started: float) -> Sample:
    links = list(fd_links(pid).values())
    return Sample(
        t=time.monotonic() - started,
        rss=rss_bytes(pid),
        fds=len(links),
        sockets=sum(1 for link in links if link.startswith("socket:")),
        store_files=sum(1 for link in links if ".sqlite3" in link),
        threads=len(os.listdir(f"/proc/{pid}/task")),
        calls=metric(http_port, "acd_calls_active"),
        rtp=metric(http_port, "acd_rtp_sessions_active"),
    )


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    cov = sum((x - mx) * (y - my) for x, y in points)
    return cov / var * 3600 if var else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3600.0, help="offered-traffic window")
    parser.add_argument("--rate", type=float, default=5.0, help="new calls per second")
    parser.add_argument("--agents", type=int, default=80)
    parser.add_argument("--hold-s", type=float, default=8.0, help="each caller's talk time")
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=60.0,
                        help="calls at --rate before the baseline, unmeasured")  # fmt: skip
    parser.add_argument("--rss-bound-mib", type=float, default=16.0)
    parser.add_argument("--workers", type=int, default=0, help="[media] workers")
    args = parser.parse_args()
    calls = int(args.rate * args.seconds)
    warmup_calls = max(1, int(args.rate * args.warmup_s))

    with tempfile.TemporaryDirectory(prefix="acd-soak-") as tmp:
        work = Path(tmp)
        for name, hz in (("caller", 440), ("agent", 880)):  # what the SIPp scenarios stream
            subprocess.run(
                ["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", f"{name}.wav",
                 "synth", "2", "sine", str(hz), "vol", "0.5"],
                check=True, cwd=work, timeout=30,
            )  # fmt: skip
        uas_port, sip_port, http_port = free_port(), free_port(), free_port()
        (work / "acd.toml").write_text(
            acd_config(
                uas_port,
                sip_port,
                http_port,
                30000,
                args.agents,
                rtp_ports=1998,
                workers=args.workers,
                record="always",
            )
        )
        uas = subprocess.Popen(
            [SIPP, "-sf", str(SCENARIOS / "agent_answer_tone.xml"), "-i", "127.0.0.1",
             "-p", str(uas_port), "-nostdin",
             "-cp", str(free_port()), "-mp", str(free_port())],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        log = (work / "acd.log").open("wb")
        acd = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(work / "acd.toml")],
            cwd=work, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        uac: subprocess.Popen[bytes] | None = None
        verdicts = ["FAIL: the soak did not run to its end"]
        try:
            wait_ready(acd, http_port)
            log_in(http_port, args.agents, 10)

            def callers(n: int, rate: float) -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    [SIPP, "-sf", str(SCENARIOS / "caller_tone.xml"), f"127.0.0.1:{sip_port}",
                     "-s", "q", "-i", "127.0.0.1", "-r", str(rate), "-m", str(n),
                     "-l", str(args.agents), "-d", str(int(args.hold_s * 1000)),
                     "-nostdin", "-cp", str(free_port()), "-mp", str(free_port())],
                    cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                )  # fmt: skip

            # A warm-up at the same rate first, so what load opens for good (the store's pooled
            # connections and their WAL handles, executor threads) is in the baseline the end is
            # compared with; anything that grows after it is what the soak looks for.
            warm = callers(warmup_calls, args.rate)
            if warm.wait(timeout=args.warmup_s * 4 + 60) != 0:
                raise SystemExit("the warm-up calls failed")
            wait_idle(acd.pid, http_port)
            started = time.monotonic()
            before = sample(acd.pid, http_port, started)
            fds_before = fd_links(acd.pid)
            uac = callers(calls, args.rate)
            samples = [before]
            print(f"soak: {calls} calls at {args.rate}/s over {args.seconds:.0f} s, "
                  f"{args.agents} agents, recorded, workers={args.workers}")  # fmt: skip
            print(f"{'t_s':>7} {'rss_MiB':>8} {'fds':>5} {'socks':>5} {'thr':>4} "
                  f"{'calls':>6} {'rtp':>5}")  # fmt: skip
            while uac.poll() is None:
                time.sleep(args.sample_s)
                samples.append(sample(acd.pid, http_port, started))
                show(samples[-1])
            output = uac.stdout.read().decode(errors="replace") if uac.stdout else ""
            load_end = samples[-1]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                after = sample(acd.pid, http_port, started)
                if after.calls == 0 and after.rtp == 0 and after.sockets <= before.sockets:
                    break
                time.sleep(1)
            show(after)
            verdicts = judge(args, calls, before, samples, load_end, after, output, work)
            opened = sorted(set(fd_links(acd.pid).items()) - set(fds_before.items()))
            if opened:
                print("descriptors open now that were not before the first call:", opened)
        finally:
            for proc in (uac, acd, uas):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            log.close()
            if not all(line.startswith("PASS") for line in verdicts):
                lines = (work / "acd.log").read_text(errors="replace").splitlines()
                print("the daemon's last warnings and errors:")
                for line in [x for x in lines if '"warning"' in x or '"error"' in x][-15:]:
                    print("  " + line[:300])
    for line in verdicts:
        print(line)
    sys.exit(0 if all(line.startswith("PASS") for line in verdicts) else 1)


def wait_idle(pid: int, http_port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = sample(pid, http_port, 0.0)
        if s.calls == 0 and s.rtp == 0:
            return
        time.sleep(0.5)


def show(s: Sample) -> None:
    print(f"{s.t:7.0f} {s.rss / 2**20:8.1f} {s.fds:5d} {s.sockets:5d} {s.threads:4d} "
          f"{s.calls:6.0f} {s.rtp:5.0f}", flush=True)  # fmt: skip


def judge(args: argparse.Namespace, calls: int, before: Sample, samples: list[Sample],
          load_end: Sample, after: Sample, sipp_output: str, work: Path) -> list[str]:  # fmt: skip
    out = []
    steady = samples[1:]  # the baseline was taken idle: the first sample under load onwards
    if len(steady) >= 2:
        slope = slope_per_hour([(s.t, s.rss / 2**20) for s in steady])
        growth = (steady[-1].rss - steady[0].rss) / 2**20
        ok = abs(slope) <= args.rss_bound_mib and growth <= args.rss_bound_mib
        out.append(f"{'PASS' if ok else 'FAIL'} memory: RSS {steady[0].rss / 2**20:.1f} -> "
                   f"{steady[-1].rss / 2**20:.1f} MiB over the steady phase ({growth:+.1f} MiB), "
                   f"slope {slope:+.1f} MiB/h (bound {args.rss_bound_mib} MiB/h)")  # fmt: skip
    else:
        out.append("FAIL memory: fewer than two samples after the warm-up (run longer)")
    # The store's pool (SQLAlchemy's default for the async engine: 5 kept connections, each a
    # database and a WAL handle and an aiosqlite thread) may still be filling after the warm-up:
    # bounded, so allowed up to its size; every other descriptor must be back.
    others = after.fds - after.store_files <= before.fds - before.store_files
    returned = after.calls == 0 and after.rtp == 0 and others
    returned = returned and after.sockets <= before.sockets and after.store_files <= 2 * POOL
    out.append(f"{'PASS' if returned else 'FAIL'} returned: after the last call {after.calls:.0f} "
               f"calls, {after.rtp:.0f} RTP legs, fds {after.fds} (before {before.fds}), sockets "
               f"{after.sockets} (before {before.sockets}), store files {after.store_files} "
               f"(before {before.store_files}, pool bound {2 * POOL}); at the end of load "
               f"{load_end.fds} fds")  # fmt: skip
    failed = failed_calls(sipp_output)
    with sqlite3.connect(work / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT disposition, COUNT(*) FROM calls WHERE ended_at IS NOT NULL GROUP BY 1"
        ).fetchall()
        recordings = db.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
    answered = dict(rows).get("answered", 0)
    total = calls + max(1, int(args.rate * args.warmup_s))  # and the warm-up calls
    lost = failed == 0 and answered == total and sum(n for _, n in rows) == total
    lost = lost and recordings == total
    out.append(f"{'PASS' if lost else 'FAIL'} no call lost: SIPp failed calls {failed}, CDR rows "
               f"{dict(rows)} of {total}, recordings {recordings}")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
