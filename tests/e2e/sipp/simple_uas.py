"""A minimal UAS built from the stack, for SIPp runs, the RFC 4475/PROTOS wire tests and the benchmark.

It answers every INVITE with 200 OK + SDP (or a fixed status), lets the endpoint handle ACK, BYE,
OPTIONS and CANCEL, and counts what happened. Run as a script for a separate process:
``python simple_uas.py --port 5090 [--transport udp|tcp] [--loop asyncio|uvloop] [--status 486]``
(``--status``: the answer to every INVITE; a provisional one, 180, leaves it ringing for good).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sip.endpoint import (
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    InternalErrorOccurred,
    RequestReceived,
)
from sip.registrar import Registrar

SDP_ANSWER = (
    b"v=0\r\no=acd 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass
class SimpleUas:
    """Event handler: the whole 'application' of the test UAS."""

    invite_status: int = 200
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def __call__(self, endpoint: Endpoint, event: EndpointEvent) -> None:
        self.counts[type(event).__name__] += 1
        if isinstance(event, RequestReceived):
            now = asyncio.get_running_loop().time()
            if event.request.method == "INVITE":
                if self.invite_status == 200:
                    endpoint.answer(event.transaction_id, SDP_ANSWER, now=now)
                else:
                    endpoint.send_response(event.transaction_id, self.invite_status, now=now)
            else:
                endpoint.send_response(event.transaction_id, 200, now=now)
        elif isinstance(event, InternalErrorOccurred):
            self.errors.append(event.error)


def make_endpoint(
    addr: tuple[str, int], *, transport: str = "UDP", t1_s: float = 0.5, force_rport: bool = False
) -> Endpoint:
    config = EndpointConfig(
        local_host=addr[0],
        local_port=addr[1],
        transport=transport,
        t1_s=t1_s,
        force_rport=force_rport,
    )
    return Endpoint(config, registrar=Registrar())


async def run(
    host: str, port: int, transport: str, ready_fd: int | None, invite_status: int = 200
) -> None:
    from sip.transport.tcp import serve_tcp
    from sip.transport.udp import serve_udp

    app = SimpleUas(invite_status=invite_status)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if transport == "tcp":
        server = await serve_tcp(lambda a: make_endpoint(a, transport="TCP"), app, host, port)
        closer, endpoint = server.close, server.endpoint
    else:
        proto = await serve_udp(lambda a: make_endpoint(a), app, host, port)
        closer, endpoint = proto.close, proto.endpoint
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
    print("ready", flush=True)
    await stop.wait()
    closer()
    print(
        dict(app.counts), "errors:", len(app.errors), "rejections:", endpoint.rejections, flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args()
    coro = run(args.host, args.port, args.transport, None, args.status)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
