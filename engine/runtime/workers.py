"""Worker processes of the daemon: started together, each restarted when it dies, stopped together.

Both kinds of media worker use this: the WebRTC gateway's (engine/webrtc/worker.py, browser legs)
and the SIP media's (engine/media/worker.py, bridged calls). A worker is ``python -m MODULE FD
[FD2] ARGS...``: FD is its end of an AF_UNIX socketpair made by the daemon, the control stream,
frames of a 4-byte big-endian length and a msgpack message (each kind has its own `msgspec`
unions; `Ready` opens every worker's side). With ``fd_channel=True`` the pool also hands the worker
FD2, the end of an AF_UNIX datagram socketpair that carries file descriptors (SCM_RIGHTS): the
SIP media workers receive the RTP sockets of the calls they take over on it.

Lifetime: the worker ignores SIGINT and SIGTERM (a Ctrl-C or a service manager's SIGTERM goes to
the whole process group; the daemon must drain its calls first, then it stops its workers), and it
exits when its control stream closes, whether the daemon closed it or died: no orphans.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog
from prometheus_client import Counter, Gauge

from engine.config import Config, LogConfig, LogFormat, LogLevel

log = structlog.stdlib.get_logger("acd.workers")

#: A worker imports its libraries (aiortc, PyAV, numpy) before it says "ready": about a second on
#: an idle core, several when the machine is busy starting everything else.
WORKER_START_TIMEOUT_S = 30.0
#: A stopping worker closes what it carries, then exits; one that takes longer is killed.
WORKER_STOP_TIMEOUT_S = 5.0
#: Restart delay after a worker that died young (a broken install must not spin): doubles per quick
#: death up to the cap, back to none once a worker lived longer than `WORKER_STABLE_S`.
WORKER_BACKOFF_S = 0.5
WORKER_BACKOFF_MAX_S = 30.0
WORKER_STABLE_S = 10.0
#: `-m engine.xxx_worker` must find this very engine package, installed or not.
_ROOT = str(Path(__file__).resolve().parents[2])
MAX_FRAME_BYTES = 1 << 20
_LENGTH = struct.Struct("!I")
#: File descriptors one message on the fd channel may carry (a call's two legs: RTP and RTCP each).
MAX_FDS = 8


class Ready(msgspec.Struct, tag=True, array_like=True):
    """The worker's first message: it is up."""

    pid: int


_encoder = msgspec.msgpack.Encoder()


def encode_frame(message: msgspec.Struct) -> bytes:
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


class ChannelClosed(Exception):
    """The control stream ended (EOF, reset, or a frame that cannot be a control message)."""


async def read_frame(reader: asyncio.StreamReader, decoder: msgspec.msgpack.Decoder[Any]) -> Any:
    """The next message on a control stream; ChannelClosed when the other process is gone."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_FRAME_BYTES:
            raise ChannelClosed(f"control frame of {length} bytes")
        return decoder.decode(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ChannelClosed(str(exc) or type(exc).__name__) from exc
    except msgspec.DecodeError as exc:
        raise ChannelClosed(f"bad control message: {exc}") from exc


def worker_args(config: Config) -> list[str]:
    """LOG_LEVEL LOG_FORMAT EVENT_LOOP for a worker: the daemon's own (read at start)."""
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    return [
        level if level in ("debug", "info", "warning", "error") else "error",
        config.log.format.value,
        config.runtime.event_loop,
    ]


def settle(future: asyncio.Future[Any], result: Any = None, exc: Exception | None = None) -> None:
    """Resolve ``future`` unless it already is (a reply that raced a worker's death)."""
    if future.done():
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)
        future.exception()  # nobody may be waiting (yet): don't log it as never retrieved


def exit_text(status: int | None) -> str:
    """A worker's exit status as an operator reads it: "killed by SIGKILL", "exit status 1"."""
    if status is not None and status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


class Client(Protocol):
    """What a worker carries for the daemon (a browser leg, a bridged call): its messages come
    here, keyed by their ``sid``."""

    def received(self, message: Any) -> None: ...

    def worker_died(self) -> None:
        """The worker is gone: the client carries on without it (or ends)."""

    def detach(self) -> None:
        """The pool is shutting down: nobody waits for a reply that cannot come any more."""


class WorkerProcess:
    """One worker slot: the current process, its control stream and the clients it carries."""

    def __init__(self, slot: int, kind: str = "worker") -> None:
        self.slot = slot
        self.kind = kind
        self.pid = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        #: The daemon's end of the fd channel (``fd_channel=True`` pools).
        self.fd_sock: socket.socket | None = None
        self.clients: dict[int, Client] = {}
        # Messages waiting for the fd channel (a full one: EAGAIN), each after its descriptors;
        # while any wait, every message waits behind them, so the worker sees them in order.
        self._fd_queue: collections.deque[tuple[list[socket.socket], msgspec.Struct]] = (
            collections.deque()
        )
        self._fd_writer = False
        self.alive = False
        # Why no worker serves this slot while `alive` is false (for /readyz).
        self.down = "starting"

    def send(self, message: msgspec.Struct) -> None:
        if self._fd_queue:
            self._fd_queue.append(([], message))
        elif self.alive and self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode_frame(message))

    def send_with_fds(self, socks: list[socket.socket], message: msgspec.Struct) -> None:
        """Send ``message`` once ``socks`` are on the fd channel (AF_UNIX delivers them before
        sendmsg returns, so the worker finds them when it reads ``message``). Takes ownership of
        ``socks`` (closed once sent). A full channel (a few datagrams: net.unix.max_dgram_qlen)
        queues them; OSError if the worker is not running."""
        if not self.alive or self.fd_sock is None:
            for sock in socks:
                sock.close()
            raise OSError("the media worker is not running")
        self._fd_queue.append((socks, message))
        if len(self._fd_queue) == 1:
            self._flush_fds()

    def _flush_fds(self) -> None:
        queue = self._fd_queue
        while queue:
            socks, message = queue[0]
            if socks:
                if self.fd_sock is None:
                    break
                try:
                    socket.send_fds(self.fd_sock, [b"f"], [s.fileno() for s in socks])
                except BlockingIOError:
                    if not self._fd_writer:
                        asyncio.get_running_loop().add_writer(self.fd_sock, self._flush_fds)
                        self._fd_writer = True
                    return
                except OSError as exc:  # the worker is gone: its death ends what it carried
                    log.warning("worker_fd_channel_failed", kind=self.kind, reason=str(exc))
                    self._drop_fd_queue()
                    return
                for sock in socks:
                    sock.close()
            queue.popleft()
            if self.alive and self.writer is not None and not self.writer.is_closing():
                self.writer.write(encode_frame(message))
        if self._fd_writer and self.fd_sock is not None:
            asyncio.get_running_loop().remove_writer(self.fd_sock)
        self._fd_writer = False

    def _drop_fd_queue(self) -> None:
        if self._fd_writer and self.fd_sock is not None:
            asyncio.get_running_loop().remove_writer(self.fd_sock)
        self._fd_writer = False
        for socks, _ in self._fd_queue:
            for sock in socks:
                sock.close()
        self._fd_queue.clear()

    async def reap(self) -> int | None:
        """Close the control stream (the worker then exits), wait for the exit; the exit status."""
        self.alive = False
        self._drop_fd_queue()
        if self.writer is not None:
            self.writer.close()
        elif self.sock is not None:
            self.sock.close()
        if self.fd_sock is not None:
            self.fd_sock.close()
        self.writer = self.reader = self.sock = self.fd_sock = None
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), WORKER_STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("worker_kill", kind=self.kind, worker=self.slot, pid=proc.pid)
                proc.kill()
                await proc.wait()
        return proc.returncode


class WorkerPool:
    """N worker processes of one kind: started together, each restarted when it dies, stopped
    together.

    One supervisor task per slot owns the slot's process: it starts it, reads its control stream
    until it ends, then tells the clients it carried (`Client.worker_died`) and starts a new one.
    Log lines are ``{kind}_worker_started`` / ``_died`` / ``_start_failed``.
    """

    def __init__(
        self,
        kind: str,
        module: str,
        count: int,
        decoder: msgspec.msgpack.Decoder[Any],
        *,
        args: list[str],
        workers_gauge: Gauge,
        restarts: Counter,
        gone: Callable[[str], Exception],
        on_unexpected: Callable[[], None],
        on_other: Callable[[WorkerProcess, Any], None] | None = None,
        fd_channel: bool = False,
    ) -> None:
        self.kind = kind
        self._module = module
        self._slots = [WorkerProcess(i, kind) for i in range(count)]
        self._decoder = decoder
        self._args = args
        self._workers_gauge = workers_gauge
        self._restarts = restarts
        self._gone = gone
        self._on_unexpected = on_unexpected
        self._on_other = on_other
        self._fd_channel = fd_channel
        self._supervisors: list[asyncio.Task[None]] = []
        self._some_up = asyncio.Event()
        self._closing = False
        self._next_sid = 0

    @property
    def slots(self) -> list[WorkerProcess]:
        return list(self._slots)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._slots if w.alive]

    def not_ready(self) -> str | None:
        """Why some worker is not serving (for /readyz), or None when every one is up. A slot
        that is down does not strand anyone (new clients go to the others), but capacity is
        short and a slot that keeps dying is what an operator must hear about."""
        down = [f"media worker {w.slot} {w.down}" for w in self._slots if not w.alive]
        return "; ".join(down) or None

    async def start(self) -> None:
        """Start every worker; returns when each is up or its first start failed (logged)."""
        loop = asyncio.get_running_loop()
        first: list[asyncio.Future[None]] = [loop.create_future() for _ in self._slots]
        self._supervisors = [
            asyncio.ensure_future(self._supervise(w, f))
            for w, f in zip(self._slots, first, strict=True)
        ]
        await asyncio.wait(first)

    async def close(self) -> None:
        self._closing = True
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        for worker in self._slots:
            for client in list(worker.clients.values()):
                client.detach()
            worker.clients.clear()
            worker.down = "stopped (shutting down)"
        await asyncio.gather(*(w.reap() for w in self._slots))
        self._some_up.clear()
        self._workers_gauge.set(0)

    def assign_now(self, client: Client) -> tuple[WorkerProcess, int] | None:
        """The running worker with the fewest clients takes ``client``; None if none is up."""
        if self._closing:
            return None
        alive = [w for w in self._slots if w.alive]
        if not alive:
            return None
        worker = min(alive, key=lambda w: len(w.clients))
        self._next_sid += 1
        worker.clients[self._next_sid] = client
        return worker, self._next_sid

    async def assign(self, client: Client) -> tuple[WorkerProcess, int]:
        """The worker with the fewest clients takes ``client``; waits while none is up."""
        if self._closing:
            raise self._gone("shutting down")
        try:
            await asyncio.wait_for(self._some_up.wait(), WORKER_START_TIMEOUT_S)
        except TimeoutError:
            raise self._gone(f"no {self.kind} media worker running") from None
        assigned = self.assign_now(client)
        if assigned is None:
            raise self._gone(f"no {self.kind} media worker running")
        return assigned

    def _update_up(self) -> None:
        alive = sum(w.alive for w in self._slots)
        self._workers_gauge.set(alive)
        if alive:
            self._some_up.set()
        else:
            self._some_up.clear()

    async def _supervise(self, worker: WorkerProcess, first: asyncio.Future[None]) -> None:
        backoff = 0.0
        while not self._closing:
            started = time.monotonic()
            try:
                await self._spawn(worker)
            except (OSError, TimeoutError, ChannelClosed) as exc:
                log.error(
                    f"{self.kind}_worker_start_failed",
                    worker=worker.slot,
                    reason=str(exc) or type(exc).__name__,
                )
                worker.down = f"failed to start ({str(exc) or type(exc).__name__}); retrying"
                await worker.reap()
            else:
                log.info(f"{self.kind}_worker_started", worker=worker.slot, pid=worker.pid)
                worker.down = ""
                self._update_up()
                settle(first)
                reason = await self._serve(worker)
                worker.down = f"(pid {worker.pid}) died; restarting"
                status = await worker.reap()
                worker.down = f"(pid {worker.pid}) died ({exit_text(status)}); restarting"
                self._update_up()
                clients = list(worker.clients.values())
                worker.clients.clear()
                for client in clients:
                    client.worker_died()
                self._restarts.inc()
                log.error(
                    f"{self.kind}_worker_died",
                    worker=worker.slot,
                    pid=worker.pid,
                    exit_status=status,
                    reason=reason,
                    sessions_closed=len(clients),
                )
            settle(first)
            if time.monotonic() - started > WORKER_STABLE_S:
                backoff = 0.0
            else:
                backoff = min(max(backoff * 2, WORKER_BACKOFF_S), WORKER_BACKOFF_MAX_S)
            await asyncio.sleep(backoff)

    async def _spawn(self, worker: WorkerProcess) -> None:
        parent, child = socket.socketpair()
        worker.sock = parent
        fds = [child.fileno()]
        fd_child: socket.socket | None = None
        if self._fd_channel:
            worker.fd_sock, fd_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            worker.fd_sock.setblocking(False)
            fds.append(fd_child.fileno())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self._module,
                *(str(fd) for fd in fds),
                *self._args,
                pass_fds=tuple(fds),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        finally:
            child.close()
            if fd_child is not None:
                fd_child.close()
        worker.reader, worker.writer = await asyncio.open_connection(sock=parent)
        ready = await asyncio.wait_for(
            read_frame(worker.reader, self._decoder), WORKER_START_TIMEOUT_S
        )
        if not isinstance(ready, Ready):
            raise ChannelClosed(f"expected Ready, got {type(ready).__name__}")
        worker.pid = ready.pid
        worker.alive = True

    async def _serve(self, worker: WorkerProcess) -> str:
        """Hand the worker's messages to their clients until its stream ends; why it ended."""
        assert worker.reader is not None
        while True:
            try:
                message = await read_frame(worker.reader, self._decoder)
            except ChannelClosed as exc:
                return str(exc)
            sid = getattr(message, "sid", None)
            if sid is None:
                if self._on_other is not None:
                    try:
                        self._on_other(worker, message)
                    except Exception:
                        log.exception(f"{self.kind}_worker_message_error")
                        self._on_unexpected()
                continue
            client = worker.clients.get(sid)
            if client is None:
                continue  # a late report for a client that closed
            try:
                client.received(message)
            except Exception:  # our bug (or a hook's): it ends that client, not the others
                log.exception(f"{self.kind}_session_error", where="worker_message", sid=sid)
                self._on_unexpected()
                worker.clients.pop(sid, None)
                client.worker_died()


# -- the worker's side -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def control_stream(
    fd: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """The worker's end of its control stream (descriptor ``fd``), closed on the way out."""
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def worker_main(
    argv: list[str],
    *,
    module: str,
    n_fds: int,
    serve: Callable[[list[int]], Coroutine[Any, Any, None]],
    context_key: str,
    quiet_loggers: tuple[str, ...] = (),
) -> int:
    """``python -m MODULE FD [FD2] LOG_LEVEL LOG_FORMAT EVENT_LOOP``: the common start of a
    worker process (signals, logging, event loop), then ``serve(fds)`` until its stream ends."""
    if len(argv) != n_fds + 3 or not all(a.isdigit() for a in argv[:n_fds]):
        usage_fds = " ".join(["FD"] * n_fds)
        print(
            f"usage: python -m {module} {usage_fds} LOG_LEVEL LOG_FORMAT EVENT_LOOP\n"
            "(started by the acd daemon when it runs media workers; not for running by hand)",
            file=sys.stderr,
        )
        return 2
    fds = [int(a) for a in argv[:n_fds]]
    level, fmt, event_loop = argv[n_fds:]
    # The daemon drains its calls on SIGINT/SIGTERM and then stops us by closing the channel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from engine.runtime.logs import configure_logging

    configure_logging(LogConfig(level=LogLevel(level), format=LogFormat(fmt)))
    structlog.contextvars.bind_contextvars(**{context_key: os.getpid()})
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(logging.INFO)
    loop_factory: Any = None
    if event_loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(fds))
    return 0
