"""SIP over UDP: an asyncio DatagramProtocol around the sans-I/O `sip.endpoint.Endpoint`.

How this works (the shape of aioquic's asyncio/protocol.py): every datagram goes into the endpoint
with ``now=loop.time()``; then the endpoint's events are handed to the application callback (which
may call endpoint commands), what the endpoint wants sent is sent, and ONE ``loop.call_at`` timer is
re-armed at ``endpoint.get_timer()``. Application code that calls endpoint commands from elsewhere
(a task, another leg's callback) calls `transmit()` afterwards. Nothing here parses SIP.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

from sip.endpoint import Addr, Endpoint, EndpointEvent

__all__ = ["EventHandler", "UdpTransport", "serve_udp"]

EventHandler = Callable[[Endpoint, EndpointEvent], None]


class UdpTransport(asyncio.DatagramProtocol):
    """Feeds one `Endpoint` from one UDP socket."""

    def __init__(self, endpoint: Endpoint, on_event: EventHandler) -> None:
        self.endpoint = endpoint
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed = asyncio.Event()

    # -- asyncio.DatagramProtocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector and uvloop datagram transports do not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = addr[0], addr[1]
        assert isinstance(host, str)
        assert isinstance(port, int)
        self.endpoint.receive_datagram(data, (host, port), self._loop.time())
        self.transmit()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: UDP gives no way to tell which transaction it was;
        # the transaction timers (B, F, H) take care of the peer that went away.
        return

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.closed.set()

    # -- driving the endpoint --

    def transmit(self) -> None:
        """Deliver events, send what the endpoint queued, re-arm the single timer."""
        endpoint = self.endpoint
        event = endpoint.next_event()
        while event is not None:
            self._on_event(endpoint, event)
            event = endpoint.next_event()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            for data, addr in endpoint.datagrams_to_send(self._loop.time()):
                transport.sendto(data, addr)
        timer_at = endpoint.get_timer()
        if timer_at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if timer_at is not None:
                self._timer = self._loop.call_at(timer_at, self._handle_timer)
            self._timer_at = timer_at

    def _handle_timer(self, now: float | None = None) -> None:
        self._timer = None
        self._timer_at = None
        self.endpoint.handle_timer(self._loop.time())
        self.transmit()

    @property
    def local_addr(self) -> Addr:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def serve_udp(
    endpoint_factory: Callable[[Addr], Endpoint],
    on_event: EventHandler,
    host: str = "127.0.0.1",
    port: int = 0,
) -> UdpTransport:
    """Bind a UDP socket and return its protocol.

    The endpoint is built after binding (`endpoint_factory((host, bound_port))`) so that port 0
    works: Via and Contact carry the real port.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        # 4 MiB receive buffer: a burst of retransmissions at a few thousand calls/s must not
        # overflow the kernel's default ~200 kB and turn into the loss it is recovering from.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        bound = sock.getsockname()[:2]
        endpoint = endpoint_factory((str(bound[0]), int(bound[1])))
        _, protocol = await loop.create_datagram_endpoint(
            lambda: UdpTransport(endpoint, on_event), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    return protocol
