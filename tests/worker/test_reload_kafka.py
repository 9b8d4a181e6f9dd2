"""Hot reload in a real ``python -m worker --registry`` subprocess while events stream through the broker.

One worker run covers: a promotion mid-stream (no event lost or scored twice, outputs switch
from version A to B and never back), a corrupted new artifact (refused, B keeps serving, the
failure counter increments), and roll-back (back to A). Exactness: every produced offset is
committed, ``kestrel_events_total`` equals the number produced (a lost event lowers it, a
repeated one raises it), every anomaly key is unique, and every event both models flag with a
margin appears exactly once.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from expectations import expected_flags, renumber
from kafka_harness import TopicReader, Topics, WorkerProcess, committed_offsets, events_bytes, produce, wait_for
from tiny_model import TinyModel, build_tiny_model

from detector.registry import ModelRegistry

pytestmark = pytest.mark.kafka

BROKEN = "20990101T000000Z-broken01"


class RegistryWorker(WorkerProcess):
    """``python -m worker --registry DIR`` (``model_dir`` is the registry directory here)."""

    model_flag = "--registry"

    def model_info(self) -> set[str]:
        return {
            line.split('version="', 1)[1].split('"', 1)[0]
            for line in self.metrics_text().splitlines()
            if line.startswith("kestrel_model_info{") and line.endswith(" 1.0")
        }


def _stream(bootstrap: str, topic: str, events: list[dict[str, Any]], chunk: int, pause_s: float) -> dict[int, int]:
    ends: dict[int, int] = {}
    stop = threading.Event()
    for start in range(0, len(events), chunk):
        for p, end in produce(bootstrap, topic, events_bytes(events[start : start + chunk])).items():
            ends[p] = max(ends.get(p, 0), end)
        stop.wait(pause_s)
    return ends


def _merge(*ends: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for e in ends:
        for p, end in e.items():
            out[p] = max(out.get(p, 0), end)
    return out


def _phase(events: list[dict[str, Any]], prefix: str, n: int) -> list[dict[str, Any]]:
    return renumber([events[i % len(events)] for i in range(n)], prefix)


def test_hot_reload_while_streaming(kafka_broker: Any, tiny_model: TinyModel, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    model_b = build_tiny_model(tmp_path / "model-b", n_rows=3000)
    a, b = tiny_model.version, model_b.version
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(tiny_model.path)
    registry.add(model_b.path)
    registry.promote(a, "first")
    base = [*tiny_model.normal_events, *tiny_model.attack_events]
    flags_a, flags_b = expected_flags(tiny_model.path, base), expected_flags(model_b.path, base)
    thresholds = {a: tiny_model.threshold, b: model_b.threshold}
    # Events both models flag with a margin: each must appear exactly once, whichever model scored it.
    both = {i for i, e in enumerate(base) if e["event_id"] in flags_a.must_flag & flags_b.must_flag}
    phase1, phase2, phase3 = _phase(base, "p1", 3000), _phase(base, "p2", 600), _phase(base, "p3", 600)
    topics = Topics.unique(bootstrap)
    worker = RegistryWorker(
        registry.storage.local_path("LIVE").parent,
        bootstrap,
        topics,
        extra=["--batch-size", "50", "--batch-wait-ms", "10"],
        env={"WORKER_RELOAD_INTERVAL_S": "0.2"},
    )
    out = TopicReader(bootstrap, topics.output)
    try:
        worker.wait_ready()
        assert worker.model_info() == {a}
        # 1. Promote B while phase 1 streams.
        result: dict[str, dict[int, int]] = {}
        producer = threading.Thread(
            target=lambda: result.update(ends=_stream(bootstrap, topics.input, phase1, 100, 0.1)), daemon=True
        )
        producer.start()
        wait_for(lambda: worker.metric("kestrel_events_total") >= 600, 60, "some events scored by A")
        registry.promote(b, "mid-stream promotion")
        wait_for(lambda: worker.metric("kestrel_model_reloads_total") == 1, 30, "swap to B")
        producer.join(120)
        ends = result["ends"]
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 60, "phase 1")
        assert worker.model_info() == {b}
        # 2. A corrupted new version is refused; B keeps serving.
        target = registry.storage.local_path(f"versions/{BROKEN}")
        shutil.copytree(model_b.path, target)
        weights = bytearray((target / "weights.safetensors").read_bytes())
        weights[-1] ^= 0xFF
        (target / "weights.safetensors").write_bytes(bytes(weights))
        registry.promote(BROKEN, "corrupted by the test", verify=False)
        wait_for(lambda: worker.metric("kestrel_model_reload_failures_total") == 1, 30, "reload failure counted")
        ends = _merge(ends, _stream(bootstrap, topics.input, phase2, 100, 0.05))
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 60, "phase 2")
        assert worker.model_info() == {b} and worker.metric("kestrel_model_reloads_total") == 1
        assert worker.metric("kestrel_model_reload_failures_total") == 1  # not retried in a tight loop
        assert "model_reload_failed" in worker.log()
        # 3. Roll back twice: broken -> B (already served: no swap) -> A.
        registry.rollback("undo the corrupted version")
        registry.rollback("back to A")
        assert registry.read_pointer() == a
        wait_for(lambda: worker.metric("kestrel_model_reloads_total") == 2, 30, "swap back to A")
        ends = _merge(ends, _stream(bootstrap, topics.input, phase3, 100, 0.05))
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 60, "phase 3")
        assert worker.model_info() == {a}
        # Exactly one outcome per produced offset.
        produced = len(phase1) + len(phase2) + len(phase3)
        assert sum(ends.values()) == produced
        assert worker.metric("kestrel_events_total") == produced
        messages = out.drain_all()
        records = [orjson.loads(m.value) for m in messages]
        ids = [r["event_id"] for r in records]
        assert len(ids) == len(set(ids)), "an event was scored twice"
        must = {
            f"{p}-{i}"
            for p, events in (("p1", phase1), ("p2", phase2), ("p3", phase3))
            for i in range(len(events))
            if i % len(base) in both
        }
        assert must <= set(ids), f"{len(must - set(ids))} events lost"
        # Versions: A, then B from the first batch after the swap, never A again until the roll-back.
        versions = [r["model_version"] for r in records]
        runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        assert runs == [a, b, a], runs
        assert {r["model_version"] for r in records if r["event_id"].startswith("p1-")} == {a, b}  # mid-stream
        assert {r["model_version"] for r in records if r["event_id"].startswith("p2-")} == {b}
        assert {r["model_version"] for r in records if r["event_id"].startswith("p3-")} == {a}
        for message, record in zip(messages, records, strict=True):
            assert dict(message.headers)["model_version"] == record["model_version"].encode()
            assert record["threshold"] == pytest.approx(thresholds[record["model_version"]])
            assert record["score"] > record["threshold"]
        assert worker.terminate() == 0
    finally:
        out.close()
        worker.stop_quietly()


def test_waits_alive_and_not_ready_for_a_first_promotion(
    kafka_broker: Any, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """A registry with nothing promoted: the worker serves its probes (alive, not ready), consumes
    nothing, and starts on the version promoted later; every event produced meanwhile is scored once."""
    bootstrap = kafka_broker.bootstrap_servers
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(tiny_model.path)
    topics = Topics.unique(bootstrap)
    events = _phase([*tiny_model.normal_events, *tiny_model.attack_events], "w", 300)
    ends = produce(bootstrap, topics.input, events_bytes(events))
    worker = RegistryWorker(
        registry.storage.local_path("LIVE").parent, bootstrap, topics, env={"WORKER_RELOAD_INTERVAL_S": "0.2"}
    )
    try:
        wait_for(lambda: worker.status("/healthz") == 200, 30, "liveness while waiting")
        assert worker.status("/readyz") == 503
        wait_for(lambda: "waiting_for_live_model" in worker.log(), 10, "the wait logged")
        assert worker.process.poll() is None
        assert committed_offsets(bootstrap, topics.group, topics.input, ends) == {p: 0 for p in ends}
        assert worker.metric("kestrel_events_total") == 0
        registry.promote(tiny_model.version, "first model")
        wait_for(lambda: worker.status("/readyz") == 200, 60, "ready after the promotion")
        assert worker.model_info() == {tiny_model.version}
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 60, "all committed")
        assert worker.metric("kestrel_events_total") == len(events)
        assert worker.terminate() == 0
    finally:
        worker.stop_quietly()


def test_stops_cleanly_while_waiting_for_a_first_promotion(tmp_path: Path) -> None:
    """SIGTERM before any version is live, in an empty registry directory (a new volume): a clean
    stop (exit 0, ``worker_stopped``), no broker needed."""
    (tmp_path / "registry").mkdir()
    topics = Topics("in", "out", "dlq", "g")
    worker = RegistryWorker(tmp_path / "registry", "127.0.0.1:1", topics)
    try:
        wait_for(lambda: worker.status("/healthz") == 200, 30, "liveness while waiting")
        assert worker.status("/readyz") == 503
        assert worker.terminate(15) == 0
        stopped = [line for line in worker.log().splitlines() if "worker_stopped" in line]
        assert len(stopped) == 1 and "SIGTERM" in stopped[0], worker.log()
    finally:
        worker.stop_quietly()
