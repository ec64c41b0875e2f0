"""A real installed plugin for tests: a module plus a ``.dist-info`` directory with
``entry_points.txt``, written into a directory that goes on ``sys.path`` (or ``PYTHONPATH`` for a
daemon subprocess), so ``importlib.metadata`` discovers it exactly as it would a pip install.

The plugin (``testplug``) adds: step ``classify`` (tier from an account number), step
``explode`` (raises), step ``leave`` (hangs up with a reason), lookup provider ``tier``, a QA
rule pack ``disclosure``, and an event consumer appending each event as a JSON line to
``settings.events_file`` (when set).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

PLUGIN_SOURCE = """
import json

import msgspec

from engine.plugins import Plugin, StepResult, StepType
from engine.config import QaRuleConfig


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    vip_prefix: str = "9"
    events_file: str = ""


class Classify(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    var: str
    max_len: int = 16


class Explode(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    message: str = "boom"


class Leave(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    reason: str


def _tier(account, settings):
    return "vip" if account.startswith(settings.vip_prefix) else "standard"


async def classify(step, ctx):
    account = str(ctx.data.get(step.var, ""))[: step.max_len]
    ctx.data["tier"] = _tier(account, ctx.settings)


async def explode(step, ctx):
    raise RuntimeError(step.message)


async def leave(step, ctx):
    return StepResult(hangup=True, reason=step.reason)


async def tier_lookup(data, ctx):
    if data.get("caller") == "fail":
        raise ConnectionError("core banking down")
    return {"tier": _tier(str(data.get("caller", "")), ctx.settings), "looked_up": True}


def file_consumer(settings):
    if settings.vip_prefix == "refuse":
        raise ValueError("vip_prefix 'refuse' is refused")
    if not settings.events_file:
        return lambda event: None

    def consume(event):
        with open(settings.events_file, "a") as out:
            out.write(json.dumps(msgspec.to_builtins(event)) + "\\n")

    return consume


plugin = Plugin(
    name="testplug",
    version="1.0",
    description="test plugin",
    settings=Settings,
    steps={
        "classify": StepType(Classify, classify),
        "explode": StepType(Explode, explode),
        "leave": StepType(Leave, leave),
    },
    lookups={"tier": tier_lookup},
    qa_rules={
        "disclosure": [
            QaRuleConfig(name="risk disclosure", type="required", phrases=("past performance",))
        ]
    },
    consumers=[file_consumer],
)
"""


def install_plugin(
    root: Path,
    *,
    name: str = "testplug",
    module: str = "acd_testplug",
    source: str = PLUGIN_SOURCE,
    attr: str = "plugin",
) -> Path:
    """Write the distribution ``acd-<name>`` 1.0 into ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"acd_{name}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: acd-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[acd.plugins]\n{name} = {module}:{attr}\n")
    return root
