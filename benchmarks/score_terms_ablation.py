"""Choosing the score's terms from the training normals: the ablation behind ``training.score_terms``.

    python benchmarks/score_terms_ablation.py --seeds 0 1 2          # all 21 sets and NSL-KDD
    python benchmarks/score_terms_ablation.py --seeds 0 optdigits    # some of them

Per set and seed, one fit with a 10% holdout (``cross_fit_below=0``), then, on the same fitted
model: the test AUROC of the candidate scores — the embedding term alone, the input-space term
alone, their sum, and the sum and the input term each with the rank-Gauss term added (that term
fitted on the model's featurized training rows exactly as the fit does,
``training.calibration.fit_input_terms``) — and the AUROC with which each tells the held-out normals
apart from pseudo-anomalies made from those same normals: ``shuffle`` (every column permuted on its
own, the rule's test), ``noise0.5`` / ``noise1`` (Gaussian noise of 0.5 / 1 standard deviation per
column), ``sub0.3`` (30% of a row's values taken from another row). Then, per kind, the suite
means when the candidate with the better pseudo-anomaly AUROC is kept — among input alone and sum
(the rule before the rank-Gauss term) and among all four (the rule now; labelled sets keep the
embedding term) — next to each candidate always, 1-NN and the hindsight pick.
Writes one JSON per set and seed under ``--out`` (default /tmp/score_terms).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality as q
from detector.encoder import embed
from training.calibration import fit_input_terms
from training.evaluation.metrics import roc_auc
from training.fit import split_calibration

KINDS = ["shuffle", "noise0.5", "noise1", "sub0.3"]
#: The rule's candidates, in its order of preference (training.score_terms.CANDIDATES).
TWO, FOUR = ["sum", "input"], ["sum", "input", "sum+gauss", "input+gauss"]
WIDE = list(q.WIDE_BASELINES)
SHARED = list(q.BASELINES)


def pseudo(x_cal: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    n, d = x_cal.shape
    sd = x_cal.std(0) + 1e-6
    if kind == "shuffle":
        return np.stack([rng.permutation(x_cal[:, j]) for j in range(d)], 1).astype(np.float32)
    if kind.startswith("noise"):
        return (x_cal + rng.normal(0, 1, x_cal.shape) * sd * float(kind[5:])).astype(np.float32)
    if kind.startswith("sub"):
        out, other = x_cal.copy(), x_cal[rng.permutation(n)]
        mask = rng.random(x_cal.shape) < float(kind[3:])
        out[mask] = other[mask]
        return out.astype(np.float32)
    raise ValueError(kind)


def candidate_terms(det: Any, x_train: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Featurized rows -> their ``(n, 3)`` terms, each divided by its scale (a typical normal: 1):
    the embedding term, the input-space term and the rank-Gauss term (fitted on the model's
    featurized training rows exactly as the fit does). A candidate score is a weighted sum of them."""
    sc = det.scorer
    view = sc.input_neighbours.with_terms(1.0, None)
    budget, n_numeric = q.fit_config(seed, 0.1, 0.05).input_budget, len(det.featurizer.spec.numeric)
    gauss = fit_input_terms(x_train, np.ones(len(x_train)), budget, seed, n_numeric)[1]
    assert gauss is not None, "a set with numeric fields"

    def terms(xf: np.ndarray) -> np.ndarray:
        e = sc.geometry.nearest(embed(det.encoder, xf)).score / view.embedding_scale
        return np.stack([e, view.distances(xf) / view.input_scale, gauss.distances(xf) / gauss.scale], 1)

    return terms


#: Each candidate's weights on (embedding, input, rank-Gauss) terms.
WEIGHTS = {
    "emb": (1.0, 0.0, 0.0),
    "input": (0.0, 1.0, 0.0),
    "sum": (1.0, 1.0, 0.0),
    "sum+gauss": (1.0, 1.0, 1.0),
    "input+gauss": (0.0, 1.0, 1.0),
}
TERMS = list(WEIGHTS)


def measure(
    det: Any, x_train: np.ndarray, x_ev: np.ndarray, is_anom: np.ndarray, x_cal: np.ndarray, seed: int
) -> dict[str, float]:
    terms = candidate_terms(det, x_train, seed)
    ev, cal = terms(x_ev) @ np.array(list(WEIGHTS.values())).T, terms(x_cal) @ np.array(list(WEIGHTS.values())).T
    out = {f"real_{k}": roc_auc(ev[:, i], is_anom) for i, k in enumerate(WEIGHTS)}
    rng = np.random.default_rng(seed)
    lab = np.r_[np.zeros(len(x_cal), bool), np.ones(len(x_cal), bool)]
    for kind in KINDS:
        ps = terms(pseudo(x_cal, kind, rng)) @ np.array(list(WEIGHTS.values())).T
        out |= {f"ps_{kind}_{k}": roc_auc(np.r_[cal[:, i], ps[:, i]], lab) for i, k in enumerate(WEIGHTS)}
    return out


Measure = Callable[[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], dict[str, Any]]


def run_set(name: str, seed: int, held_out: int | None, measure_fn: Measure = measure) -> dict[str, Any]:
    split = q.load_split(name, seed, held_out)
    det = q.run_fit(split.fit_records, split.label, seed, 1 / 7, 0.05).detector
    labels = [str(split.y[i]) for i in split.fit_idx] if split.label else None
    tr_local, cal_local = split_calibration(labels, len(split.fit_idx), 1 / 7, seed)
    train_part, cal_part = split.fit_idx[tr_local], split.fit_idx[cal_local]
    eval_idx = np.concatenate([split.test_idx, split.anomalies])
    is_anom = np.r_[np.zeros(len(split.test_idx), bool), np.ones(len(split.anomalies), bool)]
    f = det.featurizer
    x_ev, x_cal = f.transform([split.records[i] for i in eval_idx]), f.transform([split.records[i] for i in cal_part])
    x_train = f.transform([split.records[i] for i in train_part])
    nn = roc_auc(q.nearest_normal_scores(split.x[train_part], split.x[eval_idx]), is_anom)
    return {"nn_raw": nn} | measure_fn(det, x_train, x_ev, is_anom, x_cal, seed)


def run_nsl(seed: int, measure_fn: Measure = measure) -> dict[str, Any]:
    normals, test_rows, test_flags = q.nsl_kdd_rows()
    det = q.run_fit(normals, None, seed, 0.1, 0.05).detector
    train_local, cal_local = split_calibration(None, len(normals), 0.1, seed)
    x_ev, x_cal = det.featurizer.transform(test_rows), det.featurizer.transform([normals[i] for i in cal_local])
    x_train = det.featurizer.transform([normals[i] for i in train_local])
    return {"nn_raw": float("nan")} | measure_fn(det, x_train, x_ev, np.asarray(test_flags), x_cal, seed)


def pick(r: dict[str, float], kind: str, labelled: bool, candidates: list[str]) -> str:
    """The rule: the first candidate, replaced only by a strictly better one (labelled: embedding kept)."""
    allowed = [c for c in candidates if not (labelled and c.startswith("input"))]
    best = allowed[0]
    for c in allowed[1:]:
        if r[f"ps_{kind}_{c}"] > r[f"ps_{kind}_{best}"]:
            best = c
    return best


def summarise(results: dict[int, dict[str, dict[str, float]]]) -> None:
    seeds = sorted(results)

    def mean(name: str, f: Any) -> float:
        return float(np.mean([f(results[s][name], name) for s in seeds]))

    def line(label: str, f: Any) -> None:
        wide = [mean(n, f) for n in WIDE]
        gaps = np.array(wide) - np.array([mean(n, lambda r, n: r["nn_raw"]) for n in WIDE])
        shared = [mean(n, f) for n in SHARED]
        nsl = mean("nsl-kdd", f) if all("nsl-kdd" in results[s] for s in seeds) else float("nan")
        print(
            f"{label:32s} wide {np.mean(wide):.4f}  >= 1-NN {int((gaps >= -0.0005).sum())}/16  "
            f"worst {gaps.min():+.3f}  shared {np.mean(shared):.4f}  nsl-kdd {nsl:.3f}"
        )

    print(f"seeds {seeds}, mean AUROC:")
    line("1-NN", lambda r, n: r["nn_raw"])
    for t in TERMS:
        line(f"{t} (always)", lambda r, n, t=t: r[f"real_{t}"])
    line("hindsight: emb, input or sum", lambda r, n: max(r[f"real_{t}"] for t in TERMS[:3]))
    line("hindsight: all five", lambda r, n: max(r[f"real_{t}"] for t in TERMS))
    for kind in KINDS:
        for label, cands in (("input | sum", TWO), ("all four", FOUR)):
            line(f"{kind}: {label}", lambda r, n, k=kind, c=cands: r[f"real_{pick(r, k, n.endswith('_mc'), c)}"])
        line(f"{kind}: input | sum, labelled too", lambda r, n, k=kind: r[f"real_{pick(r, k, False, TWO)}"])
    print("\nper set, mean of the seeds: 1-NN | each candidate | the rule (shuffle, all four) | its picks per seed")
    for name in [*SHARED, *WIDE, "nsl-kdd"]:
        rows = [results[s][name] for s in seeds if name in results[s]]
        if not rows:
            continue
        cells = " | ".join(f"{np.mean([r[f'real_{t}'] for r in rows]):.3f}" for t in TERMS)
        picks = [pick(r, "shuffle", name.endswith("_mc"), FOUR) for r in rows]
        chosen = np.mean([r[f"real_{p}"] for r, p in zip(rows, picks, strict=True)])
        nn = np.mean([r["nn_raw"] for r in rows])
        print(f"| {name} | {nn:.3f} | {cells} | {chosen:.3f} | {' / '.join(picks)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[*SHARED, *WIDE, "nsl-kdd"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/score_terms"))
    parser.add_argument("--summary-only", action="store_true", help="only summarise the JSON under --out")
    args = parser.parse_args()
    q.FIT_OVERRIDES["cross_fit_below"] = 0
    q.TRAIN_OVERRIDES["threads"] = 1
    for seed in [] if args.summary_only else args.seeds:
        (args.out / f"s{seed}").mkdir(parents=True, exist_ok=True)
        for name in args.names:
            start = time.perf_counter()
            if name == "nsl-kdd":
                r = run_nsl(seed)
            else:
                rows = [run_set(name, seed, c) for c in q.HELD_OUT.get(name, [None])[:2]]
                r = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
            (args.out / f"s{seed}" / f"{name}.json").write_text(json.dumps(r))
            print(name, seed, f"{time.perf_counter() - start:.0f}s", flush=True)
    found = {s: {p.stem: json.loads(p.read_text()) for p in (args.out / f"s{s}").glob("*.json")} for s in args.seeds}
    if all(n in found[s] for s in args.seeds for n in [*SHARED, *WIDE]):
        summarise(found)


if __name__ == "__main__":
    main()
