"""Detector save/load round trip, tamper refusal, no unpickling, and explanations."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_model import TinyModel

from detector.artifact import FORMAT_VERSION, MANIFEST, WEIGHTS, _manifest_digest, read_artifact, write_artifact
from detector.encoder import Encoder, EncoderConfig
from detector.errors import ArtifactError, InvalidEventError
from detector.explain import Explainer, FieldDeviation, describe
from detector.features import Featurizer
from detector.model import Detector, _load_gauss_term
from detector.schema import FeatureSpec
from detector.scorer import CentroidScorer


@pytest.fixture
def artifact(tiny_model: TinyModel, tmp_path: Path) -> Path:
    """A private copy of the tiny model artifact, free to tamper with."""
    return Path(shutil.copytree(tiny_model.path, tmp_path / "model"))


def events(tiny_model: TinyModel, n: int = 40) -> list[dict[str, Any]]:
    return tiny_model.normal_events[: n // 2] + tiny_model.attack_events[: n // 2]


def test_artifact_holds_only_the_manifest_and_safetensors_weights(artifact: Path) -> None:
    assert sorted(p.name for p in artifact.iterdir()) == [MANIFEST, WEIGHTS]
    manifest = json.loads((artifact / MANIFEST).read_text(encoding="utf-8"))
    has_gauss = Detector.load(artifact).scorer.input_neighbours.gauss is not None  # type: ignore[union-attr]
    assert manifest["format_version"] == (2 if has_gauss else 1)  # 1 unless the score has a rank-Gauss term
    assert {"model_version", "created_at", "spec", "featurizer", "encoder", "scorer", "files"} <= set(manifest)
    assert set(manifest["files"]) == {WEIGHTS}


def test_load_never_unpickles(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    detector = Detector.load(artifact)
    assert detector.featurizer.n_features > 0


def test_save_then_load_gives_identical_results(tiny_model: TinyModel, tmp_path: Path) -> None:
    original = Detector.load(tiny_model.path)
    batch = events(tiny_model)
    before = original.score_records(batch)
    original.save(tmp_path / "again", metadata={"training": {"note": "round trip"}})
    reloaded = Detector.load(tmp_path / "again")
    after = reloaded.score_records(batch)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.flagged, before.flagged)
    np.testing.assert_array_equal(after.p_values, before.p_values)
    np.testing.assert_array_equal(after.margin, before.margin)
    assert after.nearest_class == before.nearest_class
    assert after.threshold == before.threshold == tiny_model.threshold
    assert [[d.as_dict() for d in e] for e in after.explanations] == [
        [d.as_dict() for d in e] for e in before.explanations
    ]
    assert reloaded.version == original.version  # same tensors -> same content hash
    assert reloaded.manifest["training"] == {"note": "round trip"}


def test_score_records_shapes_and_a_bad_record(tiny_model: TinyModel) -> None:
    detector = Detector.load(tiny_model.path)
    result = detector.score_records(events(tiny_model, 10), top=2)
    assert result.scores.shape == result.p_values.shape == result.flagged.shape == (10,)
    assert len(result.nearest_class) == len(result.explanations) == 10
    assert all(len(e) == 2 for e in result.explanations)
    assert result.model_version == tiny_model.version
    bad = [dict(tiny_model.normal_events[0]), dict(tiny_model.normal_events[1], src_bytes="lots")]
    with pytest.raises(InvalidEventError, match="record 1") as info:
        detector.score_records(bad)
    assert info.value.field == "src_bytes"


def flip_one_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(artifact: Path, change: Any) -> None:
    manifest = json.loads((artifact / MANIFEST).read_text(encoding="utf-8"))
    change(manifest)
    (artifact / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def test_refuses_a_byte_edited_weights_file(artifact: Path) -> None:
    weights = artifact / WEIGHTS
    flip_one_byte(weights, weights.stat().st_size - 3)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        Detector.load(artifact)


def test_refuses_truncated_weights(artifact: Path) -> None:
    weights = artifact / WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="tampered or truncated"):
        Detector.load(artifact)


def test_refuses_an_edited_threshold(artifact: Path) -> None:
    edit_manifest(artifact, lambda m: m["scorer"].update(threshold=m["scorer"]["threshold"] * 10))
    with pytest.raises(ArtifactError, match="manifest hash mismatch"):
        Detector.load(artifact)


def test_refuses_a_bumped_format_version(artifact: Path) -> None:
    edit_manifest(artifact, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ArtifactError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        Detector.load(artifact)


def rehashed(change: Any) -> Any:
    """``change``, then the manifest's own hash recomputed (as a hand edit by someone who knows how)."""

    def edit(manifest: dict[str, Any]) -> None:
        change(manifest)
        manifest["manifest_sha256"] = _manifest_digest(manifest)

    return edit


def test_refuses_a_boolean_format_version(artifact: Path) -> None:
    edit_manifest(artifact, rehashed(lambda m: m.update(format_version=True)))  # True == 1 in Python
    with pytest.raises(ArtifactError, match="format version True is not supported"):
        Detector.load(artifact)


def test_refuses_class_names_that_are_not_a_list_of_strings(artifact: Path) -> None:
    edit_manifest(artifact, rehashed(lambda m: m["scorer"].update(class_names="normal")))
    with pytest.raises(ArtifactError, match="class_names must be a list of strings, got str"):
        Detector.load(artifact)


@pytest.mark.parametrize(("weight", "gauss", "version"), [(1.0, False, 1), (0.0, False, 2), (0.5, False, 2)])
def test_a_model_older_builds_would_misscore_is_written_as_format_2(
    tiny_model: TinyModel, tmp_path: Path, weight: float, gauss: bool, version: int
) -> None:
    """Builds that read only format 1 know neither the rank-Gauss term nor the embedding weight."""
    detector = Detector.load(tiny_model.path)
    view = detector.scorer.input_neighbours
    assert view is not None
    detector.scorer.input_neighbours = view.with_terms(weight, view.gauss if gauss else None)
    out = detector.save(tmp_path / "model")
    assert json.loads((out / MANIFEST).read_text(encoding="utf-8"))["format_version"] == version
    np.testing.assert_allclose(
        Detector.load(out).score_records(events(tiny_model)).scores,
        detector.score_records(events(tiny_model)).scores,
        rtol=1e-6,
    )


def test_writing_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown artifact format version 3"):
        write_artifact(tmp_path / "model", {}, {}, format_version=3)
    assert not list(tmp_path.iterdir())


def test_an_incomplete_rank_gauss_term_is_refused() -> None:
    points = torch.zeros((2, 3))
    with pytest.raises(ArtifactError, match="rank-Gauss term is incomplete"):
        _load_gauss_term({"gauss_scale": 1.0}, {"scorer.gauss_points": points})
    assert _load_gauss_term({}, {}) is None


@pytest.mark.parametrize(("name", "message"), [(WEIGHTS, "missing file"), (MANIFEST, "no manifest.json")])
def test_refuses_a_deleted_file(artifact: Path, name: str, message: str) -> None:
    (artifact / name).unlink()
    with pytest.raises(ArtifactError, match=message):
        Detector.load(artifact)


# The last: an integer of over 4,300 digits, which Python's JSON reader refuses with a plain
# ValueError (found in review: it escaped as one, and the worker's start-up crashed on it).
@pytest.mark.parametrize(
    "content", [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b"", b'{"format_version": ' + b"9" * 5000 + b"}"]
)
def test_refuses_a_garbage_manifest(artifact: Path, content: bytes) -> None:
    (artifact / MANIFEST).write_bytes(content)
    with pytest.raises(ArtifactError, match=r"not valid JSON|not a JSON object"):
        Detector.load(artifact)


def test_refuses_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="model directory not found"):
        Detector.load(tmp_path / "nowhere")


def test_refuses_a_file_in_place_of_the_directory(tmp_path: Path) -> None:
    (tmp_path / "model").write_text("hello", encoding="utf-8")
    with pytest.raises(ArtifactError, match="model is a file, not a model directory"):
        Detector.load(tmp_path / "model")


def test_save_replaces_an_existing_artifact_atomically(tiny_model: TinyModel, tmp_path: Path) -> None:
    detector = Detector.load(tiny_model.path)
    target = tmp_path / "model"
    detector.save(target)
    detector.save(target, metadata={"training": {"second": True}})
    assert Detector.load(target).manifest["training"] == {"second": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary siblings left behind


def test_explanation_names_the_field_that_deviates(tiny_model: TinyModel) -> None:
    detector = Detector.load(tiny_model.path)
    base = dict(tiny_model.normal_events[0])
    assert "count" in detector.spec.numeric and "count" not in detector.spec.log_scale
    odd = dict(base, count=1_000_000)
    result = detector.score_records([base, odd], top=3)
    assert result.explanations[1][0].field == "count"
    assert result.explanations[1][0].value == 1_000_000
    assert result.explanations[1][0].deviation > 10 * result.explanations[1][1].deviation
    assert result.scores[1] > result.scores[0]
    text = detector.describe(result.explanations[1], 0)
    assert text.startswith("count=1000000 (") and text.endswith("vs class 'normal'")


def test_explanation_uses_the_nearest_centroid_when_classes_are_given_out_of_order(tmp_path: Path) -> None:
    """Centroids listed class 1 first: the explanation must still use the stats of the centroid that is nearest."""
    spec = FeatureSpec(numeric=["a", "b"])
    featurizer = Featurizer(spec).fit([{"a": 0.0, "b": 0.0}, {"a": 2.0, "b": 2.0}])  # z = value - 1
    encoder = Encoder(EncoderConfig(input_dim=2, hidden=(), embedding_dim=2)).eval()
    layer = encoder.net[0]
    assert isinstance(layer, torch.nn.Linear)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2))
        layer.bias.zero_()
    # Centroid 0 (class "right") sits on +a, centroid 1 (class "up") on +b.
    scorer = CentroidScorer(
        np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32),
        np.array([1, 0], dtype=np.intp),
        ["up", "right"],
        np.array([1.0, 1.0], dtype=np.float32),
        np.array([0.1, 0.2]),
        0.5,
    )
    # Members of centroid 0 have a ~ +1 and b ~ 0 exactly; members of centroid 1 the other way round.
    mean = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    spread = np.full((2, 2), 0.1, dtype=np.float32)
    detector = Detector(featurizer, encoder, scorer, Explainer(mean, spread, featurizer.column_fields))
    record = {"a": 2.0, "b": 1.5}  # featurized (1.0, 0.5): nearest to centroid 0, off along b only
    for candidate in (detector, Detector.load(detector.save(tmp_path / "model"))):
        result = candidate.score_records([record], top=2)
        assert result.nearest_class == ["right"]
        assert result.explanations[0][0].field == "b"
        assert result.explanations[0][0].deviation == pytest.approx(5.0, rel=1e-4)
        assert result.explanations[0][1].deviation == pytest.approx(0.0, abs=1e-4)


def _rewrite(artifact: Path, edit: Any) -> None:
    """Rewrite an artifact after ``edit(manifest, tensors)`` (hashes recomputed: a consistent artifact)."""
    manifest, tensors = read_artifact(artifact)
    edit(manifest, tensors)
    body = {k: v for k, v in manifest.items() if k not in ("format_version", "files", "manifest_sha256")}
    write_artifact(artifact, body, tensors)


def test_an_artifact_from_before_the_input_term_scores_with_the_embedding_alone(
    artifact: Path, tiny_model: TinyModel
) -> None:
    def drop(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
        del tensors["scorer.input_points"], manifest["scorer"]["embedding_scale"], manifest["scorer"]["input_scale"]

    _rewrite(artifact, drop)
    old = Detector.load(artifact)
    assert old.scorer.input_neighbours is None
    batch = events(tiny_model)
    features = old.featurizer.transform(batch)
    embedding_only = old.scorer.geometry.nearest(old.embed(features)).score
    np.testing.assert_array_equal(old.score_records(batch).scores, embedding_only)


def test_the_embedding_weight_travels_with_the_artifact_and_defaults_to_one(
    artifact: Path, tiny_model: TinyModel
) -> None:
    batch = events(tiny_model)
    detector = Detector.load(artifact)
    features = detector.featurizer.transform(batch)
    view = detector.scorer.input_neighbours
    assert view is not None and view.embedding_weight == 1.0
    input_alone = view.distances(features) / view.input_scale

    def set_weight(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
        manifest["scorer"]["embedding_weight"] = 0.0

    _rewrite(artifact, set_weight)
    np.testing.assert_allclose(Detector.load(artifact).score_records(batch).scores, input_alone, rtol=1e-12)

    def drop_weight(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
        del manifest["scorer"]["embedding_weight"]  # written before the weight existed

    _rewrite(artifact, drop_weight)
    assert Detector.load(artifact).scorer.input_neighbours.embedding_weight == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize("half", ["points-only", "scales-only", "wrong-width"])
def test_refuses_an_incomplete_or_misshapen_input_term(artifact: Path, half: str) -> None:
    def edit(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
        if half == "points-only":
            del manifest["scorer"]["input_scale"]
        elif half == "scales-only":
            del tensors["scorer.input_points"]
        else:
            tensors["scorer.input_points"] = tensors["scorer.input_points"][:, :-1].contiguous()

    _rewrite(artifact, edit)
    with pytest.raises(ArtifactError, match="input"):
        Detector.load(artifact)


def _nan_first_weight(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
    name = next(k for k in sorted(tensors) if k.startswith("encoder.") and k.endswith("weight"))
    tensors[name] = torch.full_like(tensors[name], float("nan"))


def _wider_centroids(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
    c = tensors["scorer.centroids"]
    tensors["scorer.centroids"] = torch.cat([c, torch.zeros(c.shape[0], 3, dtype=c.dtype)], dim=1)


def _one_centroid_short_explainer(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
    for name in ("explain.feature_mean", "explain.feature_spread"):
        tensors[name] = tensors[name][:-1].contiguous()


def _flat_explainer(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
    for name in ("explain.feature_mean", "explain.feature_spread"):
        tensors[name] = tensors[name].flatten().contiguous()


def _nan_centroid(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
    tensors["scorer.centroids"][0, 0] = float("nan")


def _nan_calibration(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
    tensors["scorer.calibration_scores"][0] = float("nan")


def _huge_threshold(manifest: dict[str, Any], tensors: dict[str, Any]) -> None:
    manifest["scorer"]["threshold"] = 10**400  # valid JSON; float() of it overflows


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_nan_first_weight, "encoder weights are not finite"),
        (_wider_centroids, "centroids are .* wide but the encoder embeds in"),
        (_one_centroid_short_explainer, "explainer statistics for .* centroids"),
        (_flat_explainer, "explainer statistics must be two"),
        (_nan_centroid, "centroids must be finite"),
        (_nan_calibration, "calibration scores must be a vector of finite numbers"),
        (_huge_threshold, "OverflowError"),
    ],
)
def test_refuses_a_consistent_artifact_that_cannot_score(artifact: Path, edit: Any, message: str) -> None:
    """Valid hashes, parts that do not fit together: refused at load with the reason, never a bare
    IndexError or a model that crashes the worker's first batch or scores NaN (found in review)."""
    _rewrite(artifact, edit)
    with pytest.raises(ArtifactError, match=message) as refused:
        Detector.load(artifact)
    assert str(artifact) in str(refused.value)


def test_a_loaded_model_has_scored_its_own_centroids(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe at load runs the worker's path for flagged events: scores and explanations."""
    seen: list[int] = []
    explain = Explainer.explain

    def counting(self: Explainer, features: Any, centroid: Any, records: Any, top: int = 3) -> Any:
        seen.append(len(records))
        return explain(self, features, centroid, records, top)

    monkeypatch.setattr(Explainer, "explain", counting)
    detector = Detector.load(artifact)
    assert seen == [len(detector.scorer.centroids)]


def test_an_explanation_text_shows_at_most_eighty_characters_of_a_value() -> None:
    """Found in review: a 30 kB value of private-use characters became a 90 kB escaped text."""
    long = "\ue000" * 30_000
    text = describe([FieldDeviation("service", long, 9.0), FieldDeviation("bytes", 12, 3.0)], "web")
    assert text == f"service={repr(long)[:77]}... (9.0σ), bytes=12 (3.0σ) vs class 'web'"
