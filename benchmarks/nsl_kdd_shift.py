"""Does NSL-KDD's threshold miss its FPR because of calibration or because KDDTest+ normals drift?

    python benchmarks/nsl_kdd_shift.py            # seeds 0, 1, 2 (docs/quality.md, Calibration)

The quality benchmark trains on KDDTrain+_20Percent's normals and measures the realised FPR on
KDDTest+'s normals, which were recorded apart from the training ones. Here, per seed, 20% of the
training normals are first set aside at random; the detector is fitted as in the benchmark (the
trainer's defaults, 10% of the rest held out to calibrate: about 1,080 calibration normals) on the
other 80%. Printed per seed and as the mean: the realised FPR at the 1% and 5% targets on the
set-aside normals (exchangeable with the calibration normals: split-conformal says the FPR is at
most the target in expectation, and close to it) and on KDDTest+'s normals, and each AUROC of
KDDTest+ attacks against either kind of normal.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality as q
from detector.scorer import threshold_at_fpr
from training.evaluation.metrics import roc_auc

SET_ASIDE = 0.2


def run(seed: int) -> dict[str, float]:
    normals, test_rows, test_flags = q.nsl_kdd_rows()
    order = np.random.default_rng(seed).permutation(len(normals))
    n_aside = int(SET_ASIDE * len(normals))
    aside, fit_rows = [normals[i] for i in order[:n_aside]], [normals[i] for i in order[n_aside:]]
    det = q.run_fit(fit_rows, None, seed, 0.1, 0.05).detector
    cal = det.scorer.calibration_scores
    s_aside = det.score_records(aside, top=0).scores
    s_test = det.score_records(test_rows, top=0).scores
    flags = np.asarray(test_flags)
    s_attacks, s_test_normals = s_test[flags], s_test[~flags]
    out = {"n_calibration": float(len(cal)), "n_aside": float(n_aside), "n_test_normals": float(len(s_test_normals))}
    for target in (0.01, 0.05):
        thr = threshold_at_fpr(cal, target)
        out[f"fpr@{target} set-aside"] = float((s_aside > thr).mean())
        out[f"fpr@{target} KDDTest+"] = float((s_test_normals > thr).mean())
    both = np.r_[np.zeros(len(s_aside), bool), np.ones(len(s_attacks), bool)]
    out["auroc attacks vs set-aside"] = roc_auc(np.r_[s_aside, s_attacks], both)
    out["auroc attacks vs KDDTest+ normals"] = roc_auc(s_test, flags)
    out["median score set-aside / KDDTest+ normals"] = float(np.median(s_aside) / np.median(s_test_normals))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        rows.append(run(seed))
        print(f"seed {seed}: " + "  ".join(f"{k} {v:.4g}" for k, v in rows[-1].items()), flush=True)
    print("mean: " + "  ".join(f"{k} {np.mean([r[k] for r in rows]):.4g}" for k in rows[0]))
