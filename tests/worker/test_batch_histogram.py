"""The batch histogram exposes exactly what prometheus_client's Histogram would for the same values."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from worker.batch_histogram import BatchHistogram

BUCKETS = (0.005, 0.01, 0.1, 1.0, 2.5, 10.0)


def _series(registry: CollectorRegistry) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#") and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@given(
    st.lists(
        st.lists(st.floats(min_value=-5, max_value=50, allow_nan=False) | st.sampled_from(BUCKETS), max_size=20),
        max_size=5,
    )
)
def test_batches_give_the_series_of_one_observation_at_a_time(batches: list[list[float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch_histogram = BatchHistogram("h", "help", BUCKETS, ours)
    histogram = Histogram("h", "help", buckets=BUCKETS, registry=theirs)
    for batch in batches:
        batch_histogram.observe_many(np.array(batch, dtype=np.float64))
        for value in batch:
            histogram.observe(value)
    mine, reference = _series(ours), _series(theirs)
    assert mine.keys() == reference.keys()
    for name, value in reference.items():
        assert math.isclose(mine[name], value, rel_tol=1e-9, abs_tol=1e-9), name
    assert batch_histogram.count == sum(len(b) for b in batches)


def test_an_infinite_bound_is_not_doubled_and_empty_batches_change_nothing() -> None:
    registry = CollectorRegistry()
    histogram = BatchHistogram("h", "help", (1.0, math.inf), registry)
    histogram.observe_many(np.array([], dtype=np.float64))
    histogram.observe(3.0)
    series = _series(registry)
    assert series['h_bucket{le="1.0"}'] == 0 and series['h_bucket{le="+Inf"}'] == 1
    assert series["h_count"] == 1 and series["h_sum"] == 3.0 and histogram.sum == 3.0
