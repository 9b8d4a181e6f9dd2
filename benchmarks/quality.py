"""Detection quality on the real protocols (prints a Markdown table; not a test).

    python benchmarks/quality.py                 # NSL-KDD + the five benchmark sets, 3 seeds
    python benchmarks/quality.py --suite wide    # the 16 one-class sets of data/benchmarks/wide
    python benchmarks/quality.py --suite all     # both
    python benchmarks/quality.py --only nsl-kdd  # one part
    python benchmarks/quality.py --quick         # seed 0 only, fewer held-out classes

NSL-KDD: train on the normal rows of KDDTrain+_20Percent (10% of them held out to calibrate),
test on all of KDDTest+. Benchmark sets (data/benchmarks/README.md): per class 60% train, 10%
calibration, 30% test normals; test = test normals + all anomalies; seeds 0, 1, 2; for the
multi-class sets every listed held-out class in turn. Thresholds: 99th and 95th percentile of
the calibration normals' scores (target FPR 1% and 5%). "raw centroid" = distance to the
nearest class mean in the standardised raw feature space; "1-NN (run)" = distance to the nearest
training normal in the standardised raw feature space (standardised on the training normals),
computed in the same run on the same split: the simplest strong baseline the detector must beat.
Every fit goes through :func:`training.fit.fit_detector`, the function behind ``python -m training fit``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.scorer import threshold_at_fpr  # noqa: E402
from detector.spec_inference import infer_spec  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import load_records, split_by_truth  # noqa: E402
from training.evaluation.metrics import average_precision, roc_auc  # noqa: E402
from training.fit import FitConfig, fit_detector, split_calibration  # noqa: E402

DATA = ROOT / "data"
TRAIN_OVERRIDES: dict[str, Any] = {}
FIT_OVERRIDES: dict[str, Any] = {}
HELD_OUT = {"pendigits_mc": [0, 2, 4, 6, 8], "digits_mc": list(range(10))}
BASELINES = {  # from data/benchmarks/README.md: best baseline, 1-NN
    "cardio": (0.975, 0.952),
    "thyroid": (0.992, 0.982),
    "satellite": (0.884, 0.884),
    "pendigits_mc": (0.981, 0.980),
    "digits_mc": (0.941, 0.941),
}
WIDE_BASELINES = {  # from data/benchmarks/wide/README.md: best baseline, 1-NN (mean of seeds 0, 1, 2)
    "breastw": (0.996, 0.991),
    "fault": (0.823, 0.823),
    "ionosphere": (0.976, 0.969),
    "magic_gamma": (0.842, 0.841),
    "mnist": (0.948, 0.948),
    "musk": (1.000, 1.000),
    "optdigits": (0.978, 0.975),
    "pageblocks": (0.967, 0.944),
    "pima": (0.723, 0.704),
    "spambase": (0.862, 0.862),
    "stamps": (0.964, 0.964),
    "vowels": (0.991, 0.991),
    "waveform": (0.770, 0.761),
    "wdbc": (0.998, 0.994),
    "wilt": (0.735, 0.727),
    "yeast": (0.518, 0.473),
}


def operating_points(cal: np.ndarray, test: np.ndarray, is_anomaly: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {"auroc": roc_auc(test, is_anomaly), "auprc": average_precision(test, is_anomaly)}
    for fpr in (0.01, 0.05):
        thr = threshold_at_fpr(cal, fpr)
        out[f"recall@{fpr}"] = float((test[is_anomaly] > thr).mean())
        out[f"fpr@{fpr}"] = float((test[~is_anomaly] > thr).mean())
    return out


def raw_centroid_scores(x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    mean, std = x_train.mean(0), x_train.std(0)
    std[std < 1e-12] = 1.0
    means = np.stack([((x_train[y_train == c] - mean) / std).mean(0) for c in np.unique(y_train)])
    z = (x - mean) / std
    return np.sqrt(((z[:, None, :] - means[None]) ** 2).sum(-1)).min(1)


def nearest_normal_scores(x_train: np.ndarray, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """1-NN baseline: Euclidean distance to the nearest training normal, features standardised on train."""
    mean, std = x_train.mean(0), x_train.std(0)
    std[std < 1e-12] = 1.0
    a = ((x_train - mean) / std).astype(np.float64)
    a_sq = (a**2).sum(1)
    out = np.empty(len(x))
    for lo in range(0, len(x), chunk):
        b = (x[lo : lo + chunk] - mean) / std
        sq = (b**2).sum(1)[:, None] + a_sq[None] - 2.0 * b @ a.T
        out[lo : lo + chunk] = np.sqrt(np.maximum(sq.min(1), 0.0))
    return out


def fit_config(seed: int, cal_fraction: float, fpr: float) -> FitConfig:
    """The fit settings of the benchmark (defaults plus any ``--set`` overrides)."""
    train = TrainConfig.model_validate(TRAIN_OVERRIDES | {"seed": seed, "progress": False})
    return FitConfig.model_validate(
        FIT_OVERRIDES | {"target_fpr": fpr, "calibration_fraction": cal_fraction, "train": train}
    )


def run_fit(records: list[dict[str, Any]], label: str | None, seed: int, cal_fraction: float, fpr: float):
    return fit_detector(records, infer_spec(records, label_field=label), fit_config(seed, cal_fraction, fpr))


def nsl_kdd_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[bool]]:
    """KDDTrain+_20Percent's normal rows, and KDDTest+'s rows with their attack flags (truth removed)."""
    train = load_records(DATA / "nsl-kdd" / "KDDTrain+_20Percent.csv.gz")
    test = load_records(DATA / "nsl-kdd" / "KDDTest+.csv.gz")
    for r in train + test:
        r.pop("difficulty")
    train_rows, train_flags = split_by_truth(train, "label", "normal")
    test_rows, test_flags = split_by_truth(test, "label", "normal")
    normals = [r for r, a in zip(train_rows, train_flags, strict=True) if not a]
    return normals, test_rows, list(test_flags)


def nsl_kdd(seed: int) -> dict[str, float]:
    normals, test_rows, test_flags = nsl_kdd_rows()
    start = time.perf_counter()
    result = run_fit(normals, None, seed, 0.1, 0.05)
    seconds = time.perf_counter() - start
    det = result.detector
    cal = det.scorer.calibration_scores
    test_scores = det.score_records(test_rows, top=0).scores
    return (
        operating_points(cal, test_scores, np.asarray(test_flags))
        | {
            "train_seconds": seconds,
            "epochs": float(result.history.summary()["epochs_run"]),  # type: ignore[arg-type]
        }
        | structure_fields(result.history.cluster_structure)
        | terms_fields(result.metadata)
    )


def split_normals(y: np.ndarray, normal_mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: 70% train+calibration, 30% test (fit_detector takes 1/7 of the 70% to calibrate)."""
    rng = np.random.default_rng(seed)
    fit, test = [], []
    for c in np.unique(y[normal_mask]):
        idx = rng.permutation(np.flatnonzero(normal_mask & (y == c)))
        n_test = round(len(idx) * 0.3)
        test.append(idx[:n_test])
        fit.append(idx[n_test:])
    return np.concatenate(fit), np.concatenate(test)


@dataclass(frozen=True)
class SetSplit:
    """One benchmark set under the protocol: rows as records, the fit part and the test part."""

    x: np.ndarray
    y: np.ndarray
    records: list[dict[str, Any]]
    fit_records: list[dict[str, Any]]
    label: str | None
    fit_idx: np.ndarray
    test_idx: np.ndarray
    anomalies: np.ndarray


def load_split(name: str, seed: int, held_out: int | None) -> SetSplit:
    """Load ``name`` and split its normals (``held_out``: the class that plays the anomalies)."""
    folder = DATA / "benchmarks" / ("wide" if name in WIDE_BASELINES else "")
    data = np.load(folder / f"{name}.npz", allow_pickle=False)
    x = data["X"].astype(np.float64)
    if held_out is None:
        y = np.zeros(len(x), dtype=int)
        normal = data["y"] == 0
    else:
        y = data["y_class"].astype(int)
        normal = y != held_out
    fit_idx, test_idx = split_normals(y, normal, seed)
    label = None if held_out is None else "class"
    records = [{f"f{j}": float(v) for j, v in enumerate(row)} for row in x]
    fit_records = [records[i] | ({"class": str(y[i])} if label else {}) for i in fit_idx]
    return SetSplit(x, y, records, fit_records, label, fit_idx, test_idx, np.flatnonzero(~normal))


def benchmark_set(name: str, seed: int, held_out: int | None) -> dict[str, float]:
    split = load_split(name, seed, held_out)
    x, y, records, fit_records, label = split.x, split.y, split.records, split.fit_records, split.label
    fit_idx, test_idx, anomalies = split.fit_idx, split.test_idx, split.anomalies
    start = time.perf_counter()
    result = run_fit(fit_records, label, seed, 1 / 7, 0.05)
    seconds = time.perf_counter() - start
    det = result.detector
    eval_idx = np.concatenate([test_idx, anomalies])
    is_anomaly = np.r_[np.zeros(len(test_idx), bool), np.ones(len(anomalies), bool)]
    scores = det.score_records([records[i] for i in eval_idx], top=0).scores
    out = operating_points(det.scorer.calibration_scores, scores, is_anomaly)
    raw = raw_centroid_scores(x[fit_idx], y[fit_idx], x[eval_idx])
    out["raw_centroid_auroc"] = roc_auc(raw, is_anomaly)
    # 1-NN trains on the protocol's 60% (the same split fit_detector makes), not on the calibration rows.
    labels = [str(y[i]) for i in fit_idx] if label else None
    train_part = fit_idx[split_calibration(labels, len(fit_idx), 1 / 7, seed)[0]]
    out["nn_auroc"] = roc_auc(nearest_normal_scores(x[train_part], x[eval_idx]), is_anomaly)
    out["fit_seconds"] = seconds
    return out | structure_fields(result.history.cluster_structure) | terms_fields(result.metadata)


def terms_fields(metadata: dict[str, Any]) -> dict[str, float]:
    """Which of the score's optional terms the fit kept (1/0; averaged over seeds: the share of fits)."""
    terms = metadata["training"].get("score_terms") or {}
    return {
        "embedding_kept": float(terms.get("embedding_weight", 1.0)),
        "gauss_kept": float(terms.get("gauss_weight", 0.0)),
    }


def structure_fields(structure: dict[str, Any] | None) -> dict[str, float]:
    """The unlabelled-data decision of a fit (absent when labels or a fixed objective skip the test):
    ``clustered`` 1/0 and the best silhouette of the cluster-structure test (``nan`` when no k counted)."""
    if structure is None:
        return {}
    silhouettes = structure.get("silhouettes") or {}
    return {
        "clustered": float(bool(structure.get("clustered"))),
        "best_silhouette": max(silhouettes.values()) if silhouettes else float("nan"),
    }


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def set_row(name: str, r: dict[str, float], baselines: tuple[float, float]) -> str:
    best, nn = baselines
    return (
        f"| {name} | {r['auroc']:.3f} | {r['auprc']:.3f} | {r['recall@0.01']:.3f} ({r['fpr@0.01']:.3f}) | "
        f"{r['recall@0.05']:.3f} ({r['fpr@0.05']:.3f}) | {r['fit_seconds']:.1f} | {r['raw_centroid_auroc']:.3f} | "
        f"{r['nn_auroc']:.3f} | {nn:.3f} | {best:.3f} | {r['embedding_kept']:.2f} / {r['gauss_kept']:.2f} |"
    )


def summary_line(results: dict[str, dict[str, float]]) -> str:
    """Mean AUROC, sets at least as good as the in-run 1-NN, worst gap to it."""
    gaps = {name: r["auroc"] - r["nn_auroc"] for name, r in results.items()}
    worst = min(gaps, key=gaps.__getitem__)
    mean = np.mean([r["auroc"] for r in results.values()])
    mean_nn = np.mean([r["nn_auroc"] for r in results.values()])
    wins = sum(g >= 0 for g in gaps.values())
    return (
        f"mean AUROC {mean:.3f} (1-NN {mean_nn:.3f}) over {len(results)} sets; >= 1-NN on {wins}/{len(results)}; "
        f"worst gap to 1-NN {gaps[worst]:+.3f} ({worst})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["shared", "wide", "all"], default="shared")
    parser.add_argument("--only", choices=["nsl-kdd", "sets", *BASELINES, *WIDE_BASELINES], default=None)
    parser.add_argument("--quick", action="store_true", help="seed 0 only, two held-out classes")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a TrainConfig/FitConfig field, e.g. --set unlabelled_positives='\"one_class\"'",
    )
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        target = TRAIN_OVERRIDES if key in TrainConfig.model_fields else FIT_OVERRIDES
        target[key] = json.loads(value)
    seeds = [0] if args.quick else [0, 1, 2]
    results: dict[str, Any] = {}
    shared = args.suite in ("shared", "all")
    if shared and args.only in (None, "nsl-kdd"):
        results["nsl-kdd"] = mean_of([nsl_kdd(s) for s in seeds])
        r = results["nsl-kdd"]
        print(
            f"NSL-KDD (seeds {seeds}): AUROC {r['auroc']:.3f}  AUPRC {r['auprc']:.3f}  "
            f"recall@1% {r['recall@0.01']:.3f} (test FPR {r['fpr@0.01']:.3f})  "
            f"recall@5% {r['recall@0.05']:.3f} (test FPR {r['fpr@0.05']:.3f})  train {r['train_seconds']:.1f} s  "
            f"embedding / rank-Gauss term kept {r['embedding_kept']:.2f} / {r['gauss_kept']:.2f}",
            flush=True,
        )
    tables = [(BASELINES, shared), (WIDE_BASELINES, args.suite in ("wide", "all"))]
    for baselines, wanted in tables:
        names = [n for n in baselines if wanted and args.only in (None, "sets", n)]
        if not names:
            continue
        print(
            "\n| set | AUROC | AUPRC | recall@1% (FPR) | recall@5% (FPR) | fit s | raw centroid | 1-NN (run) "
            "| 1-NN (README) | best baseline (README) | embedding / rank-Gauss kept |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        suite: dict[str, dict[str, float]] = {}
        for name in names:
            classes = HELD_OUT.get(name, [None])
            if args.quick:
                classes = classes[:2]
            suite[name] = mean_of([benchmark_set(name, s, c) for s in seeds for c in classes])
            print(set_row(name, suite[name], baselines[name]), flush=True)
        results.update(suite)
        print("\n" + summary_line(suite), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
