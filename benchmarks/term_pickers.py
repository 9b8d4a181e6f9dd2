"""Other ways to pick the score's terms from the training normals, measured against the rule in use.

    python benchmarks/term_pickers.py --seeds 0 1 2                       # fit, save, summarise
    python benchmarks/term_pickers.py --seeds 0 1 2 --neighbour-encoder   # + a second encoder
    python benchmarks/term_pickers.py --seeds 0 1 2 --summary-only        # summarise saved terms

Per set and seed, the fit of ``benchmarks/score_terms_ablation.py`` (10% holdout,
``cross_fit_below=0``, one thread), then every row's three terms, each divided by its scale
(embedding, input-space, rank-Gauss; ``score_terms_ablation.candidate_terms``) for the test rows,
the held-out normals and pseudo-anomalies made from them: five independent column shuffles,
``sub0.3``, ``noise0.5`` and ``noise1``. They are saved under ``--out`` (one ``.npz`` per set, seed
and held-out class), and the rules below are then scored on them without refitting:

* the rule in use (``training.score_terms``): four candidates in order of preference, a later one
  kept only when its shuffled-row AUROC is strictly higher;
* the same test averaged over five shuffles, or over several kinds of pseudo-anomaly;
* the "one standard error" rule: the simplest candidate (fewest terms first) whose shuffled-row
  AUROC is within ``z`` DeLong standard errors of the best one's (paired, same rows), z = 1 and 2;
* nine candidates instead of four (embedding weight 0, 1/2 or 1 and rank-Gauss weight 0, 1/2 or 1);
* the same order of preference with another measure of the shuffled rows: their recall at the
  calibration normals' 1% or 5% threshold (the operating points, not the whole ROC curve), or a
  later candidate kept only when it wins on both halves of the rows (odd and even);
* no pick: the mean of the four candidates' ranks among the calibration normals (a rank ensemble);
* with ``--neighbour-encoder``: a second encoder per fit, trained with the neighbour term
  (``neighbour_weight=1``), whose embedding term gives two more candidates (input + its
  embedding term, with and without rank-Gauss);
* and, for reference, each candidate always and the hindsight best.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality as q
from benchmarks import score_terms_ablation as sa
from training.evaluation.metrics import roc_auc

SHUFFLES = [f"shuffle{r}" for r in range(5)]
OTHER_KINDS = ["sub0.3", "noise0.5", "noise1"]
Weights = tuple[float, ...]  # on (embedding, rank-Gauss[, neighbour-encoder embedding]); input always 1
FOUR: list[Weights] = [(1, 0), (0, 0), (1, 1), (0, 1)]  # the rule's candidates, in its order
NAMES = {(1, 0): "sum", (0, 0): "input", (1, 1): "sum+gauss", (0, 1): "input+gauss"}
Fit = dict[str, Any]
Rule = Callable[[Fit, bool], Weights]
Scorer = Callable[[Fit, bool], np.ndarray]  # the test rows' scores


def dump_measure(
    det: Any, x_train: np.ndarray, x_ev: np.ndarray, is_anom: np.ndarray, x_cal: np.ndarray, seed: int
) -> dict[str, Any]:
    terms = sa.candidate_terms(det, x_train, seed)
    rng = np.random.default_rng(seed)
    out = {"ev": terms(x_ev), "anom": is_anom, "cal": terms(x_cal)}
    for kind in SHUFFLES:
        out[f"ps_{kind}"] = terms(sa.pseudo(x_cal, "shuffle", rng))
    for kind in OTHER_KINDS:
        out[f"ps_{kind}"] = terms(sa.pseudo(x_cal, kind, rng))
    return out


def dump(seed: int, names: Sequence[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        start = time.perf_counter()
        if name == "nsl-kdd":
            fits = [sa.run_nsl(seed, dump_measure)]
        else:
            fits = [sa.run_set(name, seed, c, dump_measure) for c in q.HELD_OUT.get(name, [None])[:2]]
        for i, fit in enumerate(fits):
            np.savez(folder / f"{name}_{i}.npz", **{k: np.asarray(v) for k, v in fit.items()})
        print(name, seed, f"{time.perf_counter() - start:.0f}s", flush=True)


def load(folder: Path, second: Path | None) -> dict[str, list[Fit]]:
    """Saved fits per set; with ``second``, the second encoder's embedding term as a fourth column."""
    out: dict[str, list[Fit]] = {}
    for path in sorted(folder.glob("*.npz")):
        fit = dict(np.load(path, allow_pickle=False))
        if second is not None:
            other = dict(np.load(second / path.name, allow_pickle=False))
            for key in [k for k in fit if k == "ev" or k == "cal" or k.startswith("ps_")]:
                fit[key] = np.c_[fit[key], other[key][:, 0]]
        out.setdefault(path.stem.rsplit("_", 1)[0], []).append(fit)
    return out


def score(terms: np.ndarray, w: Weights) -> np.ndarray:
    out = w[0] * terms[:, 0] + terms[:, 1] + w[1] * terms[:, 2]
    return out + w[2] * terms[:, 3] if len(w) > 2 else out


def real(fit: Fit, w: Weights) -> float:
    return roc_auc(score(fit["ev"], w), fit["anom"])


def pseudo_auc(fit: Fit, w: Weights, kinds: Sequence[str]) -> float:
    normals = score(fit["cal"], w)
    labels = np.r_[np.zeros(len(normals), bool), np.ones(len(normals), bool)]
    return float(np.mean([roc_auc(np.r_[normals, score(fit[f"ps_{k}"], w)], labels) for k in kinds]))


def allowed(cands: Sequence[Weights], labelled: bool) -> list[Weights]:
    return [c for c in cands if not (labelled and c[0] == 0 and (len(c) < 3 or c[2] == 0))]


def strictly_better(cands: Sequence[Weights], kinds: Sequence[str]) -> Rule:
    """The rule in use, on these candidates and pseudo-anomaly kinds."""
    return preferred(cands, lambda fit, c: pseudo_auc(fit, c, kinds))


def preferred(cands: Sequence[Weights], measure: Callable[[Fit, Weights], float]) -> Rule:
    """Candidates in order of preference, a later one kept only when ``measure`` is strictly higher."""

    def rule(fit: Fit, labelled: bool) -> Weights:
        options = allowed(cands, labelled)
        measured = {c: measure(fit, c) for c in options}
        best = options[0]
        for c in options[1:]:
            if measured[c] > measured[best]:
                best = c
        return best

    return rule


def pseudo_recall(fit: Fit, w: Weights, fpr: float) -> float:
    """The share of shuffled rows above the calibration normals' ``1 - fpr`` quantile."""
    threshold = np.quantile(score(fit["cal"], w), 1.0 - fpr)
    return float((score(fit["ps_shuffle0"], w) > threshold).mean())


def both_halves(cands: Sequence[Weights]) -> Rule:
    """The rule in use, a later candidate kept only when it wins on the odd rows and on the even ones."""

    def auc(fit: Fit, w: Weights, half: slice) -> float:
        normals, shuffled = score(fit["cal"][half], w), score(fit["ps_shuffle0"][half], w)
        return roc_auc(np.r_[normals, shuffled], np.r_[np.zeros(len(normals), bool), np.ones(len(shuffled), bool)])

    def rule(fit: Fit, labelled: bool) -> Weights:
        options = allowed(cands, labelled)
        best = options[0]
        for c in options[1:]:
            if all(auc(fit, c, h) > auc(fit, best, h) for h in (slice(0, None, 2), slice(1, None, 2))):
                best = c
        return best

    return rule


def rank_ensemble(cands: Sequence[Weights]) -> Scorer:
    """No pick: each test row's mean rank among the calibration normals over the candidates."""

    def scorer(fit: Fit, labelled: bool) -> np.ndarray:
        options = allowed(cands, labelled)
        ranks = [np.searchsorted(np.sort(score(fit["cal"], c)), score(fit["ev"], c), side="right") for c in options]
        return np.asarray(np.mean([r / len(fit["cal"]) for r in ranks], axis=0), dtype=float)

    return scorer


def midranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    _, first, counts = np.unique(a[order], return_index=True, return_counts=True)
    out = np.empty(len(a))
    out[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return out


def delong(normals: list[np.ndarray], anomalies: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of several scores of the same rows and their covariance (DeLong et al., 1988)."""
    m, n = len(anomalies[0]), len(normals[0])
    v10, v01 = np.empty((len(normals), m)), np.empty((len(normals), n))
    for i, (neg, pos) in enumerate(zip(normals, anomalies, strict=True)):
        both = midranks(np.r_[pos, neg])
        v10[i] = (both[:m] - midranks(pos)) / n
        v01[i] = 1.0 - (both[m:] - midranks(neg)) / m
    return v10.mean(1), np.atleast_2d(np.cov(v10) / m + np.cov(v01) / n)


def one_standard_error(z: float) -> Rule:
    """The simplest candidate within ``z`` paired standard errors of the best (shuffle test)."""
    by_terms = [(0, 0), (1, 0), (0, 1), (1, 1)]  # one term, two, two, three

    def rule(fit: Fit, labelled: bool) -> Weights:
        options = allowed(by_terms, labelled)
        auc, cov = delong([score(fit["cal"], c) for c in options], [score(fit["ps_shuffle0"], c) for c in options])
        b = int(np.argmax(auc))
        for i, c in enumerate(options):
            if auc[b] - auc[i] <= z * np.sqrt(max(cov[i, i] + cov[b, b] - 2 * cov[i, b], 0.0)):
                return c
        return options[b]

    return rule


def summarise(results: dict[int, dict[str, list[Fit]]], neighbour: bool) -> None:
    seeds = sorted(results)

    def line(label: str, rule: Rule) -> None:
        scored(label, lambda fit, labelled: score(fit["ev"], rule(fit, labelled)))

    def scored(label: str, scorer: Scorer) -> None:
        def mean(name: str, f: Callable[[Fit], float]) -> float:
            return float(np.mean([np.mean([f(fit) for fit in results[s][name]]) for s in seeds]))

        def auc(name: str) -> float:
            return mean(name, lambda fit: roc_auc(scorer(fit, name.endswith("_mc")), fit["anom"]))

        wide = np.array([auc(n) for n in sa.WIDE])
        gaps = wide - np.array([mean(n, lambda fit: float(fit["nn_raw"])) for n in sa.WIDE])
        shared = np.mean([auc(n) for n in sa.SHARED])
        nsl = auc("nsl-kdd")
        worst = sa.WIDE[int(np.argmin(gaps))]
        print(
            f"{label:44s} wide {wide.mean():.4f}  >= 1-NN {int((gaps >= -0.0005).sum())}/16  "
            f"worst {gaps.min():+.3f} ({worst})  shared {shared:.4f}  nsl-kdd {nsl:.3f}"
        )

    print(f"seeds {seeds}, mean AUROC:")
    for w in FOUR:
        line(f"{NAMES[w]} (always)", lambda fit, lab, w=w: w)
    line("hindsight: best of the four", lambda fit, lab: max(FOUR, key=lambda c: real(fit, c)))
    line("in use: strictly better on one shuffle", strictly_better(FOUR, SHUFFLES[:1]))
    line("mean of five shuffles", strictly_better(FOUR, SHUFFLES))
    line("mean of shuffle and sub0.3", strictly_better(FOUR, [SHUFFLES[0], "sub0.3"]))
    line("mean of shuffle, sub0.3, noise0.5, noise1", strictly_better(FOUR, [SHUFFLES[0], *OTHER_KINDS]))
    for z in (1.0, 2.0):
        line(f"one standard error, z = {z:g}", one_standard_error(z))
    nine: list[Weights] = [*FOUR, *[(e, g) for e in (0, 0.5, 1) for g in (0, 0.5, 1) if (e, g) not in FOUR]]
    line("nine weightings, strictly better", strictly_better(nine, SHUFFLES[:1]))
    line("hindsight: best of the nine", lambda fit, lab: max(nine, key=lambda c: real(fit, c)))
    for fpr in (0.01, 0.05):
        line(f"shuffled rows' recall at {fpr:.0%} FPR", preferred(FOUR, lambda fit, c, f=fpr: pseudo_recall(fit, c, f)))
    line("strictly better on both halves", both_halves(FOUR))
    scored("rank ensemble of the four", rank_ensemble(FOUR))
    if neighbour:
        six: list[Weights] = [(*w, 0) for w in FOUR] + [(0, 0, 1), (0, 1, 1)]
        line("+ neighbour encoder, strictly better", strictly_better(six, SHUFFLES[:1]))
        line("hindsight: best of the six", lambda fit, lab: max(six, key=lambda c: real(fit, c)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[*sa.SHARED, *sa.WIDE, "nsl-kdd"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/term_pickers"))
    parser.add_argument("--neighbour-encoder", action="store_true", help="also fit with neighbour_weight=1")
    parser.add_argument("--summary-only", action="store_true", help="only summarise the terms under --out")
    args = parser.parse_args()
    q.FIT_OVERRIDES["cross_fit_below"] = 0
    q.TRAIN_OVERRIDES["threads"] = 1
    for seed in [] if args.summary_only else args.seeds:
        dump(seed, args.names, args.out / f"s{seed}")
        if args.neighbour_encoder:
            q.TRAIN_OVERRIDES["neighbour_weight"] = 1.0
            dump(seed, args.names, args.out / "neighbour" / f"s{seed}")
            del q.TRAIN_OVERRIDES["neighbour_weight"]
    results = {
        s: load(args.out / f"s{s}", args.out / "neighbour" / f"s{s}" if args.neighbour_encoder else None)
        for s in args.seeds
    }
    if all(n in results[s] for s in args.seeds for n in [*sa.SHARED, *sa.WIDE, "nsl-kdd"]):
        summarise(results, args.neighbour_encoder)


if __name__ == "__main__":
    main()
