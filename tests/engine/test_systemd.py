"""engine.runtime.systemd.Notifier against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from engine.runtime.systemd import Notifier


def listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_a_path_socket_gets_key_value_lines(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with listener(path) as systemd:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        notifier.ready("ready: 3 live calls")
        assert systemd.recv(4096) == b"READY=1\nSTATUS=ready: 3 live calls"
        notifier.stopping("draining 3 live calls")
        assert systemd.recv(4096) == b"STOPPING=1\nSTATUS=draining 3 live calls"
        notifier.close()


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"acd-test-{os.getpid()}"
    with listener("\0" + name) as systemd:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.reloading()
        fields = dict(line.split("=", 1) for line in systemd.recv(4096).decode().splitlines())
        assert fields["RELOADING"] == "1"
        assert int(fields["MONOTONIC_USEC"]) > 0
        notifier.close()


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify(ready=1) is False
    assert notifier.watchdog_s is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify(ready=1) is False
    notifier.close()


def test_the_watchdog_is_only_ours_when_it_names_our_pid() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_s == 30.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_s is None


async def test_the_watchdog_pings_at_half_the_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with listener(path) as systemd:
        systemd.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        task = asyncio.ensure_future(notifier.watchdog())
        await asyncio.sleep(0.55)
        task.cancel()
        pings = []
        while True:
            try:
                pings.append(systemd.recv(64))
            except BlockingIOError:
                break
        assert pings[0] == b"WATCHDOG=1"
        assert 4 <= len(pings) <= 7  # at 0, 0.1, 0.2 ... 0.5 s
        notifier.close()
