"""baresip (a real SIP phone) against the stack: digest REGISTER, an auto-answered call, BYE.

The stack runs in this process: an `Endpoint` with the registrar and a `DigestAuthenticator` on
UDP. The authenticator offers MD5 only: baresip 1.0.0 (libre) answers a 401 that also lists a
SHA-256 challenge with "Register: Function not implemented" and never sends credentials, so a realm
serving such phones must not offer SHA-256 (seen on these machines; RFC 8760 clients pick SHA-256). baresip registers as alice; we then call the
contact it registered, baresip answers automatically, and we hang up. A second baresip with a wrong
password must be refused (403) and counted in `rejections["auth_failed"]`.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from sip.auth import DigestAlgorithm, DigestAuthenticator, Password
from sip.endpoint import (
    AckReceived,
    ByeReceived,
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    RegistrationChanged,
    ResponseReceived,
    uri_addr,
)
from sip.message import Request
from sip.registrar import Registrar
from sip.transport.udp import UdpTransport, serve_udp
from sip.uri import Uri
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

BARESIP = shutil.which("baresip") or "/usr/bin/baresip"
SDP_OFFER = (
    b"v=0\r\no=acd 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40010 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


class App:
    def __init__(self) -> None:
        self.events: list[EndpointEvent] = []
        self.register_requests: list[Request] = []
        self.changed = asyncio.Event()

    def __call__(self, endpoint: Endpoint, event: EndpointEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait(self, predicate: object, timeout_s: float) -> EndpointEvent:
        async def loop() -> EndpointEvent:
            while True:
                for e in self.events:
                    if predicate(e):  # type: ignore[operator]
                        return e
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(loop(), timeout_s)


def baresip_dir(tmp: Path, name: str, registrar_port: int, password: str) -> tuple[Path, int]:
    sip_port = free_port(socket.SOCK_DGRAM)
    while free_port() == sip_port + 1:  # baresip also binds TLS on port+1
        sip_port = free_port(socket.SOCK_DGRAM)
    home = tmp / name
    home.mkdir()
    rtp_base = free_port(socket.SOCK_DGRAM) // 2 * 2
    tone = tmp / "tone8k.wav"
    if not tone.exists():
        subprocess.run(
            [
                "sox",
                "-n",
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                str(tone),
                "synth",
                "30",
                "sine",
                "440",
            ],
            check=True,
        )
    (home / "config").write_text(
        f"sip_listen 127.0.0.1:{sip_port}\n"
        "net_interface 127.0.0.1\n"
        "audio_player aubridge,sink_b\n"
        "audio_alert aubridge,sink_b\n"
        f"audio_source aufile,{tone}\n"
        f"rtp_ports {rtp_base}-{rtp_base + 40}\n"
        "module_path /usr/lib/baresip/modules\n"
        "module g711.so\n"
        "module aufile.so\n"
        "module aubridge.so\n"
        "module_tmp account.so\n"
        "module_app menu.so\n"
    )
    (home / "accounts").write_text(
        f"<sip:alice@127.0.0.1:{registrar_port}>;auth_pass={password};regint=60;"
        "answermode=auto;audio_codecs=PCMU\n"
    )
    return home, sip_port


async def start_baresip(home: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        BARESIP,
        "-f",
        str(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()  # our own child, by its handle
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def serve(
    app: App, algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.MD5,)
) -> UdpTransport:
    users = {"alice": Password("secret")}

    def make(addr: tuple[str, int]) -> Endpoint:
        return Endpoint(
            EndpointConfig(local_host=addr[0], local_port=addr[1]),
            registrar=Registrar(),
            authenticator=DigestAuthenticator(realm="acd", algorithms=algorithms),
            user_lookup=users.get,
        )

    proto = await serve_udp(make, app)
    original = proto.endpoint.receive_datagram

    def spy(data: bytes, addr: tuple[str, int], now: float) -> None:
        if data.startswith(b"REGISTER"):
            from sip.message import parse_message

            msg = parse_message(data)
            assert isinstance(msg, Request)
            app.register_requests.append(msg)
        original(data, addr, now)

    proto.endpoint.receive_datagram = spy  # type: ignore[method-assign]
    return proto


async def test_baresip_registers_is_called_answers_and_hangs_up(tmp_path: Path) -> None:
    app = App()
    proto = await serve(app)
    port = proto.local_addr[1]
    home, _ = baresip_dir(tmp_path, "alice", port, "secret")
    phone = await start_baresip(home)
    loop = asyncio.get_running_loop()
    try:
        reg = await app.wait(lambda e: isinstance(e, RegistrationChanged), 15)
        assert isinstance(reg, RegistrationChanged)
        assert reg.aor == "sip:alice@127.0.0.1"
        assert reg.result is not None
        assert reg.result.added
        contact = Uri.parse(reg.result.added[0].contact)
        # It was challenged first, then answered the challenge with digest credentials.
        auths = [r.headers.get("authorization") for r in app.register_requests]
        assert auths[0] is None
        assert auths[-1] is not None
        assert auths[-1].lower().startswith("digest")
        assert "SHA-256" not in auths[-1]

        rid = proto.endpoint.invite(contact, uri_addr(contact), now=loop.time(), body=SDP_OFFER)
        proto.transmit()
        ok = await app.wait(
            lambda e: (
                isinstance(e, ResponseReceived) and e.request_id == rid and e.response.status == 200
            ),
            15,
        )
        assert isinstance(ok, ResponseReceived)
        assert ok.dialog_id is not None
        assert ok.response.content_type is not None
        assert ok.response.content_type.mime == "application/sdp"
        assert b"PCMU" in ok.response.body
        await asyncio.sleep(1.0)  # the call is up for a moment
        bye_id = proto.endpoint.bye(ok.dialog_id, now=loop.time())
        proto.transmit()
        bye_ok = await app.wait(
            lambda e: isinstance(e, ResponseReceived) and e.request_id == bye_id, 10
        )
        assert isinstance(bye_ok, ResponseReceived)
        assert bye_ok.response.status == 200
        assert not any(isinstance(e, (AckReceived, ByeReceived)) for e in app.events)
    finally:
        await stop(phone)
        proto.close()


async def test_baresip_wrong_password_refused_and_counted(tmp_path: Path) -> None:
    app = App()
    proto = await serve(app)
    home, _ = baresip_dir(tmp_path, "mallory", proto.local_addr[1], "not-the-password")
    phone = await start_baresip(home)
    try:
        for _ in range(150):
            if proto.endpoint.rejections.get("auth_failed"):
                break
            await asyncio.sleep(0.1)
        assert proto.endpoint.rejections.get("auth_failed", 0) >= 1
        assert proto.endpoint.registrar is not None
        assert len(proto.endpoint.registrar) == 0
        assert not any(isinstance(e, RegistrationChanged) for e in app.events)
    finally:
        await stop(phone)
        proto.close()
