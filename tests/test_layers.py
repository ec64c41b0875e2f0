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
FORBIDDEN = {"asyncio", "socket", "selectors", "time", "uvloop", "threading"}
IO_PACKAGES = ("sip/transport", "sip/media")


def _core_modules() -> list[Path]:
    files = sorted((REPO / "sip").rglob("*.py")) + sorted((REPO / "routing_core").rglob("*.py"))
    return [
        f
        for f in files
        if not any(f.relative_to(REPO).as_posix().startswith(p) for p in IO_PACKAGES)
    ]


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_core_module_is_sans_io(path: Path) -> None:
    bad = _imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}; pass `now` in instead"


def test_the_guard_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os\nfrom time import monotonic\nimport asyncio.events\n")
    assert _imported_roots(sample) & FORBIDDEN == {"time", "asyncio"}
