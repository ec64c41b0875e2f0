"""G.711 tables bit-exact against the stdlib audioop reference on every input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sip.rtp import g711

with warnings.catch_warnings():
    # audioop is deprecated (removed in 3.13): the one allowed skip, on interpreters without it
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")

ALL_SAMPLES = np.arange(65536, dtype=np.uint16).view(np.int16).astype("<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_ulaw_encode_all_65536_inputs() -> None:
    assert g711.encode_pcmu(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)


def test_alaw_encode_all_65536_inputs() -> None:
    assert g711.encode_pcma(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)


def test_decode_all_256_codes() -> None:
    assert g711.decode_pcmu(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.decode_pcma(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_direct_transcode_tables() -> None:
    assert g711.pcmu_to_pcma(ALL_CODES) == audioop.lin2alaw(audioop.ulaw2lin(ALL_CODES, 2), 2)
    assert g711.pcma_to_pcmu(ALL_CODES) == audioop.lin2ulaw(audioop.alaw2lin(ALL_CODES, 2), 2)


def test_tables_are_read_only_and_silence_codes() -> None:
    with pytest.raises(ValueError, match="read-only"):
        g711.ULAW_DECODE[0] = 1
    assert g711.decode_pcmu(bytes([g711.ULAW_SILENCE])) == b"\x00\x00"
    assert g711.decode_pcma(bytes([g711.ALAW_SILENCE])) == audioop.alaw2lin(b"\xd5", 2)


def test_decoders_for_the_recorder_tap() -> None:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2")
    payload = g711.encode_pcmu(tone.tobytes())
    pcm = g711.DECODERS["PCMU"](payload)
    assert len(pcm) == 320
    # G.711 quantisation error stays within a few percent of the amplitude
    assert np.max(np.abs(np.frombuffer(pcm, "<i2") - tone)) < 300
    assert g711.DECODERS["L16"](tone.tobytes()) == tone.tobytes()
    assert g711.encode_samples(tone, "PCMA") == audioop.lin2alaw(tone.tobytes(), 2)
    with pytest.raises(ValueError, match=r"G\.711"):
        g711.encode_samples(tone, "opus")
