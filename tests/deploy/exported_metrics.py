"""The metric series the worker really exports, and the list in the shared contracts.

``worker_series()`` builds the worker's metrics on a fresh ``CollectorRegistry`` and expands each
family to the series names Prometheus stores (``_total`` for counters; ``_bucket``, ``_sum`` and
``_count`` for histograms) with the label names each accepts.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from worker.batch_histogram import BatchHistogram
from worker.metrics import WorkerMetrics

# Labels Prometheus adds to every scraped series (target labels in compose and Kubernetes).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def worker_series() -> dict[str, set[str]]:
    """Series name -> label names, as exported by ``worker.metrics.WorkerMetrics``."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    series: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, BatchHistogram):  # the worker's own, fed a batch at a time
            name, kind, labels = collector.name, "histogram", set()
        elif isinstance(collector, MetricWrapperBase):
            # prometheus_client keeps the family name and label names on these attributes.
            name, kind, labels = collector._name, str(collector._type), set(collector._labelnames)
        else:
            continue
        for suffix in _SUFFIXES[kind]:
            series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    registered = {family.name for family in registry.collect()}
    missing = {name for name in registered if not any(key.startswith(name) for key in series)}
    if missing:
        raise AssertionError(f"registered families not found on WorkerMetrics attributes: {sorted(missing)}")
    return series


def contract_series(path: Path) -> dict[str, set[str]]:
    """Series name -> label names from the "## Metrics" section of contracts.md."""
    text = path.read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    series: dict[str, set[str]] = {}
    for line in section.splitlines():
        kind = next((k for k in ("histogram", "counter", "gauge") if re.search(rf"\b{k}s?\b", line)), None)
        for match in re.finditer(r"\b(kestrel_[a-z0-9_]+)(\{[^}]*\})?", line):
            name, block = match.group(1), match.group(2) or ""
            labels = set(re.findall(r"([a-z_]+)\s*(?:=|,|\})", block))
            suffixes = _SUFFIXES["histogram"] if kind == "histogram" else ("",)
            for suffix in suffixes:
                series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series
