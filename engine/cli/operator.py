"""Operator commands that talk to a running daemon's API: ``acd queues``, ``acd agents``, ``acd agent``,
``acd monitor``.

The daemon's address comes from ``--url`` or the config's ``[http]``; the token from ``--token`` or the
``ACD_TOKEN`` environment variable (so it stays out of shell history and ``ps``). Output is a plain
table for people, or ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from engine.config import Config


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="daemon base URL (default: from the config's [http])")
    parser.add_argument("--token", help="API token (default: $ACD_TOKEN)")
    parser.add_argument("--config", metavar="PATH", help="config to read [http] from")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


class ApiError(Exception):
    """The daemon answered with an error or could not be reached; the message says which."""


def request(
    args: argparse.Namespace, config: Config, method: str, path: str, body: object = None
) -> Any:
    base = args.url or f"http://{config.http.bind}:{config.http.port}"
    token = args.token or os.environ.get("ACD_TOKEN", "")
    if not token:
        raise ApiError("no token: pass --token or set ACD_TOKEN")
    if not base.startswith(("http://", "https://")):
        raise ApiError(f"--url must be an http:// or https:// URL, found {base!r}")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)  # noqa: S310 - scheme checked above
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - scheme checked above
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            detail = problem.get("detail") or problem.get("title")
        except (ValueError, AttributeError):
            detail = exc.reason
        raise ApiError(f"{method} {path}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"cannot reach the daemon at {base}: {exc}") from None


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def show_queues(args: argparse.Namespace, config: Config) -> int:
    queues = request(args, config, "GET", "/api/v1/queues")
    if args.json:
        print(json.dumps(queues, indent=2))
        return 0
    rows = []
    for q in queues:
        agents = q["agents"]
        t = q["today"]
        rows.append(
            [
                q["name"],
                q["strategy"],
                str(q["waiting"]),
                _secs(q["oldest_wait_s"]),
                str(agents.get("available", 0)),
                str(agents.get("busy", 0) + agents.get("reserved", 0)),
                str(agents.get("wrap_up", 0)),
                str(agents.get("not_ready", 0)),
                str(t["offered"]),
                str(t["answered"]),
                str(t["abandoned"]),
                _pct(t["service_level"]),
                _secs(t["asa_s"]),
            ]
        )
    header = ["queue", "strategy", "waiting", "oldest", "avail", "on-call", "wrap", "paused",
              "offered", "answered", "abandoned", "SL", "ASA"]  # fmt: skip
    print(table(rows, header))
    return 0


def show_agents(args: argparse.Namespace, config: Config) -> int:
    agents = request(args, config, "GET", "/api/v1/agents")
    if args.json:
        print(json.dumps(agents, indent=2))
        return 0
    rows = [
        [
            a["id"],
            a["name"],
            a["state"] + (f" ({a['reason']})" if a["reason"] else ""),
            ", ".join(f"{q}:{p}" for q, p in sorted(a["queues"].items())),
            ", ".join(f"{s}={lvl}" for s, lvl in sorted(a["skills"].items())),
        ]
        for a in agents
    ]
    print(table(rows, ["agent", "name", "state", "queues:penalty", "skills"]))
    return 0


def set_agent(args: argparse.Namespace, config: Config) -> int:
    state = args.state.replace("-", "_")
    body = {
        "state": {"login": "logged_in", "logout": "logged_out"}.get(state, state),
        "reason": args.reason,
    }
    view = request(args, config, "PUT", f"/api/v1/agents/{args.agent_id}/state", body)
    print(json.dumps(view, indent=2) if args.json else f"{view['id']}: {view['state']}")
    return 0


def monitor_call(args: argparse.Namespace, config: Config) -> int:
    """Start monitoring a call (with --supervisor), switch its mode, or stop it (audited)."""
    path = f"/api/v1/calls/{args.call_id}/monitor"
    if args.mode == "stop":
        view = request(args, config, "DELETE", path)
    elif args.supervisor:
        view = request(
            args, config, "POST", path, {"mode": args.mode, "supervisor": args.supervisor}
        )
    else:
        view = request(args, config, "PATCH", path, {"mode": args.mode})
    state = "ended" if args.mode == "stop" else view["state"]
    line = f"{view['call_id']}: {view['supervisor']} {view['mode']} ({state})"
    print(json.dumps(view, indent=2) if args.json else line)
    return 0


def run(func: Any, args: argparse.Namespace, config: Config) -> int:
    try:
        code: int = func(args, config)
    except ApiError as exc:
        print(f"acd: {exc}", file=sys.stderr)
        return 1
    return code
