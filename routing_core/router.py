"""The Router: validating Python API around the struct-of-arrays routing state and the dispatch kernel.

How this works. Agent and task ids are strings at the API and dense indices inside. Everything the kernel
reads is a numpy array owned here (skills, queue penalties and positions, channel capacity and load,
timers, packed task and bucket rows; row layouts in `_kernels`). Python keeps what the kernel never needs
(offer maps, timer heap, reasons) and changes agent states only through `_set_state`, which checks the
table in `routing_core.states`.

Ordering rules (documented choices):
- Tasks: priority desc (with a queue's `priority_aging_per_min`, the priority given plus one point per
  1/rate minutes waited, moved up by a timer per task), then queue weight desc (Asterisk `weight` as a leading key, so a heavier queue
  wins an agent shared with a lighter one), then effective enqueue time asc, then arrival sequence asc.
- Agents: lowest queue penalty tier first (Asterisk: higher penalties only when no lower is free), then
  the queue strategy key, then agent index.
- A "miss" for auto-pause is any reject reason ("reject", "busy", "no_answer"); accept resets the count.
- The preferred agent must still meet the task's requirements; until the timeout nobody else is eligible.
- `waiting(queue)` counts tasks not yet accepted (waiting or offered), as a caller in the queue sees it.

Timers (wrap-up end, reject delays, retry delays, relaxation steps, preferred-agent timeouts, aging points)
sit in one heap;
`dispatch(now)` applies those due and `next_deadline()` reports the earliest, sans-I/O style.

Speed (every API call is on the daemon's and the simulator's hot path):
- Every kernel array is a view into one byte buffer (the arena, `_ARENA_SLOTS`; layout in `_kernels`),
  and the kernel takes `now` and the arena alone, called through its compiled entry point rather than
  numba's dispatcher: numba unboxes 2 arguments instead of 35 and types none of them. Growth rebinds
  an attribute to a larger copy and `_pack` rebuilds the arena before the next dispatch.
- What Python reads on every call has a Python-list mirror written together with the array the kernel
  or the tests read: agent state codes (`_st`), free capacity units (`_spare`), free-list membership,
  and the task fields the kernel never writes (queue, channel, time, sequence, preference,
  exclusions, task state). States are compared as ints; AgentState objects are built only at the API.
- The kernel itself writes what it decided (capacity, free list, agent RESERVED, task offered) and
  returns the first offer; for each offer Python only updates its mirrors and builds the Offer, and
  the steady-state case (one offer) does so inline in `dispatch`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from routing_core import _kernels as K
from routing_core._jit import cache_counts, entry_point
from routing_core.states import EVENT_ALLOWED_FROM, ROUTABLE_STATES, transition_allowed
from routing_core.types import (
    AgentState,
    CapacityExceeded,
    InvalidArgument,
    InvalidTransition,
    Offer,
    QueueFull,
    QueueSpec,
    Requirement,
    RoutingError,
    Strategy,
    UnknownAgent,
    UnknownQueue,
    UnknownTask,
)

# voice, chat, email, callback, social, ticket: the media types contact centers route (Amazon
# Connect has voice, chat and task; Twilio TaskRouter any number of named channels). The engine
# names them (engine.routing.service.CHANNELS); here a channel is only an index.
MAX_CHANNELS: Final = 6
MAX_REQUIREMENTS: Final = (
    16  # requirements per task; Genesys/Connect allow ~10-20 skills per routing step
)
MAX_LEVEL: Final = 255  # proficiency is a uint8; 0 means "lacks the skill"
MAX_PRIORITY: Final = 2**31 - 1  # stored in int32 bucket rows
RNG_BUFFER: Final = 4096  # uniforms drawn per refill; one is used per RANDOM/WEIGHTED_RANDOM offer
REJECT_REASONS: Final = ("reject", "busy", "no_answer")
AUTO_PAUSE_REASON: Final = "auto-paused"

# Task states (Python side only).
_T_WAITING: Final = 1
_T_OFFERED: Final = K.TASK_OFFERED  # the dispatch kernel writes this one
_T_ASSIGNED: Final = 3
_T_RETRY: Final = 4  # rang without answer; back to waiting when its queue's retry_delay_s is over

# Timer kinds in the heap.
_TM_WRAP_END: Final = 0
_TM_UNBLOCK: Final = 1
_TM_TASK: Final = 2
_TM_RETRY: Final = 3
_TM_AGE: Final = 4  # a waiting task's aged priority reaches its next point

_ROUTABLE_CODES: Final = frozenset(int(s) for s in ROUTABLE_STATES)
# Agent states as plain ints: hot paths compare the Python mirror `_st` against these, because building
# an AgentState costs ~0.4 us and comparing ints ~0.03 us.
_LOGGED_OUT: Final = int(AgentState.LOGGED_OUT)
_AVAILABLE: Final = int(AgentState.AVAILABLE)
_RESERVED: Final = int(AgentState.RESERVED)
_BUSY: Final = int(AgentState.BUSY)
_WRAP_UP: Final = int(AgentState.WRAP_UP)
_NOT_READY: Final = int(AgentState.NOT_READY)
_EVENT_CODES: Final = {ev: frozenset(int(s) for s in sts) for ev, sts in EVENT_ALLOWED_FROM.items()}
# The state table as int pairs: the hot path compares the int codes of the `_st` mirror, and IntEnum
# construction or numpy scalar comparisons cost far more than an int-tuple set lookup.
_ALLOWED_CODES: Final = frozenset(
    (int(old), int(new)) for old in AgentState for new in AgentState if transition_allowed(old, new)
)


_ArrT = TypeVar("_ArrT", bound=npt.NDArray[Any])

# Offer is a frozen slotted dataclass whose generated __init__ sets each field via object.__setattr__
# (~0.43 us); writing the three slots through their descriptors builds the identical object (same
# fields, equality, hash and repr) in about half that, once per offer on the dispatch hot path.
_new_object = object.__new__
_SET_OFFER_TASK: Final = Offer.__dict__["task_id"].__set__
_SET_OFFER_AGENT: Final = Offer.__dict__["agent_id"].__set__
_SET_OFFER_QUEUE: Final = Offer.__dict__["queue"].__set__

# The Router arrays in the arena, by the dtype the kernel views them as (see `_kernels.P_*`). Their order
# is irrelevant to the kernel, which reads offsets and shapes from the layout at the arena's start.
_ARENA_SLOTS: Final = (
    (
        np.int32,
        (
            (K.P_PENALTY, "_penalty"),
            (K.P_MEMBER_POS, "_member_pos"),
            (K.P_CAP, "_cap"),
            (K.P_LOAD, "_load"),
            (K.P_FREE_LIST, "_free_list"),
            (K.P_TASK_I, "_task_i"),
            (K.P_TASK_EXCL, "_task_excl"),
            (K.P_BUCKET_I, "_bucket_i"),
            (K.P_REQSET_SKILL, "_reqset_skill"),
            (K.P_REQSET_LEVEL, "_reqset_level"),
            (K.P_REQSET_LEN, "_reqset_len"),
            (K.P_QUEUE_I, "_queue_i"),
            (K.P_STEP_REQSET, "_step_reqset"),
            (K.P_STEP_MAXPEN, "_step_maxpen"),
            (K.P_OUT_TASK, "_out_task"),
            (K.P_OUT_AGENT, "_out_agent"),
            (K.P_AGENT_QUEUES, "_agent_queues"),
            (K.P_AGENT_NQ, "_agent_nq"),
            (K.P_Q_BUCKETS, "_q_buckets"),
            (K.P_Q_NB, "_q_nb"),
            (K.P_ACTIVE, "_scratch_active"),
            (K.P_CURSOR, "_scratch_cursor"),
            (K.P_CANDS, "_scratch_cands"),
        ),
    ),
    (
        np.int64,
        (
            (K.P_AGENT_CALLS, "_agent_calls"),
            (K.P_COUNTERS, "_counters"),
            (K.P_TASK_SEQ, "_task_seq"),
            (K.P_Q_VER, "_q_ver"),
            (K.P_AGENT_MEMO, "_agent_memo"),
        ),
    ),
    (
        np.float64,
        (
            (K.P_AGENT_F, "_agent_f"),
            (K.P_TASK_F, "_task_f"),
            (K.P_STEP_AFTER, "_step_after"),
            (K.P_RNG_BUF, "_rng_buf"),
            (K.P_BUCKET_F, "_bucket_f"),
        ),
    ),
    (
        np.uint8,
        (
            (K.P_SKILLS, "_skills"),
            (K.P_IN_FREE, "_in_free"),
            (K.P_AGENT_STATE, "_state"),
            (K.P_TASK_STATE, "_task_state"),
        ),
    ),
)


_ARENA_ALIGN: Final = 64  # bytes: every array starts on its own cache line


def _aligned(n: int) -> int:
    return -(-n // _ARENA_ALIGN) * _ARENA_ALIGN


def _grow(arr: _ArrT, axis: int, new: int, fill: float) -> _ArrT:
    """Copy of arr with dimension `axis` enlarged to `new`, the new cells set to `fill`."""
    shape = list(arr.shape)
    shape[axis] = new
    out = np.full(shape, fill, dtype=arr.dtype)
    out[tuple(slice(0, s) for s in arr.shape)] = arr
    return out  # type: ignore[return-value]


class Router:
    """Skill-based router for one contact center. Not thread-safe; one owner calls it."""

    def __init__(
        self,
        *,
        n_skills: int,
        max_agents: int = 1024,
        max_tasks: int = 4096,
        seed: int = 0,
        max_queues: int = 16,
    ) -> None:
        if n_skills < 1 or max_agents < 1 or max_tasks < 1 or max_queues < 1:
            raise InvalidArgument("n_skills, max_agents, max_tasks and max_queues must be >= 1")
        self._n_skills = n_skills
        self._max_agents = max_agents
        self._max_tasks = max_tasks
        self._rng = np.random.default_rng(seed)
        A, T, Q = max_agents, max_tasks, max_queues
        # Agents.
        self._skills = np.zeros((A, n_skills), np.uint8)
        self._penalty = np.full(
            (Q, A), -1, np.int32
        )  # [queue, agent]: a dispatch scans agents of one queue
        self._member_pos = np.full((Q, A), -1, np.int32)
        self._cap = np.zeros((A, MAX_CHANNELS), np.int32)
        self._load = np.zeros((A, MAX_CHANNELS), np.int32)
        self._agent_f = np.zeros((K.AF_ROWS, A), np.float64)
        self._agent_calls = np.zeros(A, np.int64)
        self._state = np.zeros(A, np.uint8)
        self._free_list = np.zeros(A, np.int32)
        self._in_free = np.zeros(A, np.uint8)
        self._counters = np.zeros(K.CN_ROWS, np.int64)
        # "Nothing eligible" memo per free agent, valid while the versions of its queues are unchanged.
        self._agent_memo = np.full(A, -1, np.int64)
        self._agent_queues = np.full((A, 4), -1, np.int32)
        self._agent_nq = np.zeros(A, np.int32)
        self._agent_ids: list[str] = []
        self._agent_index: dict[str, int] = {}
        self._agent_offers: list[set[int]] = []
        self._agent_tasks: list[set[int]] = []
        self._misses: list[int] = []
        # Python mirrors read on every call (a numpy scalar read costs ~0.1 us, a list read ~0.02 us):
        # state codes (written together with `_state`), free capacity units (sum of cap - load, > 0
        # exactly when some channel has room since load <= cap), free-list membership and its size.
        self._st: list[int] = []
        self._spare: list[int] = []
        self._is_free: list[bool] = []
        self._n_free = 0
        self._pending_pause: list[str | None] = []
        self._over_cap: set[int] = set()  # agents whose load exceeds a lowered capacity
        self._reason: list[str] = []
        self._wrap_gen: list[int] = []
        self._wrap_until: list[float] = []
        # Tasks.
        self._task_i = np.full(
            (T, K.TI_ROWS), -1, np.int32
        )  # [task, field]: one cache line per task
        self._task_f = np.zeros((T, K.TF_ROWS), np.float64)
        self._task_seq = np.zeros(T, np.int64)
        self._task_excl = np.full((T, 4), -1, np.int32)
        self._task_state = np.zeros(T, np.uint8)
        self._task_ids: list[str | None] = [None] * T
        self._task_index: dict[str, int] = {}
        self._task_offers: dict[int, list[int]] = {}  # only ringing tasks: few objects for the GC
        self._retrying: set[int] = set()  # tasks in _T_RETRY: linked nowhere, read by oldest_wait
        self._n_waiting = 0
        self._task_agent = [-1] * T
        self._task_accept_s = [0.0] * T
        self._task_prio = np.zeros(T, np.int64)  # the priority it is ordered by (aged)
        self._task_base_prio = [0] * T  # the priority it was given, before aging
        self._task_age_at = [0.0] * T  # when its next aging point is due (the live timer)
        self._task_reqs: list[tuple[Requirement, ...]] = [()] * T
        # The task took its queue's default requirements (a reload changing them moves it along).
        self._task_qdef = [False] * T
        self._task_gen = [0] * T
        # Mirrors of task rows and task_state that Python reads per call (the kernel writes none of
        # these fields, only the bucket links).
        self._task_q = [0] * T
        self._task_ch = [0] * T
        self._tst = [0] * T
        self._task_time = [0.0] * T
        self._task_seqs = [0] * T
        self._task_pref = [-1] * T
        self._task_pref_until = [0.0] * T
        self._task_nexcl = [0] * T
        self._free_slots = list(range(T - 1, -1, -1))
        self._seq = 0
        # Buckets.
        # [bucket, field]: the kernel ranks a dozen buckets per dispatch by several fields of each, so
        # a bucket's fields share one cache line (and its float fields a second) instead of one line each.
        self._bucket_i = np.full((64, K.BI_ROWS), -1, np.int32)
        self._bucket_f = np.zeros((64, K.BF_ROWS), np.float64)
        self._bucket_index: dict[tuple[int, int, int, int], int] = {}
        self._n_buckets = 0
        # Requirement sets.
        self._reqset_skill = np.zeros((16, MAX_REQUIREMENTS), np.int32)
        self._reqset_level = np.zeros((16, MAX_REQUIREMENTS), np.int32)
        self._reqset_len = np.zeros(16, np.int32)
        self._reqset_index: dict[tuple[tuple[int, int], ...], int] = {}
        self._reqsets: list[tuple[tuple[int, int], ...]] = []
        # Queues.
        self._queue_i = np.zeros((Q, K.QI_ROWS), np.int32)
        self._q_ver = np.zeros(Q, np.int64)  # bumped whenever a task may have become eligible
        self._q_buckets = np.full((Q, 4), -1, np.int32)
        self._q_nb = np.zeros(Q, np.int32)
        self._step_after = np.zeros((Q, 1), np.float64)
        self._step_reqset = np.full((Q, 1), -1, np.int32)
        self._step_maxpen = np.full((Q, 1), -1, np.int32)
        self._queues: list[QueueSpec] = []
        self._queue_names: list[str] = []
        self._queue_index: dict[str, int] = {}
        self._queue_count: list[list[int]] = []  # tasks waiting or offered, per channel
        self._queue_rset: list[tuple[tuple[int, int], ...]] = []  # checked default requirements
        self._queue_nsteps: list[int] = []
        # Random numbers and output buffers.
        self._rng_buf = self._rng.random(RNG_BUFFER)
        self._out_task = np.zeros(max(64, A), np.int32)
        self._out_agent = np.zeros(max(64, A), np.int32)
        self._max_cap_sum = 1
        self._has_random = False  # some queue draws from _rng_buf (RANDOM, WEIGHTED_RANDOM)
        self._timers: list[tuple[float, int, int, int, int]] = []
        self._timer_seq = 0
        # Agents whose wrap-up timer ran out (inside dispatch/next timer), with the state they
        # went to; drained by `take_wrap_up_ends` so the caller can record and publish them.
        self._wrap_ends: list[tuple[str, AgentState]] = []
        self.transition_log: list[tuple[str, AgentState, AgentState]] | None = None
        # Kernel scratch (sized in `_pack`) and the kernel's argument after `now`: the arena. None after
        # any growth; `_pack` then copies every array into a fresh arena.
        self._scratch_active = np.zeros(0, np.int32)
        self._scratch_cursor = np.zeros(0, np.int32)
        self._scratch_cands = np.zeros(0, np.int32)
        self._arena: npt.NDArray[np.uint8] | None = None
        # The dispatch kernel's compiled entry point, looked up on the first dispatch (not here: the
        # lookup compiles or loads the kernel, which the daemon does in `warmup`, off its event loop).
        self._kernel: Any = self._first_kernel_call
        self._pack()

    # ------------------------------------------------------------------ configuration

    def add_queue(self, spec: QueueSpec) -> None:
        """Register a queue. Steps must be ordered by after_s; the last one is the fallback."""
        if spec.name in self._queue_index:
            raise InvalidArgument(f"queue {spec.name!r} already exists")
        default_rset, step_sets = self._check_queue(spec)
        q = len(self._queues)
        if q >= self._queue_i.shape[0]:
            nq = 2 * q
            self._regrow("_penalty", 0, nq, -1)
            self._regrow("_member_pos", 0, nq, -1)
            self._regrow("_queue_i", 0, nq, 0)
            self._regrow("_q_ver", 0, nq, 0)
            self._regrow("_q_buckets", 0, nq, -1)
            self._regrow("_q_nb", 0, nq, 0)
            self._regrow("_step_after", 0, nq, 0.0)
            self._regrow("_step_reqset", 0, nq, -1)
            self._regrow("_step_maxpen", 0, nq, -1)
        self._queue_i[q, K.QI_RR_LAST] = -1
        self._queue_i[q, K.QI_N_POS] = 0
        self._queues.append(spec)
        self._queue_names.append(spec.name)
        self._queue_index[spec.name] = q
        self._queue_count.append([0] * MAX_CHANNELS)
        self._queue_rset.append(default_rset)
        self._queue_nsteps.append(0)
        self._write_queue(q, spec, default_rset, step_sets)

    def update_queue(self, spec: QueueSpec, now: float) -> None:
        """Replace a queue's definition in place (a config reload), keeping its tasks and members.

        Strategy, weight, steps and policies apply from the next dispatch (a wrap-up, delay or
        retry already running keeps its end). Waiting, ringing and retrying tasks that took the
        queue's default requirements take the new ones, keeping their place (effective time and
        sequence); tasks given their own requirements keep them. Relaxation steps count from
        each task's effective enqueue time, so a step the wait has already passed applies at
        once. An offer already ringing is left to ring."""
        q = self._queue(spec.name)
        default_rset, step_sets = self._check_queue(spec)
        old_rset = self._queue_rset[q]
        self._queues[q] = spec
        self._queue_rset[q] = default_rset
        self._write_queue(q, spec, default_rset, step_sets)
        bi = self._bucket_i
        for b in range(self._n_buckets):
            if bi[b, K.BI_QUEUE] == q:
                bi[b, K.BI_MONOTONE] = 1 if self._monotone(q, int(bi[b, K.BI_REQSET])) else 0
        n_steps = self._queue_nsteps[q]
        for t in self._task_index.values():
            if self._task_q[t] != q or self._tst[t] in (0, _T_ASSIGNED):
                continue
            if self._task_qdef[t] and default_rset != old_rset:
                self._rebucket(t, spec.requirements, default_rset)
            self._age(t, now)  # a changed priority_aging_per_min applies to the wait so far
            gen = self._task_gen[t]
            eff = self._task_time[t]
            for i in range(n_steps):
                when = eff + float(self._step_after[q, i])
                if when > now:
                    self._push_timer(when, _TM_TASK, t, gen)
        self._q_ver[q] += 1

    def _check_queue(
        self, spec: QueueSpec
    ) -> tuple[tuple[tuple[int, int], ...], list[tuple[tuple[int, int], ...] | None]]:
        """Validate a queue spec: (its default requirement set, each step's set or None)."""
        Strategy(spec.strategy)
        default_rset = self._check_reqs(spec.requirements)
        afters = [s.after_s for s in spec.steps]
        if any(x < 0 for x in afters) or afters != sorted(afters):
            raise InvalidArgument("relaxation steps must have after_s >= 0, in ascending order")
        for x in (
            spec.wrap_up_s,
            spec.reject_delay_s,
            spec.busy_delay_s,
            spec.no_answer_delay_s,
            spec.retry_delay_s,
        ):
            if x < 0:
                raise InvalidArgument("time spans must be >= 0")
        if spec.max_length < 0 or spec.auto_pause_after < 0:
            raise InvalidArgument("max_length and auto_pause_after must be >= 0")
        if not 0 <= spec.priority_aging_per_min < float("inf"):
            raise InvalidArgument("priority_aging_per_min must be a finite number >= 0")
        if not -(2**31) <= spec.weight < 2**31:
            raise InvalidArgument("weight out of int32 range")
        step_sets = [
            None if s.requirements is None else self._check_reqs(s.requirements) for s in spec.steps
        ]
        for s in spec.steps:
            if s.max_penalty is not None and not 0 <= s.max_penalty < 2**31:
                raise InvalidArgument("max_penalty must be >= 0")
        return default_rset, step_sets

    def _write_queue(
        self,
        q: int,
        spec: QueueSpec,
        default_rset: tuple[tuple[int, int], ...],
        step_sets: list[tuple[tuple[int, int], ...] | None],
    ) -> None:
        """The kernel's rows of queue q from a checked spec."""
        n_steps = len(spec.steps)
        if n_steps > self._step_after.shape[1]:
            self._regrow("_step_after", 1, n_steps, 0.0)
            self._regrow("_step_reqset", 1, n_steps, -1)
            self._regrow("_step_maxpen", 1, n_steps, -1)
        self._step_after[q, :] = 0.0
        self._step_reqset[q, :] = -1
        self._step_maxpen[q, :] = -1
        for i, (step, rset) in enumerate(zip(spec.steps, step_sets, strict=True)):
            self._step_after[q, i] = step.after_s
            self._step_reqset[q, i] = -1 if rset is None else self._reqset_id(rset)
            self._step_maxpen[q, i] = -1 if step.max_penalty is None else step.max_penalty
        self._queue_i[q, K.QI_STRATEGY] = int(spec.strategy)
        if spec.strategy in (Strategy.RANDOM, Strategy.WEIGHTED_RANDOM):
            self._has_random = True
        self._queue_i[q, K.QI_WEIGHT] = spec.weight
        self._queue_i[q, K.QI_N_STEPS] = n_steps
        self._queue_nsteps[q] = n_steps

    def add_agent(
        self,
        agent_id: str,
        *,
        skills: Mapping[int, int],
        queues: Mapping[str, int],
        capacity: Mapping[int, int] | None = None,
    ) -> None:
        """Add a logged-out agent with skill levels, queue memberships (name -> penalty), capacity."""
        if agent_id in self._agent_index:
            raise InvalidArgument(f"agent {agent_id!r} already exists")
        a = len(self._agent_ids)
        if a >= self._max_agents:
            raise CapacityExceeded(f"max_agents={self._max_agents} reached")
        qs, caps = self._check_agent(skills, queues, capacity)
        self._agent_ids.append(agent_id)
        self._agent_index[agent_id] = a
        self._st.append(_LOGGED_OUT)
        self._spare.append(0)
        self._is_free.append(False)
        self._agent_offers.append(set())
        self._agent_tasks.append(set())
        self._misses.append(0)
        self._pending_pause.append(None)
        self._reason.append("")
        self._wrap_gen.append(0)
        self._wrap_until.append(0.0)
        self._write_agent(a, skills, qs, caps)

    def update_agent(
        self,
        agent_id: str,
        *,
        skills: Mapping[int, int],
        queues: Mapping[str, int],
        capacity: Mapping[int, int] | None = None,
    ) -> None:
        """Replace an agent's skills, memberships and capacity in place (a config reload),
        keeping its state, offers and accepted work. They count from the next dispatch: an offer
        already ringing rings on, even from a queue the agent has left. A queue the agent stays in
        keeps its round-robin / linear position; one it joins puts it last. A capacity lowered
        below the agent's current load takes no new work on that channel until the load is under
        it."""
        a = self._agent(agent_id)
        qs, caps = self._check_agent(skills, queues, capacity)
        self._write_agent(a, skills, qs, caps)
        self._refresh_free(a)

    def add_skills(self, n: int) -> None:
        """Make room for n more skills (indices n_skills .. n_skills + n - 1), which every agent
        lacks until given them (a reload naming new skills)."""
        if n < 0:
            raise InvalidArgument("n must be >= 0")
        if n:
            self._n_skills += n
            self._regrow("_skills", 1, self._n_skills, 0)

    def _check_agent(
        self,
        skills: Mapping[int, int],
        queues: Mapping[str, int],
        capacity: Mapping[int, int] | None,
    ) -> tuple[list[tuple[int, int]], dict[int, int]]:
        for s, lvl in skills.items():
            if not 0 <= s < self._n_skills or not 0 <= lvl <= MAX_LEVEL:
                raise InvalidArgument(f"skill {s} level {lvl} out of range")
        qs = [(self._queue(name), pen) for name, pen in queues.items()]
        if any(not 0 <= pen < 2**31 for _, pen in qs):
            raise InvalidArgument("penalty must be >= 0")
        caps = {0: 1} if capacity is None else dict(capacity)
        for ch, c in caps.items():
            if not 0 <= ch < MAX_CHANNELS or not 0 <= c < 2**31:
                raise InvalidArgument(f"channel {ch} capacity {c} out of range")
        return qs, caps

    def _write_agent(
        self,
        a: int,
        skills: Mapping[int, int],
        qs: list[tuple[int, int]],
        caps: dict[int, int],
    ) -> None:
        """The kernel's rows of agent a from checked arguments (its other state untouched)."""
        self._skills[a, :] = 0
        for s, lvl in skills.items():
            self._skills[a, s] = lvl
        new_qs = {q for q, _ in qs}
        for j in range(int(self._agent_nq[a])):
            q = int(self._agent_queues[a, j])
            if q not in new_qs:  # left: its position in that queue's rotation goes too
                self._penalty[q, a] = -1
                self._member_pos[q, a] = -1
        if len(qs) > self._agent_queues.shape[1]:
            self._regrow("_agent_queues", 1, len(qs), -1)
        self._agent_queues[a, :] = -1
        for j, (q, _) in enumerate(qs):
            self._agent_queues[a, j] = q
        self._agent_nq[a] = len(qs)
        for q, pen in qs:
            self._penalty[q, a] = pen
            if self._member_pos[q, a] < 0:
                self._member_pos[q, a] = self._queue_i[q, K.QI_N_POS]
                self._queue_i[q, K.QI_N_POS] += 1
        self._cap[a, :] = 0
        for ch, c in caps.items():
            self._cap[a, ch] = c
        cap_sum = sum(caps.values())
        self._max_cap_sum = max(self._max_cap_sum, cap_sum)
        need = self._max_agents * self._max_cap_sum
        if need > self._out_task.shape[0]:
            self._out_task = np.zeros(need, np.int32)
            self._out_agent = np.zeros(need, np.int32)
            self._arena = None
        self._respare(a)
        self._agent_memo[a] = -1

    def _respare(self, a: int) -> None:
        """Recount agent a's free capacity units from its rows. Capacity can be below load only
        after `update_agent` lowered it; such an agent is counted here until it no longer is,
        since a unit freed on a channel over its capacity frees nothing."""
        room = self._cap[a] - self._load[a]
        self._spare[a] = int(room[room > 0].sum())
        if (room < 0).any():
            self._over_cap.add(a)
        else:
            self._over_cap.discard(a)

    # ------------------------------------------------------------------ agent presence

    def login(self, agent_id: str, now: float) -> None:
        """LOGGED_OUT -> AVAILABLE; the agent's idle time starts now."""
        a = self._agent_for("login", agent_id)
        self._agent_f[K.AF_LAST_IDLE, a] = now
        self._misses[a] = 0
        self._pending_pause[a] = None
        self._set_state(a, _AVAILABLE)

    def logout(self, agent_id: str, now: float) -> None:
        """-> LOGGED_OUT from AVAILABLE, NOT_READY or WRAP_UP (reject or complete ringing/active work first)."""
        a = self._agent_for("logout", agent_id)
        if self._st[a] != _LOGGED_OUT:
            self._wrap_gen[a] += 1
            self._set_state(a, _LOGGED_OUT)

    def set_ready(self, agent_id: str, now: float) -> None:
        """NOT_READY or WRAP_UP -> AVAILABLE (ends wrap-up early); clears a pending pause."""
        a = self._agent_for("set_ready", agent_id)
        self._pending_pause[a] = None
        self._misses[a] = 0
        if self._st[a] != _AVAILABLE:
            self._wrap_gen[a] += 1
            self._agent_f[K.AF_LAST_IDLE, a] = now
            self._set_state(a, _AVAILABLE)

    def set_not_ready(self, agent_id: str, now: float, reason: str = "") -> None:
        """Pause the agent; while it has ringing or active work the pause applies when that ends."""
        a = self._agent_for("set_not_ready", agent_id)
        if self._st[a] in (_RESERVED, _BUSY):
            self._pending_pause[a] = reason
            return
        self._wrap_gen[a] += 1
        self._reason[a] = reason
        self._set_state(a, _NOT_READY)

    # ------------------------------------------------------------------ tasks

    def enqueue(
        self,
        task_id: str,
        queue: str,
        now: float,
        *,
        priority: int = 0,
        requirements: tuple[Requirement, ...] | None = None,
        enqueue_time: float | None = None,
        preferred_agent: str | None = None,
        preferred_timeout_s: float = 0.0,
        channel: int = 0,
    ) -> None:
        """Add a waiting task. `enqueue_time` (default now) is the effective time that orders it."""
        if task_id in self._task_index:
            raise InvalidArgument(f"task {task_id!r} already exists")
        q = self._queue(queue)
        spec = self._queues[q]
        if requirements is None:
            reqs = spec.requirements
            rset = self._queue_rset[q]
        else:
            reqs = requirements
            rset = self._check_reqs(reqs)
        self._check_task_args(priority, preferred_timeout_s, channel)
        pref = -1 if preferred_agent is None else self._agent(preferred_agent)
        if spec.max_length and self._queue_count[q][channel] >= spec.max_length:
            raise QueueFull(f"queue {queue!r} holds max_length={spec.max_length} tasks")
        if not self._free_slots:
            raise CapacityExceeded(f"max_tasks={self._max_tasks} reached")
        t = self._free_slots.pop()
        self._seq += 1
        self._task_seq[t] = self._seq
        self._task_seqs[t] = self._seq
        self._task_ids[t] = task_id
        self._task_index[task_id] = t
        self._task_i[t, K.TI_N_EXCL] = 0
        self._task_nexcl[t] = 0
        self._task_agent[t] = -1
        self._task_qdef[t] = requirements is None
        self._place(
            t,
            q,
            now,
            priority,
            reqs,
            rset,
            now if enqueue_time is None else enqueue_time,
            pref,
            preferred_timeout_s,
            channel,
        )

    def requeue(
        self,
        task_id: str,
        queue: str,
        now: float,
        *,
        priority: int | None = None,
        requirements: tuple[Requirement, ...] | None = None,
        enqueue_time: float | None = None,
        preferred_agent: str | None = None,
        preferred_timeout_s: float = 0.0,
        channel: int | None = None,
    ) -> list[Offer]:
        """Move a task (waiting, offered or accepted) to `queue`, keeping its effective time and
        exclusions. Returns the offers withdrawn (the engine cancels their ringing). An accepted task's
        agent is released as by `complete`. Unset arguments keep the task's values; requirements default
        to the new queue's when the queue changes."""
        t = self._task(task_id)
        q = self._queue(queue)
        spec = self._queues[q]
        old_q = self._task_q[t]
        qdef = self._task_qdef[t]
        if requirements is not None:
            reqs, qdef = requirements, False
        elif q != old_q:
            reqs, qdef = spec.requirements, True
        else:
            reqs = self._task_reqs[t]
        rset = self._check_reqs(reqs)
        prio = self._task_base_prio[t] if priority is None else priority
        ch = self._task_ch[t] if channel is None else channel
        self._check_task_args(prio, preferred_timeout_s, ch)
        pref = -1 if preferred_agent is None else self._agent(preferred_agent)
        moves = q != old_q or ch != self._task_ch[t]
        if moves and spec.max_length and self._queue_count[q][ch] >= spec.max_length:
            raise QueueFull(f"queue {queue!r} holds max_length={spec.max_length} tasks")
        eff = self._task_time[t] if enqueue_time is None else enqueue_time
        withdrawn = self._detach(t, now)
        self._task_qdef[t] = qdef
        self._place(t, q, now, prio, reqs, rset, eff, pref, preferred_timeout_s, ch)
        return withdrawn

    def abandon(self, task_id: str, now: float) -> list[Offer]:
        """The caller left: withdraw its offers (returned, so the engine cancels their ringing)."""
        t = self._task(task_id)
        if self._tst[t] == _T_ASSIGNED:
            raise InvalidTransition(f"task {task_id!r} was accepted; use complete()")
        withdrawn = self._detach(t, now)
        self._release_slot(t)
        return withdrawn

    # ------------------------------------------------------------------ reservation protocol

    def dispatch(self, now: float) -> list[Offer]:
        """Apply due timers, then offer waiting tasks to free agents, reserving them atomically."""
        timers = self._timers
        if timers and timers[0][0] <= now:
            self._apply_timers(now)
        if self._n_free == 0 or self._n_waiting == 0:
            return []
        arena = self._arena
        if arena is None:
            arena = self._pack()
        res = self._kernel(float(now), arena)
        if res == -1:  # no offer
            return []
        # Only the kernel draws from the buffer, so refilling after it (rather than before the next
        # call) consumes the very same sequence.
        if self._has_random and self._counters[K.CN_RNG_POS] > RNG_BUFFER // 2:
            self._rng_buf[:] = self._rng.random(RNG_BUFFER)
            self._counters[K.CN_RNG_POS] = 0
        if res < 0:  # -1 - n for n offers, left in the output arrays
            n = -1 - res
            pairs = zip(self._out_task[:n].tolist(), self._out_agent[:n].tolist(), strict=True)
            return [self._offered(t, a) for t, a in pairs]
        t = res >> 32
        a = res & 0xFFFFFFFF
        # The steady state: one agent freed, one offer (returned by the kernel itself). This is
        # `_offered` inlined, less what cannot happen: a waiting task rings for nobody yet. A method
        # call costs as much as four of these lines.
        q = self._task_q[t]
        self._task_offers[t] = [a]
        self._tst[t] = _T_OFFERED
        self._n_waiting -= 1
        self._agent_offers[a].add(t)
        left = self._spare[a] - 1
        self._spare[a] = left
        if left == 0:
            self._is_free[a] = False
            self._n_free -= 1
        if self.transition_log is None:
            self._st[a] = _RESERVED
        else:
            self._set_state(a, _RESERVED, refresh=False)
        offer = _new_object(Offer)
        _SET_OFFER_TASK(offer, self._task_ids[t])
        _SET_OFFER_AGENT(offer, self._agent_ids[a])
        _SET_OFFER_QUEUE(offer, self._queue_names[q])
        return [offer]

    def accept(self, task_id: str, agent_id: str, now: float) -> list[Offer]:
        """RESERVED -> BUSY. Returns the other offers of the task (ring-all) withdrawn atomically."""
        t, a = self._offer_pair(task_id, agent_id)
        withdrawn: list[Offer] = []
        for b in self._task_offers.pop(t):
            if b != a:
                withdrawn.append(self._withdraw(t, b))
        self._agent_offers[a].discard(t)
        self._agent_tasks[a].add(t)
        self._queue_count[self._task_q[t]][self._task_ch[t]] -= 1
        self._task_state[t] = _T_ASSIGNED
        self._tst[t] = _T_ASSIGNED
        self._task_agent[t] = a
        self._task_accept_s[t] = now
        self._agent_calls[a] += 1
        self._misses[a] = 0
        self._settle(a, now)
        return withdrawn

    def reject(self, task_id: str, agent_id: str, now: float, *, reason: str = "reject") -> None:
        """The agent declined, was busy, or did not answer: the task goes back (the agent excluded
        from it), at once or, when nobody else rings for it, after the queue's retry_delay_s; the
        agent waits the queue's delay for that reason and may be auto-paused."""
        if reason not in REJECT_REASONS:
            raise InvalidArgument(f"reason must be one of {REJECT_REASONS}")
        t, a = self._offer_pair(task_id, agent_id)
        spec = self._queues[self._task_q[t]]
        self._withdraw(t, a, settle=False)
        ringing = self._task_offers[t]
        ringing.remove(a)
        if not ringing:
            del self._task_offers[t]
        self._exclude(t, a)
        delay = {
            "reject": spec.reject_delay_s,
            "busy": spec.busy_delay_s,
            "no_answer": spec.no_answer_delay_s,
        }[reason]
        if delay > 0:
            until = max(float(self._agent_f[K.AF_BLOCKED_UNTIL, a]), now + delay)
            self._agent_f[K.AF_BLOCKED_UNTIL, a] = until
            self._push_timer(until, _TM_UNBLOCK, a, 0)
        self._misses[a] += 1
        if spec.auto_pause_after and self._misses[a] >= spec.auto_pause_after:
            self._pending_pause[a] = AUTO_PAUSE_REASON
        self._settle(a, now)
        if t not in self._task_offers:
            if spec.retry_delay_s > 0:
                # Asterisk's `retry`: the caller is offered to nobody for a while (the task sits
                # in no bucket); its timer puts it back, with its place in the queue kept.
                self._task_state[t] = _T_RETRY
                self._tst[t] = _T_RETRY
                self._retrying.add(t)
                self._push_timer(now + spec.retry_delay_s, _TM_RETRY, t, self._task_gen[t])
            else:
                self._to_waiting(t)

    def timeout(self, task_id: str, agent_id: str, now: float) -> None:
        """Ring timeout: the same as reject with reason "no_answer"."""
        self.reject(task_id, agent_id, now, reason="no_answer")

    def complete(self, agent_id: str, now: float, *, task_id: str | None = None) -> None:
        """The agent finished a task: BUSY -> WRAP_UP (or AVAILABLE if the queue's wrap_up_s is 0)."""
        a = self._agent(agent_id)
        tasks = self._agent_tasks[a]
        if task_id is None:
            if len(tasks) != 1:
                raise InvalidTransition(
                    f"agent {agent_id!r} has {len(tasks)} accepted tasks; name the task_id"
                )
            t = next(iter(tasks))
        else:
            t = self._task(task_id)
            if t not in tasks:
                raise InvalidTransition(f"task {task_id!r} is not accepted by {agent_id!r}")
        self._finish(t, a, now)
        self._release_slot(t)

    # ------------------------------------------------------------------ queries

    def next_deadline(self) -> float | None:
        """Earliest pending timer: wrap-up end, reject delay end, relaxation step, preferred timeout."""
        h = self._timers
        while h and not self._timer_live(h[0]):
            heapq.heappop(h)
        return h[0][0] if h else None

    def agent_state(self, agent_id: str) -> AgentState:
        return AgentState(self._st[self._agent(agent_id)])

    @property
    def max_agents(self) -> int:
        """How many agents this Router can ever hold (fixed at construction)."""
        return self._max_agents

    def queue_names(self) -> list[str]:
        """Every queue added, in the order added (a Router never removes one)."""
        return list(self._queue_names)

    def take_wrap_up_ends(self) -> list[tuple[str, AgentState]]:
        """Agents whose wrap-up ended on its timer since the last call, and the state each went
        to (AVAILABLE, or NOT_READY for a pause asked for during the call); empties the list."""
        ends, self._wrap_ends = self._wrap_ends, []
        return ends

    def wrap_up_until(self, agent_id: str) -> float | None:
        """When the agent's wrap-up timer runs out (the time base of `now`), or None when the agent
        is not in wrap-up (never entered it, ended it early with `set_ready`, paused, logged out)."""
        a = self._agent(agent_id)
        return self._wrap_until[a] if self._st[a] == _WRAP_UP else None

    def not_ready_reason(self, agent_id: str) -> str:
        """Reason given with the last NOT_READY (e.g. "auto-paused")."""
        return self._reason[self._agent(agent_id)]

    def waiting(self, queue: str | None = None, channel: int | None = None) -> int:
        """Tasks not yet accepted (waiting or ringing) in `queue` (or all queues), of `channel` (or
        every channel)."""
        if channel is not None and not 0 <= channel < MAX_CHANNELS:
            raise InvalidArgument(f"channel must be in 0..{MAX_CHANNELS - 1}")
        counts = self._queue_count if queue is None else [self._queue_count[self._queue(queue)]]
        if channel is None:
            return sum(sum(c) for c in counts)
        return sum(c[channel] for c in counts)

    def oldest_wait(self, queue: str, now: float, channel: int | None = None) -> float:
        """Longest wait (now - effective enqueue time) among the queue's unaccepted tasks (of
        `channel`, or of every channel), 0 if none."""
        q = self._queue(queue)
        if channel is not None and not 0 <= channel < MAX_CHANNELS:
            raise InvalidArgument(f"channel must be in 0..{MAX_CHANNELS - 1}")
        best: float | None = None
        bi = self._bucket_i
        for b in range(self._n_buckets):
            h = int(bi[b, K.BI_HEAD])
            if bi[b, K.BI_QUEUE] == q and h >= 0:
                if channel is not None and bi[b, K.BI_CHANNEL] != channel:
                    continue
                x = float(self._task_f[h, K.TF_TIME])
                best = x if best is None else min(best, x)
        # The ringing (and retrying) tasks of every queue: dispatch does not keep a set per queue for this (a set
        # update per offer on the hot path for what a metrics scrape reads now and then).
        times, queues, channels = self._task_time, self._task_q, self._task_ch
        for t in itertools.chain(self._task_offers, self._retrying):
            if queues[t] == q and (channel is None or channels[t] == channel):
                x = times[t]
                best = x if best is None else min(best, x)
        return 0.0 if best is None else max(0.0, now - best)

    def agent_load(self, agent_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(capacity, load) of the agent per channel index: load counts offered and accepted tasks."""
        a = self._agent(agent_id)
        return tuple(self._cap[a].tolist()), tuple(self._load[a].tolist())

    def task_channel(self, task_id: str) -> int:
        return self._task_ch[self._task(task_id)]

    def task_queue(self, task_id: str) -> str:
        return self._queues[self._task_q[self._task(task_id)]].name

    def offers_of(self, task_id: str) -> list[str]:
        """Agents currently ringing for the task, by agent index."""
        return [self._agent_ids[a] for a in sorted(self._task_offers.get(self._task(task_id), ()))]

    @property
    def free_task_slots(self) -> int:
        """Tasks ``enqueue`` can still take before ``CapacityExceeded`` (``max_tasks`` minus live)."""
        return len(self._free_slots)

    def stats(self) -> dict[str, int]:
        """Agents by state name plus task counts: waiting, offered, assigned, retrying."""
        n = len(self._agent_ids)
        counts = np.bincount(self._state[:n].astype(np.int64), minlength=len(AgentState))
        out = {s.name: int(counts[s]) for s in AgentState}
        out["waiting"] = int(np.count_nonzero(self._task_state == _T_WAITING))
        out["offered"] = int(np.count_nonzero(self._task_state == _T_OFFERED))
        out["assigned"] = int(np.count_nonzero(self._task_state == _T_ASSIGNED))
        out["retrying"] = len(self._retrying)
        return out

    def warmup(self) -> tuple[int, int]:
        """Compile or load (numba cache) every kernel by running it once on a throwaway router.

        Returns how many kernel signatures this process has compiled and loaded so far
        (`_jit.cache_counts`): an operator sees why a first start after an upgrade is slow."""
        r = Router(n_skills=2, max_agents=2, max_tasks=2)
        r.add_queue(QueueSpec("warmup", steps=()))
        r.add_agent("a", skills={0: 1}, queues={"warmup": 0})
        r.login("a", 0.0)
        r.enqueue("t", "warmup", 0.0, requirements=(Requirement(0, 1),))
        r.dispatch(0.0)
        return cache_counts()

    # ------------------------------------------------------------------ internals: kernel

    def _apply_timers(self, now: float) -> None:
        h = self._timers
        while h and h[0][0] <= now:
            when, _, kind, idx, gen = heapq.heappop(h)
            if kind == _TM_WRAP_END and self._wrap_gen[idx] == gen and self._st[idx] == _WRAP_UP:
                self._agent_f[K.AF_LAST_IDLE, idx] = when
                self._go_idle(idx)
                agent_id = self._agent_ids[idx]
                assert agent_id is not None
                self._wrap_ends.append((agent_id, AgentState(self._st[idx])))
            elif kind == _TM_UNBLOCK and self._timer_live((when, 0, kind, idx, gen)):
                self._agent_memo[idx] = -1
            elif kind == _TM_TASK and self._timer_live((when, 0, kind, idx, gen)):
                self._q_ver[self._task_q[idx]] += 1
            elif kind == _TM_RETRY and self._timer_live((when, 0, kind, idx, gen)):
                self._retrying.discard(idx)
                self._to_waiting(idx)
            elif kind == _TM_AGE and self._timer_live((when, 0, kind, idx, gen)):
                self._age(idx, when)

    def _offered(self, t: int, a: int) -> Offer:
        """Python side of one offer the kernel made: it already took one unit of a's capacity, dropped
        a from the free list when none was left, and wrote both states (task offered, agent reserved;
        every free agent is in a routable state, from which the table allows RESERVED)."""
        q = self._task_q[t]
        ringing = self._task_offers.get(t)
        if ringing is None:
            self._task_offers[t] = [a]
            self._tst[t] = _T_OFFERED
            self._n_waiting -= 1
        else:
            ringing.append(a)
        self._agent_offers[a].add(t)
        left = self._spare[a] - 1
        self._spare[a] = left
        if left == 0:
            self._is_free[a] = False
            self._n_free -= 1
        if self.transition_log is None:
            self._st[a] = _RESERVED
        else:
            self._set_state(a, _RESERVED, refresh=False)  # checks and logs
        offer = _new_object(Offer)
        _SET_OFFER_TASK(offer, self._task_ids[t])
        _SET_OFFER_AGENT(offer, self._agent_ids[a])
        _SET_OFFER_QUEUE(offer, self._queue_names[q])
        return offer

    def _pack(self) -> npt.NDArray[np.uint8]:
        """Copy every kernel array into a fresh arena and rebind the attributes to views of it."""
        n_buckets = self._bucket_i.shape[0]
        self._scratch_active = np.zeros(self._max_agents, np.int32)
        self._scratch_cursor = np.full(n_buckets, K.CURSOR_IDLE, np.int32)
        self._scratch_cands = np.zeros(n_buckets, np.int32)
        placed: list[tuple[int, str, npt.NDArray[Any], int]] = []
        size = _aligned(K.P_SLOTS * 3 * 8)  # the layout comes first
        for dtype, slots in _ARENA_SLOTS:
            for slot, name in slots:
                x = getattr(self, name)
                assert x.dtype == dtype, name
                assert x.ndim in (1, 2), name
                placed.append((slot, name, x, size))
                size = _aligned(size + x.nbytes)
        raw = np.zeros(size + _ARENA_ALIGN, np.uint8)
        start = -raw.ctypes.data % _ARENA_ALIGN
        arena = raw[start : start + size]
        layout = arena[: K.P_SLOTS * 3 * 8].view(np.int64).reshape(K.P_SLOTS, 3)
        for slot, name, x, off in placed:
            view = arena[off : off + x.nbytes].view(x.dtype).reshape(x.shape)
            view[...] = x
            setattr(self, name, view)
            layout[slot] = (off, x.shape[0], x.shape[1] if x.ndim == 2 else 1)
        self._arena = arena
        return arena

    def _first_kernel_call(self, now: float, arena: npt.NDArray[np.uint8]) -> Any:
        """Look up the dispatch kernel's entry point for the arena's type, then call it. The arena's
        type never changes (1-D C-contiguous uint8), so every later call can skip the dispatcher."""
        self._kernel = entry_point(K.dispatch_kernel, now, arena)
        return self._kernel(now, arena)

    # ------------------------------------------------------------------ internals: agents

    def _regrow(self, name: str, axis: int, new: int, fill: float) -> None:
        """Enlarge array attribute `name` (see _grow); the arenas are rebuilt before the next kernel."""
        setattr(self, name, _grow(getattr(self, name), axis, new, fill))
        self._arena = None

    def _set_state(self, a: int, new: int, *, refresh: bool = True) -> None:
        """Move agent a to state code `new` (an AgentState or its int) if the table allows it."""
        old = self._st[a]
        if old != new:
            if (old, new) not in _ALLOWED_CODES:
                raise InvalidTransition(
                    f"agent {self._agent_ids[a]!r}: {AgentState(old).name} -> {AgentState(new).name}"
                )
            if self.transition_log is not None:
                self.transition_log.append((self._agent_ids[a], AgentState(old), AgentState(new)))
            self._st[a] = new
            self._state[a] = new
        if refresh:
            self._refresh_free(a)

    def _refresh_free(self, a: int) -> None:
        self._agent_memo[a] = -1
        want = self._spare[a] > 0 and self._st[a] in _ROUTABLE_CODES
        if want != self._is_free[a]:
            self._is_free[a] = want
            self._n_free += 1 if want else -1
            K.free_set(a, want, self._free_list, self._in_free, self._counters)

    def _settle(self, a: int, now: float) -> None:
        """Derive a logged-in agent's state from its offers and load after a change."""
        if self._agent_offers[a]:
            self._set_state(a, _RESERVED)
        elif self._agent_tasks[a]:
            self._set_state(a, _BUSY)
        elif self._st[a] in (_RESERVED, _BUSY):
            self._go_idle(a)
        else:
            self._refresh_free(a)

    def _go_idle(self, a: int) -> None:
        pause = self._pending_pause[a]
        if pause is not None:
            self._pending_pause[a] = None
            self._reason[a] = pause
            self._set_state(a, _NOT_READY)
        else:
            self._set_state(a, _AVAILABLE)

    def _withdraw(self, t: int, a: int, *, settle: bool = True) -> Offer:
        self._load[a, self._task_ch[t]] -= 1
        if self._over_cap and a in self._over_cap:
            self._respare(a)
        else:
            self._spare[a] += 1
        self._agent_offers[a].discard(t)
        if settle:
            self._settle(a, 0.0)
        tid = self._task_ids[t]
        assert tid is not None
        return Offer(tid, self._agent_ids[a], self._queue_names[self._task_q[t]])

    def _finish(self, t: int, a: int, now: float) -> None:
        self._load[a, self._task_ch[t]] -= 1
        if self._over_cap and a in self._over_cap:
            self._respare(a)
        else:
            self._spare[a] += 1
        tasks = self._agent_tasks[a]
        tasks.discard(t)
        self._agent_f[K.AF_TALK_S, a] += max(0.0, now - self._task_accept_s[t])
        if self._agent_offers[a] or tasks:
            self._settle(a, now)
            return
        wrap = self._queues[self._task_q[t]].wrap_up_s
        if wrap > 0:
            self._wrap_gen[a] += 1
            self._wrap_until[a] = now + wrap
            self._set_state(a, _WRAP_UP)
            self._push_timer(now + wrap, _TM_WRAP_END, a, self._wrap_gen[a])
        else:
            self._agent_f[K.AF_LAST_IDLE, a] = now
            self._go_idle(a)

    # ------------------------------------------------------------------ internals: tasks

    def _place(
        self,
        t: int,
        q: int,
        now: float,
        prio: int,
        reqs: tuple[Requirement, ...],
        rset: tuple[tuple[int, int], ...],
        eff: float,
        pref: int,
        pref_timeout_s: float,
        ch: int,
    ) -> None:
        rs = self._reqset_id(rset)
        self._task_i[t, K.TI_QUEUE] = q
        self._task_i[t, K.TI_CHANNEL] = ch
        self._task_q[t] = q
        self._task_ch[t] = ch
        self._task_i[t, K.TI_PREF] = pref
        self._task_f[t, K.TF_TIME] = eff
        pref_until = now + pref_timeout_s if pref >= 0 else now
        self._task_f[t, K.TF_PREF_UNTIL] = pref_until
        self._task_time[t] = eff
        self._task_pref[t] = pref
        self._task_pref_until[t] = pref_until
        aged = self._aged(q, prio, eff, now)
        self._task_base_prio[t] = prio
        self._task_prio[t] = aged
        self._task_reqs[t] = tuple(reqs)
        self._task_i[t, K.TI_BUCKET] = self._bucket_id(q, aged, rs, ch)
        self._task_gen[t] += 1
        self._queue_count[q][ch] += 1
        self._to_waiting(t)
        gen = self._task_gen[t]
        for i in range(self._queue_nsteps[q]):
            when = eff + float(self._step_after[q, i])
            if when > now:
                self._push_timer(when, _TM_TASK, t, gen)
        if pref >= 0 and pref_timeout_s > 0:
            self._push_timer(now + pref_timeout_s, _TM_TASK, t, gen)
        self._arm_aging(t, now)

    def _aged(self, q: int, base: int, eff: float, now: float) -> int:
        """Priority of a task of queue q given `base`, waiting since `eff`, at `now`: one point
        more per 1 / priority_aging_per_min minutes waited, capped at MAX_PRIORITY."""
        rate = self._queues[q].priority_aging_per_min
        if rate <= 0:
            return base
        return min(MAX_PRIORITY, base + int(max(0.0, now - eff) * rate / 60.0))

    def _arm_aging(self, t: int, now: float) -> None:
        """Schedule task t's next aging point (if its queue ages); it replaces any earlier one."""
        rate = self._queues[self._task_q[t]].priority_aging_per_min
        prio = int(self._task_prio[t])
        if rate <= 0 or prio >= MAX_PRIORITY:
            self._task_age_at[t] = -1.0
            return
        points = prio - self._task_base_prio[t] + 1
        when = max(self._task_time[t] + 60.0 * points / rate, now + 1e-6)
        self._task_age_at[t] = when
        self._push_timer(when, _TM_AGE, t, self._task_gen[t])

    def _age(self, t: int, now: float) -> None:
        """Move task t (not accepted) to the bucket of its aged priority, keeping its place
        among tasks of that priority, and schedule the next point."""
        aged = self._aged(self._task_q[t], self._task_base_prio[t], self._task_time[t], now)
        if aged != self._task_prio[t]:
            self._task_prio[t] = aged
            rs = int(self._bucket_i[int(self._task_i[t, K.TI_BUCKET]), K.BI_REQSET])
            self._rebucket(t, self._task_reqs[t], self._reqsets[rs])
        self._arm_aging(t, now)

    def _rebucket(
        self, t: int, reqs: tuple[Requirement, ...], rset: tuple[tuple[int, int], ...]
    ) -> None:
        """Give task t (not accepted) new requirements (or, set before, a new `_task_prio`) in
        place: a waiting task moves to the bucket of its new set and priority keeping its (time,
        sequence) place; a ringing or retrying one goes there when it comes back to waiting."""
        b = self._bucket_id(
            self._task_q[t], int(self._task_prio[t]), self._reqset_id(rset), self._task_ch[t]
        )
        self._task_reqs[t] = tuple(reqs)
        if self._tst[t] == _T_WAITING:
            self._unlink(t)
            self._task_i[t, K.TI_BUCKET] = b
            self._to_waiting(t)
        else:
            self._task_i[t, K.TI_BUCKET] = b

    def _to_waiting(self, t: int) -> None:
        """Link t into its bucket, keeping (time, seq) order; usually an append at the tail."""
        self._task_state[t] = _T_WAITING
        self._tst[t] = _T_WAITING
        self._n_waiting += 1
        q = self._task_q[t]
        self._q_ver[q] += 1
        ti, bi = self._task_i, self._bucket_i
        b = int(ti[t, K.TI_BUCKET])
        times, seqs = self._task_time, self._task_seqs
        key = (times[t], seqs[t])
        p = int(bi[b, K.BI_TAIL])
        while p >= 0 and (times[p], seqs[p]) > key:
            p = int(ti[p, K.TI_PREV])
        n = int(bi[b, K.BI_HEAD]) if p < 0 else int(ti[p, K.TI_NEXT])
        ti[t, K.TI_PREV] = p
        ti[t, K.TI_NEXT] = n
        if p >= 0:
            ti[p, K.TI_NEXT] = t
        else:
            bi[b, K.BI_HEAD] = t
            self._cache_head(b)
        if n >= 0:
            ti[n, K.TI_PREV] = t
        else:
            bi[b, K.BI_TAIL] = t
        bi[b, K.BI_COUNT] += 1

    def _unlink(self, t: int) -> None:
        ti, bi = self._task_i, self._bucket_i
        b = int(ti[t, K.TI_BUCKET])
        p = int(ti[t, K.TI_PREV])
        n = int(ti[t, K.TI_NEXT])
        if p >= 0:
            ti[p, K.TI_NEXT] = n
        else:
            bi[b, K.BI_HEAD] = n
            self._cache_head(b)
        if n >= 0:
            ti[n, K.TI_PREV] = p
        else:
            bi[b, K.BI_TAIL] = p
        ti[t, K.TI_NEXT] = -1
        ti[t, K.TI_PREV] = -1
        bi[b, K.BI_COUNT] -= 1
        self._n_waiting -= 1

    def _cache_head(self, b: int) -> None:
        """Python twin of `_kernels.cache_head` for links and unlinks done here."""
        h = int(self._bucket_i[b, K.BI_HEAD])
        if h < 0:
            return
        bf = self._bucket_f
        bf[b, K.BF_HEAD_TIME] = self._task_time[h]
        bf[b, K.BF_HEAD_SEQ] = float(self._task_seqs[h])
        if self._task_nexcl[h] > 0:
            bf[b, K.BF_PLAIN_FROM] = np.inf
        elif self._task_pref[h] >= 0:
            bf[b, K.BF_PLAIN_FROM] = self._task_pref_until[h]
        else:
            bf[b, K.BF_PLAIN_FROM] = -np.inf

    def _detach(self, t: int, now: float) -> list[Offer]:
        """Take t out of its queue (unlink or withdraw offers, or release its agent)."""
        st = self._tst[t]
        q = self._task_q[t]
        ch = self._task_ch[t]
        withdrawn: list[Offer] = []
        if st == _T_WAITING:
            self._unlink(t)
        elif st == _T_RETRY:
            self._retrying.discard(t)  # its timer dies with the generation below
        elif st == _T_OFFERED:
            for a in self._task_offers.pop(t, ()):
                withdrawn.append(self._withdraw(t, a))
        elif st == _T_ASSIGNED:
            a = int(self._task_agent[t])
            self._finish(t, a, now)
            self._task_agent[t] = -1
            self._queue_count[q][ch] += 1  # _place counts it again in the new queue
        self._queue_count[q][ch] -= 1
        self._task_state[t] = 0
        self._tst[t] = 0
        self._task_gen[t] += 1
        return withdrawn

    def _release_slot(self, t: int) -> None:
        if self._tst[t] == _T_ASSIGNED:
            self._task_state[t] = 0
            self._tst[t] = 0
        tid = self._task_ids[t]
        assert tid is not None
        del self._task_index[tid]
        self._task_ids[t] = None
        self._task_offers.pop(t, None)
        self._task_gen[t] += 1
        self._free_slots.append(t)

    def _exclude(self, t: int, a: int) -> None:
        n = self._task_nexcl[t]
        if n >= self._task_excl.shape[1]:
            self._regrow("_task_excl", 1, 2 * n, -1)
        self._task_excl[t, n] = a
        self._task_i[t, K.TI_N_EXCL] = n + 1
        self._task_nexcl[t] = n + 1

    def _bucket_id(self, q: int, prio: int, rs: int, ch: int) -> int:
        key = (q, prio, rs, ch)
        b = self._bucket_index.get(key)
        if b is not None:
            return b
        b = self._n_buckets
        if b >= self._bucket_i.shape[0]:
            self._regrow("_bucket_i", 0, 2 * b, -1)
            self._regrow("_bucket_f", 0, 2 * b, 0.0)
        bi = self._bucket_i
        bi[b, K.BI_HEAD] = -1
        bi[b, K.BI_TAIL] = -1
        bi[b, K.BI_QUEUE] = q
        bi[b, K.BI_PRIO] = prio
        bi[b, K.BI_REQSET] = rs
        bi[b, K.BI_CHANNEL] = ch
        bi[b, K.BI_COUNT] = 0
        bi[b, K.BI_MONOTONE] = 1 if self._monotone(q, rs) else 0
        self._bucket_index[key] = b
        nb = int(self._q_nb[q])
        if nb >= self._q_buckets.shape[1]:
            self._regrow("_q_buckets", 1, 2 * nb, -1)
        self._q_buckets[q, nb] = b
        self._q_nb[q] = nb + 1
        self._n_buckets = b + 1
        return b

    def _monotone(self, q: int, rs: int) -> bool:
        """True if each relaxation step of q only widens who is eligible for requirement set rs."""
        stages: list[tuple[tuple[tuple[int, int], ...], float]] = [
            (self._reqsets[rs], float("inf"))
        ]
        for i in range(self._queue_nsteps[q]):
            srs = int(self._step_reqset[q, i])
            mp = int(self._step_maxpen[q, i])
            stages.append((self._reqsets[rs if srs < 0 else srs], float("inf") if mp < 0 else mp))
        for (r1, p1), (r2, p2) in itertools.pairwise(stages):
            if p2 < p1:
                return False
            have: dict[int, int] = {}
            for s, lvl in r1:
                have[s] = max(have.get(s, 0), lvl)
            if any(have.get(s, 0) < lvl for s, lvl in r2):
                return False
        return True

    def _reqset_id(self, rset: tuple[tuple[int, int], ...]) -> int:
        r = self._reqset_index.get(rset)
        if r is not None:
            return r
        r = len(self._reqsets)
        if r >= self._reqset_len.shape[0]:
            self._regrow("_reqset_skill", 0, 2 * r, 0)
            self._regrow("_reqset_level", 0, 2 * r, 0)
            self._regrow("_reqset_len", 0, 2 * r, 0)
        for k, (s, lvl) in enumerate(rset):
            self._reqset_skill[r, k] = s
            self._reqset_level[r, k] = lvl
        self._reqset_len[r] = len(rset)
        self._reqsets.append(rset)
        self._reqset_index[rset] = r
        return r

    def _check_reqs(self, reqs: tuple[Requirement, ...]) -> tuple[tuple[int, int], ...]:
        if len(reqs) > MAX_REQUIREMENTS:
            raise InvalidArgument(f"at most {MAX_REQUIREMENTS} requirements per set")
        for r in reqs:
            if not 0 <= r.skill < self._n_skills or not 1 <= r.min_level <= MAX_LEVEL:
                raise InvalidArgument(f"requirement {r} out of range")
        return tuple(sorted((r.skill, r.min_level) for r in reqs))

    def _check_task_args(self, priority: int, timeout_s: float, channel: int) -> None:
        if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidArgument("priority out of int32 range")
        if timeout_s < 0:
            raise InvalidArgument("preferred_timeout_s must be >= 0")
        if not 0 <= channel < MAX_CHANNELS:
            raise InvalidArgument(f"channel must be in 0..{MAX_CHANNELS - 1}")

    # ------------------------------------------------------------------ internals: lookups, timers

    def _agent(self, agent_id: str) -> int:
        try:
            return self._agent_index[agent_id]
        except KeyError:
            raise UnknownAgent(agent_id) from None

    def _agent_for(self, event: str, agent_id: str) -> int:
        a = self._agent(agent_id)
        st = self._st[a]
        if st not in _EVENT_CODES[event]:
            raise InvalidTransition(
                f"{event} not allowed for agent {agent_id!r} in {AgentState(st).name}"
            )
        return a

    def _task(self, task_id: str) -> int:
        try:
            return self._task_index[task_id]
        except KeyError:
            raise UnknownTask(task_id) from None

    def _queue(self, name: str) -> int:
        try:
            return self._queue_index[name]
        except KeyError:
            raise UnknownQueue(name) from None

    def _offer_pair(self, task_id: str, agent_id: str) -> tuple[int, int]:
        t = self._task(task_id)
        a = self._agent(agent_id)
        if a not in self._task_offers.get(t, ()):
            raise InvalidTransition(f"task {task_id!r} is not offered to agent {agent_id!r}")
        return t, a

    def _push_timer(self, when: float, kind: int, idx: int, gen: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, idx, gen))

    def _timer_live(self, entry: tuple[float, int, int, int, int]) -> bool:
        when, _, kind, idx, gen = entry
        if kind == _TM_WRAP_END:
            return self._wrap_gen[idx] == gen and self._st[idx] == _WRAP_UP
        if kind == _TM_UNBLOCK:
            return bool(self._agent_f[K.AF_BLOCKED_UNTIL, idx] == when)
        if kind == _TM_RETRY:
            return self._task_gen[idx] == gen and self._tst[idx] == _T_RETRY
        if kind == _TM_AGE:
            return (
                self._task_gen[idx] == gen
                and self._task_age_at[idx] == when
                and self._tst[idx] in (_T_WAITING, _T_OFFERED, _T_RETRY)
            )
        return self._task_gen[idx] == gen and self._tst[idx] == _T_WAITING


__all__ = ["Router", "RoutingError"]
