"""asyncio adapters: a full call between two endpoints over real sockets, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from sip.endpoint import (
    AckReceived,
    ByeReceived,
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    RequestReceived,
    ResponseReceived,
)
from sip.transport import tcp as tcp_module
from sip.transport.tcp import serve_tcp
from sip.transport.udp import serve_udp
from tests.conftest import self_signed_cert

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


class Recorder:
    """Event handler that answers INVITE with 200 and records everything."""

    def __init__(self) -> None:
        self.events: list[EndpointEvent] = []
        self.changed = asyncio.Event()

    def __call__(self, endpoint: Endpoint, event: EndpointEvent) -> None:
        self.events.append(event)
        self.changed.set()
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            endpoint.answer(event.transaction_id, SDP, now=asyncio.get_running_loop().time())

    async def wait_for(self, kind: type, count: int = 1, timeout_s: float = 5.0) -> list[Any]:
        async def loop() -> list[Any]:
            while True:
                found = [e for e in self.events if isinstance(e, kind)]
                if len(found) >= count:
                    return found
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(loop(), timeout_s)


def run_on(loop_name: str, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_name == "uvloop":
        uvloop.run(fn())
    else:
        asyncio.run(fn())


def endpoint_for(transport: str) -> Callable[[tuple[str, int]], Endpoint]:
    def make(addr: tuple[str, int]) -> Endpoint:
        return Endpoint(EndpointConfig(local_host=addr[0], local_port=addr[1], transport=transport))

    return make


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_udp_call_setup_and_teardown(loop_name: str) -> None:
    async def scenario() -> None:
        uas_app, uac_app = Recorder(), Recorder()
        uas = await serve_udp(endpoint_for("UDP"), uas_app)
        uac = await serve_udp(endpoint_for("UDP"), uac_app)
        loop = asyncio.get_running_loop()
        try:
            uac.endpoint.invite(
                f"sip:bob@127.0.0.1:{uas.local_addr[1]}", uas.local_addr, now=loop.time(), body=SDP
            )
            uac.transmit()  # a command outside a callback: the adapter must be told to send
            (ok,) = [
                e for e in await uac_app.wait_for(ResponseReceived, 2) if e.response.status == 200
            ]
            (ack,) = await uas_app.wait_for(AckReceived)
            assert ok.dialog_id is not None
            assert ack.dialog_id.call_id == ok.dialog_id.call_id
            uac.endpoint.bye(ok.dialog_id, now=loop.time())
            uac.transmit()
            (bye,) = await uas_app.wait_for(ByeReceived)
            assert bye.dialog_id == ack.dialog_id
            await uac_app.wait_for(ResponseReceived, 3)
            assert uas.endpoint.dialog_count == 0
            assert uac.endpoint.dialog_count == 0
        finally:
            uas.close()
            uac.close()

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_tcp_call_reuses_one_connection_each_way(loop_name: str) -> None:
    async def scenario() -> None:
        uas_app, uac_app = Recorder(), Recorder()
        uas = await serve_tcp(endpoint_for("TCP"), uas_app)
        uac = await serve_tcp(endpoint_for("TCP"), uac_app)
        uas_addr = (uas.endpoint.config.local_host, uas.endpoint.config.local_port)
        loop = asyncio.get_running_loop()
        try:
            uac.endpoint.invite(
                f"sip:bob@127.0.0.1:{uas_addr[1]}", uas_addr, now=loop.time(), body=SDP
            )
            uac.transmit()
            responses = await uac_app.wait_for(ResponseReceived, 2)
            ok = responses[-1]
            assert ok.response.status == 200
            await uas_app.wait_for(AckReceived)
            # The INVITE's connection carried the responses back and the ACK forward.
            assert uac.connection_count == 1
            assert uas.connection_count == 1
            uac.endpoint.bye(ok.dialog_id, now=loop.time())
            uac.transmit()
            await uas_app.wait_for(ByeReceived)
            await uac_app.wait_for(ResponseReceived, 3)
            assert uac.connection_count == 1  # the BYE reused the outbound connection
        finally:
            uas.close()
            uac.close()
            await asyncio.sleep(0.05)

    run_on(loop_name, scenario)


def test_tcp_framing_failure_closes_connection_and_counts() -> None:
    async def scenario() -> None:
        app = Recorder()
        uas = await serve_tcp(endpoint_for("TCP"), app)
        addr = (uas.endpoint.config.local_host, uas.endpoint.config.local_port)
        reader, writer = await asyncio.open_connection(*addr)
        try:
            # No Content-Length on a stream: framing is impossible (RFC 3261 18.3).
            writer.write(
                b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n"
                b"From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: c\r\n"
                b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n"
            )
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5.0)  # until the server closes
            assert data == b""  # closed without an answer: the stream cannot be framed
            assert uas.endpoint.rejections.get("framing_failed") == 1
        finally:
            writer.close()
            uas.close()
            await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_tcp_keepalive_ping_gets_pong() -> None:
    async def scenario() -> None:
        uas = await serve_tcp(endpoint_for("TCP"), Recorder())
        addr = (uas.endpoint.config.local_host, uas.endpoint.config.local_port)
        reader, writer = await asyncio.open_connection(*addr)
        try:
            writer.write(b"\r\n\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(2), 5.0) == b"\r\n"  # RFC 5626 3.5.1
        finally:
            writer.close()
            uas.close()
            await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_tls_call(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        uas_app, uac_app = Recorder(), Recorder()
        uas = await serve_tcp(endpoint_for("TLS"), uas_app, server_ssl=server_ctx)
        uac = await serve_tcp(
            endpoint_for("TLS"), uac_app, server_ssl=server_ctx, client_ssl=client_ctx
        )
        uas_addr = (uas.endpoint.config.local_host, uas.endpoint.config.local_port)
        loop = asyncio.get_running_loop()
        try:
            uac.endpoint.invite(
                f"sips:bob@127.0.0.1:{uas_addr[1]}", uas_addr, now=loop.time(), body=SDP
            )
            uac.transmit()
            responses = await uac_app.wait_for(ResponseReceived, 2)
            assert responses[-1].response.status == 200
            assert responses[-1].response.via[0].transport == "TLS"
            (ack,) = await uas_app.wait_for(AckReceived)
            uac.endpoint.bye(responses[-1].dialog_id, now=loop.time())
            uac.transmit()
            (bye,) = await uas_app.wait_for(ByeReceived)
            assert bye.dialog_id == ack.dialog_id
        finally:
            uas.close()
            uac.close()
            await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_tcp_idle_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp_module, "IDLE_TIMEOUT_S", 0.2)

    async def scenario() -> None:
        uas = await serve_tcp(endpoint_for("TCP"), Recorder())
        addr = (uas.endpoint.config.local_host, uas.endpoint.config.local_port)
        reader, writer = await asyncio.open_connection(*addr)
        try:
            await asyncio.sleep(0.05)
            assert uas.connection_count == 1
            # Silent client: the sweeper (every IDLE_TIMEOUT_S / 4) closes it after 0.2-0.25 s.
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            await asyncio.sleep(0.05)
            assert uas.connection_count == 0
        finally:
            writer.close()
            uas.close()
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
