"""Per-feature transforms of the input space, measured with 1-NN (docs/quality.md; not a test).

    python benchmarks/input_transform_ablation.py             # the 21 sets, seeds 0, 1, 2 (1 minute)
    python benchmarks/input_transform_ablation.py wilt pima   # some of them
    python benchmarks/input_transform_ablation.py --detector  # as a third term of the detector's score
    python benchmarks/input_transform_ablation.py --scalings  # per-feature scales instead of z-scores (20 s)

The input-space term of the score is a nearest-neighbour distance in standardised features. Would
another per-feature transform, fitted on the training normals alone, make it better across the
sets? Three transforms, each scored by the distance to the nearest training normal (the split of
``benchmarks/quality.py``: 60% train, test normals and all anomalies):

* ``standard``: z-scores (the README's 1-NN baseline);
* ``rank_gauss``: each feature through the training normals' empirical CDF, then the normal
  quantile function (values outside the training range continue linearly, in standard deviations);
* ``yeo_johnson``: z-scores, then a Yeo-Johnson power transform per feature with its exponent
  fitted by maximum likelihood (grid -2..4), then z-scores again.

and the sums ``standard + X``, each distance divided by the median leave-one-out distance of the
training normals (as the detector scales its terms). Last column: ``standard`` or ``yeo_johnson``,
whichever gives the calibration normals (training data, not test) the higher log density in the raw
space (a 5-NN density in the transformed space plus the transform's log-Jacobian) — a choice made
from the training data alone. The last two: ``standard`` alone or with the transformed distance
added, whichever tells the calibration normals from column-shuffled copies of them better (the
detector's rule for its score's terms, ``training.score_terms``). Prints AUROC per set and the
suite means.

``--detector``: one fit per set with the defaults (seed 0; pendigits and digits: their first three
held-out classes; about 20 minutes), its score alone and with each transformed distance added as a
third term (scaled as above, so a typical normal scores about 1 on it as on the other two), and
1-NN; "≥ 1-NN" rows count sets at least at 1-NN.

``--scalings``: affine per-feature scales instead of z-scores, 1-NN without the re-standardisation
of the other modes (which would undo them): ``minmax`` (the training normals' range to [0, 1], as
many outlier-detection benchmarks scale), ``robust`` (median and interquartile range / 1.349; the
standard deviation where that range is 0), ``standard + minmax``, and the shuffle test choosing
between ``standard`` and ``minmax`` or ``standard + minmax`` (strictly better, in that order).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import NormalDist

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality as q
from training.calibration import leave_one_out_distances
from training.evaluation.metrics import roc_auc
from training.fit import split_calibration
from training.score_terms import shuffled_columns

Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
_INV_CDF = np.vectorize(NormalDist().inv_cdf)
_GRID = np.linspace(-2.0, 4.0, 61)


def standard(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std[std < 1e-12] = 1.0
    return (train - mean) / std, (x - mean) / std


def _gauss(col: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``v`` through the empirical CDF of the sorted training column ``col``, then the normal quantile."""
    n = len(col)
    rank = (np.searchsorted(col, v, "left") + np.searchsorted(col, v, "right")) / 2.0
    return _INV_CDF(np.clip((rank + 0.5) / (n + 1), 0.5 / (n + 1), 1 - 0.5 / (n + 1)))


def _rank_gauss_column(col: np.ndarray, v: np.ndarray) -> np.ndarray:
    """:func:`_gauss`, continued linearly (in standard deviations) outside the training range."""
    sd = float(col.std()) or 1.0
    low, high = _gauss(col, col[:1])[0], _gauss(col, col[-1:])[0]
    z = np.where(v > col[-1], high + (v - col[-1]) / sd, _gauss(col, v))
    return np.where(v < col[0], low - (col[0] - v) / sd, z)


def rank_gauss(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.empty_like(train), np.empty_like(x)
    for j in range(train.shape[1]):
        col = np.sort(train[:, j])
        a[:, j], b[:, j] = _rank_gauss_column(col, train[:, j]), _rank_gauss_column(col, x[:, j])
    keep = a.std(0) > 1e-12
    return a[:, keep], b[:, keep]


def _yeo_johnson(v: np.ndarray, lam: float) -> np.ndarray:
    out = np.empty_like(v)
    pos = v >= 0
    out[pos] = np.log1p(v[pos]) if abs(lam) < 1e-6 else ((v[pos] + 1) ** lam - 1) / lam
    neg = -v[~pos]
    out[~pos] = -np.log1p(neg) if abs(lam - 2) < 1e-6 else -((neg + 1) ** (2 - lam) - 1) / (2 - lam)
    return out


def _log_likelihood(v: np.ndarray, lam: float) -> float:
    var = float(_yeo_johnson(v, lam).var())
    if not np.isfinite(var) or var <= 0:
        return -np.inf
    return -len(v) / 2 * np.log(var) + (lam - 1) * float((np.sign(v) * np.log1p(np.abs(v))).sum())


def _yeo_johnson_fit(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both sets z-scored, power-transformed per feature (exponent by maximum likelihood on
    ``train``), z-scored again; and ``log |det J|`` of that map at each row of ``x``."""
    mean, std = train.mean(0), train.std(0)
    std[std < 1e-12] = 1.0
    train, x = (train - mean) / std, (x - mean) / std
    a, b = np.empty_like(train), np.empty_like(x)
    log_jacobian = np.full(len(x), -np.log(std).sum())
    with np.errstate(all="ignore"):
        for j in range(train.shape[1]):
            lam = float(_GRID[int(np.argmax([_log_likelihood(train[:, j], lam) for lam in _GRID]))])
            a[:, j], b[:, j] = _yeo_johnson(train[:, j], lam), _yeo_johnson(x[:, j], lam)
            v = x[:, j]
            log_jacobian += np.where(v >= 0, lam - 1, 1 - lam) * np.log1p(np.abs(v))
    mean2, std2 = a.mean(0), a.std(0)
    std2[std2 < 1e-12] = 1.0
    b = np.nan_to_num((b - mean2) / std2, nan=0.0, posinf=1e6, neginf=-1e6)
    return (a - mean2) / std2, b, log_jacobian - np.log(std2).sum()


def yeo_johnson(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b, _ = _yeo_johnson_fit(train, x)
    return a, b


def _standard_fit(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = standard(train, x)
    std = train.std(0)
    return a, b, np.full(len(x), -np.log(np.where(std < 1e-12, 1.0, std)).sum())


def held_out_log_density(
    fit: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    train: np.ndarray,
    held_out: np.ndarray,
    k: int = 5,
) -> float:
    """Mean log density of ``held_out`` rows in the raw space, up to a constant shared by the
    transforms: a k-NN density in the transformed space plus the map's log-Jacobian."""
    a, b, log_jacobian = fit(train, held_out)
    keep = a.std(0) > 1e-12
    a, b = a[:, keep], b[:, keep]
    d2 = np.maximum((b**2).sum(1)[:, None] + (a**2).sum(1)[None] - 2.0 * b @ a.T, 0.0)
    radius = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
    radius = np.maximum(radius, max(float(np.median(radius)) * 1e-3, 1e-12))  # duplicate rows
    return float(np.mean(-a.shape[1] * np.log(radius) + log_jacobian))


TRANSFORMS: dict[str, Transform] = {"standard": standard, "rank_gauss": rank_gauss, "yeo_johnson": yeo_johnson}
COLUMNS = [
    *TRANSFORMS,
    "standard + rank_gauss",
    "standard + yeo_johnson",
    "picked by likelihood",
    "standard, + rank_gauss if the shuffle test says",
    "standard, + yeo_johnson if the shuffle test says",
]


def scaled_nn(train: np.ndarray, x: np.ndarray, transform: Transform) -> np.ndarray:
    """Distance to the nearest training normal after ``transform``, over the training median LOO distance."""
    a, b = transform(train, x)
    a32 = a.astype(np.float32)
    loo = leave_one_out_distances(a32, a32, np.arange(len(a)))
    return q.nearest_normal_scores(a, b) / max(float(np.median(loo)), 1e-9)


def protocol_splits(name: str) -> Iterator[tuple[int, q.SetSplit, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each seed (0, 1, 2) and held-out class of the protocol: the split, its training and
    calibration rows (the fit's own split), the evaluated rows and which of them are anomalies."""
    for seed in (0, 1, 2):
        for held_out_class in q.HELD_OUT.get(name, [None]):
            split = q.load_split(name, seed, held_out_class)
            labels = [str(split.y[i]) for i in split.fit_idx] if split.label else None
            train_part, held_part = split_calibration(labels, len(split.fit_idx), 1 / 7, seed)
            evaluated = np.concatenate([split.test_idx, split.anomalies])
            is_anomaly = np.r_[np.zeros(len(split.test_idx), bool), np.ones(len(split.anomalies), bool)]
            yield seed, split, split.fit_idx[train_part], split.fit_idx[held_part], evaluated, is_anomaly


def set_aurocs(name: str) -> dict[str, float]:
    per: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for seed, split, train, held, evaluated, is_anomaly in protocol_splits(name):
        scores = {k: scaled_nn(split.x[train], split.x[evaluated], t) for k, t in TRANSFORMS.items()}
        scores["standard + rank_gauss"] = scores["standard"] + scores["rank_gauss"]
        scores["standard + yeo_johnson"] = scores["standard"] + scores["yeo_johnson"]
        # Training data only: the calibration normals' log density under each representation.
        gain = held_out_log_density(_yeo_johnson_fit, split.x[train], split.x[held]) - held_out_log_density(
            _standard_fit, split.x[train], split.x[held]
        )
        scores["picked by likelihood"] = scores["yeo_johnson" if gain > 0 else "standard"]
        # Training data only: which representation tells the calibration normals from
        # column-shuffled copies better (the detector's rule, training.score_terms).
        held_x = split.x[held]
        shuffled = shuffled_columns(held_x.astype(np.float32), np.random.default_rng(seed)).astype(held_x.dtype)
        both = np.r_[held_x, shuffled]
        is_shuffled = np.r_[np.zeros(len(held_x), bool), np.ones(len(shuffled), bool)]
        base = scaled_nn(split.x[train], both, standard)
        plain = roc_auc(base, is_shuffled)
        for transform in ("rank_gauss", "yeo_johnson"):
            added = roc_auc(base + scaled_nn(split.x[train], both, TRANSFORMS[transform]), is_shuffled)
            kept = f"standard + {transform}" if added > plain else "standard"
            scores[f"standard, + {transform} if the shuffle test says"] = scores[kept]
        for column in COLUMNS:
            per[column].append(roc_auc(scores[column], is_anomaly))
    return {c: float(np.mean(v)) for c, v in per.items()}


def minmax(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, span = train.min(0), np.ptp(train, 0)
    span[span < 1e-12] = 1.0
    return (train - low) / span, (x - low) / span


def robust(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q25, median, q75 = np.percentile(train, [25, 50, 75], axis=0)
    scale = np.where(q75 - q25 > 1e-12, (q75 - q25) / 1.349, train.std(0))
    scale[scale < 1e-12] = 1.0
    return (train - median) / scale, (x - median) / scale


SCALINGS: dict[str, Transform] = {"standard": standard, "minmax": minmax, "robust": robust}
SCALING_COLUMNS = [*SCALINGS, "standard + minmax", "standard or minmax, by the shuffle test",
                   "standard or standard + minmax, by the shuffle test"]  # fmt: skip


def scaled_nn_as_is(train: np.ndarray, x: np.ndarray, scaling: Transform) -> np.ndarray:
    """:func:`scaled_nn` without the re-standardisation: the distance in the scaled features."""
    a, b = (v.astype(np.float64) for v in scaling(train, x))
    a32 = a.astype(np.float32)
    loo = leave_one_out_distances(a32, a32, np.arange(len(a)))
    a_sq, out = (a**2).sum(1), np.empty(len(b))
    for lo in range(0, len(b), 2048):
        chunk = b[lo : lo + 2048]
        out[lo : lo + 2048] = np.sqrt(
            np.maximum(((chunk**2).sum(1)[:, None] + a_sq[None] - 2.0 * chunk @ a.T).min(1), 0.0)
        )
    return out / max(float(np.median(loo)), 1e-9)


def scaling_aurocs(name: str) -> dict[str, float]:
    """AUROC of 1-NN under each per-feature scaling (seeds 0, 1, 2, every held-out class)."""
    per: dict[str, list[float]] = {c: [] for c in SCALING_COLUMNS}
    for seed, split, train, held, evaluated, is_anomaly in protocol_splits(name):
        held_x = split.x[held]
        shuffled = shuffled_columns(held_x.astype(np.float32), np.random.default_rng(seed)).astype(held_x.dtype)
        is_shuffled = np.r_[np.zeros(len(held_x), bool), np.ones(len(shuffled), bool)]
        scores, test = {}, {}
        for k, t in SCALINGS.items():
            both = scaled_nn_as_is(split.x[train], np.r_[split.x[evaluated], held_x, shuffled], t)
            scores[k], test[k] = both[: len(evaluated)], both[len(evaluated) :]
        scores["standard + minmax"] = scores["standard"] + scores["minmax"]
        test["standard + minmax"] = test["standard"] + test["minmax"]
        shuffle_auroc = {k: roc_auc(v, is_shuffled) for k, v in test.items()}
        for other in ("minmax", "standard + minmax"):
            kept = other if shuffle_auroc[other] > shuffle_auroc["standard"] else "standard"
            column = f"standard or {other}, by the shuffle test"
            scores[column] = scores[kept]
        for column in SCALING_COLUMNS:
            per[column].append(roc_auc(scores[column], is_anomaly))
    return {c: float(np.mean(v)) for c, v in per.items()}


DETECTOR_COLUMNS = ["detector", "+ standard", "+ rank_gauss", "+ yeo_johnson", "1-NN"]


def detector_aurocs(name: str, seed: int = 0) -> dict[str, float]:
    """The default detector's AUROC, alone and with each transformed 1-NN distance as a third term."""
    per: dict[str, list[float]] = {c: [] for c in DETECTOR_COLUMNS}
    for held_out_class in q.HELD_OUT.get(name, [None])[:3]:
        split = q.load_split(name, seed, held_out_class)
        detector = q.run_fit(split.fit_records, split.label, seed, 1 / 7, 0.05).detector
        labels = [str(split.y[i]) for i in split.fit_idx] if split.label else None
        train = split.fit_idx[split_calibration(labels, len(split.fit_idx), 1 / 7, seed)[0]]
        evaluated = np.concatenate([split.test_idx, split.anomalies])
        is_anomaly = np.r_[np.zeros(len(split.test_idx), bool), np.ones(len(split.anomalies), bool)]
        score = detector.score_records([split.records[i] for i in evaluated], top=0).scores
        terms = {k: scaled_nn(split.x[train], split.x[evaluated], t) for k, t in TRANSFORMS.items()}
        per["detector"].append(roc_auc(score, is_anomaly))
        for k, term in terms.items():
            per[f"+ {k}"].append(roc_auc(score + term, is_anomaly))
        per["1-NN"].append(roc_auc(terms["standard"], is_anomaly))
    return {c: float(np.mean(v)) for c, v in per.items()}


def main() -> None:
    args = [a for a in sys.argv[1:] if a not in ("--detector", "--scalings")]
    detector, scalings = "--detector" in sys.argv[1:], "--scalings" in sys.argv[1:]
    names = args or [*q.BASELINES, *q.WIDE_BASELINES]
    columns, reference = (DETECTOR_COLUMNS, "1-NN") if detector else (COLUMNS, "standard")
    if scalings:
        columns = SCALING_COLUMNS
    measure = detector_aurocs if detector else scaling_aurocs if scalings else set_aurocs
    print_table(names, columns, reference, measure)


def print_table(
    names: list[str], columns: list[str], reference: str, measure: Callable[[str], dict[str, float]]
) -> None:
    """Per set a row of AUROCs (as measured), then per suite the means and the sets at least at ``reference``."""
    print("| set | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    results = {}
    for name in names:
        results[name] = measure(name)
        print(f"| {name} | " + " | ".join(f"{results[name][c]:.3f}" for c in columns) + " |", flush=True)
    for suite, members in (("5 shared", q.BASELINES), ("16 wide", q.WIDE_BASELINES)):
        inside = [n for n in names if n in members]
        if inside:
            means = " | ".join(f"{np.mean([results[n][c] for n in inside]):.4f}" for c in columns)
            at_least = " | ".join(
                str(sum(results[n][c] >= results[n][reference] - 1e-9 for n in inside)) for c in columns
            )
            print(f"| **mean of {suite}** | {means} |\n| **{suite} sets ≥ {reference}** | {at_least} |")


if __name__ == "__main__":
    main()
