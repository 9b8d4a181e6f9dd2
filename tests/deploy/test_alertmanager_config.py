"""Alertmanager config: valid for amtool, and every shipped alert routes where it should."""

from __future__ import annotations

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
