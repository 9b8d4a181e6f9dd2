"""Both unlabelled objectives in one score, against either alone (docs/quality.md, goal 3).

    python benchmarks/objective_ensemble_ablation.py 0 cardio thyroid satellite breastw ...   # seed, then sets

Per set without labels (protocol of data/benchmarks/README.md, the 10% holdout left out of
training), the training normals train four models: one per unlabelled objective (``one_class``
and ``clusters``, ``TrainConfig.unlabelled_positives``) at the seed, and one more of each at the
seed + ``SECOND_SEED``. Each model's embedding term is divided by its own median over its
training normals, as the default score does; the input-space term (the first model's; it does not
depend on the encoder) is added to every variant. Printed per line (JSON), test AUROC of: each
objective alone (``one_class``, ``clusters``); ``auto``, the objective the cluster-structure rule
picks (``rule``: the default); ``both``, the mean of the two objectives' scaled embedding terms (two
encoders, no rule); the same-objective pairs as the control for ensembling alone (``one_class_x2``,
``clusters_x2``, ``auto_x2``); ``both_x2``, all four; the input term alone; and 1-NN.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality as q
from detector.encoder import embed
from detector.spec_inference import infer_spec
from training.calibration import build_geometry
from training.evaluation.metrics import roc_auc
from training.fit import split_calibration
from training.learning.coassociation import STRUCTURE_SILHOUETTE
from training.trained_model import train_model

torch.set_num_threads(1)
#: Added to the seed for the second encoder of each objective (the same-objective pairs).
SECOND_SEED = 1000


def terms(model, x):
    """The model's scaled embedding term and scaled input term of featurized rows ``x``."""
    view = model.input_neighbours
    emb = build_geometry(model.centroids, model.radius, model.class_names).nearest(embed(model.encoder, x)).score
    return emb / view.embedding_scale, view.distances(x) / view.input_scale


def run(name, seed):
    split = q.load_split(name, seed, None)
    recs = split.fit_records
    spec = infer_spec(recs, label_field=split.label)
    train_local, _ = split_calibration(None, len(recs), 1 / 7, seed)
    train = [recs[i] for i in train_local]
    eval_idx = np.concatenate([split.test_idx, split.anomalies])
    is_anomaly = np.r_[np.zeros(len(split.test_idx), bool), np.ones(len(split.anomalies), bool)]
    evaluated = [split.records[i] for i in eval_idx]
    start = time.perf_counter()
    emb, res = {}, {"set": name, "seed": seed, "n_train": len(train)}
    for objective in ("one_class", "clusters"):
        q.TRAIN_OVERRIDES["unlabelled_positives"] = objective
        for copy, train_seed in enumerate((seed, seed + SECOND_SEED)):
            model = train_model(train, None, spec, q.fit_config(train_seed, 1 / 7, 0.05), scale_from_unseen=True)
            emb[objective, copy], d_seed = terms(model, model.featurizer.transform(evaluated))
            if len(emb) == 1:
                d_in = d_seed  # the first model's input term: every variant below adds the same one
            if objective == "clusters" and copy == 0:
                res["silhouette"] = q.structure_fields(model.history.cluster_structure).get("best_silhouette")
    q.TRAIN_OVERRIDES.pop("unlabelled_positives")
    # find_structure's decision: the best counted silhouette reaches STRUCTURE_SILHOUETTE (none: NaN)
    res["rule"] = "clusters" if (res["silhouette"] or 0) >= STRUCTURE_SILHOUETTE else "one_class"
    oc, cl = emb["one_class", 0], emb["clusters", 0]
    variants = {
        "one_class": oc,
        "clusters": cl,
        "auto": emb[res["rule"], 0],
        "both": (oc + cl) / 2,
        "one_class_x2": (oc + emb["one_class", 1]) / 2,
        "clusters_x2": (cl + emb["clusters", 1]) / 2,
        "auto_x2": (emb[res["rule"], 0] + emb[res["rule"], 1]) / 2,
        "both_x2": sum(emb.values()) / 4,
    }
    for key, term in variants.items():
        res[key] = roc_auc(term + d_in, is_anomaly)
    res["input_only"] = roc_auc(d_in, is_anomaly)
    res["nn"] = roc_auc(q.nearest_normal_scores(split.x[split.fit_idx[train_local]], split.x[eval_idx]), is_anomaly)
    res["secs"] = time.perf_counter() - start
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}), flush=True)


if __name__ == "__main__":
    seed_arg, *set_names = sys.argv[1:]
    print(f"# cluster-structure rule: silhouette >= {STRUCTURE_SILHOUETTE}", flush=True)
    for set_name in set_names:
        run(set_name, int(seed_arg))
