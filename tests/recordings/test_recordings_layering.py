"""recordings never imports sip or engine (DESIGN.md section 2), nor routing_core."""

from __future__ import annotations

import ast
from pathlib import Path

import recordings

FORBIDDEN = {"sip", "engine", "routing_core"}


def test_no_forbidden_imports() -> None:
    pkg = Path(recordings.__file__).parent
    offenders = []
    files = sorted(pkg.rglob("*.py"))
    assert len(files) >= 5
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_no_g711_tables_in_recordings() -> None:
    # Decoders are injected by the engine (sip's G.711); recordings must not carry its own.
    pkg = Path(recordings.__file__).parent
    for path in pkg.rglob("*.py"):
        text = path.read_text(encoding="utf-8").lower()
        assert "ulaw2lin" not in text
        assert "audioop" not in text
