"""Scoring variants on the embedding of one fit per set (seed 0; docs/quality.md, Ablations).

    python benchmarks/scoring_ablation.py            # all 21 one-class and multi-class sets
    python benchmarks/scoring_ablation.py optdigits  # some of them

Per set: the detector's AUROC, 1-NN in the standardised raw space, and post-hoc scores on the same
encoder: exact nearest training member in embedding space (1 and 5 neighbours), k-means centroids
with one centroid per m training members, and the nearest member among the members of the t
nearest centroids. Then the two halves of the default score apart (``embedding_only``, the
centroid score; ``input_only``, the input-space distance) and the input-space term built with other
budgets (``input_x4``: 4x the default multiply-adds per event; ``input_all``: every training row a
reference point, i.e. exact 1-NN in the featurized space), each added to the embedding score as the
default adds its own. Then other joins of the two terms (``combinations``: scales from the
calibration normals' medians or 90% quantiles, robust z-scores, the larger term, the product, the
input term weighted 2x) and ``oracle_pick``, the best of the embedding term, the input term and
their sum on each set as if one knew the test anomalies. Writes /tmp/scoring_ablation.json.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality as q
from detector.encoder import embed
from training.calibration import fit_input_neighbours
from training.evaluation.metrics import roc_auc
from training.fit import FitConfig, split_calibration
from training.learning.clustering import kmeans


def emb_dist(a, b, chunk=1024):
    b_sq = (b.astype(np.float64) ** 2).sum(1)
    out = []
    for lo in range(0, len(a), chunk):
        x = a[lo : lo + chunk].astype(np.float64)
        out.append(np.sqrt(np.maximum((x**2).sum(1)[:, None] + b_sq[None] - 2 * x @ b.T, 0)))
    return np.concatenate(out)


def variants(det, z_tr, y_tr, z_ev, seed):
    out = {}
    d_all = emb_dist(z_ev, z_tr)
    out["emb_1nn"] = d_all.min(1)
    out["emb_5nn"] = np.sort(d_all, 1)[:, :5].mean(1) if d_all.shape[1] >= 5 else d_all.min(1)
    for m in (5, 10, 20):
        cents, assign = [], np.zeros(len(z_tr), int)
        for c in np.unique(y_tr):
            idx = np.flatnonzero(y_tr == c)
            k = max(1, len(idx) // m)
            r = kmeans(z_tr[idx], k, seed, n_init=1)
            assign[idx] = len(cents) + r.labels
            cents.extend(r.centroids)
        cents = np.asarray(cents)
        dc = emb_dist(z_ev, cents)
        out[f"cent_m{m}"] = dc.min(1)
        # refine: nearest member among members of the nearest t centroids
        for t in (1, 3):
            near = np.argsort(dc, 1)[:, :t]
            ref = np.empty(len(z_ev))
            for i in range(len(z_ev)):
                mem = np.isin(assign, near[i])
                ref[i] = d_all[i, mem].min()
            out[f"memb_m{m}_t{t}"] = ref
    return out


def run_set(name, seed, held_out):
    split = q.load_split(name, seed, held_out)
    x, y, records, fit_records, label = split.x, split.y, split.records, split.fit_records, split.label
    fit_idx, test_idx, anomalies = split.fit_idx, split.test_idx, split.anomalies
    q.FIT_OVERRIDES["cross_fit_below"] = 0  # the 10% holdout, as in the other ablations
    res = q.run_fit(fit_records, label, seed, 1 / 7, 0.05)
    det = res.detector
    labels = [str(y[i]) for i in fit_idx] if label else None
    tr_local, cal_local = split_calibration(labels, len(fit_idx), 1 / 7, seed)
    train_part, cal_part = fit_idx[tr_local], fit_idx[cal_local]
    eval_idx = np.concatenate([test_idx, anomalies])
    is_anom = np.r_[np.zeros(len(test_idx), bool), np.ones(len(anomalies), bool)]
    f = det.featurizer
    z_tr = embed(det.encoder, f.transform([records[i] for i in train_part]))
    z_ev = embed(det.encoder, f.transform([records[i] for i in eval_idx]))
    y_tr = y[train_part] if label else np.zeros(len(train_part), int)
    out = {
        "current": roc_auc(det.score_records([records[i] for i in eval_idx], top=0).scores, is_anom),
        "nn_raw": roc_auc(q.nearest_normal_scores(x[train_part], x[eval_idx]), is_anom),
        "n_train": len(train_part),
        "n_centroids": len(det.scorer.centroids),
    }
    for k, s in variants(det, z_tr, y_tr, z_ev, seed).items():
        out[k] = roc_auc(s, is_anom)
    x_tr = f.transform([records[i] for i in train_part])
    x_ev = f.transform([records[i] for i in eval_idx])
    emb_ev = det.scorer.geometry.nearest(z_ev).score
    out["embedding_only"] = roc_auc(emb_ev, is_anom)
    budget = FitConfig().input_budget
    for name, b in (("input_only", budget), ("input_x4", 4 * budget), ("input_all", 10**12)):
        # The embedding term keeps the fitted model's scale (its median over the rows held out for
        # early stopping): only the input term's points change between these columns.
        view = fit_input_neighbours(x_tr, np.array([det.scorer.input_neighbours.embedding_scale]), b, seed)
        assert view is not None
        d_ev = view.distances(x_ev)
        out[name] = roc_auc(d_ev if name == "input_only" else view.combine(emb_ev, d_ev), is_anom)
    out["oracle_pick"] = max(out["embedding_only"], out["input_only"], out["current"])
    x_cal = f.transform([records[i] for i in cal_part])
    emb_cal = det.scorer.geometry.nearest(embed(det.encoder, x_cal)).score
    d_cal = det.scorer.input_neighbours.distances(x_cal)
    for name, s in combinations(emb_ev, det.scorer.input_neighbours.distances(x_ev), emb_cal, d_cal).items():
        out[name] = roc_auc(s, is_anom)
    return out


def combinations(emb_ev, d_ev, emb_cal, d_cal):
    """Other ways to join the two terms; scales from the calibration normals (out of sample for both)."""

    def spread(a):
        return float(np.quantile(a, 0.9) - np.median(a))

    e_med, d_med = np.median(emb_cal), np.median(d_cal)
    return {
        "sum_cal_median": emb_ev / e_med + d_ev / d_med,
        "sum_cal_q90": emb_ev / np.quantile(emb_cal, 0.9) + d_ev / np.quantile(d_cal, 0.9),
        "sum_robust_z": (emb_ev - e_med) / spread(emb_cal) + (d_ev - d_med) / spread(d_cal),
        "max_cal_median": np.maximum(emb_ev / e_med, d_ev / d_med),
        "log_product": np.log(emb_ev + 1e-12) + np.log(d_ev + 1e-12),
        "input_weight_2": emb_ev / e_med + 2 * d_ev / d_med,
    }


names = sys.argv[1:] or [*q.BASELINES, *q.WIDE_BASELINES]
allres = {}
for name in names:
    t = time.perf_counter()
    classes = q.HELD_OUT.get(name, [None])[:2]
    rows = [run_set(name, 0, c) for c in classes]
    r = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
    allres[name] = r
    print(name, f"{time.perf_counter() - t:.0f}s", " ".join(f"{k}={v:.3f}" for k, v in r.items()), flush=True)
Path("/tmp/scoring_ablation.json").write_text(json.dumps(allres, indent=1))
