"""The embedding network: an MLP whose output lies on the unit sphere."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class EncoderConfig(BaseModel):
    """Frozen architecture of an :class:`Encoder` (saved in the artifact manifest).

    Attributes:
        input_dim: featurizer width.
        hidden: widths of the hidden layers.
        embedding_dim: output dimension.
        dropout: dropout between hidden layers during training.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_dim: int = Field(gt=0)
    hidden: tuple[int, ...] = (256, 128)
    embedding_dim: int = Field(default=32, gt=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class Encoder(nn.Module):
    """MLP ``input_dim -> hidden... -> embedding_dim`` with L2-normalised output.

    ``forward`` maps a ``(batch, input_dim)`` float32 tensor to ``(batch, embedding_dim)`` unit
    vectors, so Euclidean distances between embeddings lie in ``[0, 2]``.
    """

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
        layers.append(nn.Linear(width, config.embedding_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=1)


def embed(encoder: Encoder, features: NDArray[np.float32]) -> NDArray[np.float32]:
    """``(n, F)`` featurized rows -> ``(n, D)`` unit-norm embeddings, one forward pass, no autograd."""
    with torch.inference_mode():
        out = encoder(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
    embeddings: NDArray[np.float32] = out.numpy()
    return embeddings
