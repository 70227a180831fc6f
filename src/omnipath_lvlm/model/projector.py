"""The vision-to-language projector: LLaVA-1.5's two-layer MLP with GELU."""
from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from omnipath_lvlm.config import ProjectorConfig


class MultiModalProjector(nn.Module):
    """(N, feature_dim) -> (N, hidden_size). Parameter names match transformers' Llava projector."""

    def __init__(self, config: ProjectorConfig, in_features: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size, bias=config.bias)
        self.act = ACT2FN[config.hidden_act]
        self.linear_2 = nn.Linear(hidden_size, hidden_size, bias=config.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))
