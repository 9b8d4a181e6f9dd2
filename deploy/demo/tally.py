"""The demo's live counters and its end-of-run summary (pure: no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Tally:
    """What was sent, and what came back on the anomaly topic.

    ``label_field`` holds the truth (``normal`` or an attack name) in each replayed event; the
    worker ignores fields outside its spec and returns the whole event inside each anomaly
    record, so precision and recall can be computed from the output alone.
    """

    label_field: str
    normal_value: str
    sent_normal: int = 0
    sent_anomalous: int = 0
    sent_malformed: int = 0
    flagged_normal: int = 0
    flagged_anomalous: int = 0
    latencies_s: list[float] = field(default_factory=list)
    flagged_ids: set[str] = field(default_factory=set)
    #: Anomaly records of an event already counted (at-least-once: the worker scores an event again
    #: after a restart or a rebalance, and publishes its record again).
    repeated_records: int = 0

    def count_sent(self, event: dict[str, Any]) -> None:
        if str(event.get(self.label_field)) == self.normal_value:
            self.sent_normal += 1
        else:
            self.sent_anomalous += 1

    def add_anomaly(self, value: bytes | None, published_ms: int) -> dict[str, Any] | None:
        """Count one anomaly record (duplicates after a restart are counted once)."""
        if value is None:
            return None
        record = orjson.loads(value)
        if record["event_id"] in self.flagged_ids:
            self.repeated_records += 1
            return None
        self.flagged_ids.add(record["event_id"])
        if str(record["event"].get(self.label_field)) == self.normal_value:
            self.flagged_normal += 1
        else:
            self.flagged_anomalous += 1
        ts = record["event"].get("ts")
        if isinstance(ts, int | float):
            self.latencies_s.append(max(0.0, published_ms / 1000.0 - float(ts)))
        return dict(record)

    @property
    def flagged(self) -> int:
        return self.flagged_normal + self.flagged_anomalous

    @property
    def records(self) -> int:
        """Anomaly records received, repeated ones included (what the worker's counter counts)."""
        return self.flagged + self.repeated_records

    def summary(self) -> dict[str, Any]:
        precision = self.flagged_anomalous / self.flagged if self.flagged else 0.0
        recall = self.flagged_anomalous / self.sent_anomalous if self.sent_anomalous else 0.0
        fpr = self.flagged_normal / self.sent_normal if self.sent_normal else 0.0
        return {
            "events_sent": self.sent_normal + self.sent_anomalous + self.sent_malformed,
            "normal_sent": self.sent_normal,
            "attacks_sent": self.sent_anomalous,
            "malformed_sent": self.sent_malformed,
            "flagged": self.flagged,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "false_positive_rate": round(fpr, 4),
            "latency_ms": {f"p{q}": round(1000 * percentile(self.latencies_s, q), 1) for q in (50, 95, 99)},
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> ``{"name{labels}": value}`` (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total
