"""The WebRTC gateway's G.711 passthrough, without sockets: the frame re-cutting and law rewriting
(`G711Frames`, against a naive reference), and the aiortc internals the receive side relies on;
the shared clock's media time (`ToBrowserTrack.step`) and its task's lifetime; the on-loop Opus
codec.

The same path end to end, with a real aiortc peer and the call side on UDP, is in
tests/engine/test_webrtc_gateway.py (``test_g711_bytes_pass_through_unchanged_both_ways``).
"""

from __future__ import annotations

import asyncio
import inspect
import queue
from typing import Any

import aiortc
import aiortc.rtcdtlstransport
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from hypothesis import given
from hypothesis import strategies as st

from engine.webrtc.g711 import (
    FRAME_SAMPLES,
    MAX_BUFFERED_FRAMES,
    PT_PCMA,
    PT_PCMU,
    SAMPLE_RATE,
    G711Frames,
    g711_receiver_supported,
    install_g711_tap,
)
from engine.webrtc.opus import OpusDecoder, OpusEncoder
from engine.webrtc.track import (
    ToBrowserTrack,
    _MediaClock,
    g711_sender_supported,
    stop_media_clock,
)
from sip.rtp.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW

payloads = st.lists(
    st.tuples(st.sampled_from([PT_PCMU, PT_PCMA]), st.binary(min_size=0, max_size=480)),
    max_size=12,
)


def _reference(law: int, pushed: list[tuple[int, bytes]], max_frames: int) -> tuple[bytes, int]:
    """What `G711Frames` must hold after ``pushed``: every byte in ``law``, the oldest beyond
    ``max_frames`` frames dropped; (held bytes, dropped count). Per byte, by the numpy tables."""
    held = b""
    dropped = 0
    for pt, payload in pushed:
        if pt != law:
            table = ALAW_TO_ULAW if pt == PT_PCMA else ULAW_TO_ALAW
            payload = bytes(int(table[b]) for b in payload)
        held += payload
        excess = len(held) - max_frames * FRAME_SAMPLES
        if excess > 0:
            held, dropped = held[excess:], dropped + excess
    return held, dropped


@given(law=st.sampled_from([PT_PCMU, PT_PCMA]), pushed=payloads)
def test_frames_are_the_pushed_bytes_recut_and_translated(
    law: int, pushed: list[tuple[int, bytes]]
) -> None:
    frames = G711Frames(law)
    for pt, payload in pushed:
        assert frames.push(pt, payload)
    held, dropped = _reference(law, pushed, MAX_BUFFERED_FRAMES)
    out = b""
    while (frame := frames.pop()) is not None:
        assert len(frame) == FRAME_SAMPLES
        out += frame
    whole = len(held) // FRAME_SAMPLES * FRAME_SAMPLES
    assert out == held[:whole]
    assert frames.dropped_samples == dropped
    # the rest (less than a frame) stays for the next push
    frames.push(law, bytes(FRAME_SAMPLES))
    assert frames.pop() == (held[whole:] + bytes(FRAME_SAMPLES))[:FRAME_SAMPLES]


def test_same_law_is_byte_for_byte_and_other_payload_types_are_refused() -> None:
    frames = G711Frames(PT_PCMU)
    # 0x7F and 0xFF are both a zero sample: a decode/encode round trip would turn one into the
    # other, a passthrough keeps each as it came
    payload = bytes(range(256))[:FRAME_SAMPLES] + b"\x7f\xff" * 80
    assert frames.push(PT_PCMU, payload)
    assert frames.pop() == payload[:FRAME_SAMPLES]
    assert frames.pop() == payload[FRAME_SAMPLES:]
    assert frames.pop() is None
    assert not frames.push(101, b"\x05\x8a\x03\x20")  # telephone-event: not audio
    assert not frames.push(13, b"\x40")  # comfort noise
    assert frames.pop() is None
    assert frames.silence == b"\xff" * FRAME_SAMPLES
    assert G711Frames(PT_PCMA).silence == b"\xd5" * FRAME_SAMPLES
    frames.push(PT_PCMU, payload)
    frames.clear()
    assert frames.pop() is None
    with pytest.raises(ValueError, match=r"not G\.711"):
        G711Frames(9)


def test_law_translation_is_the_table() -> None:
    every = bytes(range(256))
    frames = G711Frames(PT_PCMU)
    frames.push(PT_PCMA, every[:FRAME_SAMPLES])
    assert frames.pop() == ALAW_TO_ULAW[np.frombuffer(every[:FRAME_SAMPLES], np.uint8)].tobytes()
    frames = G711Frames(PT_PCMA)
    frames.push(PT_PCMU, every[96:])
    assert frames.pop() == ULAW_TO_ALAW[np.frombuffer(every[96:], np.uint8)].tobytes()


# -- the aiortc internals the receive-side tap relies on ------------------------------------------
# engine.webrtc.g711.G711Tap takes the place of RTCRtpReceiver's decoder queue. If aiortc
# changes any of this, these tests fail (and the gateway logs a warning and falls back to
# decoding): read aiortc's new rtcrtpreceiver.py before moving the pin in pyproject.toml.


def test_aiortc_is_the_pinned_version() -> None:
    assert aiortc.__version__.startswith("1.16."), aiortc.__version__


def test_receiver_decoder_handoff_is_what_the_tap_expects() -> None:
    source = inspect.getsource(aiortc.rtcrtpreceiver)
    # the loop thread hands (codec, encoded frame) to the decoder thread through this queue ...
    assert "self.__decoder_queue.put((codec, encoded_frame))" in source
    # ... which it reads from the attribute when the receiver starts, and stops with None
    assert "self.__decoder_queue,\n" in inspect.getsource(
        aiortc.rtcrtpreceiver.RTCRtpReceiver.receive
    )
    assert "self.__decoder_queue.put(None)" in source
    worker = inspect.getsource(aiortc.rtcrtpreceiver.decoder_worker)
    assert "task = input_q.get()" in worker
    assert "codec, encoded_frame = task" in worker
    # and the frame's payload bytes are G.711 as received (no depayloading for audio)
    assert "packet._data = depayload(codec, packet.payload)" in source


async def test_tap_takes_g711_frames_and_leaves_the_rest_to_the_decoder() -> None:
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio", direction="sendrecv").receiver
        got: list[tuple[bytes, int]] = []
        assert install_g711_tap(receiver, lambda data, pt: got.append((data, pt)))
        tap: Any = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        assert isinstance(tap, queue.Queue)
        assert not install_g711_tap(receiver, lambda data, pt: None)  # once only

        class Frame:
            data = b"\x01\x02"
            timestamp = 0

        codecs = {c.mimeType: c for c in aiortc.rtcrtpreceiver.get_capabilities("audio").codecs}
        tap.put((codecs["audio/PCMU"], Frame()))
        tap.put((codecs["audio/PCMA"], Frame()))
        assert got == [(b"\x01\x02", PT_PCMU), (b"\x01\x02", PT_PCMA)]
        assert tap.empty()
        tap.put((codecs["audio/opus"], Frame()))  # Opus: decoded by aiortc's thread as before
        tap.put(None)  # the stop
        assert tap.qsize() == 2
    finally:
        await pc.close()
    await asyncio.sleep(0)


def test_sender_and_dtls_internals_are_what_the_lean_paths_expect() -> None:
    dtls = inspect.getsource(aiortc.rtcdtlstransport.RTCDtlsTransport._recv_next)
    # the transport looks its RTP handler up per packet (so an instance attribute replaces it),
    # after SRTP, with the plain RTP bytes
    assert "data = self._rx_srtp.unprotect(data)" in dtls
    assert "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)" in dtls
    send = inspect.getsource(aiortc.rtcdtlstransport.RTCDtlsTransport._send_rtp)
    assert "data = self._tx_srtp.protect(data)" in send
    # the sender's RTCP loop reports these counters, which the lean sender keeps
    rtcp = inspect.getsource(aiortc.rtcrtpsender.RTCRtpSender._run_rtcp)
    for counter in ("__ntp_timestamp", "__rtp_timestamp", "__packet_count", "__octet_count"):
        assert f"self.{counter}" in rtcp
    # the receiver's RTCP loop reports these statistics, which the lean receiver feeds
    rr = inspect.getsource(aiortc.rtcrtpreceiver.RTCRtpReceiver._run_rtcp)
    assert "for ssrc, stream in self.__remote_streams.items():" in rr
    add = inspect.getsource(aiortc.rtcrtpreceiver.StreamStatistics.add)
    assert {"packet.sequence_number", "packet.timestamp"} >= {
        word.rstrip(",):") for word in add.split() if word.startswith("packet.")
    }


async def test_lean_paths_find_their_internals_on_a_fresh_connection() -> None:
    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("audio", direction="sendrecv")
        assert g711_sender_supported(transceiver.sender)
        assert g711_receiver_supported(transceiver.receiver)
    finally:
        await pc.close()


async def test_step_keeps_media_time_per_leg_on_a_shared_clock() -> None:
    """`_MediaClock` calls `step` every 20 ms for every leg: nothing while no call is connected, a
    talkspurt at the first frame and after a pause, and RTP time that follows the wall clock
    across the pause (as `tick` does for a leg that paces itself)."""
    track = ToBrowserTrack()
    assert track.step(10.0) is None  # no call
    track.activate()
    assert track.step(10.0) is True
    assert track.pts == 0
    assert [track.step(10.0 + 0.02 * i) for i in (1, 2, 3)] == [False, False, False]
    assert track.pts == 3 * FRAME_SAMPLES
    track.deactivate()
    assert track.step(10.08) is None
    track.activate()
    assert track.step(12.0) is True  # two seconds after the start: media time jumped with it
    assert track.pts == 2 * SAMPLE_RATE
    assert track.step(12.02) is False
    assert track.pts == 2 * SAMPLE_RATE + FRAME_SAMPLES
    track.stop()


class CountingSender:
    """What `_MediaClock` drives, without aiortc: counts the frames it is asked for."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, now: float, ntp: int) -> None:
        self.sent += 1

    def failed(self, exc: Exception) -> None:
        raise AssertionError(f"the clock reported {exc!r}")


async def _until(cond: Any, timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_media_clock_task_is_ended_by_its_owner() -> None:
    """The clock's task runs while it has senders and is cancelled when the last one leaves;
    `stop_media_clock` (the shutdown of the legs' owner) ends it and waits until it has, with or
    without senders still on it, so no task is left pending when the loop goes away."""
    clock = _MediaClock.of_running_loop()
    sender: Any = CountingSender()
    before = asyncio.all_tasks()
    clock.add(sender)
    (run,) = asyncio.all_tasks() - before
    await _until(lambda: sender.sent >= 3)
    clock.discard(sender)  # the last one: the run is cancelled ...
    await stop_media_clock()  # ... and awaited here
    assert run.done()
    clock.add(sender)  # the clock starts again for a new call
    (again,) = asyncio.all_tasks() - before
    await _until(lambda: sender.sent >= 6)
    await stop_media_clock()  # a sender still on it (a leg that did not close in time)
    assert again.done()
    sent = sender.sent
    await asyncio.sleep(0.1)
    assert sender.sent == sent  # nothing is sent after the stop


def test_opus_on_the_loop_carries_the_tone_both_ways() -> None:
    """The call's 8 kHz PCM through `OpusEncoder` (one packet per 20 ms frame) and back through
    `OpusDecoder` (8 kHz again): the tone is the tone, and 20 ms in is 20 ms out."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    encoder, decoder = OpusEncoder(), OpusDecoder()
    packets = [
        encoder.encode(pcm[i : i + FRAME_SAMPLES].tobytes())
        for i in range(0, len(pcm), FRAME_SAMPLES)
    ]
    assert all(p is not None and 0 < len(p) < 200 for p in packets)
    out = np.concatenate([a for p in packets if p is not None for a in decoder.decode(p)])
    assert abs(len(out) - len(pcm)) <= FRAME_SAMPLES  # the resampler may hold a few back
    tail = out[-4000:].astype(float)
    spectrum = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(tail) - 440) < 10
    assert np.sqrt(np.mean(tail**2)) > 3000  # not faint: the level survived
