"""systemd service notifications (sd_notify(3)): readiness, reload, stop and the watchdog.

Under ``Type=notify`` (config/acd.service) systemd starts the units that need the ACD only once it
says ``READY=1``, which the daemon sends when ``/readyz`` would first answer 200 (listeners open,
storage migrated, routing kernels loaded). ``RELOADING=1`` and ``READY=1`` frame a ``SIGHUP``
reload, ``STOPPING=1`` starts the drain, and ``STATUS=`` lines show in ``systemctl status``.

With ``WatchdogSec=`` set, systemd passes ``WATCHDOG_USEC`` and the daemon sends ``WATCHDOG=1``
from its event loop at half that interval: an event loop stuck for longer than the interval (all
calls stuck with it) gets the daemon killed and restarted by ``Restart=on-failure``.

The protocol is one datagram of ``KEY=value`` lines to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace). It is written here rather
than taken from a library: ``systemd-python`` needs libsystemd's headers to build, and the protocol
is these few lines. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.stdlib.get_logger("acd.systemd")


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        mine = not pid or (pid.isdigit() and int(pid) == os.getpid())
        #: How often systemd expects a WATCHDOG=1, None when it does not watch this process.
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (keys upper-cased); False outside systemd or on failure."""
        if self._sock is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:  # systemd gone or the socket full: never a reason to stop
            log.warning("sd_notify_failed", reason=str(exc), socket=self._address.lstrip("\0"))
            return False
        return True

    def ready(self, status: str) -> None:
        self.notify(ready=1, status=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC: what Type=notify-reload (systemd 253+) matches the reload by
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(reloading=1, monotonic_usec=usec, status="reloading the config")

    def stopping(self, status: str) -> None:
        self.notify(stopping=1, status=status)

    async def watchdog(self) -> None:
        """Ping the watchdog at half its interval while the event loop runs (a task)."""
        if self.watchdog_s is None:
            return
        while True:
            self.notify(watchdog=1)
            await asyncio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
