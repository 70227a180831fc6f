"""Small builders shared by the model tests."""
from __future__ import annotations

import torch

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import OmniPathProcessor


def tiny(seed: int = 0, **overrides) -> tuple[OmniPathForConditionalGeneration, OmniPathProcessor]:
    torch.manual_seed(seed)
    config = OmniPathConfig.from_name("test-tiny", **overrides)
    return OmniPathForConditionalGeneration(config), OmniPathProcessor.for_config(config)


def random_pixels(processor: OmniPathProcessor, n: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = processor.max_image_size
    return torch.randn(n, 3, s, s, generator=g)
