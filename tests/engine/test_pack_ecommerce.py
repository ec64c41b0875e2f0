"""The e-commerce pack's steps against a real aiohttp "order service": the order number, the
answer assembled from fragments, retries, a service that fails, is slow or answers nonsense;
the config errors; the documented configuration and the shipped config/packs/ecommerce.toml
(the peak-hour overflow preset), read as ``acd check-config`` reads them; the QA rule pack.

The caller is test_flows' scripted CallIO; tests/e2e/test_pack_ecommerce_call.py types the
digits from SIPp and checks the ticket in the daemon's store.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.calls.flows import FlowRunner
from engine.config import ConfigError
from engine.packs.ecommerce import OrderStatus, answer_prompts
from engine.packs.ecommerce.orders import OrderAnswer, number_prompts
from engine.plugins import load_config, parse_config
from tests.conftest import free_port
from tests.engine.test_flows import ScriptedCaller
from tests.engine.test_pack_finance import REPO

SHIPPED = Path(REPO / "engine" / "prompts")


@dataclass
class Shop:
    """Order 4321 shipped, 3 days; 5555 delivered; ``answer`` replaces the answer when set."""

    url: str
    answer: Any = None
    status: int = 200
    delay_s: float = 0.0
    asked: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    port = free_port()
    svc = Shop(f"http://127.0.0.1:{port}")

    async def order(request: web.Request) -> web.Response:
        body = await request.json()
        svc.asked.append(body)
        await asyncio.sleep(svc.delay_s)
        if svc.status != 200:
            return web.Response(status=svc.status)
        if svc.answer is not None:
            return web.json_response(svc.answer)
        orders = {"4321": {"found": True, "status": "shipped", "carrier": "DHL", "eta_days": 3},
                  "5555": {"found": True, "status": "delivered", "eta_days": 0}}  # fmt: skip
        return web.json_response(orders.get(body["order"], {"found": False}))

    app = web.Application()
    app.router.add_post("/order", order)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield svc
    await runner.cleanup()


def config(url: str, step: str = "", ticket: str = "") -> str:
    keys = 'type = "order_status", found_flow = "agent", not_found_flow = "agent", failed_flow = "fallback"'
    order = "{ " + keys + (f", {step}" if step else "") + " }"
    return f"""
[plugins]
enabled = ["ecommerce"]

[plugins.ecommerce]
order_url = "{url}/order"
timeout_s = 0.3

[[queues]]
name = "orders"
[[queues]]
name = "aftersales"

[[flows]]
name = "shop"
steps = [{{ type = "answer" }}, {order}, {{ type = "hangup" }}]
[[flows]]
name = "agent"
steps = [{{ type = "enqueue", queue = "orders" }}]
[[flows]]
name = "fallback"
steps = [{{ type = "set", data = {{ route = "fallback" }} }}, {{ type = "enqueue", queue = "orders" }}]
[[flows]]
name = "ticket"
steps = [{{ type = "create_ticket", queue = "aftersales"{ticket} }}, {{ type = "enqueue", queue = "orders" }}]
"""


async def _call(
    text: str, keys: list[str | None], flow: str = "shop"
) -> tuple[Any, ScriptedCaller, FlowRunner]:
    cfg, plugins = parse_config(text, "shop.toml")
    async with aiohttp.ClientSession() as http:
        runner = FlowRunner(cfg, http, plugins=plugins)
        caller = ScriptedCaller(keys)
        outcome = await runner.run(
            flow, caller, {"caller": "5550100", "dialed": "orders"}, call_id="c-1"
        )
    return outcome, caller, runner


async def test_found_order_is_spoken_from_fragments(packs: None, shop: Shop) -> None:
    outcome, caller, runner = await _call(config(shop.url), ["4321"])
    assert runner.plugin_errors == 0
    assert (outcome.kind, outcome.queue) == ("enqueue", "orders")
    data = outcome.data
    assert (data["order_result"], data["order_number"], data["order_status"]) == (
        "found",
        "4321",
        "shipped",
    )
    assert (data["order_carrier"], data["order_eta_days"], data["order_tries"]) == ("DHL", 3, 1)
    assert shop.asked == [{"order": "4321", "caller": "5550100", "dialed": "orders"}]
    said = "play:order-your-order,digit-4,digit-3,digit-2,digit-1,order-shipped,order-arrives-in,digit-3,days"
    assert caller.log == ["answer", "play:order-number", "read:12", said]
    # every fragment the pack can say is shipped
    for prompt in said.removeprefix("play:").split(","):
        assert (SHIPPED / f"{prompt}.wav").is_file(), prompt


@pytest.mark.parametrize(
    ("status", "eta", "tail"),
    [
        ("shipped", 1, ["order-shipped", "order-arrives-in", "digit-1", "day"]),
        ("in_transit", 42, ["order-in-transit", "order-arrives-in", "digit-40", "digit-2", "days"]),
        ("processing", 30, ["order-processing", "order-arrives-in", "digit-30", "days"]),
        ("shipped", 100, ["order-shipped"]),  # more than the number prompts say: not said
        ("delivered", 2, ["order-delivered"]),  # no delivery time once delivered
        ("out_for_delivery", None, ["order-out-for-delivery"]),
        ("cancelled", None, ["order-cancelled"]),
        ("returned", None, ["order-returned"]),
    ],
)
def test_answer_assembly(status: str, eta: int | None, tail: list[str]) -> None:
    prompts = answer_prompts("98765", OrderAnswer(found=True, status=status, eta_days=eta))
    assert prompts == ["order-your-order", "digit-8", "digit-7", "digit-6", "digit-5", *tail]
    assert all((SHIPPED / f"{p}.wav").is_file() for p in prompts), prompts


def test_unknown_status_is_not_spoken_and_numbers_are_the_shipped_ones() -> None:
    assert answer_prompts("4321", OrderAnswer(found=True, status="lost_in_space")) == []
    assert [number_prompts(n) for n in (0, 20, 21, 99)] == [
        ["digit-0"], ["digit-20"], ["digit-20", "digit-1"], ["digit-90", "digit-9"],
    ]  # fmt: skip


async def test_unknown_order_twice_goes_to_not_found_flow(packs: None, shop: Shop) -> None:
    outcome, caller, _ = await _call(config(shop.url), ["1111", "2222"])
    assert (outcome.kind, outcome.queue) == ("enqueue", "orders")
    assert (outcome.data["order_result"], outcome.data["order_tries"]) == ("not_found", 2)
    assert caller.log.count("play:order-not-found") == 2


async def test_unknown_then_found_and_too_short(packs: None, shop: Shop) -> None:
    outcome, _c, _ = await _call(
        config(shop.url, "max_tries = 3, min_digits = 4"), ["12", "1111", "5555"]
    )
    assert outcome.data["order_result"] == "found"
    assert outcome.data["order_status"] == "delivered"
    assert [a["order"] for a in shop.asked] == ["1111", "5555"]  # "12" was too short to ask
    outcome, _c, _ = await _call(config(shop.url, "max_tries = 1"), ["12"])
    assert outcome.data["order_result"] == "too_short"
    outcome, _c, _ = await _call(config(shop.url, "max_tries = 1"), [None])
    assert outcome.data["order_result"] == "no_input"


@pytest.mark.parametrize(
    ("status", "delay_s", "answer"),
    [
        (503, 0.0, None),  # the service is down
        (200, 1.0, None),  # slower than timeout_s
        (200, 0.0, {"found": "yes"}),  # not the contract
        (200, 0.0, ["found"]),  # not an object
    ],
)
async def test_service_failure_takes_the_fallback(
    packs: None, shop: Shop, status: int, delay_s: float, answer: Any
) -> None:
    shop.status, shop.delay_s, shop.answer = status, delay_s, answer
    outcome, caller, runner = await _call(config(shop.url), ["4321"])
    assert runner.plugin_errors == 0
    assert (outcome.kind, outcome.queue) == ("enqueue", "orders")
    assert outcome.data["order_result"] == "service_error"
    assert outcome.data["route"] == "fallback"
    assert caller.log[-1] == "play:order-unavailable"


async def test_create_ticket_without_a_task_service_ends_the_call(packs: None, shop: Shop) -> None:
    outcome, _caller, runner = await _call(config(shop.url), [], flow="ticket")
    assert (outcome.kind, outcome.reason) == ("hangup", "plugin_error")
    assert runner.plugin_errors == 1


@pytest.mark.parametrize(
    ("step", "ticket", "key", "problem"),
    [
        ("min_digits = 8, max_digits = 6", "", "flows[0].steps[1]", "min_digits, max_digits: expected 1 <= min_digits"),
        ("max_tries = 0", "", "flows[0].steps[1]", "max_tries: expected 1 to 10, found 0"),
        ("timeout_s = 0", "", "flows[0].steps[1]", "timeout_s: expected a number > 0"),
        ("speak = 1", "", "flows[0].steps[1].speak", "expected a boolean"),
        ("order = 1", "", "flows[0].steps[1].order", "unknown key"),
        ("", ", priority = 5000", "flows[3].steps[0]", "priority: expected -1000 to 1000"),
        ("", ", requirements = { returns = 0 }", "flows[3].steps[0]", "requirements.returns: expected a level 1-100"),
        ("", ', subject = 3', "flows[3].steps[0].subject", "expected a string"),
    ],
)  # fmt: skip
def test_step_config_errors_name_the_key(
    packs: None, step: str, ticket: str, key: str, problem: str
) -> None:
    text = config("http://127.0.0.1:9", step, ticket)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "shop.toml")
    assert caught.value.key_path == key, str(caught.value)
    assert problem in caught.value.problem, str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ('queue = "aftersales"', 'queue = "aftersale"', "flows[3].steps[0]", "queue: no queue named 'aftersale'"),
        ('failed_flow = "fallback"', 'failed_flow = "fallbak"', "flows[0].steps[1]", "failed_flow: no flow named 'fallbak'"),
        ("timeout_s = 0.3", "timeout_s = -1", "plugins.ecommerce", "timeout_s: expected a number > 0"),
        ('order_url = "http://127.0.0.1:9/order"', 'order_url = "ftp://x"', "plugins.ecommerce", "order_url: expected an http(s) URL"),
        ('order_url = "http://127.0.0.1:9/order"', "", "plugins.ecommerce.order_url", "required key is missing"),
    ],
)  # fmt: skip
def test_names_and_settings_errors(packs: None, old: str, new: str, key: str, problem: str) -> None:
    text = config("http://127.0.0.1:9")
    assert old in text
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace(old, new), "shop.toml")
    assert caught.value.key_path == key, str(caught.value)
    assert problem in caught.value.problem, str(caught.value)


def test_the_documented_configuration_loads(packs: None) -> None:
    doc = (REPO / "docs" / "packs" / "ecommerce.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    cfg, plugins = parse_config(example.group(1), "ecommerce.md")
    assert [p.plugin.name for p in plugins.plugins] == ["ecommerce"]
    assert isinstance(cfg.flows[0].steps[1].settings, dict)  # type: ignore[union-attr]
    assert cfg.flows[0].steps[1].name == "order_status"  # type: ignore[union-attr]


def test_the_shipped_config_and_its_peak_hour_overflow_preset(packs: None) -> None:
    """config/packs/ecommerce.toml passes the checks acd check-config runs, and its orders queue
    holds the preset docs/packs/ecommerce.md documents (read from the doc's table)."""
    cfg, plugins = load_config(REPO / "config" / "packs" / "ecommerce.toml")
    assert [p.plugin.name for p in plugins.plugins] == ["ecommerce"]
    orders = next(q for q in cfg.queues if q.name == "orders")
    doc = (REPO / "docs" / "packs" / "ecommerce.md").read_text()
    table = doc.split("## Peak-hour overflow", 1)[1].split("\n## ", 1)[0]
    preset = dict(re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", table, re.M))
    assert set(preset) >= {"max_wait_s", "max_length", "overflow", "announce_every_s"}
    for key, value in preset.items():
        assert str(getattr(orders, key)) == value.strip('"'), key
    assert orders.overflow in {f.name for f in cfg.flows}
    overflow = next(f for f in cfg.flows if f.name == orders.overflow)
    assert [getattr(s, "name", type(s).__name__) for s in overflow.steps] == [
        "create_ticket",
        "HangupStep",
    ]
    # every prompt the shipped config names is shipped
    for flow in cfg.flows:
        for s in flow.steps:
            prompt = getattr(s, "prompt", "") or (getattr(s, "settings", None) or {}).get(
                "prompt", ""
            )
            if prompt:
                assert (SHIPPED / f"{prompt}.wav").is_file(), prompt


def test_order_care_qa_pack(packs: None) -> None:
    from engine.transcription.asr import Word
    from engine.transcription.qa import evaluate

    _cfg, plugins = parse_config(config("http://127.0.0.1:9"), "shop.toml")
    rules = plugins.qa_rules["order_care"]

    def said(text: str) -> list[Word]:
        return [Word(w, 5 + i * 0.4, 5 + i * 0.4 + 0.3, 0.9) for i, w in enumerate(text.split())]

    good = said(
        "your case number is four two and you will receive your refund in five working days"
    )
    assert {r.rule: r.passed for r in evaluate(rules, "orders", {"agent": good}, {})} == {
        "case number given": True, "timeline given": True, "no card number asked": True,
    }  # fmt: skip
    bad = said("please read me your full card number")
    assert {r.rule: r.passed for r in evaluate(rules, "orders", {"agent": bad}, {})} == {
        "case number given": False, "timeline given": False, "no card number asked": False,
    }  # fmt: skip


def test_order_status_defaults_name_shipped_prompts() -> None:
    step = OrderStatus()
    for prompt in (step.prompt, step.not_found_prompt, step.unavailable_prompt):
        assert (SHIPPED / f"{prompt}.wav").is_file(), prompt
