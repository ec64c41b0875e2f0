"""One leg's RTP/RTCP sockets: symmetric RTP, statistics, RFC 4733 DTMF, inactivity, RTCP reports.

How this works: `open_endpoint` takes an even port pair from the `PortAllocator`, binds RTP on it and
RTCP on the next port, and returns an `RtpEndpoint` (an ``asyncio.DatagramProtocol``) that owns the
pair until ``close()`` (or ``async with``) gives it back, on every path, errors included.

Per packet, in ``datagram_received`` and without creating tasks:

* symmetric RTP (RFC 4961, "latching" for NAT): with ``symmetric=True`` the first source address
  becomes the remote address (whatever SDP said) and packets from any other address are dropped
  and counted; with ``symmetric=False`` we send to the signalled address and accept any source;
* the RFC 3550 A.1/A.8 receiver statistics of the current source SSRC (a new SSRC restarts them);
* RFC 4733 telephone-events go through a `DtmfReceiver`; each digit becomes one `DtmfReceived`;
* only on a leg asked to (`detect_inband_dtmf`, for callers that send DTMF as tones), the G.711
  audio is decoded and searched for DTMF tones (`sip.rtp.inband`): digits come out the same way,
  with method "inband". Other legs pay one attribute test per packet for it;
* then the optional ``on_rtp(data, seq, ts, ssrc, now)`` hook, which is how a `Bridge` relays
  (nothing is queued; the header fields are passed along so nobody unpacks them twice).

What we send goes through ``self.stream`` (`OutboundStream`), so prompts, music and relayed audio
form one continuous stream. The shared `MediaClock` calls ``watch(now)`` every 100 ms: media
inactivity becomes a `MediaTimedOut` event (once, with the idle time in the reason), RFC 4733 end
timeouts are handled, and an RTCP compound (SR or RR + SDES CNAME, RFC 3550 6.1) goes out every
`RTCP_INTERVAL_S`, randomised 0.5-1.5x (RFC 3550 6.3.1); ``close`` sends a last one with BYE. Events reach the owner through the ``on_event`` callback.

SRTP (`use_srtp`, keys from SDES): every packet received is unprotected first (`sip.rtp.srtp`),
before latching, so only a packet with a valid tag can move the remote address; a forged,
replayed or plain one is dropped and counted (``MediaStats.packets_srtp_rejected``). Everything
sent (``send``, the bridge's relay, RTCP) is protected last. `detach` hands such a leg over
with its contexts exported (`SrtpContext.export`: key, ROCs, replay windows, in
``EndpointState.srtp``), so a media worker carries it on the same keys; the state crosses only
the daemon's own socket pair to its child process, never a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from sip.media.clock import MediaClock
from sip.media.ports import PortAllocator, PortsExhaustedError
from sip.media.stats import MediaStats
from sip.rtp.dtmf import DtmfEnded, DtmfError, DtmfReceiver
from sip.rtp.g711 import ALAW_DECODE, ULAW_DECODE
from sip.rtp.inband import BLOCK_SAMPLES, CONFIRM_BLOCKS, SAMPLE_RATE, InbandDtmfDetector
from sip.rtp.packet import FIXED_HEADER_LEN, payload_offset
from sip.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    build_compound,
    dlsr_units,
    ntp_middle32,
    ntp_timestamp,
    parse_rtcp,
    report_block,
    round_trip_s,
)
from sip.rtp.srtp import SrtpContext, SrtpState
from sip.rtp.stats import ReceiverStats
from sip.rtp.stream import OutboundStream

#: RFC 3550 6.2: 5 s is the recommended minimum interval between RTCP reports.
RTCP_INTERVAL_S = 5.0
#: No RTP for this long ends the call (what Asterisk's rtptimeout and FreeSWITCH use by default).
DEFAULT_INACTIVITY_TIMEOUT_S = 30.0
#: How many ports to try when some are taken by other processes before giving up.
MAX_BIND_ATTEMPTS = 16
#: RFC 3551 table 4 static types; dynamic ones (telephone-event) come from SDP.
STATIC_PAYLOAD_TYPES: Mapping[int, str] = MappingProxyType({0: "PCMU", 8: "PCMA"})
DEFAULT_DTMF_PAYLOAD_TYPE = 101
#: `close` of a leg another process carries waits this long for it to come home (`reattach`)
#: so the RTCP BYE goes out with that process's final counts; then it closes regardless.
HOME_WAIT_S = 2.0

_unpack_seq_ts_ssrc = struct.Struct("!HII").unpack_from
#: G.711 decode tables by codec name, for in-band DTMF detection.
_PCM_DECODE: Mapping[str, npt.NDArray[np.int16]] = MappingProxyType(
    {"PCMU": ULAW_DECODE, "PCMA": ALAW_DECODE}
)
#: An in-band digit is known once it has lasted this long (the detector's confirmation).
_INBAND_MIN_MS = CONFIRM_BLOCKS * BLOCK_SAMPLES * 1000 // SAMPLE_RATE
_log = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RemoteLatched:
    """Symmetric RTP: the first packet came from this address, we now send there."""

    address: Address


@dataclass(frozen=True, slots=True)
class MediaTimedOut:
    reason: str
    idle_s: float


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str
    duration_ms: int
    method: str  # "rfc4733" or "inband" here; the engine reports "info" digits the same way


@dataclass(frozen=True, slots=True)
class RtcpReceived:
    """A compound RTCP packet arrived; ``round_trip_s`` is set when it carried our LSR back."""

    round_trip_s: float | None
    fraction_lost: int | None  # what the far end reports about OUR stream, 0..255


MediaEvent = RemoteLatched | MediaTimedOut | DtmfReceived | RtcpReceived


@dataclass(slots=True)
class EndpointState:
    """A leg's RTP state as it moves between processes (`RtpEndpoint.detach` / `adopt`).

    Plain, picklable objects: the outbound stream (so the far end keeps one continuous stream),
    the receiver statistics and the RFC 4733 receiver (so loss, jitter and a digit in progress
    carry on), and the latch. Times are ages (seconds before the handoff), so the two processes'
    clocks need not agree."""

    port: int
    remote_addr: Address | None
    rtcp_remote: Address | None
    latched: bool
    symmetric: bool
    payload_types: dict[int, str]
    dtmf_payload_type: int | None
    inactivity_timeout_s: float | None
    held: bool
    timed_out: bool
    idle_s: float
    rtcp_due_in_s: float
    stream: OutboundStream
    rx: ReceiverStats | None
    rx_ssrc: int | None
    lost_reported: int
    dtmf: DtmfReceiver
    packets_received: int
    packets_sent: int
    last_rtt_s: float | None
    peer_lsr: int
    peer_sr_age_s: float
    cname: bytes
    clock_rate: int
    srtp: tuple[SrtpState, SrtpState] | None = None  # (ours: protect, theirs: unprotect)


def _rtcp_interval_s() -> float:
    # RFC 3550 6.3.1: randomise to 0.5-1.5 x the interval so legs set up together do not report
    # in lockstep
    return RTCP_INTERVAL_S * (0.5 + random.random())


def _no_loop_time() -> float:
    raise RuntimeError("RtpEndpoint used before its socket was connected")


def _ignore(event: MediaEvent) -> None:
    del event


class RtpEndpoint(asyncio.DatagramProtocol):
    """The RTP socket of one leg. Build with `open_endpoint`."""

    def __init__(
        self,
        port: int,
        *,
        allocator: PortAllocator | None,
        stats: MediaStats,
        clock: MediaClock | None = None,
        remote: Address | None = None,
        symmetric: bool = True,
        inactivity_timeout_s: float | None = DEFAULT_INACTIVITY_TIMEOUT_S,
        payload_types: Mapping[int, str] = STATIC_PAYLOAD_TYPES,
        dtmf_payload_type: int | None = DEFAULT_DTMF_PAYLOAD_TYPE,
        on_event: Callable[[MediaEvent], None] = _ignore,
        cname: bytes = b"acd",
        clock_rate: int = 8000,
        time_source: Callable[[], float] | None = None,
    ) -> None:
        self.port = port
        self._allocator = allocator
        self._stats = stats
        self._clock = clock
        self.remote_addr = remote
        self.symmetric = symmetric
        self._latched = False
        self.inactivity_timeout_s = inactivity_timeout_s
        self.payload_types = payload_types
        self.dtmf_payload_type = dtmf_payload_type
        self.on_event = on_event
        # the relay hook: (packet, sequence, timestamp, ssrc, now), header already validated
        self.on_rtp: Callable[[bytes, int, int, int, float], None] | None = None
        self.cname = cname
        self.clock_rate = clock_rate
        self.stream = OutboundStream(
            secrets.randbits(32), secrets.randbits(16), secrets.randbits(32), clock_rate
        )
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp: RtcpEndpoint | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # loop.time by default; tests inject a fake clock here
        self._time: Callable[[], float] = time_source or _no_loop_time
        self._time_injected = time_source is not None
        self.rx_ssrc: int | None = None
        self.rx: ReceiverStats | None = None
        self._lost_reported = 0
        self._dtmf = DtmfReceiver(clock_rate)
        self._inband: InbandDtmfDetector | None = None  # see detect_inband_dtmf
        self.last_rx_s = 0.0
        self.held = False  # see set_held
        self._timed_out = False
        self._next_rtcp_s = 0.0
        self._closed = False
        self.packets_received = 0
        self.packets_sent = 0
        self.last_rtt_s: float | None = None
        # the far end's last SR: middle 32 bits and when it arrived (for LSR/DLSR, RFC 3550 6.4.1)
        self._peer_lsr = 0
        self._peer_sr_at = 0.0
        # while another process carries this leg (`detach`): our duplicates of its sockets
        self._parked: list[socket.socket] = []
        self._local_address: Address | None = None
        # `close` asked while away: the handle that closes it anyway if it never comes home
        self._closing: asyncio.TimerHandle | None = None
        # SRTP (see use_srtp): protect what we send, unprotect what we receive
        self.srtp_tx: SrtpContext | None = None
        self.srtp_rx: SrtpContext | None = None

    def use_srtp(self, contexts: tuple[SrtpContext, SrtpContext] | None) -> None:
        """Encrypt this leg with (our sending context, the peer's), or back to plain RTP."""
        self.srtp_tx, self.srtp_rx = contexts if contexts is not None else (None, None)

    # -- asyncio.DatagramProtocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector and uvloop UDP transports do not all subclass DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._loop = asyncio.get_running_loop()
        if not self._time_injected:
            self._time = self._loop.time
        now = self._time()
        self.last_rx_s = now
        self._next_rtcp_s = now + _rtcp_interval_s()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # the hot path: ~one struct unpack, the A.1/A.8 update, then the relay hook
        srtp = self.srtp_rx
        if srtp is not None:
            # RTCP multiplexed on the RTP port (RFC 5761 4) is SRTCP there
            is_rtcp = len(data) > 1 and 72 <= data[1] & 0x7F <= 76
            plain = srtp.unprotect_rtcp(data) if is_rtcp else srtp.unprotect_rtp(data)
            if plain is None:
                self._stats.packets_srtp_rejected += 1
                return
            data = plain
        if addr != self.remote_addr and not self._accept_source(addr):
            return
        if len(data) < FIXED_HEADER_LEN or data[0] & 0xC0 != 0x80:
            self._stats.packets_malformed += 1
            return
        now = self._time()
        if 72 <= data[1] & 0x7F <= 76:
            # RTCP on the RTP port (RFC 5761 4: SR..APP in the payload type's place; no audio
            # payload type lives there): read as RTCP, never counted or relayed as audio
            self.rtcp_received(data, now)
            return
        self.last_rx_s = now
        self.packets_received += 1
        self._stats.packets_received += 1
        seq, ts, ssrc = _unpack_seq_ts_ssrc(data, 2)
        rx = self.rx
        if ssrc != self.rx_ssrc or rx is None:
            rx = self._new_source(seq, ssrc)
        if data[1] & 0x7F == self.dtmf_payload_type:
            # RFC 4733 packets of one event share a timestamp: keep them out of the jitter
            rx.update_sequence(seq)
            self._on_dtmf(data, ts, now)
        else:
            rx.update(seq, ts, now)
            if self._inband is not None:
                self._on_audio_tones(data)
        handler = self.on_rtp
        if handler is not None:
            handler(data, seq, ts, ssrc, now)

    def _accept_source(self, addr: Address) -> bool:
        """A packet from an address other than the remote one: latch, accept or drop."""
        if not self.symmetric:
            return True
        if self._latched:
            self._stats.packets_foreign += 1
            return False
        self.remote_addr = addr
        self._latched = True
        self._emit(RemoteLatched(addr))
        return True

    def _new_source(self, seq: int, ssrc: int) -> ReceiverStats:
        self._account_loss()
        rx = self.rx = ReceiverStats(seq, self.clock_rate)
        self._lost_reported = 0
        self.rx_ssrc = ssrc
        return rx

    def _emit(self, event: MediaEvent) -> None:
        # the owner's callback runs inside datagram_received: its bug must not reach the loop
        try:
            self.on_event(event)
        except Exception:
            _log.exception("media event handler failed for %r", event)
            self._stats.ticker_errors += 1

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the far end may come back; inactivity decides
        _log.debug("RTP socket error on port %d: %s", self.port, exc)

    # -- DTMF --------------------------------------------------------------------------------

    def _on_dtmf(self, data: bytes, ts: int, now: float) -> None:
        offset = payload_offset(data)
        if offset < 0:
            self._stats.packets_malformed += 1
            return
        try:
            events = self._dtmf.receive(ts, data[offset:], now)
        except DtmfError:
            self._stats.packets_malformed += 1
            return
        for event in events:
            if isinstance(event, DtmfEnded):
                self._digit(event)

    def detect_inband_dtmf(self, on: bool) -> None:
        """Look for DTMF tones in the audio received (PCMU/PCMA), for a far end that sends its
        digits in-band rather than as RFC 4733 events. Each packet then costs a G.711 decode and
        a Goertzel pass (``benchmarks/bench_inband_dtmf.py``), so it is per leg and off unless
        asked for; turning it off drops the detector's state."""
        if not on:
            self._inband = None
        elif self._inband is None:
            self._inband = InbandDtmfDetector()

    @property
    def detecting_inband_dtmf(self) -> bool:
        return self._inband is not None

    def _on_audio_tones(self, data: bytes) -> None:
        detector = self._inband
        assert detector is not None
        table = _PCM_DECODE.get(self.payload_types.get(data[1] & 0x7F, ""))
        offset = payload_offset(data)
        if table is None or offset < 0:
            return  # not G.711 audio (or a broken header, counted by the relay's parser)
        for digit in detector.feed(table[np.frombuffer(data, np.uint8, offset=offset)]):
            self._stats.dtmf_digits["inband"] += 1
            self._emit(DtmfReceived(digit, _INBAND_MIN_MS, "inband"))

    def _digit(self, event: DtmfEnded) -> None:
        self._stats.dtmf_digits["rfc4733"] += 1
        self._emit(DtmfReceived(event.digit, event.duration * 1000 // self.clock_rate, "rfc4733"))

    # -- sending -----------------------------------------------------------------------------

    def send(self, packet: bytes | bytearray) -> None:
        """Send one already stamped packet to the remote address (dropped until we know it)."""
        remote = self.remote_addr
        transport = self.transport
        if remote is None or transport is None or self._closed:
            return
        srtp = self.srtp_tx
        transport.sendto(packet if srtp is None else srtp.protect_rtp(bytes(packet)), remote)
        self.packets_sent += 1
        self._stats.packets_sent += 1

    def send_payload(
        self, payload_type: int, payload: bytes, now: float, samples: int = 160
    ) -> None:
        self.send(self.stream.send(payload_type, payload, now, samples))

    # -- periodic ----------------------------------------------------------------------------

    def watch(self, now: float) -> None:
        """Called by the shared clock every 100 ms (see `MediaClock`)."""
        for event in self._dtmf.handle_timer(now):
            if isinstance(event, DtmfEnded):
                self._digit(event)
        timeout = None if self.held else self.inactivity_timeout_s
        idle = now - self.last_rx_s
        if timeout is not None and idle < timeout:
            self._timed_out = False  # traffic resumed: a new silence is reported again
        elif timeout is not None and not self._timed_out and idle >= timeout:
            self._timed_out = True
            self._stats.timeouts += 1
            self._emit(
                MediaTimedOut(
                    f"no RTP received on port {self.port} for {idle:.1f} s "
                    f"(media timeout {timeout:g} s)",
                    idle,
                )
            )
        if now >= self._next_rtcp_s:
            self._next_rtcp_s = now + _rtcp_interval_s()
            self.send_rtcp(now)

    def set_held(self, held: bool, now: float) -> None:
        """The peer put this leg on hold (it may stop sending: no inactivity timeout meanwhile)
        or took it off hold (the timeout counts again from ``now``)."""
        if self.held and not held:
            self.last_rx_s = max(self.last_rx_s, now)
        self.held = held

    def _account_loss(self) -> None:
        rx = self.rx
        if rx is None:
            return
        lost = rx.lost
        if lost > self._lost_reported:
            self._stats.packets_lost += lost - self._lost_reported
            self._lost_reported = lost

    def rtcp_compound(self, now: float, wall_s: float, bye: bool = False) -> bytes:
        """SR (if we sent anything) or RR, SDES CNAME, optional BYE (RFC 3550 6.1)."""
        blocks: tuple[ReportBlock, ...] = ()
        rx = self.rx
        if rx is not None and self.rx_ssrc is not None:
            self._account_loss()
            r = rx.report()
            self._stats.jitter.observe(r.jitter_s)
            dlsr = dlsr_units(now - self._peer_sr_at) if self._peer_lsr else 0
            blocks = (
                report_block(
                    self.rx_ssrc,
                    r.fraction_lost,
                    r.cumulative_lost,
                    r.extended_highest_sequence,
                    r.jitter,
                    self._peer_lsr,
                    dlsr,
                ),
            )
        stream = self.stream
        report: SenderReport | ReceiverReport
        if stream.packets_sent:
            report = SenderReport(
                stream.ssrc,
                ntp_timestamp(wall_s),
                stream.last_timestamp,
                stream.packets_sent & 0xFFFFFFFF,
                stream.octets_sent & 0xFFFFFFFF,
                blocks,
            )
        else:
            report = ReceiverReport(stream.ssrc, blocks)
        return build_compound(report, self.cname, Bye((stream.ssrc,)) if bye else None)

    def send_rtcp(self, now: float, bye: bool = False) -> bool:
        """Send a compound report now; False if there is nowhere to send it yet."""
        if self.rtcp is None or self.remote_addr is None:
            return False
        self.rtcp.send(self.rtcp_compound(now, time.time(), bye))
        return True

    def rtcp_received(self, data: bytes, now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except RtcpError:
            self._stats.packets_malformed += 1
            return
        arrival = ntp_middle32(ntp_timestamp(time.time()))
        rtt = None
        fraction = None
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._peer_lsr = ntp_middle32(packet.ntp_timestamp)
                self._peer_sr_at = now
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == self.stream.ssrc:
                        fraction = block.fraction_lost
                        rtt = round_trip_s(arrival, block.lsr, block.dlsr)
        if rtt is not None:
            self.last_rtt_s = rtt
        self._emit(RtcpReceived(rtt, fraction))

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed or self._closing is not None

    def close(self) -> None:
        """Idempotent: send RTCP BYE, close both sockets, release the port pair.

        A leg another process carries (`detach`) is closed when it comes home (`reattach`, which
        the other process's hand-back triggers), so the BYE carries that process's final counts
        and goes out before the port is given back; after `HOME_WAIT_S` without it, it is
        closed without a BYE."""
        if self._closed or self._closing is not None:
            return
        if self._parked and self._loop is not None:
            self.on_rtp = None
            self._closing = self._loop.call_later(HOME_WAIT_S, self._close_now)
            return
        self._close_now()

    def _close_now(self) -> None:
        if self._closed:
            return
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        try:
            reported = False
            if self._loop is not None and self.transport is not None:
                with contextlib.suppress(OSError):
                    # the BYE compound carries (and observes) the final loss and jitter
                    reported = self.send_rtcp(self._time(), bye=True)
            self._account_loss()
            if self.rx is not None and not reported:
                self._stats.jitter.observe(self.rx.jitter / self.clock_rate)
        finally:
            self._closed = True
            self.on_rtp = None
            self.remote_addr = None  # a bridge still holding us sends nothing more
            if self._clock is not None:
                self._clock.remove_watcher(self)
            if self.transport is not None:
                self.transport.close()
            if self.rtcp is not None and self.rtcp.transport is not None:
                self.rtcp.transport.close()
            for sock in self._parked:
                sock.close()
            self._parked = []
            if self._allocator is not None:
                self._allocator.release(self.port)
                self._stats.sessions_active -= 1

    # -- handing the leg to another process -----------------------------------------------------

    @property
    def detached(self) -> bool:
        """True while another process carries this leg (between `detach` and `reattach`)."""
        return bool(self._parked)

    def detach(self, *, park: bool = True) -> tuple[EndpointState, list[socket.socket]]:
        """Stop carrying this leg here: its state, and duplicates of its RTP and RTCP sockets
        for the process that takes over (send them with SCM_RIGHTS, then close them).

        This process keeps its own duplicates (the port pair stays ours: `close` still gives it
        back) and reads nothing more until `reattach`; meanwhile sending is a no-op. With
        ``park=False`` (a process handing back a leg it adopted) it keeps nothing. An SRTP
        leg's contexts go with it (``EndpointState.srtp``)."""
        if self.transport is None or self.rtcp is None or self.rtcp.transport is None:
            raise RuntimeError("only a leg carried by this process can be detached")
        srtp = None
        if self.srtp_tx is not None and self.srtp_rx is not None:
            srtp = (self.srtp_tx.export(), self.srtp_rx.export())
        self.local_address  # noqa: B018 (cached now: SDP answers need it while it is away)
        now = self._time()
        self._account_loss()
        state = EndpointState(
            port=self.port,
            remote_addr=self.remote_addr,
            rtcp_remote=self.rtcp.remote_addr,
            latched=self._latched,
            symmetric=self.symmetric,
            payload_types=dict(self.payload_types),
            dtmf_payload_type=self.dtmf_payload_type,
            inactivity_timeout_s=self.inactivity_timeout_s,
            held=self.held,
            timed_out=self._timed_out,
            idle_s=now - self.last_rx_s,
            rtcp_due_in_s=self._next_rtcp_s - now,
            stream=self.stream,
            rx=self.rx,
            rx_ssrc=self.rx_ssrc,
            lost_reported=self._lost_reported,
            dtmf=self._dtmf,
            packets_received=self.packets_received,
            packets_sent=self.packets_sent,
            last_rtt_s=self.last_rtt_s,
            peer_lsr=self._peer_lsr,
            peer_sr_age_s=now - self._peer_sr_at,
            cname=self.cname,
            clock_rate=self.clock_rate,
            srtp=srtp,
        )
        handed = [_dup_socket(self.transport), _dup_socket(self.rtcp.transport)]
        if park:
            self._parked = [_dup_socket(self.transport), _dup_socket(self.rtcp.transport)]
        self.on_rtp = None
        if self._clock is not None:
            self._clock.remove_watcher(self)
        self.transport.close()
        self.rtcp.transport.close()
        self.transport = self.rtcp.transport = None
        return state, handed

    def _restore(self, state: EndpointState, now: float) -> None:
        self.remote_addr = state.remote_addr
        self._latched = state.latched
        self.symmetric = state.symmetric
        self.payload_types = state.payload_types
        self.dtmf_payload_type = state.dtmf_payload_type
        self.inactivity_timeout_s = state.inactivity_timeout_s
        self.held = state.held
        self._timed_out = state.timed_out
        self.last_rx_s = now - state.idle_s
        self._next_rtcp_s = now + state.rtcp_due_in_s
        self.stream = state.stream
        self.rx = state.rx
        self.rx_ssrc = state.rx_ssrc
        self._lost_reported = state.lost_reported
        self._dtmf = state.dtmf
        self.packets_received = state.packets_received
        self.packets_sent = state.packets_sent
        self.last_rtt_s = state.last_rtt_s
        self._peer_lsr = state.peer_lsr
        self._peer_sr_at = now - state.peer_sr_age_s
        if self.rtcp is not None:
            self.rtcp.remote_addr = state.rtcp_remote
        if state.srtp is not None:
            self.use_srtp((SrtpContext.restore(state.srtp[0]), SrtpContext.restore(state.srtp[1])))

    async def _connect(self, rtp_sock: socket.socket, rtcp_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        rtcp = self.rtcp or RtcpEndpoint(self)
        self.rtcp = rtcp
        await loop.create_datagram_endpoint(functools.partial(_same, self), sock=rtp_sock)
        await loop.create_datagram_endpoint(functools.partial(_same, rtcp), sock=rtcp_sock)

    async def reattach(self, state: EndpointState | None) -> None:
        """Carry the leg here again, from the state the other process handed back (None: it
        could not, e.g. it died; this process's own state then resumes, a new source marked).
        A leg closed meanwhile stays closed."""
        parked, self._parked = self._parked, []
        if self._closed or len(parked) != 2:
            for sock in parked:
                sock.close()
            return
        await self._connect(parked[0], parked[1])
        if self._closed:  # the wait for it ran out during the connect
            for transport in (self.transport, self.rtcp.transport if self.rtcp else None):
                if transport is not None:
                    transport.close()
            return
        now = self._time()
        if state is not None:
            self._restore(state, now)
        if self._closing is not None:  # hung up while away: the BYE, then close
            self._close_now()
            return
        self.stream.begin_source(now)
        if self._clock is not None:
            self._clock.add_watcher(self)

    @classmethod
    async def adopt(
        cls,
        state: EndpointState,
        sockets: list[socket.socket],
        *,
        stats: MediaStats,
        clock: MediaClock | None,
        on_event: Callable[[MediaEvent], None] = _ignore,
    ) -> RtpEndpoint:
        """The other side of `detach`: carry a leg handed over by another process on its
        ``sockets`` (RTP, RTCP). It owns no port (the other process does): ``detach`` it again
        to hand it back, and close the sockets that returns."""
        endpoint = cls(
            state.port,
            allocator=None,
            stats=stats,
            clock=clock,
            symmetric=state.symmetric,
            on_event=on_event,
            cname=state.cname,
            clock_rate=state.clock_rate,
        )
        await endpoint._connect(sockets[0], sockets[1])
        endpoint._restore(state, endpoint._time())
        if clock is not None:
            clock.add_watcher(endpoint)
        return endpoint

    async def __aenter__(self) -> RtpEndpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def local_address(self) -> Address:
        """(host, port) of the RTP socket (also while another process carries the leg)."""
        if self._local_address is None:
            assert self.transport is not None
            host, port = self.transport.get_extra_info("sockname")[:2]
            self._local_address = str(host), int(port)
        return self._local_address


class RtcpEndpoint(asyncio.DatagramProtocol):
    """The RTCP socket (RTP port + 1); reports go to the remote RTP port + 1 (RFC 3550 11)."""

    def __init__(self, owner: RtpEndpoint) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.remote_addr: Address | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector and uvloop UDP transports do not all subclass DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        srtp = self.owner.srtp_rx
        if srtp is not None:
            plain = srtp.unprotect_rtcp(data)
            if plain is None:
                self.owner._stats.packets_srtp_rejected += 1
                return
            data = plain
        if self.owner.symmetric:
            self.remote_addr = addr  # latch RTCP too
        loop = self.owner._loop
        self.owner.rtcp_received(data, loop.time() if loop is not None else 0.0)

    def error_received(self, exc: Exception) -> None:
        _log.debug("RTCP socket error: %s", exc)

    def send(self, data: bytes) -> None:
        remote = self.remote_addr
        if remote is None and self.owner.remote_addr is not None:
            host, port = self.owner.remote_addr
            remote = (host, port + 1)
        if remote is not None and self.transport is not None:
            srtp = self.owner.srtp_tx
            self.transport.sendto(data if srtp is None else srtp.protect_rtcp(data), remote)


def _dup_socket(transport: asyncio.BaseTransport) -> socket.socket:
    """A socket object on a duplicate of the transport's descriptor (uvloop's transports hand
    out a pseudo-socket that cannot be sent; the duplicate is a real one)."""
    sock = transport.get_extra_info("socket")
    dup = socket.socket(fileno=os.dup(sock.fileno()))
    dup.setblocking(False)
    return dup


def _same(protocol: asyncio.DatagramProtocol) -> asyncio.DatagramProtocol:
    return protocol


def _bound_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port); OSError (closed) if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def open_endpoint(
    allocator: PortAllocator,
    stats: MediaStats,
    *,
    host: str = "127.0.0.1",
    clock: MediaClock | None = None,
    **options: Any,
) -> RtpEndpoint:
    """Bind an RTP/RTCP pair from ``allocator`` and return its endpoint (``async with`` it).

    Ports taken by other processes are skipped; `PortsExhaustedError` if none could be bound.
    Keyword ``options`` go to `RtpEndpoint` (remote, symmetric, inactivity_timeout_s, ...).
    """
    loop = asyncio.get_running_loop()
    for _ in range(min(MAX_BIND_ATTEMPTS, max(allocator.capacity, 1))):
        port = allocator.allocate()
        endpoint = RtpEndpoint(port, allocator=allocator, stats=stats, clock=clock, **options)
        rtcp = RtcpEndpoint(endpoint)
        rtp_transport: asyncio.BaseTransport | None = None
        try:
            # Bound here and handed over as sock=: the loop then skips its address resolution
            # (a quarter of the cost of opening a pair, which every call does twice).
            rtp_transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_same, endpoint), sock=_bound_udp(host, port)
            )
            await loop.create_datagram_endpoint(
                functools.partial(_same, rtcp), sock=_bound_udp(host, port + 1)
            )
        except BaseException as exc:
            # every failure path gives the pair back (cancellation included)
            if rtp_transport is not None:
                rtp_transport.close()
            allocator.release(port)
            if isinstance(exc, OSError):
                _log.debug("RTP port pair %d/%d not bindable: %s", port, port + 1, exc)
                continue
            raise
        endpoint.rtcp = rtcp
        stats.sessions_active += 1
        if clock is not None:
            clock.add_watcher(endpoint)
        return endpoint
    raise PortsExhaustedError(
        f"no bindable RTP port pair in {allocator.first_port}-{allocator.last_port}"
    )
