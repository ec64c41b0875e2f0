"""Naive pure-Python reference of the routing kernels, written from the rules, not from the kernel.

It reads a Router's state through a snapshot, ignores buckets, linked lists, cursors and the free list,
and does the obvious thing: sort every waiting task by (priority desc, queue weight desc, time asc,
sequence asc); for each, look at every agent, keep the eligible ones, take the lowest penalty tier and
pick by the queue strategy (ties by agent index). Requirements and steps come from the QueueSpec objects
and the task's own requirement tuple, so an encoding bug in the arrays shows up as a difference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from routing_core import AgentState, Requirement, Router, Strategy
from routing_core import _kernels as K
from routing_core.router import _T_WAITING

ROUTABLE = {int(AgentState.AVAILABLE), int(AgentState.RESERVED), int(AgentState.BUSY)}


@dataclass
class Snapshot:
    n_agents: int
    state: np.ndarray[Any, Any]
    skills: np.ndarray[Any, Any]
    penalty: np.ndarray[Any, Any]
    member_pos: np.ndarray[Any, Any]
    cap: np.ndarray[Any, Any]
    load: np.ndarray[Any, Any]
    last_idle: np.ndarray[Any, Any]
    talk_s: np.ndarray[Any, Any]
    blocked_until: np.ndarray[Any, Any]
    calls: np.ndarray[Any, Any]
    tasks: list[dict[str, Any]]
    queues: list[Any]
    rr_last: list[int]
    n_pos: list[int]
    rng_buf: np.ndarray[Any, Any]
    rng_pos: int


def snapshot(r: Router) -> Snapshot:
    n = len(r._agent_ids)
    tasks = []
    for t in range(r._max_tasks):
        if r._task_state[t] != _T_WAITING:
            continue
        n_excl = int(r._task_i[t, K.TI_N_EXCL])
        tasks.append(
            {
                "t": t,
                "queue": int(r._task_i[t, K.TI_QUEUE]),
                "prio": int(r._task_prio[t]),
                "time": float(r._task_f[t, K.TF_TIME]),
                "seq": int(r._task_seq[t]),
                "reqs": tuple(r._task_reqs[t]),
                "pref": int(r._task_i[t, K.TI_PREF]),
                "pref_until": float(r._task_f[t, K.TF_PREF_UNTIL]),
                "channel": int(r._task_i[t, K.TI_CHANNEL]),
                "excl": {int(x) for x in r._task_excl[t, :n_excl]},
            }
        )
    nq = len(r._queues)
    return Snapshot(
        n_agents=n,
        state=r._state[:n].copy(),
        skills=r._skills[:n].copy(),
        penalty=r._penalty[:nq, :n].T.copy(),
        member_pos=r._member_pos[:nq, :n].T.copy(),
        cap=r._cap[:n].copy(),
        load=r._load[:n].copy(),
        last_idle=r._agent_f[K.AF_LAST_IDLE, :n].copy(),
        talk_s=r._agent_f[K.AF_TALK_S, :n].copy(),
        blocked_until=r._agent_f[K.AF_BLOCKED_UNTIL, :n].copy(),
        calls=r._agent_calls[:n].copy(),
        tasks=tasks,
        queues=copy.copy(r._queues),
        rr_last=[int(r._queue_i[q, K.QI_RR_LAST]) for q in range(nq)],
        n_pos=[int(r._queue_i[q, K.QI_N_POS]) for q in range(nq)],
        rng_buf=r._rng_buf.copy(),
        rng_pos=int(r._counters[K.CN_RNG_POS]),
    )


def rule(
    s: Snapshot, task: dict[str, Any], now: float
) -> tuple[tuple[Requirement, ...], int | None]:
    """Requirements and penalty bound for the task at `now`: the last step whose after_s passed."""
    spec = s.queues[task["queue"]]
    reqs: tuple[Requirement, ...] = task["reqs"]
    maxpen = None
    wait = now - task["time"]
    for step in spec.steps:
        if wait >= step.after_s:
            reqs = task["reqs"] if step.requirements is None else step.requirements
            maxpen = step.max_penalty
    return reqs, maxpen


def eligible(
    s: Snapshot, a: int, task: dict[str, Any], now: float, load: np.ndarray[Any, Any]
) -> bool:
    q = task["queue"]
    if int(s.state[a]) not in ROUTABLE:
        return False
    pen = int(s.penalty[a, q])
    reqs, maxpen = rule(s, task, now)
    ch = task["channel"]
    return (
        pen >= 0
        and (maxpen is None or pen <= maxpen)
        and load[a, ch] < s.cap[a, ch]
        and s.blocked_until[a] <= now
        and not (task["pref"] >= 0 and task["pref"] != a and now < task["pref_until"])
        and all(s.skills[a, r.skill] >= r.min_level for r in reqs)
        and a not in task["excl"]
    )


def _score(s: Snapshot, a: int, reqs: tuple[Requirement, ...]) -> int:
    return sum(int(s.skills[a, r.skill]) for r in reqs)


def reference_dispatch(s: Snapshot, now: float) -> list[tuple[int, int]]:
    """(task index, agent index) offers in the order the rules produce them."""
    load = s.load.copy()
    rr_last = list(s.rr_last)
    rng_pos = s.rng_pos
    out: list[tuple[int, int]] = []
    order = sorted(
        s.tasks, key=lambda x: (-x["prio"], -s.queues[x["queue"]].weight, x["time"], x["seq"])
    )
    for task in order:
        q = task["queue"]
        cands = [a for a in range(s.n_agents) if eligible(s, a, task, now, load)]
        if not cands:
            continue
        low = min(int(s.penalty[a, q]) for a in cands)
        tier = [a for a in cands if int(s.penalty[a, q]) == low]
        strategy = s.queues[q].strategy
        reqs, _ = rule(s, task, now)
        if strategy == Strategy.RING_ALL:
            chosen = tier
        elif strategy in (Strategy.RANDOM, Strategy.WEIGHTED_RANDOM):
            u = float(s.rng_buf[rng_pos % len(s.rng_buf)])
            rng_pos += 1
            weights = [1 if strategy == Strategy.RANDOM else 1 + _score(s, a, reqs) for a in tier]
            target = min(int(u * sum(weights)), sum(weights) - 1)
            acc = 0
            pick = tier[-1]
            for a, w in zip(tier, weights, strict=True):
                acc += w
                if acc > target:
                    pick = a
                    break
            chosen = [pick]
        else:

            def key(
                a: int, strategy: Strategy = strategy, q: int = q, reqs: Any = reqs
            ) -> tuple[float, int]:
                if strategy == Strategy.LONGEST_IDLE:
                    k = float(s.last_idle[a])
                elif strategy == Strategy.FEWEST_CALLS:
                    k = float(s.calls[a])
                elif strategy == Strategy.LEAST_TALK_TIME:
                    k = float(s.talk_s[a])
                elif strategy == Strategy.MOST_SKILLED:
                    k = -float(_score(s, a, reqs))
                elif strategy == Strategy.ROUND_ROBIN:
                    # Members in position order, starting right after the last one offered.
                    k = float((int(s.member_pos[a, q]) - rr_last[q] - 1) % s.n_pos[q])
                else:
                    k = float(s.member_pos[a, q])
                return (k, a)

            chosen = [min(tier, key=key)]
        for a in chosen:
            out.append((task["t"], a))
            load[a, task["channel"]] += 1
            if strategy == Strategy.ROUND_ROBIN:
                rr_last[q] = int(s.member_pos[a, q])
    return out


def unmatched_pairs(s: Snapshot, now: float) -> list[tuple[int, int]]:
    """Waiting (task, agent) pairs that are eligible right now: empty after a work-conserving dispatch."""
    return [
        (task["t"], a)
        for task in s.tasks
        for a in range(s.n_agents)
        if eligible(s, a, task, now, s.load)
    ]
