"""Bridging two legs: relay in the datagram callback, continuity rewriting, optional transcode, tap.

How this works: `Bridge.start` installs one `_Direction` per way as the source endpoint's
``on_rtp`` hook. For every packet, still inside ``datagram_received`` (no task, no queue, no numpy):

1. the destination leg's `OutboundStream.rewrite` rewrites sequence, timestamp and SSRC so the far end
   keeps seeing one continuous stream (the marker bit flags the switch from music to the bridge);
2. if the legs negotiated different G.711 laws, the payload is transcoded with ``bytes.translate``
   and a 256-byte PCMU<->PCMA table (pure C, no linear PCM), and the payload type is mapped (also
   for telephone-events whose dynamic type differs per leg);
3. the packet goes out on the destination socket;
4. the tap hands the payload, as received, to the `RecordingSink` with its sample position:
   the 32-bit RTP timestamp is unwrapped per leg and rebased, at the leg's first packet (or a new
   SSRC), to the wall-clock offset from bridge start; after that RTP time alone decides, so
   network jitter does not move audio around. A forward jump in sequence numbers is reported as a
   ``gap(..., "loss")``.

`Bridge.pause_recording` / `resume_recording` stop and restart the tap (PCI pause, or hold) while
the relay goes on; the skipped span reaches the sink as one ``gap`` per channel.

A third party (a supervisor listening, whispering or barging) is `sip.media.monitor.Monitor`: it
sets a way's ``listener`` to receive its packets and clears ``forward`` on a way whose far end must
hear a mix instead of the relay; the tap goes on, so the recording keeps caller and agent, and
while the supervisor barges in (the caller hears them) the agent's channel gets their voice added
through the way's ``tap_mix``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from sip.media.endpoint import RtpEndpoint
from sip.media.stats import MediaStats
from sip.media.tap import CHANNEL_AGENT, CHANNEL_CALLER, RecordingSink
from sip.rtp.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW
from sip.rtp.packet import FIXED_HEADER_LEN, RtpError, parse_rtp

SAMPLE_RATE = 8000
#: A forward sequence jump below this is loss; larger ones are restarts (RFC 3550 A.1 MAX_DROPOUT).
MAX_DROPOUT = 3000

#: bytes.translate tables for the direct law conversion (G.711 both ways).
TRANSCODE_TABLES: Mapping[tuple[str, str], bytes] = MappingProxyType(
    {
        ("PCMU", "PCMA"): ULAW_TO_ALAW.tobytes(),
        ("PCMA", "PCMU"): ALAW_TO_ULAW.tobytes(),
    }
)


class _TapChannel:
    """Position bookkeeping of one channel of the recording."""

    __slots__ = ("base_ext", "base_pos", "channel", "end", "ext", "last_seq", "last_ts", "ssrc")

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.ssrc: int | None = None
        self.last_ts = 0
        self.ext = 0
        self.base_ext = 0
        self.base_pos = 0
        self.last_seq = 0
        self.end = 0  # position just after the furthest audio fed


class _Direction:
    """src leg -> dst leg: the ``on_rtp`` hook of the source endpoint."""

    __slots__ = (
        "bridge",
        "dst",
        "forward",
        "listener",
        "out_stream",
        "pt_map",
        "stats",
        "tap",
        "tap_codecs",
        "tap_mix",
    )

    def __init__(
        self,
        bridge: Bridge,
        src: RtpEndpoint,
        dst: RtpEndpoint,
        src_codec: str,
        dst_codec: str,
        channel: int,
    ) -> None:
        self.bridge = bridge
        self.dst = dst
        self.out_stream = dst.stream
        self.stats = bridge.stats
        # in payload type -> (out payload type, translate table or None)
        pt_map: dict[int, tuple[int, bytes | None]] = {}
        dst_pt_of = {name: pt for pt, name in dst.payload_types.items()}
        for pt, name in src.payload_types.items():
            if name == src_codec:
                pt_map[pt] = (dst_pt_of.get(dst_codec, pt), TRANSCODE_TABLES.get((name, dst_codec)))
        if src.dtmf_payload_type is not None and dst.dtmf_payload_type is not None:
            pt_map[src.dtmf_payload_type] = (dst.dtmf_payload_type, None)
        self.pt_map = pt_map
        self.tap_codecs = dict(src.payload_types)
        self.tap = _TapChannel(channel)
        # a `sip.media.monitor.Monitor` turns forwarding off where this way is mixed instead, and
        # listens to every packet (the tap goes on either way: the recording keeps the legs)
        self.forward = True
        self.listener: Callable[[bytes], None] | None = None
        # and, while a supervisor barges in, adds their voice to what this way records
        self.tap_mix: Callable[[bytes, str], bytes] | None = None

    def __call__(self, data: bytes, seq: int, ts: int, ssrc: int, now: float) -> None:
        # Everything here runs once per packet of every bridged call: one bytearray copy, one
        # pack_into, a sendto and a list append in the sink. Keep it flat.
        pt = data[1] & 0x7F
        mapped = self.pt_map.get(pt)
        if mapped is None:
            return  # comfort noise, video, a codec not negotiated on the other leg: not relayed
        listener = self.listener
        if listener is not None:
            listener(data)
        simple = not data[0] & 0x3F  # no CSRC, extension or padding: payload starts at byte 12
        # Not forwarding (the far end hears a mix): the out stream is not touched either, or
        # its sequence and timestamp would advance for packets never sent and the far end
        # would take every mixed frame for one after a loss.
        if self.forward:
            dst = self.dst
            buf = bytearray(data)
            self.out_stream.rewrite(buf, seq, ts, ssrc, now)
            out_pt, table = mapped
            if out_pt != pt:
                buf[1] = (buf[1] & 0x80) | out_pt
            if table is not None:
                if simple:
                    buf[FIXED_HEADER_LEN:] = buf[FIXED_HEADER_LEN:].translate(table)
                else:
                    try:
                        packet = parse_rtp(data)
                    except RtpError:
                        return
                    start = len(buf) - len(packet.payload) - packet.padding
                    buf[start : start + len(packet.payload)] = packet.payload.translate(table)
            remote = dst.remote_addr
            transport = dst.transport
            if remote is not None and transport is not None:
                srtp = dst.srtp_tx
                transport.sendto(buf if srtp is None else srtp.protect_rtp(bytes(buf)), remote)
                dst.packets_sent += 1
                self.stats.packets_sent += 1
        sink = self.bridge.sink
        if sink is None:
            return
        # -- the tap --
        codec = self.tap_codecs.get(pt)
        if codec is None:
            return
        if simple:
            payload = data[FIXED_HEADER_LEN:]
        else:
            try:
                payload = parse_rtp(data).payload
            except RtpError:
                return
        tap_mix = self.tap_mix
        if tap_mix is not None:
            payload = tap_mix(payload, codec)
        ch = self.tap
        if ssrc != ch.ssrc:
            # first packet of this leg, or the far end restarted its stream: rebase on wall time,
            # never before what we already fed
            ch.ssrc = ssrc
            ch.ext = ch.base_ext = ts
            ch.base_pos = max(round((now - self.bridge.started_at) * SAMPLE_RATE), ch.end)
            ch.last_seq = (seq - 1) & 0xFFFF
        else:
            delta = (ts - ch.last_ts) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            ch.ext += delta
        ch.last_ts = ts
        position = ch.base_pos + ch.ext - ch.base_ext
        if position < 0:
            return
        seq_step = (seq - ch.last_seq) & 0xFFFF
        if seq_step < 0x8000:
            ch.last_seq = seq
            if 1 < seq_step < MAX_DROPOUT and position > ch.end:
                sink.gap(ch.channel, ch.end, position - ch.end, "loss")
        end = position + (len(payload) >> 1 if codec == "L16" else len(payload))
        if end > ch.end:
            ch.end = end
        self.stats.packets_tapped += 1
        sink.feed(ch.channel, position, payload, codec)


class Bridge:
    """Two legs relayed to each other; caller is recording channel 0, agent channel 1."""

    __slots__ = (
        "_directions",
        "_pause_reason",
        "_paused_at",
        "_paused_sink",
        "legs",
        "sink",
        "started_at",
        "stats",
        "stopped_at",
    )

    def __init__(
        self,
        caller: RtpEndpoint,
        agent: RtpEndpoint,
        *,
        stats: MediaStats,
        caller_codec: str = "PCMU",
        agent_codec: str = "PCMU",
        sink: RecordingSink | None = None,
    ) -> None:
        self.legs = [caller, agent]
        self.stats = stats
        self.sink = sink
        self.started_at = 0.0
        self.stopped_at: float | None = None
        self._paused_at: float | None = None
        self._paused_sink: RecordingSink | None = None
        self._pause_reason = "paused"
        self._directions = [
            _Direction(self, caller, agent, caller_codec, agent_codec, CHANNEL_CALLER),
            _Direction(self, agent, caller, agent_codec, caller_codec, CHANNEL_AGENT),
        ]

    def start(self, now: float) -> None:
        """Begin relaying; both outbound streams continue with a marker (new source)."""
        self.started_at = now
        caller, agent = self.legs
        caller.stream.begin_source(now)
        agent.stream.begin_source(now)
        caller.on_rtp = self._directions[0]
        agent.on_rtp = self._directions[1]

    def set_relay(self, now: float, *, caller_to_agent: bool, agent_to_caller: bool) -> None:
        """Turn each way of the relay off (hold: the held side gets music instead, or nothing)
        or back on; a way turned back on continues its far end's stream with a marker. No-op
        once stopped. Whoever sends on a leg while its way is off owns that leg's stream."""
        if self.stopped_at is not None:
            return
        for on, leg, direction in zip(
            (caller_to_agent, agent_to_caller), self.legs, self._directions, strict=True
        ):
            if on and leg.on_rtp is not direction:
                direction.dst.stream.begin_source(now)
                direction.tap.ssrc = None  # rebase the tap: the silence is hold, not loss
                leg.on_rtp = direction
            elif not on and leg.on_rtp is direction:
                leg.on_rtp = None

    def set_way(
        self,
        way: int,
        now: float,
        *,
        forward: bool,
        listener: Callable[[bytes], None] | None,
        tap_mix: Callable[[bytes, str], bytes] | None = None,
    ) -> None:
        """For a third party (`sip.media.monitor`): way 0 is caller -> agent, 1 agent -> caller.
        ``forward=False`` stops relaying that way (the far end hears something else; the tap goes
        on); turning it back on continues the far end's stream with a marker. ``listener`` gets
        every relayable packet of that way, as received; ``tap_mix`` (payload, codec) -> payload
        of the same length changes what that way records (a barging supervisor added)."""
        direction = self._directions[way]
        direction.listener = listener
        direction.tap_mix = tap_mix
        if direction.forward != forward:
            direction.forward = forward
            direction.dst.stream.begin_source(now)

    def relaying(self, way: int) -> bool:
        """Whether way ``way`` (0 caller -> agent, 1 agent -> caller) is on: off while a side is
        on hold (`set_relay`), when the far end hears music or nothing."""
        return self.stopped_at is None and self.legs[way].on_rtp is self._directions[way]

    def position(self, now: float) -> int:
        """Sample position of ``now`` on the recording's time line."""
        return max(0, round((now - self.started_at) * SAMPLE_RATE))

    @property
    def recording_paused_for(self) -> str | None:
        """Why the tap is paused ("paused", "hold", ...), or None while it feeds the sink."""
        return None if self._paused_at is None else self._pause_reason

    def pause_recording(self, now: float, reason: str = "paused") -> None:
        """Stop feeding the sink (PCI pause, or ``reason="hold"``); audio is still relayed."""
        if self._paused_at is None and self.sink is not None:
            self._paused_sink, self.sink = self.sink, None
            self._paused_at = now
            self._pause_reason = reason

    def resume_recording(self, now: float) -> None:
        """Feed the sink again; the paused span is reported as an explicit gap on both channels."""
        if self._paused_at is None or self._paused_sink is None:
            return
        sink = self._paused_sink
        start = self.position(self._paused_at)
        samples = self.position(now) - start
        if samples > 0:
            for direction in self._directions:
                sink.gap(direction.tap.channel, start, samples, self._pause_reason)
        for direction in self._directions:
            # rebase on wall time at the next packet: the pause is not "loss"
            direction.tap.ssrc = None
            direction.tap.end = max(direction.tap.end, start + max(samples, 0))
        self.sink, self._paused_sink, self._paused_at = sink, None, None

    def stop(self, now: float) -> int:
        """Stop relaying (idempotent); close the sink at the bridged duration. Returns it."""
        if self.stopped_at is None:
            self.resume_recording(now)
            self.stopped_at = now
            for leg, direction in zip(self.legs, self._directions, strict=True):
                if leg.on_rtp is direction:
                    leg.on_rtp = None
            if self.sink is not None:
                self.sink.close(self.position(now))
        return round((self.stopped_at - self.started_at) * SAMPLE_RATE)
