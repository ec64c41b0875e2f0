"""Card numbers out of stored transcripts: digit runs spoken after a context word are masked.

How this works: a recogniser writes spoken digits as words ("four one one one", "oh" for zero) or,
for some engines, as numerals. After any context word ("card", "number", ...), a run of at least
``min_digits`` digits within ``window_s`` is masked: each digit word keeps its times (so the QA
evidence still lines up) but its text becomes ``MASK``. A run spoken without a context word is kept
(dates, amounts, reference numbers the QA lead needs). PCI spans the agent paused are never
transcribed in the first place (``audio.speech_segments``); this is the net for those that were not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from engine.transcription.asr import Word

MASK = "[redacted]"

_DIGIT_WORDS = frozenset(
    [
        "zero",
        "oh",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "double",
        "triple",
    ]
)


def _digits_in(text: str) -> int:
    """How many digits the word stands for (0: not a digit word)."""
    t = text.lower()
    if t.isdigit():
        return len(t)
    if t in ("double", "triple"):
        return 0  # "double four" counts its four; the multiplier is masked with the run
    return 1 if t in _DIGIT_WORDS else 0


def _is_digit_word(text: str) -> bool:
    t = text.lower()
    return t.isdigit() or t in _DIGIT_WORDS


def mask_card_numbers(
    words: Sequence[Word], context: Sequence[str], *, min_digits: int, window_s: float
) -> tuple[list[Word], int]:
    """(words with card-like runs masked, how many words were masked)."""
    triggers = {c.lower() for c in context}
    out = list(words)
    masked = 0
    armed_until = -1.0
    i = 0
    while i < len(out):
        word = out[i]
        if word.text.lower() in triggers:
            armed_until = word.end_s + window_s
            i += 1
            continue
        if _is_digit_word(word.text) and word.start_s <= armed_until:
            j = i
            while j < len(out) and _is_digit_word(out[j].text):
                j += 1
            if sum(_digits_in(w.text) for w in out[i:j]) >= min_digits:
                for k in range(i, j):
                    out[k] = dataclasses.replace(out[k], text=MASK)
                    masked += 1
            i = j
            continue
        i += 1
    return out, masked
