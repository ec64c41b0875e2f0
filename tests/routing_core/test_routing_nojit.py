"""Run the kernel-vs-reference tests again with NUMBA_DISABLE_JIT=1, so the kernel bodies execute as
plain Python (coverage sees them, and a Python-level bug cannot hide behind compiled code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_kernel_tests_pass_without_jit() -> None:
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", ACD_ROUTING_EXAMPLES="15")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(HERE / "test_routing_kernels.py"),
        ],
        cwd=HERE.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 passed" in proc.stdout
