"""Helpers for the media tests: local 'phones' on real UDP sockets and a collecting tap."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from sip.rtp.g711 import encode_samples
from sip.rtp.packet import RtpError, RtpPacket, parse_rtp


class Phone(asyncio.DatagramProtocol):
    """A plain asyncio UDP endpoint standing in for a SIP phone's RTP."""

    def __init__(self) -> None:
        self.received: list[RtpPacket] = []
        self.raw: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector and uvloop UDP transports do not all subclass DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        with contextlib.suppress(RtpError):
            self.received.append(parse_rtp(data))
        self.arrived.set()

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


async def open_phone() -> Phone:
    loop = asyncio.get_running_loop()
    phone = Phone()
    await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
    return phone


def tone_frames(freq_hz: float, frames: int, codec: str = "PCMU", amp: float = 8000) -> list[bytes]:
    t = np.arange(frames * 160) / 8000
    pcm = (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)
    enc = encode_samples(pcm, codec)
    return [enc[i * 160 : (i + 1) * 160] for i in range(frames)]


def dominant_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


@dataclass
class CollectingSink:
    """A RecordingSink that only collects what the tap hands it."""

    fed: list[tuple[int, int, bytes, str]] = field(default_factory=list)
    gaps: list[tuple[int, int, int, str]] = field(default_factory=list)
    closed_at: int | None = None

    def feed(self, channel: int, position: int, payload: bytes, codec: str) -> None:
        self.fed.append((channel, position, payload, codec))

    def gap(self, channel: int, position: int, samples: int, reason: str) -> None:
        self.gaps.append((channel, position, samples, reason))

    def close(self, end_position: int) -> None:
        self.closed_at = end_position


def tone_share(pcm: np.ndarray, hz: float, rate: int = 8000, segment: int = 320) -> float:
    """The share (0..1) of ``pcm``'s energy in a tone at ``hz``: 1 for that tone alone, about 0.5
    each for two equal tones, near 0 when absent. Per 40 ms Hann-windowed segment, so a dropped or
    repeated frame in a mix (a phase jump) does not hide a tone as a whole-signal DFT would."""
    n = len(pcm) // segment * segment
    if n == 0:
        return 0.0
    x = pcm[:n].astype(np.float64).reshape(-1, segment)
    w = np.hanning(segment)
    xw = x * w
    t = np.arange(segment) / rate
    tone = np.exp(-2j * np.pi * hz * t)
    bin_power = np.abs(xw @ tone) ** 2
    energy = (xw * xw).sum(axis=1)
    # a pure tone gives |X|^2 / energy = sum(w)^2 / (2 sum(w^2))
    scale = w.sum() ** 2 / (2 * (w * w).sum())
    total = float(energy.sum())
    return 0.0 if total == 0 else float(bin_power.sum() / scale / total)
