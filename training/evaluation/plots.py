"""PNG plots for the evaluation report: ROC curve, score histograms, 2-D embedding projection.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure`` rendered by
the Agg canvas), never through ``pyplot``: nothing needs a display, no global figure registry
fills up, and the process-wide backend is left alone. Every function returns PNG bytes.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from numpy.typing import NDArray

from detector.errors import DataError
from training.evaluation.metrics import roc_curve
from training.ranking import roc_auc, validate_scores

F64 = NDArray[np.float64]

MAX_SCATTER_POINTS = 5000
_MAX_LEGEND_LABELS = 9
_MAX_ANNOTATED_CENTROIDS = 20
_NORMAL_COLOUR = "#1f77b4"
_ANOMALY_COLOUR = "#d62728"


def _plain(text: str) -> str:
    """``text`` shown literally: an unescaped ``$`` would switch matplotlib to math mode."""
    return text.replace("$", r"\$")


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)  # attaches itself as the figure's canvas
    buffer = io.BytesIO()
    # No "Software" metadata: the PNG then carries no URL at all.
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _draw_roc(axes: Axes, fpr: F64, tpr: F64, point: tuple[float, float], label: str) -> None:
    axes.plot(fpr, tpr, color=_NORMAL_COLOUR, linewidth=1.5, label=label)
    axes.plot(*point, marker="o", markersize=8, color=_ANOMALY_COLOUR, linestyle="none", label="calibrated threshold")
    axes.set_xlabel("false-positive rate (normals flagged)")
    axes.set_ylabel("recall (anomalies flagged)")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)


def roc_png(scores: npt.ArrayLike, is_anomaly: npt.ArrayLike, threshold: float) -> bytes:
    """ROC curve on a linear and on a log FPR axis, the operating point at ``threshold`` marked.

    The log panel starts at the smallest non-zero FPR this data can show (``1 / n_normal``), where
    the low-FPR region that matters for alerting becomes readable.
    """
    score_array, labels = validate_scores(scores, is_anomaly)
    fpr, tpr, _ = roc_curve(score_array, labels)
    flagged = score_array > threshold
    point = (float(np.mean(flagged[~labels])), float(np.mean(flagged[labels])))
    label = f"ROC (AUROC {roc_auc(score_array, labels):.4f})"
    figure = Figure(figsize=(11, 4.5))
    linear, logarithmic = figure.subplots(1, 2)
    _draw_roc(linear, fpr, tpr, point, label)
    linear.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    linear.set_xlim(-0.02, 1.02)
    linear.set_title("ROC curve")
    linear.legend(loc="lower right")
    floor = 1.0 / int(np.sum(~labels))
    _draw_roc(logarithmic, np.maximum(fpr, floor), tpr, (max(point[0], floor), point[1]), label)
    logarithmic.set_xscale("log")
    logarithmic.set_xlim(floor, 1.0)
    logarithmic.set_title(f"ROC curve, log FPR (FPR below {floor:.1e} drawn at it)")
    return _png(figure)


def histogram_bins(score_array: F64, threshold: float) -> tuple[F64, bool, float | None]:
    """Bin edges, whether the x axis is logarithmic, and the clip value (None when unclipped).

    Scores spanning three or more decades (all positive) get log bins; otherwise linear bins up to
    the 99.5th percentile (or the threshold, if higher), the rest drawn in the last bin.
    """
    low, high = float(score_array.min()), float(score_array.max())
    if low > 0 and threshold > 0 and high / low >= 1e3:
        return np.geomspace(min(low, threshold), max(high, threshold), 61), True, None
    upper = max(float(np.quantile(score_array, 0.995)), threshold)
    lower = min(low, threshold)
    if upper <= lower:  # all scores equal the threshold: give the bins some width
        lower, upper = lower - 0.5, upper + 0.5
    clip = upper if high > upper else None
    return np.linspace(lower, upper, 61), False, clip


def score_histogram_png(scores: npt.ArrayLike, is_anomaly: npt.ArrayLike, threshold: float) -> bytes:
    """Histograms of normal and anomalous scores (each as a share of its class), threshold marked.

    The y axis is logarithmic so the normal tail beyond the threshold (the false positives) stays
    visible next to the bulk.
    """
    score_array, labels = validate_scores(scores, is_anomaly)
    edges, log_x, clip = histogram_bins(score_array, threshold)
    shown = np.minimum(score_array, clip) if clip is not None else score_array
    figure = Figure(figsize=(9, 4.5))
    axes = figure.subplots()
    for mask, name, colour in ((~labels, "normal", _NORMAL_COLOUR), (labels, "anomalous", _ANOMALY_COLOUR)):
        weights = np.full(int(mask.sum()), 1.0 / int(mask.sum()))
        axes.hist(
            shown[mask],
            bins=edges.tolist(),
            weights=weights,
            color=colour,
            alpha=0.45,
            label=f"{name} (n={mask.sum()})",
        )
        axes.hist(shown[mask], bins=edges.tolist(), weights=weights, color=colour, histtype="step", linewidth=1.2)
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.4g}")
    axes.set_yscale("log")
    if log_x:
        axes.set_xscale("log")
    xlabel = "anomaly score (higher = more anomalous)"
    if clip is not None:
        xlabel += f"; scores above {clip:.4g} drawn in the last bin"
    axes.set_xlabel(xlabel)
    axes.set_ylabel("share of class (log)")
    axes.set_title("Score distribution: normal vs anomalous")
    axes.legend()
    axes.grid(alpha=0.3)
    return _png(figure)


def pca_projection(data: F64, n_components: int = 2) -> tuple[F64, F64]:
    """Principal axes of ``data`` via SVD.

    Args:
        data: ``(n, d)`` finite matrix, ``n >= 2``.
        n_components: how many axes to return; missing ones (``d`` or ``n`` too small) are zero.

    Returns:
        ``(mean, components)``: the ``(d,)`` mean and ``(n_components, d)`` unit rows, so a point
        ``x`` projects to ``(x - mean) @ components.T``.
    """
    mean = data.mean(axis=0)
    _, _, right = np.linalg.svd(data - mean, full_matrices=False)
    components = np.zeros((n_components, data.shape[1]))
    kept = min(n_components, right.shape[0])
    components[:kept] = right[:kept]
    return mean, components


def _as_matrix(name: str, values: npt.ArrayLike, dim: int | None = None) -> F64:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or (dim is not None and matrix.shape[1] != dim):
        expected = f"(n, {dim})" if dim is not None else "(n, d), n >= 1"
        raise DataError(f"{name} must have shape {expected}, got {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise DataError(f"{name} must be finite")
    return matrix


def _point_groups(
    labels: Sequence[str] | None, is_anomaly: npt.ArrayLike | None, n: int
) -> tuple[NDArray[np.object_], dict[str, str | None]]:
    """Legend group per point and a colour per group (None = from the colour cycle)."""
    if labels is not None:
        if len(labels) != n:
            raise DataError(f"embedding_labels and embeddings differ in length: {len(labels)} != {n}")
        names = np.asarray([str(label) for label in labels], dtype=object)
        top = [name for name, _ in Counter(names.tolist()).most_common(_MAX_LEGEND_LABELS)]
        names[~np.isin(names, top)] = "(other)"
        return names, {name: None for name in [*top, "(other)"]}
    if is_anomaly is not None and len(anomalous := np.asarray(is_anomaly, dtype=bool)) == n:
        names = np.where(anomalous, "anomalous", "normal").astype(object)
        return names, {"normal": _NORMAL_COLOUR, "anomalous": _ANOMALY_COLOUR}
    return np.full(n, "events", dtype=object), {"events": _NORMAL_COLOUR}


def embedding_projection_png(
    embeddings: npt.ArrayLike,
    labels: Sequence[str] | None = None,
    centroids: npt.ArrayLike | None = None,
    centroid_labels: Sequence[str] | None = None,
    is_anomaly: npt.ArrayLike | None = None,
    max_points: int = MAX_SCATTER_POINTS,
    seed: int = 0,
) -> bytes:
    """2-D PCA projection of a random sample of the embeddings, centroids marked with crosses.

    Points are coloured by ``labels`` when given (the 9 most frequent, the rest as "(other)"),
    else normal vs anomalous when ``is_anomaly`` has one entry per embedding, else one colour.
    The PCA axes are fitted on the sample; the centroids are projected onto them.
    """
    matrix = _as_matrix("embeddings", embeddings)
    names, colours = _point_groups(labels, is_anomaly, matrix.shape[0])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(matrix.shape[0], size=min(max_points, matrix.shape[0]), replace=False))
    mean, components = pca_projection(matrix[sample])
    points = (matrix[sample] - mean) @ components.T
    figure = Figure(figsize=(8.5, 6.5))
    axes = figure.subplots()
    sampled_names = names[sample]
    # Largest groups first, so small ones (often the interesting anomalies) are drawn on top.
    order = sorted(colours, key=lambda name: -int(np.sum(sampled_names == name)))
    for name in order:
        mask = sampled_names == name
        if mask.any():
            axes.scatter(
                points[mask, 0],
                points[mask, 1],
                s=5,
                alpha=0.5,
                color=colours[name],
                label=_plain(f"{name} ({mask.sum()})"),
            )
    if centroids is not None:
        _draw_centroids(axes, _as_matrix("centroids", centroids, matrix.shape[1]), centroid_labels, mean, components)
    axes.set_xlabel("principal axis 1")
    axes.set_ylabel("principal axis 2")
    axes.set_title(f"Embeddings, PCA of a sample of {sample.size} of {matrix.shape[0]}")
    legend = axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    for handle in legend.legend_handles:  # legible legend markers, whatever the plotted size
        if isinstance(handle, PathCollection):
            handle.set_sizes([40])
    axes.grid(alpha=0.3)
    return _png(figure)


def _draw_centroids(
    axes: Axes, centroids: F64, centroid_labels: Sequence[str] | None, mean: F64, components: F64
) -> None:
    if centroid_labels is not None and len(centroid_labels) != centroids.shape[0]:
        raise DataError(f"centroid_labels and centroids differ in length: {len(centroid_labels)} != {len(centroids)}")
    projected = (centroids - mean) @ components.T
    axes.scatter(
        projected[:, 0],
        projected[:, 1],
        marker="X",
        s=110,
        color="black",
        edgecolors="white",
        linewidths=1.0,
        label="centroids",
    )
    if centroid_labels is not None and len(centroid_labels) <= _MAX_ANNOTATED_CENTROIDS:
        for (x, y), text in zip(projected, centroid_labels, strict=True):
            axes.annotate(
                _plain(str(text)[:24]),
                (x, y),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize="small",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0},
            )
