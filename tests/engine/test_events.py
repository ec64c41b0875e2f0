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


def test_qa_events_reach_supervisors_only() -> None:
    """A QA failure names the agent and the call: the review is for supervisors, so neither
    that agent's own stream nor an integration's carries it."""
    from engine.api.auth import Principal
    from engine.api.events import _event_filter
    from engine.config import Role, parse_config

    cfg = parse_config(
        '[[queues]]\nname = "sales"\n[[agents]]\nid = "1001"\npassword = "alice-secret-1001"\n'
        "queues = { sales = 0 }\n",
        "t.toml",
    )
    qa = Event(type="qa", at=1.0, event="failed", call_id="c1", queue="sales", agent_id="1001")
    queue_event = Event(type="queue", at=1.0, event="enter", call_id="c1", queue="sales")
    agent = _event_filter(cfg, Principal("1001", Role.AGENT, "1001"))
    integration = _event_filter(cfg, Principal("crm", Role.INTEGRATION))
    assert agent is not None
    assert integration is not None
    assert agent(queue_event)  # the agent's queue: seen
    assert not agent(qa)
    assert not integration(qa)
    assert _event_filter(cfg, Principal("lead", Role.SUPERVISOR)) is None  # everything


async def test_an_agents_subscription_is_not_asked_about_other_agents_events() -> None:
    """An agent's subscription names its agent: an agent or task event naming another agent
    never reaches its filter (one event costs a lookup, not a filter per logged-in agent),
    while the events of no agent and the other types still go through it."""
    bus = EventBus()
    asked: list[tuple[str, str | None]] = []

    def accept(e: Event) -> bool:
        asked.append((e.type, e.agent_id))
        return e.type != "agent" or e.agent_id == "1001"

    mine = bus.subscribe(accept, agent_id="1001")
    everyone = bus.subscribe()
    task = Event(type="task", at=3.0, event="offered", agent_id="1001", data={"task_id": "t"})
    created = Event(type="task", at=4.0, event="created", data={"task_id": "u"})
    queue_event = Event(type="queue", at=5.0, event="enter", call_id="c", queue="sales")
    for event in (ev(1, "1002"), ev(2, "1001"), task, created, queue_event):
        bus.publish(event)
    assert asked == [("agent", "1001"), ("task", "1001"), ("queue", None)]
    got = [json.loads(mine.queue.get_nowait() or b"")["at"] for _ in range(mine.queue.qsize())]
    assert got == [2.0, 3.0, 5.0]
    assert everyone.queue.qsize() == 5
    mine.close()
    bus.publish(ev(6, "1001"))
    assert mine.queue.qsize() == 1  # only the end marker
    assert mine.queue.get_nowait() is None
    assert bus.subscribers == 1
