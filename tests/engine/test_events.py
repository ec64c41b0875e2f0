"""EventBus: filtered fan-out, and a slow subscriber is cut off instead of growing memory."""

from __future__ import annotations

import json

from engine.runtime.events import SUBSCRIBER_QUEUE_EVENTS, Event, EventBus


def ev(n: int, agent: str = "1001") -> Event:
    return Event(type="agent", at=float(n), event="available", agent_id=agent)


async def test_fan_out_with_filters() -> None:
    bus = EventBus()
    everyone = bus.subscribe()
    only_1002 = bus.subscribe(lambda e: e.agent_id == "1002")
    bus.publish(ev(1, "1001"))
    bus.publish(ev(2, "1002"))
    got_all = [json.loads(await everyone.get() or b"") for _ in range(2)]
    assert [e["agent_id"] for e in got_all] == ["1001", "1002"]
    assert json.loads(await only_1002.get() or b"")["at"] == 2.0
    assert only_1002.queue.empty()
    only_1002.close()
    assert bus.subscribers == 1


async def test_slow_subscriber_is_cut_off_and_others_keep_going() -> None:
    bus = EventBus()
    slow = bus.subscribe()
    fast = bus.subscribe()
    for n in range(SUBSCRIBER_QUEUE_EVENTS):
        bus.publish(ev(n))
        await fast.get()
    assert not slow.overflowed
    bus.publish(ev(-1))  # one more than the slow queue holds
    await fast.get()
    assert slow.overflowed
    assert await slow.get() is None  # the end marker comes first; nothing stale is delivered
    assert bus.disconnected_slow == 1
    assert bus.subscribers == 1
    bus.publish(ev(99))
    assert json.loads(await fast.get() or b"")["at"] == 99.0
