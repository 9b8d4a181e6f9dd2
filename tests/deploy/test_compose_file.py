"""The compose stack: valid against the compose specification, and wired the way the docs say."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from deploy_paths import COMPOSE

from worker.settings import WorkerSettings


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return compose


def _compose_spec_schema() -> dict[str, Any]:
    try:
        vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.skip("check-jsonschema (PyPI; ships the compose-spec schema) is not installed")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))
    return schema


def test_compose_file_matches_the_compose_spec() -> None:
    schema = _compose_spec_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []


def test_services_the_issue_asks_for() -> None:
    services = _compose()["services"]
    assert {"kafka", "kafka-topics", "worker", "retrain", "prometheus", "alertmanager", "grafana"} <= set(services)
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "KAFKA_ZOOKEEPER_CONNECT" not in kafka, "KRaft mode"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["retrain"]["profiles"] == ["retrain"]
    assert services["retrain"]["command"][:2] == ["training", "retrain"]
    assert services["worker"]["command"][:1] == ["worker"]
    topics_script = services["kafka-topics"]["command"][0]
    assert re.search(r"--topic events --partitions 12\b", topics_script), "input topic sized for 12 workers"
    worker_env = services["worker"]["environment"]
    for topic_key in ("WORKER_KAFKA__INPUT_TOPIC", "WORKER_KAFKA__OUTPUT_TOPIC", "WORKER_KAFKA__DEAD_LETTER_TOPIC"):
        assert f"--topic {worker_env[topic_key]} " in topics_script


def test_worker_environment_is_accepted_by_worker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _compose()["services"]["worker"]
    for name, value in worker["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = WorkerSettings(registry_dir=Path("/registry"))
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace is not None and int(grace.group(1)) > settings.shutdown_timeout_s


def test_bind_mounts_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
