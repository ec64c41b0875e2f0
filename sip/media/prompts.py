"""Prompt files: 8 kHz mono 16-bit WAVs read once and kept as encoded frames.

How this works: `load_prompt` reads a WAV with the stdlib ``wave`` module and hands its samples to
the pure `sip.rtp.playback.prompt_from_samples`, which encodes 20 ms frames per codec. A
`PromptCache` keeps one `Prompt` per resolved path, so a file is read and encoded once per process
however many calls play it; that read happens at load time, off every call's hot path. File I/O
lives here, beside the sockets, so that ``sip.rtp`` stays pure.
"""

from __future__ import annotations

import wave
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from sip.rtp.playback import (
    SAMPLE_RATE,
    SUPPORTED_CODECS,
    Prompt,
    PromptFormatError,
    prompt_from_samples,
)


def load_prompt(path: str | Path, codecs: Iterable[str] = SUPPORTED_CODECS) -> Prompt:
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getframerate() != SAMPLE_RATE or wav.getnchannels() != 1:
                raise PromptFormatError(
                    f"{path}: {wav.getframerate()} Hz x {wav.getnchannels()} channels, "
                    f"need {SAMPLE_RATE} Hz mono"
                )
            if wav.getsampwidth() != 2:
                raise PromptFormatError(f"{path}: {8 * wav.getsampwidth()}-bit, need 16-bit")
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise PromptFormatError(f"{path}: not a PCM WAV file: {exc}") from exc
    return prompt_from_samples(str(path), np.frombuffer(raw, dtype="<i2"), codecs)


class PromptCache:
    """One `Prompt` per file path, loaded on first use (normally at startup, from config)."""

    __slots__ = ("_codecs", "_prompts")

    def __init__(self, codecs: Sequence[str] = SUPPORTED_CODECS) -> None:
        self._codecs = tuple(codecs)
        self._prompts: dict[str, Prompt] = {}

    def get(self, path: str | Path) -> Prompt:
        key = str(Path(path).resolve())
        prompt = self._prompts.get(key)
        if prompt is None:
            prompt = load_prompt(key, self._codecs)
            self._prompts[key] = prompt
        return prompt

    def __len__(self) -> int:
        return len(self._prompts)
