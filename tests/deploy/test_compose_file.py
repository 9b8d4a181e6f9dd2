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


LOOPBACK = "127.0.0.1"


def _published(port: str | int | dict[str, Any]) -> tuple[str | None, str]:
    """(host address or None when unbound, host port) of one `ports` entry, short or long syntax."""
    if isinstance(port, dict):
        return port.get("host_ip"), str(port.get("published", ""))
    # Short syntax: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTOCOL] or a bare CONTAINER_PORT.
    parts = str(port).split("/", 1)[0].rsplit(":", 2)
    if len(parts) == 3:
        return parts[0], parts[1]
    return None, parts[0] if len(parts) == 2 else ""


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("127.0.0.1:9092:9092", ("127.0.0.1", "9092")),
        ("9092:9092", (None, "9092")),
        ("9092", (None, "")),
        ("0.0.0.0:3000:3000/tcp", ("0.0.0.0", "3000")),
        ({"target": 80, "published": 8080, "host_ip": "127.0.0.1"}, ("127.0.0.1", "8080")),
        ({"target": 80, "published": 8080}, (None, "8080")),
    ],
)
def test_port_entries_are_read_in_both_syntaxes(entry: str | dict[str, Any], expected: tuple[str | None, str]) -> None:
    assert _published(entry) == expected


def test_every_published_port_is_bound_to_loopback() -> None:
    """Kafka here is PLAINTEXT without authentication; nothing in the stack is for other machines."""
    services = _compose()["services"]
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert {name for name, ports in published.items() if ports} >= {"kafka", "prometheus", "alertmanager", "grafana"}
    for name, ports in published.items():
        for port in ports:
            address, _ = _published(port)
            assert address == LOOPBACK, f"{name}: {port!r} is published on every interface"
        assert services[name].get("network_mode") != "host", f"{name}: host networking bypasses the port bindings"


def test_kafka_advertises_the_loopback_address_it_is_published_on() -> None:
    kafka = _compose()["services"]["kafka"]
    advertised = dict(item.split("://", 1) for item in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(","))
    (published,) = kafka["ports"]
    assert advertised["EXTERNAL"] == ":".join(published.split(":")[:2])


def test_prometheus_has_no_lifecycle_api() -> None:
    """--web.enable-lifecycle lets anyone who reaches the port POST /-/quit."""
    lines = [line for line in COMPOSE.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    assert not any("--web.enable-lifecycle" in line for line in lines)
    command = _compose()["services"]["prometheus"]["command"]
    assert not any("enable-lifecycle" in arg or "enable-admin-api" in arg for arg in command)


def test_grafana_admin_password_is_required_without_a_default() -> None:
    grafana = _compose()["services"]["grafana"]["environment"]
    password = grafana["GF_SECURITY_ADMIN_PASSWORD"]
    # ${VAR:?message}: compose refuses to run when the variable is unset or empty; no fallback value.
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password
    assert grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false") == "false"
    text = COMPOSE.read_text(encoding="utf-8")
    assert "admin/admin" not in text
    assert not re.search(r"PASSWORD[^\n]*:-", text), "a password variable with a default value"


@pytest.mark.parametrize("service", ["worker", "retrain"])
def test_kestrel_services_run_least_privilege_as_docs_say(service: str) -> None:
    """docs/operations.md: compose sets the equivalent of the pods' security context (found in
    review: the retrain service had no read-only root filesystem)."""
    spec = _compose()["services"][service]
    assert spec["read_only"] is True and "/tmp" in spec["tmpfs"]
    assert spec["cap_drop"] == ["ALL"] and "no-new-privileges:true" in spec["security_opt"]
