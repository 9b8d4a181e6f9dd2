"""Which terms make the score: both (embedding + input distance), or the input distance alone.

The score adds the embedding term to the input-space distance (:mod:`detector.input_neighbours`).
On sets whose normals have fine structure inside one kind (digit- and letter-like data) the
embedding term only blurs the input distance; on sets with a few broad modes it is what puts the
detector above nearest-neighbour. Which case a set is in is told from its normals alone: the
held-out normals (or out-of-fold normals, when cross-fitted) are scored next to *column-shuffled*
copies of themselves — every feature permuted on its own, so each feature keeps its normal
values and only the dependence between features is broken — and the term that tells the two
apart better (AUROC, taken per model that scored them and averaged) is kept. The input term
alone is chosen only when it does strictly better than the sum; ties keep both.

With normal-class labels both terms are kept whatever the test says: the encoder is then trained
on the classes, which the shuffled rows (and the input distance) know nothing about. Measured over
the 22 sets (docs/quality.md, "Choosing the score's terms"): without this rule the test drops the
embedding of the two labelled sets and loses 0.014 (pendigits) and 0.015 (digits) AUROC, mean of seeds 0-2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from training.ranking import roc_auc

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

#: ``FitConfig.score_terms``: both terms, the input distance alone, or chosen by the test below.
ScoreTerms = Literal["auto", "both", "input"]


@dataclass(frozen=True)
class ScaledTerms:
    """The two terms of rows' scores, each divided by its model's scale (a typical normal: 1)."""

    embedding: F64
    input: F64

    def score(self, embedding_weight: float) -> F64:
        out: F64 = embedding_weight * self.embedding + self.input
        return out


@dataclass(frozen=True)
class HeldOutTerms:
    """Held-out normals' terms, and those of column-shuffled copies of the same rows."""

    normals: ScaledTerms
    shuffled: ScaledTerms


def shuffled_columns(x: F32, rng: np.random.Generator) -> F32:
    """``x`` with every column permuted independently (marginals kept, dependence broken)."""
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        out[:, j] = x[rng.permutation(len(x)), j]
    return out


def choose_embedding_weight(
    parts: Sequence[HeldOutTerms], labelled: bool, mode: ScoreTerms = "auto"
) -> tuple[float, dict[str, Any]]:
    """The embedding term's weight (1: both terms, 0: input distance alone) and the evidence.

    Args:
        parts: held-out normals' terms and their column-shuffled copies' terms, one part per model
            that scored them (one with a holdout; one per fold when cross-fitted). Each part's AUROC
            is taken on its own and the parts' AUROCs are averaged (weighted by their rows): pooled,
            the fold models' slightly different embedding scales would count against the sum.
        labelled: whether the normals carry class labels (then both terms, see the module docstring).
        mode: ``auto`` decides by the test; ``both`` and ``input`` impose the choice (the test's
            figures are recorded all the same).
    """
    sizes = np.array([len(p.normals.input) + len(p.shuffled.input) for p in parts], dtype=np.float64)

    def auroc(weight: float) -> float:
        per_part = [_shuffled_auroc(p, weight) for p in parts]
        return float(np.average(per_part, weights=sizes))

    both, input_alone = auroc(1.0), auroc(0.0)
    if mode != "auto":
        weight, rule = (1.0, "set: both terms") if mode == "both" else (0.0, "set: input distance alone")
    elif labelled:
        weight, rule = 1.0, "class labels given: both terms"
    else:
        weight = 0.0 if input_alone > both else 1.0
        rule = "input distance alone tells shuffled rows apart better" if weight == 0.0 else "both terms"
    evidence = {
        "embedding_weight": weight,
        "rule": rule,
        "shuffled_auroc_both_terms": round(both, 5),
        "shuffled_auroc_input_alone": round(input_alone, 5),
        "n_held_out": sum(len(p.normals.input) for p in parts),
        "n_models": len(parts),
    }
    return weight, evidence


def _shuffled_auroc(part: HeldOutTerms, weight: float) -> float:
    """AUROC of the score with this embedding weight, held-out normals against their shuffled copies."""
    is_shuffled = np.r_[np.zeros(len(part.normals.input), bool), np.ones(len(part.shuffled.input), bool)]
    return roc_auc(np.r_[part.normals.score(weight), part.shuffled.score(weight)], is_shuffled)
