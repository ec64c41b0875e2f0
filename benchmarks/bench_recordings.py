"""Recording writer under contact-center load: N concurrent calls, two legs, 50 packets/s each.

A generator thread plays the bridge: every 20 ms it feeds one 160-byte PCMU payload per leg for every
call, paced to real time (the event loop's view: feed() must stay cheap and never block). The
writer threads decode, place and write. Printed per run: frames dropped (must be 0), late frames,
generator cost per feed, writer CPU (process CPU minus the generator thread's), disk MB/s, files.

    .venv/bin/python benchmarks/bench_recordings.py --calls 1500 --seconds 20
    .venv/bin/python benchmarks/bench_recordings.py --calls 1500 --seconds 20 --encrypt --format flac

Never gates CI on wall-clock time; it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recordings import Keyring, RecordingFormat, RecordingWriter, WriterConfig

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stand-in for sip's G.711 decoder (the engine injects that one)

FRAME_SAMPLES = 160
TICK_S = 0.02


def _ulaw_decode(payload: bytes) -> bytes:
    return audioop.ulaw2lin(payload, 2)


def _payloads(freq_hz: float) -> list[bytes]:
    t = np.arange(8000) / 8000
    pcm = (np.sin(2 * np.pi * freq_hz * t) * 8000).astype("<i2").tobytes()
    enc = audioop.lin2ulaw(pcm, 2)
    return [enc[i : i + FRAME_SAMPLES] for i in range(0, len(enc), FRAME_SAMPLES)]


def run(
    calls: int,
    seconds: float,
    fmt: RecordingFormat,
    encrypt: bool,
    threads: int,
    root: Path,
    verbose: bool = False,
) -> None:
    keyring = Keyring({"bench": os.urandom(32)}, "bench") if encrypt else None
    cfg = WriterConfig(writer_threads=threads)
    writer = RecordingWriter({"PCMU": _ulaw_decode}, cfg, keyring=keyring)
    writer.start()
    left, right = _payloads(440), _payloads(1000)
    recs = [
        writer.start_recording(f"bench-{i}", root / f"{i}{fmt.extension}", fmt=fmt, encrypt=encrypt)
        for i in range(calls)
    ]
    ticks = int(seconds / TICK_S)
    cpu0 = time.process_time()
    gen0 = time.thread_time()
    t0 = time.monotonic()
    worst_lag_s = 0.0
    max_depth = 0
    max_pass_s = 0.0
    for tick in range(ticks):
        due = t0 + tick * TICK_S
        lag = time.monotonic() - due
        if lag < 0:
            time.sleep(-lag)
        else:
            worst_lag_s = max(worst_lag_s, lag)
        pos = tick * FRAME_SAMPLES
        a, b = left[tick % 50], right[tick % 50]
        for rec in recs:
            rec.feed(0, pos, a, "PCMU")
            rec.feed(1, pos, b, "PCMU")
        if tick % 50 == 0:
            snap = writer.stats()
            max_depth = max(max_depth, snap.queue_depth)
            max_pass_s = max(max_pass_s, snap.flush_pass_seconds)
            if verbose:
                print(
                    f"  t={tick * TICK_S:5.1f} s queue_depth={snap.queue_depth} "
                    f"flush_pass={1000 * snap.flush_pass_seconds:.0f} ms",
                    flush=True,
                )
    gen_cpu = time.thread_time() - gen0
    fed_wall = time.monotonic() - t0
    feed_phase_cpu = time.process_time() - cpu0 - gen_cpu
    for rec in recs:
        rec.close(ticks * FRAME_SAMPLES)
    results = [rec.result.result(timeout=300) for rec in recs]
    wall = time.monotonic() - t0
    close_cpu = time.process_time() - cpu0 - gen_cpu - feed_phase_cpu
    writer.stop()
    st = writer.stats()
    errors = sum(1 for r in results if r.error)
    durations = {round(r.duration_s, 3) for r in results}
    disk = sum(r.size_bytes for r in results)
    feeds = 2 * calls * ticks
    print(
        f"format={fmt.value:<4} encrypt={encrypt!s:<5} calls={calls} audio_s={ticks * TICK_S:.1f} "
        f"threads={threads}\n"
        f"  dropped_frames={st.dropped_frames_total} late_frames={st.late_frames_total} "
        f"errors={errors} durations_s={sorted(durations)} max_queue_depth={max_depth} "
        f"longest_flush_pass={1000 * max_pass_s:.0f} ms\n"
        f"  generator: {1e6 * gen_cpu / feeds:.2f} us CPU per feed, worst tick lag "
        f"{1000 * worst_lag_s:.1f} ms, feeding took {fed_wall:.1f} s wall\n"
        f"  writer CPU while calls run {feed_phase_cpu:.1f} s = "
        f"{100 * feed_phase_cpu / fed_wall:.0f} % of one core; closing all calls at once "
        f"{wall - fed_wall:.1f} s wall, {close_cpu:.1f} s CPU\n"
        f"  disk {disk / 1e6:.0f} MB = {disk / 1e6 / fed_wall:.1f} MB/s "
        f"(bytes_written_total {st.bytes_written_total / 1e6:.0f} MB)",
        flush=True,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=1500)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--format", choices=[f.value for f in RecordingFormat], default="wav")
    p.add_argument("--encrypt", action="store_true")
    p.add_argument("--threads", type=int, default=WriterConfig().writer_threads)
    p.add_argument("--verbose", action="store_true", help="print the queue depth every second")
    p.add_argument("--dir", type=Path, help="where to write (default: a temporary directory)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-rec-", dir=args.dir))
    try:
        run(
            args.calls,
            args.seconds,
            RecordingFormat(args.format),
            args.encrypt,
            args.threads,
            root,
            args.verbose,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
