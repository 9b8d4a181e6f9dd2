"""Where the deployment files live, and how tests find the command-line tools they need."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "kestrel-alerts.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.test.yml"))
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "kestrel.json"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_PROMETHEUS = DEPLOY / "compose" / "prometheus.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBE_BASE = DEPLOY / "kubernetes" / "base"
KUBE_OVERLAY = DEPLOY / "kubernetes" / "overlays" / "example"
CONTRACTS = Path(os.environ.get("KESTREL_CONTRACTS", "/work/notes/contracts.md"))


def require_tool(name: str, package: str, *aliases: str) -> str:
    """The tool's path (``name`` or an alias); skips naming the package when absent, fails in CI."""
    for candidate in (name, *aliases):
        beside_python = Path(sys.executable).parent / candidate  # tools installed into the virtualenv
        path = shutil.which(candidate) or (str(beside_python) if beside_python.exists() else None)
        if path is not None:
            return path
    message = f"{name} not found on PATH (install {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must provide it")
    pytest.skip(message)
