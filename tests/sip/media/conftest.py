"""Fixtures for the media tests: a free port range, stats, the shared clock."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import pytest

from sip.media import MediaClock, MediaStats, PortAllocator


@pytest.fixture
def allocator(unused_udp_port_base: int) -> PortAllocator:
    return PortAllocator(unused_udp_port_base, unused_udp_port_base + 40)


@pytest.fixture
def unused_udp_port_base() -> int:
    """An even port with 40 free ports above it (probed by binding)."""
    start = random.randrange(30000, 58000, 2)
    for base in range(start, start + 6400, 64):
        socks = []
        try:
            for port in range(base, base + 40):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free UDP port range")


@pytest.fixture
def stats() -> MediaStats:
    return MediaStats()


@pytest.fixture
async def clock(stats: MediaStats) -> AsyncIterator[MediaClock]:
    c = MediaClock(asyncio.get_running_loop(), stats)
    c.start()
    yield c
    c.stop()
