"""Columns that look like an id or a timestamp are named (they would become features the worker requires);
crowded categorical columns; columns that are neither numeric nor categorical, with the file's rows named."""

from __future__ import annotations

import numpy as np
import pytest

from detector.errors import SpecError
from detector.features import Featurizer
from detector.schema import FeatureSpec
from detector.spec_inference import crowded_categorical_columns, infer_spec, likely_key_columns


def records(n: int) -> list[dict[str, object]]:
    return [
        {
            "uuid": f"e-{i * 7919 % 1000:04d}",  # distinct text
            "seq": 1000 + 3 * i,  # distinct whole numbers that only grow
            "epoch": 1_700_000_000.25 + (i * 37) % n,  # distinct Unix times, any order
            "bytes": float((i * 13) % 50),  # a real feature: repeats
            "amount": 10.0 + ((i * 7) % n) / 3,  # distinct but neither growing whole numbers nor times
            "proto": ["tcp", "udp"][i % 2],
        }
        for i in range(n)
    ]


def test_distinct_text_growing_counters_and_epoch_times_are_named() -> None:
    rows = records(100)
    assert likely_key_columns(rows, infer_spec(rows)) == ["seq", "epoch", "uuid"]


def test_named_roles_and_small_data_are_not_checked() -> None:
    rows = records(100)
    spec = infer_spec(rows, id_field="uuid", timestamp_field="epoch", exclude=["seq"])
    assert likely_key_columns(rows, spec) == []
    few = records(10)
    assert likely_key_columns(few, infer_spec(few)) == []


def test_a_mostly_distinct_category_counts() -> None:
    rows = [{"name": f"n{i if i % 50 else 0}", "x": float(i % 3)} for i in range(100)]
    spec = FeatureSpec(numeric=["x"], categorical=["name"])
    assert likely_key_columns(rows, spec) == ["name"]  # 97 distinct of 100


def test_the_share_of_distinct_values_is_taken_over_the_present_values_wherever_the_repeats_are() -> None:
    # 120 rows, 20 of them without the field: 100 present. Repeats first, then distinct values.
    def rows(repeats: int) -> list[dict[str, object]]:
        names = ["same"] * (repeats + 1) + [f"n{i}" for i in range(99 - repeats)]
        return [{"name": n, "x": float(i % 3)} for i, n in enumerate(names)] + [{"x": 0.0}] * 20

    spec = FeatureSpec(numeric=["x"], categorical=["name"])
    assert likely_key_columns(rows(5), spec) == ["name"]  # 95 distinct of 100 present
    assert likely_key_columns(rows(6), spec) == []  # 94 of 100


def test_crowded_categorical_columns_are_those_with_more_values_than_are_kept() -> None:
    records = [{"h": f"v{i}", "p": ["tcp", "udp"][i % 2], "x": float(i)} for i in range(300)]
    spec = FeatureSpec(numeric=["x"], categorical=["h", "p"])
    assert crowded_categorical_columns(records, spec, 256) == {"h": 300}
    assert crowded_categorical_columns(records, spec, 300) == {}


def test_text_among_numbers_that_are_not_whole_is_refused_with_both_kinds_named() -> None:
    """Found in review: inferred categorical, then refused at row 1 ("must be a string or integer
    code, got float"), pointing at a valid number instead of at the text."""
    records = [{"a": 0.5 + i} for i in range(95)] + [{"a": "n/a"} for _ in range(5)]
    with pytest.raises(SpecError, match=r"'a' mixes text \(5 value\(s\), e\.g\. row 96: 'n/a'\) .* row 1: 0\.5\)"):
        infer_spec(records)
    whole = [{"a": i} for i in range(95)] + [{"a": "n/a"} for _ in range(5)]
    assert infer_spec(whole).categorical == ["a"]  # whole numbers and text: category codes


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_bare_non_finite_json_value_is_refused_not_read_as_a_category(value: float) -> None:
    """Found in review: JSON Lines written by ``json.dumps`` hold ``NaN``; whole numbers with 10% of
    them were inferred categorical, and the next error ("must be a string or integer code, got
    float") named neither the value nor the cause."""
    records = [{"count": value if i % 10 == 0 else i % 7, "other": i % 3} for i in range(100)]
    with pytest.raises(SpecError, match=rf"'count' holds 10 bare {value!r} value\(s\), e\.g\. row 1: .*write null"):
        infer_spec(records)


def test_messages_name_the_rows_of_the_file_when_records_are_a_subset() -> None:
    records = [{"a": float(i)} for i in range(200)]
    records[150] = {"a": "n/a"}
    with pytest.raises(SpecError, match="row 151:"):
        infer_spec(records)
    with pytest.raises(SpecError, match="row 351:"):
        infer_spec(records, row_numbers=range(201, 401))


def test_numpy_number_columns_are_inferred_numeric_and_fit_like_python_numbers() -> None:
    """Rows of a NumPy array or a DataFrame's records hold NumPy scalars, not Python numbers."""
    rng = np.random.default_rng(0)
    python_rows = [{"a": int(i % 7), "b": float(rng.normal()), "c": int(i % 3)} for i in range(200)]
    numpy_rows = [{"a": np.int64(r["a"]), "b": np.float32(r["b"]), "c": np.int32(r["c"])} for r in python_rows]
    spec = infer_spec(numpy_rows)
    assert spec == infer_spec([{k: float(v) if k == "b" else v for k, v in r.items()} for r in numpy_rows])
    assert set(spec.numeric) == {"a", "b", "c"} and spec.categorical == []
    featurizer = Featurizer(spec).fit(python_rows)
    np.testing.assert_allclose(featurizer.transform(numpy_rows), featurizer.transform(python_rows), rtol=1e-6)
