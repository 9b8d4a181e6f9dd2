"""The live model's hand-over: an offered or polled model is served from the next update on, a
version already served is no swap, and the new model's drift window holds its own scores only."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from fakes import FakeSink, FakeSource
from prometheus_client import CollectorRegistry, generate_latest
from tiny_model import TinyModel

from worker.loop import WorkerLoop
from worker.loop_config import LoopConfig
from worker.metrics import HealthState, WorkerMetrics
from worker.model_loading import LoadedModel, load_model
from worker.model_slot import ModelSlot
from worker.outcomes import RawRecord


@pytest.fixture(scope="module")
def model(tiny_model: TinyModel) -> LoadedModel:
    return load_model(tiny_model.path)


def _version(model: LoadedModel, version: str) -> LoadedModel:
    return replace(model, detector=replace(model.detector, version=version))


def _reloads(metrics: WorkerMetrics) -> float:
    return float(metrics.model_reloads._value.get())


def test_an_offered_model_is_served_from_the_next_update_and_counted_once(model: LoadedModel) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    slot = ModelSlot(model, metrics)
    served = f'kestrel_model_info{{version="{model.detector.version}"}} 1.0'.encode()
    assert served in generate_latest(metrics.registry)  # described from the start
    newer = _version(model, "v-next")
    slot.offer(newer)
    assert slot.current is model  # not before the update between batches
    slot.apply_update()
    assert slot.current is newer and _reloads(metrics) == 1
    slot.apply_update()  # nothing new offered: nothing changes
    assert slot.current is newer and _reloads(metrics) == 1
    assert b'kestrel_model_info{version="v-next"} 1.0' in generate_latest(metrics.registry)


def test_a_model_of_the_version_served_is_no_swap(model: LoadedModel) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    slot = ModelSlot(model, metrics)
    slot.offer(_version(model, model.detector.version))
    slot.apply_update()
    assert slot.current is model and _reloads(metrics) == 0


def test_the_hook_is_asked_only_when_nothing_was_offered(model: LoadedModel) -> None:
    polled: list[int] = []
    from_hook = _version(model, "v-hook")

    def hook() -> LoadedModel | None:
        polled.append(1)
        return from_hook

    slot = ModelSlot(model, WorkerMetrics(CollectorRegistry()), hook)
    offered = _version(model, "v-offered")
    slot.offer(offered)
    slot.apply_update()
    assert slot.current is offered and polled == []
    slot.apply_update()
    assert slot.current is from_hook and polled == [1]


def test_a_batch_the_old_model_scored_stays_out_of_the_new_models_drift_window(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    """Found in review: with overlapping batches the swap came while a batch of the old model was
    in flight; finished after it, its scores filled the new model's fresh rolling window."""
    attacks = [RawRecord("in", 0, i, 0, None, orjson.dumps(e)) for i, e in enumerate(tiny_model.attack_events[:200])]
    normals = [
        RawRecord("in", 0, 200 + i, 0, None, orjson.dumps(e)) for i, e in enumerate(tiny_model.normal_events[:200])
    ]
    source, sink = FakeSource([], [attacks, normals]), FakeSink()
    metrics = WorkerMetrics(CollectorRegistry())
    config = LoopConfig("out", "dlq", batch_wait_ms=0, idle_poll_ms=1, lag_interval_s=0.0)
    loop = WorkerLoop(lambda revoked, assigned: source, sink, model, metrics, HealthState(), config)
    loop.run_once()  # the attacks, scored by the old model, their anomaly records in flight
    loop.swap_model(_version(model, "v-next"))
    loop.run_once()  # the swap, the old batch finished, then the normals scored by v-next
    loop.run_once()
    assert loop.model.detector.version == "v-next" and source.committed == {("in", 0): 400}
    flag_rate = metrics.registry.get_sample_value("kestrel_flag_rate")
    assert flag_rate is not None and flag_rate < 0.2  # v-next's normals only (the attacks: all flagged)
