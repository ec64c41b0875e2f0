"""SRTP cost per packet: `sip.rtp.srtp.SrtpContext` protect + unprotect of 172-byte G.711 RTP.

One process, no sockets: a sender context protects N packets of a 20 ms PCMA stream (12-byte
header, 160-byte payload) and a receiver context unprotects them, in order, per suite. Reported:
microseconds of process CPU per packet for protect, unprotect and the pair, and what that is per
bridged call-second (two legs, each receiving 50 packets/s and sending 50: 100 protects and 100
unprotects). libsrtp (aiortc's pylibsrtp) on the same packets is printed beside it for scale.

    .venv/bin/python benchmarks/bench_srtp.py --packets 20000
"""

from __future__ import annotations

import argparse
import struct
import time

import pylibsrtp

from sip.rtp.srtp import SrtpContext, SrtpProfile

_KEY = bytes(range(16))
_SALT = bytes(range(16, 30))


def _packets(n: int) -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, 8, i & 0xFFFF, i * 160, 0x1234) + bytes([i % 256]) * 160
        for i in range(n)
    ]


def _cpu_us(fn: object, items: list[bytes]) -> tuple[float, list[bytes]]:
    assert callable(fn)
    start = time.process_time()
    out = [fn(p) for p in items]
    return (time.process_time() - start) * 1e6 / len(items), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000)
    args = parser.parse_args()
    plain = _packets(args.packets)
    print(
        f"{'suite':<26} {'impl':<8} {'protect us':>10} {'unprotect us':>12} {'pair us':>8} "
        f"{'CPU ms per call-s':>18}"
    )
    for profile, lib_profile in (
        (SrtpProfile.AES_CM_128_HMAC_SHA1_80, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
        (SrtpProfile.AES_CM_128_HMAC_SHA1_32, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32),
    ):
        tx, rx = SrtpContext(profile, _KEY, _SALT), SrtpContext(profile, _KEY, _SALT)
        p_us, protected = _cpu_us(tx.protect_rtp, plain)
        u_us, back = _cpu_us(rx.unprotect_rtp, protected)
        assert back == plain
        assert rx.stats.unprotected == len(plain)
        per_call_ms = (p_us + u_us) * 100 / 1000
        print(
            f"{profile:<26} {'acd':<8} {p_us:>10.2f} {u_us:>12.2f} {p_us + u_us:>8.2f} "
            f"{per_call_ms:>18.2f}"
        )
        out_policy = pylibsrtp.Policy(
            key=_KEY + _SALT, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=lib_profile
        )
        in_policy = pylibsrtp.Policy(
            key=_KEY + _SALT, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=lib_profile
        )
        lib_tx, lib_rx = pylibsrtp.Session(out_policy), pylibsrtp.Session(in_policy)
        p_us, protected = _cpu_us(lib_tx.protect, plain)
        u_us, back = _cpu_us(lib_rx.unprotect, protected)
        assert back == plain
        per_call_ms = (p_us + u_us) * 100 / 1000
        print(
            f"{profile:<26} {'libsrtp':<8} {p_us:>10.2f} {u_us:>12.2f} {p_us + u_us:>8.2f} "
            f"{per_call_ms:>18.2f}"
        )


if __name__ == "__main__":
    main()
