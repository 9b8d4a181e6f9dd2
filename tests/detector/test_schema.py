"""Feature spec validation, spec files, and the inference rules."""

from __future__ import annotations

import json
import math
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from detector.errors import SpecError
from detector.schema import FeatureSpec
from detector.spec_inference import infer_spec
from training.data import iter_records

NSL_KDD = Path(__file__).resolve().parents[2] / "data" / "nsl-kdd" / "KDDTrain+_20Percent.csv.gz"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"numeric": ["a", "b"], "categorical": ["a"]}, "more than once: a"),
        ({"numeric": ["a", "a"]}, "more than once: a"),
        ({"numeric": ["a"], "categorical": ["c"], "log_scale": ["c"]}, "log_scale fields must be numeric: c"),
        ({"numeric": ["a"], "log_scale": ["zz"]}, "log_scale fields must be numeric: zz"),
        ({"numeric": ["a"], "optional": ["q"]}, "optional fields must be features: q"),
        ({"numeric": ["a"], "id_field": "a"}, "id_field 'a' cannot also be a feature"),
        ({"numeric": ["a"], "categorical": ["t"], "timestamp_field": "t"}, "timestamp_field 't'"),
        ({"numeric": ["a"], "label_field": "a"}, "label_field 'a'"),
        ({}, "names no numeric or categorical feature"),
        ({"numeric": [], "categorical": []}, "names no numeric or categorical feature"),
        ({"numeric": ["a"], "spec_version": 99}, "unsupported spec_version"),
        ({"numeric": ["a"], "colour": "red"}, "Extra inputs"),
    ],
)
def test_invalid_specs_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureSpec.model_validate(kwargs)


def test_valid_spec_orders_features_numeric_first_and_is_frozen() -> None:
    spec = FeatureSpec(numeric=["n"], categorical=["c"], optional=["c"], id_field="id", label_field="kind")
    assert spec.features == ["n", "c"]
    with pytest.raises(ValidationError):
        spec.numeric = ["x"]


def test_from_json_file_round_trip(tmp_path: Path) -> None:
    spec = FeatureSpec(numeric=["a", "b"], categorical=["c"], log_scale=["b"], optional=["a"], id_field="id")
    path = tmp_path / "spec.json"
    path.write_text(spec.model_dump_json(), encoding="utf-8")
    assert FeatureSpec.from_json_file(path) == spec


def test_from_json_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        FeatureSpec.from_json_file(tmp_path / "absent.json")


def test_from_json_file_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text('{"numeric": ["a",', encoding="utf-8")
    with pytest.raises(SpecError, match="not valid JSON"):
        FeatureSpec.from_json_file(path)


@pytest.mark.parametrize(
    "raw", [b'{"numeric": ["a"], "n": ' + b"9" * 5000 + b"}", b"\xff\xfe{}"], ids=["huge-integer", "not-utf8"]
)
def test_from_json_file_that_python_cannot_read_is_a_spec_error(tmp_path: Path, raw: bytes) -> None:
    """Found in review: a ``ValueError`` (a traceback in the trainer's CLI) instead of a one-line error."""
    path = tmp_path / "spec.json"
    path.write_bytes(raw)
    with pytest.raises(SpecError, match=r"spec\.json is not (valid JSON|UTF-8)"):
        FeatureSpec.from_json_file(path)


def test_from_json_file_invalid_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"numeric": ["a"], "categorical": ["c"], "log_scale": ["c"]}), encoding="utf-8")
    with pytest.raises(SpecError, match=r"is invalid: .*log_scale fields must be numeric: c"):
        FeatureSpec.from_json_file(path)
    path.write_text(json.dumps({"numeric": "a"}), encoding="utf-8")
    with pytest.raises(SpecError, match="is invalid: numeric"):
        FeatureSpec.from_json_file(path)


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


def test_inference_numeric_categorical_optional_and_roles() -> None:
    records = [
        {"id": "1", "ts": 10, "kind": "web", "n": 1, "s": "3", "c": "tcp", "code": 1, "maybe": 2.5, "blank": 1},
        {"id": "2", "ts": 11, "kind": "db", "n": 2.5, "s": "4.5", "c": "udp", "code": "x", "maybe": None, "blank": ""},
        {"id": "3", "ts": 12, "kind": "web", "n": -3, "s": "-1", "c": "tcp", "code": 2, "blank": 3},
    ]
    spec = infer_spec(records, id_field="id", timestamp_field="ts", label_field="kind")
    assert spec.numeric == ["n", "s", "maybe", "blank"]
    assert spec.categorical == ["c", "code"]
    assert spec.optional == ["maybe", "blank"]
    assert (spec.id_field, spec.timestamp_field, spec.label_field) == ("id", "ts", "kind")


def test_inference_treats_bool_and_non_finite_values_as_categorical() -> None:
    records = [{"flag": True, "ratio": "nan", "n": 1}, {"flag": False, "ratio": "0.5", "n": 2}]
    spec = infer_spec(records)
    assert spec.numeric == ["n"]
    assert spec.categorical == ["flag", "ratio"]


def test_inference_of_plain_number_columns_leaves_non_finite_and_huge_values_to_the_exact_path() -> None:
    """All-number columns take a one-conversion path; NaN, infinity and ints beyond float range still fail it
    (a bare NaN or infinity is then refused by name, an integer beyond float range is a category code)."""
    records = [{"ok": 1, "huge": 10**400}, {"ok": 2.5, "huge": 3}]
    spec = infer_spec(records)
    assert spec.numeric == ["ok"]
    assert spec.categorical == ["huge"]
    for field, value in (("nan", math.nan), ("inf", math.inf)):
        with pytest.raises(SpecError, match=f"column '{field}' holds 1 bare {value!r} value"):
            infer_spec([{"ok": 1, field: value}, {"ok": 2.5, field: 1.0}])


def test_inference_reads_numeric_strings_as_the_worker_does() -> None:
    records = [{"s": "12", "t": "1e3"}, {"s": "-0.5", "t": "2E-1"}]
    assert infer_spec(records).numeric == ["s", "t"]


@pytest.mark.parametrize("spelling", [" 12", "12 ", "+12", "012", "1_2", "١٢"])
def test_inference_refuses_a_column_of_numbers_the_worker_would_refuse(spelling: str) -> None:
    """Made categorical, such a column would put every live (JSON-number) value in the unknown bucket."""
    records = [{"v": 3}, {"v": spelling}, {"v": 5}]
    with pytest.raises(SpecError, match=r"column 'v' holds numbers spelled in a way events may not use, e.g. row 2"):
        infer_spec(records)


def test_inference_keeps_a_column_of_words_and_numbers_categorical() -> None:
    assert infer_spec([{"v": "12"}, {"v": "tcp"}, {"v": " 7"}]).categorical == ["v"]


def test_inference_excludes_fields_and_fails_when_nothing_is_left() -> None:
    assert infer_spec([{"a": 1, "truth": "x"}], exclude=["truth"]).features == ["a"]
    with pytest.raises(SpecError, match="cannot infer a feature spec"):
        infer_spec([{"id": "1", "truth": "x"}], id_field="id", exclude=["truth"])


def test_heavy_tail_rule() -> None:
    def spec_of(values: list[float]) -> FeatureSpec:
        return infer_spec([{"v": v} for v in values])

    bulk = [float(i % 10) for i in range(200)]
    assert spec_of([*bulk, 10_000.0]).log_scale == ["v"]  # (10000+1)/(9+1) >= 50 and max >= 100
    assert spec_of([*bulk, 99.0]).log_scale == []  # max below 100
    assert spec_of([*bulk, 400.0]).log_scale == []  # ratio (401/10) below 50
    assert spec_of([*bulk, -5.0, 10_000.0]).log_scale == []  # negative values are never log-scaled
    assert spec_of([float(i) for i in range(1000)]).log_scale == []  # wide but not heavy-tailed


def test_heavy_tail_rule_on_nsl_kdd_normals() -> None:
    normals = [r for r in islice(iter_records(NSL_KDD), 25_192) if r["label"] == "normal"]
    spec = infer_spec(normals, exclude=["label", "difficulty"])
    assert {"duration", "src_bytes", "dst_bytes"} <= set(spec.log_scale)
    assert spec.categorical == ["protocol_type", "service", "flag"]
    assert "count" not in spec.log_scale and "same_srv_rate" not in spec.log_scale
    assert len(spec.features) == 41


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["a", "b", "c"]),
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
            min_size=1,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_inference_never_raises_anything_but_spec_error(records: list[dict[str, Any]]) -> None:
    try:
        spec = infer_spec(records)
    except SpecError:
        return
    assert set(spec.features) <= {"a", "b", "c"}
    assert set(spec.log_scale) <= set(spec.numeric)


def test_changes_from_names_what_an_event_stream_meets() -> None:
    old = FeatureSpec(numeric=["a", "b"], categorical=["c"], optional=["b"], id_field="id")
    assert old.changes_from(old) == []
    assert (
        FeatureSpec(numeric=["a", "b"], categorical=["c"], optional=["b", "a"], id_field="id").changes_from(old) == []
    )
    new = FeatureSpec(numeric=["a", "c", "d"], categorical=["b"], timestamp_field="ts", id_field="id")
    assert new.changes_from(old) == [
        "newly required: b, d",
        "numeric <-> categorical: b, c",
        "timestamp_field: None -> 'ts'",
    ]
    assert old.changes_from(new) == [
        "no longer features: d",
        "numeric <-> categorical: b, c",
        "timestamp_field: 'ts' -> None",
    ]
