"""RTP media: the only part of the media path that owns sockets and the event loop.

``ports`` (RTP/RTCP port pairs), ``endpoint`` (one leg's sockets, symmetric RTP, statistics, DTMF,
inactivity, RTCP), ``clock`` (the one 20 ms clock per process), ``player`` (prompts and music on
hold), ``bridge`` (relay + tap), ``monitor`` (a supervisor mixed into a bridge), ``tap`` (the `RecordingSink` contract), ``stats`` (plain counters).
The protocol work itself lives in the sans-I/O ``sip.rtp``.
"""

from sip.media.bridge import Bridge
from sip.media.clock import MediaClock
from sip.media.endpoint import (
    DtmfReceived,
    MediaEvent,
    MediaTimedOut,
    RemoteLatched,
    RtcpReceived,
    RtpEndpoint,
    open_endpoint,
)
from sip.media.monitor import Monitor
from sip.media.player import LegPlayer, PlaybackFinished
from sip.media.ports import PortAllocator, PortsExhaustedError
from sip.media.stats import MediaStats
from sip.media.tap import Decoder, RecordingSink

__all__ = [
    "Bridge",
    "Decoder",
    "DtmfReceived",
    "LegPlayer",
    "MediaClock",
    "MediaEvent",
    "MediaStats",
    "MediaTimedOut",
    "Monitor",
    "PlaybackFinished",
    "PortAllocator",
    "PortsExhaustedError",
    "RecordingSink",
    "RemoteLatched",
    "RtcpReceived",
    "RtpEndpoint",
    "open_endpoint",
]
