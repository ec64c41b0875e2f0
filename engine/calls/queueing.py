"""Queue treatment: a caller in queue, with music and announcements, until an agent answers.

How this works: ``queue_and_bridge`` enqueues the call in the routing core (join_empty and a
full queue overflow at once), plays music on hold, and waits for the ``connected`` future that
``ringing`` resolves when an agent answers, with position / expected-wait announcements every
``announce_every_s`` (each part switched by ``announce_position`` / ``announce_wait``), all read
again at every turn so a reload applies to waiting callers. The expected wait is the queue-length
predictor of ``routing_core.predict`` (the caller's place, the agents staffed now, the queue's
recent handling times and abandonment rate), learnt from the store's last day of calls at start
(``learn``) and from each call since. ``max_wait_s``, or the queue left
empty (``leave_empty``), withdraws the call and runs the queue's overflow flow, or plays
all-busy. On answer the recording starts and the caller is bridged to the agent's leg; the task
then waits for a blind transfer by the agent (``transfers``) until a BYE cancels it, or, when
the agent hangs up in a queue with a post-call survey (``csat``), runs the survey (``surveys``).
In a queue with ``callback`` the caller's key is read while waiting: the callback key hands the
caller's place to a callback task (``callbacks``) and ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

import routing_core as rc
from engine.calls.announcements import expected_wait_prompts, position_prompts
from engine.calls.callbacks import callable_back
from engine.calls.flows import FlowOutcome
from engine.calls.inbound import CallIO
from engine.calls.model import (
    AgentHungUp,
    AgentLeg,
    Call,
    CallbackRequested,
    CallEnded,
    QueueEmptied,
    loop_now,
)
from engine.config import Config, QueueConfig
from engine.storage import StorageError, queries
from engine.storage.cdr import QueueEventData
from engine.storage.store import Store
from routing_core.predict import WaitPredictor

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")

# Callers remembered for keep_place_s at most: a burst of hang-ups cannot grow memory without end
# (each entry is a few hundred bytes; a center has far fewer callers waiting at once).
MAX_KEPT_PLACES = 10_000


class Queueing:
    """Waiting callers: enqueue, announcements, overflow, and the bridge on answer."""

    def __init__(self, service: CallService) -> None:
        self._s = service
        # Per queue: handling times and abandonments, for the expected wait (routing_core.predict).
        self.predictors: dict[str, WaitPredictor] = {}
        # (caller, queue) -> (wall time its place counted from, when it hung up): keep_place_s.
        self._left: dict[tuple[str, str], tuple[float, float]] = {}
        # Resolved by a reload, so that waiting callers re-read their queue's config.
        self._config_changed: asyncio.Future[None] | None = None

    async def _overflow(self, call: Call, reason: str, *, waited_s: float) -> None:
        """The queue is full, or the caller waited max_wait_s: run its overflow flow (which may
        enqueue elsewhere), or play all-busy and end the call."""
        self._s.media.stop_player(call)
        queue = call.queue
        qcfg = next(q for q in self._s.config.queues if q.name == queue)
        call.overflows += 1
        self._s.metrics.wait.labels(queue=queue, outcome="overflowed").observe(waited_s)
        if self._s.cdr:
            self._s.cdr.queue_event(
                "overflow", call_id=call.id, queue=queue,
                data=QueueEventData(wait_s=waited_s, reason=reason, target=qcfg.overflow or None),
            )  # fmt: skip
        # A chain of overflows longer than this is a configuration loop (a -> b -> a ...).
        if qcfg.overflow and call.overflows <= 5:
            log.info("queue_overflow", queue=queue, reason=reason, flow=qcfg.overflow)
            self._s.media.listen_for_tones(call, True)  # a flow again: its menus read digits
            outcome = await self._s.flows.run(
                qcfg.overflow, CallIO(self._s, call), call.flow_data, call_id=call.id
            )
            call.flow_data = outcome.data
            await self._s.inbound.after_flow(call, outcome)
            return
        if call.answered:
            await self._s.media.play(call, ["all-busy"], barge_in=False)
        raise CallEnded(f"queue {reason}", "overflowed")

    async def queue_and_bridge(self, call: Call, outcome: FlowOutcome) -> None:
        if not call.answered:
            await self._s.session.answer_caller(call)
        call.queue = outcome.queue
        call.priority = outcome.priority
        qcfg = next(q for q in self._s.config.queues if q.name == outcome.queue)
        if not qcfg.join_empty and self._s.routing.members_logged_in(outcome.queue) == 0:
            await self._overflow(call, "join_empty", waited_s=0.0)
            return
        preferred = await self._preferred_agent(call, qcfg, outcome)
        loop = asyncio.get_running_loop()
        call.connected = loop.create_future()
        now_wall = time.time()
        place_at = self._kept_place(call, qcfg, now_wall)
        try:
            self._s.routing.enqueue(
                call.id, outcome.queue, priority=outcome.priority, requirements=outcome.requirements,
                enqueue_time=None if place_at is None else loop.time() - (now_wall - place_at),
                preferred_agent=preferred,
                preferred_timeout_s=qcfg.preferred_agent_timeout_s if preferred else 0.0,
            )  # fmt: skip
        except rc.QueueFull:
            await self._overflow(call, "full", waited_s=0.0)
            return
        except rc.CapacityExceeded:
            # Answered before the router filled up (new_invite refuses with 503 before that
            # when it can see it coming): the queue's overflow, as for a full queue.
            log.warning("queue_router_full", queue=outcome.queue, call_id=call.id)
            await self._overflow(call, "full", waited_s=0.0)
            return
        call.enqueued_at = time.time()
        call.place_at = call.enqueued_at if place_at is None else place_at
        if call.first_place_at is None:
            call.first_place_at = call.place_at
        self._s.cdr_open(call)
        position = self.position(call)
        if self._s.cdr:
            self._s.cdr.queue_event(
                "enter", call_id=call.id, queue=call.queue,
                data=QueueEventData(caller=call.caller, position=position, orig_position=position),
            )  # fmt: skip
        self._s.media.listen_for_tones(call, False)  # no flow reads digits while queued
        while not call.digits.empty():  # a menu's keys are not a callback request
            call.digits.get_nowait()
        self._s.media.music_on_hold(call, outcome.queue)
        while True:
            try:
                leg = await self._wait_for_agent(call)
            except CallbackRequested:  # the callback task keeps the place; teardown hangs up
                if await self._s.callbacks.requested(call, qcfg, outcome.requirements):
                    return
                self._s.media.music_on_hold(call, call.queue)  # not made: the caller waits on
                continue
            except asyncio.CancelledError:
                if call.hangup_side == "caller" and call.enqueued_at is not None:
                    self._remember_place(call, qcfg)
                raise
            except (TimeoutError, QueueEmptied) as exc:
                waited = time.time() - (call.enqueued_at or time.time())
                with contextlib.suppress(rc.RoutingError):
                    self._s.routing.abandon(call.id)  # withdraws any ringing offer
                call.enqueued_at = None
                reason = "empty" if isinstance(exc, QueueEmptied) else "timeout"
                await self._overflow(call, reason, waited_s=waited)
                return
            break
        self._s.media.stop_player(call)
        assert call.rtp is not None
        recording = None
        remote = self._s.media.workers is not None and bool(self._s.media.workers.pool.pids)
        if self._s.recordings is not None:
            recording = await self._s.recordings.start(
                call.id, call.queue, leg.agent_id, remote=self._s.media.workers if remote else None
            )
            if recording is not None:
                call.recording = recording
                call.recording_id = str(getattr(recording, "recording_id", "")) or None
        await self._s.media.media_home(call)
        call.bridge = self._s.media.new_bridge(call, leg.rtp, leg.codec, recording)
        call.bridge.start(loop_now())
        self._s.cdr_open(call)  # answered: the live row names the agent and the recording
        log.info("call_bridged", agent=leg.agent_id)
        # Until a BYE on either leg cancels this task, or the agent transfers the caller.
        call.transfer_request = asyncio.get_running_loop().create_future()
        try:
            target = await call.transfer_request
        except AgentHungUp as gone:  # the caller stays for the queue's survey (queues[].csat)
            await self._s.surveys.run(call, gone.reason)
            return
        await self._s.transfers.agent_transfer(call, leg, target)

    def position(self, call: Call) -> int:
        """1-based place of a waiting call in its queue: higher priority first (aged by the
        queue's priority_aging_per_min, as the routing core does), then older (by the time its
        place counts from, which keep_place_s may have kept from earlier); the callbacks waiting
        there count as callers."""
        qcfg = next((q for q in self._s.config.queues if q.name == call.queue), None)
        rate = 0.0 if qcfg is None else qcfg.priority_aging_per_min
        now = time.time()

        def key_of(priority: int, since: float) -> tuple[int, float]:
            aged = priority + (int(max(0.0, now - since) * rate / 60.0) if rate > 0 else 0)
            return (-aged, since)

        def key(c: Call) -> tuple[int, float]:
            return key_of(c.priority, c.place_at or c.enqueued_at or now)

        mine = key(call)
        ahead = sum(
            1
            for other in self._s.calls.values()
            if other is not call
            and other.queue == call.queue
            and other.enqueued_at is not None
            and other.agent_id is None
            and key(other) < mine
        )
        # Callbacks waiting in the caller's place count as callers ahead (queues[].callback).
        ahead += sum(
            1 for p, since in self._s.callbacks.places(call.queue) if key_of(p, since) < mine
        )
        return ahead + 1

    async def _preferred_agent(
        self, call: Call, qcfg: QueueConfig, outcome: FlowOutcome
    ) -> str | None:
        """The agent this caller is offered to first: the flow's ``preferred_agent`` (a ``set``,
        maybe from a lookup), or else with ``last_agent_days`` the member who last answered this
        caller (the CDR store, at most 0.5 s). Only a logged-in member of the queue who has the
        skills the call needs: anyone else would only make the caller wait the timeout for
        nobody."""
        if not outcome.preferred_agent and (qcfg.last_agent_days <= 0 or self._s.cdr is None):
            return None  # the usual case: no scan of every agent's config per call
        members = [a for a in self._s.config.agents if qcfg.name in a.queues]
        needs = outcome.requirements if outcome.requirements is not None else qcfg.requirements

        def usable(agent_id: str) -> bool:
            agent = next((a for a in members if a.id == agent_id), None)
            return (
                agent is not None
                and all(agent.skills.get(s, 0) >= lvl for s, lvl in needs.items())
                and self._s.routing.agent_state(agent_id) is not rc.AgentState.LOGGED_OUT
            )

        if outcome.preferred_agent:
            if usable(outcome.preferred_agent):
                return self._preferring(qcfg, outcome.preferred_agent, "flow")
            log.info("preferred_agent_skipped", queue=qcfg.name, agent=outcome.preferred_agent,
                     source="flow")  # fmt: skip
        if qcfg.last_agent_days <= 0 or self._s.cdr is None:
            return None
        try:
            last = await asyncio.wait_for(
                self._s.cdr.last_agent(call.caller, [a.id for a in members], qcfg.last_agent_days),
                0.5,
            )
        except TimeoutError:
            log.warning("last_agent_slow", queue=qcfg.name)
            return None
        if last is None:
            return None
        if not usable(last):
            log.info("preferred_agent_skipped", queue=qcfg.name, agent=last, source="last_agent")
            return None
        return self._preferring(qcfg, last, "last_agent")

    def _preferring(self, qcfg: QueueConfig, agent_id: str, source: str) -> str:
        log.info("preferred_agent", queue=qcfg.name, agent=agent_id, source=source,
                 timeout_s=qcfg.preferred_agent_timeout_s)  # fmt: skip
        return agent_id

    def _kept_place(self, call: Call, qcfg: QueueConfig, now_wall: float) -> float | None:
        """With ``keep_place_s``: the wall time this caller's place counts from if it keeps an
        earlier one (this call's first enqueue when it comes back from an overflow or a
        transfer; or the place it had when it hung up waiting here within keep_place_s)."""
        if qcfg.keep_place_s <= 0:
            return None
        if call.first_place_at is not None:
            return call.first_place_at
        kept = self._left.pop((call.caller, qcfg.name), None)
        if kept is None or not call.caller or call.caller == "anonymous":
            return None
        place_at, left_at = kept
        return place_at if now_wall - left_at <= qcfg.keep_place_s else None

    def _remember_place(self, call: Call, qcfg: QueueConfig) -> None:
        """A caller hung up while waiting in a keep_place_s queue: its place, for a call back."""
        if qcfg.keep_place_s <= 0 or not call.caller or call.caller == "anonymous":
            return
        now_wall = time.time()
        longest = max((q.keep_place_s for q in self._s.config.queues), default=0.0)
        for key, (_, left_at) in list(self._left.items()):
            if now_wall - left_at > longest:
                del self._left[key]
        while len(self._left) >= MAX_KEPT_PLACES:
            del self._left[next(iter(self._left))]  # the oldest: dicts keep insertion order
        self._left[(call.caller, qcfg.name)] = (
            call.place_at or call.enqueued_at or now_wall,
            now_wall,
        )

    def announcement(self, call: Call, qcfg: QueueConfig) -> list[str]:
        """What the periodic announcement says now: the caller's position (announce_position)
        and the expected wait (announce_wait, once the queue has answered calls to estimate it
        from: Asterisk's announce-holdtime is silent too before it knows); may be nothing."""
        position = self.position(call)
        prompts = position_prompts(position) if qcfg.announce_position else []
        wait_s = self.expected_wait_s(qcfg, position) if qcfg.announce_wait else None
        if wait_s is not None:
            prompts += expected_wait_prompts(wait_s)
        if qcfg.callback is not None and callable_back(call):  # "press 1 to be called back"
            prompts.append(qcfg.callback.prompt)
        return prompts

    def apply(self, config: Config) -> None:
        """A reloaded config: callers already waiting take the queue's new announcements and
        max_wait_s at once (the waits are woken to re-read them)."""
        changed, self._config_changed = self._config_changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def _changed(self) -> asyncio.Future[None]:
        if self._config_changed is None:
            self._config_changed = asyncio.get_running_loop().create_future()
        return self._config_changed

    async def _wait_for_agent(self, call: Call) -> AgentLeg:
        """Music on hold until an agent answers, with an announcement every
        ``announce_every_s`` seconds (when there is something to announce); TimeoutError after
        ``max_wait_s``. The queue's config is read at every turn, so a reload applies to the
        callers already waiting; a wait counts from the enqueue, an announcement period from the
        end of the last announcement."""
        connected = call.connected
        assert connected is not None
        loop = asyncio.get_running_loop()
        last = loop.time()
        # The wait counts from the enqueue, also when it resumes (a callback that failed).
        started = last - max(0.0, time.time() - (call.enqueued_at or time.time()))

        def turn() -> tuple[QueueConfig, float | None, float | None]:
            qcfg = next(q for q in self._s.config.queues if q.name == call.queue)
            give_up = started + qcfg.max_wait_s if qcfg.max_wait_s > 0 else None
            announce = last + qcfg.announce_every_s if qcfg.announce_every_s > 0 else None
            return qcfg, give_up, announce

        while not connected.done():
            qcfg, give_up, announce = turn()
            now = loop.time()
            if give_up is not None and now >= give_up:
                raise TimeoutError
            due = [x for x in (give_up, announce) if x is not None]
            timeout = max(0.0, min(due) - now) if due else None
            woken: set[asyncio.Future[Any]] = {connected, self._changed()}
            key = self._key(call, qcfg)  # the caller may press the callback key meanwhile
            try:
                await asyncio.wait(
                    woken | {key} if key else woken,
                    timeout=timeout, return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
            finally:
                if key is not None and not key.done():
                    key.cancel()
            if self._pressed(call, qcfg, key):
                continue  # another key: ignored
            if connected.done() or announce is None or loop.time() < announce:
                continue  # answered, a reload to re-read, or the end of the wait (next turn)
            qcfg, give_up, _ = turn()
            last = loop.time()
            prompts = self.announcement(call, qcfg) if qcfg.announce_every_s > 0 else []
            if not prompts:
                continue  # nothing to say: the music goes on, the next period starts now
            self._s.metrics.announcements.labels(queue=call.queue).inc()
            log.debug("queue_announcement", queue=call.queue, prompts=prompts)
            announce_done = asyncio.ensure_future(self._s.media.play(call, prompts, barge_in=False))
            racing: set[asyncio.Future[Any]] = {announce_done, connected}
            try:
                left = None if give_up is None else max(0.0, give_up - loop.time())
                while not (announce_done.done() or connected.done()):
                    key = self._key(call, qcfg)  # "press 1" is heard mid-announcement
                    try:
                        done, _ = await asyncio.wait(
                            racing | {key} if key else racing,
                            timeout=left, return_when=asyncio.FIRST_COMPLETED,
                        )  # fmt: skip
                    finally:
                        if key is not None and not key.done():
                            key.cancel()
                    if not done:
                        break  # max_wait_s: the next turn gives up
                    self._pressed(call, qcfg, key)  # the callback key ends the announcement
                    left = None if give_up is None else max(0.0, give_up - loop.time())
            finally:
                if not announce_done.done():  # answered (or gave up) mid-sentence: stop talking
                    self._s.media.stop_player(call)
                    await asyncio.gather(announce_done, return_exceptions=True)
            last = loop.time()  # the next period counts from the end of this announcement
            if not connected.done() and (give_up is None or last < give_up):
                self._s.media.music_on_hold(call, call.queue)
        return connected.result()

    @staticmethod
    def _key(call: Call, qcfg: QueueConfig) -> asyncio.Future[str] | None:
        """The caller's next key, in a queue that offers callbacks (else None)."""
        return asyncio.ensure_future(call.digits.get()) if qcfg.callback is not None else None

    @staticmethod
    def _pressed(call: Call, qcfg: QueueConfig, key: asyncio.Future[str] | None) -> bool:
        """Whether the caller pressed a key that is ignored; raises ``CallbackRequested`` for
        the queue's callback key (unless an agent's phone already rings for the call)."""
        if key is None or not key.done() or key.cancelled():
            return False
        pressed = key.result()
        ringing = any(not leg.finished for leg in call.legs.values())
        connected = call.connected is not None and call.connected.done()
        callback = qcfg.callback
        is_key = callback is not None and pressed == callback.key and callable_back(call)
        if is_key and not ringing and not connected:
            log.info("callback_key", queue=call.queue, digit=pressed)
            raise CallbackRequested
        log.debug("queue_key_ignored", queue=call.queue, digit=pressed, ringing=ringing)
        return True

    def on_queue_empty(self, queue: str) -> None:
        """The last logged-in member of ``queue`` left: with ``leave_empty`` its waiting callers
        (not those already ringing an agent or talking) go to the queue's overflow."""
        qcfg = next((q for q in self._s.config.queues if q.name == queue), None)
        if qcfg is None or not qcfg.leave_empty:
            return
        for call in list(self._s.calls.values()):
            waiting = call.connected
            if call.queue == queue and waiting is not None and not waiting.done():
                ringing = any(not leg.finished for leg in call.legs.values())
                if call.enqueued_at is not None and not ringing:
                    log.info("queue_left_empty", call_id=call.id, queue=queue)
                    waiting.set_exception(QueueEmptied())

    # -- the expected wait ------------------------------------------------------------------------

    def _predictor(self, queue: str) -> WaitPredictor:
        predictor = self.predictors.get(queue)
        if predictor is None:
            predictor = self.predictors[queue] = WaitPredictor()
        return predictor

    def expected_wait_s(self, qcfg: QueueConfig, position: int) -> float | None:
        """The expected wait of the caller at ``position`` (1-based) of the queue, or None while
        it cannot be told (no answered call to learn handling times from, nobody staffed)."""
        predictor = self.predictors.get(qcfg.name)
        if predictor is None:
            return None
        return predictor.expected_wait_s(position, self._s.routing.staffed(qcfg.name))

    def record_wait(self, queue: str, wait_s: float) -> None:
        """A caller of ``queue`` reached an agent after ``wait_s``."""
        self._predictor(queue).answered(wait_s)

    def record_handled(self, queue: str, talk_s: float) -> None:
        """An answered call ended after ``talk_s``: with its queue's wrap-up, its handling time."""
        qcfg = next((q for q in self._s.config.queues if q.name == queue), None)
        self._predictor(queue).handled(talk_s + (qcfg.wrap_up_s if qcfg else 0.0))

    def record_abandon(self, queue: str, wait_s: float) -> None:
        """A caller of ``queue`` hung up after waiting ``wait_s``."""
        self._predictor(queue).abandoned(wait_s)

    async def learn(self, store: Store, since: float) -> int:
        """Learn handling times and abandonments from the finished calls that arrived after
        ``since`` (a restart keeps the estimates); the number of calls read."""
        try:
            rows = await queries.stat_rows(store, since, None, None)
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"reading the queues' recent calls failed: {exc}") from exc
        wrap = {q.name: q.wrap_up_s for q in self._s.config.queues}
        for row in sorted(rows, key=lambda r: r["arrived_at"]):
            queue, wait_s = row["queue"], row["wait_s"]
            if wait_s is None:
                continue
            if row["agent_answered_at"] is not None:
                self._predictor(queue).answered(wait_s)
                if row["talk_s"] is not None:
                    wrap_s = (
                        row["wrap_up_s"] if row["wrap_up_s"] is not None else wrap.get(queue, 0)
                    )
                    self._predictor(queue).handled(row["talk_s"] + wrap_s)
            elif row["disposition"] == "abandoned":
                self._predictor(queue).abandoned(wait_s)
        return len(rows)
