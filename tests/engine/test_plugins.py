"""Plugins: discovery through real ``importlib.metadata`` entry points (a ``.dist-info`` on
``sys.path``), config errors naming the plugin and key, plugin steps and lookup providers in the
flow runner, event consumers on the bus, and ``acd plugins`` / ``acd check-config``.

The caller side of the flows is the scripted CallIO of test_flows (the SIP leg is tested on its
own); what is under test is the plugin interface. tests/e2e/test_plugins_call.py drives a real
call through the daemon.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.calls.flows import FlowRunner
from engine.config import ConfigError, PluginStep
from engine.config import parse_config as parse_without_plugins
from engine.plugins import installed, parse_config
from engine.runtime.events import Event, EventBus
from tests.engine.test_flows import ScriptedCaller
from tests.plugin_testkit import install_plugin

BROKEN_IMPORT = "import acd_no_such_module_anywhere\n"
NOT_A_PLUGIN = "plugin = 42\n"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = install_plugin(tmp_path_factory.mktemp("site"))
    install_plugin(root, name="brokenplug", module="acd_brokenplug", source=BROKEN_IMPORT)
    install_plugin(root, name="notaplugin", module="acd_notaplugin", source=NOT_A_PLUGIN)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    yield root
    sys.path.remove(str(root))
    importlib.invalidate_caches()


FLOWS = """
[plugins]
enabled = ["testplug"]

[plugins.testplug]
vip_prefix = "7"

[[queues]]
name = "support"

[[flows]]
name = "main"
steps = [
  { type = "collect", var = "account", max_digits = 4 },
  { type = "classify", var = "account" },
  { type = "enqueue", queue = "support" },
]

[[flows]]
name = "boom"
steps = [{ type = "answer" }, { type = "explode", message = "vault closed" }, { type = "enqueue", queue = "support" }]

[[flows]]
name = "bye"
steps = [{ type = "leave", reason = "not a customer" }]

[[flows]]
name = "looked"
steps = [{ type = "lookup", provider = "tier", on_error = "hangup" }, { type = "enqueue", queue = "support" }]
"""


def test_discovery_finds_the_installed_distribution(plugin_path: Path) -> None:
    found = {i.name: i for i in installed()}
    assert found["testplug"].distribution == "acd-testplug"
    assert found["testplug"].version == "1.0"
    assert found["testplug"].value == "acd_testplug:plugin"


def test_enabled_plugin_steps_decode_and_settings_load(plugin_path: Path) -> None:
    cfg, plugins = parse_config(FLOWS, "t.toml")
    step = cfg.flows[0].steps[1]
    assert step == PluginStep(name="classify", settings={"var": "account"})
    assert [p.plugin.name for p in plugins.plugins] == ["testplug"]
    assert plugins.plugins[0].settings.vip_prefix == "7"
    assert sorted(plugins.steps) == ["classify", "explode", "leave"]
    assert list(plugins.lookups) == ["tier"]
    assert plugins.qa_rules["disclosure"][0].name == "risk disclosure"


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        # a plugin step's keys are checked by the plugin's schema, at the step's own path
        (('"classify", var = "account" }', '"classify" }'), "flows[0].steps[1].var",
         "required key is missing"),
        (('"classify", var = "account"', '"classify", var = "account", max_len = "x"'), "flows[0].steps[1].max_len",
         "expected an integer, found string 'x'"),
        (('"classify", var = "account"', '"classify", var = "account", colour = 1'), "flows[0].steps[1].colour",
         "unknown key"),
        # the plugin's own settings table
        (('vip_prefix = "7"', "vip_prefix = 7"), "plugins.testplug.vip_prefix",
         "expected a string, found integer 7"),
        (('vip_prefix = "7"', "vip = 1"), "plugins.testplug.vip", "unknown key"),
        # the event consumer's factory refusing the settings
        (('vip_prefix = "7"', 'vip_prefix = "refuse"'), "plugins.testplug",
         "plugin 'testplug': its event consumer refused the settings: ValueError"),
        # not enabled: its steps are unknown, its settings table a mistake
        (('enabled = ["testplug"]', "enabled = []"), "plugins.testplug",
         "settings of a plugin that is not enabled"),
        (('enabled = ["testplug"]', 'enabled = ["nosuch", "testplug"]'), "plugins.enabled[0]",
         "no installed plugin named 'nosuch' (installed: 'brokenplug', "),
        (('enabled = ["testplug"]', 'enabled = ["testplug", "testplug"]'), "plugins.enabled[1]",
         "listed twice"),
        (('enabled = ["testplug"]', 'enabled = ["testplug", "brokenplug"]'), "plugins.enabled[1]",
         "plugin 'brokenplug' failed to load (acd_brokenplug:plugin): ModuleNotFoundError"),
        (('enabled = ["testplug"]', 'enabled = ["notaplugin", "testplug"]'), "plugins.enabled[0]",
         "plugin 'notaplugin': acd_notaplugin:plugin is a int, expected an engine.plugins.Plugin"),
        (('type = "explode"', 'type = "implode"'), "flows[1].steps[1].type",
         "expected a step type, one of 'answer',"),
        (('provider = "tier"', 'provider = "crm"'), "flows[3].steps[0].provider",
         "expected a lookup provider of an enabled plugin (enabled plugins add: 'tier'), found 'crm'"),
        (('provider = "tier"', 'provider = "tier", url = "http://x"'), "flows[3].steps[0]",
         "expected one of url (a webhook) and provider"),
    ],
)  # fmt: skip
def test_plugin_config_errors_name_file_plugin_and_key(
    plugin_path: Path, edit: tuple[str, str], key: str, problem: str
) -> None:
    text = FLOWS.replace(*edit, 1)
    assert text != FLOWS
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bank.toml")
    assert caught.value.file == "bank.toml"
    assert caught.value.key_path == key, str(caught.value)
    assert problem in caught.value.problem, str(caught.value)


def test_unknown_step_lists_the_plugins_types(plugin_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(FLOWS.replace('type = "explode"', 'type = "implode"'), "t.toml")
    assert "or an enabled plugin's: 'classify', 'explode', 'leave'" in caught.value.problem
    assert "found string 'implode'" in caught.value.problem


def test_without_plugins_a_plugin_step_is_an_unknown_type(plugin_path: Path) -> None:
    """engine.config alone (no resolver) knows no plugin: the same file is refused, and
    `type = "plugin"` (the internal tag) cannot be written either."""
    with pytest.raises(ConfigError) as caught:
        parse_without_plugins(FLOWS, "t.toml")
    assert caught.value.key_path == "flows[0].steps[1].type"
    assert "found string 'classify'" in caught.value.problem
    with pytest.raises(ConfigError, match=r"flows\[0\]\.steps\[0\]\.type: expected a step type"):
        parse_without_plugins(
            '[[flows]]\nname = "f"\nsteps = [{ type = "plugin", name = "classify" }]\n', "t.toml"
        )


async def _run(flow: str, keys: list[str | None]) -> tuple[object, ScriptedCaller, FlowRunner]:
    cfg, plugins = parse_config(FLOWS, "t.toml")
    errors: list[int] = []
    runner = FlowRunner(cfg, None, plugins=plugins, on_plugin_error=lambda: errors.append(1))
    caller = ScriptedCaller(keys)
    outcome = await runner.run(flow, caller, {"caller": "7001"})
    assert runner.plugin_errors == len(errors)
    return outcome, caller, runner


@pytest.mark.parametrize(("account", "tier"), [("7123", "vip"), ("1234", "standard")])
async def test_plugin_step_reads_and_writes_flow_data(
    plugin_path: Path, account: str, tier: str
) -> None:
    outcome, _caller, runner = await _run("main", [account])
    assert outcome.kind == "enqueue"  # type: ignore[attr-defined]
    assert outcome.data["tier"] == tier  # type: ignore[attr-defined]
    assert runner.plugin_errors == 0


async def test_a_raising_plugin_step_ends_the_call_with_plugin_error(plugin_path: Path) -> None:
    outcome, caller, runner = await _run("boom", [])
    assert (outcome.kind, outcome.reason) == ("hangup", "plugin_error")  # type: ignore[attr-defined]
    assert caller.log == ["answer"]  # nothing after the failed step ran
    assert runner.plugin_errors == 1


async def test_plugin_step_result_hangs_up_with_its_reason(plugin_path: Path) -> None:
    outcome, _caller, _runner = await _run("bye", [])
    assert (outcome.kind, outcome.reason) == ("hangup", "not a customer")  # type: ignore[attr-defined]


async def test_lookup_provider_merges_and_failures_follow_on_error(plugin_path: Path) -> None:
    cfg, plugins = parse_config(FLOWS, "t.toml")
    runner = FlowRunner(cfg, None, plugins=plugins)
    outcome = await runner.run("looked", ScriptedCaller(), {"caller": "7001"})
    assert outcome.kind == "enqueue"
    assert outcome.data["tier"] == "vip"
    assert outcome.data["looked_up"] is True
    failed = await runner.run("looked", ScriptedCaller(), {"caller": "fail"})
    assert (failed.kind, failed.reason) == ("hangup", "lookup failed")
    assert runner.lookups_failed == 1
    assert runner.plugin_errors == 1


async def test_reload_without_the_plugin_fails_only_calls_that_still_name_its_step(
    plugin_path: Path,
) -> None:
    cfg, plugins = parse_config(FLOWS, "t.toml")
    runner = FlowRunner(cfg, None, plugins=plugins)
    runner.apply(cfg)  # a reload whose config enables no plugin (the old flows kept here)
    outcome = await runner.run("main", ScriptedCaller(["7123"]), {})
    assert (outcome.kind, outcome.reason) == ("hangup", "plugin_error")


def test_consumers_get_every_event_and_a_raising_one_harms_nobody(tmp_path: Path) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("plugin bug")

    bus.set_consumers([("broken", broken), ("seen", lambda e: seen.append(e.event))])
    sub = bus.subscribe()
    bus.publish(Event(type="queue", at=1.0, event="enter", call_id="c1", queue="q"))
    assert seen == ["enter"]
    assert bus.consumer_errors == 1
    assert sub.queue.qsize() == 1  # the WebSocket subscriber still got it


def test_consumer_of_a_loaded_plugin_writes_events(plugin_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    text = FLOWS.replace('vip_prefix = "7"', f'vip_prefix = "7"\nevents_file = "{out}"')
    _cfg, plugins = parse_config(text, "t.toml")
    bus = EventBus()
    bus.set_consumers(plugins.consumers)
    bus.publish(Event(type="agent", at=2.0, event="available", agent_id="a1"))
    assert json.loads(out.read_text())["agent_id"] == "a1"


def _acd(plugin_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_acd_plugins_lists_installed_and_enabled(plugin_path: Path, tmp_path: Path) -> None:
    listed = _acd(plugin_path, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["testplug"]["distribution"] == "acd-testplug"
    assert rows["testplug"]["enabled"] is None  # no config given
    config = tmp_path / "acd.toml"
    config.write_text(FLOWS)
    shown = _acd(plugin_path, "plugins", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line[:1].isalpha()}
    assert lines["testplug"].endswith(" enabled")
    assert lines["brokenplug"].endswith(" not enabled")
    assert "steps: classify, explode, leave" in shown.stdout


def test_check_config_names_a_broken_plugin(plugin_path: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(FLOWS)
    ok = _acd(plugin_path, "check-config", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "1 plugins" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(FLOWS.replace('enabled = ["testplug"]', 'enabled = ["testplug", "brokenplug"]'))
    refused = _acd(plugin_path, "check-config", str(bad))
    assert refused.returncode == 2
    assert f"{bad}: plugins.enabled[1]: plugin 'brokenplug' failed to load" in refused.stderr
    assert "Traceback" not in refused.stderr


DOC = Path(__file__).parents[2] / "docs" / "plugins.md"


@pytest.fixture
def doc_plugin(tmp_path: Path) -> Iterator[str]:
    """docs/plugins.md's example module, as written there, installed as `tiers`; yields the
    doc's example flow."""
    import re

    doc = DOC.read_text()
    source = re.search(r"```python\n(.*?)```", doc, re.S)
    flow = re.search(r"```toml\n(\[\[flows\]\].*?)```", doc, re.S)
    assert source is not None
    assert flow is not None
    root = install_plugin(tmp_path, name="tiers", module="acd_tiers", source=source.group(1))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    yield flow.group(1)
    sys.path.remove(str(root))
    importlib.invalidate_caches()


async def test_the_documented_example_plugin_loads_and_runs(doc_plugin: str) -> None:
    head = '[plugins]\nenabled = ["tiers"]\n[plugins.tiers]\nvip_prefix = "9"\n'
    head += '[[queues]]\nname = "support"\n'
    cfg, plugins = parse_config(head + doc_plugin, "doc.toml")
    assert sorted(plugins.qa_rules) == ["disclosure"]
    assert cfg.flows[0].steps[1] == PluginStep(name="classify", settings={"var": "account"})
    flow = head + (
        '[[flows]]\nname = "f"\nsteps = [{ type = "collect", var = "account" },'
        ' { type = "classify", var = "account" }, { type = "enqueue", queue = "support" }]\n'
    )
    cfg, plugins = parse_config(flow, "doc.toml")
    runner = FlowRunner(cfg, None, plugins=plugins)
    assert (await runner.run("f", ScriptedCaller(["912"]))).data["tier"] == "vip"
    assert (await runner.run("f", ScriptedCaller(["123"]))).data["tier"] == "standard"


async def test_what_a_plugin_step_writes_is_bounded(tmp_path: Path) -> None:
    source = """
import msgspec
from engine.plugins import Plugin, StepType

class Dump(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass

async def dump(step, ctx):
    ctx.data["blob"] = "x" * 10_000
    ctx.data["nested"] = {"a": [1, 2]}
    ctx.data[7] = "not a key"

plugin = Plugin(name="dumper", steps={"dump": StepType(Dump, dump)})
"""
    root = install_plugin(tmp_path, name="dumper", module="acd_dumper", source=source)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        text = (
            '[plugins]\nenabled = ["dumper"]\n[[queues]]\nname = "q"\n[[flows]]\nname = "f"\n'
            'steps = [{ type = "dump" }, { type = "enqueue", queue = "q" }]\n'
        )
        cfg, plugins = parse_config(text, "t.toml")
        outcome = await FlowRunner(cfg, None, plugins=plugins).run("f", ScriptedCaller())
    finally:
        sys.path.remove(str(root))
        importlib.invalidate_caches()
    assert outcome.kind == "enqueue"
    assert len(outcome.data["blob"]) == 256
    assert outcome.data["nested"] == "{'a': [1, 2]}"
    assert 7 not in outcome.data
