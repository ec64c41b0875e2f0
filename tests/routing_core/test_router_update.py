"""Changing a live Router in place (a config reload): queues and agents keep their tasks, states and
places; the next dispatch follows the new definitions, and agrees with the naive reference."""

from __future__ import annotations

from reference import reference_dispatch, snapshot

from routing_core import AgentState, Offer, QueueSpec, RelaxStep, Requirement, Router, Strategy


def offered(offers: list[Offer]) -> list[tuple[str, str]]:
    return [(o.task_id, o.agent_id) for o in offers]


def router(**spec: object) -> Router:
    r = Router(n_skills=2, max_agents=8, max_tasks=16)
    r.add_queue(QueueSpec("q", **spec))  # type: ignore[arg-type]
    for i in range(3):
        r.add_agent(f"a{i}", skills={0: i + 1}, queues={"q": 0})
    return r


def agrees_with_reference(r: Router, now: float) -> list[Offer]:
    r._apply_timers(now)  # what dispatch does first: the reference sees the same tasks
    expected = reference_dispatch(snapshot(r), now)
    offers = r.dispatch(now)
    assert [(r._task_index[o.task_id], r._agent_index[o.agent_id]) for o in offers] == expected
    return offers


def test_strategy_change_applies_to_the_next_offer_and_waiting_tasks_keep_their_order() -> None:
    r = router(requirements=(Requirement(0, 9),))  # nobody has level 9: both tasks wait
    r.enqueue("first", "q", 1.0)
    r.enqueue("second", "q", 2.0)
    for i, idle in enumerate((5.0, 1.0, 3.0)):
        r.login(f"a{i}", idle)
    assert r.dispatch(10.0) == []
    # Reload: most skilled, and the requirement lowered so that every agent qualifies.
    r.update_queue(
        QueueSpec("q", strategy=Strategy.MOST_SKILLED, requirements=(Requirement(0, 1),)), 10.0
    )
    offers = agrees_with_reference(r, 10.0)
    # The older task first, to the most skilled (a2, level 3) rather than the longest idle (a1).
    assert offered(offers) == [("first", "a2"), ("second", "a1")]


def test_default_requirements_move_only_the_tasks_that_took_them() -> None:
    r = router(requirements=(Requirement(0, 3),))
    r.enqueue("default", "q", 1.0)
    r.enqueue("own", "q", 2.0, requirements=(Requirement(1, 1),))  # nobody has skill 1
    r.login("a0", 0.0)  # level 1
    assert r.dispatch(3.0) == []
    r.update_queue(QueueSpec("q", requirements=(Requirement(0, 1),)), 3.0)
    assert offered(agrees_with_reference(r, 3.0)) == [("default", "a0")]
    assert r.waiting("q") == 2  # "own" still waits for skill 1


def test_a_ringing_task_takes_the_new_requirements_when_it_comes_back() -> None:
    r = router(requirements=(Requirement(0, 1),))
    r.login("a0", 0.0)
    r.enqueue("t", "q", 1.0)
    assert offered(r.dispatch(1.0)) == [("t", "a0")]
    r.update_queue(QueueSpec("q", requirements=(Requirement(0, 2),)), 2.0)
    assert r.offers_of("t") == ["a0"]  # the reload left the ring alone
    r.login("a1", 2.0)  # level 2
    r.reject("t", "a0", 3.0)
    assert offered(agrees_with_reference(r, 3.0)) == [("t", "a1")]


def test_new_steps_count_from_the_tasks_enqueue_time() -> None:
    r = router(requirements=(Requirement(0, 3),))
    r.login("a0", 1.0)  # level 1: needs a step; idle for less time than a1
    r.enqueue("old", "q", 0.0)
    r.enqueue("young", "q", 8.0)
    r.login("a1", 0.0)  # level 2
    assert r.dispatch(10.0) == []
    step = RelaxStep(5.0, requirements=(Requirement(0, 1),))
    r.update_queue(QueueSpec("q", requirements=(Requirement(0, 3),), steps=(step,)), 10.0)
    # "old" waited 10 s: past the step at once; "young" (2 s) reaches it at 13.
    assert offered(agrees_with_reference(r, 10.0)) == [("old", "a1")]
    assert r.next_deadline() == 13.0
    assert r.dispatch(12.9) == []
    assert offered(agrees_with_reference(r, 13.0)) == [("young", "a0")]


def test_agent_skills_and_memberships_change_in_place() -> None:
    r = Router(n_skills=1, max_agents=4, max_tasks=8)
    r.add_queue(QueueSpec("q", requirements=(Requirement(0, 5),)))
    r.add_queue(QueueSpec("other"))
    r.add_agent("a", skills={0: 1}, queues={"q": 0})
    r.login("a", 0.0)
    r.enqueue("t", "q", 1.0)
    r.enqueue("o", "other", 2.0)
    assert r.dispatch(2.0) == []
    r.update_agent("a", skills={0: 5}, queues={"other": 0})  # skilled now, but left q
    assert offered(agrees_with_reference(r, 3.0)) == [("o", "a")]
    r.accept("o", "a", 3.0)
    r.update_agent("a", skills={0: 5}, queues={"q": 0, "other": 0})
    assert r.agent_state("a") is AgentState.BUSY  # the call goes on
    r.complete("a", 4.0)
    assert offered(agrees_with_reference(r, 20.0)) == [("t", "a")]


def test_capacity_lowered_below_the_load_takes_nothing_until_the_load_is_under_it() -> None:
    r = Router(n_skills=1, max_agents=2, max_tasks=16)
    r.add_queue(QueueSpec("chat"))
    r.add_agent("a", skills={}, queues={"chat": 0}, capacity={1: 3})
    r.login("a", 0.0)
    for i in range(4):
        r.enqueue(f"c{i}", "chat", float(i), channel=1)
    offers = r.dispatch(5.0)
    assert [o.task_id for o in offers] == ["c0", "c1", "c2"]
    for o in offers:
        r.accept(o.task_id, "a", 5.0)
    r.update_agent("a", skills={}, queues={"chat": 0}, capacity={1: 1})
    r.complete("a", 6.0, task_id="c0")
    assert r.dispatch(6.0) == []  # 2 chats left, capacity 1
    r.complete("a", 7.0, task_id="c1")
    assert r.dispatch(7.0) == []  # 1 chat left: still full
    r.complete("a", 8.0, task_id="c2")
    assert offered(agrees_with_reference(r, 8.0)) == [("c3", "a")]
    assert r.agent_load("a") == ((0, 1, 0, 0, 0, 0), (0, 1, 0, 0, 0, 0))


def test_new_skills_get_columns_that_nobody_has_yet() -> None:
    r = Router(n_skills=1, max_agents=2, max_tasks=4)
    r.add_queue(QueueSpec("q"))
    r.add_agent("a", skills={0: 1}, queues={"q": 0})
    r.login("a", 0.0)
    r.add_skills(2)
    r.enqueue("t", "q", 1.0, requirements=(Requirement(2, 1),))
    assert r.dispatch(1.0) == []
    r.update_agent("a", skills={0: 1, 2: 4}, queues={"q": 0})
    assert offered(agrees_with_reference(r, 2.0)) == [("t", "a")]


def test_aging_lets_a_long_wait_overtake_a_higher_priority() -> None:
    # One point per 10 s of waiting.
    r = router(requirements=(Requirement(0, 1),), priority_aging_per_min=6.0)
    r.enqueue("old", "q", 0.0, priority=0)
    r.enqueue("vip", "q", 25.0, priority=2)
    assert r.next_deadline() == 10.0  # old's first point
    r.login("a0", 0.0)
    # At 26 s: old has 0 + 2 points, vip 2 + 0: equal priority, so the older goes first.
    assert offered(agrees_with_reference(r, 26.0)) == [("old", "a0")]


def test_before_its_points_a_lower_priority_waits_behind_the_vip() -> None:
    r = router(requirements=(Requirement(0, 1),), priority_aging_per_min=6.0)
    r.enqueue("old", "q", 0.0, priority=0)
    r.enqueue("vip", "q", 15.0, priority=2)
    r.login("a0", 0.0)
    assert offered(agrees_with_reference(r, 16.0)) == [("vip", "a0")]  # old has 1 point only
    r.accept("vip", "a0", 16.0)
    r.complete("a0", 17.0)
    assert offered(agrees_with_reference(r, 17.0)) == [("old", "a0")]


def test_aging_set_by_a_reload_counts_the_wait_so_far_and_requeue_keeps_the_given_priority() -> (
    None
):
    r = router(requirements=(Requirement(0, 1),))
    r.add_queue(QueueSpec("other", requirements=(Requirement(0, 1),)))
    r.enqueue("old", "q", 0.0, priority=0)
    r.enqueue("vip", "q", 50.0, priority=3)
    r.update_queue(
        QueueSpec("q", requirements=(Requirement(0, 1),), priority_aging_per_min=6.0), 60.0
    )
    assert int(r._task_prio[r._task_index["old"]]) == 6  # 60 s waited: 6 points at once
    r.requeue("old", "other", 61.0)  # a queue that does not age: back to its own priority
    assert int(r._task_prio[r._task_index["old"]]) == 0
    r.update_agent("a0", skills={0: 1}, queues={"q": 0, "other": 0})
    r.login("a0", 0.0)
    assert offered(agrees_with_reference(r, 61.0)) == [("vip", "a0")]
