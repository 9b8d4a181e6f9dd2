"""A five-encoder ensemble against the one final model (seed 0; docs/quality.md, Ablations).

    python benchmarks/ensemble_ablation.py 0 cardio thyroid breastw ...   # seed, then sets

Per set (multi-class sets: their first three held-out classes), the fit's own cross-fitting is run
by hand: the final model trains on all fit normals, five fold models each on four fifths of them
(``training.crossfit.fold_of``), and every normal gets an out-of-fold score. Printed per line
(JSON): the final model's test AUROC; the fold models' mean score, each divided by the median of
its own out-of-fold scores (``ens_med``); the cross-conformal p-value (``ens_p``: each fold model's
test score counted against its own out-of-fold scores, Vovk 2015); 1-NN; and the realised test
FPR at 1% / 5% of the final model against the out-of-fold quantile (``fpr_final@``) and of the
cross-conformal p-value (``fpr_ccp@``). Sets with >= 1,000 holdout normals are cross-fitted here
too, unlike the default fit.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality as q
from detector.scorer import threshold_at_fpr
from detector.spec_inference import infer_spec
from training.crossfit import FOLDS, fold_of
from training.evaluation.metrics import roc_auc
from training.fit import split_calibration
from training.trained_model import train_model

torch.set_num_threads(1)


def fpr_at(cal, test_normals, target):
    return float((test_normals > threshold_at_fpr(cal, target)).mean())


def run(name, seed, held_out):
    split = q.load_split(name, seed, held_out)
    recs = split.fit_records
    spec = infer_spec(recs, label_field=split.label)
    cfg = q.fit_config(seed, 1 / 7, 0.05)
    labels = [r["class"] for r in recs] if split.label else None
    eval_idx = np.concatenate([split.test_idx, split.anomalies])
    is_anomaly = np.r_[np.zeros(len(split.test_idx), bool), np.ones(len(split.anomalies), bool)]
    evaluated = [split.records[i] for i in eval_idx]
    start = time.perf_counter()
    s_final = train_model(recs, labels, spec, cfg, scale_from_unseen=True).scores(evaluated)
    fold = fold_of(labels, len(recs), FOLDS, seed)
    oof = np.empty(len(recs))
    fold_scores, fold_oof = [], []
    for k in range(FOLDS):
        inside, outside = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = train_model(
            [recs[i] for i in inside],
            None if labels is None else [labels[i] for i in inside],
            spec,
            cfg,
            scale_from_unseen=True,
        )
        oof[outside] = model.scores([recs[i] for i in outside])
        fold_scores.append(model.scores(evaluated))
        fold_oof.append(oof[outside])
    scores = np.array(fold_scores)
    medians = np.array([np.median(o) for o in fold_oof])
    ens_med = (scores / medians[:, None]).mean(0)
    counts = sum((fold_oof[k][None, :] >= scores[k][:, None]).sum(1) for k in range(FOLDS))
    p_value = (1 + counts) / (len(oof) + 1)
    normal = ~is_anomaly
    train_part = split.fit_idx[split_calibration(labels, len(recs), 1 / 7, seed)[0]]
    res = {
        "set": name,
        "held_out": held_out,
        "seed": seed,
        "n": len(recs),
        "secs": time.perf_counter() - start,
        "final": roc_auc(s_final, is_anomaly),
        "ens_med": roc_auc(ens_med, is_anomaly),
        "ens_p": roc_auc(-p_value + 1e-9 * ens_med, is_anomaly),  # ties in p broken by the mean score
        "nn": roc_auc(q.nearest_normal_scores(split.x[train_part], split.x[eval_idx]), is_anomaly),
    }
    for target in (0.01, 0.05):
        res[f"fpr_final@{target}"] = fpr_at(oof, s_final[normal], target)
        res[f"fpr_ccp@{target}"] = float((p_value[normal] <= target).mean())
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}), flush=True)


if __name__ == "__main__":
    seed = int(sys.argv[1])
    for name in sys.argv[2:]:
        for held_out in q.HELD_OUT.get(name, [None])[:3]:
            run(name, seed, held_out)
