"""Source check: the RTP core stays sans-I/O (DESIGN.md section 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import sip.rtp

FORBIDDEN = {"asyncio", "socket", "selectors", "time", "threading", "engine", "recordings"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_rtp_core_imports_no_io_and_no_clock() -> None:
    files = sorted(Path(sip.rtp.__file__).parent.glob("*.py"))
    assert len(files) >= 9
    offenders = {f.name: imported_modules(f) & FORBIDDEN for f in files}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
