"""Task create -> offer latency and tasks created per CPU-second, through the daemon's API (issue 15).

The real daemon runs as a subprocess on 127.0.0.1 (ports picked here, pinned to CPU 0 with
taskset, stopped by its PID); this client pins itself to CPU 1. The config has ``--agents`` agents
(api tokens, capacity chat = email = ticket = 1, skill s = 5) in three queues, one per channel.
First a backlog of ``--backlog`` tasks that no agent can take (requirements s = 200: nobody has
that level) is created across the three channels and queues, so the router really holds them in
its lines; all agents are then logged in. Two measurements follow:

  latency:    ``--probes`` tasks an agent can take, created at ``--rate`` per second (round robin
              over the channels); for each, the time from sending POST /api/v1/tasks until its
              ``offered`` event arrives on the /api/v1/events WebSocket (each agent's own stream
              with its token; ``--streams supervisor``: one admin stream instead), then the agent
              accepts and completes it, so it is free again.
  throughput: ``--burst`` more untakable tasks created as fast as ``--concurrency`` requests in
              flight allow; tasks per wall second, and tasks per daemon CPU-second (utime+stime
              from /proc/PID/stat before/after the window) = "per core". The backlog's own
              creation is reported the same way.

The client's CPU share of its core is printed next to each phase: near 100 % the client, not the
daemon, was the limit. Targets are printed next to the numbers; nothing asserts on wall time.

Usage: python benchmarks/bench_tasks.py [--agents 1000] [--backlog 10000] [--probes 1000]
                                        [--rate 50] [--burst 5000] [--concurrency 32]
                                        [--streams agents|supervisor]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
TICKS = os.sysconf("SC_CLK_TCK")
ADMIN = "bench-admin-token-0123456789"
WIDGET = "bench-widget-token-0123456789"
CHANNELS = ("chat", "email", "ticket")
UNTAKABLE = {"s": 200}  # a level nobody has: waits in its queue's line for good
TARGET_P99_MS = 20.0
TARGET_PER_CORE = 2000.0


def token(i: int) -> str:
    return f"bench-agent-{i:05d}-token"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def config(agents_n: int, http_port: int, sip_port: int, rtp_base: int, max_tasks: int) -> str:
    queues = "".join(
        f'[[queues]]\nname = "q_{ch}"\nrequirements = {{ s = 1 }}\nwrap_up_s = 0.0\n'
        f'offer_timeout_s = 30.0\nrecord = "never"\n\n'
        for ch in CHANNELS
    )
    member = ", ".join(f"q_{ch} = 0" for ch in CHANNELS)
    agents = "".join(
        f'[[agents]]\nid = "a{i}"\nlogin = "static"\ncontact = "sip:a{i}@127.0.0.1:9"\n'
        f"skills = {{ s = 5 }}\nqueues = {{ {member} }}\n"
        f'capacity = {{ chat = 1, email = 1, ticket = 1 }}\napi_token = "{token(i)}"\n\n'
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
rtp_port_max = {rtp_base + 998}
[storage]
sqlite_path = "var/acd.sqlite3"
[runtime]
max_tasks = {max_tasks}
[[api.tokens]]
name = "ops"
role = "admin"
token = "{ADMIN}"
[[api.tokens]]
name = "widget"
role = "integration"
token = "{WIDGET}"
{queues}{agents}"""


def start_daemon(workdir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    http_port, sip_port = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = workdir / "acd.toml"
    # Room for every task the run leaves waiting (the backlog, one or two bursts) and the probes.
    max_tasks = args.backlog + 2 * args.burst + args.probes + 1024
    rtp_base = 30000 + (os.getpid() % 300) * 100
    cfg.write_text(config(args.agents, http_port, sip_port, rtp_base, max_tasks))
    profile = args.profile
    command = ["taskset", "-c", "0", sys.executable, "-m", "engine.cli", "run", "--config"]
    if profile is not None:  # profile_acd's ``serve``: cProfile between SIGUSR1 and SIGUSR2
        command[4:] = [str(HERE / "profile_acd.py"), "serve", str(profile), "--config"]
    elif args.gc_log:  # this file's ``serve-gc``: the daemon, its collector's pauses on stderr
        command[4:] = [str(Path(__file__).resolve()), "serve-gc", "--config"]
    # stderr to a file, not a pipe: a pipe nobody reads fills at 64 KiB of log lines and then
    # blocks the daemon in write().
    with (workdir / "acd.stderr").open("wb") as err:
        proc = subprocess.Popen(
            [*command, str(cfg)], cwd=workdir, stdout=subprocess.DEVNULL, stderr=err
        )
    return proc, f"http://127.0.0.1:{http_port}"


async def wait_ready(
    proc: subprocess.Popen[bytes], http: aiohttp.ClientSession, base: str, workdir: Path
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (workdir / "acd.stderr").read_text(errors="replace")[-4000:]
            raise SystemExit(f"acd exited with {proc.returncode} before it was ready:\n{err}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with http.get(base + "/readyz") as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise SystemExit("acd did not become ready")


async def api(
    http: aiohttp.ClientSession, method: str, url: str, tok: str, body: object = None
) -> Any:
    async with http.request(
        method, url, json=body, headers={"Authorization": f"Bearer {tok}"}
    ) as r:
        if r.status >= 300:
            raise RuntimeError(f"{method} {url}: {r.status} {await r.text()}")
        return await r.json()


async def run_bounded(n: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await job(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class Window:
    """Wall, daemon CPU and client CPU over a measured window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> Window:
        self.wall0, self.cpu0, self.own0 = time.perf_counter(), cpu_s(self.pid), own_cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = cpu_s(self.pid) - self.cpu0
        self.own = own_cpu_s() - self.own0


def throughput_line(name: str, n: int, w: Window) -> tuple[float, float]:
    per_s, per_cpu = n / w.wall, n / w.cpu if w.cpu else float("inf")
    print(f"  {name}: {n} tasks in {w.wall:.2f} s = {per_s:.0f}/s; daemon CPU {w.cpu:.2f} s "
          f"({w.cpu / w.wall:.0%} of its core) = {per_cpu:.0f} tasks per CPU-second; "
          f"client CPU {w.own / w.wall:.0%} of its core", flush=True)  # fmt: skip
    return per_s, per_cpu


async def create_untakable(
    http: aiohttp.ClientSession, base: str, n: int, concurrency: int, tag: str
) -> None:
    async def one(i: int) -> None:
        ch = CHANNELS[i % 3]
        body = {"channel": ch, "queue": f"q_{ch}", "requirements": UNTAKABLE,
                "subject": f"{tag} {i}"}  # fmt: skip
        await api(http, "POST", base + "/api/v1/tasks", WIDGET, body)

    await run_bounded(n, concurrency, one)


# Where a create's CPU goes (``--profile``). (stage, (path fragment, function name or "")): a
# function belongs to the first stage that one of its entries matches; a function of no stage
# (stdlib, asyncio, ...) hands its own time to its callers (profile_acd.attribute). The audit
# row's SQL runs through SQLAlchemy like the task's own write, so it counts as "store write";
# "audit log" is the audit code itself and its log line.
STAGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("audit log (engine/api/auth.audit)", (("engine/api/auth.py", "audit"),
                                           ("engine/storage/queries.py", "insert_audit"))),
    ("JSON decode/encode (msgspec)", (("engine/api/tasks.py", "_decode"),
                                      ("engine/api/app.py", "json_response"), ("~", "msgspec"))),
    ("validation (TaskService.validate)", (("engine/tasks/service.py", "validate"),
                                           ("engine/tasks/service.py", "queue_config"))),
    ("logging (structlog)", (("/structlog/", ""), ("/logging/", ""),
                             ("engine/runtime/logs.py", ""))),
    ("metrics (prometheus)", (("/prometheus_client/", ""), ("engine/tasks/metrics.py", ""),
                              ("engine/runtime/metrics.py", ""))),
    ("event publish (bus, WebSocket fan-out)", (("engine/runtime/events.py", ""),
                                                ("engine/api/events.py", ""))),
    ("store write (SQLAlchemy, aiosqlite)", (("engine/storage/", ""), ("/sqlalchemy/", ""),
                                             ("/aiosqlite/", ""), ("sqlite3", ""))),
    ("routing enqueue (routing service, core)", (("routing_core/", ""), ("engine/routing/", ""),
                                                 ("/numba/", ""), ("/numpy/", ""))),
    ("task service (record, history, SLA)", (("engine/tasks/", ""),)),
    ("HTTP (aiohttp, middlewares, handler)", (("/aiohttp/", ""), ("/multidict/", ""),
                                              ("/yarl/", ""), ("engine/api/", ""))),
    ("other engine", (("engine/", ""),)),
)  # fmt: skip


def stage_of(func: tuple[str, int, str]) -> str | None:
    path, _line, name = func
    path = path.replace("\\", "/")
    for stage, entries in STAGES:
        for fragment, function in entries:
            if fragment in path and (not function or function in name):
                return stage
    return None


def wait_for_file(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # dump_stats writes the file in one go, but let it finish


async def profiled_burst(
    args: argparse.Namespace, pid: int, http: aiohttp.ClientSession, base: str
) -> None:
    """Another burst of the same size with the daemon's profiler on; the stage table."""
    import pstats

    import profile_acd

    assert args.profile is not None
    args.profile.unlink(missing_ok=True)
    before = profile_acd.thread_cpu(pid)
    os.kill(pid, signal.SIGUSR1)
    with Window(pid) as w:
        await create_untakable(http, base, args.burst, args.concurrency, "profiled")
    os.kill(pid, signal.SIGUSR2)
    after = profile_acd.thread_cpu(pid)
    await asyncio.to_thread(wait_for_file, args.profile, 60.0)
    per_stage, total, unattributed = profile_acd.attribute(pstats.Stats(str(args.profile)),
                                                           stage_of)  # fmt: skip
    main_s = after["main"] - before.get("main", 0.0)
    other = {k: v - before.get(k, 0.0) for k, v in after.items() if k != "main"}
    other_s = sum(v for v in other.values() if v > 0)
    us = 1e6 / args.burst
    print(f"\nprofile: another {args.burst} creates with cProfile on in the daemon "
          f"({w.wall:.1f} s; profiled CPU per create: main thread {main_s * us:.0f} us, "
          f"other threads {other_s * us:.0f} us)", flush=True)  # fmt: skip
    print("| stage | share of the main thread | main-thread us per create (profiled) |")
    print("|---|---:|---:|")
    for stage, seconds in sorted(per_stage.items(), key=lambda kv: -kv[1]):
        share = seconds / total if total else 0.0
        print(f"| {stage} | {share:6.1%} | {share * main_s * us:6.0f} |")
    busy = ", ".join(f"{k} {v * us:.0f} us" for k, v in sorted(other.items()) if v > 0)
    print(f"| other threads (SQLite in aiosqlite's thread): {busy or 'none'} | - | "
          f"{other_s * us:6.0f} |")  # fmt: skip
    print("largest unattributed own times (profiled seconds, function):")
    for t, f in unattributed:
        print(f"  {t:8.4f}  {f[2]} ({f[0]}:{f[1]})")


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def bench(args: argparse.Namespace) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        proc, base = start_daemon(workdir, args)
        # Requests and event streams on separate pools: a WebSocket holds its connection for
        # good, so streams in the requests' pool (limit 64) left every request after the 64th
        # stream waiting for a free connection forever (the stall of the first run).
        connector = aiohttp.TCPConnector(limit=max(args.concurrency, 64))
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as ws_http,
            ):
                await wait_ready(proc, http, base, workdir)
                print(f"daemon ready with {args.agents} agents in {time.perf_counter() - t0:.1f} s"
                      f" (pid {proc.pid}, CPU 0; client CPU 1)", flush=True)  # fmt: skip
                await run(args, proc.pid, http, ws_http, base)
            if args.gc_log:
                pauses = gc_pauses(workdir)
                for gen in (0, 1, 2):
                    ms = [m for g, m in pauses if g == gen]
                    print(f"  gc generation {gen}: {len(ms)} pauses >= {GC_PAUSE_LOGGED_MS:g} ms"
                          + (f", max {max(ms):.0f} ms, total {sum(ms):.0f} ms" if ms else ""))  # fmt: skip
        except BaseException:
            err = (workdir / "acd.stderr").read_text(errors="replace").splitlines()
            print("daemon stderr, last lines:", *err[-30:], sep="\n", file=sys.stderr)
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def run(
    args: argparse.Namespace,
    pid: int,
    http: aiohttp.ClientSession,
    ws_http: aiohttp.ClientSession,
    base: str,
) -> None:
    with Window(pid) as backlog:
        await create_untakable(http, base, args.backlog, args.concurrency, "backlog")
    _, backlog_per_cpu = throughput_line("backlog created", args.backlog, backlog)

    offered_at: dict[str, float] = {}
    waiters: dict[str, asyncio.Future[float]] = {}
    ws_url = base.replace("http", "ws") + "/api/v1/events"
    streams: list[aiohttp.ClientWebSocketResponse] = []

    async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            ev = msg.json()
            if ev.get("type") == "task" and ev.get("event") == "offered":
                at = time.perf_counter()
                tid = ev["data"]["task_id"]
                fut = waiters.pop(tid, None)
                if fut is not None and not fut.done():
                    fut.set_result(at)
                else:
                    offered_at[tid] = at

    tokens = [token(i) for i in range(args.agents)] if args.streams == "agents" else [ADMIN]

    readers: list[asyncio.Task[None]] = []

    async def connect(tok: str) -> None:
        ws = await ws_http.ws_connect(ws_url, max_msg_size=0)
        streams.append(ws)
        await ws.send_json({"type": "auth", "token": tok})
        hello = await ws.receive_json(timeout=30)
        if "principal" not in hello:
            raise RuntimeError(f"stream auth refused: {hello}")
        # Read from now on: a stream nobody reads misses the server's heartbeat pings and
        # is closed by the daemon.
        readers.append(asyncio.create_task(reader(ws)))

    try:
        with Window(pid) as w:
            await run_bounded(len(tokens), 16, lambda i: connect(tokens[i]))

            async def log_in(i: int) -> None:
                url = f"{base}/api/v1/agents/a{i}/state"
                await api(http, "PUT", url, ADMIN, {"state": "logged_in"})

            await run_bounded(args.agents, args.concurrency, log_in)
        print(f"  {len(streams)} event stream(s) open, {args.agents} agents logged in "
              f"({w.wall:.1f} s)", flush=True)  # fmt: skip
        await asyncio.sleep(1.0)  # let the router settle: nothing of the backlog is offerable
        if offered_at:
            raise SystemExit(f"{len(offered_at)} backlog tasks were offered: the backlog is wrong")

        latencies: list[float] = []
        # The daemon's own part: the task's arrived_at to its first_offer_at (its wall clock),
        # without the HTTP request and the WebSocket delivery: how much of the latency is the
        # daemon's routing, and how much the machine's load on the round trip.
        inside: list[float] = []
        lost: list[str] = []
        by_agent: dict[str, str] = {}

        async def probe(i: int) -> None:
            ch = CHANNELS[i % 3]
            body = {"channel": ch, "queue": f"q_{ch}", "subject": f"probe {i}"}
            sent = time.perf_counter()
            made = await api(http, "POST", base + "/api/v1/tasks", WIDGET, body)
            tid = made["id"]
            if tid in offered_at:
                at = offered_at.pop(tid)
            else:
                fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                waiters[tid] = fut
                try:
                    at = await asyncio.wait_for(fut, 10)
                except TimeoutError:
                    lost.append(tid)
                    waiters.pop(tid, None)
                    return
            latencies.append(at - sent)
            view = await api(http, "GET", f"{base}/api/v1/tasks/{tid}", ADMIN)
            agent = view["offered_to"][0]
            by_agent[tid] = agent
            inside.append(view["first_offer_at"] - view["arrived_at"])
            tok = token(int(agent[1:]))
            await api(http, "POST", f"{base}/api/v1/tasks/{tid}/accept", tok)
            await api(http, "POST", f"{base}/api/v1/tasks/{tid}/complete", tok,
                      {"disposition": "bench"})  # fmt: skip

        with Window(pid) as probes:
            jobs = []
            began = time.perf_counter()
            for i in range(args.probes):
                delay = began + i / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                jobs.append(asyncio.create_task(probe(i)))
            await asyncio.gather(*jobs)
        ms = [x * 1000 for x in latencies]
        print(f"  latency: {args.probes} takable tasks at {args.rate:g}/s over {probes.wall:.1f} s, "
              f"{len(set(by_agent.values()))} distinct agents; daemon CPU "
              f"{probes.cpu / probes.wall:.0%}, client CPU {probes.own / probes.wall:.0%} of its "
              f"core; {len(lost)} never offered within 10 s", flush=True)  # fmt: skip

        with Window(pid) as burst:
            await create_untakable(http, base, args.burst, args.concurrency, "burst")
        per_s, per_cpu = throughput_line(
            f"burst on top of {args.backlog} waiting", args.burst, burst
        )
        if args.profile is not None:
            await profiled_burst(args, pid, http, base)
    finally:
        for ws in streams:
            await ws.close()
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    load = [f"{x:.2f}" for x in os.getloadavg()]
    print(f"\nmachine load average (1, 5, 15 min) at the end: {' '.join(load)} on "
          f"{os.cpu_count()} CPUs: above the CPU count, latency and wall rates say more about "
          "the machine than the daemon")  # fmt: skip
    print(f"\nresult ({args.agents} agents, {args.backlog + args.burst} tasks waiting across "
          f"{len(CHANNELS)} channels at the end, streams: {args.streams}):")  # fmt: skip

    def row(what: str, measured: str, target: str = "") -> None:
        print(f"  {what:44} {measured:>10} {target:>10}")

    row("measure", "measured", "target")
    if ms:
        row("create -> offered p50 (ms)", f"{percentile(ms, 0.50):.2f}")
        row("create -> offered p99 (ms)", f"{percentile(ms, 0.99):.2f}", f"< {TARGET_P99_MS:g}")
        row("create -> offered max (ms)", f"{max(ms):.2f}")
    if inside:
        daemon_ms = [x * 1000 for x in inside]
        row("  in the daemon: arrived -> first offer p50", f"{percentile(daemon_ms, 0.50):.2f}")
        row("  in the daemon: arrived -> first offer p99", f"{percentile(daemon_ms, 0.99):.2f}")
    row(f"never offered within 10 s (of {args.probes})", str(len(lost)), "0")
    row("  client CPU share during the probes", f"{probes.own / probes.wall:.0%}")
    row("backlog: creates per daemon CPU-second", f"{backlog_per_cpu:.0f}",
        f">= {TARGET_PER_CORE:g}")  # fmt: skip
    row("burst: creates per daemon CPU-second", f"{per_cpu:.0f}", f">= {TARGET_PER_CORE:g}")
    row("  burst: creates per wall second", f"{per_s:.0f}")
    row("  burst: daemon CPU share of its core", f"{burst.cpu / burst.wall:.0%}")
    row("  burst: client CPU share of its core", f"{burst.own / burst.wall:.0%}")
    print("(creates per daemon CPU-second = tasks / (utime + stime) of the daemon from /proc; "
          "client near 100 %: the client was the limit)")  # fmt: skip


GC_PAUSE = "gc_pause_ms"
GC_PAUSE_LOGGED_MS = 5.0


def serve_gc(config_path: str) -> int:
    """The daemon in this process, each collection of >= GC_PAUSE_LOGGED_MS written to stderr."""
    import gc

    started: dict[str, float] = {}

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started["at"] = time.perf_counter()
        elif "at" in started:
            ms = (time.perf_counter() - started.pop("at")) * 1000
            if ms >= GC_PAUSE_LOGGED_MS:
                print(f"{GC_PAUSE} {info['generation']} {ms:.1f}", file=sys.stderr, flush=True)

    gc.callbacks.append(timed)
    from engine.cli.main import main as acd_main

    return acd_main(["run", "--config", config_path])


def gc_pauses(workdir: Path) -> list[tuple[int, float]]:
    """(generation, ms) of the collections serve-gc logged."""
    out = []
    for line in (workdir / "acd.stderr").read_text(errors="replace").splitlines():
        if line.startswith(GC_PAUSE):
            _, gen, ms = line.split()
            out.append((int(gen), float(ms)))
    return out


def main() -> None:
    if sys.argv[1:2] == ["serve-gc"]:  # serve-gc --config CONFIG
        sys.exit(serve_gc(sys.argv[3]))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="takable tasks per second")
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--streams", choices=["agents", "supervisor"], default="agents")
    parser.add_argument("--profile", type=Path, default=None,
                        help="after the burst, profile another one in the daemon (cProfile dump "
                             "kept here) and print its cost per stage")  # fmt: skip
    parser.add_argument("--gc-log", action="store_true",
                        help="log the daemon's garbage-collector pauses >= 5 ms and print them")  # fmt: skip
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
