"""The shipped Prometheus rules: promtool-valid, unit-tested per alert, documented, on real metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_paths import COMPOSE_PROMETHEUS, REPO, RULE_TESTS, RULES, require_tool
from exported_metrics import TARGET_LABELS, worker_series
from promql_names import matcher_labels, metric_names

# The alerts the deployment issue asks for, by concern.
REQUIRED_ALERTS = {
    "anomalies detected": "KestrelAnomaliesDetected",
    "severity by rate": "KestrelAnomalyShareHigh",
    "severity by score": "KestrelSevereAnomalyScores",
    "anomaly-rate spike vs baseline": "KestrelAnomalyRateSpike",
    "dead-letter rate": "KestrelDeadLetterRateHigh",
    "consumer lag growing": "KestrelConsumerLagGrowing",
    "worker down": "KestrelWorkerDown",
    "worker not ready": "KestrelWorkerNotReady",
    "model reload failures": "KestrelModelReloadFailed",
    "model too old": "KestrelModelTooOld",
    "flag rate drift": "KestrelFlagRateDrift",
}
# Series Prometheus itself provides.
PROMETHEUS_SERIES = frozenset({"up"})


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True, check=False, timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "alerts without a test where they fire"
    assert names - quiet == set(), "alerts without a test where they stay quiet"


def test_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in _alerts()}
    missing = {concern: name for concern, name in REQUIRED_ALERTS.items() if name not in names}
    assert missing == {}


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook", "runbook_doc"} <= set(annotations)
    assert len(annotations["runbook"].split()) >= 20, "runbook text should say what to do"
    doc, _, anchor = annotations["runbook_doc"].partition("#")
    assert anchor == rule["alert"].lower()
    headings = re.findall(r"^#+\s+(.+?)\s*$", (REPO / doc).read_text(encoding="utf-8"), flags=re.MULTILINE)
    slugs = {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}
    assert anchor in slugs, f"{doc} has no heading for #{anchor}"


def test_rule_queries_use_only_exported_metrics_and_labels() -> None:
    exported = worker_series()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for rule in _rules():
        unknown = metric_names(rule["expr"]) - set(exported) - recorded - PROMETHEUS_SERIES
        assert unknown == set(), f"{rule.get('alert') or rule.get('record')}: unknown metrics {unknown}"
        for name, labels in matcher_labels(rule["expr"]).items():
            allowed = exported.get(name, set()) | TARGET_LABELS
            assert labels <= allowed, f"{name}: unknown labels {labels - allowed}"


def test_compose_prometheus_config_loads_the_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert next(job["job_name"] for job in config["scrape_configs"]) == "kestrel-worker"
    config["rule_files"] = [str(RULES)]  # the file compose mounts at /etc/prometheus/rules
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
