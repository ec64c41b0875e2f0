"""In-band DTMF detection: what it costs per received RTP packet, and what it costs legs without it.

One ``sip.media.RtpEndpoint`` is fed 172-byte PCMU packets straight into ``datagram_received``
(no socket, no event loop: the per-packet work alone), speech-like noise with a DTMF press now
and then, first with detection off (every leg whose far end negotiates RFC 4733 telephone-event),
then on (a leg the engine asked to listen for tones: a caller in a flow whose trunk sends DTMF
in-band). Prints microseconds per packet for each and the difference, which is the price of one
detecting leg: at 50 packets/s, N us per packet is N * 50 us of CPU per call-second.

    .venv/bin/python benchmarks/bench_inband_dtmf.py --packets 50000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sip.media import MediaStats, RtpEndpoint
from sip.rtp.g711 import encode_samples
from sip.rtp.packet import RtpPacket


def packets(n: int) -> list[bytes]:
    rng = np.random.default_rng(4733)
    pcm = rng.normal(0, 2000, n * 160)
    t = np.arange(960) / 8000
    for start in range(8000, len(pcm) - 960, 16000):  # a 120 ms "5" every 2 s
        pcm[start : start + 960] = 5000 * (
            np.sin(2 * np.pi * 770 * t) + np.sin(2 * np.pi * 1336 * t)
        )
    encoded = encode_samples(np.clip(pcm, -32768, 32767).astype(np.int16), "PCMU")
    return [
        RtpPacket(0, i & 0xFFFF, 160 * i, 0xA, encoded[160 * i : 160 * (i + 1)]).serialize()
        for i in range(n)
    ]


def per_packet_us(stream: list[bytes], *, detect: bool) -> tuple[float, int]:
    digits: list[object] = []
    leg = RtpEndpoint(
        40000, allocator=None, stats=MediaStats(), remote=("127.0.0.1", 9), symmetric=False,
        on_event=digits.append, time_source=time.monotonic,
    )  # fmt: skip
    leg.detect_inband_dtmf(detect)
    addr = ("127.0.0.1", 9)
    started = time.process_time()
    for data in stream:
        leg.datagram_received(data, addr)
    return (time.process_time() - started) / len(stream) * 1e6, len(digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=50_000)
    args = parser.parse_args()
    stream = packets(args.packets)
    per_packet_us(stream[:2000], detect=True)  # warm up numpy
    off, _ = per_packet_us(stream, detect=False)
    on, found = per_packet_us(stream, detect=True)
    print(
        f"packets: {len(stream)} (digits pressed: {len(range(8000, len(stream) * 160 - 960, 16000))})"
    )
    print(f"detection off: {off:6.2f} us/packet")
    print(f"detection on:  {on:6.2f} us/packet ({found} digits found)")
    print(
        f"cost of one detecting leg: {(on - off):.2f} us/packet = {(on - off) * 50 / 1000:.2f} ms CPU per call-second"
    )


if __name__ == "__main__":
    main()
