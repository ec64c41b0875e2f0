"""Layering rules that import-linter cannot express: the sans-I/O cores never touch I/O or the clock.

DESIGN.md section 2: the SIP core (everything in ``sip`` outside ``sip/transport`` and ``sip/media``)
and the routing core are fed bytes and ``now``; they never import asyncio, sockets, selectors or the
clock, so their timers are testable without sleeping. ``recordings`` and the package contracts are
checked by import-linter in scripts/test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "asyncio", "socket", "selectors", "time", "uvloop", "threading", "concurrent",
    "datetime", "os", "wave",
}  # fmt: skip
IO_PACKAGES = ("sip/transport", "sip/media")
IO_MODULES = ("sip.transport", "sip.media")


def _core_modules() -> list[Path]:
    files = sorted((REPO / "sip").rglob("*.py")) + sorted((REPO / "routing_core").rglob("*.py"))
    return [
        f
        for f in files
        if not any(f.relative_to(REPO).as_posix().startswith(p) for p in IO_PACKAGES)
    ]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path, name: str | None = None) -> set[str]:
    """Every module ``path`` (module ``name``, default: its place in the repository) imports,
    relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (name or _module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _imported_roots(path: Path, name: str | None = None) -> set[str]:
    return {module.split(".")[0] for module in _imported_modules(path, name)}


def _shared_random_calls(path: Path) -> list[str]:
    """Calls of the ``random`` module's shared generator (``random.random()``, ``from random
    import choice``): anything but the ``random.Random`` type."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            found += [a.name for a in node.names if a.name != "Random"]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "Random"
        ):
            found.append(f"random.{node.attr}")
    return found


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_core_module_is_sans_io(path: Path) -> None:
    bad = _imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}; pass `now` in instead"


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_core_module_takes_randomness_as_an_argument(path: Path) -> None:
    calls = _shared_random_calls(path)
    assert not calls, f"{path.relative_to(REPO)} uses {calls}; take a random.Random argument"


@pytest.mark.parametrize(
    "path",
    [p for p in _core_modules() if p.relative_to(REPO).parts[0] == "sip"],
    ids=lambda p: p.relative_to(REPO).as_posix(),
)
def test_sip_core_never_imports_its_io_adapters(path: Path) -> None:
    bad = {m for m in _imported_modules(path) if m.startswith(IO_MODULES)}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}: the core is below them"


def test_the_guards_see_violations(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text(
        "import os\nfrom time import monotonic\nimport asyncio.events\nimport random\n"
        "x = random.choice([1])\nrng: random.Random\nfrom random import shuffle, Random\n"
        "from ..media import clock\nfrom . import g711\n"
    )
    assert _imported_roots(sample, "sip.rtp.m") & FORBIDDEN == {"time", "asyncio", "os"}
    assert sorted(_shared_random_calls(sample)) == ["random.choice", "shuffle"]
    names = _imported_modules(sample, "sip.rtp.m")  # relative imports, as if in sip/rtp/
    assert {"sip.media", "sip.media.clock", "sip.rtp", "sip.rtp.g711"} <= names
    assert any(m.startswith(IO_MODULES) for m in names)
