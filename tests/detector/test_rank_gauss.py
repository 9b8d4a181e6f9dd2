"""The rank-Gauss map of the score's third term (detector.rank_gauss, detector.input_neighbours.GaussTerm)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from detector.errors import ArtifactError
from detector.input_neighbours import GaussTerm, InputNeighbours
from detector.rank_gauss import RankGauss
from training.calibration import MAX_RANK_GAUSS_KNOTS, fit_input_terms, fit_rank_gauss


def gauss_term(x: np.ndarray, n_numeric: int, budget: int = 32768) -> GaussTerm:
    term = fit_input_terms(x, np.ones(len(x)), budget, 0, n_numeric)[1]
    assert term is not None
    return term


def test_training_values_map_to_their_mid_rank_normal_quantiles() -> None:
    col = np.array([[3.0], [1.0], [1.0], [10.0], [2.0]], dtype=np.float32)  # sorted: 1 1 2 3 10
    mapping = fit_rank_gauss(col)
    z = mapping.apply(np.array([[1.0], [2.0], [3.0], [10.0]], dtype=np.float32))[:, 0]
    inv = NormalDist().inv_cdf
    expected = [inv((1.0 + 0.5) / 6), inv((2.5 + 0.5) / 6), inv((3.5 + 0.5) / 6), inv((4.5 + 0.5) / 6)]
    np.testing.assert_allclose(z, expected, rtol=1e-5)


def test_the_map_is_monotone_linear_between_knots_and_continues_outside() -> None:
    rng = np.random.default_rng(0)
    train = rng.exponential(1.0, (3000, 1)).astype(np.float32)
    mapping = fit_rank_gauss(train)
    grid = np.linspace(-5, 40, 2000, dtype=np.float32)[:, None]
    z = mapping.apply(grid)[:, 0]
    assert np.all(np.diff(z) >= -1e-6)
    sd = float(train.std())
    top, low = float(train.max()), float(train.min())
    above = mapping.apply(np.array([[top], [top + 3 * sd]], dtype=np.float32))[:, 0]
    below = mapping.apply(np.array([[low], [low - 2 * sd]], dtype=np.float32))[:, 0]
    assert above[1] - above[0] == pytest.approx(3.0, rel=1e-4)  # three standard deviations further
    assert below[0] - below[1] == pytest.approx(2.0, rel=1e-4)
    # a skewed marginal comes out about standard normal
    fresh = mapping.apply(rng.exponential(1.0, (20000, 1)).astype(np.float32))[:, 0]
    assert abs(float(fresh.mean())) < 0.1 and abs(float(fresh.std()) - 1.0) < 0.1


def test_only_the_numeric_columns_are_mapped_and_knots_are_capped() -> None:
    rng = np.random.default_rng(1)
    x = np.c_[rng.normal(size=(3000, 2)), rng.integers(0, 2, (3000, 1))].astype(np.float32)
    mapping = fit_rank_gauss(x[:, :2])
    assert mapping.knots_x.shape == (2, MAX_RANK_GAUSS_KNOTS)
    out = mapping.apply(x)
    np.testing.assert_array_equal(out[:, 2], x[:, 2])  # the one-hot column passes through
    assert not np.allclose(out[:, :2], x[:, :2])


def test_a_constant_column_maps_to_one_value() -> None:
    mapping = fit_rank_gauss(np.full((50, 1), 4.0, dtype=np.float32))
    z = mapping.apply(np.array([[4.0], [5.0]], dtype=np.float32))[:, 0]
    assert z[1] - z[0] == pytest.approx(1.0)  # spread 1 for a constant column


def test_a_gauss_term_scales_a_typical_training_normal_to_about_one() -> None:
    rng = np.random.default_rng(2)
    x = rng.lognormal(0, 1, (800, 3)).astype(np.float32)
    term = gauss_term(x, 3)
    fresh = rng.lognormal(0, 1, (2000, 3)).astype(np.float32)
    assert 0.8 < float(np.median(term.distances(fresh) / term.scale)) < 1.25
    np.testing.assert_array_equal(term.points, term.mapping.apply(x))  # few rows: they are the points
    far = np.array([[50.0, 50.0, 50.0]], dtype=np.float32)
    assert term.distances(far)[0] / term.scale > 5


def test_on_many_rows_the_points_are_the_mapped_means_of_the_input_terms_cells() -> None:
    rng = np.random.default_rng(4)
    x = rng.lognormal(0, 1, (3000, 4)).astype(np.float32)
    view, term = fit_input_terms(x, np.ones(3000), 4 * 100, 0, n_numeric=4)
    assert view is not None and term is not None
    assert len(term.points) == len(view.points) == 100
    mapped = term.mapping.apply(x)
    owner = np.argmin(((x[:, None, :] - view.points[None]) ** 2).sum(-1), axis=1)
    # each rank-Gauss point is the mapped mean of (nearly) the rows nearest its input point
    first = np.flatnonzero(owner == owner[0])
    assert np.linalg.norm(mapped[first].mean(0) - term.points, axis=1).min() < 0.3
    assert 0.8 < float(np.median(term.distances(rng.lognormal(0, 1, (2000, 4)).astype(np.float32)) / term.scale)) < 1.3


def test_input_neighbours_add_the_gauss_term_to_the_score() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    term = gauss_term(x, 2)
    base = InputNeighbours(x[:64], 2.0, 1.5)
    view = base.with_terms(1.0, term)
    embedding = np.ones(5)
    rows = x[:5]
    expected = base.score(embedding, rows) + term.distances(rows) / term.scale
    np.testing.assert_allclose(view.score(embedding, rows), expected)
    assert view.with_embedding_weight(0.0).gauss is term


@pytest.mark.parametrize(
    ("knots_x", "knots_z", "spread"),
    [
        (np.zeros((2, 3)), np.zeros((2, 4)), np.ones(2)),  # shapes differ
        (np.array([[0.0, 2.0, 1.0]]), np.array([[0.0, 1.0, 2.0]]), np.ones(1)),  # decreasing
        (np.array([[0.0, 1.0]]), np.array([[0.0, np.nan]]), np.ones(1)),  # not finite
        (np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]]), np.zeros(1)),  # spread not positive
    ],
)
def test_bad_maps_are_refused(knots_x: np.ndarray, knots_z: np.ndarray, spread: np.ndarray) -> None:
    with pytest.raises(ArtifactError):
        RankGauss(knots_x, knots_z, spread)


def test_a_gauss_term_of_another_width_is_refused() -> None:
    mapping = RankGauss(np.array([[0.0, 1.0]]), np.array([[-1.0, 1.0]]), np.ones(1))
    term = GaussTerm(mapping, np.zeros((4, 3), dtype=np.float32), 1.0)
    with pytest.raises(ArtifactError, match="rank-Gauss term has 3 features"):
        InputNeighbours(np.zeros((4, 2), dtype=np.float32), 1.0, 1.0, 1.0, term)
    with pytest.raises(ArtifactError, match="scale"):
        GaussTerm(mapping, np.zeros((4, 3), dtype=np.float32), 0.0)
