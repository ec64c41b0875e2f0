"""Sans-I/O RTP media core: packets, RTCP, receiver statistics, G.711, DTMF, playback, jitter buffer.

Nothing here touches sockets, the event loop or the clock: time comes in as ``now`` (seconds,
monotonic). The asyncio side lives in ``sip.media``.
"""

from sip.rtp.packet import RtpError, RtpExtension, RtpPacket, parse_rtp
from sip.rtp.rtcp import RtcpError, parse_rtcp
from sip.rtp.stats import ReceiverStats, ReceptionReport
from sip.rtp.stream import OutboundStream

__all__ = [
    "OutboundStream",
    "ReceiverStats",
    "ReceptionReport",
    "RtcpError",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "parse_rtcp",
    "parse_rtp",
]
