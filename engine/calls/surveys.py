"""Post-call CSAT survey: the caller stays on the line when the agent hangs up and rates the call.

How this works: in a queue with ``csat`` (``engine.config.CsatConfig``), the agent's BYE (or the
softphone's hang-up) does not end a bridged call: ``agent_left`` fails the call's
``transfer_request`` with ``AgentHungUp``, and the call's own task (``queueing``) runs ``run``.
The agent's part ends at once (the bridge and its recording stop, routing completes the call,
the agent goes to wrap-up, the ``complete`` queue event says the agent hung up); then the caller
hears the question and presses 1 (poor) to 5 (excellent), by RFC 4733, SIP INFO or in-band tones
(detection is switched on for the survey as for a flow's menu). A key outside 1-5 gets the
``invalid`` prompt and the question once more; no key within ``timeout_s`` after the question, or
a second wrong one, is no score. An optional second question works the same way, then the thanks
prompt, and we hang up. The answers land in the CDR row (``csat_score``, ``csat_second_score``)
and in ``acd_csat_responses_total{queue,question,score}``; every survey started is counted once
in ``acd_csat_surveys_total{queue,outcome}``. A caller who hangs up first leaves the scores given
so far (maybe none) and the call's row, as any hang-up does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter

from engine.calls.model import AgentHungUp, Call, CallEnded, loop_now
from engine.config import CsatConfig
from engine.runtime.metrics import Metrics

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")

# The scale callers are asked for: 1 (poor) to 5 (excellent), as Amazon Connect's and Genesys
# Cloud's post-call survey templates use.
SCORES = "12345"
# A wrong key gets the question once more; after that the caller is not asked again.
ATTEMPTS = 2


class SurveyMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.responses = Counter(
            "acd_csat_responses_total",
            "Post-call survey answers by queue, question (1, or 2 for the second) and score (1-5).",
            ["queue", "question", "score"],
            registry=r,
        )
        self.surveys = Counter(
            "acd_csat_surveys_total",
            "Post-call surveys started, by how they ended: answered (the first question at "
            "least), no_answer (timeout or wrong keys), hung_up (the caller left first), "
            "failed (a prompt could not be played).",
            ["queue", "outcome"],
            registry=r,
        )


class Surveys:
    """The post-call CSAT survey of queues with ``csat``."""

    def __init__(self, service: CallService, metrics: Metrics) -> None:
        self._s = service
        self.metrics = SurveyMetrics(metrics)

    def _survey_of(self, call: Call) -> CsatConfig | None:
        queue = next((q for q in self._s.config.queues if q.name == call.queue), None)
        return queue.csat if queue is not None else None

    def agent_left(self, call: Call, reason: str) -> bool:
        """The bridged agent hung up: True if the caller stays on for the queue's survey (the
        call's task then runs ``run``), False if the call ends as usual."""
        waiting = call.transfer_request
        if (
            waiting is None
            or waiting.done()
            or call.hangup_reason  # already ending (the caller's BYE crossed the agent's)
            or not call.answered
            or self._survey_of(call) is None
        ):
            return False
        waiting.set_exception(AgentHungUp(reason))
        waiting.exception()  # retrieved: a caller gone before the task resumes never awaits it
        return True

    async def run(self, call: Call, reason: str) -> None:
        """The agent's part ends, then the caller is asked; returns when we should hang up."""
        survey = self._survey_of(call)
        now_wall = time.time()
        call.hangup_side = "agent"  # the conversation's end, for the complete event
        self._s.teardown.release_agent(
            call, now_wall, now_wall - (call.agent_answered_at or now_wall)
        )
        call.agent_released_at = now_wall  # released: teardown.finish does not do it again
        self._s.media.stop_player(call)  # the agent may have left the caller on hold music
        if call.bridge is not None:
            call.bridge.stop(loop_now())  # the recording ends with the conversation
        self._s.monitoring.bridge_ended(call, "agent hung up")  # no conversation left to monitor
        log.info("csat_survey_started", agent=call.agent_id, reason=reason)
        if survey is None:  # reloaded away between the hang-up and now
            call.hangup_reason = f"agent {reason}"
            return
        await self._s.media.media_home(call)  # a media worker hands the caller's leg back
        if call.held_by:  # whoever held, the survey is heard
            if call.rtp is not None and "caller" in call.held_by:
                call.rtp.set_held(False, loop_now())
            call.held_by.clear()
        while not call.digits.empty():  # keys pressed while talking are not answers
            call.digits.get_nowait()
        self._s.media.listen_for_tones(call, True)
        queue = call.queue
        outcome = "hung_up"
        try:
            outcome = await self._ask_all(call, survey)
        except CallEnded as missing:  # a prompt that is not there: the call itself is fine
            log.warning("csat_survey_failed", reason=str(missing))
            outcome = "failed"
        finally:
            self.metrics.surveys.labels(queue=queue, outcome=outcome).inc()
            log.info("csat_survey_ended", outcome=outcome, score=call.csat_score,
                     second_score=call.csat_second_score)  # fmt: skip
        # Hung up by us, after the agent: the row says why the conversation ended.
        call.hangup_side, call.hangup_reason = "agent", f"agent {reason}"

    async def _ask_all(self, call: Call, survey: CsatConfig) -> str:
        call.csat_score = await self._ask(call, survey.prompt, survey.timeout_s)
        if call.csat_score is None:
            return "no_answer"
        self.metrics.responses.labels(queue=call.queue, question="1", score=call.csat_score).inc()
        if survey.second_prompt:
            call.csat_second_score = await self._ask(call, survey.second_prompt, survey.timeout_s)
            if call.csat_second_score is not None:
                self.metrics.responses.labels(
                    queue=call.queue, question="2", score=call.csat_second_score
                ).inc()
        if survey.thanks_prompt:
            await self._s.media.play(call, [survey.thanks_prompt], barge_in=False)
        return "answered"

    async def _ask(self, call: Call, prompt: str, timeout_s: float) -> int | None:
        """Play ``prompt`` (a key interrupts it) and read one key 1-5; None for no answer."""
        for attempt in range(ATTEMPTS):
            digit = await self._s.media.play(call, [prompt], barge_in=True)
            if digit is None:
                with contextlib.suppress(TimeoutError):
                    digit = await asyncio.wait_for(call.digits.get(), timeout_s)
            if digit is None:
                return None
            if digit in SCORES:
                return int(digit)
            log.info("csat_invalid_key", digit=digit)
            if attempt + 1 < ATTEMPTS:
                await self._s.media.play(call, ["invalid"], barge_in=False)
        return None
