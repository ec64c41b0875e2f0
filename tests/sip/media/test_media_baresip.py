"""A real SIP phone (baresip) against our media: it hears our music, we hear its tone.

The test plays the minimal SIP UAS itself (answer the INVITE with our SDP, answer the BYE): the SIP
stack is not under test here, the media is. baresip sends an 880 Hz tone file; our endpoint plays
440 Hz music on hold through the shared clock. baresip's sndfile module records what it decoded.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import wave
from pathlib import Path

import numpy as np
import pytest
from media_helpers import dominant_hz

from sip.media import LegPlayer, MediaClock, MediaStats, PortAllocator, open_endpoint
from sip.rtp.g711 import decode_pcmu
from sip.rtp.playback import Playlist, prompt_from_samples

pytestmark = pytest.mark.e2e


def write_tone(path: Path, hz: float, seconds: float) -> None:
    t = np.arange(int(8000 * seconds)) / 8000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((8000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes())


def free_port_pair() -> int:
    """A port whose UDP and TCP (and port + 1: baresip's TLS) are free."""
    for _ in range(200):
        port = random.randrange(20000, 29000, 2)
        socks = []
        try:
            for p in (port, port + 1):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port")


class MiniUas(asyncio.DatagramProtocol):
    """Just enough SIP to answer one call: 200 OK with our SDP to INVITE, 200 OK to BYE."""

    def __init__(self, sdp_for: object) -> None:
        self.sdp_for = sdp_for
        self.transport: asyncio.DatagramTransport | None = None
        self.remote_rtp: tuple[str, int] | None = None
        self.invited = asyncio.Event()
        self.methods: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
        lines = head.split("\r\n")
        method = lines[0].split(" ", 1)[0]
        self.methods.append(method)
        if method not in ("INVITE", "BYE"):
            return

        def header(name: str) -> list[str]:
            return [ln for ln in lines if ln.lower().startswith(name.lower() + ":")]

        sdp = ""
        if method == "INVITE":
            port = re.search(r"m=audio (\d+)", body)
            assert port is not None
            self.remote_rtp = ("127.0.0.1", int(port.group(1)))
            sdp = self.sdp_for  # type: ignore[assignment]
        to = header("To")[0]
        if ";tag=" not in to:
            to += ";tag=acdtest"
        assert self.transport is not None
        host, sip_port = self.transport.get_extra_info("sockname")[:2]
        response = (
            "SIP/2.0 200 OK\r\n"
            + "".join(f"{h}\r\n" for h in [*header("Via"), *header("From"), to])
            + "".join(f"{h}\r\n" for h in [*header("Call-ID"), *header("CSeq")])
            + f"Contact: <sip:acd@{host}:{sip_port}>\r\n"
            + ("Content-Type: application/sdp\r\n" if sdp else "")
            + f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        self.transport.sendto(response.encode(), addr)
        if method == "INVITE":
            self.invited.set()


async def test_baresip_hears_our_music_and_we_hear_its_tone(
    tmp_path: Path, allocator: PortAllocator, stats: MediaStats, clock: MediaClock
) -> None:
    write_tone(tmp_path / "tone8k.wav", 880, 30)
    (tmp_path / "rec").mkdir()
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    async with await open_endpoint(allocator, stats, clock=clock) as leg:
        leg.on_rtp = lambda data, seq, ts, ssrc, now: received.append(data[12:])
        sdp = (
            "v=0\r\no=acd 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {leg.port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
        )
        uas = MiniUas(sdp)
        sip_transport, _ = await loop.create_datagram_endpoint(
            lambda: uas, local_addr=("127.0.0.1", 0)
        )
        sip_port = sip_transport.get_extra_info("sockname")[1]
        phone_port = free_port_pair()
        rtp_base = free_port_pair()
        (tmp_path / "config").write_text(
            f"sip_listen 127.0.0.1:{phone_port}\n"
            "net_interface 127.0.0.1\n"
            "audio_player aubridge,sink_b\naudio_alert aubridge,sink_b\n"
            f"audio_source aufile,{tmp_path}/tone8k.wav\n"
            f"rtp_ports {rtp_base}-{rtp_base + 20}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
            "module_tmp account.so\nmodule_app menu.so\n"
            f"snd_path {tmp_path}/rec\n"
        )
        (tmp_path / "accounts").write_text("<sip:tester@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
        proc = await asyncio.create_subprocess_exec(
            *["baresip", "-f", str(tmp_path), "-e", f"/dial sip:acd@127.0.0.1:{sip_port}"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await asyncio.wait_for(uas.invited.wait(), timeout=10)
            leg.remote_addr = uas.remote_rtp  # from baresip's SDP
            t = np.arange(160 * 50) / 8000
            music = prompt_from_samples(
                "moh", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), ["PCMU"]
            )
            LegPlayer(leg, Playlist("PCMU", [], [music]), clock).start(loop.time())
            await asyncio.sleep(2.5)
        finally:
            proc.terminate()  # baresip hangs up (BYE, answered by MiniUas) and closes its files
            try:
                output, _ = await asyncio.wait_for(proc.communicate(), timeout=8)
            except TimeoutError:
                proc.kill()  # our own child, by its handle
                output, _ = await proc.communicate()
            sip_transport.close()
    text = output.decode("utf-8", "replace")
    assert "Call established" in text
    assert "BYE" in uas.methods
    # we heard baresip's 880 Hz tone
    assert len(received) >= 50
    pcm = np.frombuffer(b"".join(decode_pcmu(p) for p in received), "<i2")
    assert abs(dominant_hz(pcm) - 880) < 10
    # baresip decoded our 440 Hz music: its sndfile dump of the received audio
    dec = sorted((tmp_path / "rec").glob("*-dec.wav"))
    assert dec, text[-2000:]
    with wave.open(str(dec[0]), "rb") as w:
        assert w.getframerate() == 8000
        heard = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert len(heard) >= 8000  # at least a second of our audio
    assert abs(dominant_hz(heard[-8000:]) - 440) < 10
