"""Fixtures shared by the detector tests."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_model import TinyModel

from detector.artifact import read_artifact

Content = tuple[dict[str, Any], dict[str, torch.Tensor]]


@pytest.fixture
def content(tiny_model: TinyModel) -> Content:
    """A manifest body and tensors to write with ``write_artifact``, taken from the tiny model."""
    manifest, tensors = read_artifact(tiny_model.path)
    body = {k: v for k, v in manifest.items() if k not in ("format_version", "files", "manifest_sha256")}
    return body, tensors
