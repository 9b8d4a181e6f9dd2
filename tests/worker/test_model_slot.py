"""The live model's hand-over: an offered or polled model is served from the next update on, a
version already served is no swap."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from tiny_model import TinyModel

from worker.metrics import WorkerMetrics
from worker.model_loading import LoadedModel, load_model
from worker.model_slot import ModelSlot


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
