"""In-band DTMF on an RTP endpoint: only a leg asked to decodes its audio and finds the tones."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from media_helpers import open_phone

from sip.media import DtmfReceived, MediaEvent, MediaStats, PortAllocator, open_endpoint
from sip.rtp.g711 import encode_samples
from sip.rtp.packet import RtpPacket


def keypad_audio(codec: str) -> list[bytes]:
    """0.1 s silence, 0.12 s of "7" (852 + 1209 Hz), 0.1 s silence, in 20 ms G.711 frames."""
    t = np.arange(int(0.12 * 8000)) / 8000
    press = 5000 * (np.sin(2 * np.pi * 852 * t) + np.sin(2 * np.pi * 1209 * t))
    pcm = np.concatenate([np.zeros(800), press, np.zeros(800)]).astype(np.int16)
    pcm = np.pad(pcm, (0, -len(pcm) % 160))
    encoded = encode_samples(pcm, codec)
    return [encoded[i : i + 160] for i in range(0, len(encoded), 160)]


@pytest.mark.parametrize(("codec", "pt"), [("PCMU", 0), ("PCMA", 8)])
async def test_tones_in_the_audio_become_one_digit_on_a_detecting_leg_only(
    allocator: PortAllocator, stats: MediaStats, codec: str, pt: int
) -> None:
    phone = await open_phone()
    heard: dict[str, list[MediaEvent]] = {"detecting": [], "plain": []}
    async with (
        await open_endpoint(allocator, stats, on_event=heard["detecting"].append) as detecting,
        await open_endpoint(allocator, stats, on_event=heard["plain"].append) as plain,
    ):
        detecting.detect_inband_dtmf(True)
        assert detecting.detecting_inband_dtmf
        assert not plain.detecting_inband_dtmf
        for i, frame in enumerate(keypad_audio(codec)):
            packet = RtpPacket(pt, 100 + i, 160 * i, 0xB, frame).serialize()
            phone.send(packet, detecting.local_address)
            phone.send(packet, plain.local_address)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.05)
        detecting.detect_inband_dtmf(False)
        assert not detecting.detecting_inband_dtmf
    assert [e for e in heard["detecting"] if isinstance(e, DtmfReceived)] == [
        DtmfReceived("7", 51, "inband")
    ]
    assert not any(isinstance(e, DtmfReceived) for e in heard["plain"])
    assert stats.dtmf_digits["inband"] == 1
    assert phone.transport is not None
    phone.transport.close()
