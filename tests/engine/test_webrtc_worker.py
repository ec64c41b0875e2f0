"""The WebRTC media worker's own tasks (engine/webrtc/worker.py), served in this process.

`_Worker.serve` runs over one end of a socketpair, the test holds the daemon's end: every task
the worker started (its stats reporter, the legs' media clock) has ended by the time `serve`
returns, so none is left pending for the loop to destroy (pytest turns that warning into an
error).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import msgspec

from engine.runtime.workers import Ready, read_frame
from engine.webrtc.track import _MediaClock
from engine.webrtc.worker import _Worker


class _IdleSender:
    """Stands for a leg on the media clock (`_MediaClock` drives it; it sends nothing)."""

    async def send(self, now: float, ntp: int) -> None:
        pass

    def failed(self, exc: Exception) -> None:
        raise AssertionError(f"the clock reported {exc!r}")


async def _serve_until_the_daemon_leaves(*, leg_on_the_clock: bool) -> set[asyncio.Task[object]]:
    """Serve a worker until the daemon's end closes; the tasks started meanwhile."""
    daemon_end, worker_end = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=worker_end)
    daemon_reader, daemon_writer = await asyncio.open_connection(sock=daemon_end)
    before = asyncio.all_tasks()
    serving = asyncio.create_task(_Worker(writer).serve(reader))
    ready = await asyncio.wait_for(read_frame(daemon_reader, msgspec.msgpack.Decoder(Ready)), 5)
    assert ready.pid == os.getpid()
    if leg_on_the_clock:  # (in this process the worker's loop is the test's)
        sender: Any = _IdleSender()
        _MediaClock.of_running_loop().add(sender)
    started = asyncio.all_tasks() - before
    assert serving in started
    daemon_writer.close()  # the daemon went away: the worker stops serving
    await asyncio.wait_for(serving, 5)
    writer.close()
    await writer.wait_closed()
    await daemon_writer.wait_closed()
    return started


async def test_serve_ends_its_stats_reporter_when_the_control_stream_closes() -> None:
    started = await _serve_until_the_daemon_leaves(leg_on_the_clock=False)
    assert len(started) == 2, started  # serve and its stats reporter
    assert [t for t in started if not t.done()] == []


async def test_serve_ends_the_media_clock_of_its_legs() -> None:
    started = await _serve_until_the_daemon_leaves(leg_on_the_clock=True)
    assert len(started) == 3, started  # serve, its stats reporter, the media clock
    assert [t for t in started if not t.done()] == []
