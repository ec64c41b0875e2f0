"""The dispatch kernel equals the naive reference on random routers, operation histories and times.

This file is also run once with NUMBA_DISABLE_JIT=1 (test_routing_nojit.py) so coverage sees the
kernel bodies as Python.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_dispatch, snapshot, unmatched_pairs

from routing_core import QueueSpec, RelaxStep, Requirement, Router, Strategy
from routing_core import _kernels as K

MAX_EXAMPLES = int(os.environ.get("ACD_ROUTING_EXAMPLES", "40"))
N_SKILLS = 4

requirements = st.lists(
    st.builds(Requirement, st.integers(0, N_SKILLS - 1), st.integers(1, 4)), max_size=2
).map(tuple)
steps = st.lists(
    st.builds(
        RelaxStep,
        st.sampled_from([0.0, 1.0, 2.5, 5.0]),
        st.none() | requirements,
        st.none() | st.integers(0, 3),
    ),
    max_size=3,
).map(lambda xs: tuple(sorted(xs, key=lambda s: s.after_s)))


@st.composite
def routers(draw: st.DrawFn) -> tuple[Router, float]:
    """A router with random queues and agents, after a random history of operations."""
    r = Router(n_skills=N_SKILLS, max_agents=8, max_tasks=24, seed=draw(st.integers(0, 3)))
    n_queues = draw(st.integers(1, 3))
    for q in range(n_queues):
        r.add_queue(
            QueueSpec(
                f"q{q}",
                strategy=draw(st.sampled_from(Strategy)),
                requirements=draw(requirements),
                steps=draw(steps),
                weight=draw(st.integers(0, 2)),
                wrap_up_s=draw(st.sampled_from([0.0, 1.0])),
                reject_delay_s=draw(st.sampled_from([0.0, 2.0])),
            )
        )
    n_agents = draw(st.integers(2, 8))
    for a in range(n_agents):
        skills = draw(st.dictionaries(st.integers(0, N_SKILLS - 1), st.integers(0, 5), min_size=2))
        queues = draw(
            st.dictionaries(
                st.sampled_from([f"q{q}" for q in range(n_queues)]), st.integers(0, 3), min_size=1
            )
        )
        capacity = draw(st.sampled_from([None, {0: 1, 1: 2}, {1: 3}]))
        r.add_agent(f"a{a}", skills=skills, queues=queues, capacity=capacity)
        if draw(st.integers(0, 3)) > 0 or a == 0:
            r.login(f"a{a}", draw(st.floats(0, 3)))
    now = 3.0
    ops = draw(st.lists(st.integers(0, 99), min_size=8, max_size=30))
    n_tasks = 0
    for op in ops:
        now += draw(st.sampled_from([0.0, 0.5, 1.5]))
        if op < 45 and n_tasks < 20:
            n_tasks += 1
            pref = draw(st.none() | st.integers(0, n_agents - 1))
            r.enqueue(
                f"t{n_tasks}",
                f"q{draw(st.integers(0, n_queues - 1))}",
                now,
                priority=draw(st.integers(0, 2)),
                requirements=draw(st.none() | requirements),
                enqueue_time=now - draw(st.sampled_from([0.0, 0.0, 4.0])),
                preferred_agent=None if pref is None else f"a{pref}",
                preferred_timeout_s=draw(st.sampled_from([0.0, 2.0])),
                channel=draw(st.sampled_from([0, 0, 1])),
            )
        elif op < 70:
            offers = r.dispatch(now)
            for o in offers:
                if o.task_id not in r._task_index or o.agent_id not in r.offers_of(o.task_id):
                    continue  # withdrawn by an accept of the same ring-all task
                choice = draw(st.integers(0, 2))
                if choice == 0:
                    r.accept(o.task_id, o.agent_id, now)
                elif choice == 1:
                    r.reject(o.task_id, o.agent_id, now, reason="no_answer")
        else:
            busy = [a for a in range(n_agents) if r._agent_tasks[a]]
            if busy:
                a = draw(st.sampled_from(busy))
                t = min(r._agent_tasks[a])
                tid = r._task_ids[t]
                assert tid is not None
                r.complete(f"a{a}", now, task_id=tid)
    return r, now + draw(st.sampled_from([0.0, 1.0, 3.0]))


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routers())
def test_dispatch_equals_reference(case: tuple[Router, float]) -> None:
    r, now = case
    r._apply_timers(now)
    before = snapshot(r)
    expected = reference_dispatch(before, now)
    offers = r.dispatch(now)
    got = [(r._task_index[o.task_id], r._agent_index[o.agent_id]) for o in offers]
    assert got == expected
    # Work-conserving: nothing eligible is left unmatched.
    assert unmatched_pairs(snapshot(r), now) == []


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(
    st.lists(st.floats(0, 10, allow_nan=False), max_size=4).map(sorted),
    st.floats(-5, 15, allow_nan=False),
)
def test_stage_of_equals_reference(afters: list[float], wait_s: float) -> None:
    queue_i = np.zeros((1, K.QI_ROWS), np.int32)
    queue_i[0, K.QI_N_STEPS] = len(afters)
    step_after = np.zeros((1, max(1, len(afters))), np.float64)
    step_after[0, : len(afters)] = afters
    expected = max((i for i, x in enumerate(afters) if wait_s >= x), default=-1)
    assert K.stage_of(0, wait_s, queue_i, step_after) == expected
