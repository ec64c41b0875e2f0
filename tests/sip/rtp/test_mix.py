"""The conference mixer against a naive per-sample reference (decode, add, clip, encode)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.rtp import g711, mix

CODECS = ("PCMU", "PCMA")
_DECODERS = {"PCMU": g711.decode_pcmu, "PCMA": g711.decode_pcma}
_ENCODERS = {"PCMU": g711.encode_pcmu, "PCMA": g711.encode_pcma}


def _naive(payloads, codecs, hears):  # type: ignore[no-untyped-def]
    decoded = []
    for payload, codec in zip(payloads, codecs, strict=True):
        samples = [0] * mix.FRAME_SAMPLES
        if payload is not None:
            pcm = _DECODERS[codec](payload)
            for i in range(len(pcm) // 2):
                samples[i] = int.from_bytes(pcm[2 * i : 2 * i + 2], "little", signed=True)
        decoded.append(samples)
    out = []
    for d, row in enumerate(hears):
        if not any(row):
            out.append(None)
            continue
        pcm = bytearray()
        for i in range(mix.FRAME_SAMPLES):
            total = sum(decoded[s][i] for s in range(len(row)) if row[s])
            total = max(-32768, min(32767, total))
            pcm += total.to_bytes(2, "little", signed=True)
        out.append(_ENCODERS[codecs[d]](bytes(pcm)))
    return out


frame = st.one_of(st.none(), st.binary(min_size=mix.FRAME_SAMPLES, max_size=mix.FRAME_SAMPLES))


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(frame, min_size=3, max_size=3),
    codecs=st.lists(st.sampled_from(CODECS), min_size=3, max_size=3),
    mode=st.sampled_from(sorted(mix.MONITOR_MODES)),
)
def test_monitor_modes_match_naive_reference(payloads, codecs, mode) -> None:  # type: ignore[no-untyped-def]
    hears = mix.MONITOR_MODES[mode]
    assert mix.mix_payloads(payloads, codecs, hears) == _naive(payloads, codecs, hears)


@settings(max_examples=40, deadline=None)
@given(
    payloads=st.lists(frame, min_size=2, max_size=4),
    data=st.data(),
)
def test_any_matrix_matches_naive_reference(payloads, data) -> None:  # type: ignore[no-untyped-def]
    n = len(payloads)
    codecs = data.draw(st.lists(st.sampled_from(CODECS), min_size=n, max_size=n))
    hears = [[0 if s == d else data.draw(st.integers(0, 1)) for s in range(n)] for d in range(n)]
    assert mix.mix_payloads(payloads, codecs, hears) == _naive(payloads, codecs, hears)


def test_full_scale_saturates_instead_of_wrapping() -> None:
    loud = g711.encode_pcmu(np.full(mix.FRAME_SAMPLES, 30000, dtype="<i2").tobytes())
    out = mix.mix_payloads([loud, loud, None], ["PCMU"] * 3, mix.MONITOR_MODES["listen"])
    supervisor = np.frombuffer(g711.decode_pcmu(out[mix.SUPERVISOR] or b""), dtype="<i2")
    assert supervisor.min() > 30000  # clipped near +32767, not wrapped negative


def test_short_frame_pads_with_silence() -> None:
    out = np.empty(mix.FRAME_SAMPLES, dtype=np.int32)
    mix.decode_frame(bytes([0x00]) * 80, "PCMU", out)
    assert (out[80:] == 0).all()
    assert (out[:80] == g711.ULAW_DECODE[0]).all()


def test_modes_never_let_a_leg_hear_itself() -> None:
    for hears in mix.MONITOR_MODES.values():
        assert all(hears[i][i] == 0 for i in range(3))
