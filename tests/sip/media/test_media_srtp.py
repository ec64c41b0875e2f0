"""SRTP legs over real UDP on 127.0.0.1: a bridge between an SRTP leg and a plain one, forged
packets dropped before latching, SRTCP both ways, and an SRTP leg handed to another carrier (as
a media worker adopts it) and back on the same keys, replay window and ROC."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
from media_helpers import dominant_hz, open_phone, tone_frames

from sip.media import Bridge, MediaStats, PortAllocator, open_endpoint
from sip.media.endpoint import RtpEndpoint
from sip.rtp.g711 import decode_pcmu
from sip.rtp.packet import RtpPacket, parse_rtp
from sip.rtp.rtcp import ReceiverReport, build_compound, parse_rtcp
from sip.rtp.srtp import SrtpContext, SrtpProfile
from sip.sdes import new_crypto

FRAMES = 25
_80 = SrtpProfile.AES_CM_128_HMAC_SHA1_80


async def test_srtp_leg_bridged_to_plain_leg(allocator: PortAllocator, stats: MediaStats) -> None:
    phone_a, phone_b, intruder = await open_phone(), await open_phone(), await open_phone()
    ours, theirs = new_crypto(), new_crypto()  # our key (the leg sends with it), the phone's
    phone_tx, phone_rx = theirs.context(), ours.context()
    async with (
        await open_endpoint(allocator, stats) as caller,  # symmetric: latches the first source
        await open_endpoint(allocator, stats, remote=phone_b.address) as agent,
    ):
        caller.use_srtp((ours.context(), theirs.context()))
        loop = asyncio.get_running_loop()
        bridge = Bridge(caller, agent, stats=stats)
        bridge.start(loop.time())
        # an intruder's plain packet and a forged one (wrong key) arrive first: neither latches
        intruder.send(RtpPacket(0, 1, 0, 0xE, b"\xff" * 160).serialize(), caller.local_address)
        forged = SrtpContext(_80, bytes(16), bytes(14)).protect_rtp(
            RtpPacket(0, 1, 0, 0xE, b"\xff" * 160).serialize()
        )
        intruder.send(forged, caller.local_address)
        a_frames, b_frames = tone_frames(440, FRAMES), tone_frames(880, FRAMES)
        for i in range(FRAMES):
            plain = RtpPacket(0, 100 + i, 160 * i, 0xA, a_frames[i]).serialize()
            phone_a.send(phone_tx.protect_rtp(plain), caller.local_address)
            phone_b.send(
                RtpPacket(0, 7 + i, 160 * i, 0xB, b_frames[i]).serialize(), agent.local_address
            )
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        assert caller.remote_addr == phone_a.address  # latched on the genuine phone only
        # RTCP: what the leg sends on its RTCP port is SRTCP; the phone's SRTCP is read
        assert caller.send_rtcp(loop.time())
        report = phone_tx.protect_rtcp(build_compound(ReceiverReport(0xA, ()), b"phone"))
        assert caller.rtcp is not None
        phone_a.send(report, (caller.local_address[0], caller.local_address[1] + 1))
        await asyncio.sleep(0.05)
        bridge.stop(loop.time())
    assert stats.packets_srtp_rejected == 2
    # the plain agent heard the caller's tone in the clear
    assert len(phone_b.received) == FRAMES
    pcm = np.frombuffer(b"".join(decode_pcmu(p.payload) for p in phone_b.received), "<i2")
    assert abs(dominant_hz(pcm) - 440) < 10
    # the SRTP phone got the agent's tone encrypted: not plain on the wire, the tone once unprotected
    rtp_in = [d for d in phone_a.raw if len(d) == 12 + 160 + 10]
    assert len(rtp_in) >= FRAMES - 1  # the agent's first may beat the caller's latching packet
    assert all(d[12:172] not in b_frames for d in rtp_in)
    clear = [phone_rx.unprotect_rtp(d) for d in rtp_in]
    pcm = np.frombuffer(b"".join(decode_pcmu(parse_rtp(c).payload) for c in clear if c), "<i2")
    assert abs(dominant_hz(pcm) - 880) < 10
    assert phone_rx.stats.auth_failures == 0
    for p in (phone_a, phone_b, intruder):
        assert p.transport is not None
        p.transport.close()


async def test_srtcp_sent_on_the_rtcp_port(allocator: PortAllocator, stats: MediaStats) -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not received.done():
                received.set_result(data)

    phone = await open_phone()
    rtcp_transport, _ = await loop.create_datagram_endpoint(
        Sink, local_addr=(phone.address[0], phone.address[1] + 1)
    )
    ours = new_crypto()
    try:
        async with await open_endpoint(allocator, stats, remote=phone.address) as leg:
            leg.use_srtp((ours.context(), new_crypto().context()))
            leg.send_payload(0, b"\xff" * 160, loop.time())
            assert leg.send_rtcp(loop.time())
            data = await asyncio.wait_for(received, 2)
    finally:
        rtcp_transport.close()
        assert phone.transport is not None
        phone.transport.close()
    plain = ours.context().unprotect_rtcp(data)
    assert plain is not None
    assert data[8:] != plain[8:]  # encrypted after the first header
    assert parse_rtcp(plain)


async def test_srtp_leg_handed_over_and_back_keeps_keys_replay_window_and_roc(
    allocator: PortAllocator, stats: MediaStats
) -> None:
    """detach -> pickle -> adopt -> detach -> reattach, as a media worker carries a leg: the
    adopter unprotects the phone's packets with the same key and refuses one replayed from
    before the handover; what each carrier sends is one SRTP stream the phone decrypts, its
    sequence crossing 65535 (the ROC moves on in the adopter and comes back)."""
    phone = await open_phone()
    ours, theirs = new_crypto(), new_crypto()
    phone_tx, phone_rx = theirs.context(), ours.context()
    frames = tone_frames(440, 12)
    loop = asyncio.get_running_loop()
    async with await open_endpoint(allocator, stats, remote=phone.address) as leg:
        leg.use_srtp((ours.context(), theirs.context()))
        leg.stream._next_seq = 65533  # three packets before our sequence wraps
        sent_by_phone = []

        async def exchange(carrier: RtpEndpoint, first: int, n: int) -> None:
            for i in range(first, first + n):
                packet = phone_tx.protect_rtp(
                    RtpPacket(0, 100 + i, 160 * i, 0xA, frames[i]).serialize()
                )
                sent_by_phone.append(packet)
                phone.send(packet, leg.local_address)
                carrier.send_payload(0, frames[i], loop.time())
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)

        await exchange(leg, 0, 4)
        state, socks = leg.detach()
        assert state.srtp is not None
        assert repr(state.srtp[0].master_key) not in repr(state.srtp[0])  # nor in a log line
        state = pickle.loads(pickle.dumps(state))  # it crosses a process boundary
        other = MediaStats()
        adopted = await RtpEndpoint.adopt(state, socks, stats=other, clock=None)
        await exchange(adopted, 4, 4)
        phone.send(sent_by_phone[2], leg.local_address)  # a replay from before the handover
        await asyncio.sleep(0.05)
        assert other.packets_received == 4
        assert other.packets_srtp_rejected == 1
        back, handed = adopted.detach(park=False)
        for sock in handed:
            sock.close()
        await leg.reattach(pickle.loads(pickle.dumps(back)))
        await exchange(leg, 8, 4)
    assert stats.packets_received == 8  # before and after, none rejected here
    assert stats.packets_srtp_rejected == 0
    rtp_in = [d for d in phone.raw if len(d) == 12 + 160 + 10]
    assert len(rtp_in) == 12
    clear = [phone_rx.unprotect_rtp(d) for d in rtp_in]
    assert all(c is not None for c in clear), phone_rx.stats
    got = [parse_rtp(c) for c in clear if c is not None]
    assert [(p.sequence - 65533) % 65536 for p in got] == list(range(12))  # across the wrap
    assert [decode_pcmu(p.payload) for p in got] == [decode_pcmu(f) for f in frames]
    assert phone.transport is not None
    phone.transport.close()
