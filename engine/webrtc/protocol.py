"""The WebRTC media worker's wire protocol: the messages between the gateway and a worker process.

How this works: both sides import this module and nothing of each other. The gateway's
`WorkerMedia` (engine/webrtc/session.py) sends `ToWorker` messages for a session's leg (`Open`,
`Offer`, `ConnectRtp`, `DisconnectRtp`, `Dtmf`, `Close`); the worker (engine/webrtc/worker.py)
answers with `FromWorker` messages: the replies (`Opened` / `OpenFailed`, `Answered` /
`OfferRefused`, `Closed`), the leg's events (`StateChanged`, `PageError`, `LegFailed`) and its
counters (`LegStatsReported`, every `LEG_STATS_INTERVAL_S` while they change). Framing (a
4-byte big-endian length and a msgpack message over an AF_UNIX socketpair) and the start-up
handshake (`Ready`) are engine.runtime.workers'.

The SIP media workers' protocol (engine/media/protocol.py) has its own `Failed`, `Stats`,
`STATS_INTERVAL_S` and counters (sip.media.MediaStats), which mean other things (a bridge that
failed, per-process deltas, 0.25 s); the names here say "leg" so the two never read alike.
"""

from __future__ import annotations

import msgspec

from engine.config import WebRtcConfig
from engine.runtime.workers import Ready

#: How often a worker reports its legs' packet counters (metrics lag the truth by at most this).
LEG_STATS_INTERVAL_S = 1.0


class LegStats(msgspec.Struct):
    """A leg's counters since it opened (plain ints: no metrics library on the per-packet path)."""

    to_browser: int = 0  # 20 ms packets from the call played to the page
    from_browser: int = 0  # 20 ms packets from the page sent as RTP
    dropped: int = 0  # RTP dropped: wrong source, malformed, or too late for the browser
    dtmf_digits: int = 0


# -- control channel: daemon <-> worker ------------------------------------------------------------
# Every message names its session by ``sid``, a number the daemon gives (unique per daemon run).


class Open(msgspec.Struct, tag=True, array_like=True):
    sid: int
    agent_id: str
    cfg: WebRtcConfig


class Offer(msgspec.Struct, tag=True, array_like=True):
    sid: int
    sdp: str


class ConnectRtp(msgspec.Struct, tag=True, array_like=True):
    sid: int
    host: str
    port: int


class DisconnectRtp(msgspec.Struct, tag=True, array_like=True):
    sid: int


class Dtmf(msgspec.Struct, tag=True, array_like=True):
    sid: int
    digits: str


class Close(msgspec.Struct, tag=True, array_like=True):
    sid: int


ToWorker = Open | Offer | ConnectRtp | DisconnectRtp | Dtmf | Close


class Opened(msgspec.Struct, tag=True, array_like=True):
    sid: int
    host: str
    port: int


class OpenFailed(msgspec.Struct, tag=True, array_like=True):
    sid: int
    reason: str


class Answered(msgspec.Struct, tag=True, array_like=True):
    sid: int
    sdp: str
    codec: str


class OfferRefused(msgspec.Struct, tag=True, array_like=True):
    sid: int
    reason: str


class StateChanged(msgspec.Struct, tag=True, array_like=True):
    sid: int
    state: str


class PageError(msgspec.Struct, tag=True, array_like=True):
    sid: int
    reason: str


class LegFailed(msgspec.Struct, tag=True, array_like=True):
    """The leg cannot go on (or its request hit a bug in the worker): the session ends (1011)."""

    sid: int
    reason: str
    bug: bool


class LegStatsReported(msgspec.Struct, tag=True, array_like=True):
    """The leg's counters as they are now (totals since it opened, not deltas)."""

    sid: int
    stats: LegStats


class Closed(msgspec.Struct, tag=True, array_like=True):
    sid: int
    stats: LegStats


FromWorker = (
    Ready | Opened | OpenFailed | Answered | OfferRefused | StateChanged | PageError | LegFailed
) | (LegStatsReported | Closed)
