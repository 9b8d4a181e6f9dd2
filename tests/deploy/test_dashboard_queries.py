"""The dashboard's queries evaluated by promtool against series shaped like the worker's exports,
with ``$job`` as Grafana renders the default "All" (found in review: their values were wrong)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_paths import require_tool

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "kestrel.json"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panel(title: str) -> dict[str, Any]:
    return next(p for p in _dashboard()["panels"] if p["title"] == title)


def _expr(title: str, ref: str, namespace: str | None = None) -> str:
    """The target's query with ``$job`` and ``$namespace`` as Grafana sends "All": the variable's
    ``allValue`` when set, else the alternation of the values ``label_values`` found (here one
    worker job); ``namespace`` stands for one namespace chosen."""
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    expr: str = next(t["expr"] for t in _panel(title)["targets"] if t["refId"] == ref)
    expr = expr.replace("$namespace", namespace or variables["namespace"].get("allValue") or "(prod)")
    return expr.replace("$__rate_interval", "1m").replace(
        "$job", variables["job"].get("allValue") or "(kestrel-worker)"
    )


def _evaluates_to(tmp_path: Path, series: dict[str, str], expr: str, expected: float) -> None:
    test = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": expected}]}
                ],
            }
        ],
    }
    path = tmp_path / "t.yml"
    path.write_text(yaml.safe_dump(test), encoding="utf-8")
    promtool = require_tool("promtool", "Debian package prometheus")
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_up_workers_count_only_worker_targets(tmp_path: Path) -> None:
    """Found in review: "All" sent ``job=~".+"``, and Prometheus's own target counted as a worker."""
    series = {
        'up{job="kestrel-worker",instance="10.0.0.2:9308"}': "1x20",
        'up{job="kestrel-worker",instance="10.0.0.3:9308"}': "1x20",
        'up{job="prometheus",instance="localhost:9090"}': "1x20",
    }
    _evaluates_to(tmp_path, series, _expr("Ready workers", "B"), 2)


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        # a worker that scored nothing yet (no partition, no model) exports 0 over a window of 0
        ({"busy": ("0.02", "10000"), "idle": ("0", "0")}, 0.02),
        # a worker that just swapped models: 5 of 10 flagged, beside 1% of 10,000
        ({"full": ("0.01", "10000"), "swapped": ("0.5", "10")}, 105 / 10010),
        # a swap's NaN until the new model scores
        ({"full": ("0.01", "10000"), "swapped": ("NaN", "0")}, 0.01),
    ],
    ids=["idle worker", "unequal windows", "after a swap"],
)
def test_the_fleet_flag_rate_weights_each_worker_by_its_window(
    tmp_path: Path, workers: dict[str, tuple[str, str]], expected: float
) -> None:
    """Found in review: an unweighted average of per-worker rates read 25.5% during a rollout while
    the fleet flagged 1.05%, and an idle worker's 0 halved a busy one's rate."""
    series = {}
    for name, (rate, window) in workers.items():
        values = " ".join([rate] * 21) if rate == "NaN" else f"{rate}x20"  # promtool cannot repeat NaN
        series[f'kestrel_flag_rate{{job="kestrel-worker",instance="{name}:9308"}}'] = values
        series[f'kestrel_flag_rate_window_events{{job="kestrel-worker",instance="{name}:9308"}}'] = f"{window}x20"
    _evaluates_to(tmp_path, series, _expr("Anomaly rate", "C"), expected)


def test_the_model_version_timeline_shows_each_worker() -> None:
    """Found in review: the versions were counted over workers, so one left on the old model could
    not be named (docs/operations.md points operators at this panel after a promotion)."""
    (target,) = _panel("Model version over time")["targets"]
    assert target["expr"].startswith("max by (instance, version)") and "{{instance}}" in target["legendFormat"]
    assert not _panel("Processing latency")["description"].lower().startswith("event time")


@pytest.mark.parametrize(("namespace", "expected"), [(None, 3), ("staging", 1), ("prod", 2)])
def test_a_namespace_shows_its_own_workers_and_all_includes_targets_without_one(
    tmp_path: Path, namespace: str | None, expected: float
) -> None:
    """One job name in two namespaces (and a compose worker without the label): the workers of the
    namespace chosen, and every worker under "All"."""
    series = {
        'up{namespace="prod",job="kestrel-worker",instance="10.0.0.2:9308"}': "1x20",
        'up{namespace="prod",job="kestrel-worker",instance="10.0.0.3:9308"}': "1x20",
        'up{namespace="staging",job="kestrel-worker",instance="10.0.1.2:9308"}': "1x20",
        'up{job="prometheus",instance="localhost:9090"}': "1x20",
    }
    if namespace is None:
        series['up{namespace="staging",job="kestrel-worker",instance="10.0.1.2:9308"}'] = "0x20"
        series['up{job="kestrel-worker",instance="worker:9308"}'] = "1x20"
    _evaluates_to(tmp_path, series, _expr("Ready workers", "B", namespace), expected)
