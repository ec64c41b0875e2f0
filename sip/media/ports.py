"""RTP/RTCP port pairs from a configured range (RFC 3550 11: RTP on an even port, RTCP on the next).

How this works: the allocator hands out even RTP ports in round-robin order (a released port goes to
the back of the queue, so a stray late packet of a finished call rarely reaches the next one) and
takes them back on `release`. `lease()` is a context manager that releases on every exit path,
exceptions included; `sip.media.endpoint.open_endpoint` uses it while binding and gives ownership to
the endpoint, whose ``close`` releases the pair.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class PortsExhaustedError(OSError):
    """Every port pair of the range is in use (or failed to bind): refuse the call (503).

    An ``OSError`` like the bind failures it stands for (no port to be had), so a caller that
    handles "cannot open a socket" handles this too. Not raised for a port another process holds
    while others are free: `open_endpoint` skips that one and binds the next."""


class PortAllocator:
    __slots__ = ("_free", "_in_use", "first_port", "last_port")

    def __init__(self, first_port: int, last_port: int) -> None:
        first = first_port + (first_port % 2)  # RTP must be even
        if not 0 < first < last_port <= 65535:
            raise ValueError(f"bad RTP port range {first_port}-{last_port}")
        self.first_port = first
        self.last_port = last_port
        # the RTCP port (RTP + 1) must be inside the range too
        self._free: deque[int] = deque(range(first, last_port, 2))
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._in_use)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def free(self) -> int:
        """Pairs `allocate` can still hand out now."""
        return len(self._free)

    def allocate(self) -> int:
        """An even RTP port whose odd neighbour is the RTCP port."""
        if not self._free:
            raise PortsExhaustedError(
                f"all {self.capacity} RTP port pairs of {self.first_port}-{self.last_port} in use"
            )
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back; releasing twice is harmless (every exit path may call it)."""
        if port in self._in_use:
            self._in_use.discard(port)
            self._free.append(port)

    @contextmanager
    def lease(self) -> Iterator[int]:
        port = self.allocate()
        try:
            yield port
        finally:
            self.release(port)
