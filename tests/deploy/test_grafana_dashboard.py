"""The Grafana dashboard: valid JSON, the panels the issue asks for, queries on real metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from deploy_paths import COMPOSE, DASHBOARD, DEPLOY, RULES
from exported_metrics import TARGET_LABELS, worker_series
from promql_names import matcher_labels, metric_names

REQUIRED_PANELS = {
    "Throughput by outcome",
    "Anomaly rate",
    "Score distribution",
    "Consumer lag by partition",
    "Processing latency",
    "Live model version",
    "Model version over time",
}


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert titles >= REQUIRED_PANELS
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_queries_use_only_exported_metrics_and_labels() -> None:
    exported = worker_series()
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    recorded = {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}
    dashboard = _dashboard()
    queries = _queries(dashboard)
    assert queries
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+)(\{[^}]*\})?,\s*(\w+)\)", variable["query"]["query"])
            assert match is not None and match.group(1) in exported and match.group(3) in TARGET_LABELS
    for expr in queries:
        unknown = metric_names(expr) - set(exported) - recorded - {"up"}
        assert unknown == set(), f"{expr}: unknown metrics {unknown}"
        for name, labels in matcher_labels(expr).items():
            allowed = exported.get(name, set()) | TARGET_LABELS
            assert labels <= allowed, f"{expr}: {name} has no labels {labels - allowed}"
    used = set().union(*(metric_names(expr) for expr in queries))
    for family in (
        "kestrel_events_total",
        "kestrel_anomaly_score_bucket",
        "kestrel_consumer_lag",
        "kestrel_model_info",
    ):
        assert family in used


def test_compose_provisions_the_dashboard() -> None:
    grafana = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if volume.startswith("."))
    dashboards_dir = (COMPOSE.parent / next(src for src, dst in mounts.items() if "dashboards" in dst)).resolve()
    assert dashboards_dir == DASHBOARD.parent
    provider = yaml.safe_load((DEPLOY / "compose/grafana/provisioning/dashboards/kestrel.yml").read_text())
    assert provider["providers"][0]["options"]["path"] in mounts.values()
    datasource = yaml.safe_load((DEPLOY / "compose/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == _dashboard()["templating"]["list"][0]["current"]["value"]


def test_every_query_filters_on_the_namespace_and_the_job() -> None:
    """Workers of one job in two namespaces (staging and prod under one Prometheus) were summed
    together: every selector of a worker series takes both variables, and the job list follows
    the namespaces chosen."""
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["namespace"]["allValue"] == ".*"  # also matches targets without the label (compose)
    assert 'namespace=~"$namespace"' in variables["job"]["query"]["query"]
    for expr in _queries(dashboard):
        selectors = re.findall(r"\b(\w[\w:]*)\{([^}]*)\}", expr)
        assert selectors, expr
        for name, matchers in selectors:
            assert 'namespace=~"$namespace"' in matchers and 'job=~"$job"' in matchers, f"{name} in {expr}"
