"""The finance pack's verify_identity step against a real aiohttp "bank" service: account + PIN,
the one-time code, VIP routing, retries, a bank that is down; its config errors; and the pack's
entry point as pyproject.toml declares it, found by importlib.metadata.

The caller is test_flows' scripted CallIO (the SIP leg is tested on its own);
tests/e2e/test_pack_finance_call.py types the digits from a real phone.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.calls.flows import FlowRunner
from engine.config import ConfigError
from engine.plugins import parse_config
from tests.conftest import free_port
from tests.engine.test_flows import ScriptedCaller

REPO = Path(__file__).parents[2]


def register_packs(root: Path) -> Path:
    """A .dist-info declaring the entry points pyproject.toml declares (the editable install of
    the shared venv predates them), so discovery is importlib.metadata's own."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    points = project["entry-points"]["acd.plugins"]
    info = root / "acd_packs-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acd-packs\nVersion: 0.1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in points.items())
    (info / "entry_points.txt").write_text("[acd.plugins]\n" + lines)
    return root


@dataclass
class Bank:
    """Accounts 1xxx are wealth clients, others retail; PIN 9876; one-time code 2468."""

    url: str
    down: bool = False
    asked: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
async def bank() -> AsyncIterator[Bank]:
    port = free_port()
    svc = Bank(f"http://127.0.0.1:{port}")

    async def verify(request: web.Request) -> web.Response:
        body = await request.json()
        svc.asked.append(("verify", body))
        if svc.down:
            return web.Response(status=503)
        ok = body["pin"] == "9876"
        segment = "wealth" if body["account"].startswith("1") else "retail"
        return web.json_response(
            {"verified": ok, "customer_id": f"C-{body['account']}", "segment": segment,
             "otp_required": True} if ok else {"verified": False}
        )  # fmt: skip

    async def otp(request: web.Request) -> web.Response:
        body = await request.json()
        svc.asked.append(("otp", body))
        return web.json_response({"verified": body["code"] == "2468"})

    app = web.Application()
    app.router.add_post("/verify", verify)
    app.router.add_post("/otp", otp)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield svc
    await runner.cleanup()


def config(bank_url: str, step: str = "", settings: str = "") -> str:
    keys = ('type = "verify_identity", account_digits = 4, pin_digits = 4, otp_digits = 4, '
            'invalid_prompt = "invalid", vip_flow = "vip", verified_flow = "retail"')  # fmt: skip
    verify = "{ " + keys + (f", {step}" if step else "") + " }"
    return f"""
[plugins]
enabled = ["finance"]

[plugins.finance]
verify_url = "{bank_url}/verify"
otp_url = "{bank_url}/otp"
timeout_s = 1.0
{settings}

[[queues]]
name = "advisors"
requirements = {{ certified_advisor = 1 }}
[[queues]]
name = "retail"

[[flows]]
name = "bank"
steps = [
  {{ type = "answer" }},
  {verify},
  {{ type = "hangup" }},
]
[[flows]]
name = "vip"
steps = [{{ type = "enqueue", queue = "advisors" }}]
[[flows]]
name = "retail"
steps = [{{ type = "enqueue", queue = "retail" }}]
[[flows]]
name = "manual"
steps = [{{ type = "set", data = {{ route = "manual" }} }}, {{ type = "enqueue", queue = "retail" }}]
"""


async def _call(text: str, keys: list[str | None]) -> tuple[Any, ScriptedCaller]:
    cfg, plugins = parse_config(text, "bank.toml")
    async with aiohttp.ClientSession() as http:
        runner = FlowRunner(cfg, http, plugins=plugins)
        caller = ScriptedCaller(keys)
        outcome = await runner.run("bank", caller, {"caller": "5550100", "dialed": "bank"})
    assert runner.plugin_errors == 0
    return outcome, caller


async def test_wealth_client_verified_with_code_goes_to_advisors(packs: None, bank: Bank) -> None:
    outcome, _caller = await _call(config(bank.url), ["1234", "9876", "2468"])
    assert (outcome.kind, outcome.queue) == ("enqueue", "advisors")
    data = outcome.data
    assert data["verified"] is True
    assert data["verify_result"] == "verified"
    assert data["customer_id"] == "C-1234"
    assert data["segment"] == "wealth"
    assert data["account_last4"] == "1234"
    # The PIN and the code went to the bank, and nowhere else.
    assert bank.asked == [
        ("verify", {"account": "1234", "pin": "9876", "caller": "5550100", "dialed": "bank"}),
        ("otp", {"customer_id": "C-1234", "code": "2468", "caller": "5550100"}),
    ]
    assert "9876" not in json.dumps(data)
    assert "2468" not in json.dumps(data)


async def test_retail_client_after_a_wrong_pin(packs: None, bank: Bank) -> None:
    outcome, caller = await _call(config(bank.url), ["2222", "0000", "2222", "9876", "2468"])
    assert (outcome.kind, outcome.queue) == ("enqueue", "retail")
    assert outcome.data["verify_tries"] == 2
    assert "play:invalid" in caller.log


async def test_wrong_code_every_time_hangs_up_not_verified(packs: None, bank: Bank) -> None:
    keys: list[str | None] = ["1234", "9876", "1111"] * 3
    outcome, _caller = await _call(config(bank.url, "max_tries = 3"), keys)
    assert (outcome.kind, outcome.reason) == ("hangup", "identity_not_verified")
    assert outcome.data["verified"] is False
    assert outcome.data["verify_result"] == "otp_failed"
    assert len([a for a in bank.asked if a[0] == "otp"]) == 3


async def test_bank_down_goes_to_manual_verification(packs: None, bank: Bank) -> None:
    bank.down = True
    outcome, _caller = await _call(config(bank.url, 'failed_flow = "manual"'), ["1234", "9876"])
    assert (outcome.kind, outcome.queue) == ("enqueue", "retail")
    assert outcome.data["route"] == "manual"
    assert outcome.data["verify_result"] == "service_error"
    assert outcome.data["verified"] is False


async def test_silence_is_no_input(packs: None, bank: Bank) -> None:
    outcome, _caller = await _call(config(bank.url, "max_tries = 2"), [None, None])
    assert (outcome.kind, outcome.reason) == ("hangup", "identity_not_verified")
    assert outcome.data["verify_result"] == "no_input"
    assert bank.asked == []


@pytest.mark.parametrize(
    ("step", "settings", "key", "problem"),
    [
        ("timeout_s = 0", "", "flows[0].steps[1]", "timeout_s: expected a number > 0, found 0"),
        ("max_tries = 11", "", "flows[0].steps[1]", "max_tries: expected 1 to 10"),
        ("pin = 1", "", "flows[0].steps[1].pin", "unknown key"),
        ('failed_flow = "manaul"', "", "flows[0].steps[1]", "failed_flow: no flow named 'manaul'"),
        ("", "vip_segments = 1", "plugins.finance.vip_segments", "expected an array"),
        ("", 'otp_url = "sms://x"', "plugins.finance", "plugin 'finance': otp_url: expected an http(s) URL"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(
    packs: None, step: str, settings: str, key: str, problem: str
) -> None:
    text = config("http://127.0.0.1:9", step)
    if settings:
        name = settings.split(" ", 1)[0]
        text = "\n".join(
            line for line in text.splitlines() if not line.startswith(f"{name} =")
        ).replace("timeout_s = 1.0", f"timeout_s = 1.0\n{settings}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bank.toml")
    assert caught.value.key_path == key, str(caught.value)
    assert problem in caught.value.problem, str(caught.value)


def test_missing_verify_url_is_named(packs: None) -> None:
    text = config("http://127.0.0.1:9").replace('verify_url = "http://127.0.0.1:9/verify"\n', "")
    with pytest.raises(ConfigError, match=r"plugins\.finance\.verify_url: required key is missing"):
        parse_config(text, "bank.toml")


def test_the_documented_configuration_loads(packs: None) -> None:
    import re

    doc = (REPO / "docs" / "packs" / "finance.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    cfg, plugins = parse_config(example.group(1), "finance.md")
    assert [p.plugin.name for p in plugins.plugins] == ["finance"]
    assert plugins.plugins[0].settings.vip_segments == ("wealth", "private")
    assert cfg.flows[0].steps[2].name == "verify_identity"  # type: ignore[union-attr]


def test_risk_disclosure_pack_passes_a_compliant_call_and_fails_a_promise(packs: None) -> None:
    from engine.transcription.asr import Word
    from engine.transcription.qa import evaluate

    _cfg, plugins = parse_config(config("http://127.0.0.1:9"), "bank.toml")
    rules = plugins.qa_rules["risk_disclosure"]

    def said(text: str, start_s: float = 10.0) -> list[Word]:
        return [Word(w, start_s + i * 0.4, start_s + i * 0.4 + 0.3, 0.9)
                for i, w in enumerate(text.split())]  # fmt: skip

    good = said("before we start your capital is at risk and past performance is not a guide "
                "to future returns")  # fmt: skip
    results = {r.rule: r.passed for r in evaluate(rules, "advisors", {"agent": good}, {})}
    assert results == {"risk warning": True, "no guaranteed returns": True,
                       "past performance": True}  # fmt: skip
    bad = said("this fund has a guaranteed return of eight percent")
    results = {r.rule: r.passed for r in evaluate(rules, "advisors", {"agent": bad}, {})}
    assert results == {"risk warning": False, "no guaranteed returns": False,
                       "past performance": False}  # fmt: skip
