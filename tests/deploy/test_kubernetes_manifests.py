"""Kustomize base and overlay: rendered, schema-valid, and consistent with the worker's contracts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from crd_schemas import CRD_SCHEMAS
from deploy_paths import DEPLOY, KUBE_BASE, KUBE_OVERLAY, REPO, RULES
from kustomize_render import render

from worker.settings import WorkerSettings

ASSUMED_PARTITIONS = 12  # input topic partitions the manifests are sized for (docs/operations.md)
KUBERNETES_VERSION = "1.31.0"
DIRS = [KUBE_BASE, KUBE_OVERLAY]
Doc = dict[str, Any]
#: Created out of band by the operator, never rendered (an apply would overwrite the real one).
SECRET_NAME = "kestrel-kafka-credentials"
OPERATIONS_DOC = REPO / "docs" / "operations.md"
METRICS_PORT = 9308


def _documented_secret_keys(text: str) -> set[str]:
    """Keys of the ``kubectl create secret generic kestrel-kafka-credentials ...`` command in ``text``."""
    command = re.search(rf"kubectl [^\n]*create secret generic {SECRET_NAME}((?:[^\n]*\\\n)*[^\n]*)", text)
    assert command is not None, f"no `kubectl create secret generic {SECRET_NAME}` command documented"
    return set(re.findall(r"--from-(?:literal|file)=([\w.-]+)=", command.group(1)))


def _secret_key_refs(node: Any) -> list[Doc]:
    """Every ``secretKeyRef`` under ``node`` (env of any container)."""
    if isinstance(node, dict):
        own = [node["secretKeyRef"]] if "secretKeyRef" in node else []
        return own + [ref for value in node.values() for ref in _secret_key_refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _secret_key_refs(item)]
    return []


def _out_of_band_secret() -> dict[str, str]:
    """Stand-in values for the Secret the operator creates, with the documented keys."""
    keys = _documented_secret_keys(OPERATIONS_DOC.read_text(encoding="utf-8"))
    return {key: f"stand-in-{key}" for key in keys}


def _kubectl_render(directory: Path) -> list[Doc] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _rendered(directory: Path) -> list[Doc]:
    """``kubectl kustomize`` output when kubectl exists, else the Python renderer's."""
    return _kubectl_render(directory) or render(directory)


def _by_kind(docs: list[Doc]) -> dict[str, list[Doc]]:
    out: dict[str, list[Doc]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: d.name)
def test_python_renderer_matches_kubectl_kustomize(directory: Path) -> None:
    real = _kubectl_render(directory)
    if real is None:
        pytest.skip("kubectl not found: only the Python renderer is used")

    def key(doc: Doc) -> tuple[str, str]:
        return (doc["kind"], doc["metadata"]["name"])

    assert {key(d): d for d in render(directory)} == {key(d): d for d in real}


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: d.name)
def test_manifests_are_valid(directory: Path) -> None:
    docs = _rendered(directory)
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
        else:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")
    kinds = set(_by_kind(docs))
    expected = {"Deployment", "ConfigMap", "Service", "ServiceMonitor", "PrometheusRule", "CronJob", "NetworkPolicy"}
    expected |= {"ScaledObject", "TriggerAuthentication", "PodDisruptionBudget", "PersistentVolumeClaim"}
    assert expected <= kinds


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: d.name)
def test_no_secret_is_rendered(directory: Path) -> None:
    """`kubectl apply -k` must never replace the credentials the operator created out of band."""
    kinds = _by_kind(_rendered(directory))
    assert "Secret" not in kinds, [doc["metadata"]["name"] for doc in kinds["Secret"]]


def test_secret_keys_used_are_the_documented_ones() -> None:
    """The Deployment and KEDA read exactly the keys the documented `kubectl create secret` gives."""
    documented = _documented_secret_keys(OPERATIONS_DOC.read_text(encoding="utf-8"))
    in_kustomization = _documented_secret_keys((KUBE_BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert documented == in_kustomization == {"username", "password", "keda-sasl", "keda-tls"}
    kinds = _by_kind(_rendered(KUBE_BASE))
    used: set[str] = set()
    for doc in [*kinds["Deployment"], *kinds["CronJob"]]:
        for ref in _secret_key_refs(doc):
            assert ref["name"] == SECRET_NAME
            used.add(ref["key"])
    (auth,) = kinds["TriggerAuthentication"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == SECRET_NAME
        used.add(ref["key"])
    assert used == documented


def test_prometheusrule_is_generated_from_the_rule_file() -> None:
    script = DEPLOY / "kubernetes" / "sync_prometheusrule.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    rule = yaml.safe_load((KUBE_BASE / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: d.name)
def test_worker_deployment_contract(directory: Path) -> None:
    kinds = _by_kind(_rendered(directory))
    (deployment,) = kinds["Deployment"]
    (config,) = kinds["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:1] == ["worker"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": int(config["data"]["WORKER_METRICS__PORT"])} == {"metrics": 9308}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"requests", "limits"} <= set(container["resources"])
    drain = float(config["data"]["WORKER_SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 10, "grace period must exceed the worker's drain"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("Service", "PodDisruptionBudget"):
        (doc,) = kinds[kind]
        selector = doc["spec"]["selector"]
        assert selector.get("matchLabels", selector).items() <= labels.items(), kind


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: d.name)
def test_worker_environment_is_accepted_by_worker_settings(
    directory: Path, monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    kinds = _by_kind(_rendered(directory))
    (deployment,) = kinds["Deployment"]
    (config,) = kinds["ConfigMap"]
    secrets = {SECRET_NAME: _out_of_band_secret()}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = dict(config["data"])
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = secrets[ref["name"]][ref["key"]] if ref else item["value"]
    if "WORKER_KAFKA__SSL_CAFILE" in env:  # must be a CA bundle where the settings are validated
        env["WORKER_KAFKA__SSL_CAFILE"] = str(ca_file)
    for name, value in env.items():
        assert name.startswith("WORKER_"), name
        monkeypatch.setenv(name, value)
    settings = WorkerSettings(registry_dir=Path("/registry"))
    fields = {"WORKER_" + name.upper() for name in WorkerSettings.model_fields}
    nested = {
        f"WORKER_{group.upper()}__{field.upper()}"
        for group in ("kafka", "metrics")
        for field in type(getattr(settings, group)).model_fields
    }
    assert set(env) <= fields | nested, "env names the worker does not read"
    assert settings.kafka.security_protocol.startswith("SASL") and settings.kafka.sasl_password is not None


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: d.name)
def test_scaling_and_monitoring_wiring(directory: Path) -> None:
    kinds = _by_kind(_rendered(directory))
    (deployment,) = kinds["Deployment"]
    (scaled,) = kinds["ScaledObject"]
    (auth,) = kinds["TriggerAuthentication"]
    (service,) = kinds["Service"]
    (monitor,) = kinds["ServiceMonitor"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= ASSUMED_PARTITIONS
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka" and trigger["metadata"]["allowIdleConsumers"] == "false"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    env_names = set(kinds["ConfigMap"][0]["data"])
    for key in ("bootstrapServersFromEnv", "consumerGroupFromEnv", "topicFromEnv"):
        assert trigger["metadata"][key] in env_names
    secrets = {SECRET_NAME: _out_of_band_secret()}
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]]
    assert service["metadata"]["name"] == "kestrel-worker", "the alert rules select job=kestrel-worker"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    # Found in review: a fixed replica count set KEDA's back at every apply (12 workers to 2); a
    # surge pod at full scale got no partition and stalled the rollout; the disruption budget
    # counted not-ready workers (a broker outage) against drains, which then waited forever.
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    (budget,) = kinds["PodDisruptionBudget"]
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow" and budget["spec"]["maxUnavailable"] == 1
    claims = {doc["metadata"]["name"] for doc in kinds["PersistentVolumeClaim"]}
    (cronjob,) = kinds["CronJob"]
    pods = [deployment["spec"]["template"]["spec"], cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    for pod in pods:
        used = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert used <= claims


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: d.name)
def test_network_policy_admits_only_prometheus_to_the_metrics_port(directory: Path) -> None:
    kinds = _by_kind(_rendered(directory))
    (deployment,) = kinds["Deployment"]
    (policy,) = kinds["NetworkPolicy"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"].get("namespace") == deployment["metadata"].get("namespace")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["policyTypes"] == ["Ingress"], "egress (Kafka) is not restricted by this policy"
    (rule,) = spec["ingress"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert rule["ports"] == [{"port": port["containerPort"], "protocol": "TCP"}]
    assert port["containerPort"] == METRICS_PORT
    # One peer holding both selectors: Prometheus pods AND in the monitoring namespace (two peers
    # would admit every pod of the monitoring namespace and every pod labelled prometheus anywhere).
    (peer,) = rule["from"]
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
