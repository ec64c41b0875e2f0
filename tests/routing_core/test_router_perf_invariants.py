"""Invariants of the Router's speed-ups: arenas, Python mirrors and reusable kernel scratch.

The Router passes the kernel one byte buffer holding every array and their layout instead of 35 arrays
(through the kernel's compiled entry point, not numba's dispatcher), keeps Python-list mirrors of what it reads on every call, and reuses scratch arrays between dispatches. Each
of those is a second copy of some truth, so these tests drive a router through growth (more queues,
agents, buckets and exclusions than the initial array sizes) and a seeded random history, and check
after every operation that the copies agree and that dispatch still equals the naive reference.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numba
import numpy as np
import pytest
from reference import reference_dispatch, snapshot, unmatched_pairs

from routing_core import AgentState, Offer, QueueSpec, RelaxStep, Requirement, Router, Strategy
from routing_core import _kernels as K
from routing_core._jit import JIT_OPTIONS, arena_1d, arena_2d, entry_point
from routing_core.router import _ARENA_ALIGN, _ARENA_SLOTS, _T_OFFERED


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
    assert np.all(r._scratch_cursor == K.CURSOR_IDLE)


def arena_layout(arena: Any) -> Any:
    """The layout at the arena's start: per slot (byte offset, rows, cols)."""
    return arena[: K.P_SLOTS * 3 * 8].view(np.int64).reshape(K.P_SLOTS, 3)


def check_arenas(r: Router) -> None:
    """Every kernel array is a view of the arena at the offset and shape the layout says, on its own
    cache lines, and no two arrays overlap."""
    if r._arena is None:
        return  # grown since the last dispatch: repacked before the next one
    arena = r._arena
    assert arena.dtype == np.uint8
    assert arena.ndim == 1
    assert arena.flags.c_contiguous
    assert arena.ctypes.data % _ARENA_ALIGN == 0
    layout = arena_layout(arena)
    spans = [(0, K.P_SLOTS * 3 * 8)]
    for dtype, slots in _ARENA_SLOTS:
        for slot, name in slots:
            arr = getattr(r, name)
            off, n0, n1 = (int(x) for x in layout[slot])
            assert arr.dtype == dtype
            assert arr.flags.c_contiguous
            assert arr.shape[0] == n0
            assert (arr.shape[1] if arr.ndim == 2 else 1) == n1
            assert np.shares_memory(arr, arena)
            assert arr.ctypes.data == arena.ctypes.data + off
            assert off % _ARENA_ALIGN == 0
            spans.append((off, off + arr.nbytes))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    assert spans[-1][1] <= arena.size


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
    """dispatch passes `now` plus the arena: two arguments, not one per array, to the kernel's compiled
    entry point (numba's dispatcher would type both on every call)."""
    r, _ = build(0)
    r.login("a0", 0.0)
    r.enqueue("t", "q0", 0.0, requirements=())
    r.dispatch(0.0)
    assert r._arena is not None
    assert r._arena.dtype == np.uint8
    assert r._arena.ndim == 1
    slots = sorted(slot for _, group in _ARENA_SLOTS for slot, _ in group)
    assert slots == list(range(K.P_SLOTS))
    if numba.config.DISABLE_JIT:
        assert r._kernel is K.dispatch_kernel
    else:
        assert r._kernel is not K.dispatch_kernel
        (sig,) = K.dispatch_kernel.signatures
        assert r._kernel is K.dispatch_kernel.overloads[sig].entry_point
        assert sig == (numba.float64, numba.typeof(r._arena))


def test_entry_point_is_the_dispatcher_minus_typing() -> None:
    """`entry_point` returns the compiled function the dispatcher itself would run for those types."""

    @numba.njit(**{**JIT_OPTIONS, "cache": False})  # type: ignore[misc]
    def total(now: float, buf: Any) -> Any:
        return now + buf.sum()

    buf = np.arange(10, dtype=np.uint8)
    fn = entry_point(total, 0.5, buf)
    assert fn(0.5, buf) == total(0.5, buf) == 45.5
    (sig,) = total.signatures
    assert fn is total.overloads[sig].entry_point
    assert entry_point(total, 1.0, buf) is fn  # compiled once, looked up after


def test_kernel_result_encoding() -> None:
    """The kernel returns one int: `task << 32 | agent` for a single offer, `-1 - n` for n != 1."""
    r = Router(n_skills=1, max_agents=4, max_tasks=8)
    r.add_queue(QueueSpec("q0"))
    r.add_queue(QueueSpec("ring", strategy=Strategy.RING_ALL))
    for a in range(3):
        r.add_agent(f"a{a}", skills={0: 1}, queues={"q0": 0, "ring": 0})
    arena = r._pack()
    assert K.dispatch_kernel(0.0, arena) == -1  # nobody free: no offer
    for a in range(3):
        r.login(f"a{a}", 0.0)
    r.enqueue("t0", "q0", 0.0)
    r.enqueue("t1", "q0", 0.0)
    r.enqueue("t2", "q0", 0.0)
    arena = r._pack()
    assert K.dispatch_kernel(1.0, arena) == -1 - 3  # three offers, left in the output slots
    assert r._out_task[:3].tolist() == [r._task_index[f"t{i}"] for i in range(3)]
    r2 = Router(n_skills=1, max_agents=8, max_tasks=8)
    r2.add_queue(QueueSpec("q0"))
    for a in range(6):
        r2.add_agent(f"a{a}", skills={0: 1}, queues={"q0": 0})
        r2.login(f"a{a}", 0.0)
    for i in range(6):
        r2.enqueue(f"t{i}", "q0", 0.0)
    r2.dispatch(0.0)
    r2.accept("t5", "a5", 0.0)
    r2.complete("a5", 1.0)
    r2.enqueue("t6", "q0", 1.0)
    res = int(K.dispatch_kernel(2.0, r2._pack()))
    assert res >= 0
    assert (res >> 32, res & 0xFFFFFFFF) == (r2._task_index["t6"], r2._agent_index["a5"])


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
    ("offset", "n0", "n1"), [(0, 1, 1), (64, 4, 5), (8, 1, 9), (0, 6, 1), (16, 0, 3)]
)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64, np.uint8])
def test_arena_views_are_the_numpy_views_they_replace(
    offset: int, n0: int, n1: int, dtype: Any
) -> None:
    """The kernels' typed views alias the byte arena exactly as numpy's `view` and `reshape` would:
    same cells, same shape, writes go through."""

    @numba.njit(**{**JIT_OPTIONS, "cache": False})  # type: ignore[misc]
    def bump(buf: Any, o: int, n0: int, n1: int, dt: Any) -> Any:
        v = arena_2d(buf, o, n0, n1, dt)
        w = arena_1d(buf, o, n0 * n1, dt)
        total = 0.0
        for i in range(n0):
            for j in range(n1):
                v[i, j] += 3 * i + j
                total += v[i, j]
        for k in range(n0 * n1):
            total += w[k]
        return total, v.shape[0], v.shape[1], w.shape[0]

    buf = np.arange(512, dtype=np.uint8)
    expected = buf.copy()
    size = n0 * n1 * np.dtype(dtype).itemsize
    ref = expected[offset : offset + size].view(dtype).reshape((n0, n1))
    ref += np.add.outer(3 * np.arange(n0), np.arange(n1)).astype(dtype)
    total, s0, s1, s2 = bump(buf, offset, n0, n1, dtype)
    assert (s0, s1, s2) == (n0, n1, n0 * n1)
    assert total == pytest.approx(2 * float(ref.astype(np.float64).sum()))
    assert np.array_equal(buf, expected)
