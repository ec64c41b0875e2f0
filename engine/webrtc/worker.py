"""The WebRTC media worker process: the `MediaLeg` of many sessions, driven from the daemon.

How this works: with ``[webrtc] workers = N`` > 0 the gateway starts N of these processes
(``python -m engine.webrtc.worker FD ...``) and each session's `MediaLeg` (engine/webrtc/leg.py)
runs in one of them, the same class as in the daemon, driven over a control stream: an AF_UNIX
socketpair made by the daemon, frames of a 4-byte big-endian length and a msgpack message (the
`ToWorker` / `FromWorker` unions of engine/webrtc/protocol.py). `_Worker` turns each message into
a call on that session's leg, and the leg's events (`_LegEvents`) and counters (every
`LEG_STATS_INTERVAL_S`, when they changed) into messages back. An unexpected error in one
request ends that session, never the worker.

Lifetime: the worker ignores SIGINT and SIGTERM (a Ctrl-C or a service manager's SIGTERM goes to
the whole process group; the daemon must drain its calls first, then it stops its workers), and it
exits when its control stream closes, whether the daemon closed it or died: no orphans.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from engine.runtime.workers import (
    ChannelClosed,
    Ready,
    control_stream,
    encode_frame,
    read_frame,
    worker_main,
)
from engine.webrtc.leg import MediaLeg, OfferError
from engine.webrtc.protocol import (
    LEG_STATS_INTERVAL_S,
    Answered,
    Close,
    Closed,
    ConnectRtp,
    DisconnectRtp,
    Dtmf,
    LegFailed,
    LegStats,
    LegStatsReported,
    Offer,
    OfferRefused,
    Open,
    Opened,
    OpenFailed,
    PageError,
    StateChanged,
    ToWorker,
)
from engine.webrtc.track import stop_media_clock

log = structlog.stdlib.get_logger("acd.webrtc")


class _LegEvents:
    """A leg's events, sent to the daemon's session over the control stream."""

    def __init__(self, sid: int, send: Callable[[msgspec.Struct], None]) -> None:
        self._sid = sid
        self._send = send

    def media_state(self, state: str) -> None:
        self._send(StateChanged(self._sid, state))

    def media_error(self, reason: str) -> None:
        self._send(PageError(self._sid, reason))

    def media_failed(self, reason: str, *, bug: bool) -> None:
        self._send(LegFailed(self._sid, reason, bug))


class _Worker:
    """The legs of one worker process and the control stream that drives them."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._legs: dict[int, MediaLeg] = {}
        self._reported: dict[int, LegStats] = {}
        self._requests: set[asyncio.Task[None]] = set()

    def send(self, message: msgspec.Struct) -> None:
        if not self._writer.is_closing():
            self._writer.write(encode_frame(message))

    async def serve(self, reader: asyncio.StreamReader) -> None:
        self.send(Ready(os.getpid()))
        try:
            async with asyncio.TaskGroup() as tasks:
                reporter = tasks.create_task(self._report_stats())
                await self._read_until_closed(reader)
                reporter.cancel()  # (on an error the group cancels it)
        finally:
            for task in self._requests:
                task.cancel()
            await asyncio.gather(
                *self._requests,
                *(leg.close() for leg in self._legs.values()),
                return_exceptions=True,
            )
            await stop_media_clock()

    async def _read_until_closed(self, reader: asyncio.StreamReader) -> None:
        decoder = msgspec.msgpack.Decoder(ToWorker)
        while True:
            try:
                message = await read_frame(reader, decoder)
            except ChannelClosed as exc:
                log.info("webrtc_worker_channel_closed", reason=str(exc))
                return
            self._dispatch(message)

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, Open):
            new = MediaLeg(message.agent_id, message.cfg, _LegEvents(message.sid, self.send))
            self._legs[message.sid] = new
            self._request(self._open(message.sid, new), message.sid)
            return
        leg = self._legs.get(message.sid)
        if leg is None:  # closed meanwhile: the daemon no longer waits for this one
            return
        if isinstance(message, Offer):
            self._request(self._answer(message.sid, leg, message.sdp), message.sid)
        elif isinstance(message, ConnectRtp):
            leg.connect_rtp(message.host, message.port)
        elif isinstance(message, DisconnectRtp):
            leg.disconnect_rtp()
        elif isinstance(message, Dtmf):
            leg.dtmf(message.digits)
        elif isinstance(message, Close):
            del self._legs[message.sid]
            self._reported.pop(message.sid, None)
            self._request(self._close(message.sid, leg), message.sid)

    def _request(self, work: Awaitable[None], sid: int) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # our bug: it ends that session, never the worker
                log.exception("webrtc_worker_error", sid=sid)
                self.send(LegFailed(sid, f"internal error in worker: {type(exc).__name__}", True))

        task = asyncio.ensure_future(run())
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _open(self, sid: int, leg: MediaLeg) -> None:
        try:
            await leg.open()
        except OSError as exc:
            self.send(OpenFailed(sid, str(exc)))
            return
        if sid in self._legs:
            self.send(Opened(sid, *leg.rtp_address))

    async def _answer(self, sid: int, leg: MediaLeg, sdp: str) -> None:
        try:
            answer, codec = await leg.answer(sdp)
        except OfferError as exc:
            self.send(OfferRefused(sid, str(exc)))
            return
        self.send(Answered(sid, answer, codec))

    async def _close(self, sid: int, leg: MediaLeg) -> None:
        await leg.close()
        self.send(Closed(sid, leg.stats))

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(LEG_STATS_INTERVAL_S)
            for sid, leg in self._legs.items():
                if self._reported.get(sid) != leg.stats:
                    snapshot = msgspec.structs.replace(leg.stats)
                    self._reported[sid] = snapshot
                    self.send(LegStatsReported(sid, snapshot))


async def _serve(fd: int) -> None:
    async with control_stream(fd) as (reader, writer):
        await _Worker(writer).serve(reader)


def main(argv: list[str]) -> int:
    """``python -m engine.webrtc.worker FD LOG_LEVEL LOG_FORMAT EVENT_LOOP`` (the daemon runs it)."""

    async def serve(fds: list[int]) -> None:
        await _serve(fds[0])

    # aiortc and aioice log every packet and ICE check at debug level
    return worker_main(
        argv,
        module="engine.webrtc.worker",
        n_fds=1,
        serve=serve,
        context_key="webrtc_worker",
        quiet_loggers=("aiortc", "aioice"),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
