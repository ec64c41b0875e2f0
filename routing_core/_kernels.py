"""Numba kernels of the routing core: one batch-dispatch kernel and its small helpers.

How this works. The Router keeps waiting tasks in buckets keyed by (queue, priority, requirement set,
channel); inside a bucket tasks form a doubly linked list ordered by (effective enqueue time, arrival
sequence), so every bucket is already in global task order and the global order is a k-way merge of the
bucket heads by (priority desc, queue weight desc, time asc, sequence asc). Free agents (routable state and
spare capacity on some channel) sit in a list sorted by agent index, which is also the tie-break order.

`dispatch_kernel` is greedy in task order, which makes it work-conserving: for every bucket it finds the
first task that some free agent can take (the cursor), picks the smallest cursor across buckets, offers it
to the best eligible free agent by the queue's strategy (every agent of the lowest penalty tier for
RING_ALL), reserves the agent's capacity, and repeats until no free agent or no candidate is left. The free
set only shrinks during a call, so a task found ineligible stays ineligible; a cursor made stale by an
earlier offer is re-checked when it wins the merge. A bucket whose relaxation steps only ever widen
eligibility (`monotone`) is closed as soon as a task without preferred agent or exclusions is ineligible:
newer tasks of the bucket waited less and cannot be eligible either.

Only "active" free agents are searched: a free agent left unmatched by a dispatch provably has no
eligible task (work conservation), so it gets a memo (the sum of its queues' versions). The Router bumps
a queue's version whenever a task there may have become eligible (enqueue, return after reject,
relaxation step or preferred-agent timeout reached) and clears an agent's memo whenever its own state,
load or reject delay changes. Only the buckets of the active agents' queues are searched, so one
dispatch after one agent frees costs O(buckets of that agent's queues), independent of the backlog.
Each bucket keeps a copy of its head's key (`bucket_f`), so judging a bucket whose head has no
preferred agent or exclusions reads no task row; with 100k waiting tasks those rows are cache-cold.

Kernels never validate and never raise: the Router sizes and fills every array.
"""

from __future__ import annotations

import numpy as np

from routing_core._jit import jit, jit_inline, view_2d

# Row indices of the packed per-entity arrays (kernel ABI shared with router.py and the tests).
AF_LAST_IDLE = 0  # agent float rows
AF_TALK_S = 1
AF_BLOCKED_UNTIL = 2
AF_ROWS = 3

TI_BUCKET = 0  # task int rows
TI_NEXT = 1
TI_PREV = 2
TI_PREF = 3
TI_CHANNEL = 4
TI_N_EXCL = 5
TI_QUEUE = 6
TI_ROWS = 7

TF_TIME = 0  # task float rows: effective enqueue time, preferred-agent deadline
TF_PREF_UNTIL = 1
TF_ROWS = 2

BI_HEAD = 0  # bucket int rows
BI_TAIL = 1
BI_QUEUE = 2
BI_PRIO = 3
BI_REQSET = 4
BI_MONOTONE = 5
BI_COUNT = 6
BI_CHANNEL = 7
BI_ROWS = 8

BF_HEAD_TIME = 0  # bucket float rows: a copy of the head task's key, so a bucket can be judged
BF_HEAD_SEQ = 1  # without touching the head's (cache-cold) task rows
BF_PLAIN_FROM = 2  # from this time on the head has no active preferred agent and no exclusions
BF_ROWS = 3

QI_STRATEGY = 0  # queue int rows
QI_WEIGHT = 1
QI_N_STEPS = 2
QI_RR_LAST = 3
QI_N_POS = 4
QI_ROWS = 5

CN_FREE = 0  # counters
CN_RNG_POS = 1
CN_ROWS = 2

# The states the kernel writes for each offer, so the Router does not write them from Python (a numpy
# scalar store costs as much as several list operations): AgentState.RESERVED and the Router's
# task state "offered" (a test checks both against their sources).
AGENT_RESERVED = 2
TASK_OFFERED = 2

# Arena slots. The Router keeps every kernel array as a view into one flat buffer per dtype (the
# "arenas") and passes the kernel four buffers plus `layout[slot] = (offset, rows, cols)`: numba's
# call overhead is paid per argument (~70 ns an array), so 6 arguments instead of 34 save ~2 us per
# dispatch. The kernel rebuilds the views with a slice and `view_2d`, which allocates nothing and,
# unlike `reshape`, calls no C helper (24 reshapes cost ~0.9 us a dispatch).
# int32 arena
P_PENALTY = 0
P_MEMBER_POS = 1
P_CAP = 2
P_LOAD = 3
P_FREE_LIST = 4
P_TASK_I = 5
P_TASK_EXCL = 6
P_BUCKET_I = 7
P_REQSET_SKILL = 8
P_REQSET_LEVEL = 9
P_REQSET_LEN = 10
P_QUEUE_I = 11
P_STEP_REQSET = 12
P_STEP_MAXPEN = 13
P_OUT_TASK = 14
P_OUT_AGENT = 15
P_AGENT_QUEUES = 16
P_AGENT_NQ = 17
P_Q_BUCKETS = 18
P_Q_NB = 19
P_ACTIVE = 20  # scratch: active agents (max_agents)
P_CURSOR = 21  # scratch: per-bucket cursor, -2 between calls (bucket capacity)
P_CANDS = 22  # scratch: buckets searched in this call (bucket capacity)
# int64 arena
P_AGENT_CALLS = 23
P_COUNTERS = 24
P_TASK_SEQ = 25
P_Q_VER = 26
P_AGENT_MEMO = 27
# float64 arena
P_AGENT_F = 28
P_TASK_F = 29
P_STEP_AFTER = 30
P_RNG_BUF = 31
P_BUCKET_F = 32
# uint8 arena
P_SKILLS = 33
P_IN_FREE = 34
P_AGENT_STATE = 35
P_TASK_STATE = 36
P_SLOTS = 37

# Strategy codes, equal to routing_core.types.Strategy values.
S_LONGEST_IDLE = 0
S_FEWEST_CALLS = 1
S_LEAST_TALK_TIME = 2
S_MOST_SKILLED = 3
S_ROUND_ROBIN = 4
S_LINEAR = 5
S_RANDOM = 6
S_WEIGHTED_RANDOM = 7
S_RING_ALL = 8


@jit_inline
def stage_of(q, wait_s, queue_i, step_after):  # type: ignore[no-untyped-def]
    """Index of the last relaxation step whose after_s has passed, -1 before the first."""
    s = -1
    for i in range(queue_i[QI_N_STEPS, q]):
        if wait_s >= step_after[q, i]:
            s = i
        else:
            break
    return s


@jit_inline
def _task_rule(t, b, now, task_f, bucket_i, queue_i, step_after, step_reqset, step_maxpen):  # type: ignore[no-untyped-def]
    """(requirement set, max penalty or -1) that apply to task t at `now`."""
    q = bucket_i[BI_QUEUE, b]
    st = stage_of(q, now - task_f[t, TF_TIME], queue_i, step_after)
    rs = bucket_i[BI_REQSET, b]
    maxpen = -1
    if st >= 0:
        if step_reqset[q, st] >= 0:
            rs = step_reqset[q, st]
        maxpen = step_maxpen[q, st]
    return rs, maxpen


@jit_inline
def _bucket_eligible(  # type: ignore[no-untyped-def]
    a,
    q,
    ch,
    rs,
    maxpen,
    now,
    skills,
    penalty,
    cap,
    load,
    agent_f,
    reqset_skill,
    reqset_level,
    reqset_len,
):
    """Eligibility of agent a for any plain task of queue q, channel ch, rule (rs, maxpen)."""
    pen = penalty[q, a]
    if pen < 0 or (maxpen >= 0 and pen > maxpen):
        return False
    if load[a, ch] >= cap[a, ch] or agent_f[AF_BLOCKED_UNTIL, a] > now:
        return False
    for k in range(reqset_len[rs]):  # noqa: SIM110 - numba cannot compile generators here
        if skills[a, reqset_skill[rs, k]] < reqset_level[rs, k]:
            return False
    return True


@jit_inline
def _eligible(  # type: ignore[no-untyped-def]
    a,
    t,
    q,
    rs,
    maxpen,
    now,
    skills,
    penalty,
    cap,
    load,
    agent_f,
    task_i,
    task_f,
    task_excl,
    reqset_skill,
    reqset_level,
    reqset_len,
):
    if not _bucket_eligible(
        a,
        q,
        task_i[t, TI_CHANNEL],
        rs,
        maxpen,
        now,
        skills,
        penalty,
        cap,
        load,
        agent_f,
        reqset_skill,
        reqset_level,
        reqset_len,
    ):
        return False
    pref = task_i[t, TI_PREF]
    if pref >= 0 and pref != a and now < task_f[t, TF_PREF_UNTIL]:
        return False
    for k in range(task_i[t, TI_N_EXCL]):  # noqa: SIM110 - numba cannot compile generators here
        if task_excl[t, k] == a:
            return False
    return True


@jit_inline
def _score(a, rs, skills, reqset_skill, reqset_len):  # type: ignore[no-untyped-def]
    """Proficiency sum of agent a over the skills of requirement set rs."""
    s = np.int64(0)
    for k in range(reqset_len[rs]):
        s += np.int64(skills[a, reqset_skill[rs, k]])
    return s


@jit_inline
def _key(  # type: ignore[no-untyped-def]
    strategy, a, q, rs, skills, member_pos, agent_f, agent_calls, queue_i, reqset_skill, reqset_len
):
    """Strategy key of agent a for queue q, lower is better (ties: lower agent index)."""
    if strategy == S_LONGEST_IDLE:
        return agent_f[AF_LAST_IDLE, a]
    if strategy == S_FEWEST_CALLS:
        return float(agent_calls[a])
    if strategy == S_LEAST_TALK_TIME:
        return agent_f[AF_TALK_S, a]
    if strategy == S_MOST_SKILLED:
        return -float(_score(a, rs, skills, reqset_skill, reqset_len))
    if strategy == S_ROUND_ROBIN:
        pos = member_pos[q, a]
        last = queue_i[QI_RR_LAST, q]
        if pos > last:
            return float(pos - last - 1)
        return float(pos - last - 1 + queue_i[QI_N_POS, q])
    if strategy == S_LINEAR:
        return float(member_pos[q, a])
    return 0.0


@jit_inline
def _before(t1, b1, t2, b2, task_f, task_seq, bucket_i, bucket_f, queue_i):  # type: ignore[no-untyped-def]
    """True if task t1 (bucket b1) comes before t2 (bucket b2) in global task order."""
    p1 = bucket_i[BI_PRIO, b1]
    p2 = bucket_i[BI_PRIO, b2]
    if p1 != p2:
        return p1 > p2
    w1 = queue_i[QI_WEIGHT, bucket_i[BI_QUEUE, b1]]
    w2 = queue_i[QI_WEIGHT, bucket_i[BI_QUEUE, b2]]
    if w1 != w2:
        return w1 > w2
    # A head's key comes from the bucket's cached copy: no task row is read for it.
    h1 = t1 == bucket_i[BI_HEAD, b1]
    h2 = t2 == bucket_i[BI_HEAD, b2]
    x1 = bucket_f[BF_HEAD_TIME, b1] if h1 else task_f[t1, TF_TIME]
    x2 = bucket_f[BF_HEAD_TIME, b2] if h2 else task_f[t2, TF_TIME]
    if x1 != x2:
        return x1 < x2
    s1 = bucket_f[BF_HEAD_SEQ, b1] if h1 else float(task_seq[t1])
    s2 = bucket_f[BF_HEAD_SEQ, b2] if h2 else float(task_seq[t2])
    return s1 < s2


@jit_inline
def _any_free_eligible(  # type: ignore[no-untyped-def]
    t,
    q,
    rs,
    maxpen,
    now,
    skills,
    penalty,
    cap,
    load,
    agent_f,
    task_i,
    task_f,
    task_excl,
    reqset_skill,
    reqset_level,
    reqset_len,
    free_list,
    n_free,
):
    for i in range(n_free):
        if penalty[
            q, free_list[i]
        ] >= 0 and _eligible(  # inline filter: skip the call for non-members
            free_list[i],
            t,
            q,
            rs,
            maxpen,
            now,
            skills,
            penalty,
            cap,
            load,
            agent_f,
            task_i,
            task_f,
            task_excl,
            reqset_skill,
            reqset_level,
            reqset_len,
        ):
            return True
    return False


@jit_inline
def _reachable(q, ch, now, penalty, cap, load, agent_f, free_list, n_free):  # type: ignore[no-untyped-def]
    """Some free agent is a member of q with room on channel ch. Reads no task data: the cheap filter
    that skips most buckets without touching (cache-cold) task rows."""
    for i in range(n_free):
        a = free_list[i]
        if penalty[q, a] >= 0 and load[a, ch] < cap[a, ch] and agent_f[AF_BLOCKED_UNTIL, a] <= now:
            return True
    return False


@jit_inline
def _advance(  # type: ignore[no-untyped-def]
    b,
    t,
    now,
    skills,
    penalty,
    cap,
    load,
    agent_f,
    task_i,
    task_f,
    task_excl,
    bucket_i,
    bucket_f,
    reqset_skill,
    reqset_level,
    reqset_len,
    queue_i,
    step_after,
    step_reqset,
    step_maxpen,
    free_list,
    n_free,
):
    """First task from t on in bucket b that some free agent may take, or -1."""
    q = bucket_i[BI_QUEUE, b]
    ch = bucket_i[BI_CHANNEL, b]
    if t < 0 or not _reachable(q, ch, now, penalty, cap, load, agent_f, free_list, n_free):
        return -1
    if t == bucket_i[BI_HEAD, b] and now >= bucket_f[BF_PLAIN_FROM, b]:
        # Plain head: bucket-level eligibility decides, from the cached head time alone.
        st = stage_of(q, now - bucket_f[BF_HEAD_TIME, b], queue_i, step_after)
        rs = bucket_i[BI_REQSET, b]
        maxpen = -1
        if st >= 0:
            if step_reqset[q, st] >= 0:
                rs = step_reqset[q, st]
            maxpen = step_maxpen[q, st]
        for i in range(n_free):
            if _bucket_eligible(
                free_list[i],
                q,
                ch,
                rs,
                maxpen,
                now,
                skills,
                penalty,
                cap,
                load,
                agent_f,
                reqset_skill,
                reqset_level,
                reqset_len,
            ):
                return t
        if bucket_i[BI_MONOTONE, b] != 0:
            return -1
        t = task_i[t, TI_NEXT]
    while t >= 0:
        rs, maxpen = _task_rule(
            t, b, now, task_f, bucket_i, queue_i, step_after, step_reqset, step_maxpen
        )
        if _any_free_eligible(
            t,
            q,
            rs,
            maxpen,
            now,
            skills,
            penalty,
            cap,
            load,
            agent_f,
            task_i,
            task_f,
            task_excl,
            reqset_skill,
            reqset_level,
            reqset_len,
            free_list,
            n_free,
        ):
            return t
        plain = task_i[t, TI_N_EXCL] == 0 and (
            task_i[t, TI_PREF] < 0 or now >= task_f[t, TF_PREF_UNTIL]
        )
        if plain and bucket_i[BI_MONOTONE, b] != 0:
            return -1
        t = task_i[t, TI_NEXT]
    return -1


@jit_inline
def cache_head(b, task_i, task_f, task_seq, bucket_i, bucket_f):  # type: ignore[no-untyped-def]
    """Copy the key and plainness of bucket b's head into bucket_f (call whenever the head changes)."""
    h = bucket_i[BI_HEAD, b]
    if h < 0:
        return
    bucket_f[BF_HEAD_TIME, b] = task_f[h, TF_TIME]
    bucket_f[BF_HEAD_SEQ, b] = float(task_seq[h])
    if task_i[h, TI_N_EXCL] > 0:
        bucket_f[BF_PLAIN_FROM, b] = np.inf
    elif task_i[h, TI_PREF] >= 0:
        bucket_f[BF_PLAIN_FROM, b] = task_f[h, TF_PREF_UNTIL]
    else:
        bucket_f[BF_PLAIN_FROM, b] = -np.inf


@jit_inline
def _unlink(t, task_i, task_f, task_seq, bucket_i, bucket_f):  # type: ignore[no-untyped-def]
    b = task_i[t, TI_BUCKET]
    p = task_i[t, TI_PREV]
    n = task_i[t, TI_NEXT]
    if p >= 0:
        task_i[p, TI_NEXT] = n
    else:
        bucket_i[BI_HEAD, b] = n
        cache_head(b, task_i, task_f, task_seq, bucket_i, bucket_f)
    if n >= 0:
        task_i[n, TI_PREV] = p
    else:
        bucket_i[BI_TAIL, b] = p
    task_i[t, TI_NEXT] = -1
    task_i[t, TI_PREV] = -1
    bucket_i[BI_COUNT, b] -= 1


@jit_inline
def _remove_sorted(arr, n, a):  # type: ignore[no-untyped-def]
    """Remove value a from the sorted prefix arr[:n]; returns the new length."""
    i = np.searchsorted(arr[:n], a)
    if i >= n or arr[i] != a:
        return n
    for j in range(i, n - 1):
        arr[j] = arr[j + 1]
    return n - 1


@jit_inline
def _reserve(a, ch, cap, load, free_list, in_free, counters):  # type: ignore[no-untyped-def]
    """Take one unit of channel ch from agent a; drop a from the free list when it has none left.
    Returns True if a left the free list."""
    load[a, ch] += 1
    for c in range(cap.shape[1]):
        if load[a, c] < cap[a, c]:
            return False
    counters[CN_FREE] = _remove_sorted(free_list, counters[CN_FREE], a)
    in_free[a] = 0
    return True


@jit_inline
def _memo_key(a, agent_queues, agent_nq, q_ver):  # type: ignore[no-untyped-def]
    """Sum of the versions of a's queues; versions only grow, so any change changes the sum."""
    k = np.int64(0)
    for j in range(agent_nq[a]):
        k += q_ver[agent_queues[a, j]]
    return k


@jit
def _dispatch(  # type: ignore[no-untyped-def]
    now,
    skills,
    penalty,
    member_pos,
    cap,
    load,
    agent_f,
    agent_calls,
    free_list,
    in_free,
    counters,
    task_i,
    task_f,
    task_seq,
    task_excl,
    bucket_i,
    reqset_skill,
    reqset_level,
    reqset_len,
    queue_i,
    step_after,
    step_reqset,
    step_maxpen,
    rng_buf,
    out_task,
    out_agent,
    q_ver,
    agent_memo,
    agent_queues,
    agent_nq,
    q_buckets,
    q_nb,
    bucket_f,
    active,
    cursor,
    cands,
    agent_state,
    task_state,
):
    """Offer waiting tasks to free agents in task order; returns the number of offers written.

    Agents whose memo says "nothing eligible" and whose queues did not change since (q_ver) are
    skipped; only buckets of the queues of the remaining (active) agents are searched. When the call
    ends every active agent still free has no eligible task (work conservation) and gets its memo.
    `active`, `cursor` and `cands` are caller-owned scratch; `cursor` must hold -2 everywhere on entry
    and is left that way on return (only the searched buckets are reset: O(searched), not O(buckets)).
    """
    n_free = counters[CN_FREE]
    if n_free == 0:
        return 0
    n_act = 0
    for i in range(n_free):
        a = free_list[i]
        if agent_memo[a] < 0 or agent_memo[a] != _memo_key(a, agent_queues, agent_nq, q_ver):
            active[n_act] = a
            n_act += 1
    if n_act == 0:
        return 0
    n_cands = 0  # cursor[b] == -2: bucket b not searched in this call
    for i in range(n_act):
        a = active[i]
        for j in range(agent_nq[a]):
            q = agent_queues[a, j]
            for k in range(q_nb[q]):
                b = q_buckets[q, k]
                if cursor[b] != -2:
                    continue
                cursor[b] = _advance(
                    b,
                    bucket_i[BI_HEAD, b],
                    now,
                    skills,
                    penalty,
                    cap,
                    load,
                    agent_f,
                    task_i,
                    task_f,
                    task_excl,
                    bucket_i,
                    bucket_f,
                    reqset_skill,
                    reqset_level,
                    reqset_len,
                    queue_i,
                    step_after,
                    step_reqset,
                    step_maxpen,
                    active,
                    n_act,
                )
                cands[n_cands] = b
                n_cands += 1
    n_out = 0
    cap_out = out_task.shape[0]
    done = True  # False only if the output buffer filled up before the search ended
    while n_act > 0:
        if n_out >= cap_out:
            done = False
            break
        best = -1
        for i in range(n_cands):
            b = cands[i]
            if cursor[b] >= 0 and (
                best < 0
                or _before(
                    cursor[b], b, cursor[best], best, task_f, task_seq, bucket_i, bucket_f, queue_i
                )
            ):
                best = b
        if best < 0:
            break
        t = cursor[best]
        q = bucket_i[BI_QUEUE, best]
        ch = task_i[t, TI_CHANNEL]
        rs, maxpen = _task_rule(
            t, best, now, task_f, bucket_i, queue_i, step_after, step_reqset, step_maxpen
        )
        strategy = queue_i[QI_STRATEGY, q]
        # Pass 1: lowest penalty tier among eligible agents, best key in it, count and weights.
        best_a = -1
        best_pen = 0
        best_key = 0.0
        tier_count = 0
        tier_weight = 0
        for i in range(n_act):
            a = active[i]
            if penalty[q, a] < 0 or not _eligible(
                a,
                t,
                q,
                rs,
                maxpen,
                now,
                skills,
                penalty,
                cap,
                load,
                agent_f,
                task_i,
                task_f,
                task_excl,
                reqset_skill,
                reqset_level,
                reqset_len,
            ):
                continue
            pen = penalty[q, a]
            key = _key(
                strategy,
                a,
                q,
                rs,
                skills,
                member_pos,
                agent_f,
                agent_calls,
                queue_i,
                reqset_skill,
                reqset_len,
            )
            w = 1 + _score(a, rs, skills, reqset_skill, reqset_len)
            if best_a < 0 or pen < best_pen:
                best_a = a
                best_pen = pen
                best_key = key
                tier_count = 1
                tier_weight = w
            elif pen == best_pen:
                tier_count += 1
                tier_weight += w
                if key < best_key:
                    best_a = a
                    best_key = key
        if best_a < 0:
            # Stale cursor: an earlier offer in this call took the only eligible agents.
            plain = task_i[t, TI_N_EXCL] == 0 and (
                task_i[t, TI_PREF] < 0 or now >= task_f[t, TF_PREF_UNTIL]
            )
            if plain and bucket_i[BI_MONOTONE, best] != 0:
                cursor[best] = -1
            else:
                cursor[best] = _advance(
                    best,
                    task_i[t, TI_NEXT],
                    now,
                    skills,
                    penalty,
                    cap,
                    load,
                    agent_f,
                    task_i,
                    task_f,
                    task_excl,
                    bucket_i,
                    bucket_f,
                    reqset_skill,
                    reqset_level,
                    reqset_len,
                    queue_i,
                    step_after,
                    step_reqset,
                    step_maxpen,
                    active,
                    n_act,
                )
            continue
        first = n_out
        if strategy == S_RING_ALL:
            for i in range(n_act):
                a = active[i]
                if (
                    n_out < cap_out
                    and penalty[q, a] == best_pen
                    and _eligible(
                        a,
                        t,
                        q,
                        rs,
                        maxpen,
                        now,
                        skills,
                        penalty,
                        cap,
                        load,
                        agent_f,
                        task_i,
                        task_f,
                        task_excl,
                        reqset_skill,
                        reqset_level,
                        reqset_len,
                    )
                ):
                    out_task[n_out] = t
                    out_agent[n_out] = a
                    n_out += 1
        else:
            chosen = best_a
            if strategy in (S_RANDOM, S_WEIGHTED_RANDOM):
                pos = counters[CN_RNG_POS]
                u = rng_buf[pos % rng_buf.shape[0]]
                counters[CN_RNG_POS] = pos + 1
                total = tier_count if strategy == S_RANDOM else tier_weight
                target = np.int64(u * total)
                if target >= total:  # u < 1, but guard float rounding
                    target = np.int64(total - 1)
                acc = 0
                for i in range(n_act):
                    a = active[i]
                    if penalty[q, a] != best_pen or not _eligible(
                        a,
                        t,
                        q,
                        rs,
                        maxpen,
                        now,
                        skills,
                        penalty,
                        cap,
                        load,
                        agent_f,
                        task_i,
                        task_f,
                        task_excl,
                        reqset_skill,
                        reqset_level,
                        reqset_len,
                    ):
                        continue
                    if strategy == S_RANDOM:
                        acc += 1
                    else:
                        acc += 1 + _score(a, rs, skills, reqset_skill, reqset_len)
                    if acc > target:
                        chosen = a
                        break
            out_task[n_out] = t
            out_agent[n_out] = chosen
            n_out += 1
        task_state[t] = TASK_OFFERED
        for k in range(first, n_out):
            a = out_agent[k]
            agent_state[a] = AGENT_RESERVED
            if _reserve(a, ch, cap, load, free_list, in_free, counters):
                n_act = _remove_sorted(active, n_act, a)
            if strategy == S_ROUND_ROBIN:
                queue_i[QI_RR_LAST, q] = member_pos[q, a]
        nxt = task_i[t, TI_NEXT]
        _unlink(t, task_i, task_f, task_seq, bucket_i, bucket_f)
        cursor[best] = _advance(
            best,
            nxt,
            now,
            skills,
            penalty,
            cap,
            load,
            agent_f,
            task_i,
            task_f,
            task_excl,
            bucket_i,
            bucket_f,
            reqset_skill,
            reqset_level,
            reqset_len,
            queue_i,
            step_after,
            step_reqset,
            step_maxpen,
            active,
            n_act,
        )
    for i in range(n_act if done else 0):
        a = active[i]
        agent_memo[a] = _memo_key(a, agent_queues, agent_nq, q_ver)
    for i in range(n_cands):
        cursor[cands[i]] = -2
    return n_out


@jit_inline
def _v1(buf, layout, slot):  # type: ignore[no-untyped-def]
    """1-D view of arena `buf` for `slot` (no copy)."""
    o = layout[slot, 0]
    return buf[o : o + layout[slot, 1]]


@jit_inline
def _v2(buf, layout, slot):  # type: ignore[no-untyped-def]
    """2-D C-contiguous view of arena `buf` for `slot` (no copy)."""
    o = layout[slot, 0]
    n0 = layout[slot, 1]
    n1 = layout[slot, 2]
    return view_2d(buf[o : o + n0 * n1], n0, n1)


@jit
def dispatch_kernel(now, i32, i64, f64, u8, layout):  # type: ignore[no-untyped-def]
    """`_dispatch` on the arenas (see the P_* slots): (number of offers written, task and agent of the
    first offer or -1). The steady state makes one offer per call, and returning it here spares the
    Router two numpy reads."""
    counters = _v1(i64, layout, P_COUNTERS)
    out_task = _v1(i32, layout, P_OUT_TASK)
    out_agent = _v1(i32, layout, P_OUT_AGENT)
    n = _dispatch(
        now,
        _v2(u8, layout, P_SKILLS),
        _v2(i32, layout, P_PENALTY),
        _v2(i32, layout, P_MEMBER_POS),
        _v2(i32, layout, P_CAP),
        _v2(i32, layout, P_LOAD),
        _v2(f64, layout, P_AGENT_F),
        _v1(i64, layout, P_AGENT_CALLS),
        _v1(i32, layout, P_FREE_LIST),
        _v1(u8, layout, P_IN_FREE),
        counters,
        _v2(i32, layout, P_TASK_I),
        _v2(f64, layout, P_TASK_F),
        _v1(i64, layout, P_TASK_SEQ),
        _v2(i32, layout, P_TASK_EXCL),
        _v2(i32, layout, P_BUCKET_I),
        _v2(i32, layout, P_REQSET_SKILL),
        _v2(i32, layout, P_REQSET_LEVEL),
        _v1(i32, layout, P_REQSET_LEN),
        _v2(i32, layout, P_QUEUE_I),
        _v2(f64, layout, P_STEP_AFTER),
        _v2(i32, layout, P_STEP_REQSET),
        _v2(i32, layout, P_STEP_MAXPEN),
        _v1(f64, layout, P_RNG_BUF),
        out_task,
        out_agent,
        _v1(i64, layout, P_Q_VER),
        _v1(i64, layout, P_AGENT_MEMO),
        _v2(i32, layout, P_AGENT_QUEUES),
        _v1(i32, layout, P_AGENT_NQ),
        _v2(i32, layout, P_Q_BUCKETS),
        _v1(i32, layout, P_Q_NB),
        _v2(f64, layout, P_BUCKET_F),
        _v1(i32, layout, P_ACTIVE),
        _v1(i32, layout, P_CURSOR),
        _v1(i32, layout, P_CANDS),
        _v1(u8, layout, P_AGENT_STATE),
        _v1(u8, layout, P_TASK_STATE),
    )
    if n == 0:
        return n, np.int64(-1), np.int64(-1)
    return n, np.int64(out_task[0]), np.int64(out_agent[0])


@jit
def free_set(a, want, free_list, in_free, counters):  # type: ignore[no-untyped-def]
    """Insert (want) or remove agent a in the sorted free list; the Router calls this only when a's
    membership changes, so one compiled binary search and shift replaces several numpy calls."""
    n = counters[CN_FREE]
    if want:
        i = np.searchsorted(free_list[:n], a)
        for j in range(n, i, -1):
            free_list[j] = free_list[j - 1]
        free_list[i] = a
        counters[CN_FREE] = n + 1
        in_free[a] = 1
    else:
        counters[CN_FREE] = _remove_sorted(free_list, n, a)
        in_free[a] = 0
