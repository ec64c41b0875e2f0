"""Agent endpoints: where to ring each agent, and how registrations and feature codes move its state.

How this works: ``AgentDirectory`` owns the SIP registrar's binding store for the agents' phones. An
agent with ``login = "register"`` becomes available when its first binding appears and is logged out
when its last binding goes away, whether by un-REGISTER or by expiry (Asterisk's behaviour with
``autopause``-free dynamic members). Expiries are served by ONE ``loop.call_at`` re-armed from the
registrar's ``next_expiry()``: no timer per phone (``loop`` is the event loop, or a test's
clock: engine.runtime.clock). A browser agent (``login = "webrtc"``) is logged
in when its softphone's media comes up and out when the page goes away, the same way. If the last binding vanishes while the agent is on
a call, the logout waits until the call completes (``call_completed``), so a phone that reboots mid
call does not tear down routing state under a live call.

Feature codes dialled from an agent's phone (``[features]``: ``*1`` ready, ``*2`` not ready, ``*3``
log out) are decoded here; the call layer answers them with a short prompt.

State itself lives in the routing service; this module only tells it what happened and records the
change as an agent event (CDR store and live event stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

import routing_core as rc
from engine.config import AgentConfig, Config, LoginMode
from engine.routing.service import RoutingService
from engine.runtime.clock import Cancellable, Scheduler
from engine.storage.cdr import CdrWriter
from routing_core.router import AUTO_PAUSE_REASON
from sip.registrar import ContactRequest, RegisterResult, Registrar

log = structlog.stdlib.get_logger("acd.agents")


@dataclass(frozen=True, slots=True)
class FeatureAction:
    state: str  # "ready" | "not_ready" | "logged_out"
    prompt: str  # what the agent hears before the call ends


class AgentDirectory:
    def __init__(
        self,
        config: Config,
        routing: RoutingService,
        cdr: CdrWriter | None,
        loop: Scheduler,
        *,
        registrar: Registrar | None = None,
    ) -> None:
        self._config = config
        self._agents: dict[str, AgentConfig] = {a.id: a for a in config.agents}
        self._routing = routing
        self._cdr = cdr
        self._loop = loop
        # Not `registrar or ...`: an empty Registrar is falsy (it has __len__).
        self.registrar = registrar if registrar is not None else Registrar()
        self._timer: Cancellable | None = None
        self._timer_at: float | None = None
        self._logout_after_call: set[str] = set()
        # agent id -> the address-of-record its phone registers (the SIP core keys bindings by
        # AOR, e.g. "sip:1001@acd.example.com"; direct register() calls use the agent id itself)
        self._aor: dict[str, str] = {}
        # browser agents whose softphone media is up (engine.webrtc.gateway): their "registration"
        self._softphones: set[str] = set()

    def apply(self, config: Config) -> None:
        """A reloaded config: new agents, passwords, contacts and feature codes apply at once."""
        self._config = config
        self._agents = {a.id: a for a in config.agents}

    # -- registrations ---------------------------------------------------------------------------

    def register(
        self,
        agent_id: str,
        contacts: Sequence[ContactRequest],
        *,
        call_id: str,
        cseq: int,
        expires: int | None,
    ) -> RegisterResult:
        """Apply an authenticated REGISTER for an agent's phone; the result says what to answer."""
        now = self._loop.time()
        self._aor[agent_id] = agent_id
        had = bool(self.registrar.bindings(agent_id, now))
        result = self.registrar.register(
            agent_id, contacts, call_id=call_id, cseq=cseq, expires=expires, now=now
        )
        if result.ok:
            has = bool(self.registrar.bindings(agent_id, now))
            if has and not had:
                self._phone_up(agent_id)
            elif had and not has:
                self._phone_gone(agent_id, "unregistered")
        self._arm()
        return result

    def registration_changed(self, aor: str) -> None:
        """The SIP endpoint's registrar changed an AOR's bindings (REGISTER or expiry)."""
        user = aor.split(":", 1)[-1].split("@", 1)[0]
        agent_id = user if user in self._agents else aor
        if agent_id not in self._agents:
            return
        self._aor[agent_id] = aor
        if self.registrar.bindings(aor, self._loop.time()):
            self._phone_up(agent_id)
        else:
            self._phone_gone(agent_id, "unregistered or expired")
        self._arm()

    def softphone_up(self, agent_id: str) -> None:
        """A browser agent's softphone connected its media: like a phone registering."""
        if agent_id in self._agents:
            self._softphones.add(agent_id)
            self._phone_up(agent_id)

    def softphone_gone(self, agent_id: str, reason: str) -> None:
        """The agent page closed (or lost its connection): like the last binding expiring."""
        if agent_id in self._softphones:
            self._softphones.discard(agent_id)
            self._phone_gone(agent_id, reason)

    def config_of(self, agent_id: str) -> AgentConfig | None:
        """The agent's ``[[agents]]`` entry (None if the running config has no such agent)."""
        return self._agents.get(agent_id)

    def reachable(self, agent_id: str) -> bool:
        """Has a phone or softphone to ring (a static contact always counts)."""
        return agent_id in self._softphones or bool(self.contacts(agent_id))

    def contacts(self, agent_id: str) -> list[str]:
        """URIs to ring for an agent, best first (registered bindings, or the static contact)."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return []
        if agent.login is LoginMode.STATIC:
            return [agent.contact]
        if agent.login is LoginMode.WEBRTC:
            return []  # rung over its softphone's WebSocket, not at a SIP contact
        aor = self._aor.get(agent_id, agent_id)
        return [b.contact for b in self.registrar.bindings(aor, self._loop.time())]

    def _expire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._loop.time()
        by_aor = {aor: agent for agent, aor in self._aor.items()}
        gone: set[str] = {b.aor for b in self.registrar.expire(now)}
        for aor in sorted(gone):
            agent_id = by_aor.get(aor)
            if agent_id is not None and not self.registrar.bindings(aor, now):
                self._phone_gone(agent_id, "registration expired")
        self._arm()

    def _arm(self) -> None:
        deadline = self.registrar.next_expiry()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._expire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- state changes ---------------------------------------------------------------------------

    def _record(self, agent_id: str, state: str, reason: str) -> None:
        log.info("agent_state", agent=agent_id, state=state, reason=reason)
        if self._cdr is not None:
            self._cdr.agent_event(agent_id, state, reason=reason)

    def _phone_up(self, agent_id: str) -> None:
        self._logout_after_call.discard(agent_id)
        if self._routing.agent_state(agent_id) is rc.AgentState.LOGGED_OUT:
            self._routing.login(agent_id)
            self._record(agent_id, "available", "phone registered")

    def _phone_gone(self, agent_id: str, reason: str) -> None:
        state = self._routing.agent_state(agent_id)
        if state is rc.AgentState.LOGGED_OUT:
            return
        if state in (rc.AgentState.BUSY, rc.AgentState.RESERVED):
            # On a call (or ringing): log out once it is over, not under it.
            self._logout_after_call.add(agent_id)
            log.info("agent_logout_deferred", agent=agent_id, reason=reason, state=state.name)
            return
        self._routing.logout(agent_id)
        self._record(agent_id, "logged_out", reason)

    def wrap_up_ended(self, agent_id: str, state: rc.AgentState) -> None:
        """The agent's wrap-up timer ran out: available again, or not ready when a pause was asked
        for during the call (recorded and published)."""
        if state is rc.AgentState.NOT_READY:
            self._record(agent_id, "not_ready", self._routing.router.not_ready_reason(agent_id))
        else:
            self._record(agent_id, "available", "wrap-up ended")

    def missed(self, agent_id: str) -> None:
        """The agent missed an offer (busy, declined, not answered) and the router has taken it
        back: when that miss paused the agent (the queue's auto_pause_after), record and publish
        it, as an API pause is (else only the router would know why the agent stopped getting
        offers)."""
        if self._routing.agent_state(agent_id) is not rc.AgentState.NOT_READY:
            return  # not paused, or paused once a call it is still on ends (see wrap_up_ended)
        reason = self._routing.router.not_ready_reason(agent_id)
        if reason == AUTO_PAUSE_REASON:
            self._record(agent_id, "not_ready", reason)

    def call_completed(self, agent_id: str) -> None:
        """The call layer finished an agent's call (or the task service one of its tasks): apply
        a logout that was waiting for it, once the agent holds no other work (a chat, say)."""
        state = self._routing.agent_state(agent_id)
        if state in (rc.AgentState.BUSY, rc.AgentState.RESERVED):
            return
        if agent_id in self._logout_after_call and not self.reachable(agent_id):
            self._logout_after_call.discard(agent_id)
            self._routing.logout(agent_id)
            self._record(agent_id, "logged_out", "registration ended during a call")

    # -- feature codes ---------------------------------------------------------------------------

    def feature_code(self, agent_id: str, dialed: str) -> FeatureAction | None:
        """Apply a feature code dialled by an agent's phone; None when ``dialed`` is not one."""
        codes = self._config.features
        actions = {
            codes.ready: ("ready", "thank-you-holding"),
            codes.not_ready: ("not_ready", "goodbye"),
            codes.logout: ("logged_out", "goodbye"),
        }
        if dialed not in actions or agent_id not in self._agents:
            return None
        state, prompt = actions[dialed]
        current = self._routing.agent_state(agent_id)
        try:
            if state == "ready":
                if current is rc.AgentState.LOGGED_OUT:
                    self._routing.login(agent_id)
                else:
                    self._routing.set_ready(agent_id)
                self._record(agent_id, "available", "feature code")
            elif state == "not_ready":
                self._routing.set_not_ready(agent_id, "feature code")
                self._record(agent_id, "not_ready", "feature code")
            else:
                self._routing.logout(agent_id)
                self._record(agent_id, "logged_out", "feature code")
        except rc.InvalidTransition as exc:
            log.info("feature_code_refused", agent=agent_id, code=dialed, reason=str(exc))
            return FeatureAction(state, "invalid")
        return FeatureAction(state, prompt)
