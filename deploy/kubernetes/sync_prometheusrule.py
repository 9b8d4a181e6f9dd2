"""Regenerate ``base/prometheusrule.yaml`` from ``deploy/prometheus/rules/kestrel-alerts.yml``.

The rule file is the single source of truth (compose mounts it, promtool tests it); the
Prometheus Operator needs the same groups wrapped in a ``PrometheusRule``. Run after editing the
rules: ``python deploy/kubernetes/sync_prometheusrule.py``; ``--check`` exits 1 when the generated
file is stale (tests/deploy/test_kubernetes_manifests.py does the same comparison). Needs PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1]
RULES = DEPLOY / "prometheus" / "rules" / "kestrel-alerts.yml"
TARGET = DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml"
HEADER = "# GENERATED from deploy/prometheus/rules/kestrel-alerts.yml by deploy/kubernetes/sync_prometheusrule.py.\n"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, runbooks) as literal blocks, as in the source file."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def render(rules_text: str) -> str:
    """The PrometheusRule manifest text for the given rule-file text."""
    groups: Any = yaml.safe_load(rules_text)["groups"]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "kestrel", "labels": {"app.kubernetes.io/name": "kestrel"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    """Write the manifest, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated file is stale")
    args = parser.parse_args(argv)
    expected = render(RULES.read_text(encoding="utf-8"))
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != expected:
            print(f"{TARGET} is stale: run python {Path(__file__).relative_to(DEPLOY.parent)}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
