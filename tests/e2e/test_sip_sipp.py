"""SIPp (a real peer) calls a UAS built from the stack: UDP at 200 calls/s, UDP with 10 % loss, TCP.

The UAS runs in this process (`SimpleUas`: 200 OK + SDP to INVITE, the endpoint handles ACK and
BYE) on an asyncio or uvloop loop; SIPp's built-in `uac` scenario runs as a subprocess on its own
ports and control port. SIPp's exit status 0 means every call succeeded; the UAS side must have
seen every call through (ACK or BYE) with no internal error.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from sip.transport.tcp import serve_tcp
from sip.transport.udp import serve_udp
from tests.conftest import free_port
from tests.e2e.sipp.simple_uas import SimpleUas, make_endpoint

pytestmark = pytest.mark.e2e

SIPP = shutil.which("sipp") or "/usr/bin/sipp"


async def run_sipp(
    target: tuple[str, int], extra: list[str], workdir: Path, timeout_s: float
) -> tuple[int, str]:
    args = [
        SIPP,
        "-sn",
        "uac",
        f"{target[0]}:{target[1]}",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port(socket.SOCK_DGRAM)),
        "-cp",
        str(free_port(socket.SOCK_DGRAM)),
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        *extra,
    ]
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()  # our own child, by its handle
        await proc.wait()
        raise
    return proc.returncode if proc.returncode is not None else -1, out.decode(errors="replace")


def run_on(loop_name: str, coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_name == "uvloop":
        uvloop.run(coro_fn())
    else:
        asyncio.run(coro_fn())


def _summary(output: str, workdir: Path) -> str:
    errors = workdir / "errors.log"
    tail = errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
    return output[-1500:] + "\n--- errors.log ---\n" + tail


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_sipp_uac_200_cps_udp(loop_name: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        app = SimpleUas()
        proto = await serve_udp(lambda a: make_endpoint(a), app)
        try:
            rc, out = await run_sipp(
                proto.local_addr, ["-r", "200", "-m", "1000", "-timeout", "30"], tmp_path, 45
            )
            assert rc == 0, _summary(out, tmp_path)
        finally:
            proto.close()
        assert app.counts["RequestReceived"] == 1000
        assert app.counts["ByeReceived"] == 1000
        assert app.counts["AckReceived"] == 1000
        assert app.errors == []
        assert proto.endpoint.rejections == {}

    run_on(loop_name, scenario)


def test_sipp_uac_with_10_percent_loss_udp(tmp_path: Path) -> None:
    """-lost 10: SIPp drops 10 % of what it sends; retransmissions on both sides complete every call."""

    async def scenario() -> None:
        app = SimpleUas()
        proto = await serve_udp(lambda a: make_endpoint(a), app)
        try:
            rc, out = await run_sipp(
                proto.local_addr,
                ["-r", "50", "-m", "200", "-lost", "10", "-timeout", "60"],
                tmp_path,
                75,
            )
            assert rc == 0, _summary(out, tmp_path)
            assert "Successful call" in out
        finally:
            proto.close()
        assert app.counts["RequestReceived"] == 200  # INVITE retransmissions were absorbed
        assert app.errors == []

    run_on("asyncio", scenario)


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_sipp_uac_over_tcp(loop_name: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        app = SimpleUas()
        transport = await serve_tcp(lambda a: make_endpoint(a, transport="TCP"), app)
        addr = (transport.endpoint.config.local_host, transport.endpoint.config.local_port)
        try:
            rc, out = await run_sipp(
                addr, ["-t", "t1", "-r", "200", "-m", "600", "-timeout", "30"], tmp_path, 45
            )
            assert rc == 0, _summary(out, tmp_path)
        finally:
            transport.close()
        assert app.counts["RequestReceived"] == 600
        assert app.counts["ByeReceived"] == 600
        assert app.errors == []

    run_on(loop_name, scenario)
