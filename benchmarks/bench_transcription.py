"""Transcription real-time factor per core: CPU seconds spent per second of 8 kHz telephone speech.

espeak-ng sentences (voice en-us+f2, 8 kHz 16-bit, as a recording's channel holds them) are joined
into one channel of ``--seconds`` of speech and decoded by the configured engine in this process
(one core): free transcription (``transcribe``) and keyword spotting (``spot``) are timed apart,
upsampling to 16 kHz included. RTF < 1 means faster than real time; 1 / RTF is how many hours of
one channel one core transcribes per hour (a stereo call costs both channels).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_transcription.py --seconds 60

Never gates CI on wall-clock time; it prints numbers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.transcription.asr import KeyPhrase, make_transcriber, upsample_8k_to_16k

SENTENCES = [
    "this product carries investment risk and you may lose money",
    "thank you for calling how can i help you today",
    "i would like to check my account balance please",
    "your payment was received yesterday",
]


def speech_8k(tmp: Path) -> np.ndarray:
    parts = []
    for i, text in enumerate(SENTENCES):
        raw, out = tmp / f"{i}.wav", tmp / f"{i}.8k.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us+f2", "-s", "150", "-w", str(raw), text], check=True
        )
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out)], check=True)
        with wave.open(str(out)) as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"))
        parts.append(np.zeros(4000, np.int16))
    return np.concatenate(parts).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of speech to decode")
    parser.add_argument("--engine", default="pocketsphinx")
    parser.add_argument("--model", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = speech_8k(Path(tmp))
    reps = max(1, int(np.ceil(args.seconds * 8000 / len(one))))
    audio = np.tile(one, reps)
    audio_s = len(audio) / 8000
    transcriber = make_transcriber(args.engine, args.model)
    phrases = [KeyPhrase("investment risk"), KeyPhrase("lose money")]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"engine {transcriber.name}, {audio_s:.1f} s of 8 kHz espeak-ng speech, one core")
    for what, run in (
        ("upsample 8->16 kHz", lambda: upsample_8k_to_16k(audio)),
        ("transcribe", lambda: transcriber.transcribe(audio, 8000)),
        ("spot 2 phrases", lambda: transcriber.spot(audio, 8000, phrases)),
    ):
        cpu, wall = time.process_time(), time.perf_counter()
        result = run()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = len(result)
        print(f"{what:20s} RTF {cpu / audio_s:.3f} (CPU {cpu:.2f} s, wall {wall:.2f} s, {n} items)")


if __name__ == "__main__":
    main()
