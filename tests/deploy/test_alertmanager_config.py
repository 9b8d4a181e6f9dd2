"""Alertmanager config: valid for amtool, and every shipped alert routes where it should."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml
from deploy_paths import ALERTMANAGER_CONFIG, RULES, require_tool


def _alerts() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def _expected_receiver(labels: dict[str, str]) -> str:
    anomaly = labels.get("category") == "anomaly"
    critical = labels["severity"] == "critical"
    if anomaly:
        return "kestrel-anomalies-page" if critical else "kestrel-anomalies"
    return "kestrel-oncall" if critical else "kestrel-team"


def test_amtool_check_config() -> None:
    amtool = require_tool("amtool", "Debian package prometheus-alertmanager")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_routes_to_its_receiver(rule: dict[str, Any]) -> None:
    amtool = require_tool("amtool", "Debian package prometheus-alertmanager")
    labels = {"alertname": rule["alert"], **rule["labels"]}
    expected = _expected_receiver(labels)
    result = subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--verify.receivers={expected}",
            *(f"{key}={value}" for key, value in labels.items()),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_receiver_is_used_and_defined() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    defined = {receiver["name"] for receiver in config["receivers"]}
    route = config["route"]
    used = {route["receiver"]} | {child["receiver"] for child in route.get("routes", [])}
    assert used == defined


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for matcher in matchers:
        found = re.fullmatch(r'(\w+)(=~|!=|!~|=)"(.*)"', matcher)
        assert found, matcher
        name, op, value = found.groups()
        got = labels.get(name, "")
        regex = re.fullmatch(value, got) is not None
        if not {"=": got == value, "!=": got != value, "=~": regex, "!~": not regex}[op]:
            return False
    return True


def _inhibited(target: dict[str, str], firing: list[dict[str, str]]) -> bool:
    """Alertmanager's inhibition rules applied as it documents them (a missing label is empty)."""
    rules = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))["inhibit_rules"]
    return any(
        _matches(rule.get("target_matchers", []), target)
        and _matches(rule.get("source_matchers", []), source)
        and all(source.get(label, "") == target.get(label, "") for label in rule.get("equal", []))
        for rule in rules
        for source in firing
        if source is not target
    )


def test_no_ready_workers_in_one_namespace_silences_only_that_namespace() -> None:
    """Found in review: KestrelNoReadyWorkers fires per namespace and job now, and its inhibition
    had no ``equal``: staging without a model silenced prod's lag and readiness alerts."""
    staging_down = {"alertname": "KestrelNoReadyWorkers", "severity": "critical", "namespace": "staging", "job": "w"}
    prod_lag = {"alertname": "KestrelConsumerLagGrowing", "severity": "warning", "namespace": "prod", "job": "w"}
    prod_unready = {"alertname": "KestrelWorkerNotReady", "severity": "warning", "namespace": "prod", "job": "w"}
    assert not _inhibited(prod_lag, [staging_down, prod_lag])
    assert not _inhibited(prod_unready, [staging_down, prod_unready])
    staging_lag = {**prod_lag, "namespace": "staging"}
    assert _inhibited(staging_lag, [staging_down, staging_lag])
