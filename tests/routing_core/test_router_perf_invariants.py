"""Invariants of the Router's speed-ups: arenas, Python mirrors and reusable kernel scratch.

The Router passes the kernel four flat buffers (one per dtype) plus a layout instead of 34 arrays, keeps
Python-list mirrors of what it reads on every call, and reuses scratch arrays between dispatches. Each
of those is a second copy of some truth, so these tests drive a router through growth (more queues,
agents, buckets and exclusions than the initial array sizes) and a seeded random history, and check
after every operation that the copies agree and that dispatch still equals the naive reference.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numba
import numpy as np
import pytest
from reference import reference_dispatch, snapshot, unmatched_pairs

from routing_core import AgentState, Offer, QueueSpec, RelaxStep, Requirement, Router, Strategy
from routing_core import _kernels as K
from routing_core._jit import JIT_OPTIONS, view_2d
from routing_core.router import _ARENAS, _T_OFFERED


def check_mirrors(r: Router) -> None:
    n = len(r._agent_ids)
    assert r._st == [int(x) for x in r._state[:n]]
    assert r._spare == [int(x) for x in (r._cap[:n] - r._load[:n]).sum(axis=1)]
    assert r._is_free == [bool(x) for x in r._in_free[:n]]
    assert r._n_free == int(r._counters[K.CN_FREE])
    assert r._n_free == sum(r._is_free)
    for t in r._task_index.values():
        assert r._task_q[t] == int(r._task_i[t, K.TI_QUEUE])
        assert r._task_ch[t] == int(r._task_i[t, K.TI_CHANNEL])
        assert r._tst[t] == int(r._task_state[t])
        assert r._task_time[t] == float(r._task_f[t, K.TF_TIME])
        assert r._task_seqs[t] == int(r._task_seq[t])
        assert r._task_pref[t] == int(r._task_i[t, K.TI_PREF])
        assert r._task_nexcl[t] == int(r._task_i[t, K.TI_N_EXCL])
    # The kernel leaves its per-bucket cursor scratch reset, so the next call starts clean.
    assert np.all(r._scratch_cursor == -2)


def check_arenas(r: Router) -> None:
    """Every kernel array is a view of its arena at the offset and shape the layout says."""
    if r._arena is None:
        return  # grown since the last dispatch: repacked before the next one
    *bufs, layout = r._arena
    for buf, (dtype, slots) in zip(bufs, _ARENAS, strict=True):
        assert buf.dtype == dtype
        for slot, name in slots:
            arr = getattr(r, name)
            off, n0, n1 = (int(x) for x in layout[slot])
            assert arr.shape[0] == n0
            assert (arr.shape[1] if arr.ndim == 2 else 1) == n1
            assert np.shares_memory(arr, buf)
            assert arr.ctypes.data == buf.ctypes.data + off * buf.itemsize


def build(seed: int) -> tuple[Router, np.random.Generator]:
    rng = np.random.default_rng(seed)
    # Deliberately tiny initial sizes: queues, buckets, exclusions and steps all have to grow.
    r = Router(n_skills=3, max_agents=12, max_tasks=40, seed=seed, max_queues=1)
    strategies = [Strategy.LONGEST_IDLE, Strategy.RANDOM, Strategy.RING_ALL, Strategy.MOST_SKILLED]
    for q in range(4):
        r.add_queue(
            QueueSpec(
                f"q{q}",
                strategy=strategies[q],
                requirements=(Requirement(q % 3, 1),),
                steps=(RelaxStep(1.0, max_penalty=1), RelaxStep(2.0, requirements=())),
                reject_delay_s=0.5 * (q % 2),
                wrap_up_s=0.5 * (q % 2),
            )
        )
    for a in range(12):
        qs = {f"q{q}": int(rng.integers(0, 3)) for q in rng.choice(4, size=2, replace=False)}
        skills = {s: int(rng.integers(0, 4)) for s in range(3)}
        cap = None if a % 3 else {0: 2, 1: 1}
        r.add_agent(f"a{a}", skills=skills, queues=qs, capacity=cap)
    return r, rng


@pytest.mark.parametrize("seed", range(6))
def test_mirrors_arenas_and_reference_through_growth(seed: int) -> None:
    r, rng = build(seed)
    now = 0.0
    for a in range(12):
        r.login(f"a{a}", now)
    n_tasks = 0
    n_offers = 0
    for _ in range(250):
        now += float(rng.choice([0.0, 0.25, 1.0]))
        op = int(rng.integers(0, 10))
        if op < 4 and len(r._task_index) < 30:
            n_tasks += 1
            r.enqueue(
                f"t{n_tasks}",
                f"q{int(rng.integers(0, 4))}",
                now,
                priority=int(rng.integers(0, 100)),  # many priorities: many buckets, bucket regrow
                channel=int(rng.integers(0, 2)),
            )
        elif op < 7:
            r._apply_timers(now)
            expected = reference_dispatch(snapshot(r), now)
            offers = r.dispatch(now)
            assert [(r._task_index[o.task_id], r._agent_index[o.agent_id]) for o in offers] == (
                expected
            )
            assert unmatched_pairs(snapshot(r), now) == []
            n_offers += len(offers)
            for o in offers:
                if o.task_id not in r._task_index or o.agent_id not in r.offers_of(o.task_id):
                    continue
                if rng.integers(0, 3):
                    r.accept(o.task_id, o.agent_id, now)
                else:
                    r.reject(o.task_id, o.agent_id, now)
        elif op < 9:
            busy = [a for a in range(12) if r._agent_tasks[a]]
            if busy:
                a = int(rng.choice(busy))
                tid = r._task_ids[min(r._agent_tasks[a])]
                assert tid is not None
                r.complete(f"a{a}", now, task_id=tid)
        else:
            a = int(rng.integers(0, 12))
            if r.agent_state(f"a{a}") in (AgentState.NOT_READY, AgentState.WRAP_UP):
                r.set_ready(f"a{a}", now)
            else:
                r.set_not_ready(f"a{a}", now)
        check_mirrors(r)
        check_arenas(r)
    assert n_offers > 10  # the history really exercised dispatch
    assert r._n_buckets > 64  # and outgrew the initial bucket arrays


def test_kernel_call_takes_packed_arguments() -> None:
    """dispatch passes `now` plus the arenas and layout: six arguments, not one per array."""
    r, _ = build(0)
    r.login("a0", 0.0)
    r.enqueue("t", "q0", 0.0, requirements=())
    r.dispatch(0.0)
    assert r._arena is not None
    assert len(r._arena) == 5
    assert r._arena[-1].shape == (K.P_SLOTS, 3)
    slots = sorted(slot for _, group in _ARENAS for slot, _ in group)
    assert slots == list(range(K.P_SLOTS))


def test_hot_path_offers_are_ordinary_frozen_offers() -> None:
    """dispatch builds Offers through their slots; they must equal and behave like constructed ones."""
    r = Router(n_skills=1, max_agents=2, max_tasks=2)
    r.add_queue(QueueSpec("q0"))
    r.add_agent("a0", skills={0: 1}, queues={"q0": 0})
    r.login("a0", 0.0)
    r.enqueue("t", "q0", 0.0)
    (offer,) = r.dispatch(0.0)
    assert offer == Offer("t", "a0", "q0")
    assert hash(offer) == hash(Offer("t", "a0", "q0"))
    assert repr(offer) == "Offer(task_id='t', agent_id='a0', queue='q0')"
    with pytest.raises(dataclasses.FrozenInstanceError):
        offer.task_id = "x"  # type: ignore[misc]
    assert r.agent_state("a0") is AgentState.RESERVED


def test_kernel_state_codes_equal_their_sources() -> None:
    """The kernel writes the agent and task states of each offer with its own copies of the codes."""
    assert int(AgentState.RESERVED) == K.AGENT_RESERVED
    assert K.TASK_OFFERED == _T_OFFERED


@pytest.mark.parametrize(
    ("offset", "n0", "n1"), [(0, 1, 1), (3, 4, 5), (7, 1, 9), (0, 6, 1), (2, 0, 3)]
)
def test_view_2d_is_the_reshape_it_replaces(offset: int, n0: int, n1: int) -> None:
    """The kernels' 2-D views alias the arena exactly as `reshape` would: same cells, writes go through."""

    @numba.njit(**{**JIT_OPTIONS, "cache": False})  # type: ignore[misc]
    def bump(buf: Any, o: int, n0: int, n1: int) -> Any:
        v = view_2d(buf[o : o + n0 * n1], n0, n1)
        total = 0
        for i in range(n0):
            for j in range(n1):
                v[i, j] += 1000 * i + j
                total += v[i, j]
        return total, v.shape[0], v.shape[1]

    buf = np.arange(64, dtype=np.int32)
    expected = buf.copy()
    ref = expected[offset : offset + n0 * n1].reshape((n0, n1))
    ref += np.add.outer(1000 * np.arange(n0), np.arange(n1)).astype(np.int32)
    total, s0, s1 = bump(buf, offset, n0, n1)
    assert (s0, s1) == (n0, n1)
    assert total == int(ref.sum())
    assert np.array_equal(buf, expected)
