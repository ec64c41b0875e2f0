"""The ``acd`` command line: run the daemon, check a config, list plugins, print the version.

Every subcommand has ``--help``. Errors an operator can fix (a bad config, a missing file) are printed
as one line on stderr with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from engine import __version__
from engine.config import AdminObject, Config, ConfigError
from engine.plugins import PluginSet, load_config, parse_config

DEFAULT_CONFIG = Path("config/acd.toml")


def embedded_default_text() -> str:
    """The default config shipped inside the package (a copy of ``config/acd.toml``)."""
    return resources.files("engine").joinpath("default.toml").read_text(encoding="utf-8")


def _load(path: str | None) -> tuple[Config, PluginSet, Path | None]:
    """The config (with its enabled plugins loaded) and the file it came from."""
    if path is not None:
        return *load_config(path), Path(path)
    if DEFAULT_CONFIG.is_file():
        return *load_config(DEFAULT_CONFIG), DEFAULT_CONFIG
    return *parse_config(embedded_default_text(), "<embedded default config>"), None


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.daemon import run_daemon
    from engine.runtime.logs import configure_logging

    config, plugins, path = _load(args.config)
    configure_logging(config.log, level_override=args.log_level)
    return run_daemon(config, config_path=path, plugins=plugins)


def _cmd_plugins(args: argparse.Namespace) -> int:
    """Installed plugins; with --config, which of them that config enables (loading them)."""
    import json

    from engine.plugins import installed

    found = installed()
    enabled: dict[str, object] = {}
    if args.config is not None:
        _config, plugins, _path = _load(args.config)
        for lp in plugins.plugins:
            p = lp.plugin
            enabled[p.name] = {
                "steps": sorted(p.steps),
                "lookups": sorted(p.lookups),
                "qa_rule_packs": sorted(p.qa_rules),
                "event_consumers": len(lp.consumers),
            }
    rows = [
        {
            "name": i.name,
            "distribution": i.distribution,
            "version": i.version,
            "entry_point": i.value,
            "enabled": i.name in enabled if args.config is not None else None,
            **({"adds": enabled[i.name]} if i.name in enabled else {}),
        }
        for i in found
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins installed (entry point group acd.plugins)")
        return 0
    for row in rows:
        state = {True: "enabled", False: "not enabled", None: ""}[row["enabled"]]  # type: ignore[index]
        print(f"{row['name']:<20} {row['distribution']} {row['version']:<10} {state}".rstrip())
        adds = row.get("adds")
        if isinstance(adds, dict):
            for what in ("steps", "lookups", "qa_rule_packs"):
                if adds[what]:
                    print(f"    {what.replace('_', ' ')}: {', '.join(adds[what])}")
            if adds["event_consumers"]:
                print(f"    event consumers: {adds['event_consumers']}")
    return 0


def _cmd_precompile(_args: argparse.Namespace) -> int:
    import time

    from routing_core import Router

    began = time.monotonic()
    compiled, loaded = Router(n_skills=1).warmup()
    print(
        f"routing kernels: {compiled} compiled, {loaded} loaded from the cache "
        f"({time.monotonic() - began:.1f} s)"
    )
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    config, plugins = load_config(args.path)
    print(
        f"{args.path}: OK ({len(config.queues)} queues, {len(config.agents)} agents, "
        f"{len(config.sip.listeners)} SIP listeners, {len(plugins.plugins)} plugins)"
    )
    return 0


def _parse_time(text: str | None) -> float | None:
    """Epoch seconds or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            f"acd: expected epoch seconds or an ISO date/time, found {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _cmd_export_config(args: argparse.Namespace) -> int:
    """The effective config (the file with the admin API's stored objects on top) as TOML,
    checked the way the daemon checks it before it is printed."""
    import asyncio

    import tomli_w

    from engine.config import effective_toml, read_config_text
    from engine.storage import StorageError, Store, database_url
    from engine.storage.admin import load_objects

    config, _plugins, path = _load(args.config)
    if path is None:
        text, file = embedded_default_text(), "<embedded default config>"
    else:
        text, file = read_config_text(path), str(path)

    async def objects() -> list[AdminObject] | None:
        try:
            store = await Store.open(database_url(config.storage, base_dir=Path.cwd()))
        except StorageError as exc:
            print(f"acd: cannot open the CDR store: {exc}", file=sys.stderr)
            return None
        try:
            return await load_objects(store)
        finally:
            await store.close()

    stored = asyncio.run(objects())
    if stored is None:
        return 1
    parse_config(text, file, overlay=stored)  # a ConfigError is reported like check-config's
    out = tomli_w.dumps(effective_toml(text, file, stored))
    if args.output in (None, "-"):
        sys.stdout.write(out)
    else:
        Path(args.output).write_text(out, encoding="utf-8")
    return 0


def _cmd_export_queue_log(args: argparse.Namespace) -> int:
    import asyncio

    from engine.storage import StorageError, Store, database_url
    from engine.storage.queue_log import export_queue_log

    config, _plugins, _path = _load(args.config)
    since, until = _parse_time(args.since), _parse_time(args.until)

    async def export() -> list[str] | None:
        try:
            store = await Store.open(database_url(config.storage, base_dir=Path.cwd()))
        except StorageError as exc:
            print(f"acd: cannot open the CDR store: {exc}", file=sys.stderr)
            return None
        try:
            return [line async for line in export_queue_log(store, since=since, until=until)]
        finally:
            await store.close()

    lines = asyncio.run(export())
    if lines is None:
        return 1
    text = "".join(line + "\n" for line in lines)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    from engine.cli import operator as opcli

    config, _plugins, _path = _load(args.config)
    return opcli.run(args.op, args, config)


def _delegate(name: str, argv: list[str]) -> int:
    """Subcommands with their own argument parsers (simulate, erlang, recordings)."""
    import importlib

    module, function, _summary = _DELEGATED[name]
    entry = getattr(importlib.import_module(module), function)
    code: int = entry(list(argv))
    return code


def _cmd_version(_args: argparse.Namespace) -> int:
    print(f"acd {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acd",
        description="Contact-center ACD daemon: SIP trunks in, skill-based routing, agents out.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon", description="Run the ACD daemon.")
    run.add_argument(
        "--config",
        metavar="PATH",
        help=f"config file (default: {DEFAULT_CONFIG} if present, else the embedded default)",
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override the config's log.level",
    )
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config file; exit 0 if it is valid, 2 with the reason if not.",
    )
    check.add_argument("path", help="the TOML file to check")
    check.set_defaults(func=_cmd_check_config)

    plugins = sub.add_parser(
        "plugins",
        help="list installed plugins",
        description="List the installed plugins (entry point group acd.plugins); with --config, "
        "load the ones that config enables and show what they add.",
    )
    plugins.add_argument("--config", metavar="PATH", help="also show what this config enables")
    plugins.add_argument("--json", action="store_true", help="one JSON document")
    plugins.set_defaults(func=_cmd_plugins)

    export = sub.add_parser(
        "export",
        help="export data from the CDR store",
        description="Export data from the CDR store.",
    )
    export_sub = export.add_subparsers(dest="what", required=True, metavar="WHAT")
    queue_log = export_sub.add_parser(
        "queue-log",
        help="queue and agent events in Asterisk's queue_log format",
        description="Write queue and agent events as Asterisk queue_log lines "
        "(epoch|callid|queue|agent|EVENT|data...), oldest first.",
    )
    queue_log.add_argument("--config", metavar="PATH", help="config naming the store")
    queue_log.add_argument("--since", help="from this time (epoch seconds or ISO 8601, UTC)")
    queue_log.add_argument("--until", help="up to (not including) this time")
    queue_log.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    queue_log.set_defaults(func=_cmd_export_queue_log)
    export_config = export_sub.add_parser(
        "config",
        help="the effective config (file + admin API objects) as TOML",
        description="Print the effective config as TOML: the config file with the agents and "
        "queues made through /api/v1/admin applied on top. `acd check-config` accepts it, and "
        "run as the file with an empty store it gives the same config.",
    )
    export_config.add_argument("--config", metavar="PATH", help="config file naming the store")
    export_config.add_argument("--output", "-o", metavar="FILE", help="write here, not stdout")
    export_config.set_defaults(func=_cmd_export_config)

    from engine.cli import operator as opcli

    # Listed here for `acd --help`; main() hands their arguments over before this parser runs.
    for name, (_module, _function, summary) in _DELEGATED.items():
        delegated = sub.add_parser(name, help=summary, add_help=False)
        delegated.set_defaults(func=lambda a, name=name: _delegate(name, []))

    queues = sub.add_parser(
        "queues",
        help="live queue figures from a running daemon",
        description="Queues of a running daemon: waiting, agents by state, today's figures.",
    )
    opcli.add_common(queues)
    queues.set_defaults(func=_cmd_operator, op=opcli.show_queues)
    agents = sub.add_parser(
        "agents",
        help="agents and their state in a running daemon",
        description="Agents of a running daemon with their routing state.",
    )
    opcli.add_common(agents)
    agents.set_defaults(func=_cmd_operator, op=opcli.show_agents)
    agent = sub.add_parser(
        "agent",
        help="change an agent's state",
        description="Change an agent's state in a running daemon (audited).",
    )
    agent.add_argument("agent_id")
    agent.add_argument("state", choices=["ready", "not-ready", "login", "logout"])
    agent.add_argument("--reason", default="", help="reason for not-ready")
    opcli.add_common(agent)
    agent.set_defaults(func=_cmd_operator, op=opcli.set_agent)
    monitor = sub.add_parser(
        "monitor",
        help="listen to, whisper into or barge in on a live call",
        description="A supervisor's SIP phone listens to, whispers into (heard by the agent only) "
        "or barges in on (heard by both) a bridged call of a running daemon: with --supervisor "
        "it is rung, without it the call's monitoring switches mode; stop hangs it up (audited).",
    )
    monitor.add_argument("call_id")
    monitor.add_argument("mode", choices=["listen", "whisper", "barge", "stop"])
    monitor.add_argument("--supervisor", default="", help="[[agents]] id whose phone is rung")
    opcli.add_common(monitor)
    monitor.set_defaults(func=_cmd_operator, op=opcli.monitor_call)

    precompile = sub.add_parser(
        "precompile",
        help="compile the routing kernels into numba's on-disk cache",
        description="Compile the routing kernels (numba) into their on-disk cache, so the first "
        "daemon start after an install or an upgrade loads them in milliseconds instead of "
        "compiling them for ~20 s. Run it after installing (a Dockerfile, a package's postinst); "
        "scripts/run and scripts/test do. The cache lives beside the installed package, or in "
        "$NUMBA_CACHE_DIR when set (the daemon must see the same one).",
    )
    precompile.set_defaults(func=_cmd_precompile)

    version = sub.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(func=_cmd_version)
    return parser


# Subcommands that own their argument parsing: `acd simulate --agents 14 ...` goes straight there.
_DELEGATED = {
    "simulate": (
        "engine.cli.simulate",
        "simulate_main",
        "discrete-event simulation of the routing core (Erlang C/A check, staffing what-ifs)",
    ),
    "erlang": (
        "routing_core.erlang",
        "erlang_main",
        "Erlang B, C and A, and staffing for a service-level or ASA target",
    ),
    # engine.cli.recordings purges the daemon's live index (`purge --config`) and hands every
    # other form to recordings.cli, which must not import the engine.
    "recordings": (
        "engine.cli.recordings",
        "recordings_main",
        "decrypt, repair or purge call recordings (purge --config: the daemon's own index)",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"acd: invalid config: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
