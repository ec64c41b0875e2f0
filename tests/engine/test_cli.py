"""The `acd` command line as an operator runs it: exit codes and messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ACD = [sys.executable, "-m", "engine.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ACD, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.strip() == "acd 0.1.0"


@pytest.mark.parametrize("sub", [[], ["run"], ["check-config"], ["precompile"], ["version"]])
def test_help_everywhere(sub: list[str]) -> None:
    result = run(*sub, "--help")
    assert result.returncode == 0
    assert "usage: acd" in result.stdout


def test_check_config_ok(repo_root: Path) -> None:
    result = run("check-config", str(repo_root / "config" / "acd.toml"))
    assert result.returncode == 0, result.stderr
    assert "OK (2 queues, 2 agents" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[http]\nprot = 1\n", "http.prot: unknown key"),
        ('[[queues]]\nname = "q"\nwrap_up_s = "long"\n', "queues[0].wrap_up_s: expected a number"),
        ('[[agents]]\nid = "7"\nqueues = { nowhere = 0 }\n', "agents[0].queues.nowhere"),
        ('[[queues]]\nname = "q"\nsla = { fax = {} }\n', "queues[0].sla.fax: expected a task"),
        (
            '[[queues]]\nname = "q"\nsla = { chat = { due_s = 1 } }\n',
            "queues[0].sla[...].due_s: unknown key",
        ),
        ("[cluster]\nleader_election = true\n", "cluster.leader_election: expected a postgresql"),
        ("[runtime]\nmax_tasks = 0\n", "runtime.max_tasks: expected 1-1048576, found 0"),
    ],
)
def test_check_config_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = run("check-config", str(bad))
    assert result.returncode == 2
    assert f"{bad}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run("check-config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "missing.toml: file not found" in result.stderr


def test_run_with_bad_config_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtime]\nevent_loop = 'gevent'\n")
    result = run("run", "--config", str(bad))
    assert result.returncode == 2
    assert "runtime.event_loop" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_simulate_simple_form_reproduces_erlang_c() -> None:
    # The exact form the routing issue specifies; 14 agents, 200 calls/h, AHT 180 s: Erlang C says
    # P(wait) .1741 and SL(20 s) .8884. 60 simulated hours put the estimate within a few points.
    result = run(
        "simulate", "--agents", "14", "--calls-per-hour", "200", "--aht", "180",
        "--sl-threshold", "20", "--hours", "60", "--seed", "7", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for key in ("offered", "answered", "abandoned", "p_wait", "asa_s", "service_level",
                "occupancy", "abandon_rate"):  # fmt: skip
        assert key in out
    assert out["abandoned"] == 0
    assert abs(out["p_wait"] - 0.1741) < 0.04
    assert abs(out["service_level"] - 0.8884) < 0.03
    assert set(out["service_level_defs"]) == {"a", "b", "c", "d", "e"}


def test_simulate_bad_input_is_one_line() -> None:
    result = run(
        "simulate", "--agents", "0", "--calls-per-hour", "200", "--aht", "180", "--hours", "1"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("acd simulate: error:")


def test_erlang_c_table() -> None:
    result = run(
        "erlang", "c", "--calls-per-hour", "200", "--aht", "180", "--agents", "11-16", "--json"
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    rows = rows if isinstance(rows, list) else rows["results"]
    assert [round(r["p_wait"], 4) for r in rows] == [0.6821, 0.4494, 0.2853, 0.1741, 0.1020, 0.0573]


def test_recordings_repair_through_acd(tmp_path: Path) -> None:
    import wave

    broken = tmp_path / "crashed.wav"
    with wave.open(str(broken), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x00\x02\x00" * 800)
    data = bytearray(broken.read_bytes())
    data[40:44] = (0).to_bytes(4, "little")  # a crash before the header patch: data size 0
    broken.write_bytes(bytes(data) + b"\x03\x00\x04\x00" * 800)
    result = run("recordings", "repair", str(broken))
    assert result.returncode == 0, result.stderr
    with wave.open(str(broken)) as w:
        assert w.getnframes() == 1600


@pytest.mark.slow
def test_precompile_fills_an_empty_kernel_cache_and_the_next_start_loads_it(tmp_path: Path) -> None:
    """`acd precompile` on an empty numba cache compiles (what a first start would otherwise pay);
    run again on the same cache it compiles nothing and loads every kernel from disk."""
    import os
    import re

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    pattern = re.compile(r"routing kernels: (\d+) compiled, (\d+) loaded from the cache")

    def precompile() -> tuple[int, int]:
        result = subprocess.run(
            [*ACD, "precompile"], capture_output=True, text=True, timeout=240, env=env
        )
        assert result.returncode == 0, result.stderr
        found = pattern.search(result.stdout)
        assert found, result.stdout
        return int(found[1]), int(found[2])

    compiled, loaded = precompile()
    assert compiled > 0
    assert loaded == 0
    assert list(tmp_path.rglob("*.nbi")), "no numba index file was written to the cache"
    compiled, loaded = precompile()
    assert compiled == 0
    assert loaded > 0


@pytest.mark.parametrize(
    ("extra", "lines"), [("", ["abc123 ."]), ("dev", ["abc123 .[dev]", "abc123 ."])]
)
def test_install_stamp_is_written_and_succeeds_under_set_e(
    repo_root: Path, tmp_path: Path, extra: str, lines: list[str]
) -> None:
    """scripts/run (no extra) and scripts/test (dev) both run ensure_venv under `set -e`: writing
    the stamp must succeed in both, or the first `scripts/run` on a fresh clone exits 1 right
    after installing (it did)."""
    stamp = tmp_path / "stamp"
    want = "abc123 ." if not extra else f"abc123 .[{extra}]"
    script = (
        f"set -euo pipefail; source {repo_root / 'scripts' / '_bootstrap.sh'}; "
        f"write_stamp {stamp} '{want}' '{extra}'; echo done"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert stamp.read_text().splitlines() == lines
