"""Featurizer edge cases: unknown categories, missing fields, NaN/inf, wrong types, layout, state."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.errors import InvalidEventError, NotFittedError
from detector.features import MISSING_CATEGORY, UNKNOWN, Featurizer
from detector.schema import FeatureSpec

SPEC = FeatureSpec(
    numeric=["x", "size", "opt"],
    categorical=["proto", "code"],
    log_scale=["size"],
    optional=["opt", "code"],
    id_field="id",
)
FIELDS = ["x", "size", "opt", "proto", "code"]
_DROP = object()  # marks a field to leave out of a record


def training_records() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    for i in range(60):
        record: dict[str, Any] = {
            "id": f"e{i}",
            "x": float(rng.normal(10.0, 2.0)),
            "size": int(rng.integers(0, 10)) * 100 + (100_000 if i % 20 == 0 else 0),
            "proto": "tcp" if i % 3 else "udp",
            "code": 1 if i % 2 else 2,
        }
        if i % 4:
            record["opt"] = float(i)
        out.append(record)
    return out


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer(SPEC).fit(training_records())


def good(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": "z", "x": 10.0, "size": 300, "opt": 5.0, "proto": "tcp", "code": 1}
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not _DROP}


def column(feat: Featurizer, name: str) -> int:
    return feat.column_names.index(name)


def rejection(feat: Featurizer, record: dict[str, Any]) -> InvalidEventError:
    _, errors = feat.transform_valid([record])
    assert list(errors) == [0]
    return errors[0]


def test_layout_width_and_dtype(featurizer: Featurizer) -> None:
    names = featurizer.column_names
    assert names == [
        "x",
        "size",
        "opt",
        "opt:missing",
        "proto=tcp",
        "proto=udp",
        f"proto={UNKNOWN}",
        "code=1",
        "code=2",
        f"code={UNKNOWN}",
        f"code={MISSING_CATEGORY}",
    ]
    matrix = featurizer.transform([good(), good(proto="udp")])
    assert matrix.dtype == np.float32
    assert matrix.shape == (2, featurizer.n_features)
    assert featurizer.n_features == len(names) == len(featurizer.column_fields)


def test_unknown_category_goes_to_the_unknown_bucket(featurizer: Featurizer) -> None:
    row = featurizer.transform([good(proto="sctp", code=99)])[0]
    assert row[column(featurizer, f"proto={UNKNOWN}")] == 1.0
    assert row[column(featurizer, "proto=tcp")] == 0.0
    assert row[column(featurizer, f"code={UNKNOWN}")] == 1.0


def test_categorical_ints_and_bools_are_canonicalised(featurizer: Featurizer) -> None:
    as_int, as_float, as_text = featurizer.transform([good(code=2), good(code=2.0), good(code="2")])
    np.testing.assert_array_equal(as_int, as_float)
    np.testing.assert_array_equal(as_int, as_text)
    bools = Featurizer(FeatureSpec(numeric=["x"], categorical=["flag"])).fit(
        [{"x": 1, "flag": True}, {"x": 2, "flag": False}]
    )
    assert bools.vocab_ == {"flag": ["false", "true"]}
    np.testing.assert_array_equal(
        bools.transform([{"x": 1, "flag": True}]), bools.transform([{"x": 1, "flag": "true"}])
    )


def test_missing_required_field_is_rejected_naming_it(featurizer: Featurizer) -> None:
    for field in ("x", "size", "proto"):
        err = rejection(featurizer, good(**{field: _DROP}))
        assert (err.reason, err.field) == ("missing_field", field)
        assert field in str(err)
    err = rejection(featurizer, good(x=None))
    assert (err.reason, err.field) == ("missing_field", "x")


def test_missing_optional_numeric_is_imputed_with_an_indicator(featurizer: Featurizer) -> None:
    assert featurizer.median_ is not None and featurizer.center_ is not None and featurizer.scale_ is not None
    present, absent, null = featurizer.transform([good(), good(opt=_DROP), good(opt=None)])
    j, ind = column(featurizer, "opt"), column(featurizer, "opt:missing")
    assert present[ind] == 0.0
    assert absent[ind] == null[ind] == 1.0
    imputed = (featurizer.median_[2] - featurizer.center_[2]) / featurizer.scale_[2]
    assert absent[j] == pytest.approx(imputed, rel=1e-6)
    np.testing.assert_array_equal(absent, null)


def test_missing_optional_categorical_gets_its_own_bucket(featurizer: Featurizer) -> None:
    row = featurizer.transform([good(code=_DROP)])[0]
    assert row[column(featurizer, f"code={MISSING_CATEGORY}")] == 1.0
    assert row[column(featurizer, f"code={UNKNOWN}")] == 0.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf", "-Infinity"])
def test_nan_and_inf_are_rejected_as_not_finite(featurizer: Featurizer, value: Any) -> None:
    err = rejection(featurizer, good(size=value))
    assert (err.reason, err.field) == ("not_finite", "size")


@pytest.mark.parametrize(("field", "value"), [("x", True), ("x", [1.0]), ("x", {"v": 1}), ("x", "abc"), ("proto", [1])])
def test_wrong_types_are_rejected_naming_the_field(featurizer: Featurizer, field: str, value: Any) -> None:
    err = rejection(featurizer, good(**{field: value}))
    assert (err.reason, err.field) == ("wrong_type", field)
    assert field in str(err)


def test_numeric_strings_are_accepted(featurizer: Featurizer) -> None:
    np.testing.assert_array_equal(
        featurizer.transform([good(x="10.0", size="300")]), featurizer.transform([good(x=10.0, size=300)])
    )


def test_log_scaling_then_standardisation(featurizer: Featurizer) -> None:
    assert featurizer.center_ is not None and featurizer.scale_ is not None
    records = training_records()
    logged = np.log1p(np.array([r["size"] for r in records], dtype=np.float64))
    assert featurizer.center_[1] == pytest.approx(logged.mean())
    assert featurizer.scale_[1] == pytest.approx(logged.std())
    value = featurizer.transform([good(size=54_540)])[0, 1]
    assert value == pytest.approx((math.log1p(54_540) - logged.mean()) / logged.std(), rel=1e-5)


def test_transform_raises_on_the_first_bad_record(featurizer: Featurizer) -> None:
    with pytest.raises(InvalidEventError, match=r"^record 1: .*'size'") as info:
        featurizer.transform([good(), good(size="big"), good(x=None)])
    assert info.value.field == "size"


def test_transform_valid_sets_exactly_the_bad_rows_aside(featurizer: Featurizer) -> None:
    batch = [
        good(x=1.0),
        good(x="nan"),
        good(size=2000),
        good(proto=["tcp"]),
        good(opt=_DROP),
        good(x=True),
        good(code=3.5),
        good(proto="new"),
    ]
    matrix, errors = featurizer.transform_valid(batch)
    assert sorted(errors) == [1, 3, 5, 6]
    assert {i: (e.reason, e.field) for i, e in errors.items()} == {
        1: ("not_finite", "x"),
        3: ("wrong_type", "proto"),
        5: ("wrong_type", "x"),
        6: ("wrong_type", "code"),
    }
    good_rows = [0, 2, 4, 7]
    # The bad rows force the per-value slow path; the good rows alone take the vectorised fast path.
    np.testing.assert_array_equal(matrix[good_rows], featurizer.transform([batch[i] for i in good_rows]))


def test_state_round_trip_is_json(featurizer: Featurizer) -> None:
    state = json.loads(json.dumps(featurizer.to_state()))
    restored = Featurizer.from_state(SPEC, state)
    batch = [good(), good(proto="zzz", opt=None), good(code=_DROP, size="7")]
    np.testing.assert_array_equal(restored.transform(batch), featurizer.transform(batch))
    assert restored.column_names == featurizer.column_names


def test_from_state_rejects_a_mismatching_state(featurizer: Featurizer) -> None:
    state = featurizer.to_state()
    fewer_numeric = FeatureSpec(numeric=["x", "size"], categorical=["proto", "code"], optional=["code"])
    with pytest.raises(ValueError, match="numeric"):
        Featurizer.from_state(fewer_numeric, state)
    other_categorical = FeatureSpec(numeric=["x", "size", "opt"], categorical=["proto", "flag"])
    with pytest.raises(ValueError, match="vocabularies"):
        Featurizer.from_state(other_categorical, state)


def test_unfitted_featurizer_refuses_to_work() -> None:
    feat = Featurizer(SPEC)
    with pytest.raises(NotFittedError):
        feat.transform([good()])
    with pytest.raises(NotFittedError):
        feat.to_state()
    with pytest.raises(InvalidEventError):
        feat.fit([])


def test_fit_names_the_row_and_field_of_a_bad_training_value() -> None:
    records = training_records()
    records[7]["x"] = "oops"
    with pytest.raises(InvalidEventError, match=r"row 7: .*'x'") as info:
        Featurizer(SPEC).fit(records)
    assert (info.value.reason, info.value.field) == ("wrong_type", "x")


def test_fit_fast_path_matches_the_value_by_value_path() -> None:
    """Every field present and a finite number: one block read; the same statistics as parsing each value."""
    records = [r | {"opt": r.get("opt", 1.0)} for r in training_records()]  # every row has every field
    fast = Featurizer(SPEC).fit(records)
    spelled = [r | {"x": repr(r["x"])} if i == 0 else r for i, r in enumerate(records)]  # one string: slow path
    slow = Featurizer(SPEC).fit(spelled)
    for attribute in ("center_", "scale_", "median_"):
        np.testing.assert_array_equal(getattr(fast, attribute), getattr(slow, attribute))


def test_max_categories_sends_rare_values_to_unknown() -> None:
    records = [{"x": i, "c": "common"} for i in range(5)] + [{"x": 9, "c": "rare"}]
    feat = Featurizer(FeatureSpec(numeric=["x"], categorical=["c"]), max_categories=1).fit(records)
    assert feat.vocab_ == {"c": ["common"]}
    row = feat.transform([{"x": 1, "c": "rare"}])[0]
    assert row[feat.column_names.index(f"c={UNKNOWN}")] == 1.0


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=3), children, max_size=2),
    max_leaves=4,
)
maybe_value = st.one_of(st.just(_DROP), json_values, st.sampled_from(["nan", "1e999", "12", "tcp", "-3.5"]))
records_strategy = st.lists(st.fixed_dictionaries({f: maybe_value for f in FIELDS}), min_size=1, max_size=6)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=records_strategy)
def test_transform_valid_never_raises_and_accounts_for_every_record(
    featurizer: Featurizer, raw: list[dict[str, Any]]
) -> None:
    records = [{k: v for k, v in r.items() if v is not _DROP} for r in raw]
    matrix, errors = featurizer.transform_valid(records)
    assert matrix.shape == (len(records), featurizer.n_features)
    assert matrix.dtype == np.float32
    assert set(errors) <= set(range(len(records)))
    for i, record in enumerate(records):
        if i in errors:
            assert isinstance(errors[i], InvalidEventError)
            assert errors[i].field in FIELDS
        else:
            assert np.isfinite(matrix[i]).all()
            # Each good row equals the same record featurized on its own.
            np.testing.assert_array_equal(matrix[i], featurizer.transform([record])[0])


@pytest.mark.parametrize("scale", [1e200, 1e306])
def test_values_near_the_float_range_keep_their_column(scale: float) -> None:
    """Found in review: the standard deviation of values around 1e200 overflowed to inf, so every
    value of the column featurized as 0 (an absurd event read as typical); near 1e308 the centre
    overflowed too, and the features were NaN (the trainer then failed to write the model)."""
    feat = Featurizer(FeatureSpec(numeric=["x"])).fit([{"x": v * scale} for v in (1.0, 1.5, 2.0, 1.2)] * 25)
    assert feat.center_ is not None and feat.scale_ is not None and feat.median_ is not None
    assert np.isfinite(feat.center_).all() and np.isfinite(feat.scale_).all() and np.isfinite(feat.median_).all()
    assert feat.median_[0] == pytest.approx(1.35 * scale) and feat.center_[0] == pytest.approx(1.425 * scale)
    z = feat.transform([{"x": 1.0 * scale}, {"x": 2.0 * scale}, {"x": -1.7e308}, {"x": 1.7e308}])[:, 0]
    assert np.isfinite(z).all() and z[0] < 0 < z[1] and z[2] < z[0] and z[3] >= z[1]
    json.dumps(feat.to_state(), allow_nan=False)  # finite: the artifact's manifest can hold it
