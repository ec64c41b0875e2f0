"""A supervisor mixed into a bridge over real UDP sockets: who hears which tone, per mode."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
from media_helpers import CollectingSink, Phone, open_phone, tone_frames, tone_share

from sip.media import Bridge, MediaClock, MediaStats, Monitor, PortAllocator, open_endpoint
from sip.rtp.g711 import decode_pcmu
from sip.rtp.packet import RtpPacket

FRAMES = 20  # 0.4 s per phase


def heard(phone: Phone, since: int) -> np.ndarray:
    packets = phone.received[since:]
    return np.frombuffer(b"".join(decode_pcmu(p.payload) for p in packets), "<i2")


async def speak(phones: list[tuple[Phone, tuple[str, int], list[bytes], int]], start: int) -> None:
    for i in range(FRAMES):
        for phone, to, frames, ssrc in phones:
            n = start + i
            phone.send(RtpPacket(0, n, 160 * n, ssrc, frames[n]).serialize(), to)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.06)


async def test_listen_whisper_barge_and_leave(
    allocator: PortAllocator, stats: MediaStats, clock: MediaClock
) -> None:
    caller_p, agent_p, sup_p = await open_phone(), await open_phone(), await open_phone()
    tones = {440: tone_frames(440, 5 * FRAMES), 880: tone_frames(880, 5 * FRAMES)}
    tones[660] = tone_frames(660, 5 * FRAMES)
    loop = asyncio.get_running_loop()
    async with (
        await open_endpoint(allocator, stats, remote=caller_p.address) as caller,
        await open_endpoint(allocator, stats, remote=agent_p.address) as agent,
        await open_endpoint(allocator, stats, remote=sup_p.address) as sup,
    ):
        sink = CollectingSink()
        bridge = Bridge(caller, agent, stats=stats, sink=sink)
        bridge.start(loop.time())
        monitor = Monitor(bridge, sup, clock, mode="listen")
        monitor.start(loop.time())
        talkers = [
            (caller_p, caller.local_address, tones[440], 0xA),
            (agent_p, agent.local_address, tones[880], 0xB),
            (sup_p, sup.local_address, tones[660], 0xC),
        ]
        results = {}
        recorded: dict[int, list[np.ndarray]] = {}
        for phase, mode in enumerate(("listen", "whisper", "barge", "listen")):
            monitor.set_mode(mode, loop.time())
            fed = len(sink.fed)
            marks = [len(p.received) for p in (caller_p, agent_p, sup_p)]
            await speak(talkers, phase * FRAMES)
            results[phase] = [
                heard(p, m + 3)  # skip the switch-over frames
                for p, m in zip((caller_p, agent_p, sup_p), marks, strict=True)
            ]
            recorded[phase] = [
                np.frombuffer(
                    b"".join(decode_pcmu(f[2]) for f in sink.fed[fed + 6 :] if f[0] == channel),
                    "<i2",
                )
                for channel in (0, 1)
            ]
        monitor.stop(loop.time())
        await asyncio.sleep(0.01)  # frames sent before the stop may still be in the sockets
        marks = [len(p.received) for p in (caller_p, agent_p, sup_p)]
        await speak(talkers, 4 * FRAMES)
        after = [heard(p, m) for p, m in zip((caller_p, agent_p, sup_p), marks, strict=True)]
        bridge.stop(loop.time())

    def check(pcm: np.ndarray, hears: tuple[int, ...], not_hears: tuple[int, ...]) -> None:
        powers = {hz: round(tone_share(pcm, hz), 3) for hz in (440, 660, 880)}
        assert all(powers[hz] > 0.1 for hz in hears), powers
        assert all(powers[hz] < 0.01 for hz in not_hears), powers

    for phase in (0, 3):  # listen, also after coming back from barge
        caller_heard, agent_heard, sup_heard = results[phase]
        check(sup_heard, (440, 880), ())
        check(caller_heard, (880,), (660,))
        check(agent_heard, (440,), (660,))
    caller_heard, agent_heard, sup_heard = results[1]  # whisper
    check(agent_heard, (440, 660), ())
    check(caller_heard, (880,), (660,))
    check(sup_heard, (440, 880), ())
    caller_heard, agent_heard, sup_heard = results[2]  # barge
    check(caller_heard, (660, 880), ())
    check(agent_heard, (440, 660), ())
    check(sup_heard, (440, 880), (660,))
    # after stop: the plain bridge, and the supervisor hears nothing more
    check(after[0], (880,), (660,))
    check(after[1], (440,), (660,))
    assert len(after[2]) == 0
    # the recording holds what the caller hears: the supervisor only while barging, on the
    # agent's (the company's) channel; never on the caller's
    for phase in (0, 1, 3):
        check(recorded[phase][0], (440,), (660, 880))
        check(recorded[phase][1], (880,), (440, 660))
    check(recorded[2][0], (440,), (660, 880))
    check(recorded[2][1], (660, 880), (440,))
    # each phone sees one stream from us: one SSRC, and sequence numbers with no gap across the
    # switches between relay and mix (a packet relayed is never counted while the way is mixed:
    # the far end would take every mixed frame for one after a loss and conceal the "lost" one)
    for phone in (caller_p, agent_p):
        assert len({p.ssrc for p in phone.received}) == 1
        seqs = [p.sequence for p in phone.received]
        steps = [(b - a) % 65536 for a, b in itertools.pairwise(seqs)]
        assert set(steps) == {1}, steps
    for p in (caller_p, agent_p, sup_p):
        assert p.transport is not None
        p.transport.close()


async def test_bridge_end_stops_the_monitor(
    allocator: PortAllocator, stats: MediaStats, clock: MediaClock
) -> None:
    phones = [await open_phone() for _ in range(3)]
    loop = asyncio.get_running_loop()
    async with (
        await open_endpoint(allocator, stats, remote=phones[0].address) as caller,
        await open_endpoint(allocator, stats, remote=phones[1].address) as agent,
        await open_endpoint(allocator, stats, remote=phones[2].address) as sup,
    ):
        bridge = Bridge(caller, agent, stats=stats)
        bridge.start(loop.time())
        monitor = Monitor(bridge, sup, clock, mode="barge")
        monitor.start(loop.time())
        await asyncio.sleep(0.1)
        bridge.stop(loop.time())
        await asyncio.sleep(0.05)
        assert not monitor.running
        assert len(clock) == 0
    for p in phones:
        assert p.transport is not None
        p.transport.close()


async def test_a_leg_on_hold_gets_no_mix_and_the_supervisor_still_hears(
    allocator: PortAllocator, stats: MediaStats, clock: MediaClock
) -> None:
    """Barging while the agent holds the caller: the caller's leg belongs to the music on hold
    (its player sends on the same stream) and the agent's is held, so the mixer sends neither
    anything until the hold ends; the supervisor's frames go on (silence: nothing is relayed)."""
    caller_p, agent_p, sup_p = await open_phone(), await open_phone(), await open_phone()
    tones = {hz: tone_frames(hz, 3 * FRAMES) for hz in (440, 660, 880)}
    loop = asyncio.get_running_loop()
    async with (
        await open_endpoint(allocator, stats, remote=caller_p.address) as caller,
        await open_endpoint(allocator, stats, remote=agent_p.address) as agent,
        await open_endpoint(allocator, stats, remote=sup_p.address) as sup,
    ):
        bridge = Bridge(caller, agent, stats=stats)
        bridge.start(loop.time())
        monitor = Monitor(bridge, sup, clock, mode="barge")
        monitor.start(loop.time())
        talkers = [
            (caller_p, caller.local_address, tones[440], 0xA),
            (agent_p, agent.local_address, tones[880], 0xB),
            (sup_p, sup.local_address, tones[660], 0xC),
        ]
        await speak(talkers, 0)
        bridge.set_relay(loop.time(), caller_to_agent=False, agent_to_caller=False)  # agent holds
        await asyncio.sleep(0.03)
        marks = [len(p.received) for p in (caller_p, agent_p, sup_p)]
        await speak(talkers, FRAMES)
        held = [len(p.received) - m for p, m in zip((caller_p, agent_p, sup_p), marks, strict=True)]
        sup_heard = heard(sup_p, marks[2] + 3)
        bridge.set_relay(loop.time(), caller_to_agent=True, agent_to_caller=True)
        marks = [len(p.received) for p in (caller_p, agent_p, sup_p)]
        await speak(talkers, 2 * FRAMES)
        resumed = heard(caller_p, marks[0] + 3)
        monitor.stop(loop.time())
        bridge.stop(loop.time())
    assert held[:2] == [0, 0], held  # caller and agent: nothing from the mixer while held
    assert held[2] > FRAMES // 2, held  # the supervisor's stream goes on...
    assert not np.abs(sup_heard).any()  # ...with what the bridge relays: nothing
    assert tone_share(resumed, 660) > 0.1  # after the hold: the barge mix again
    assert tone_share(resumed, 880) > 0.1
    for p in (caller_p, agent_p, sup_p):
        assert p.transport is not None
        p.transport.close()
