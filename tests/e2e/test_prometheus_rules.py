"""config/prometheus/acd-rules.yml: valid for promtool, right in promtool's rule unit tests, and
written against metrics the daemon really exports (a renamed metric would leave an alert that
can never fire, which no other check would notice). config/grafana/acd-dashboard.json: every
panel query parses as PromQL (promtool) and names only exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import DaemonFactory

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
RULES = HERE.parent.parent / "config" / "prometheus" / "acd-rules.yml"
DASHBOARD = HERE.parent.parent / "config" / "grafana" / "acd-dashboard.json"


def dashboard_queries() -> list[str]:
    """Every panel query, with the dashboard's variables ($instance, $queue) as "match all"."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return [re.sub(r"\$\{?(instance|queue)\}?", ".*", e) for e in exprs]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool missing: scripts/test installs the Debian package 'prometheus'"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # promtool found every rule the file holds (a rule it skipped would be a smaller count)
    written = RULES.read_text().count("\n      - alert: ") + RULES.read_text().count(
        "\n      - record: "
    )
    assert written >= 20
    assert f"SUCCESS: {written} rules found" in checked.stdout


def test_the_rules_fire_when_they_should_and_only_then() -> None:
    tested = promtool("test", "rules", "acd-rules.test.yml", cwd=HERE / "promtool")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_metric_the_rules_use_is_exported(start_daemon: DaemonFactory) -> None:
    # media workers and transcription on, so their metrics are registered too
    daemon = start_daemon("[media]\nworkers = 1\n[transcription]\nenabled = true\n")
    _, exposition, _ = daemon.get("/metrics")
    exported = set(re.findall(r"^# TYPE (\S+) ", exposition.decode(), re.MULTILINE))
    for source, text in (("rules", RULES.read_text()), ("dashboard", DASHBOARD.read_text())):
        used = {
            re.sub(r"_(bucket|count|sum)$", "", name)
            for name in re.findall(r"(?<![:\w])(acd_[a-z_]+)", text)
        }
        assert len(used) >= 15, source
        assert used - exported == set(), source
    assert daemon.stop() == 0


def test_every_dashboard_query_is_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query (as a recording rule of a throw-away rules file)."""
    queries = dashboard_queries()
    assert len(queries) >= 25
    assert all("$" not in q for q in queries)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)
        if not q.startswith("label_values(")  # Grafana's own function, not PromQL
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in checked.stdout
