"""Jitter buffer: reorder by sequence, explicit gaps, late packets, rebuffering, adaptive depth."""

from __future__ import annotations

import pytest

from sip.rtp.jitter import FrameReleased, GapReported, JitterBuffer


def drain(jb: JitterBuffer, n: int) -> list[object]:
    out: list[object] = []
    for _ in range(n):
        item = jb.pop()
        if isinstance(item, FrameReleased):
            out.append(item.sequence)
        elif isinstance(item, GapReported):
            out.append((item.reason, item.sequence))
        else:
            out.append(None)
    return out


def test_reorders_and_reports_loss() -> None:
    jb = JitterBuffer(depth=3)
    # 65534, 0 (65535 lost), 65533, 1 arrive reordered across the wrap
    for seq in (65534, 0, 65533, 1):
        jb.push(seq, seq * 160 % 2**32, bytes([seq % 256]), now=0.0)
    assert drain(jb, 6) == [65533, 65534, ("loss", 65535), 0, 1, ("underrun", 2)]


def test_waits_for_depth_before_playing() -> None:
    jb = JitterBuffer(depth=2)
    jb.push(10, 0, b"a", now=0.0)
    assert jb.pop() is None
    jb.push(11, 160, b"b", now=0.02)
    assert drain(jb, 2) == [10, 11]


def test_late_packet_after_playout_is_dropped() -> None:
    jb = JitterBuffer(depth=1)
    jb.push(1, 160, b"", now=0.0)
    jb.push(3, 480, b"", now=0.0)
    assert drain(jb, 2) == [1, ("loss", 2)]
    jb.push(2, 320, b"", now=0.05)  # too late: 2 was already reported lost
    assert jb.late_packets == 1
    assert drain(jb, 1) == [3]


def test_underrun_rebuffers() -> None:
    jb = JitterBuffer(depth=2)
    for seq in (1, 2):
        jb.push(seq, seq * 160, b"", now=0.0)
    assert drain(jb, 3) == [1, 2, ("underrun", 3)]
    jb.push(3, 480, b"", now=0.1)
    assert jb.pop() is None  # waiting for 2 frames again
    jb.push(4, 640, b"", now=0.12)
    assert drain(jb, 2) == [3, 4]


def test_adaptive_depth_follows_jitter() -> None:
    jb = JitterBuffer(depth=1, adaptive=True, min_depth=1, max_depth=8)
    # packets every 20 ms of media time arrive alternately 0 and 30 ms late:
    # |D| = 240 samples each time, so J -> 240 (J_n = 240 * (1 - (15/16)**n))
    for i in range(200):
        jb.push(i, 160 * i, b"", now=0.02 * i + (0.03 if i % 2 else 0.0))
    expected_j = 240 * (1 - (15 / 16) ** 199)
    assert jb.jitter_samples == pytest.approx(expected_j)
    jb.pop()
    # ceil(3 * 240 / 160) + 1 = ceil(4.5) + 1 = 6 frames
    assert jb.depth == 6


def test_sender_restart_flushes() -> None:
    jb = JitterBuffer(depth=1)
    jb.push(100, 0, b"", now=0.0)
    jb.push(30000, 0, b"", now=0.02)  # far ahead: a restart
    assert drain(jb, 1) == [30000]
    with pytest.raises(ValueError, match="depth"):
        JitterBuffer(depth=0)
