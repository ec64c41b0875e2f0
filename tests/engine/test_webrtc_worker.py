"""The WebRTC media worker's own tasks (engine/webrtc/worker.py), served in this process.

`_Worker.serve` runs over one end of a socketpair, the test holds the daemon's end: every task
the worker started (its stats reporter) has ended by the time `serve` returns, so none is left
pending for the loop to destroy (pytest turns that warning into an error).
"""

from __future__ import annotations

import asyncio
import os
import socket

import msgspec

from engine.runtime.workers import Ready, read_frame
from engine.webrtc.worker import _Worker


async def test_serve_ends_its_stats_reporter_when_the_control_stream_closes() -> None:
    daemon_end, worker_end = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=worker_end)
    daemon_reader, daemon_writer = await asyncio.open_connection(sock=daemon_end)
    before = asyncio.all_tasks()
    serving = asyncio.create_task(_Worker(writer).serve(reader))
    ready = await asyncio.wait_for(read_frame(daemon_reader, msgspec.msgpack.Decoder(Ready)), 5)
    assert ready.pid == os.getpid()
    started = asyncio.all_tasks() - before
    assert serving in started
    assert len(started) == 2, started  # serve and its stats reporter
    daemon_writer.close()  # the daemon went away: the worker stops serving
    await asyncio.wait_for(serving, 5)
    assert [t for t in started if not t.done()] == []
    writer.close()
    await writer.wait_closed()
    await daemon_writer.wait_closed()
