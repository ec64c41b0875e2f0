"""Structured logging with structlog.

JSON lines when stderr is not a terminal (systemd, containers, log shippers), readable colourless
console output when it is. Every call-related line carries ``call_id``: bind it with
``log.bind(call_id=...)`` or ``structlog.contextvars.bind_contextvars(call_id=...)`` in the task that
owns the call; ``merge_contextvars`` puts it on every line that task writes.

Standard-library loggers (aiohttp, alembic, asyncio) are routed through the same renderer so one
process writes one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from engine.config import LogConfig, LogFormat

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(cfg: LogConfig, *, level_override: str | None = None) -> None:
    """Set up structlog and the stdlib root logger; idempotent (SIGHUP may call it again)."""
    level_name = (level_override or cfg.level.value).lower()
    level = _LEVELS.get(level_name, logging.ERROR)
    use_json = cfg.format is LogFormat.JSON or (
        cfg.format is LogFormat.AUTO and not sys.stderr.isatty()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        # Drop events below the level first, before any processor spends time on them.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per scrape; keep it at debug so /metrics polling is quiet.
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING))
    # aiosqlite logs every operation at debug: noise that hides the daemon's own debug lines.
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))
    # numba logs every bytecode step of a compile at debug: with a cold cache that turns the
    # kernels' warm-up from seconds into minutes. Its warnings still come through.
    logging.getLogger("numba").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
