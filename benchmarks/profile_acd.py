"""Where one full ACD call's CPU goes: a per-stage profile of the real daemon at a fixed offered rate.

The scenario is bench_acd's (SIPp ``uac`` as the trunk, SIPp ``uas`` answering for static agents,
flow = answer + enqueue, no recording), at a small fixed rate so the daemon is never saturated and
the same calls do the same work on a loaded machine.

Two modes, each measuring only the call window (after warm-up calls, until the calls' CDR rows are
flushed):

``--mode cprofile`` (default) runs the daemon in this file's ``serve`` sub-command: the daemon in
  process with a ``cProfile.Profile`` that SIGUSR1 enables and SIGUSR2 stops and dumps. Each
  function's own time goes to its stage by the module it lives in; a function of no stage
  (stdlib, asyncio, msgspec, ...) hands its time to its callers in proportion to the time each
  caller spent in it, up to the nearest staged ancestor (``attribute``). cProfile only sees the
  main thread: the other threads (aiosqlite's connection thread runs the SQLite statements) are
  measured as CPU seconds from /proc/PID/task/*/stat over the same window, in a second run
  without the profiler, which also gives the unprofiled CPU per call that the table's shares are
  scaled to.
``--mode callgrind`` runs the daemon under ``valgrind --tool=callgrind --instr-atstart=no``,
  switches instrumentation on for the window only (``callgrind_control -i on``) and reports instructions
  (Ir, all threads) per call: a number that does not depend on the machine's load. Valgrind is
  about 50x slower, so keep the rate low (the default 1/s) or SIPp's retransmissions change the
  work done.

Usage:
  python benchmarks/profile_acd.py [--calls 200] [--rate 20] [--out docs/profile.txt]
  python benchmarks/profile_acd.py --mode callgrind [--calls 60] [--rate 1]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_acd

AGENTS = 40
WARMUP_CALLS = 20
IDLE_S = 15.0  # callgrind mode: the idle window measured before the calls
SETTLE_S = 2.5  # after SIPp ends: the CDR writer flushes every second (storage.flush_interval_s)

# (stage, path fragments): a function belongs to the first stage one of whose fragments is in
# its file's path. Order matters: the specific before the general.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (structlog)", ("/structlog/", "/logging/", "engine/runtime/logs.py")),
    (
        "metrics (prometheus)",
        ("/prometheus_client/", "engine/calls/metrics.py", "engine/runtime/metrics.py"),
    ),
    (
        "CDR write (SQLAlchemy, aiosqlite)",
        ("engine/storage/", "/sqlalchemy/", "/aiosqlite/", "engine/calls/record.py"),
    ),
    ("SDP", ("sip/sdp.py",)),
    (
        "SIP parse/serialize",
        ("sip/message.py", "sip/headers.py", "sip/uri.py", "sip/_abnf.py", "sip/framing.py"),
    ),
    (
        "SIP transactions, dialogs, timers",
        (
            "sip/transaction.py",
            "sip/endpoint.py",
            "sip/dialog.py",
            "sip/session_timer.py",
            "sip/locate.py",
            "sip/security.py",
            "engine/calls/security.py",
        ),
    ),
    ("SIP UDP transport (sendto, recv)", ("sip/transport/", "engine/calls/listeners.py")),
    (
        "RTP ports, sockets, media legs",
        (
            "sip/media/ports.py",
            "sip/media/endpoint.py",
            "sip/media/clock.py",
            "sip/media/player.py",
            "sip/media/prompts.py",
            "sip/media/stats.py",
            "sip/rtp/",
            "engine/calls/media.py",
        ),
    ),
    ("bridge", ("sip/media/bridge.py", "engine/media/")),
    ("flow", ("engine/calls/flows.py", "engine/calls/inbound.py", "engine/calls/announcements.py")),
    (
        "routing (queue, routing core)",
        ("routing_core/", "engine/routing/", "engine/calls/queueing.py"),
    ),
    ("agent INVITE (ringing)", ("engine/calls/ringing.py",)),
    ("call control (dispatch, session, teardown)", ("engine/calls/",)),
    ("event bus, webhooks, other engine", ("engine/",)),
)
UNATTRIBUTED = "event loop and unattributed"

Func = tuple[str, int, str]


def stage_of(func: Func) -> str | None:
    path = func[0].replace("\\", "/")
    for stage, fragments in STAGES:
        if any(f in path for f in fragments):
            return stage
    return None


def attribute(
    stats: pstats.Stats, stage_of: Callable[[Func], str | None] = stage_of
) -> tuple[dict[str, float], float, list[tuple[float, Func]]]:
    """Own time per stage (seconds), the total, and the largest unattributed own times.
    ``stage_of`` names a function's stage (bench_tasks passes its own stages)."""
    raw: dict[Func, tuple[int, int, float, float, dict[Func, tuple[int, int, float, float]]]]
    raw = stats.stats  # type: ignore[attr-defined]
    memo: dict[Func, dict[str, float]] = {}
    busy: set[Func] = set()

    def share(func: Func) -> dict[str, float]:
        """The stages a function's own time goes to, as fractions summing to 1."""
        if func in memo:
            return memo[func]
        stage = stage_of(func)
        if stage is not None:
            memo[func] = {stage: 1.0}
            return memo[func]
        callers = raw.get(func, (0, 0, 0.0, 0.0, {}))[4]
        weights = {c: v[2] + v[3] * 1e-6 for c, v in callers.items() if c not in busy}
        total = sum(weights.values())
        if not total:
            return {UNATTRIBUTED: 1.0}  # a callback of the event loop itself, or a cycle
        busy.add(func)
        out: dict[str, float] = defaultdict(float)
        for caller, w in weights.items():
            for s, f in share(caller).items():
                out[s] += f * w / total
        busy.discard(func)
        memo[func] = dict(out)
        return memo[func]

    per_stage: dict[str, float] = defaultdict(float)
    unattributed: list[tuple[float, Func]] = []
    for func, (_cc, _nc, tt, _ct, _callers) in raw.items():
        parts = share(func)
        for s, f in parts.items():
            per_stage[s] += tt * f
        if UNATTRIBUTED in parts:
            unattributed.append((tt * parts[UNATTRIBUTED], func))
    unattributed.sort(reverse=True)
    return dict(per_stage), sum(per_stage.values()), unattributed[:8]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed ``main`` or ``comm:tid``."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            comm = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        key = "main" if task.name == str(pid) else f"{comm}:{task.name}"
        out[key] = (int(fields[11]) + int(fields[12])) / bench_acd.TICKS
    return out


def drive(target: str, workdir: Path, calls: int, rate: float, hold_ms: int) -> int:
    """SIPp uac: ``calls`` calls at ``rate``/s; the failed-call count."""
    uac = bench_acd.sipp(["-sn", "uac", target, "-s", "q", "-r", str(rate), "-m", str(calls),
                          "-l", "200", "-d", str(hold_ms), "-p", str(bench_acd.free_port())],
                         workdir)  # fmt: skip
    out, _ = uac.communicate(timeout=calls / rate * 10 + 120)
    failed = bench_acd.failed_calls(out.decode(errors="replace"))
    return failed if uac.returncode == 0 or failed else -1


def run(mode: str, args: argparse.Namespace, prof_out: Path | None = None) -> dict[str, object]:
    """One daemon, warm-up calls, then the measured window; what was measured."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        uas_port = bench_acd.free_port()
        uas = bench_acd.sipp(["-sn", "uas", "-p", str(uas_port)], workdir)
        cg_out = workdir / "callgrind.out"
        if mode == "callgrind":
            command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                       f"--callgrind-out-file={cg_out}", sys.executable, "-m", "engine.cli",
                       "run", "--config"]  # fmt: skip
        elif mode == "cprofile":
            assert prof_out is not None
            command = [sys.executable, __file__, "serve", str(prof_out), "--config"]
        else:
            command = [sys.executable, "-m", "engine.cli", "run", "--config"]
        ready = 1800.0 if mode == "callgrind" else 120.0
        proc, port = bench_acd.start_acd(
            workdir, uas_port, command=command, agents_n=AGENTS, ready_timeout_s=ready
        )
        target = f"127.0.0.1:{port}"
        try:
            warm_rate = min(args.rate, 5.0)
            if drive(target, workdir, WARMUP_CALLS, warm_rate, args.hold_ms) != 0:
                raise SystemExit("warm-up calls failed")
            time.sleep(SETTLE_S)
            idle_s = 0.0
            if mode == "callgrind":
                control = ["callgrind_control", "-i", "on", str(proc.pid)]
                subprocess.run(control, check=True, stdout=subprocess.DEVNULL)
                # An idle window first, dumped on its own (callgrind.out.1): what the daemon
                # spends per second with no call (timers, readiness, the CDR writer's wake-ups).
                i0 = time.monotonic()
                time.sleep(IDLE_S)
                control = ["callgrind_control", "-d", str(proc.pid)]
                subprocess.run(control, check=True, stdout=subprocess.DEVNULL)
                idle_s = time.monotonic() - i0
            elif mode == "cprofile":
                os.kill(proc.pid, signal.SIGUSR1)
            before = thread_cpu(proc.pid)
            t0 = time.monotonic()
            failed = drive(target, workdir, args.calls, args.rate, args.hold_ms)
            time.sleep(SETTLE_S)
            wall = time.monotonic() - t0
            after = thread_cpu(proc.pid)
            if mode == "callgrind":
                subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                               stdout=subprocess.DEVNULL)  # fmt: skip
            elif mode == "cprofile":
                os.kill(proc.pid, signal.SIGUSR2)
                deadline = time.monotonic() + 60
                while not (prof_out and prof_out.exists()) and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)  # dump_stats writes the file in one go, but let it finish
        finally:
            proc.terminate()
            proc.wait(timeout=600)
            uas.terminate()
            uas.wait(timeout=10)
        threads = {k: after[k] - before.get(k, 0.0) for k in after}
        result: dict[str, object] = {"failed": failed, "wall": wall, "threads": threads}
        if mode == "callgrind":
            result["ir"] = callgrind_total(cg_out)
            result["idle_ir"] = callgrind_total(cg_out.with_name(cg_out.name + ".1"))
            result["idle_s"] = idle_s
            if args.cg_out:
                shutil.copyfile(cg_out, args.cg_out)
        return result


def callgrind_total(path: Path) -> int:
    """Total Ir of one callgrind dump."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):  # ("summary:" comes first and counts from the dump)
            return int(line.split()[1])
    raise SystemExit(f"no totals: line in {path}")


def table(args: argparse.Namespace, prof: Path, plain: dict[str, object]) -> str:
    stats = pstats.Stats(str(prof))
    per_stage, total, unattributed = attribute(stats)
    threads: dict[str, float] = plain["threads"]  # type: ignore[assignment]
    main_us = threads.get("main", 0.0) / args.calls * 1e6
    other = {k: v for k, v in threads.items() if k != "main" and v > 0}
    other_us = sum(other.values()) / args.calls * 1e6
    lines = [
        f"{args.calls} calls at {args.rate:g}/s, hold {args.hold_ms} ms, {AGENTS} static agents;"
        f" failed calls: {plain['failed']}",
        f"CPU per call without the profiler: main thread {main_us:.0f} us, other threads "
        f"{other_us:.0f} us ({', '.join(sorted(other)) or 'none'})",
        "",
        "| stage | share of main thread | us per call (est.) |",
        "|---|---:|---:|",
    ]
    for stage, seconds in sorted(per_stage.items(), key=lambda kv: -kv[1]):
        share = seconds / total if total else 0.0
        lines.append(f"| {stage} | {share * 100:5.1f} % | {share * main_us:6.0f} |")
    lines.append(
        f"| other threads (SQLite statements in aiosqlite's thread) | - | {other_us:6.0f} |"
    )
    lines.append(f"| **total** | 100.0 % | {main_us + other_us:6.0f} |")
    lines += ["", "largest unattributed own times (profiled seconds, function):"]
    lines += [f"  {t:8.4f}  {f[2]} ({f[0]}:{f[1]})" for t, f in unattributed]
    return "\n".join(lines)


def serve(prof_out: str, config: str) -> int:
    """The daemon in this process, profiled between SIGUSR1 and SIGUSR2."""
    profiler = cProfile.Profile()

    def start(_sig: int, _frame: object) -> None:
        profiler.enable()

    def stop(_sig: int, _frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(prof_out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from engine.cli.main import main as acd_main

    return acd_main(["run", "--config", config])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        # serve PROF_OUT --config CONFIG
        sys.exit(serve(sys.argv[2], sys.argv[4]))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["cprofile", "callgrind"], default="cprofile")
    parser.add_argument("--calls", type=int, default=None, help="200 (cprofile), 60 (callgrind)")
    parser.add_argument("--rate", type=float, default=None, help="20/s (cprofile), 1/s (callgrind)")
    parser.add_argument("--hold-ms", type=int, default=100)
    parser.add_argument("--prof", type=Path, help="keep the cProfile dump here")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--cg-out", type=Path, help="keep the callgrind output here (annotate it)")
    args = parser.parse_args()
    callgrind = args.mode == "callgrind"
    args.calls = args.calls or (60 if callgrind else 200)
    args.rate = args.rate or (1.0 if callgrind else 20.0)
    if callgrind:
        r = run("callgrind", args)
        ir, idle_ir = int(r["ir"]), int(r["idle_ir"])  # type: ignore[call-overload]
        idle_per_s = idle_ir / float(r["idle_s"])  # type: ignore[arg-type]
        wall = float(r["wall"])  # type: ignore[arg-type]
        text = (
            f"callgrind: {args.calls} calls at {args.rate:g}/s, hold {args.hold_ms} ms, "
            f"failed calls: {r['failed']}; Ir in the {wall:.0f} s window {ir:,}: "
            f"{ir / args.calls:,.0f} Ir per call; idle {idle_per_s:,.0f} Ir/s; "
            f"less the idle rate: {(ir - idle_per_s * wall) / args.calls:,.0f} Ir per call"
        )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            prof = args.prof or Path(tmp) / "acd.prof"
            prof.unlink(missing_ok=True)
            plain = run("plain", args)
            run("cprofile", args, prof_out=prof.resolve())
            text = table(args, prof, plain)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
