"""Which terms make the score: embedding + input distance, the input distance alone, and either of
them with the rank-Gauss distance as a third term.

The score adds the embedding term to the input-space distance (:mod:`detector.input_neighbours`).
On sets whose normals have fine structure inside one kind (digit- and letter-like data) the
embedding term only blurs the input distance; on sets with a few broad modes it is what puts the
detector above nearest-neighbour. Which case a set is in is told from its normals alone: the
held-out normals (or out-of-fold normals, when cross-fitted) are scored next to *column-shuffled*
copies of themselves — every feature permuted on its own, so each feature keeps its normal
values and only the dependence between features is broken — and the score that tells the two
apart better (AUROC, taken per model that scored them and averaged) is kept.

The same test decides the third term (:class:`detector.input_neighbours.GaussTerm`: the input
distance after each numeric column's rank-Gauss map), which helps where normal marginals are
skewed or clumped and a z-score distance is ruled by a few long tails. The candidates, in order of
preference: both terms, the input distance alone, both + rank-Gauss, input + rank-Gauss; a later
one is chosen only when it does strictly better than every earlier one (ties keep the simpler).

With normal-class labels the embedding term is kept whatever the test says: the encoder is then
trained on the classes, which the shuffled rows (and the input distance) know nothing about.
Measured over the 22 sets (docs/quality.md, "Choosing the score's terms"): without this rule the
test drops the embedding of the two labelled sets and loses 0.014 (pendigits) and 0.015 (digits)
AUROC, mean of seeds 0-2.
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
#: ``FitConfig.gauss_term``: the rank-Gauss third term chosen by the test below, always, or never.
GaussChoice = Literal["auto", "on", "off"]
#: (embedding weight, rank-Gauss weight) of each candidate score, in order of preference.
CANDIDATES: dict[tuple[float, float], str] = {
    (1.0, 0.0): "both terms",
    (0.0, 0.0): "input distance alone",
    (1.0, 1.0): "both terms + rank-Gauss",
    (0.0, 1.0): "input distance + rank-Gauss",
}


@dataclass(frozen=True)
class ScaledTerms:
    """The terms of rows' scores, each divided by its model's scale (a typical normal: 1).
    ``gauss`` is ``None`` when the model offers no rank-Gauss term."""

    embedding: F64
    input: F64
    gauss: F64 | None = None

    def score(self, embedding_weight: float, gauss_weight: float = 0.0) -> F64:
        out: F64 = embedding_weight * self.embedding + self.input
        if gauss_weight:
            if self.gauss is None:
                raise ValueError("no rank-Gauss term to weigh")
            out = out + gauss_weight * self.gauss
        return out


@dataclass(frozen=True)
class HeldOutTerms:
    """Held-out normals' terms, and those of column-shuffled copies of the same rows."""

    normals: ScaledTerms
    shuffled: ScaledTerms


@dataclass(frozen=True)
class TermsChoice:
    """The chosen weights (each 0 or 1) and the evidence recorded in the manifest."""

    embedding_weight: float
    gauss_weight: float
    evidence: dict[str, Any]


def shuffled_columns(x: F32, rng: np.random.Generator) -> F32:
    """``x`` with every column permuted independently (marginals kept, dependence broken)."""
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        out[:, j] = x[rng.permutation(len(x)), j]
    return out


def choose_terms(
    parts: Sequence[HeldOutTerms], labelled: bool, mode: ScoreTerms = "auto", gauss: GaussChoice = "auto"
) -> TermsChoice:
    """The embedding term's and the rank-Gauss term's weights (1: kept, 0: left out) and the evidence.

    Args:
        parts: held-out normals' terms and their column-shuffled copies' terms, one part per model
            that scored them (one with a holdout; one per fold when cross-fitted). Each part's AUROC
            is taken on its own and the parts' AUROCs are averaged (weighted by their rows): pooled,
            the fold models' slightly different embedding scales would count against the sum.
        labelled: whether the normals carry class labels (then the embedding term is kept).
        mode: ``auto`` decides the embedding term by the test; ``both`` and ``input`` impose it.
        gauss: ``auto`` decides the rank-Gauss term by the test (left out when the parts carry
            none); ``on`` and ``off`` impose it. The test's figures are recorded whatever is imposed.

    Raises:
        ValueError: ``gauss="on"`` but the parts carry no rank-Gauss term.
    """
    sizes = np.array([len(p.normals.input) + len(p.shuffled.input) for p in parts], dtype=np.float64)
    has_gauss = all(p.normals.gauss is not None and p.shuffled.gauss is not None for p in parts)
    if gauss == "on" and not has_gauss:
        raise ValueError("the rank-Gauss term was asked for but the models carry none")

    def auroc(weights: tuple[float, float]) -> float:
        per_part = [_shuffled_auroc(p, *weights) for p in parts]
        return float(np.average(per_part, weights=sizes))

    measured = {w: auroc(w) for w in CANDIDATES if has_gauss or w[1] == 0.0}
    embedding_allowed = {"both": [1.0], "input": [0.0]}.get(mode, [1.0] if labelled else [1.0, 0.0])
    gauss_allowed = {"on": [1.0], "off": [0.0]}.get(gauss, [0.0, 1.0])
    allowed = [w for w in measured if w[0] in embedding_allowed and w[1] in gauss_allowed]
    best = allowed[0]
    for w in allowed[1:]:
        if measured[w] > measured[best]:
            best = w
    reasons = []
    if mode != "auto":
        reasons.append("set: " + ("both terms" if mode == "both" else "input distance alone"))
    elif labelled:
        reasons.append("class labels given: embedding term kept")
    if gauss != "auto":
        reasons.append(f"set: rank-Gauss term {gauss}")
    reasons.append("best at telling shuffled rows apart of: " + ", ".join(CANDIDATES[w] for w in allowed))
    evidence = {
        "embedding_weight": best[0],
        "gauss_weight": best[1],
        "chosen": CANDIDATES[best],
        "rule": "; ".join(reasons),
        "shuffled_auroc_both_terms": round(measured[(1.0, 0.0)], 5),
        "shuffled_auroc_input_alone": round(measured[(0.0, 0.0)], 5),
        "shuffled_auroc": {CANDIDATES[w]: round(v, 5) for w, v in measured.items()},
        "n_held_out": sum(len(p.normals.input) for p in parts),
        "n_models": len(parts),
    }
    return TermsChoice(best[0], best[1], evidence)


def _shuffled_auroc(part: HeldOutTerms, embedding_weight: float, gauss_weight: float) -> float:
    """AUROC of the score with these weights, held-out normals against their shuffled copies."""
    is_shuffled = np.r_[np.zeros(len(part.normals.input), bool), np.ones(len(part.shuffled.input), bool)]
    normals = part.normals.score(embedding_weight, gauss_weight)
    shuffled = part.shuffled.score(embedding_weight, gauss_weight)
    return roc_auc(np.r_[normals, shuffled], is_shuffled)
