"""Rule-based state machine over the Router: random operations at random times, invariants after each.

Tasks of every channel mix in the same queues (voice 0, chat 1, email 2, social 4, ticket 5, as
the engine numbers them), and agents carry per-channel capacities, some of them 0 or absent.

Invariants: no agent over capacity on any channel, and none offered a channel it has no capacity
for; the per-(queue, channel) waiting counts equal the unaccepted tasks; load equals ringing offers plus accepted tasks;
RESERVED exactly when an offer rings; every state change is in the transition table; every dispatch
equals the naive reference, offers only to eligible non-excluded agents, prefers higher priority then
older tasks for an agent, and leaves no eligible (task, free agent) pair unmatched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from reference import eligible, reference_dispatch, snapshot, unmatched_pairs

from routing_core import (
    AGENT_TRANSITIONS,
    AgentState,
    InvalidTransition,
    QueueFull,
    QueueSpec,
    RelaxStep,
    Requirement,
    Router,
    Strategy,
)
from routing_core import _kernels as K
from routing_core.states import EVENT_ALLOWED_FROM

N_SKILLS = 3
N_AGENTS = 6
QUEUES = ("q0", "q1", "q2")

# voice-only (the default), the engine's usual mixes, and capacities of 0 on some channels
CAPACITIES = (None, {0: 1, 1: 2}, {0: 1, 1: 3, 2: 5}, {1: 2}, {0: 1, 1: 0, 4: 2, 5: 3}, {5: 1})
CHANNELS = st.sampled_from([0, 0, 1, 1, 2, 4, 5])

reqs = st.lists(
    st.builds(Requirement, st.integers(0, N_SKILLS - 1), st.integers(1, 3)), max_size=2
).map(tuple)


class RouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.r: Router
        self.now = 0.0
        self.n_tasks = 0

    @initialize(
        strategies=st.lists(st.sampled_from(Strategy), min_size=3, max_size=3),
        weights=st.lists(st.integers(0, 1), min_size=3, max_size=3),
        agent_skills=st.lists(
            st.dictionaries(st.integers(0, N_SKILLS - 1), st.integers(0, 3), min_size=2),
            min_size=N_AGENTS,
            max_size=N_AGENTS,
        ),
        memberships=st.lists(
            st.dictionaries(st.sampled_from(QUEUES), st.integers(0, 2), min_size=1),
            min_size=N_AGENTS,
            max_size=N_AGENTS,
        ),
        capacities=st.lists(st.sampled_from(CAPACITIES), min_size=N_AGENTS, max_size=N_AGENTS),
        seed=st.integers(0, 5),
    )
    def setup(
        self,
        strategies: list[Strategy],
        weights: list[int],
        agent_skills: list[dict[int, int]],
        memberships: list[dict[str, int]],
        capacities: list[dict[int, int] | None],
        seed: int,
    ) -> None:
        self.r = Router(n_skills=N_SKILLS, max_agents=N_AGENTS, max_tasks=32, seed=seed)
        self.r.transition_log = []
        for i, name in enumerate(QUEUES):
            self.r.add_queue(
                QueueSpec(
                    name,
                    strategy=strategies[i],
                    requirements=(Requirement(i % N_SKILLS, 1),) if i else (),
                    steps=(RelaxStep(2.0, requirements=()),) if i == 1 else (),
                    weight=weights[i],
                    wrap_up_s=1.0 if i == 0 else 0.0,
                    max_length=6,
                    no_answer_delay_s=1.5,
                    auto_pause_after=2 if i == 2 else 0,
                    retry_delay_s=1.0 if i == 1 else 0.0,
                )
            )
        for a in range(N_AGENTS):
            self.r.add_agent(
                f"a{a}", skills=agent_skills[a], queues=memberships[a], capacity=capacities[a]
            )
            self.r.login(f"a{a}", 0.0)

    # ------------------------------------------------------------------ operations

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(a=st.integers(0, N_AGENTS - 1), event=st.sampled_from(sorted(EVENT_ALLOWED_FROM)))
    def presence(self, a: int, event: str) -> None:
        aid = f"a{a}"
        st_before = self.r.agent_state(aid)
        call: Any = getattr(self.r, event)
        if st_before in EVENT_ALLOWED_FROM[event]:
            call(aid, self.now)
        else:
            with pytest.raises(InvalidTransition):
                call(aid, self.now)
            assert self.r.agent_state(aid) == st_before

    @rule(
        q=st.sampled_from(QUEUES),
        prio=st.integers(0, 2),
        requirements=st.none() | reqs,
        pref=st.none() | st.integers(0, N_AGENTS - 1),
        back_s=st.sampled_from([0.0, 3.0]),
        channel=CHANNELS,
    )
    def enqueue(
        self,
        q: str,
        prio: int,
        requirements: tuple[Requirement, ...] | None,
        pref: int | None,
        back_s: float,
        channel: int,
    ) -> None:
        self.n_tasks += 1
        tid = f"t{self.n_tasks}"
        kwargs: dict[str, Any] = {
            "priority": prio,
            "requirements": requirements,
            "enqueue_time": self.now - back_s,
            "preferred_agent": None if pref is None else f"a{pref}",
            "preferred_timeout_s": 1.0,
            "channel": channel,
        }
        if self.r.waiting(q, channel) >= 6:  # max_length counts each channel apart
            with pytest.raises(QueueFull):
                self.r.enqueue(tid, q, self.now, **kwargs)
        elif len(self.r._task_index) < 32:
            self.r.enqueue(tid, q, self.now, **kwargs)

    @rule(
        q=st.sampled_from(QUEUES),
        prio=st.integers(0, 2),
        requirements=st.none() | reqs,
        channel=CHANNELS,
    )
    def enqueue_plain(
        self, q: str, prio: int, requirements: tuple[Requirement, ...] | None, channel: int
    ) -> None:
        self.enqueue(q, prio, requirements, None, 0.0, channel)

    @rule()
    def dispatch(self) -> None:
        r, now = self.r, self.now
        r._apply_timers(now)
        before = snapshot(r)
        expected = reference_dispatch(before, now)
        offers = r.dispatch(now)
        got = [(r._task_index[o.task_id], r._agent_index[o.agent_id]) for o in offers]
        assert got == expected
        after = snapshot(r)
        assert unmatched_pairs(after, now) == []
        by_t = {x["t"]: x for x in before.tasks}
        still_waiting = {x["t"] for x in after.tasks}
        for t, a in got:
            task = by_t[t]
            assert eligible(before, a, task, now, before.load)
            assert a not in task["excl"]
            key = (-task["prio"], -before.queues[task["queue"]].weight, task["time"], task["seq"])
            for t2 in still_waiting:
                other = by_t[t2]
                key2 = (
                    -other["prio"],
                    -before.queues[other["queue"]].weight,
                    other["time"],
                    other["seq"],
                )
                # Same channel: capacity a had for t it also had when the earlier t2 was considered.
                if key2 < key and other["channel"] == task["channel"]:
                    assert not eligible(before, a, other, now, before.load)

    def _offers(self) -> list[tuple[str, str]]:
        return sorted((tid, aid) for tid in self.r._task_index for aid in self.r.offers_of(tid))

    @precondition(lambda self: bool(self._offers()))
    @rule(data=st.data(), action=st.sampled_from(["accept", "reject", "busy", "no_answer"]))
    def answer(self, data: st.DataObject, action: str) -> None:
        tid, aid = data.draw(st.sampled_from(self._offers()))
        if action == "accept":
            others = set(self.r.offers_of(tid)) - {aid}
            withdrawn = self.r.accept(tid, aid, self.now)
            assert {o.agent_id for o in withdrawn} == others
            assert self.r.offers_of(tid) == []
        else:
            self.r.reject(tid, aid, self.now, reason=action)
            t = self.r._task_index[tid]
            a = self.r._agent_index[aid]
            assert a in self.r._task_excl[t, : self.r._task_i[t, K.TI_N_EXCL]]

    @precondition(lambda self: any(self.r._agent_tasks))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        a = data.draw(st.sampled_from([a for a, ts in enumerate(self.r._agent_tasks) if ts]))
        t = data.draw(st.sampled_from(sorted(self.r._agent_tasks[a])))
        self.r.complete(f"a{a}", self.now, task_id=self.r._task_ids[t])

    @precondition(lambda self: bool(self.r._task_index))
    @rule(data=st.data(), requeue_to=st.none() | st.sampled_from(QUEUES))
    def abandon_or_requeue(self, data: st.DataObject, requeue_to: str | None) -> None:
        tid = data.draw(st.sampled_from(sorted(self.r._task_index)))
        ringing = set(self.r.offers_of(tid))
        t = self.r._task_index[tid]
        accepted = self.r._task_state[t] == 3
        if requeue_to is None:
            if accepted:
                with pytest.raises(InvalidTransition):
                    self.r.abandon(tid, self.now)
                return
            withdrawn = self.r.abandon(tid, self.now)
            assert tid not in self.r._task_index
        else:
            ch = self.r.task_channel(tid)
            if requeue_to != self.r.task_queue(tid) and self.r.waiting(requeue_to, ch) >= 6:
                with pytest.raises(QueueFull):
                    self.r.requeue(tid, requeue_to, self.now)
                return
            time_before = float(self.r._task_f[t, K.TF_TIME])
            withdrawn = self.r.requeue(tid, requeue_to, self.now)
            assert float(self.r._task_f[t, K.TF_TIME]) == time_before
            assert self.r.task_queue(tid) == requeue_to
        assert {o.agent_id for o in withdrawn} == ringing

    # ------------------------------------------------------------------ invariants

    @invariant()
    def capacity_and_load(self) -> None:
        r = self.r
        if not hasattr(self, "r"):
            return
        n = len(r._agent_ids)
        assert np.all(r._load[:n] <= r._cap[:n])
        expect = np.zeros_like(r._load[:n])
        for a in range(n):
            for t in r._agent_offers[a] | r._agent_tasks[a]:
                expect[a, r._task_i[t, K.TI_CHANNEL]] += 1
            state = AgentState(r._state[a])
            assert (state == AgentState.RESERVED) == bool(r._agent_offers[a])
            if r._agent_tasks[a] and not r._agent_offers[a]:
                assert state == AgentState.BUSY
        assert np.array_equal(r._load[:n], expect)
        assert r._n_waiting == int(np.count_nonzero(r._task_state == 1))
        unaccepted: dict[tuple[str, int], int] = {}
        for tid, t in r._task_index.items():
            if r._task_state[t] != 3:
                key = (r.task_queue(tid), r.task_channel(tid))
                unaccepted[key] = unaccepted.get(key, 0) + 1
        for q in QUEUES:
            for ch in range(6):
                assert r.waiting(q, ch) == unaccepted.get((q, ch), 0)
            assert r.waiting(q) == sum(n for (q2, _), n in unaccepted.items() if q2 == q)

    @invariant()
    def transitions_in_table(self) -> None:
        if not hasattr(self, "r"):
            return
        log = self.r.transition_log
        assert log is not None
        for _, old, new in log:
            assert new in AGENT_TRANSITIONS[old]
        log.clear()

    @invariant()
    def free_list_matches_states(self) -> None:
        if not hasattr(self, "r"):
            return
        r = self.r
        n_free = int(r._counters[K.CN_FREE])
        fl = list(r._free_list[:n_free])
        assert fl == sorted(fl)
        want = [
            a
            for a in range(len(r._agent_ids))
            if AgentState(r._state[a])
            in (AgentState.AVAILABLE, AgentState.RESERVED, AgentState.BUSY)
            and bool(np.any(r._load[a] < r._cap[a]))
        ]
        assert fl == want


RouterMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRouterMachine = RouterMachine.TestCase
