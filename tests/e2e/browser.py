"""Headless Debian Chromium for the browser tests: launch flags, a fake microphone, logging in.

The flags give the page a fake microphone playing a WAV file (``--use-file-for-fake-audio-capture``)
and let WebRTC use loopback, where the daemon's gateway listens. See ../shared/PEERS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import urllib.request
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Browser, Page, async_playwright, expect

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    # Chromium leaves loopback out of its ICE candidates unless told; the gateway is on 127.0.0.1.
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


def write_tone(path: Path, hz: float, seconds: float, rate: int = 48000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (12000 * np.sin(2 * math.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


@contextlib.asynccontextmanager
async def chromium(directory: Path, mic_hz: float, seconds: float = 60) -> AsyncIterator[Browser]:
    """Chromium whose fake microphone plays ``mic_hz`` (a WAV written in ``directory``)."""
    mic = directory / f"mic-{mic_hz:g}.wav"
    write_tone(mic, mic_hz, seconds)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={mic}"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def log_in(page: Page, url: str, token: str) -> None:
    """Open a page of the daemon and give it the token, as a user types it."""
    await page.goto(url)
    await page.fill("#token", token)
    await page.press("#token", "Enter")


async def open_softphone(browser: Browser, base_url: str, token: str) -> Page:
    """A browser agent's desk page, logged in, its softphone connected with PCMU."""
    page = await browser.new_page()
    await log_in(page, base_url + "/agent", token)
    await expect(page.locator("#rtc-state")).to_have_text("softphone PCMU", timeout=15000)
    return page


# Runs in the page: the dominant frequency of what the <audio> element plays, every 100 ms.
HEARD_JS = """async (samples) => {
  const audio = document.getElementById("remote-audio");
  const ctx = new AudioContext();
  await ctx.resume();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0;
  ctx.createMediaStreamSource(audio.srcObject).connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  const peaks = [];
  for (let i = 0; i < samples; i++) {
    await new Promise((r) => setTimeout(r, 100));
    analyser.getFloatFrequencyData(bins);
    let best = 1;
    for (let k = 2; k < bins.length; k++) if (bins[k] > bins[best]) best = k;
    peaks.push([best * ctx.sampleRate / analyser.fftSize, bins[best]]);
  }
  await ctx.close();
  return peaks;
}"""


def agent_state(daemon: Any, token: str, agent_id: str) -> str:
    """An agent's routing state through the API (``daemon``: a tests.e2e.conftest.DaemonProcess)."""
    request = urllib.request.Request(f"{daemon.base_url}/api/v1/agents/{agent_id}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return str(json.loads(resp.read())["state"])


async def wait_state(
    daemon: Any, token: str, agent_id: str, wanted: set[str], timeout_s: float
) -> None:
    """Poll (off the event loop) until the agent is in one of the ``wanted`` states."""
    deadline = time.monotonic() + timeout_s
    while (state := await asyncio.to_thread(agent_state, daemon, token, agent_id)) not in wanted:
        assert time.monotonic() < deadline, f"agent {agent_id} never {wanted}: {state}"
        await asyncio.sleep(0.1)
