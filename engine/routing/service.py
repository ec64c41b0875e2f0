"""The engine's side of routing: builds the Router from config and drives it on the event loop.

How this works: the routing core is pure (time is an argument), so this module is its asyncio
adapter, in the same shape as the SIP transports: every state change the engine reports (enqueue,
accept, reject, agent ready, ...) is forwarded to the Router and then schedules ONE coalesced
dispatch with ``loop.call_soon``; the Router's own timers (wrap-up ends, reject and retry delays, relaxation
steps, preferred-agent timeouts) are served by ONE ``loop.call_at`` re-armed from
``next_deadline()``. There is no timer per call or per agent.

Every interaction is a task of one channel (DESIGN.md section 9): calls are voice, the task layer
(``engine.tasks``) enqueues chats, e-mails, social messages and tickets into the same Router, so
one agent's capacity is counted across channels. Offers and withdrawals go to the handlers
connected for the task's channel (``connect``): voice to the call layer, which rings the agent;
the other channels to the task service, which shows the offer on the agent's event stream. The
service remembers the channel of each non-voice task it enqueued, so a voice offer costs no
lookup beyond a dict miss. A callback task (a caller's place kept, ``queues[].callback``) waits
on the voice channel in the Router (``ROUTED_AS``), among the calls, and counts in their figures;
its offers go to the task service.

Config speaks in skill *names*; the Router in dense skill *indices*. The catalogue maps one to the
other: every skill named by an agent, a queue, a relaxation step or a flow's ``set`` step gets an
index at start. Agent state lives in the Router's arrays and nowhere else (DESIGN.md section 2):
this module asks, it does not mirror.

Queue and agent figures for Prometheus are read at scrape time by ``RoutingCollector``, so routing
events never touch a gauge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import routing_core as rc
from engine.config import CHANNEL_NAMES as _CONFIG_CHANNELS
from engine.config import Config, QueueConfig, SetStep

log = structlog.stdlib.get_logger("acd.routing")

# Channel names in config -> channel indices in the Router; voice is the phone call. Stored tasks
# name their channel, never the index.
CHANNELS = {name: i for i, name in enumerate(_CONFIG_CHANNELS)}
VOICE = CHANNELS["voice"]
CHANNEL_NAMES = {i: name for name, i in CHANNELS.items()}
# Channels whose tasks the Router counts on another channel's capacity: a callback is a phone
# call the agent makes, so it takes (and waits for) the agent's voice capacity, and it is
# ordered among the queue's calls by its priority and effective enqueue time (the place its
# caller had). Its offers still go to its own channel's handlers (the task service).
ROUTED_AS = {CHANNELS["callback"]: VOICE}


class SkillCatalogue:
    """Skill names <-> Router skill indices. An index never changes for the life of a Router: a
    reload's new names are appended (``extend``), so the Router's columns stay where they are."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        self.index = {name: i for i, name in enumerate(self.names)}

    def extend(self, names: Iterable[str]) -> int:
        """Give the names not yet known the next indices; how many were new."""
        new = sorted(set(names) - set(self.index))
        for name in new:
            self.index[name] = len(self.names)
            self.names.append(name)
        return len(new)

    def requirements(self, levels: Mapping[str, int]) -> tuple[rc.Requirement, ...]:
        return tuple(rc.Requirement(self.index[s], lvl) for s, lvl in sorted(levels.items()))

    @classmethod
    def from_config(cls, cfg: Config) -> SkillCatalogue:
        names: set[str] = set()
        for agent in cfg.agents:
            names.update(agent.skills)
        for queue in cfg.queues:
            names.update(queue.requirements)
            for step in queue.steps:
                names.update(step.requirements or {})
        for flow in cfg.flows:
            for s in flow.steps:
                if isinstance(s, SetStep) and s.requirements:
                    names.update(s.requirements)
        return cls(names or {"default"})


def queue_spec(queue: QueueConfig, skills: SkillCatalogue) -> rc.QueueSpec:
    return rc.QueueSpec(
        name=queue.name,
        strategy=rc.Strategy[queue.strategy.name],
        requirements=skills.requirements(queue.requirements),
        steps=tuple(
            rc.RelaxStep(
                after_s=step.after_s,
                requirements=None
                if step.requirements is None
                else skills.requirements(step.requirements),
                max_penalty=step.max_penalty,
            )
            for step in queue.steps
        ),
        weight=queue.weight,
        wrap_up_s=queue.wrap_up_s,
        max_length=queue.max_length,
        reject_delay_s=queue.reject_delay_s,
        busy_delay_s=queue.busy_delay_s,
        no_answer_delay_s=queue.no_answer_delay_s,
        auto_pause_after=queue.auto_pause_after,
        retry_delay_s=queue.retry_delay_s,
        priority_aging_per_min=queue.priority_aging_per_min,
    )


def build_router(
    cfg: Config, *, max_tasks: int = 8192, seed: int = 0
) -> tuple[rc.Router, SkillCatalogue]:
    skills = SkillCatalogue.from_config(cfg)
    router = rc.Router(
        n_skills=len(skills.names),
        max_agents=max(16, len(cfg.agents) * 2),
        max_tasks=max_tasks,
        max_queues=max(16, len(cfg.queues) * 2),
        seed=seed,
    )
    for queue in cfg.queues:
        router.add_queue(queue_spec(queue, skills))
    for agent in cfg.agents:
        router.add_agent(
            agent.id,
            skills={skills.index[s]: lvl for s, lvl in agent.skills.items()},
            queues=dict(agent.queues),
            capacity={CHANNELS[ch]: n for ch, n in agent.capacity.items()},
        )
    return router, skills


OfferCallback = Callable[[rc.Offer], None]


@dataclass(frozen=True, slots=True)
class OfferHandlers:
    """Who hears one channel's offers (and rings or shows them), and its withdrawals."""

    on_offer: OfferCallback
    on_withdraw: OfferCallback


class RoutingService:
    """Owns the Router; the only code that calls it. Not thread-safe: the event loop's thread only."""

    def __init__(
        self,
        cfg: Config,
        *,
        loop: asyncio.AbstractEventLoop,
        on_offer: OfferCallback | None = None,
        on_withdraw: OfferCallback | None = None,
        on_queue_empty: Callable[[str], None] | None = None,
        on_wrap_up_end: Callable[[str, rc.AgentState], None] | None = None,
        max_tasks: int = 8192,
    ) -> None:
        self.router, self.skills = build_router(cfg, max_tasks=max_tasks)
        self._cfg = cfg
        # Agents removed by a reload: still in the Router (it never forgets an agent), in no queue.
        self._retired: set[str] = set()
        self._on_offer = on_offer
        self._on_withdraw = on_withdraw
        # Handlers of the channels other than voice, and the channel of each non-voice task in
        # the Router (added at enqueue, dropped when the task leaves it).
        self._handlers: dict[int, OfferHandlers] = {}
        self._channel_of: dict[str, int] = {}
        # Called with a queue's name when its last logged-in member logs out (leave_empty).
        self.on_queue_empty = on_queue_empty
        # Called with an agent's id and new state when its wrap-up timer ran out inside dispatch:
        # the live views and the agent events learn it at once.
        self.on_wrap_up_end = on_wrap_up_end
        # Called with a call's id and the wall seconds its agent spent in wrap-up after it (0 for
        # none), when the wrap-up ends: on its timer, or early by a ready / pause / logout.
        self.on_wrap_up_done: Callable[[str, float], None] | None = None
        self._wrapping: dict[str, tuple[str, float]] = {}  # agent -> (call id, wall start)
        self._loop = loop
        self._dispatch_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.decisions = 0

    def connect(
        self,
        *,
        on_offer: OfferCallback,
        on_withdraw: OfferCallback,
        on_queue_empty: Callable[[str], None] | None = None,
        on_wrap_up_end: Callable[[str, rc.AgentState], None] | None = None,
        channels: Mapping[str, OfferHandlers] | None = None,
    ) -> None:
        """Who hears the router's decisions: the call layer (voice offers and withdrawals, a queue
        left empty), the task service (``channels``: the handlers of each other channel) and the
        agent directory (wrap-up ends). The daemon connects them once they exist, since all are
        built on this service; until then no dispatch runs, so no agent is reserved for an offer
        nobody would ring. A channel without handlers is never enqueued (``enqueue`` raises)."""
        self._on_offer, self._on_withdraw = on_offer, on_withdraw
        self._handlers = {CHANNELS[name]: h for name, h in (channels or {}).items()}
        self.on_queue_empty, self.on_wrap_up_end = on_queue_empty, on_wrap_up_end
        self._kick()

    @property
    def now(self) -> float:
        return self._loop.time()

    # -- the one coalesced dispatch and the one timer --------------------------------------------

    def _kick(self) -> None:
        if not self._dispatch_pending:
            self._dispatch_pending = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_pending = False
        if self._on_offer is None:  # not connected yet (connect() dispatches)
            return
        self._timer = None
        self._timer_at = None
        offers = self.router.dispatch(self.now)
        self.decisions += len(offers)
        ends = self.router.take_wrap_up_ends()
        for agent_id, _ in ends:
            self._wrap_up_over(agent_id)
        if ends and self.on_wrap_up_end is not None:
            for agent_id, state in ends:
                self.on_wrap_up_end(agent_id, state)
        channel_of, handlers, on_voice = self._channel_of, self._handlers, self._on_offer
        for offer in offers:
            ch = channel_of.get(offer.task_id, VOICE)
            try:
                if ch == VOICE:
                    on_voice(offer)
                else:
                    handlers[ch].on_offer(offer)
            except Exception:
                # One failing offer handler must not strand the other reserved agents; the handler
                # owns its call (or task) and ends it. Logged with the ids so the bug can be found.
                log.exception(
                    "offer_handler_failed",
                    call_id=offer.task_id,
                    agent=offer.agent_id,
                    channel=CHANNEL_NAMES[ch],
                )
        self._arm_timer()

    def _withdrawn(self, offers: Iterable[rc.Offer]) -> None:
        for offer in offers:
            ch = self._channel_of.get(offer.task_id, VOICE)
            if ch != VOICE:
                self._handlers[ch].on_withdraw(offer)
            elif self._on_withdraw is not None:
                self._on_withdraw(offer)

    def _arm_timer(self) -> None:
        deadline = self.router.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._dispatch)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def warmup(self) -> tuple[int, int]:
        return self.router.warmup()

    def refused(self, cfg: Config) -> list[str]:
        """Why a reloaded config cannot be applied to the live Router (empty: it can). A queue
        removed while callers or tasks wait (or ring) in it would strand them, so the reload is
        refused naming the queue: route no new callers to it, let it empty, then remove it
        (Asterisk keeps such a queue "dead" until its last caller leaves; refusing says so
        instead of doing it silently)."""
        problems = []
        kept = {q.name for q in cfg.queues}
        for queue in self._cfg.queues:
            if queue.name not in kept and (n := self.router.waiting(queue.name)):
                problems.append(
                    f"queues.{queue.name}: removed while {n} waiting in it; stop routing to it"
                    " and remove it once it is empty"
                )
        known = {a.id for a in self._cfg.agents} | self._retired
        added = {a.id for a in cfg.agents} - known
        if added and len(known) + len(added) > self.router.max_agents:
            problems.append(
                f"agents: {len(known) + len(added)} agents (with those removed since the start)"
                f" exceed the {self.router.max_agents} the running router holds; restart to add them"
            )
        return problems

    def apply(self, cfg: Config) -> None:
        """Apply a reloaded config (which ``refused`` accepted) to the live Router in place.

        New skills, queues and agents are added; a changed queue (strategy, requirements, steps,
        weight, delays, wrap-up, max_length) and a changed agent (skills, memberships,
        capacity) are updated without touching live calls, agent states or waiting callers'
        places (``Router.update_queue`` / ``update_agent``). A removed agent leaves every queue
        (its live call goes on; it is offered nothing more) and comes back in place if a later
        reload adds it again. A removed queue (empty, see ``refused``) keeps no members. Queues
        left with no logged-in member get ``on_queue_empty`` as after a logout.
        """
        had_members = {q.name: self.members_logged_in(q.name) for q in self._cfg.queues}
        new_skills = SkillCatalogue.from_config(cfg).names
        self.router.add_skills(self.skills.extend(new_skills))
        now = self.now
        old_queues = {q.name: q for q in self._cfg.queues}
        known_queues = set(self.router.queue_names())
        for queue in cfg.queues:
            spec = queue_spec(queue, self.skills)
            if queue.name not in known_queues:
                self.router.add_queue(spec)
            elif queue.name not in old_queues or spec != queue_spec(
                old_queues[queue.name], self.skills
            ):
                self.router.update_queue(spec, now)
        old_agents = {a.id: a for a in self._cfg.agents}
        for agent in cfg.agents:
            skills = {self.skills.index[s]: lvl for s, lvl in agent.skills.items()}
            capacity = {CHANNELS[ch]: n for ch, n in agent.capacity.items()}
            before = old_agents.get(agent.id)
            if before is None and agent.id not in self._retired:
                self.router.add_agent(
                    agent.id, skills=skills, queues=dict(agent.queues), capacity=capacity
                )
            elif before is None or (before.skills, before.queues, before.capacity) != (
                agent.skills, agent.queues, agent.capacity,
            ):  # fmt: skip
                self.router.update_agent(
                    agent.id, skills=skills, queues=dict(agent.queues), capacity=capacity
                )
            self._retired.discard(agent.id)
        for agent_id in set(old_agents) - {a.id for a in cfg.agents}:
            before = old_agents[agent_id]
            self.router.update_agent(
                agent_id,
                skills={self.skills.index[s]: lvl for s, lvl in before.skills.items()},
                queues={},
                capacity={CHANNELS[ch]: n for ch, n in before.capacity.items()},
            )
            self._retired.add(agent_id)
        self._cfg = cfg
        self._kick()
        if self.on_queue_empty is not None:
            for queue in cfg.queues:
                if had_members.get(queue.name, 0) and not self.members_logged_in(queue.name):
                    self.on_queue_empty(queue.name)

    # -- tasks -----------------------------------------------------------------------------------

    def enqueue(
        self,
        call_id: str,
        queue: str,
        *,
        priority: int = 0,
        requirements: Mapping[str, int] | None = None,
        enqueue_time: float | None = None,
        preferred_agent: str | None = None,
        preferred_timeout_s: float = 0.0,
        channel: str = "voice",
    ) -> None:
        """Raises ``rc.QueueFull`` when the queue holds max_length tasks of this channel (a caller
        then overflows), ``rc.InvalidArgument`` for a channel nobody handles."""
        ch = CHANNELS.get(channel)
        if ch is None or (ch != VOICE and ch not in self._handlers):
            raise rc.InvalidArgument(f"no handler for channel {channel!r}")
        self.router.enqueue(
            call_id,
            queue,
            self.now,
            priority=priority,
            requirements=None if requirements is None else self.skills.requirements(requirements),
            enqueue_time=enqueue_time,
            preferred_agent=preferred_agent,
            preferred_timeout_s=preferred_timeout_s,
            channel=ROUTED_AS.get(ch, ch),
        )
        if ch != VOICE:
            self._channel_of[call_id] = ch
        self._kick()

    def requeue(
        self,
        task_id: str,
        queue: str,
        *,
        preferred_agent: str | None = None,
        preferred_timeout_s: float = 0.0,
    ) -> None:
        """Move a task (waiting, offered or accepted) to ``queue`` (its requirements become the
        queue's when it changes), keeping its effective enqueue time; its offers are withdrawn
        and an accepted task's agent is released as by ``complete``."""
        self._withdrawn(
            self.router.requeue(
                task_id,
                queue,
                self.now,
                preferred_agent=preferred_agent,
                preferred_timeout_s=preferred_timeout_s,
            )
        )
        self._kick()

    def accept(self, call_id: str, agent_id: str) -> None:
        self._withdrawn(self.router.accept(call_id, agent_id, self.now))
        self._kick()

    def reject(self, call_id: str, agent_id: str, reason: str) -> None:
        self.router.reject(call_id, agent_id, self.now, reason=reason)
        self._kick()

    def complete(self, agent_id: str, call_id: str) -> None:
        self.router.complete(agent_id, self.now, task_id=call_id)
        self._channel_of.pop(call_id, None)
        self._kick()
        if self.router.agent_state(agent_id) is rc.AgentState.WRAP_UP:
            self._wrapping[agent_id] = (call_id, time.time())
        elif self.on_wrap_up_done is not None:
            self.on_wrap_up_done(call_id, 0.0)  # no wrap-up (the queue's wrap_up_s is 0)

    def _wrap_up_over(self, agent_id: str) -> None:
        """The agent's wrap-up ended (whichever way): its call's wrap-up time is told."""
        if self.router.agent_state(agent_id) is rc.AgentState.WRAP_UP:
            return
        began = self._wrapping.pop(agent_id, None)
        if began is not None and self.on_wrap_up_done is not None:
            self.on_wrap_up_done(began[0], max(0.0, time.time() - began[1]))

    def abandon(self, call_id: str) -> None:
        self._withdrawn(self.router.abandon(call_id, self.now))
        self._channel_of.pop(call_id, None)
        self._kick()

    # -- agents ----------------------------------------------------------------------------------

    def login(self, agent_id: str) -> None:
        self.router.login(agent_id, self.now)
        self._kick()

    def logout(self, agent_id: str) -> None:
        was_in = self.router.agent_state(agent_id) is not rc.AgentState.LOGGED_OUT
        self.router.logout(agent_id, self.now)
        self._wrap_up_over(agent_id)
        self._kick()
        if not was_in or self.on_queue_empty is None:
            return
        agent = next((a for a in self._cfg.agents if a.id == agent_id), None)
        for queue in () if agent is None else agent.queues:
            if self.members_logged_in(queue) == 0:
                self.on_queue_empty(queue)

    def members_logged_in(self, queue: str) -> int:
        """Members of ``queue`` in any state but logged out (not ready and wrap-up count: they
        will come back; Asterisk's default joinempty/leavewhenempty conditions judge the same)."""
        count = 0
        for agent in self._cfg.agents:
            if queue not in agent.queues:
                continue
            count += self.router.agent_state(agent.id) is not rc.AgentState.LOGGED_OUT
        return count

    def set_ready(self, agent_id: str) -> None:
        self.router.set_ready(agent_id, self.now)
        self._wrap_up_over(agent_id)
        self._kick()

    def set_not_ready(self, agent_id: str, reason: str = "") -> None:
        self.router.set_not_ready(agent_id, self.now, reason)
        self._wrap_up_over(agent_id)
        self._kick()

    def agent_state(self, agent_id: str) -> rc.AgentState:
        return self.router.agent_state(agent_id)

    # -- figures ---------------------------------------------------------------------------------

    def queue_figures(self, channel: str = "voice") -> Iterator[tuple[str, int, float]]:
        """(queue, waiting, oldest wait seconds) of one channel's tasks (by default the calls)
        for every configured queue."""
        now, ch = self.now, CHANNELS[channel]
        for queue in self._cfg.queues:
            yield (
                queue.name,
                self.router.waiting(queue.name, ch),
                self.router.oldest_wait(queue.name, now, ch),
            )

    def agent_load(self, agent_id: str) -> dict[str, tuple[int, int]]:
        """channel -> (capacity, offered or accepted tasks) for the channels the agent has
        capacity on or work in."""
        caps, loads = self.router.agent_load(agent_id)
        return {
            CHANNEL_NAMES[ch]: (cap, load)
            for ch, (cap, load) in enumerate(zip(caps, loads, strict=True))
            if cap or load
        }

    def staffed(self, queue: str) -> int:
        """The queue's member agents who are working now (available, ringing, on a call or in
        wrap-up): who serves its line, for the expected wait."""
        working = (rc.AgentState.AVAILABLE, rc.AgentState.RESERVED, rc.AgentState.BUSY,
                   rc.AgentState.WRAP_UP)  # fmt: skip
        return sum(
            1
            for agent in self._cfg.agents
            if queue in agent.queues and self.router.agent_state(agent.id) in working
        )

    def agent_states(self) -> Iterator[tuple[str, str]]:
        """(agent id, routing state) of every configured agent."""
        for agent in self._cfg.agents:
            yield agent.id, self.router.agent_state(agent.id).name.lower()

    def agents_by_queue_and_state(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {
            (q.name, s.name.lower()): 0 for q in self._cfg.queues for s in rc.AgentState
        }
        for agent in self._cfg.agents:
            state = self.router.agent_state(agent.id).name.lower()
            for queue in agent.queues:
                counts[(queue, state)] += 1
        return counts


class RoutingCollector(Collector):
    """Per-queue figures read from the Router when Prometheus scrapes."""

    def __init__(self, service: Callable[[], RoutingService | None]) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        service = self._service()
        waiting = GaugeMetricFamily(
            "acd_queue_waiting_calls",
            "Calls waiting in the queue (not yet answered).",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "acd_queue_oldest_wait_seconds",
            "How long the longest-waiting call in the queue has waited.",
            labels=["queue"],
        )
        agents = GaugeMetricFamily(
            "acd_queue_agents",
            "Member agents of the queue by routing state.",
            labels=["queue", "state"],
        )
        # One series per configured agent (bounded by the config, as Asterisk's queue member
        # status is): 1 for its current routing state, so a state timeline needs no log.
        by_agent = GaugeMetricFamily(
            "acd_agent_state",
            "Each configured agent's routing state (1 for the state it is in).",
            labels=["agent", "state"],
        )
        if service is not None:
            for name, n, wait_s in service.queue_figures():
                waiting.add_metric([name], n)
                oldest.add_metric([name], wait_s)
            for (queue, state), n in sorted(service.agents_by_queue_and_state().items()):
                agents.add_metric([queue, state], n)
            for agent_id, state in service.agent_states():
                by_agent.add_metric([agent_id, state], 1)
        yield waiting
        yield oldest
        yield agents
        yield by_agent

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
