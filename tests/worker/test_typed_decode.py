"""Typed decode (the streaming fast path): accepts a subset of the exact path and reads it identically."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.features import Featurizer
from detector.schema import FeatureSpec
from worker.typed_decode import TypedDecoder

# Field names that are not Python identifiers or that clash with the generated attribute names.
SPEC = FeatureSpec(
    numeric=["x", "src-bytes", "opt", "f0"],
    categorical=["class", "code"],
    log_scale=["src-bytes"],
    optional=["opt", "code"],
    id_field="id",
    timestamp_field="ts",
)
_DROP = object()


def _event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "e1",
        "ts": 1_700_000_000.5,
        "x": 1.5,
        "src-bytes": 300,
        "opt": 2.0,
        "f0": -4,
        "class": "tcp",
        "code": "a",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not _DROP}


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    rng = np.random.default_rng(0)
    rows = [
        _event(x=float(rng.normal()), **{"src-bytes": int(rng.integers(0, 5000))}, f0=int(rng.integers(-5, 5)),
               **{"class": ["tcp", "udp"][i % 2]}, code=["a", "b", None][i % 3], opt=[1.0, None][i % 2])
        for i in range(50)
    ]  # fmt: skip
    return Featurizer(SPEC).fit(rows)


def _decode(*events: Any) -> Any:
    return TypedDecoder(SPEC).decode_batch([e if isinstance(e, bytes) else json.dumps(e).encode() for e in events])


def test_valid_events_decode_to_the_exact_paths_features(featurizer: Featurizer) -> None:
    events = [_event(), _event(opt=None, code=None), _event(opt=_DROP, code=_DROP), _event(**{"class": "icmp"})]
    batch = _decode(*events)
    assert batch.failed == []
    exact, errors = featurizer.transform_valid(events)
    assert not errors
    np.testing.assert_array_equal(featurizer.transform_columns(batch.numeric, batch.categorical), exact)
    assert np.isnan(batch.numeric[1:3, 2]).all() and batch.categorical[1][1:3] == (None, None)
    assert batch.timestamps == [1_700_000_000.5] * 4


@pytest.mark.parametrize(
    "value",
    [
        orjson.dumps(_event(x=True)),  # a bool is not a number
        orjson.dumps(_event(x="1.5")),  # numeric strings: exact path (it accepts them)
        orjson.dumps(_event(code=7)),  # integer category codes: exact path (it accepts them)
        orjson.dumps(_event(x=_DROP)),  # missing required field
        orjson.dumps(_event(x=None)),  # null in a required field
        orjson.dumps(_event(**{"class": ["tcp"]})),
        orjson.dumps(_event()).replace(b'"x":1.5', b'"x":1e400'),
        orjson.dumps(_event()).replace(b'"x":1.5', b'"x":' + b"9" * 400),
        orjson.dumps(_event()).replace(b'"x":1.5', b'"x":NaN'),
        orjson.dumps(_event()).replace(b'"tcp"', b'"\\ud800"'),  # lone surrogate
        orjson.dumps(_event()).replace(b'"tcp"', b'"\xff"'),  # not UTF-8
        orjson.dumps(_event()).replace(b'"id"', b'"deep":' + b"[" * 5000 + b"]" * 5000 + b',"id"'),
        orjson.dumps(_event()) + b"x",
        b"\xef\xbb\xbf" + orjson.dumps(_event()),  # BOM
        b"[1, 2]",
        b"",
        orjson.dumps(_event(extra=1)),  # a field the spec does not name: msgspec would skip it unchecked
        orjson.dumps(_event(id={"a": 1})),  # ids, timestamps and labels are JSON scalars here
        orjson.dumps(_event()).replace(b'"ts":1700000000.5', b'"ts":1' + b"0" * 400),
    ],
)
def test_anything_unusual_is_left_to_the_exact_path(value: bytes) -> None:
    batch = _decode(_event(), value, _event(x=2.5))
    assert batch.failed == [1]
    assert batch.numeric[:, 0].tolist() == [1.5, 2.5] and batch.categorical[0] == ("tcp", "tcp")


def test_a_missing_value_is_left_to_the_exact_path() -> None:
    batch = TypedDecoder(SPEC).decode_batch([None, orjson.dumps(_event())])
    assert batch.failed == [0] and batch.numeric.shape == (1, 4)


def test_duplicate_keys_read_as_orjson_does(featurizer: Featurizer) -> None:
    value = orjson.dumps(_event()).replace(b'"x":1.5', b'"x":1.5,"x":2.5')
    batch = _decode(value)
    assert batch.failed == []
    exact, _ = featurizer.transform_valid([orjson.loads(value)])
    np.testing.assert_array_equal(featurizer.transform_columns(batch.numeric, batch.categorical), exact)


@pytest.mark.parametrize("name", ['a"b', "back\\slash", "tab\there", "nul\x00"])
def test_field_names_msgspec_cannot_match_send_everything_to_the_exact_path(name: str) -> None:
    decoder = TypedDecoder(FeatureSpec(numeric=[name, "y"]))
    assert not decoder.enabled
    assert decoder.decode_batch([orjson.dumps({name: 1, "y": 2}), None]).failed == [0, 1]


def test_a_spec_without_timestamp_field() -> None:
    spec = FeatureSpec(numeric=["x"], categorical=["c"])
    batch = TypedDecoder(spec).decode_batch([b'{"x": 3, "c": "a"}', b'{"x": 3, "c": "a", "ts": 5}'])
    assert batch.failed == [1] and batch.timestamps == [None] and batch.numeric.tolist() == [[3.0]]


_member = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"1e400", b"-1e309", b"1" + b"0" * 400, b"\xff", b"[" * 1100 + b"]" * 1100, b"1e-400", b"-0"]),
    st.text(max_size=6).map(lambda t: json.dumps(t, ensure_ascii=False).encode()),
)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([b"extra", b"ts", b"id", b"x", b"class"]), _member, st.binary(max_size=3))
def test_whatever_the_fast_path_accepts_orjson_and_the_exact_path_accept(
    featurizer: Featurizer, key: bytes, member: bytes, raw: bytes
) -> None:
    """Raw bytes (not UTF-8, out-of-range numbers, deep nesting, ...) in a member's value."""
    value = orjson.dumps(_event()).replace(b'"id":"e1"', b'"' + key + b'":' + member + raw + b',"id":"e1"')
    batch = _decode(value)
    if batch.failed == []:
        event = orjson.loads(value)  # raises if orjson refuses what the fast path took
        exact, errors = featurizer.transform_valid([event])
        assert not errors
        np.testing.assert_array_equal(featurizer.transform_columns(batch.numeric, batch.categorical), exact)


_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=False, allow_infinity=False)
)
_any_value = st.one_of(
    _numbers, st.booleans(), st.none(), st.text(max_size=5), st.sampled_from(["1.5", "", "tcp", "udp"]), st.just(_DROP)
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"x": _any_value, "src-bytes": _numbers, "opt": _any_value, "f0": _numbers,
             "class": st.one_of(st.sampled_from(["tcp", "udp", "new"]), _any_value), "code": _any_value}
        ),
        min_size=1, max_size=6,
    )
)  # fmt: skip
def test_fast_path_accepts_a_subset_of_the_exact_path_with_identical_features(
    featurizer: Featurizer, overrides: list[dict[str, Any]]
) -> None:
    events = [_event(**o) for o in overrides]
    batch = _decode(*events)
    exact, errors = featurizer.transform_valid([orjson.loads(json.dumps(e)) for e in events])
    plain = [
        type(e.get("x")) in (int, float) and type(e.get("class")) is str
        and type(e.get("opt", None)) in (int, float, type(None)) and type(e.get("code", None)) in (str, type(None))
        for e in events
    ]  # fmt: skip
    # Every value of the expected JSON type: the fast path takes it; and only then.
    assert batch.failed == [i for i, ok in enumerate(plain) if not ok]
    decoded = [i for i, ok in enumerate(plain) if ok]
    assert not set(decoded) & set(errors)  # what the fast path takes, the exact path accepts...
    np.testing.assert_array_equal(
        featurizer.transform_columns(batch.numeric, batch.categorical), exact[decoded]
    )  # ...and reads alike


def test_a_batch_whose_first_values_are_mostly_refused_is_left_whole_to_the_exact_path() -> None:
    good, extra = orjson.dumps(_event()), orjson.dumps(_event(src_ip="10.0.0.1"))
    mostly_extra = TypedDecoder(SPEC).decode_batch([extra] * 5 + [good] * 45)
    assert mostly_extra.failed == list(range(50)) and len(mostly_extra.numeric) == 0
    late = TypedDecoder(SPEC).decode_batch([good] * 10 + [extra] * 40)  # the probe passed: value by value
    assert late.failed == list(range(10, 50)) and len(late.numeric) == 10
    short = TypedDecoder(SPEC).decode_batch([extra] * 5 + [good] * 5)  # too short to probe
    assert short.failed == list(range(5)) and len(short.numeric) == 5


def test_refusals_resume_in_place_and_empty_values_do_not_trip_the_probe() -> None:
    good, extra = orjson.dumps(_event()), orjson.dumps(_event(src_ip="10.0.0.1"))
    values: list[bytes | None] = [None, b"", None, b"", None, good, good, good] + [extra, good] * 20
    batch = TypedDecoder(SPEC).decode_batch(values)
    assert batch.failed == [0, 1, 2, 3, 4, *range(8, 48, 2)]
    assert len(batch.numeric) == 3 + 20
