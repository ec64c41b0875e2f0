"""Calls per second through Kamailio (the shipped config/kamailio/kamailio.cfg) with 1 and 2 acd nodes.

SIPp plays the trunk (tests/e2e/sipp/scenarios/caller_via_proxy.xml: ACK and BYE follow the
Record-Route back through Kamailio), one SIPp `uas` answers for every node's static agents, and
each node queues the call and bridges it to one of its own agents. For each node count the call
rate steps up; a step passes when SIPp reports 0 failed calls and reached the offered rate
(within 10 %). Per step it prints the rate achieved, each node's CPU per call and share of a
core, and Kamailio's CPU (all its processes), from /proc/PID/stat over the step. Nothing is pinned: on a shared machine the figures are for
ratios, and the load average printed at the start says how shared it was.

    trunk INVITE -> Kamailio (round robin, record-route) -> node: answer (SDP, RTP leg) -> flow
    -> enqueue -> offer -> INVITE agent -> 200 -> bridge; caller BYE via Kamailio -> agent BYE.

Usage: python benchmarks/bench_kamailio.py [--nodes 1 2] [--rates 50 100 ...] [--seconds 6]
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
sys.path.insert(0, str(REPO))

from tests.e2e.peers import Kamailio  # noqa: E402  (the launcher the e2e test uses)

SIPP = "/usr/bin/sipp"
CALLER = REPO / "tests" / "e2e" / "sipp" / "scenarios" / "caller_via_proxy.xml"
TICKS = os.sysconf("SC_CLK_TCK")
ADMIN = "bench-admin-token-0123456789"
AGENTS = 150  # per node: never the bottleneck at these rates and a 100 ms hold


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu_s(root: int) -> float:
    """CPU of ``root`` and its children (Kamailio forks its workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        pid = int(stat.parent.name)
        if pid == root or int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def failed_calls(output: str) -> int:
    match = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", output)
    return int(match[-1]) if match else -1


def node_config(name: str, uas_port: int, sip_port: int, http_port: int, rtp_base: int) -> str:
    agents = "".join(
        f'[[agents]]\nid = "{name}-a{i}"\nlogin = "static"\n'
        f'contact = "sip:{name}-a{i}@127.0.0.1:{uas_port}"\n'
        "skills = { s = 1 }\nqueues = { q = 0 }\n"
        for i in range(AGENTS)
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
rtp_port_max = {rtp_base + 4998}
[storage]
sqlite_path = "var/acd.sqlite3"
[runtime]
drain_timeout_s = 2.0
[[api.tokens]]
name = "bench"
role = "admin"
token = "{ADMIN}"
[[trunks]]
name = "kamailio"
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


def start_node(
    workdir: Path, name: str, uas_port: int, rtp_base: int
) -> tuple[subprocess.Popen[bytes], int]:
    workdir.mkdir()
    sip_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    cfg = workdir / "acd.toml"
    cfg.write_text(node_config(name, uas_port, sip_port, http_port, rtp_base))
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(cfg)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        raise SystemExit(f"node {name} did not become ready")
    for i in range(AGENTS):
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/api/v1/agents/{name}-a{i}/state",
            data=b'{"state": "logged_in"}', method="PUT",
        )  # fmt: skip
        req.add_header("Authorization", f"Bearer {ADMIN}")
        urllib.request.urlopen(req, timeout=5).close()
    return proc, sip_port


def run(nodes: int, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        uas_port = free_port()
        uas = subprocess.Popen(
            [SIPP, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin",
             "-cp", str(free_port()), "-mp", str(free_port())],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs: list[subprocess.Popen[bytes]] = []
        kamailio: Kamailio | None = None
        best = 0.0
        try:
            ports = []
            for i in range(nodes):
                proc, port = start_node(workdir / f"node{i}", f"n{i}", uas_port, 30000 + 5000 * i)
                procs.append(proc)
                ports.append(port)
            kamailio = Kamailio(
                workdir / "kamailio", free_port(), [("127.0.0.1", p) for p in ports],
                defines={"PING_INTERVAL_S": "1"}, children=4,
            )  # fmt: skip
            uris = [f"sip:127.0.0.1:{p}" for p in ports]
            kamailio.wait_for_flags(lambda seen: all(seen.get(u) == "AP" for u in uris))
            target = f"127.0.0.1:{kamailio.port}"
            for rate in args.rates:
                calls = int(rate * args.seconds)
                before = [cpu_s(p.pid) for p in procs]
                kam_before = tree_cpu_s(kamailio.proc.pid)
                t0 = time.monotonic()
                out = subprocess.run(
                    [SIPP, "-sf", str(CALLER), target, "-s", "q", "-i", "127.0.0.1",
                     "-p", str(free_port()), "-cp", str(free_port()), "-nostdin",
                     "-r", str(rate), "-m", str(calls), "-l", str(max(rate, 50)),
                     "-d", str(args.hold_ms)],
                    cwd=workdir, capture_output=True, timeout=args.seconds * 6 + 60,
                )  # fmt: skip
                wall = time.monotonic() - t0
                failed = failed_calls(out.stdout.decode(errors="replace"))
                if out.returncode != 0 and failed == 0:
                    failed = -1
                per_node = [cpu_s(p.pid) - b for p, b in zip(procs, before, strict=True)]
                kam = tree_cpu_s(kamailio.proc.pid) - kam_before
                nodes_text = "  ".join(
                    f"node{i} {cpu * 1000 / (calls / nodes):5.2f} ms/call {100 * cpu / wall:3.0f}%"
                    for i, cpu in enumerate(per_node)
                )
                print(f"  {nodes} node(s) {rate:4d}/s offered {calls / wall:6.1f}/s achieved  "
                      f"failed={failed}  {nodes_text}  kamailio {kam * 1e6 / calls:4.0f} us/call "
                      f"{100 * kam / wall:3.0f}%", flush=True)  # fmt: skip
                # Sustained: no failed call and the offered rate reached (within 10 %).
                if failed != 0 or calls / wall < 0.9 * rate:
                    break
                best = max(best, calls / wall)
        finally:
            if kamailio is not None:
                kamailio.stop()
            for proc in [*procs, uas]:
                proc.terminate()
            for proc in [*procs, uas]:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 100, 150, 200, 300])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--hold-ms", type=int, default=100)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"hold {args.hold_ms} ms, {args.seconds:g} s per step")  # fmt: skip
    best = {n: run(n, args) for n in args.nodes}
    print("\nsummary (0 failed calls):")
    for n, rate in best.items():
        print(f"  {n} node(s): best {rate:6.1f} calls/s through Kamailio")


if __name__ == "__main__":
    main()
