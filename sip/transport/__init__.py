"""asyncio transports (UDP, TCP, TLS) that feed bytes and ``now`` into the sans-I/O SIP core."""

from sip.transport.tcp import IDLE_TIMEOUT_S, TcpTransport, serve_tcp
from sip.transport.udp import EventHandler, UdpTransport, serve_udp

__all__ = [
    "IDLE_TIMEOUT_S",
    "EventHandler",
    "TcpTransport",
    "UdpTransport",
    "serve_tcp",
    "serve_udp",
]
