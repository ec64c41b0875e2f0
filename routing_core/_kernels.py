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
earlier offer is re-checked when it wins the merge. Cursors are found lazily: a bucket's cursor sorts at
or after its head, so the merge ranks unchecked buckets by their heads and advances one only when its
head wins; most buckets of a steady-state dispatch are never checked. A bucket whose relaxation steps
only ever widen eligibility (`monotone`) is closed as soon as a task without preferred agent or
exclusions is ineligible: newer tasks of the bucket waited less and cannot be eligible either.

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

from routing_core._jit import arena_1d, arena_2d, jit, jit_inline

# Row indices of the packed per-entity arrays (kernel ABI shared with router.py and the tests).
AF_LAST_IDLE = 0  # agent float rows
AF_TALK_S = 1
AF_BLOCKED_UNTIL = 2
AF_ROWS = 3

# Task and bucket records are rows `[task or bucket, field]` padded to 32 bytes: in the 64-byte aligned
# arena no record straddles two cache lines, and a bucket or task is judged from one line (its float
# record from a second).
TI_BUCKET = 0  # task int fields
TI_NEXT = 1
TI_PREV = 2
TI_PREF = 3
TI_CHANNEL = 4
TI_N_EXCL = 5
TI_QUEUE = 6
TI_ROWS = 8  # field 7 is padding

TF_TIME = 0  # task float fields: effective enqueue time, preferred-agent deadline
TF_PREF_UNTIL = 1
TF_ROWS = 2

BI_HEAD = 0  # bucket int fields
BI_TAIL = 1
BI_QUEUE = 2
BI_PRIO = 3
BI_REQSET = 4
BI_MONOTONE = 5
BI_COUNT = 6
BI_CHANNEL = 7
BI_ROWS = 8

BF_HEAD_TIME = 0  # bucket float fields: a copy of the head task's key, so a bucket can be judged
BF_HEAD_SEQ = 1  # without touching the head's (cache-cold) task rows
BF_PLAIN_FROM = 2  # from this time on the head has no active preferred agent and no exclusions
BF_ROWS = 4  # field 3 is padding

QI_STRATEGY = 0  # queue int fields, rows `[queue, field]` padded to 32 bytes like the records above
QI_WEIGHT = 1
QI_N_STEPS = 2
QI_RR_LAST = 3
QI_N_POS = 4
QI_ROWS = 8  # fields 5-7 are padding

# Per-bucket dispatch cursor (scratch): a task index, or one of these.
CURSOR_IDLE = -2  # not a candidate in this call (every cursor holds this between calls)
CURSOR_NONE = -1  # no task of the bucket can be taken by an active agent
CURSOR_UNCHECKED = -3  # the bucket's head, not yet advanced (see `_dispatch`)

CN_FREE = 0  # counters
CN_RNG_POS = 1
CN_ROWS = 2

# The states the kernel writes for each offer, so the Router does not write them from Python (a numpy
# scalar store costs as much as several list operations): AgentState.RESERVED and the Router's
# task state "offered" (a test checks both against their sources).
AGENT_RESERVED = 2
TASK_OFFERED = 2

# Arena slots. The Router keeps every kernel array as a view into one byte buffer, the arena, and passes
# the kernel `now` and the arena alone: numba unboxes every array argument, ~0.2 us each on a cache-cold
# slow core, so two arguments instead of 35 save several us per dispatch. The arena opens with the
# layout, P_SLOTS rows of int64 `(byte offset, rows, cols)`, then holds each array, C-ordered and
# 64-byte aligned. The kernel rebuilds the typed views with `arena_1d`/`arena_2d`, which allocate
# nothing, check nothing and call no C helper (a slice and `reshape` per array cost ~0.9 us a dispatch).
# The dtype each slot is viewed as is the one named below; the Router's table lists the same.
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
    for i in range(queue_i[q, QI_N_STEPS]):
        if wait_s >= step_after[q, i]:
            s = i
        else:
            break
    return s


@jit_inline
def _task_rule(t, b, now, task_f, bucket_i, queue_i, step_after, step_reqset, step_maxpen):  # type: ignore[no-untyped-def]
    """(requirement set, max penalty or -1) that apply to task t at `now`."""
    q = bucket_i[b, BI_QUEUE]
    st = stage_of(q, now - task_f[t, TF_TIME], queue_i, step_after)
    rs = bucket_i[b, BI_REQSET]
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
        last = queue_i[q, QI_RR_LAST]
        if pos > last:
            return float(pos - last - 1)
        return float(pos - last - 1 + queue_i[q, QI_N_POS])
    if strategy == S_LINEAR:
        return float(member_pos[q, a])
    return 0.0


@jit_inline
def _before(t1, b1, t2, b2, task_f, task_seq, bucket_i, bucket_f, queue_i):  # type: ignore[no-untyped-def]
    """True if task t1 (bucket b1) comes before t2 (bucket b2) in global task order."""
    p1 = bucket_i[b1, BI_PRIO]
    p2 = bucket_i[b2, BI_PRIO]
    if p1 != p2:
        return p1 > p2
    w1 = queue_i[bucket_i[b1, BI_QUEUE], QI_WEIGHT]
    w2 = queue_i[bucket_i[b2, BI_QUEUE], QI_WEIGHT]
    if w1 != w2:
        return w1 > w2
    # A head's key comes from the bucket's cached copy: no task row is read for it.
    h1 = t1 == bucket_i[b1, BI_HEAD]
    h2 = t2 == bucket_i[b2, BI_HEAD]
    x1 = bucket_f[b1, BF_HEAD_TIME] if h1 else task_f[t1, TF_TIME]
    x2 = bucket_f[b2, BF_HEAD_TIME] if h2 else task_f[t2, TF_TIME]
    if x1 != x2:
        return x1 < x2
    s1 = bucket_f[b1, BF_HEAD_SEQ] if h1 else float(task_seq[t1])
    s2 = bucket_f[b2, BF_HEAD_SEQ] if h2 else float(task_seq[t2])
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
    q = bucket_i[b, BI_QUEUE]
    ch = bucket_i[b, BI_CHANNEL]
    if t < 0 or not _reachable(q, ch, now, penalty, cap, load, agent_f, free_list, n_free):
        return -1
    if t == bucket_i[b, BI_HEAD] and now >= bucket_f[b, BF_PLAIN_FROM]:
        # Plain head: bucket-level eligibility decides, from the cached head time alone.
        st = stage_of(q, now - bucket_f[b, BF_HEAD_TIME], queue_i, step_after)
        rs = bucket_i[b, BI_REQSET]
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
        if bucket_i[b, BI_MONOTONE] != 0:
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
        if plain and bucket_i[b, BI_MONOTONE] != 0:
            return -1
        t = task_i[t, TI_NEXT]
    return -1


@jit_inline
def cache_head(b, task_i, task_f, task_seq, bucket_i, bucket_f):  # type: ignore[no-untyped-def]
    """Copy the key and plainness of bucket b's head into bucket_f (call whenever the head changes)."""
    h = bucket_i[b, BI_HEAD]
    if h < 0:
        return
    bucket_f[b, BF_HEAD_TIME] = task_f[h, TF_TIME]
    bucket_f[b, BF_HEAD_SEQ] = float(task_seq[h])
    if task_i[h, TI_N_EXCL] > 0:
        bucket_f[b, BF_PLAIN_FROM] = np.inf
    elif task_i[h, TI_PREF] >= 0:
        bucket_f[b, BF_PLAIN_FROM] = task_f[h, TF_PREF_UNTIL]
    else:
        bucket_f[b, BF_PLAIN_FROM] = -np.inf


@jit_inline
def _unlink(t, task_i, task_f, task_seq, bucket_i, bucket_f):  # type: ignore[no-untyped-def]
    b = task_i[t, TI_BUCKET]
    p = task_i[t, TI_PREV]
    n = task_i[t, TI_NEXT]
    if p >= 0:
        task_i[p, TI_NEXT] = n
    else:
        bucket_i[b, BI_HEAD] = n
        cache_head(b, task_i, task_f, task_seq, bucket_i, bucket_f)
    if n >= 0:
        task_i[n, TI_PREV] = p
    else:
        bucket_i[b, BI_TAIL] = p
    task_i[t, TI_NEXT] = -1
    task_i[t, TI_PREV] = -1
    bucket_i[b, BI_COUNT] -= 1


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
    `active`, `cursor` and `cands` are caller-owned scratch; `cursor` must hold CURSOR_IDLE everywhere
    on entry and is left that way on return (only the candidates are reset: O(candidates), not
    O(buckets)).
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
    # Candidate buckets: those of the active agents' queues. Their cursors start unchecked (the head,
    # not yet advanced past tasks no active agent may take): a bucket is advanced only when its head
    # wins the merge, since an advanced cursor only ever sorts later than the head. Most buckets never
    # win, so their eligibility (agent, requirement and skill rows, cache-cold) is never read.
    n_cands = 0
    for i in range(n_act):
        a = active[i]
        for j in range(agent_nq[a]):
            q = agent_queues[a, j]
            for k in range(q_nb[q]):
                b = q_buckets[q, k]
                if cursor[b] != CURSOR_IDLE:
                    continue
                cursor[b] = CURSOR_UNCHECKED if bucket_i[b, BI_HEAD] >= 0 else CURSOR_NONE
                cands[n_cands] = b
                n_cands += 1
    n_out = 0
    lazy = True  # check only the winning candidate (see below)
    cap_out = out_task.shape[0]
    done = True  # False only if the output buffer filled up before the search ended
    while n_act > 0:
        if n_out >= cap_out:
            done = False
            break
        best = -1
        t = -1
        for i in range(n_cands):
            b = cands[i]
            c = cursor[b]
            if c == CURSOR_UNCHECKED:
                c = bucket_i[b, BI_HEAD]
            if c >= 0 and (
                best < 0 or _before(c, b, t, best, task_f, task_seq, bucket_i, bucket_f, queue_i)
            ):
                best = b
                t = c
        if best < 0:
            break
        if cursor[best] == CURSOR_UNCHECKED:
            # Its head sorts first: advance it to its first task an active agent may take, then merge
            # again (every other candidate's true cursor sorts at or after its own head). Checking one
            # candidate per merge pays off while heads prove takeable (the steady state: one freed
            # agent takes the first head it is checked against). Once a head proved untakeable or an
            # offer was made, every unchecked candidate is advanced at once instead, so a call makes
            # O(1) extra merges rather than one per candidate.
            for i in range(n_cands):
                b = cands[i]
                if cursor[b] == CURSOR_UNCHECKED and (b == best or not lazy):
                    cursor[b] = _advance(
                        b,
                        bucket_i[b, BI_HEAD],
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
            if cursor[best] != t:
                lazy = False
            continue
        q = bucket_i[best, BI_QUEUE]
        ch = task_i[t, TI_CHANNEL]
        rs, maxpen = _task_rule(
            t, best, now, task_f, bucket_i, queue_i, step_after, step_reqset, step_maxpen
        )
        strategy = queue_i[q, QI_STRATEGY]
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
            if plain and bucket_i[best, BI_MONOTONE] != 0:
                cursor[best] = CURSOR_NONE
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
        lazy = False
        for k in range(first, n_out):
            a = out_agent[k]
            agent_state[a] = AGENT_RESERVED
            if _reserve(a, ch, cap, load, free_list, in_free, counters):
                n_act = _remove_sorted(active, n_act, a)
            if strategy == S_ROUND_ROBIN:
                queue_i[q, QI_RR_LAST] = member_pos[q, a]
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
        cursor[cands[i]] = CURSOR_IDLE
    return n_out


@jit_inline
def _v1(arena, layout, slot, dtype):  # type: ignore[no-untyped-def]
    """1-D view of the arena's `slot` as `dtype` (no copy)."""
    return arena_1d(arena, layout[slot, 0], layout[slot, 1], dtype)


@jit_inline
def _v2(arena, layout, slot, dtype):  # type: ignore[no-untyped-def]
    """2-D C-contiguous view of the arena's `slot` as `dtype` (no copy)."""
    return arena_2d(arena, layout[slot, 0], layout[slot, 1], layout[slot, 2], dtype)


@jit
def dispatch_kernel(now, arena):  # type: ignore[no-untyped-def]
    """`_dispatch` on the arena (layout and P_* slots above). Returns one int64: when exactly one offer
    was made (the steady state) its task and agent as `task << 32 | agent` (>= 0), else `-1 - n` for n
    offers (< 0) left in the output slots. A returned tuple would cost the Router ~0.4 us to box and
    unpack, and reading the first offer from the output arrays two numpy scalar reads."""
    layout = arena_2d(arena, 0, P_SLOTS, 3, np.int64)
    out_task = _v1(arena, layout, P_OUT_TASK, np.int32)
    out_agent = _v1(arena, layout, P_OUT_AGENT, np.int32)
    n = _dispatch(
        now,
        _v2(arena, layout, P_SKILLS, np.uint8),
        _v2(arena, layout, P_PENALTY, np.int32),
        _v2(arena, layout, P_MEMBER_POS, np.int32),
        _v2(arena, layout, P_CAP, np.int32),
        _v2(arena, layout, P_LOAD, np.int32),
        _v2(arena, layout, P_AGENT_F, np.float64),
        _v1(arena, layout, P_AGENT_CALLS, np.int64),
        _v1(arena, layout, P_FREE_LIST, np.int32),
        _v1(arena, layout, P_IN_FREE, np.uint8),
        _v1(arena, layout, P_COUNTERS, np.int64),
        _v2(arena, layout, P_TASK_I, np.int32),
        _v2(arena, layout, P_TASK_F, np.float64),
        _v1(arena, layout, P_TASK_SEQ, np.int64),
        _v2(arena, layout, P_TASK_EXCL, np.int32),
        _v2(arena, layout, P_BUCKET_I, np.int32),
        _v2(arena, layout, P_REQSET_SKILL, np.int32),
        _v2(arena, layout, P_REQSET_LEVEL, np.int32),
        _v1(arena, layout, P_REQSET_LEN, np.int32),
        _v2(arena, layout, P_QUEUE_I, np.int32),
        _v2(arena, layout, P_STEP_AFTER, np.float64),
        _v2(arena, layout, P_STEP_REQSET, np.int32),
        _v2(arena, layout, P_STEP_MAXPEN, np.int32),
        _v1(arena, layout, P_RNG_BUF, np.float64),
        out_task,
        out_agent,
        _v1(arena, layout, P_Q_VER, np.int64),
        _v1(arena, layout, P_AGENT_MEMO, np.int64),
        _v2(arena, layout, P_AGENT_QUEUES, np.int32),
        _v1(arena, layout, P_AGENT_NQ, np.int32),
        _v2(arena, layout, P_Q_BUCKETS, np.int32),
        _v1(arena, layout, P_Q_NB, np.int32),
        _v2(arena, layout, P_BUCKET_F, np.float64),
        _v1(arena, layout, P_ACTIVE, np.int32),
        _v1(arena, layout, P_CURSOR, np.int32),
        _v1(arena, layout, P_CANDS, np.int32),
        _v1(arena, layout, P_AGENT_STATE, np.uint8),
        _v1(arena, layout, P_TASK_STATE, np.uint8),
    )
    if n == 1:
        return (np.int64(out_task[0]) << 32) | np.int64(out_agent[0])
    return np.int64(-1 - n)


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
