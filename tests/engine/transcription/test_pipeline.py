"""One stereo recording through the pipeline: channels apart, encrypted in memory, PCI spans
skipped, card digits masked, QA rules with their evidence times."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

import recordings as rec
from engine.config import QaRuleConfig, TranscriptionConfig
from engine.transcription import qa
from engine.transcription.asr import Hit, KeyPhrase, Word, make_transcriber
from engine.transcription.audio import read_recording, speech_segments
from engine.transcription.pipeline import Job, run_job, transcribe_recording
from engine.transcription.redact import MASK, mask_card_numbers
from recordings.crypto import ChunkEncryptor
from tests.engine.transcription.speech import espeak_8k, stereo_wav

DISCLOSURE = "this product carries investment risk and you may lose money"
CALLER = "i would like to check my account balance please"

RULES = (
    QaRuleConfig(
        name="risk disclosure", type="required", channel="agent", within_s=30.0,
        phrases=("this product carries investment risk", "you may lose money"),
    ),
    QaRuleConfig(name="no guarantees", type="forbidden", phrases=("guaranteed returns",)),
    QaRuleConfig(name="agent talk ratio", type="talk_ratio", min_ratio=0.2, max_ratio=0.8),
)  # fmt: skip
CONFIG = TranscriptionConfig(rules=RULES)


def _result(results: Sequence[qa.RuleResult], name: str) -> qa.RuleResult:
    return next(r for r in results if r.rule == name)


@pytest.fixture(scope="module")
def transcriber():  # type: ignore[no-untyped-def]
    return make_transcriber("pocketsphinx", "")


def _encrypt(plain: bytes, path: Path, keyring: rec.Keyring) -> None:
    key_id, key = keyring.active()
    enc = ChunkEncryptor(key_id, key)
    chunks = enc.chunks(plain[:44]) + enc.chunks(plain[44:]) + enc.chunks(b"", final=True)
    path.write_bytes(enc.file_header + b"".join(chunks))


def test_encrypted_recording_channels_and_qa(transcriber, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    caller, agent = espeak_8k(CALLER, tmp_path, "c"), espeak_8k(DISCLOSURE, tmp_path, "a")
    lead = np.zeros(4000, np.int16)  # the agent speaks half a second later
    plain = stereo_wav(tmp_path / "plain.wav", caller, np.concatenate([lead, agent]))
    keyring = rec.Keyring({"k1": base64.b64decode(base64.b64encode(os.urandom(32)))}, "k1")
    enc_path = tmp_path / "r.wav"
    _encrypt(plain, enc_path, keyring)
    (tmp_path / "plain.wav").unlink()
    files_before = set(tmp_path.iterdir())

    t = transcribe_recording(transcriber, str(enc_path), "wav", keyring, [], CONFIG, "sales")
    assert set(tmp_path.iterdir()) == files_before  # nothing decrypted was written
    print("caller:", t.text("caller"), "\nagent: ", t.text("agent"), "\nhits:", t.hits)
    assert {"money", "lose"} <= set(t.text("agent").split())
    assert "money" not in t.text("caller").split()
    assert {"account", "check"} <= set(t.text("caller").split())
    assert min(w.start_s for w in t.words["agent"]) >= 0.4  # times on the recording's line
    disclosure = _result(t.qa, "risk disclosure")
    assert disclosure.passed
    assert all(e.channel == "agent" and 0.4 <= e.start_s < e.end_s for e in disclosure.evidence)
    assert _result(t.qa, "no guarantees").passed
    ratio = _result(t.qa, "agent talk ratio")
    assert ratio.passed
    assert 0.2 < ratio.detail["ratio"] < 0.8

    # the same call without the disclosure fails the rule; nothing is found on the caller side
    swapped = stereo_wav(tmp_path / "s.wav", agent, caller)
    t2 = transcribe_recording(
        transcriber, str(tmp_path / "s.wav"), "wav", None, [], CONFIG, "sales"
    )
    assert not _result(t2.qa, "risk disclosure").passed
    assert _result(t2.qa, "risk disclosure").evidence == ()
    assert len(swapped) > 44

    with pytest.raises(rec.KeyringError):
        read_recording(str(enc_path), "wav", None)


class _Recorder:
    """A Transcriber that hears digits wherever there is sound, and notes what it was given."""

    name = "fake"

    def __init__(self) -> None:
        self.given: list[np.ndarray] = []

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> list[Word]:
        self.given.append(samples)
        loud = np.flatnonzero(np.abs(samples) > 1000)
        if loud.size == 0:
            return []
        start = loud[0] / sample_rate
        text = [
            "my",
            "card",
            "number",
            "is",
            "four",
            "one",
            "one",
            "one",
            "two",
            "two",
            "two",
            "two",
            "thanks",
        ]
        return [Word(w, start + 0.3 * i, start + 0.3 * i + 0.25, 0.9) for i, w in enumerate(text)]

    def spot(
        self, samples: np.ndarray, sample_rate: int, phrases: Sequence[KeyPhrase]
    ) -> list[Hit]:
        return []

    def unknown_words(self, phrase: str) -> list[str]:
        return []


def test_paused_spans_are_never_decoded(transcriber, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent = espeak_8k(DISCLOSURE, tmp_path, "a")
    gap = np.zeros(8000, np.int16)
    # the agent says the disclosure twice; the second time inside a PCI pause (written as silence
    # by the recorder, here left as speech to prove the span is skipped rather than decoded)
    track = np.concatenate([agent, gap, agent])
    path = tmp_path / "p.wav"
    stereo_wav(path, np.zeros_like(track), track)
    pause = (len(agent) + len(gap), len(track))
    fake = _Recorder()
    t = transcribe_recording(fake, str(path), "wav", None, [pause], CONFIG, "sales")
    # each channel was given only the part before the pause
    assert [len(s) for s in fake.given] == [pause[0], pause[0]]
    assert t.skipped_spans_s == [(pause[0] / 8000, pause[1] / 8000)]
    real = transcribe_recording(transcriber, str(path), "wav", None, [pause], CONFIG, "sales")
    assert real.words["agent"]
    assert all(w.end_s <= pause[0] / 8000 + 0.05 for w in real.words["agent"])
    unpaused = transcribe_recording(transcriber, str(path), "wav", None, [], CONFIG, "sales")
    assert any(w.start_s > pause[0] / 8000 for w in unpaused.words["agent"])
    # digits after "card ... number" are masked in what would be stored, times kept
    words = t.words["agent"]
    assert [w.text for w in words].count(MASK) == 8
    assert "four" not in t.text("agent")
    assert t.masked_words == 8
    assert words[-1].text == "thanks"


def test_speech_segments() -> None:
    assert speech_segments(80000, [], 8000) == [(0, 80000)]
    assert speech_segments(80000, [[8000, 16000], [40000, 80000]], 8000) == [
        (0, 8000),
        (16000, 40000),
    ]
    assert speech_segments(80000, [[0, 79000]], 8000) == []  # the 1000 samples left are too short


def test_masking_needs_context_and_enough_digits() -> None:
    def w(text: str) -> list[Word]:
        return [Word(t, i * 0.4, i * 0.4 + 0.3, 1.0) for i, t in enumerate(text.split())]

    out, n = mask_card_numbers(w("card is four one one one"), ["card"], min_digits=4, window_s=20)
    assert [x.text for x in out] == ["card", "is", MASK, MASK, MASK, MASK]
    assert n == 4
    out, n = mask_card_numbers(
        w("i called four one one one times"), ["card"], min_digits=4, window_s=20
    )
    assert n == 0  # no context word: reference numbers stay
    out, n = mask_card_numbers(w("card one two"), ["card"], min_digits=4, window_s=20)
    assert n == 0  # too short to be a card number
    out, n = mask_card_numbers(
        w("card " + "x " * 60 + "one two three four"), ["card"], min_digits=4, window_s=5
    )
    assert n == 0  # the context was too long ago


def test_fuzzy_match_tolerates_recognition_errors() -> None:
    heard = ["the", "product", "can", "really", "let", "me", "and", "you", "may", "lose", "money"]
    words = [Word(t, i * 0.3, i * 0.3 + 0.25, 1.0) for i, t in enumerate(heard)]
    ev = qa.find_phrase("you may lose money", words, 0.75, "agent")
    assert ev is not None
    assert ev.similarity == 1.0
    assert ev.start_s == pytest.approx(7 * 0.3)
    assert qa.find_phrase("guaranteed returns", words, 0.75, "agent") is None
    late = QaRuleConfig(name="r", type="required", phrases=("lose money",), within_s=1.0)
    assert not qa.evaluate([late], "q", {"agent": words}, {})[0].passed
    scoped = QaRuleConfig(name="s", type="required", phrases=("x",), queues=("other",))
    assert qa.evaluate([scoped], "q", {"agent": words}, {}) == []
    hit = {"agent": [Hit("guaranteed returns", 1.0, 2.0, 0.8)]}
    forbidden = QaRuleConfig(name="f", type="forbidden", phrases=("Guaranteed  returns",))
    res = qa.evaluate([forbidden], "q", {"agent": words}, hit)[0]
    assert not res.passed
    assert res.evidence[0].source == "keyword"


def test_runs_in_a_worker_process(tmp_path: Path) -> None:
    agent = espeak_8k(DISCLOSURE, tmp_path, "a")
    path = tmp_path / "w.wav"
    stereo_wav(path, np.zeros_like(agent), agent)
    job = Job(str(path), "wav", None, (), CONFIG, "sales")
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        t = pool.submit(run_job, job).result(timeout=120)
    assert "money" in t.text("agent")
    assert t.words["caller"] == []
    assert _result(t.qa, "risk disclosure").passed
