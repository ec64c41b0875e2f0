"""Start the real `acd run` daemon as a subprocess on ports the test chooses, and stop it by PID."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[str]
    http_port: int
    workdir: Path
    config_path: Path
    log_path: Path
    _log_offset: int = field(default=0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes, str]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout_s) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "")

    def get_json(self, path: str) -> tuple[int, object]:
        status, body, _ = self.get(path)
        return status, json.loads(body)

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"event": "<non-json>", "raw": raw})
        return lines

    def wait_for_log(self, event: str, timeout_s: float = 10.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if line.get("event") == event:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} log line; log:\n{self.log_path.read_text()}")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                status, _, _ = self.get("/readyz", timeout_s=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready in {timeout_s}s:\n{self.log_path.read_text()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("daemon ignored SIGTERM") from None
        return self.proc.returncode


DaemonFactory = Callable[..., DaemonProcess]


def wait_until(
    predicate: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def render_config(
    http_port: int, sip_port: int, extra: str = "", storage: str = "", http_extra: str = ""
) -> str:
    return f"""
[log]
level = "debug"
format = "json"

[http]
bind = "127.0.0.1"
port = {http_port}
{http_extra}

[[sip.listeners]]
transport = "udp"
bind = "127.0.0.1"
port = {sip_port}

[storage]
{storage or 'sqlite_path = "var/acd.sqlite3"'}
{extra}
"""


def launch(
    workdir: Path,
    extra: str = "",
    *,
    storage: str = "",
    http_port: int | None = None,
    env: dict[str, str] | None = None,
    http_extra: str = "",
) -> DaemonProcess:
    """``acd run`` in ``workdir`` on `render_config` of ``extra``, its log in acd.log (not waited
    for: see `DaemonProcess.wait_ready`)."""
    http_port = http_port or free_port()
    config_path = workdir / "acd.toml"
    config_path.write_text(render_config(http_port, free_port(), extra, storage, http_extra))
    log_path = workdir / "acd.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(config_path)],
            cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        )  # fmt: skip
    return DaemonProcess(proc, http_port, workdir, config_path, log_path)


@contextlib.contextmanager
def running_daemon(
    workdir: Path, extra: str, *, env: dict[str, str] | None = None
) -> Iterator[DaemonProcess]:
    """A ready daemon for a module's tests (`launch`), checked to exit 0 when the block ends,
    killed by PID if it did not."""
    daemon = launch(workdir, extra, env=env)
    try:
        daemon.wait_ready()
        yield daemon
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    started: list[DaemonProcess] = []

    def start(
        extra: str = "",
        *,
        storage: str = "",
        wait: bool = True,
        http_port: int | None = None,
        env: dict[str, str] | None = None,
        http_extra: str = "",
    ) -> DaemonProcess:
        workdir = tmp_path / f"daemon{len(started)}"
        workdir.mkdir()
        daemon = launch(workdir, extra, storage=storage, http_port=http_port, env=env,
                        http_extra=http_extra)  # fmt: skip
        started.append(daemon)
        if wait:
            daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


@contextlib.asynccontextmanager
async def in_process_daemon(tmp_path: Path, extra: str) -> AsyncIterator[tuple[Any, str]]:
    """The daemon ``acd run`` builds (engine.daemon.Daemon), run on the test's event loop: for tests
    that need its in-process objects (the WebRTC gateway, the event bus). Yields (daemon, base URL);
    stops it and checks it exited 0."""
    import aiohttp

    from engine.config import load_config
    from engine.daemon import Daemon

    http_port = free_port()
    path = tmp_path / "acd.toml"
    extra += f'\n[recordings]\ndir = "{tmp_path / "recordings"}"\n'
    storage = f'sqlite_path = "{tmp_path / "acd.sqlite3"}"'
    path.write_text(render_config(http_port, free_port(), extra, storage=storage))
    d = Daemon(load_config(path), config_path=path)
    run = asyncio.create_task(d.run())
    base = f"http://127.0.0.1:{http_port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            assert not run.done(), "the daemon stopped during start-up"
            try:
                async with http.get(base + "/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    try:
        yield d, base
    finally:
        d.request_stop()
        assert await asyncio.wait_for(run, 20) == 0
