"""Exact binomial tail and Clopper-Pearson interval against known values."""

from __future__ import annotations

import math

import pytest

from training.retrain.binomial import binomial_cdf, clopper_pearson, min_rows_to_judge


def test_cdf_matches_direct_sums() -> None:
    direct = sum(math.comb(10, i) * 0.3**i * 0.7 ** (10 - i) for i in range(4))
    assert binomial_cdf(3, 10, 0.3) == pytest.approx(direct, rel=1e-12)
    assert binomial_cdf(-1, 10, 0.3) == 0.0 and binomial_cdf(10, 10, 0.3) == 1.0
    assert binomial_cdf(0, 5, 0.0) == 1.0 and binomial_cdf(4, 5, 1.0) == 0.0


def test_clopper_pearson_known_values() -> None:
    assert clopper_pearson(0, 100, 0.95) == (0.0, pytest.approx(1 - 0.025 ** (1 / 100)))
    assert clopper_pearson(100, 100, 0.95) == (pytest.approx(0.025 ** (1 / 100)), 1.0)
    low, high = clopper_pearson(10, 100, 0.95)
    assert low == pytest.approx(0.04900, abs=1e-5) and high == pytest.approx(0.17622, abs=1e-5)


def test_clopper_pearson_tails_hold_the_stated_probability() -> None:
    low, high = clopper_pearson(16, 156, 0.9)
    assert 1 - binomial_cdf(15, 156, low) == pytest.approx(0.05, abs=1e-9)
    assert binomial_cdf(16, 156, high) == pytest.approx(0.05, abs=1e-9)


@pytest.mark.parametrize(("k", "n", "confidence"), [(-1, 10, 0.9), (11, 10, 0.9), (1, 0, 0.9), (1, 10, 1.0)])
def test_bad_arguments_are_value_errors(k: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        clopper_pearson(k, n, confidence)


def test_min_rows_to_judge_expects_ten_events() -> None:
    assert min_rows_to_judge(0.01) == 1000 and min_rows_to_judge(0.05) == 200 and min_rows_to_judge(0.003) == 3334
