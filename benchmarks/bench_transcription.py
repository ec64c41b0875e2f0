"""Transcription real-time factor per core: CPU seconds spent per second of 8 kHz telephone speech.

espeak-ng sentences (voice en-us+f2, 8 kHz 16-bit, as a recording's channel holds them) are joined
into one channel of ``--seconds`` of speech and decoded by the configured engine in this process
(one core): free transcription (``transcribe``) and keyword spotting (``spot``) are timed apart,
upsampling to 16 kHz included. RTF < 1 means faster than real time; 1 / RTF is how many hours of
one channel one core transcribes per hour (a stereo call costs both channels).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_transcription.py --seconds 60

``--backlog N``: the daemon's transcription service (engine/transcription/service.py, its worker
pool of ``--workers`` processes, a real SQLite store) given N stereo recordings of
``--call-seconds`` each that ended at the same moment (N concurrent calls hanging up): how long
until the first, the median and the last transcript is stored after the hang-up.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_transcription.py --backlog 50 --workers 2

Never gates CI on wall-clock time; it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


async def backlog(one: np.ndarray, calls: int, call_s: float, workers: int, tmp: Path) -> None:
    import sqlalchemy as sa
    from prometheus_client import CollectorRegistry

    from engine.config import QaRuleConfig, StorageConfig, TranscriptionConfig, parse_config
    from engine.storage import Store, database_url
    from engine.storage.schema import recordings, transcripts
    from engine.transcription.service import TranscriptionMetrics, TranscriptionService

    n = int(call_s * 8000)
    mono = np.tile(one, int(np.ceil(n / len(one))))[:n]
    stereo = np.zeros((n, 2), "<i2")
    stereo[:, 0] = np.roll(mono, n // 3)  # the caller says other sentences at other times
    stereo[:, 1] = mono
    path = tmp / "call.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(stereo.tobytes())
    store = await Store.open(database_url(StorageConfig(sqlite_path=str(tmp / "b.sqlite3"))))
    config = parse_config('[[queues]]\nname = "sales"\n', "bench.toml")
    rule = QaRuleConfig(name="risk disclosure", type="required", phrases=("you may lose money",))
    tc = TranscriptionConfig(enabled=True, workers=workers, rules=(rule,))
    config = __import__("msgspec").structs.replace(config, transcription=tc)
    service = TranscriptionService(
        config, store, keyring=None, bus=None, metrics=TranscriptionMetrics(CollectorRegistry())
    )
    runner = asyncio.create_task(service.run())
    await service.wait_idle()  # workers spawned and warmed, nothing in the store yet
    ended = time.time()
    async with store.engine.begin() as conn:
        await conn.execute(
            recordings.insert(),
            [
                {"id": f"r{i}", "call_id": f"c{i}", "queue": "sales", "agent_id": "1001",
                 "started_at": ended - call_s, "path": str(path), "codec": "wav",
                 "duration_s": call_s, "size_bytes": path.stat().st_size}
                for i in range(calls)
            ],
        )  # fmt: skip
    cpu = time.process_time()
    for i in range(calls):
        service.recording_indexed(f"r{i}")
    await service.wait_idle()
    async with store.engine.connect() as conn:
        done = sorted(r[0] - ended for r in await conn.execute(sa.select(transcripts.c.created_at)))
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await store.close()
    audio_s = calls * call_s * 2
    wall = done[-1] if done else float("nan")
    print(f"backlog: {calls} calls of {call_s:.0f} s ended at once, {workers} worker processes")
    worker_cpu = service.metrics.cpu._value.get()
    print(
        f"stored {len(done)}; after the hang-up: first {done[0]:.1f} s, median "
        f"{done[len(done) // 2]:.1f} s, last {wall:.1f} s; {audio_s / wall:.1f} s of channel "
        f"audio per wall second"
    )
    print(
        f"workers' CPU {worker_cpu:.1f} s for {audio_s:.0f} s of channel audio: RTF "
        f"{worker_cpu / audio_s:.3f} per core; the daemon's own CPU meanwhile "
        f"{time.process_time() - cpu:.2f} s; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of speech to decode")
    parser.add_argument("--engine", default="pocketsphinx")
    parser.add_argument("--model", default="")
    parser.add_argument("--backlog", type=int, default=0, help="calls ending at once (0: RTF)")
    parser.add_argument("--call-seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = speech_8k(Path(tmp))
        if args.backlog:
            print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
            asyncio.run(backlog(one, args.backlog, args.call_seconds, args.workers, Path(tmp)))
            return
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
