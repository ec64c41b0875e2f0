"""The ``acd`` command line: run the daemon, check a config, print the version.

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
from engine.config import Config, ConfigError, load_config, parse_config

DEFAULT_CONFIG = Path("config/acd.toml")


def embedded_default_text() -> str:
    """The default config shipped inside the package (a copy of ``config/acd.toml``)."""
    return resources.files("engine").joinpath("default.toml").read_text(encoding="utf-8")


def _load(path: str | None) -> tuple[Config, Path | None]:
    if path is not None:
        return load_config(path), Path(path)
    if DEFAULT_CONFIG.is_file():
        return load_config(DEFAULT_CONFIG), DEFAULT_CONFIG
    return parse_config(embedded_default_text(), "<embedded default config>"), None


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.daemon import run_daemon
    from engine.logs import configure_logging

    config, path = _load(args.config)
    configure_logging(config.log, level_override=args.log_level)
    return run_daemon(config, config_path=path)


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    print(
        f"{args.path}: OK ({len(config.queues)} queues, {len(config.agents)} agents, "
        f"{len(config.sip.listeners)} SIP listeners)"
    )
    return 0


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

    version = sub.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(func=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
