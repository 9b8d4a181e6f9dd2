"""The embedding network: an MLP whose output lies on the unit sphere.

Two ways onto the sphere (``EncoderConfig.projection``):

* ``sphere``: divide the MLP's output by its length (L2 normalisation). Only the direction of the
  output counts, so an input far off the training data can land anywhere, next to normal rows
  included.
* ``stereographic``: the MLP outputs ``u`` with one coordinate fewer and the inverse stereographic
  projection ``(2u, |u|^2 - 1) / (|u|^2 + 1)`` puts it on the sphere (unit length exactly). ``u = 0``
  is the south pole and ``|u| -> infinity`` the north pole, so the distance to the south pole grows
  with ``|u|``. An MLP is asymptotically linear, so an input far off the data gets a large ``u``
  and lands near the north pole, away from normal rows trained to sit compactly near ``u = 0``.
  The trainer uses it when the normal data is one class (see :mod:`training.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from detector.errors import ArtifactError


class EncoderConfig(BaseModel):
    """Frozen architecture of an :class:`Encoder` (saved in the artifact manifest).

    Attributes:
        input_dim: featurizer width.
        hidden: widths of the hidden layers.
        embedding_dim: output dimension.
        dropout: dropout between hidden layers during training.
        projection: how the MLP's output is put on the unit sphere (module docstring).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_dim: int = Field(gt=0)
    hidden: tuple[int, ...] = (256, 128)
    embedding_dim: int = Field(default=32, gt=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    projection: Literal["sphere", "stereographic"] = "sphere"


class Encoder(nn.Module):
    """MLP ``input_dim -> hidden... -> embedding_dim`` with output on the unit sphere.

    ``forward`` maps a ``(batch, input_dim)`` float32 tensor to ``(batch, embedding_dim)`` unit
    vectors, so Euclidean distances between embeddings lie in ``[0, 2]``.
    """

    #: Largest magnitude of a stereographic coordinate (keeps ``|u|^2`` finite in float32).
    MAX_COORDINATE = 1e6

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.input_dim
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.GELU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        stereographic = config.projection == "stereographic"
        layers.append(nn.Linear(width, config.embedding_dim - 1 if stereographic else config.embedding_dim))
        self.net = nn.Sequential(*layers)
        self.stereographic = stereographic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.net(x)
        if not self.stereographic:
            return nn.functional.normalize(u, dim=1)
        u = u.clamp(-self.MAX_COORDINATE, self.MAX_COORDINATE)
        sq = (u * u).sum(dim=1, keepdim=True)
        out: torch.Tensor = torch.cat([2.0 * u, sq - 1.0], dim=1) / (sq + 1.0)
        return out


def embed(encoder: Encoder, features: NDArray[np.float32]) -> NDArray[np.float32]:
    """``(n, F)`` featurized rows -> ``(n, D)`` unit-norm embeddings, one forward pass, no autograd."""
    with torch.inference_mode():
        out = encoder(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
    embeddings: NDArray[np.float32] = out.numpy()
    return embeddings


def check_state_shapes(config: EncoderConfig, state: Mapping[str, torch.Tensor]) -> None:
    """The weights hold exactly the tensors ``config`` builds, shape for shape: checked on a
    shape-only (``meta``) encoder, so a manifest claiming huge layers over a small weights file
    is refused without allocating them."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in Encoder(config).state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        differ = sorted(n for n in expected.keys() | found.keys() if expected.get(n) != found.get(n))
        shown = ", ".join(f"{n}: {found.get(n)} for {expected.get(n)}" for n in differ[:3])
        raise ArtifactError(f"encoder weights do not match the encoder config ({shown})")
