"""SIP over TCP (and TLS): asyncio stream protocols around one sans-I/O `Endpoint`.

How this works: `TcpTransport` owns the listening server and every connection, keyed by the peer
address. Bytes from a connection go to ``endpoint.receive_stream(data, peer, now)`` (the endpoint
frames each connection with its own `sip.StreamFramer`); what the endpoint wants sent to an address
goes out on the open connection to that address - the one the request came in on, so responses
reuse it (RFC 3261 18.2.2) - or on a new outbound connection opened for it (18.1.1), which later
requests to the same address reuse. Connections idle for `IDLE_TIMEOUT_S` are closed. As in the
UDP adapter, one ``call_at`` timer follows ``endpoint.get_timer()``. Pass an `ssl.SSLContext` for
TLS (server side for accepted connections, client side for outbound ones).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Final, cast

from sip.endpoint import Addr, Endpoint
from sip.transport.udp import EventHandler

__all__ = ["IDLE_TIMEOUT_S", "TcpTransport", "serve_tcp"]

#: Close a connection after this long without traffic. RFC 5626 flows send keep-alives every
#: 95-120 s (4.4.1), so 300 s keeps well-behaved clients and reclaims abandoned sockets; Kamailio's
#: tcp_connection_lifetime defaults to 120 s, Asterisk's tcp idle timeout to 30 s after a request.
IDLE_TIMEOUT_S: Final = 300.0
#: Outbound bytes we hold for a connection that is still being opened.
MAX_PENDING_BYTES: Final = 1 << 20


class _Connection(asyncio.Protocol):
    def __init__(self, owner: TcpTransport, peer: Addr | None = None) -> None:
        self.owner = owner
        self.peer: Addr | None = peer
        self.transport: asyncio.Transport | None = None
        self.last_activity_s = owner.loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if self.peer is None:
            info = self.transport.get_extra_info("peername")
            self.peer = (str(info[0]), int(info[1]))
        self.owner._register(self)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.last_activity_s = self.owner.loop.time()
        self.owner.endpoint.receive_stream(data, self.peer, self.last_activity_s)
        self.owner.transmit()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._unregister(self)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.last_activity_s = self.owner.loop.time()
            self.transport.write(data)


class TcpTransport:
    """Connections of one endpoint over TCP or TLS."""

    def __init__(
        self,
        endpoint: Endpoint | None,
        on_event: EventHandler,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self._endpoint = endpoint
        self.loop = asyncio.get_running_loop()
        self._on_event = on_event
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._connections: dict[Addr, _Connection] = {}
        self._pending: dict[Addr, list[bytes]] = {}
        self._connect_tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def endpoint(self) -> Endpoint:
        assert self._endpoint is not None, "no endpoint yet"
        return self._endpoint

    @endpoint.setter
    def endpoint(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    async def listen(self, host: str, port: int, *, start: bool = True) -> Addr:
        """Bind the listening socket; with start=False call ``start_serving`` yourself."""
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, ssl=self._server_ssl, start_serving=start
        )
        sockname = self._server.sockets[0].getsockname()
        self._sweeper = self.loop.call_later(IDLE_TIMEOUT_S / 4, self._sweep)
        return (str(sockname[0]), int(sockname[1]))

    # -- connections --

    def _register(self, conn: _Connection) -> None:
        assert conn.peer is not None
        old = self._connections.get(conn.peer)
        if old is not None and old is not conn and old.transport is not None:
            old.transport.close()
        self._connections[conn.peer] = conn
        for data in self._pending.pop(conn.peer, []):
            conn.send(data)

    def _unregister(self, conn: _Connection) -> None:
        if conn.peer is not None and self._connections.get(conn.peer) is conn:
            del self._connections[conn.peer]
            self.endpoint.connection_lost(conn.peer)

    async def _connect(self, addr: Addr) -> None:
        try:
            await self.loop.create_connection(
                lambda: _Connection(self, addr), addr[0], addr[1], ssl=self._client_ssl
            )
        except OSError:
            # The transaction's timer B/F reports the failure to the application.
            self._pending.pop(addr, None)

    def _send(self, data: bytes, addr: Addr) -> None:
        conn = self._connections.get(addr)
        if conn is not None:
            conn.send(data)
            return
        pending = self._pending.get(addr)
        if pending is None:
            self._pending[addr] = [data]
            task = self.loop.create_task(self._connect(addr))
            self._connect_tasks.add(task)
            task.add_done_callback(self._connect_tasks.discard)
        elif sum(map(len, pending)) + len(data) <= MAX_PENDING_BYTES:
            pending.append(data)

    def _sweep(self) -> None:
        horizon = self.loop.time() - IDLE_TIMEOUT_S
        for conn in list(self._connections.values()):
            if conn.last_activity_s < horizon and conn.transport is not None:
                conn.transport.close()
        self._sweeper = self.loop.call_later(IDLE_TIMEOUT_S / 4, self._sweep)

    # -- driving the endpoint --

    def transmit(self) -> None:
        endpoint = self.endpoint
        event = endpoint.next_event()
        while event is not None:
            self._on_event(endpoint, event)
            event = endpoint.next_event()
        for data, addr in endpoint.datagrams_to_send(self.loop.time()):
            self._send(data, addr)
        for addr in endpoint.connections_to_close():
            conn = self._connections.get(addr)
            if conn is not None and conn.transport is not None:
                conn.transport.close()
        timer_at = endpoint.get_timer()
        if timer_at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if timer_at is not None:
                self._timer = self.loop.call_at(timer_at, self._handle_timer)
            self._timer_at = timer_at

    def _handle_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.endpoint.handle_timer(self.loop.time())
        self.transmit()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def close(self) -> None:
        for handle in (self._timer, self._sweeper):
            if handle is not None:
                handle.cancel()
        self._timer = self._sweeper = None
        for task in self._connect_tasks:
            task.cancel()
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            self._server.close()


async def serve_tcp(
    endpoint_factory: Callable[[Addr], Endpoint],
    on_event: EventHandler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    server_ssl: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
) -> TcpTransport:
    """Listen on TCP (TLS with `server_ssl`); the endpoint is built once the port is known."""
    transport = TcpTransport(None, on_event, server_ssl=server_ssl, client_ssl=client_ssl)
    addr = await transport.listen(host, port, start=False)
    transport.endpoint = endpoint_factory(addr)
    assert transport._server is not None
    await transport._server.start_serving()
    return transport
