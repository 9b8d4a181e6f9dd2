"""The trained detector: featurizer + encoder + centroid scorer + explainer, and its artifact.

Python API::

    from detector import Detector
    det = Detector.load("models/nsl-kdd")
    result = det.score_records([{"duration": 0, "protocol_type": "tcp", ...}])
    result.scores, result.flagged, result.nearest_class, result.p_values, result.explanations
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import ValidationError

from detector.artifact import read_artifact, tensor_to_numpy, write_artifact
from detector.encoder import Encoder, EncoderConfig, check_state_shapes, embed
from detector.errors import ArtifactError
from detector.explain import Explainer, FieldDeviation, describe
from detector.features import Featurizer
from detector.input_neighbours import GaussTerm, InputNeighbours
from detector.rank_gauss import RankGauss
from detector.schema import FeatureSpec
from detector.scorer import CentroidScorer, ScoreResult
from detector.signing import Ed25519PublicKey, verify_signature


@dataclass(frozen=True)
class ScoredBatch:
    """Scores of a batch of records, in input order."""

    scores: NDArray[np.float64]
    flagged: NDArray[np.bool_]
    nearest_class: list[str]
    margin: NDArray[np.float64]
    p_values: NDArray[np.float64]
    explanations: list[list[FieldDeviation]]
    threshold: float
    model_version: str


@dataclass
class Detector:
    """A loaded, ready-to-score detector.

    Attributes:
        version: model version string (``YYYYmmddTHHMMSSZ-<hash8>``).
        manifest: the artifact manifest (calibration, training metrics, ...).
    """

    featurizer: Featurizer
    encoder: Encoder
    scorer: CentroidScorer
    explainer: Explainer
    version: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> FeatureSpec:
        return self.featurizer.spec

    @property
    def threshold(self) -> float:
        return self.scorer.threshold

    # ------------------------------------------------------------------ scoring
    def embed(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        """``(n, F)`` featurized rows -> ``(n, D)`` unit-norm embeddings (one forward pass)."""
        return embed(self.encoder, features)

    def score_features(self, features: NDArray[np.float32]) -> ScoreResult:
        """Score featurized rows."""
        return self.scorer.score(self.embed(features), features)

    def score_records(self, records: Sequence[Mapping[str, Any]], top: int = 3) -> ScoredBatch:
        """Validate, featurize, embed and score a batch of event dicts.

        Raises:
            InvalidEventError: a record breaks the spec (names the record and the field).
        """
        features = self.featurizer.transform(records)
        result = self.score_features(features)
        explanations = self.explainer.explain(features, result.nearest_centroid, records, top=top)
        return ScoredBatch(
            scores=result.score,
            flagged=result.flagged,
            nearest_class=[self.scorer.class_names[i] for i in result.nearest_class],
            margin=result.margin,
            p_values=result.p_value,
            explanations=explanations,
            threshold=self.scorer.threshold,
            model_version=self.version,
        )

    def describe(self, deviations: Sequence[FieldDeviation], class_index: int) -> str:
        """One-line explanation text for an event."""
        return describe(deviations, self.scorer.class_names[class_index])

    # -------------------------------------------------------------- persistence
    def save(self, out_dir: Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the artifact directory; sets :attr:`version` and :attr:`manifest`.

        Args:
            metadata: extra manifest sections (``calibration``, ``training``, ...).
        """
        created = datetime.now(UTC)
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors |= {
            "scorer.centroids": torch.from_numpy(self.scorer.centroids),
            "scorer.centroid_class": torch.from_numpy(self.scorer.centroid_class.astype(np.int64)),
            "scorer.radius": torch.from_numpy(self.scorer.radius),
            "scorer.calibration_scores": torch.from_numpy(self.scorer.calibration_scores),
            **_input_tensors(self.scorer.input_neighbours),
            "explain.feature_mean": torch.from_numpy(self.explainer.feature_mean),
            "explain.feature_spread": torch.from_numpy(self.explainer.feature_spread),
        }
        digest = _tensor_digest(tensors)
        version = f"{created:%Y%m%dT%H%M%SZ}-{digest[:8]}"
        manifest: dict[str, Any] = {
            "model_version": version,
            "created_at": created.isoformat(),
            "spec": self.spec.model_dump(mode="json"),
            "featurizer": self.featurizer.to_state(),
            "encoder": _encoder_manifest(self.encoder.config),
            "scorer": {
                "class_names": self.scorer.class_names,
                "threshold": self.scorer.threshold,
                **_input_scales(self.scorer.input_neighbours),
            },
            **dict(metadata or {}),
        }
        write_artifact(Path(out_dir), manifest, tensors, format_version=self._format_version())
        self.version = version
        self.manifest = manifest
        return Path(out_dir)

    def _format_version(self) -> int:
        """1 when builds before format 2 score this model as this build does: no rank-Gauss term
        and the embedding term at its full weight (those builds read neither and would misscore)."""
        terms = self.scorer.input_neighbours
        if terms is None or (terms.gauss is None and terms.embedding_weight == 1.0):
            return 1
        return 2

    @classmethod
    def load(cls, model_dir: Path | str, public_key: Ed25519PublicKey | None = None) -> Detector:
        """Load and verify an artifact directory (and, given ``public_key``, its signature, on the
        same manifest bytes that are loaded).

        Raises:
            ArtifactError: tampered, truncated, incompatible or inconsistent artifact; with
                ``public_key``, an unsigned or wrongly signed one.
        """
        check = None if public_key is None else functools.partial(verify_signature, Path(model_dir), public_key)
        manifest, tensors = read_artifact(Path(model_dir), check)
        try:
            spec = FeatureSpec.model_validate(manifest["spec"])
            featurizer = Featurizer.from_state(spec, manifest["featurizer"])
            config = EncoderConfig.model_validate(manifest["encoder"])
            prefix = "encoder."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            check_state_shapes(config, state)  # before any allocation a manifest's widths ask for
            encoder = Encoder(config)
            encoder.load_state_dict(state, strict=True)
            encoder.eval()
            if config.input_dim != featurizer.n_features:
                raise ArtifactError(f"encoder input {config.input_dim} != featurizer width {featurizer.n_features}")
            scorer = CentroidScorer(
                centroids=tensor_to_numpy(tensors, "scorer.centroids"),
                centroid_class=tensor_to_numpy(tensors, "scorer.centroid_class").astype(np.intp),
                class_names=_class_names(manifest["scorer"]["class_names"]),
                radius=tensor_to_numpy(tensors, "scorer.radius"),
                calibration_scores=tensor_to_numpy(tensors, "scorer.calibration_scores"),
                threshold=float(manifest["scorer"]["threshold"]),
                input_neighbours=_load_input_neighbours(manifest["scorer"], tensors, featurizer.n_features),
            )
            explainer = Explainer(
                tensor_to_numpy(tensors, "explain.feature_mean"),
                tensor_to_numpy(tensors, "explain.feature_spread"),
                featurizer.column_fields,
            )
            version = str(manifest["model_version"])
            detector = cls(featurizer, encoder, scorer, explainer, version, manifest)
            detector.check_scores()
        except ArtifactError as exc:
            raise ArtifactError(f"{model_dir}: {exc}") from exc
        except (LookupError, TypeError, ValueError, ArithmeticError, RuntimeError, ValidationError) as exc:
            raise ArtifactError(f"{model_dir}: inconsistent artifact ({type(exc).__name__}: {exc})") from exc
        return detector

    def check_scores(self) -> None:
        """Check that the parts fit together and score: a model that loads must not fail (or score
        NaN) on the first batch it sees in the worker.

        The probe is each centroid's mean member row (the explainer's statistics: real featurized
        rows of this model's input space), run through the encoder, both score terms and the
        explanation, as the worker runs a flagged event.

        Raises:
            ArtifactError: mismatched shapes, non-finite weights or statistics, or a probe that
                fails or scores anything but finite numbers.
        """
        centroids = self.scorer.centroids
        if centroids.shape[1] != self.encoder.config.embedding_dim:
            raise ArtifactError(
                f"centroids are {centroids.shape[1]} wide but the encoder embeds in {self.encoder.config.embedding_dim}"
            )
        if self.explainer.feature_mean.shape[0] != centroids.shape[0]:
            raise ArtifactError(
                f"explainer statistics for {self.explainer.feature_mean.shape[0]} centroids, "
                f"the scorer has {centroids.shape[0]}"
            )
        bad = [name for name, p in self.encoder.state_dict().items() if not torch.isfinite(p).all()]
        if bad:
            raise ArtifactError(f"encoder weights are not finite: {', '.join(bad[:5])}")
        probe = np.ascontiguousarray(self.explainer.feature_mean, dtype=np.float32)
        try:
            result = self.score_features(probe)
            self.explainer.explain(probe, result.nearest_centroid, [{}] * len(probe))
        except (LookupError, TypeError, ValueError, ArithmeticError, RuntimeError) as exc:
            raise ArtifactError(f"the model fails to score its own centroids ({type(exc).__name__}: {exc})") from exc
        if not np.all(np.isfinite(result.score)):
            raise ArtifactError("the model scores its own centroids as non-finite numbers")


def _class_names(value: object) -> list[str]:
    """The manifest's class names: a list of strings (a lone string is not six one-letter classes)."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ArtifactError(f"scorer.class_names must be a list of strings, got {type(value).__name__}")
    return list(value)


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def _input_tensors(view: InputNeighbours | None) -> dict[str, torch.Tensor]:
    if view is None:
        return {}
    out = {"scorer.input_points": torch.from_numpy(view.points)}
    if view.gauss is not None:
        mapping = view.gauss.mapping
        out |= {
            "scorer.gauss_points": torch.from_numpy(view.gauss.points),
            "scorer.gauss_knots_x": torch.from_numpy(mapping.knots_x),
            "scorer.gauss_knots_z": torch.from_numpy(mapping.knots_z),
            "scorer.gauss_spread": torch.from_numpy(mapping.spread),
        }
    return out


def _input_scales(view: InputNeighbours | None) -> dict[str, float]:
    if view is None:
        return {}
    return {
        "embedding_scale": view.embedding_scale,
        "input_scale": view.input_scale,
        "embedding_weight": view.embedding_weight,
        **({} if view.gauss is None else {"gauss_scale": view.gauss.scale}),
    }


def _load_input_neighbours(
    scorer: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], n_features: int
) -> InputNeighbours | None:
    """The input-space term, or ``None`` for artifacts written before it existed (neither tensor nor scales).

    Raises:
        ArtifactError: only half of it present, or points of the wrong width.
    """
    has_points, has_scales = "scorer.input_points" in tensors, "input_scale" in scorer
    if not has_points and not has_scales:
        return None
    if has_points != has_scales:
        raise ArtifactError("the input-space term is incomplete (reference points and scales go together)")
    view = InputNeighbours(
        tensor_to_numpy(tensors, "scorer.input_points"),
        float(scorer["embedding_scale"]),
        float(scorer["input_scale"]),
        float(scorer.get("embedding_weight", 1.0)),  # artifacts written before the weight: 1
        _load_gauss_term(scorer, tensors),
    )
    if view.n_features != n_features:
        raise ArtifactError(f"input reference points have {view.n_features} features, the featurizer {n_features}")
    return view


def _load_gauss_term(scorer: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> GaussTerm | None:
    """The rank-Gauss third term, or ``None`` when the artifact has none (neither tensors nor scale).

    Raises:
        ArtifactError: only part of it present.
    """
    names = ("scorer.gauss_points", "scorer.gauss_knots_x", "scorer.gauss_knots_z", "scorer.gauss_spread")
    present = [name in tensors for name in names] + ["gauss_scale" in scorer]
    if not any(present):
        return None
    if not all(present):
        raise ArtifactError("the rank-Gauss term is incomplete (points, knots, spreads and scale go together)")
    points, knots_x, knots_z, spread = (tensor_to_numpy(tensors, name) for name in names)
    return GaussTerm(RankGauss(knots_x, knots_z, spread), points, float(scorer["gauss_scale"]))


def _encoder_manifest(config: EncoderConfig) -> dict[str, Any]:
    """The encoder's config for the manifest; ``projection`` only when it is not the plain sphere.

    Builds from before the projection existed read a sphere model unchanged; they refuse a
    stereographic one (unknown field ``projection``) rather than score it wrongly.
    """
    out = config.model_dump(mode="json")
    if out.get("projection") == "sphere":
        del out["projection"]
    return out
