"""RTP port pairs: even RTP, RTCP = RTP + 1, released on every exit path."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sip.media import MediaStats, PortAllocator, PortsExhaustedError, open_endpoint


def test_even_ports_round_robin_and_exhaustion() -> None:
    alloc = PortAllocator(10001, 10008)  # odd start is moved up to 10002
    ports = [alloc.allocate() for _ in range(3)]
    # pairs 10002/3, 10004/5, 10006/7 fit below 10008; 10008 would need 10009 outside the range
    assert ports == [10002, 10004, 10006]
    assert alloc.free == 0
    with pytest.raises(PortsExhaustedError) as exhausted:
        alloc.allocate()
    assert isinstance(exhausted.value, OSError)  # what callers that cannot open a socket catch
    alloc.release(10002)
    assert alloc.free == 1
    alloc.release(10002)  # twice is harmless
    assert alloc.in_use == 2
    assert alloc.allocate() == 10002


def test_lease_releases_after_exception() -> None:
    alloc = PortAllocator(20000, 20010)
    seen: list[int] = []

    def use_and_fail() -> None:
        with alloc.lease() as port:
            seen.extend([port, alloc.in_use])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use_and_fail()
    assert seen == [20000, 1]
    assert alloc.in_use == 0


async def test_endpoint_binds_pair_and_releases_on_exception(allocator: PortAllocator) -> None:
    stats = MediaStats()
    seen: dict[str, int] = {}

    async def call_that_fails() -> None:
        async with await open_endpoint(allocator, stats) as ep:
            seen["rtp"] = ep.local_address[1]
            seen["port"] = ep.port
            assert ep.rtcp is not None
            assert ep.rtcp.transport is not None
            seen["rtcp"] = ep.rtcp.transport.get_extra_info("sockname")[1]
            seen["in_use"] = allocator.in_use
            seen["active"] = stats.sessions_active
            raise RuntimeError("call failed")

    with pytest.raises(RuntimeError, match="call failed"):
        await call_that_fails()
    rtp_port = seen["rtp"]
    assert rtp_port % 2 == 0
    assert seen == {
        "rtp": rtp_port,
        "port": rtp_port,
        "rtcp": rtp_port + 1,
        "in_use": 1,
        "active": 1,
    }
    assert allocator.in_use == 0
    assert stats.sessions_active == 0
    await asyncio.sleep(0.01)  # transports close on the next loop iteration
    # the sockets are really closed: the same port binds again
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", rtp_port))
    finally:
        s.close()


async def test_busy_ports_are_skipped_and_returned(allocator: PortAllocator) -> None:
    stats = MediaStats()
    first = allocator.first_port
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", first + 1))  # someone else holds the first pair's RTCP port
    try:
        ep = await open_endpoint(allocator, stats)
    finally:
        blocker.close()
    assert ep.port == first + 2
    assert allocator.in_use == 1
    ep.close()
    ep.close()
    assert allocator.in_use == 0
    assert stats.sessions_active == 0


async def test_cancelled_open_releases(allocator: PortAllocator) -> None:
    task = asyncio.ensure_future(open_endpoint(allocator, MediaStats()))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert allocator.in_use == 0


async def test_all_pairs_unbindable_raises(allocator: PortAllocator) -> None:
    small = PortAllocator(allocator.first_port, allocator.first_port + 4)
    blockers = []
    for port in (small.first_port, small.first_port + 2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        blockers.append(s)
    try:
        with pytest.raises(PortsExhaustedError):
            await open_endpoint(small, MediaStats())
    finally:
        for s in blockers:
            s.close()
    assert small.in_use == 0
