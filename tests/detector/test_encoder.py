"""The encoder's two ways onto the unit sphere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import TinyModel

from detector.encoder import Encoder, EncoderConfig, embed
from detector.features import CLIP
from detector.model import Detector


def _encoder(projection: str, dim: int = 8) -> Encoder:
    torch.manual_seed(0)
    config = EncoderConfig.model_validate(
        {"input_dim": 5, "hidden": (16,), "embedding_dim": dim, "projection": projection}
    )
    return Encoder(config).eval()


@pytest.mark.parametrize("projection", ["sphere", "stereographic"])
def test_output_has_the_configured_size_and_unit_length(projection: str) -> None:
    scale = np.repeat(10.0 ** np.arange(-2, 3), 40)[:, None]  # rows from 0.01 to 100 standard deviations
    x = (np.random.default_rng(0).normal(size=(200, 5)) * scale).astype(np.float32)
    z = embed(_encoder(projection), x)
    assert z.shape == (200, 8)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


def test_stereographic_maps_zero_to_the_south_pole_and_far_inputs_to_the_north_pole() -> None:
    encoder = _encoder("stereographic", dim=3)
    # u = 0 exactly: a network whose last layer outputs nothing but its (zeroed) bias
    with torch.no_grad():
        last = encoder.net[-1]
        assert isinstance(last, torch.nn.Linear) and last.out_features == 2  # one coordinate fewer
        last.weight.zero_()
        last.bias.zero_()
    np.testing.assert_allclose(embed(encoder, np.ones((1, 5), np.float32)), [[0.0, 0.0, -1.0]], atol=1e-7)
    far = _encoder("stereographic", dim=3)
    direction = np.random.default_rng(1).normal(size=(1, 5)).astype(np.float32)
    south = np.array([0.0, 0.0, -1.0], np.float32)
    dists = [float(np.linalg.norm(embed(far, direction * s)[0] - south)) for s in (1e2, 1e4, 1e6)]
    assert dists[0] < dists[1] < dists[2] and dists[2] > 1.999  # farther input -> closer to the north pole


@pytest.mark.parametrize("value", [CLIP, -CLIP, 1e12])
def test_stereographic_stays_finite_on_huge_inputs(value: float) -> None:
    """Featurized values are clipped at ``CLIP``; far beyond it the output is still a unit vector."""
    z = embed(_encoder("stereographic"), np.full((2, 5), value, np.float32))
    assert np.isfinite(z).all()
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


def test_a_manifest_without_projection_loads_as_the_plain_sphere() -> None:
    config = EncoderConfig.model_validate({"input_dim": 4})
    assert config.projection == "sphere"
    with pytest.raises(ValueError, match="projection"):
        EncoderConfig.model_validate({"input_dim": 4, "projection": "mercator"})


def test_a_stereographic_model_round_trips_through_the_artifact(tiny_model: TinyModel, tmp_path: Path) -> None:
    detector = Detector.load(tiny_model.path)
    stereo = Encoder(detector.encoder.config.model_copy(update={"projection": "stereographic"})).eval()
    detector.encoder = stereo
    detector.save(tmp_path / "stereo")
    loaded = Detector.load(tmp_path / "stereo")
    assert loaded.encoder.config.projection == "stereographic"
    x = detector.featurizer.transform(tiny_model.normal_events[:20])
    np.testing.assert_array_equal(embed(loaded.encoder, x), embed(stereo, x))


def test_the_manifest_names_the_projection_only_when_it_is_not_the_plain_sphere(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    detector = Detector.load(tiny_model.path)
    detector.save(tmp_path / "sphere")
    assert "projection" not in json.loads((tmp_path / "sphere" / "manifest.json").read_text())["encoder"]
    detector.encoder = Encoder(detector.encoder.config.model_copy(update={"projection": "stereographic"})).eval()
    detector.save(tmp_path / "stereo")
    assert json.loads((tmp_path / "stereo" / "manifest.json").read_text())["encoder"]["projection"] == "stereographic"
