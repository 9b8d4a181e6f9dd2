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

    def rule(fit: Fit, labelled: bool) -> Weights:
        options = allowed(cands, labelled)
        measured = {c: pseudo_auc(fit, c, kinds) for c in options}
        best = options[0]
        for c in options[1:]:
            if measured[c] > measured[best]:
                best = c
        return best

    return rule


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
        def mean(name: str, f: Callable[[Fit], float]) -> float:
            return float(np.mean([np.mean([f(fit) for fit in results[s][name]]) for s in seeds]))

        wide = np.array([mean(n, lambda fit, n=n: real(fit, rule(fit, n.endswith("_mc")))) for n in sa.WIDE])
        gaps = wide - np.array([mean(n, lambda fit: float(fit["nn_raw"])) for n in sa.WIDE])
        shared = np.mean([mean(n, lambda fit, n=n: real(fit, rule(fit, n.endswith("_mc")))) for n in sa.SHARED])
        nsl = mean("nsl-kdd", lambda fit: real(fit, rule(fit, False)))
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
