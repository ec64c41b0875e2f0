"""Router semantics, one behaviour per test: strategies, relaxation, reservations, timers, errors."""

from __future__ import annotations

import pytest
from reference import reference_dispatch, snapshot

from routing_core import (
    AgentState,
    CapacityExceeded,
    InvalidArgument,
    InvalidTransition,
    Offer,
    QueueFull,
    QueueSpec,
    RelaxStep,
    Requirement,
    Router,
    Strategy,
    UnknownAgent,
    UnknownQueue,
    UnknownTask,
)


def make(strategy: Strategy = Strategy.LONGEST_IDLE, n: int = 3, **spec: object) -> Router:
    r = Router(n_skills=4, max_agents=8, max_tasks=16)
    r.add_queue(QueueSpec("q", strategy=strategy, **spec))  # type: ignore[arg-type]
    for i in range(n):
        r.add_agent(f"a{i}", skills={0: i + 1}, queues={"q": 0})
    return r


def offered(offers: list[Offer]) -> list[tuple[str, str]]:
    return [(o.task_id, o.agent_id) for o in offers]


def serve(r: Router, task: str, agent: str, start: float, end: float) -> None:
    r.accept(task, agent, start)
    r.complete(agent, end)


def test_longest_idle_offers_agent_idle_longest() -> None:
    r = make()
    r.login("a1", 5.0)
    r.login("a2", 1.0)
    r.login("a0", 3.0)
    r.enqueue("t", "q", 10.0)
    assert offered(r.dispatch(10.0)) == [("t", "a2")]
    assert r.agent_state("a2") == AgentState.RESERVED


def test_fewest_calls_and_least_talk_time() -> None:
    for strategy, expect in ((Strategy.FEWEST_CALLS, "a1"), (Strategy.LEAST_TALK_TIME, "a0")):
        r = make(strategy, n=2)
        r.login("a0", 0.0)
        r.enqueue("x", "q", 0.0)
        assert offered(r.dispatch(0.0)) == [("x", "a0")]
        serve(r, "x", "a0", 0.0, 1.0)  # a0: 1 call, 1 s talk
        r.login("a1", 1.0)
        r.enqueue("y", "q", 1.0)
        assert offered(r.dispatch(1.0)) == [("y", "a1")]
        serve(r, "y", "a1", 1.0, 11.0)  # a1: 1 call, 10 s talk
        r.enqueue("z", "q", 11.0)
        r.enqueue("w", "q", 11.0)
        [first, _] = r.dispatch(11.0)
        if strategy == Strategy.FEWEST_CALLS:
            assert first.agent_id == "a0"  # tie at 1 call each: lower index
        else:
            assert first.agent_id == expect


def test_most_skilled_uses_required_skills() -> None:
    r = make(Strategy.MOST_SKILLED, requirements=(Requirement(0, 1),))
    for a in ("a0", "a1", "a2"):
        r.login(a, 0.0)
    r.enqueue("t", "q", 1.0)
    assert offered(r.dispatch(1.0)) == [("t", "a2")]  # level 3 beats 2 and 1


def test_round_robin_resumes_after_last_offered() -> None:
    r = make(Strategy.ROUND_ROBIN)
    for a in ("a0", "a1", "a2"):
        r.login(a, 0.0)
    picks = []
    for i in range(4):
        r.enqueue(f"t{i}", "q", float(i))
        [o] = r.dispatch(float(i))
        picks.append(o.agent_id)
        serve(r, o.task_id, o.agent_id, float(i), float(i))
    assert picks == ["a0", "a1", "a2", "a0"]


def test_linear_always_first_member_and_penalty_tier_first() -> None:
    r = Router(n_skills=1, max_agents=4, max_tasks=4)
    r.add_queue(QueueSpec("q", strategy=Strategy.LINEAR))
    r.add_agent("low", skills={}, queues={"q": 2})
    r.add_agent("a", skills={}, queues={"q": 0})
    r.add_agent("b", skills={}, queues={"q": 0})
    for a in ("low", "b", "a"):
        r.login(a, 0.0)
    r.enqueue("t0", "q", 0.0)
    r.enqueue("t1", "q", 0.0)
    r.enqueue("t2", "q", 0.0)
    assert offered(r.dispatch(0.0)) == [("t0", "a"), ("t1", "b"), ("t2", "low")]


def test_ring_all_offers_everyone_and_accept_withdraws_the_rest() -> None:
    r = make(Strategy.RING_ALL)
    for a in ("a0", "a1", "a2"):
        r.login(a, 0.0)
    r.enqueue("t", "q", 0.0)
    assert offered(r.dispatch(0.0)) == [("t", "a0"), ("t", "a1"), ("t", "a2")]
    withdrawn = r.accept("t", "a1", 1.0)
    assert sorted(o.agent_id for o in withdrawn) == ["a0", "a2"]
    assert [r.agent_state(a) for a in ("a0", "a1", "a2")] == [
        AgentState.AVAILABLE,
        AgentState.BUSY,
        AgentState.AVAILABLE,
    ]
    with pytest.raises(InvalidTransition):
        r.accept("t", "a0", 1.0)


def test_random_strategies_are_seeded_and_deterministic() -> None:
    def run(seed: int) -> list[str]:
        r = Router(n_skills=2, max_agents=8, max_tasks=64, seed=seed)
        r.add_queue(QueueSpec("q", strategy=Strategy.RANDOM))
        r.add_queue(
            QueueSpec("w", strategy=Strategy.WEIGHTED_RANDOM, requirements=(Requirement(0),))
        )
        for i in range(6):
            r.add_agent(f"a{i}", skills={0: 1 + 40 * (i == 5)}, queues={"q": 0, "w": 0})
            r.login(f"a{i}", 0.0)
        out = []
        for i in range(30):
            r.enqueue(f"t{i}", "q" if i % 2 else "w", float(i))
            [o] = r.dispatch(float(i))
            out.append(o.agent_id)
            serve(r, o.task_id, o.agent_id, float(i), float(i))
        return out

    a, b = run(7), run(7)
    assert a == b
    assert run(8) != a
    assert len(set(a)) > 2
    weighted = a[0::2]  # weight 41 vs 2: a5 takes the large majority of the "w" tasks
    assert weighted.count("a5") >= 10


def test_relaxation_step_widens_requirements_and_sets_deadline() -> None:
    r = Router(n_skills=2, max_agents=2, max_tasks=4)
    r.add_queue(
        QueueSpec(
            "q",
            requirements=(Requirement(0, 5),),
            steps=(RelaxStep(10.0, requirements=(Requirement(0, 2),)),),
        )
    )
    r.add_agent("junior", skills={0: 2}, queues={"q": 0})
    r.login("junior", 0.0)
    r.enqueue("t", "q", 100.0)
    assert r.dispatch(105.0) == []
    assert r.next_deadline() == 110.0
    assert offered(r.dispatch(110.0)) == [("t", "junior")]


def test_penalty_bound_step_and_effective_enqueue_time() -> None:
    r = Router(n_skills=1, max_agents=2, max_tasks=4)
    r.add_queue(QueueSpec("q", steps=(RelaxStep(0.0, max_penalty=0), RelaxStep(30.0))))
    r.add_agent("far", skills={}, queues={"q": 5})
    r.login("far", 0.0)
    r.enqueue("new", "q", 100.0)
    r.enqueue("callback", "q", 100.0, enqueue_time=60.0)  # keeps its original time: waited 40 s
    assert offered(r.dispatch(100.0)) == [("callback", "far")]
    assert r.oldest_wait("q", 100.0) == 40.0


def test_narrowing_step_does_not_hide_younger_eligible_task() -> None:
    # Not monotone: after 5 s the queue asks for skill 1, which the agent lacks. The old task at the
    # bucket head is ineligible, the young one behind it is not.
    r = Router(n_skills=2, max_agents=2, max_tasks=4)
    r.add_queue(
        QueueSpec(
            "q",
            requirements=(Requirement(0),),
            steps=(RelaxStep(5.0, requirements=(Requirement(1),)),),
        )
    )
    r.add_agent("a", skills={0: 1}, queues={"q": 0})
    r.enqueue("old", "q", 0.0)
    r.enqueue("young", "q", 9.0)
    r.login("a", 9.0)
    assert offered(r.dispatch(9.0)) == [("young", "a")]


def test_priority_then_weight_then_age() -> None:
    r = Router(n_skills=1, max_agents=1, max_tasks=8)
    r.add_queue(QueueSpec("light", weight=0))
    r.add_queue(QueueSpec("heavy", weight=1))
    r.add_agent("a", skills={}, queues={"light": 0, "heavy": 0})
    r.login("a", 0.0)
    r.enqueue("old-light", "light", 1.0)
    r.enqueue("new-heavy", "heavy", 2.0)
    r.enqueue("vip", "light", 3.0, priority=5)
    order = []
    for i in range(3):
        [o] = r.dispatch(10.0 + i)
        order.append(o.task_id)
        serve(r, o.task_id, "a", 10.0 + i, 10.0 + i)
    assert order == ["vip", "new-heavy", "old-light"]


def test_preferred_agent_only_until_timeout() -> None:
    r = make(n=2)
    r.login("a0", 0.0)
    r.enqueue("t", "q", 1.0, preferred_agent="a1", preferred_timeout_s=20.0)
    assert r.dispatch(1.0) == []
    assert r.next_deadline() == 21.0
    assert offered(r.dispatch(21.0)) == [("t", "a0")]


def test_reject_excludes_agent_delays_it_and_auto_pauses() -> None:
    r = make(n=2, no_answer_delay_s=5.0, auto_pause_after=2)
    r.login("a0", 0.0)
    r.enqueue("t", "q", 1.0)
    assert offered(r.dispatch(1.0)) == [("t", "a0")]
    r.timeout("t", "a0", 2.0)
    assert r.agent_state("a0") == AgentState.AVAILABLE
    r.enqueue("u", "q", 3.0)
    assert r.dispatch(3.0) == []  # delay until 7.0
    assert r.next_deadline() == 7.0
    assert offered(r.dispatch(7.0)) == [("u", "a0")]  # t excludes a0, u does not
    r.reject("u", "a0", 8.0, reason="no_answer")
    assert r.agent_state("a0") == AgentState.NOT_READY
    assert r.not_ready_reason("a0") == "auto-paused"
    r.login("a1", 9.0)
    assert offered(r.dispatch(9.0)) == [("t", "a1")]  # older task first; voice capacity 1


def test_retry_delay_holds_the_task_after_an_unanswered_ring() -> None:
    # Asterisk's `retry`: a1 is free at once, but the caller waits retry_delay_s before it rings.
    r = make(n=2, retry_delay_s=4.0)
    r.login("a0", 0.0)
    r.login("a1", 0.5)
    r.enqueue("t", "q", 1.0)
    r.enqueue("u", "q", 1.5)
    assert offered(r.dispatch(1.5)) == [("t", "a0"), ("u", "a1")]
    r.timeout("t", "a0", 3.0)
    assert r.stats()["retrying"] == 1
    assert r.waiting("q") == 2  # still in the queue, as its caller sees it
    assert r.oldest_wait("q", 5.0) == 4.0
    assert r.dispatch(6.9) == []  # a0 is free (and excluded), but t is held until 7.0
    assert r.next_deadline() == 7.0
    r.reject("u", "a1", 7.0, reason="busy")  # every reason, as Asterisk waits after any
    assert offered(r.dispatch(7.0)) == [("t", "a1")]  # back in its place: the older task first
    assert offered(r.dispatch(11.0)) == [("u", "a0")]


def test_a_retrying_task_can_be_abandoned_or_moved() -> None:
    r = make(n=1, retry_delay_s=4.0)
    r.add_queue(QueueSpec("other"))
    r.add_agent("b", skills={0: 1}, queues={"other": 0})
    r.login("a0", 0.0)
    r.enqueue("t", "q", 0.0)
    r.enqueue("u", "q", 0.0)
    r.dispatch(0.0)
    r.reject("t", "a0", 1.0)
    assert r.abandon("t", 2.0) == []
    assert r.stats()["retrying"] == 0
    assert offered(r.dispatch(5.0)) == [("u", "a0")]  # t's timer found nothing to put back
    r.reject("u", "a0", 6.0)
    r.login("b", 6.0)
    assert r.requeue("u", "other", 6.5) == []  # moved: no wait for the old queue's retry
    assert offered(r.dispatch(6.5)) == [("u", "b")]


def test_ring_all_retries_only_once_every_ring_has_failed() -> None:
    r = make(Strategy.RING_ALL, n=2, retry_delay_s=3.0)
    r.login("a0", 0.0)
    r.login("a1", 0.0)
    r.enqueue("t", "q", 0.0)
    assert len(r.dispatch(0.0)) == 2
    r.timeout("t", "a0", 2.0)
    assert r.stats()["retrying"] == 0  # a1 still rings
    r.timeout("t", "a1", 2.0)
    assert r.stats()["retrying"] == 1
    assert r.next_deadline() == 5.0


def test_wrap_up_then_available_at_deadline() -> None:
    r = make(n=1, wrap_up_s=30.0)
    r.login("a0", 0.0)
    r.enqueue("t", "q", 0.0)
    r.enqueue("u", "q", 0.0)
    r.dispatch(0.0)
    serve(r, "t", "a0", 1.0, 10.0)
    assert r.agent_state("a0") == AgentState.WRAP_UP
    assert r.dispatch(39.0) == []
    assert r.next_deadline() == 40.0
    assert offered(r.dispatch(40.0)) == [("u", "a0")]


def test_wrap_up_until_is_known_only_while_wrapping_up() -> None:
    r = make(n=3, wrap_up_s=30.0)
    for agent in ("a0", "a1", "a2"):
        r.login(agent, 0.0)
        r.enqueue(f"t-{agent}", "q", 0.0)
    r.dispatch(0.0)
    assert r.wrap_up_until("a0") is None  # ringing
    for agent in ("a0", "a1", "a2"):
        serve(r, f"t-{agent}", agent, 1.0, 10.0)
        assert r.wrap_up_until(agent) == 40.0
    r.set_ready("a0", 12.0)  # ended early: no countdown left
    r.set_not_ready("a1", 12.0, "break")
    assert (r.wrap_up_until("a0"), r.wrap_up_until("a1")) == (None, None)
    r.dispatch(40.0)  # the timer ran out
    assert r.agent_state("a2") == AgentState.AVAILABLE
    assert r.wrap_up_until("a2") is None
    with pytest.raises(UnknownAgent):
        r.wrap_up_until("nobody")


def test_wrap_up_ends_are_reported_once_with_the_state_they_reach() -> None:
    r = make(n=2, wrap_up_s=30.0)
    for agent in ("a0", "a1"):
        r.login(agent, 0.0)
        r.enqueue(f"t-{agent}", "q", 0.0)
    r.dispatch(0.0)
    serve(r, "t-a0", "a0", 1.0, 10.0)
    r.set_not_ready("a1", 5.0, "lunch")  # asked during the call: applies when wrap-up ends
    serve(r, "t-a1", "a1", 1.0, 10.0)
    assert r.take_wrap_up_ends() == []
    r.set_ready("a0", 20.0)  # the agent ends its own wrap-up: not a timer end
    r.dispatch(41.0)
    assert r.take_wrap_up_ends() == [("a1", AgentState.NOT_READY)]
    assert r.not_ready_reason("a1") == "lunch"
    assert r.take_wrap_up_ends() == []  # drained


def test_capacity_is_per_channel_and_across_queues() -> None:
    r = Router(n_skills=1, max_agents=2, max_tasks=16)
    r.add_queue(QueueSpec("chat-a"))
    r.add_queue(QueueSpec("chat-b"))
    r.add_agent("a", skills={}, queues={"chat-a": 0, "chat-b": 0}, capacity={0: 1, 1: 2})
    r.login("a", 0.0)
    for i in range(3):
        r.enqueue(f"c{i}", "chat-a" if i % 2 else "chat-b", float(i), channel=1)
    r.enqueue("v", "chat-a", 5.0, channel=0)
    assert offered(r.dispatch(5.0)) == [("c0", "a"), ("c1", "a"), ("v", "a")]
    r.accept("c0", "a", 6.0)
    assert r.agent_state("a") == AgentState.RESERVED
    assert r.dispatch(6.0) == []  # chat 2/2, voice 1/1
    r.complete("a", 7.0, task_id="c0")
    assert offered(r.dispatch(7.0)) == [("c2", "a")]


def test_abandon_frees_reserved_agent_and_returns_withdrawn_offers() -> None:
    r = make(n=1)
    r.login("a0", 0.0)
    r.enqueue("t", "q", 0.0)
    r.dispatch(0.0)
    assert offered(r.abandon("t", 1.0)) == [("t", "a0")]
    assert r.agent_state("a0") == AgentState.AVAILABLE
    assert r.waiting() == 0
    with pytest.raises(UnknownTask):
        r.abandon("t", 1.0)


def test_requeue_keeps_effective_time_in_new_queue() -> None:
    r = make(n=1)
    r.add_queue(QueueSpec("overflow"))
    r.enqueue("t", "q", 10.0)
    r.requeue("t", "overflow", 50.0)
    assert (r.waiting("q"), r.waiting("overflow")) == (0, 1)
    assert r.oldest_wait("overflow", 50.0) == 40.0


def test_errors_name_the_condition() -> None:
    r = make(n=1, max_length=1)
    with pytest.raises(UnknownQueue):
        r.enqueue("t", "nope", 0.0)
    with pytest.raises(UnknownAgent):
        r.login("nobody", 0.0)
    r.enqueue("t", "q", 0.0)
    with pytest.raises(QueueFull):
        r.enqueue("u", "q", 0.0)
    with pytest.raises(InvalidArgument):
        r.enqueue("t", "q", 0.0)
    with pytest.raises(InvalidTransition):
        r.accept("t", "a0", 0.0)
    with pytest.raises(InvalidTransition):
        r.complete("a0", 0.0)
    with pytest.raises(InvalidArgument):
        r.add_agent("bad", skills={9: 1}, queues={})
    small = Router(n_skills=1, max_agents=1, max_tasks=1)
    small.add_queue(QueueSpec("q"))
    small.add_agent("a", skills={}, queues={"q": 0})
    with pytest.raises(CapacityExceeded):
        small.add_agent("b", skills={}, queues={})
    assert small.free_task_slots == 1
    small.enqueue("t", "q", 0.0)
    assert small.free_task_slots == 0
    with pytest.raises(CapacityExceeded):
        small.enqueue("u", "q", 0.0)
    small.abandon("t", 1.0)
    assert small.free_task_slots == 1


def test_logout_refused_while_busy_and_stats_count_states() -> None:
    r = make(n=2)
    r.login("a0", 0.0)
    r.enqueue("t", "q", 0.0)
    r.dispatch(0.0)
    r.accept("t", "a0", 0.0)
    with pytest.raises(InvalidTransition):
        r.logout("a0", 1.0)
    r.set_not_ready("a0", 1.0, reason="lunch")  # pending until the call ends
    assert r.agent_state("a0") == AgentState.BUSY
    r.complete("a0", 2.0)
    assert r.agent_state("a0") == AgentState.NOT_READY
    assert r.not_ready_reason("a0") == "lunch"
    stats = r.stats()
    assert stats["NOT_READY"] == 1
    assert stats["LOGGED_OUT"] == 1
    assert stats["waiting"] == 0


def test_warmup_readies_every_kernel_and_leaves_the_router_as_it_was() -> None:
    from routing_core import _jit

    r = make()
    r.login("a0", 0.0)
    r.enqueue("t0", "q", 0.0)
    compiled, loaded = r.warmup()
    if _jit._config.DISABLE_JIT:
        assert (compiled, loaded) == (0, 0)
    else:
        # the dispatch kernels' machine code was compiled here or loaded from numba's cache
        assert compiled + loaded >= 2
    # the throwaway router's agent and task never reach this one: t0 still waits for a0
    assert offered(r.dispatch(0.0)) == [("t0", "a0")]


def test_arrays_grow_and_the_kernel_sees_the_new_ones() -> None:
    # Start every growable table tiny: queues, requirement sets, buckets, exclusions per task.
    r = Router(n_skills=40, max_agents=8, max_tasks=200, max_queues=1)
    for q in range(3):
        r.add_queue(QueueSpec(f"q{q}", steps=(RelaxStep(1.0), RelaxStep(2.0), RelaxStep(3.0))))
    for a in range(7):
        r.add_agent(f"a{a}", skills=dict.fromkeys(range(40), 1), queues={"q0": 0, "q1": 0, "q2": 0})
        r.login(f"a{a}", 0.0)
    n = 0
    for q in range(3):
        for prio in range(30):  # 90 buckets > 64
            n += 1
            r.enqueue(f"t{n}", f"q{q}", 0.0, priority=prio, requirements=(Requirement(prio),))
    for a in range(6):  # 6 exclusions > 4 slots
        offers = r.dispatch(1.0 + a)
        top = [o for o in offers if o.task_id == "t90"]
        assert top, offers
        r.reject("t90", top[0].agent_id, 1.0 + a)
        for o in offers:
            if o.task_id != "t90":
                r.abandon(o.task_id, 1.0 + a)
    r._apply_timers(10.0)
    expected = reference_dispatch(snapshot(r), 10.0)
    offers = r.dispatch(10.0)
    assert [(r._task_index[o.task_id], r._agent_index[o.agent_id]) for o in offers] == expected
    assert (offers[0].task_id, offers[0].agent_id) == ("t90", "a6")  # a6 never rejected t90


def test_waiting_and_oldest_wait_per_channel_and_max_length_per_channel() -> None:
    """A queue's figures split by channel (a chat waiting is not a caller waiting), and
    max_length bounds each channel apart: chats never push a caller into overflow."""
    r = Router(n_skills=1, max_agents=2, max_tasks=16)
    r.add_queue(QueueSpec("q", max_length=2))
    r.enqueue("c1", "q", 1.0, channel=1)
    r.enqueue("c2", "q", 2.0, channel=1)
    with pytest.raises(QueueFull):
        r.enqueue("c3", "q", 3.0, channel=1)
    r.enqueue("v1", "q", 4.0, channel=0)
    r.enqueue("t1", "q", 5.0, channel=5)
    assert (r.waiting("q"), r.waiting("q", 0), r.waiting("q", 1), r.waiting("q", 5)) == (4, 1, 2, 1)
    assert r.waiting(channel=1) == 2
    assert r.oldest_wait("q", 10.0) == 9.0
    assert (r.oldest_wait("q", 10.0, 0), r.oldest_wait("q", 10.0, 5)) == (6.0, 5.0)
    assert r.task_channel("t1") == 5
    with pytest.raises(InvalidArgument):
        r.waiting("q", 6)


def test_agent_load_reports_capacity_and_load_per_channel() -> None:
    r = Router(n_skills=1, max_agents=2, max_tasks=16)
    r.add_queue(QueueSpec("q"))
    r.add_agent("a", skills={}, queues={"q": 0}, capacity={0: 1, 1: 2, 4: 1})
    r.login("a", 0.0)
    for i, ch in enumerate((1, 1, 1, 0, 5)):
        r.enqueue(f"t{i}", "q", float(i), channel=ch)
    offers = r.dispatch(10.0)
    assert sorted(o.task_id for o in offers) == ["t0", "t1", "t3"]  # 2 chats, 1 call, no ticket
    assert r.agent_load("a") == ((1, 2, 0, 0, 1, 0), (1, 2, 0, 0, 0, 0))
