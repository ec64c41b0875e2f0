"""ONE 20 ms media clock per process: a ``loop.call_at`` chain that ticks every playing leg.

How this works: a thousand calls playing music must not mean a thousand sleeping tasks whose
wake-ups drift apart. `MediaClock` keeps a set of `Ticker` objects and re-arms a single
``call_at`` for the next multiple of `FRAME_INTERVAL_S` after its start time, so ticks do not drift
(each deadline is computed from the start, not from when the last tick ran). If the loop stalls
for longer than `MAX_CATCH_UP_TICKS`, the clock skips ahead instead of bursting frames (a burst
would only overflow the far end's jitter buffer). Every `WATCH_EVERY_TICKS` ticks the clock also
runs each watcher (media inactivity, RFC 4733 end timeouts, RTCP reports), one slice of them per
tick so the work is spread evenly. A ticker that raises
is removed and counted; it never stops the clock for the other calls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from sip.media.stats import MediaStats

#: 20 ms: the packet time of every G.711 peer (RFC 3551 4.5: default ptime 20).
FRAME_INTERVAL_S = 0.02
#: Beyond 5 missed ticks (100 ms) the clock skips instead of catching up in a burst.
MAX_CATCH_UP_TICKS = 5
#: Each watcher runs once every 5 ticks (100 ms): fine enough for a 0.5 s DTMF end timeout. The
#: watchers are split into 5 slices, one slice per tick, so 3000 legs cost 600 short calls per tick
#: instead of a 3000-call stall (~3 ms of added jitter) every fifth tick.
WATCH_EVERY_TICKS = 5

_log = logging.getLogger(__name__)


class Ticker(Protocol):
    def tick(self, now: float) -> None: ...


class Watcher(Protocol):
    def watch(self, now: float) -> None: ...


class MediaClock:
    __slots__ = (
        "_handle",
        "_loop",
        "_start",
        "_stats",
        "_tick_count",
        "_tickers",
        "_watch_cursor",
        "_watch_list",
        "_watchers",
        "interval_s",
        "late_ticks",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stats: MediaStats | None = None,
        interval_s: float = FRAME_INTERVAL_S,
    ) -> None:
        self._loop = loop
        self._stats = stats if stats is not None else MediaStats()
        self.interval_s = interval_s
        # dicts as ordered sets: ticking order is insertion order, deterministic
        self._tickers: dict[Ticker, None] = {}
        self._watchers: dict[Watcher, None] = {}
        self._watch_list: list[Watcher] | None = None  # snapshot, rebuilt after add/remove
        self._watch_cursor = 0
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._tick_count = 0
        self.late_ticks = 0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def __len__(self) -> int:
        return len(self._tickers)

    def start(self) -> None:
        if self._handle is None:
            self._start = self._loop.time()
            self._tick_count = 0
            self._handle = self._loop.call_at(self._start + self.interval_s, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def add(self, ticker: Ticker) -> None:
        self._tickers[ticker] = None

    def remove(self, ticker: Ticker) -> None:
        self._tickers.pop(ticker, None)

    def add_watcher(self, watcher: Watcher) -> None:
        self._watchers[watcher] = None
        self._watch_list = None

    def remove_watcher(self, watcher: Watcher) -> None:
        if self._watchers.pop(watcher, 0) is None:
            self._watch_list = None

    def _run(self) -> None:
        now = self._loop.time()
        self._tick_count += 1
        for ticker in list(self._tickers):
            try:
                ticker.tick(now)
            except Exception:  # one broken leg must not stop every other call's audio
                _log.exception("media ticker failed; removed")
                self._stats.ticker_errors += 1
                self._tickers.pop(ticker, None)
        self._run_watchers(now)
        deadline = self._start + (self._tick_count + 1) * self.interval_s
        after = self._loop.time()
        if after - deadline > MAX_CATCH_UP_TICKS * self.interval_s:
            # stalled: realign the grid to now instead of bursting the missed frames
            missed = int((after - deadline) / self.interval_s)
            self.late_ticks += missed
            self._tick_count += missed
            deadline = self._start + (self._tick_count + 1) * self.interval_s
        self._handle = self._loop.call_at(deadline, self._run)

    def _run_watchers(self, now: float) -> None:
        watch_list = self._watch_list
        if watch_list is None:
            watch_list = self._watch_list = list(self._watchers)
        count = len(watch_list)
        if not count:
            return
        slice_len = -(-count // WATCH_EVERY_TICKS)
        start = self._watch_cursor % count
        for watcher in watch_list[start : start + slice_len]:
            if watcher not in self._watchers:
                continue  # removed since the snapshot
            try:
                watcher.watch(now)
            except Exception:
                _log.exception("media watcher failed; removed")
                self._stats.ticker_errors += 1
                self.remove_watcher(watcher)
        self._watch_cursor = start + slice_len if start + slice_len < count else 0
