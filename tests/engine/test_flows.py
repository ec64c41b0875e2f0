"""The call-flow runner: menus, retries, collected digits, CRM lookups over real HTTP, loops.

The caller side is a scripted CallIO: it stands in for the SIP/media leg (tested on its own against
SIPp and baresip); what is under test here is the runner's decisions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.calls.flows import MAX_FLOW_JUMPS, FlowOutcome, FlowRunner, expand
from engine.config import parse_config
from tests.conftest import free_port


class ScriptedCaller:
    """Presses the scripted keys: one entry per prompt or digit wait, None = silence."""

    def __init__(self, keys: Sequence[str | None] = ()) -> None:
        self.keys = list(keys)
        self.log: list[str] = []

    def _next(self) -> str | None:
        return self.keys.pop(0) if self.keys else None

    async def answer(self) -> None:
        self.log.append("answer")

    async def play(self, prompts: Sequence[str], *, barge_in: bool) -> str | None:
        self.log.append("play:" + ",".join(prompts))
        if barge_in and self.keys and self.keys[0] is not None and self.keys[0].startswith("!"):
            return (self._next() or "!")[1:]  # "!5": pressed during the prompt
        return None

    async def read_digits(
        self, *, max_digits: int, terminator: str, timeout_s: float, first: str = ""
    ) -> str:
        typed = self._next()
        self.log.append(f"read:{max_digits}")
        digits = first + (typed or "")
        if terminator and terminator in digits:
            digits = digits.split(terminator, 1)[0]
        return digits[:max_digits]

    async def transfer(self, trunk: str, number: str, *, timeout_s: float) -> str:
        status = self._next() or "no_answer"  # scripted like a key: the far end's outcome
        self.log.append(f"transfer:{trunk}:{number}:{timeout_s}:{status}")
        return status


CONFIG = """
[[queues]]
name = "support"
[[queues]]
name = "vip"

[[flows]]
name = "ivr"
steps = [
  { type = "answer" },
  { type = "menu", prompt = "ivr-menu", options = { "1" = "support", "2" = "account" }, retries = 2, invalid_prompt = "invalid", default = "support" },
]

[[flows]]
name = "support"
steps = [{ type = "play", prompt = "welcome" }, { type = "enqueue", queue = "support" }]

[[flows]]
name = "account"
steps = [
  { type = "collect", var = "account", prompt = "enter-account", min_digits = 4, max_digits = 8 },
  { type = "lookup", url = "URL/crm", timeout_s = 0.5 },
  { type = "set", queue = "vip", priority = 5, requirements = { support = 5 }, preferred_agent = "{name}", tier = "{tier}", priorities = { platinum = 9, gold = 7 }, data = { label = "acct {account} tier {tier}" } },
  { type = "enqueue" },
]

[[flows]]
name = "strict"
steps = [{ type = "lookup", url = "URL/broken", on_error = "hangup" }, { type = "enqueue", queue = "support" }]

[[flows]]
name = "slow"
steps = [{ type = "lookup", url = "URL/slow", timeout_s = 0.2 }, { type = "enqueue", queue = "support" }]

[[flows]]
name = "loop-a"
steps = [{ type = "goto", flow = "loop-b" }]
[[flows]]
name = "loop-b"
steps = [{ type = "goto", flow = "loop-a" }]

[[flows]]
name = "bye"
steps = [{ type = "answer" }, { type = "hangup", prompt = "goodbye" }]

[[flows]]
name = "out"
steps = [
  { type = "set", data = { n = "00{account}" } },
  { type = "transfer", trunk = "pbx", number = "{n}", timeout_s = 12 },
  { type = "enqueue", queue = "support" },
]

[[trunks]]
name = "pbx"
allow = ["127.0.0.1"]
outbound_proxy = "127.0.0.1:5070"
"""


@pytest.fixture
async def crm() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def lookup(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        return web.json_response({"tier": "gold", "name": "Ada", "nested": {"x": 1}, "bad key": 1})

    async def broken(_request: web.Request) -> web.Response:
        return web.Response(status=500)

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/crm", lookup)
    app.router.add_post("/broken", broken)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.fixture
async def runner(crm: tuple[str, list[dict[str, Any]]]) -> AsyncIterator[FlowRunner]:
    url, _ = crm
    async with aiohttp.ClientSession() as session:
        yield FlowRunner(parse_config(CONFIG.replace("URL", url), "t.toml"), session)


async def test_menu_choice_during_the_prompt(runner: FlowRunner) -> None:
    caller = ScriptedCaller(["!1"])
    outcome = await runner.run("ivr", caller)
    assert outcome == FlowOutcome("enqueue", queue="support")
    assert caller.log == ["answer", "play:ivr-menu", "play:welcome"]


async def test_menu_invalid_then_silence_then_default(runner: FlowRunner) -> None:
    caller = ScriptedCaller(["7", None, None])
    outcome = await runner.run("ivr", caller)
    assert outcome.kind == "enqueue"
    assert outcome.queue == "support"  # the default after 3 attempts
    assert caller.log == [
        "answer",
        "play:ivr-menu", "read:1", "play:invalid",
        "play:ivr-menu", "read:1",
        "play:ivr-menu", "read:1",
        "play:welcome",
    ]  # fmt: skip


async def test_collect_lookup_set_enqueue(
    runner: FlowRunner, crm: tuple[str, list[dict[str, Any]]]
) -> None:
    _, seen = crm
    caller = ScriptedCaller(["!2", "!4", "21337#"])
    outcome = await runner.run("ivr", caller, {"caller": "+15551234"})
    assert outcome.kind == "enqueue"
    assert outcome.queue == "vip"
    assert outcome.priority == 7  # the CRM's tier "gold" (the set's own priority = 5 came first)
    assert outcome.requirements == {"support": 5}
    assert outcome.preferred_agent == "Ada"  # the lookup's result, through the set's {name}
    assert seen == [{"caller": "+15551234", "account": "421337"}]  # the CRM got the call's data
    assert outcome.data == {
        "caller": "+15551234",
        "account": "421337",
        "tier": "gold",
        "name": "Ada",
        "nested": "{'x': 1}",  # scalars only: a nested object is flattened to text
        "label": "acct 421337 tier gold",
    }


async def test_too_few_digits_store_nothing(runner: FlowRunner) -> None:
    caller = ScriptedCaller(["!2", None, "12#"])
    outcome = await runner.run("ivr", caller)
    assert outcome.data["account"] == ""


async def test_lookup_failure_follows_on_error(runner: FlowRunner) -> None:
    outcome = await runner.run("strict", ScriptedCaller())
    assert outcome == FlowOutcome("hangup", reason="lookup failed")
    assert runner.lookups_failed == 1


async def test_slow_crm_costs_at_most_its_timeout(runner: FlowRunner) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await runner.run("slow", ScriptedCaller())
    assert loop.time() - started < 1.0
    assert outcome.kind == "enqueue"  # on_error = "continue"
    assert runner.lookups_failed == 1


async def test_goto_loop_is_cut_with_a_reason(runner: FlowRunner) -> None:
    outcome = await runner.run("loop-a", ScriptedCaller())
    assert outcome == FlowOutcome("hangup", reason="flow loop")
    assert MAX_FLOW_JUMPS == 50


async def test_hangup_and_transfer(runner: FlowRunner) -> None:
    assert await runner.run("bye", ScriptedCaller()) == FlowOutcome(
        "hangup", reason="flow hangup", hangup_prompt="goodbye"
    )
    # A transfer the far end refuses: the status lands in the data and the flow goes on.
    caller = ScriptedCaller(["busy"])
    out = await runner.run("out", caller, {"account": "42"})
    assert caller.log == ["transfer:pbx:0042:12.0:busy"]
    assert (out.kind, out.queue) == ("enqueue", "support")
    assert (out.data["transfer_target"], out.data["transfer_status"]) == ("0042", "busy")


def test_expand() -> None:
    assert expand("{a}-{b}-{missing}", {"a": 1, "b": "x"}) == "1-x-"
    assert expand("no vars", {}) == "no vars"
