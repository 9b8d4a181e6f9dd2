"""A whitened input space for the input term, measured with 1-NN (docs/quality.md; not a test).

    python benchmarks/whitened_input_ablation.py             # the 21 sets, seeds 0, 1, 2 (half a minute)
    python benchmarks/whitened_input_ablation.py wilt pima   # some of them

The input term is a nearest-neighbour distance in z-scores, which ignores how features vary
together; the embedding term is what sees broken dependence. Would a linear answer do: the
distance after whitening the z-scores by the training normals' covariance (a Mahalanobis-type
1-NN), shrunk towards a multiple of the identity by the Ledoit-Wolf formula (no constant to
choose; eigenvalues floored at 1e-6 of the largest)? Columns, on the protocol split of
``benchmarks/input_transform_ablation.py`` (each distance over the training normals' median
leave-one-out distance): ``standard`` (1-NN), ``whitened``, their sum, and the shuffle test of
``training.score_terms`` choosing between standard and the sum, or among all three (strictly
better, in that order).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import input_transform_ablation as ita
from benchmarks import quality as q
from training.evaluation.metrics import roc_auc
from training.score_terms import shuffled_columns

COLUMNS = [
    "standard",
    "whitened",
    "standard + whitened",
    "shuffle: standard or sum",
    "shuffle: standard, whitened or sum",
]


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf (2004) shrunk covariance of the centred rows ``x``."""
    n, p = x.shape
    s = x.T @ x / n
    mu = float(np.trace(s)) / p
    d2 = float(((s - mu * np.eye(p)) ** 2).sum())
    sq = (x**2).sum(1)
    b2 = float((sq**2 - 2 * np.einsum("ij,jk,ik->i", x, s, x) + (s**2).sum()).sum()) / n**2
    shrink = min(b2, d2) / d2 if d2 > 0 else 1.0
    return shrink * mu * np.eye(p) + (1 - shrink) * s  # type: ignore[no-any-return]


def whitened(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = ita.standard(train, x)
    keep = a.std(0) > 1e-12
    a, b = a[:, keep], b[:, keep]
    values, vectors = np.linalg.eigh(ledoit_wolf(a - a.mean(0)))
    m = vectors / np.sqrt(np.maximum(values, 1e-6 * values.max()))
    return a @ m, b @ m


def set_aurocs(name: str) -> dict[str, float]:
    per: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for seed, split, train, held, evaluated, is_anomaly in ita.protocol_splits(name):
        held_x = split.x[held]
        shuffled = shuffled_columns(held_x.astype(np.float32), np.random.default_rng(seed)).astype(held_x.dtype)
        is_shuffled = np.r_[np.zeros(len(held_x), bool), np.ones(len(shuffled), bool)]
        scores, test = {}, {}
        for k, t in (("standard", ita.standard), ("whitened", whitened)):
            both = ita.scaled_nn_as_is(split.x[train], np.r_[split.x[evaluated], held_x, shuffled], t)
            scores[k], test[k] = both[: len(evaluated)], both[len(evaluated) :]
        scores["standard + whitened"] = scores["standard"] + scores["whitened"]
        test["standard + whitened"] = test["standard"] + test["whitened"]
        auroc = {k: roc_auc(v, is_shuffled) for k, v in test.items()}
        two = "standard + whitened" if auroc["standard + whitened"] > auroc["standard"] else "standard"
        three = "standard"
        for k in ("whitened", "standard + whitened"):
            three = k if auroc[k] > auroc[three] else three
        scores["shuffle: standard or sum"], scores["shuffle: standard, whitened or sum"] = scores[two], scores[three]
        for column in COLUMNS:
            per[column].append(roc_auc(scores[column], is_anomaly))
    return {c: float(np.mean(v)) for c, v in per.items()}


def main() -> None:
    ita.print_table(sys.argv[1:] or [*q.BASELINES, *q.WIDE_BASELINES], COLUMNS, "standard", set_aurocs)


if __name__ == "__main__":
    main()
