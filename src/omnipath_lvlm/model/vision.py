"""The vision tower: SigLIP + UNI encoders with multi-scale feature fusion (MSFF).

For each scale ``s`` in ``config.scales`` the image is resized to ``base * s`` and cut into
``s * s`` tiles of the base size. Every tile of every scale goes through each encoder in
one batched call; tile features are reassembled by position into a ``(g * s) x (g * s)``
grid, area-pooled back to the base grid ``g x g`` and concatenated on channels, so the
LLM sees ``g * g`` tokens whatever the scales::

    pixel_values (B, 3, S_max, S_max)                 SigLIP-normalised, S_max = base * max(scales)
      -> tiles  (B * sum(s^2), 3, base, base)
      -> SigLIP (T, g*g, C_s)  and  UNI (T, g_u*g_u, C_u)
      -> per scale: reassemble (B, C, g*s, g*s) -> area-pool (B, C, g, g)
      -> UNI grid g_u resampled to g (bilinear)
      -> concat channels: (B, g*g, len(scales) * (C_s + C_u))

The processor prepares one image at ``S_max``; smaller scales are made here by
antialiased bilinear downsizing. UNI expects ImageNet normalisation, so its input is
re-normalised from SigLIP's (an exact affine map), instead of shipping two pixel tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.siglip.modeling_siglip import SiglipEncoder, SiglipVisionEmbeddings

from omnipath_lvlm.config import OmniPathVisionConfig, UniConfig


class SiglipTower(nn.Module):
    """SigLIP's patch embedding and the encoder layers up to the feature layer.

    The layers after the feature layer, the post-layernorm and the pooling head are not
    built (LLaVA never uses them), so they cost no memory and get no (missing) gradients.
    """

    def __init__(self, config: OmniPathVisionConfig):
        super().__init__()
        self.config = config.siglip_config  # shared, so attention-implementation changes reach the layers
        self.embeddings = SiglipVisionEmbeddings(self.config)
        self.encoder = SiglipEncoder(self.config)
        del self.encoder.layers[config.num_siglip_layers_used :]  # hidden state `feature_layer` is the last one kept

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(T, 3, base, base) -> (T, g*g, C_s)."""
        hidden = self.embeddings(pixel_values)
        return self.encoder(inputs_embeds=hidden).last_hidden_state


class UniTower(nn.Module):
    """UNI: a timm ViT whose normalised patch tokens (no class/register tokens) are used."""

    def __init__(self, config: UniConfig):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.config = config
        self.vit = VisionTransformer(**config.timm_kwargs())

    @property
    def hidden_size(self) -> int:
        return self.config.embed_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) ImageNet-normalised -> (T, (H/p)*(W/p), C_u)."""
        tokens = self.vit.forward_features(pixel_values)  # (T, prefix + N, C_u)
        return tokens[:, self.vit.num_prefix_tokens :]


def image_to_tiles(images: torch.Tensor, scale: int, base: int) -> torch.Tensor:
    """Resize (B, 3, S, S) to ``base * scale`` and cut into row-major tiles: (B * scale^2, 3, base, base)."""
    size = base * scale
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    b, c = images.shape[:2]
    tiles = images.reshape(b, c, scale, base, scale, base).permute(0, 2, 4, 1, 3, 5)  # (B, s, s, 3, base, base)
    return tiles.reshape(b * scale * scale, c, base, base)


def tiles_to_grid(tokens: torch.Tensor, batch: int, scale: int) -> torch.Tensor:
    """Reassemble row-major tile tokens (B * s^2, g*g, C) into one grid (B, C, g*s, g*s)."""
    n, hw, c = tokens.shape
    g = int(round(hw**0.5))
    if g * g != hw or n != batch * scale * scale:
        raise ValueError(f"cannot reassemble {n} tiles of {hw} tokens into {batch} images at scale {scale}")
    grid = tokens.reshape(batch, scale, scale, g, g, c).permute(0, 5, 1, 3, 2, 4)  # (B, C, s, g, s, g)
    return grid.reshape(batch, c, scale * g, scale * g)


class MultiScaleTower(nn.Module):
    """SigLIP (+ UNI) over every scale, fused on channels at SigLIP's base grid."""

    def __init__(self, config: OmniPathVisionConfig, siglip: SiglipTower, uni: UniTower | None = None):
        super().__init__()
        self.config = config
        self.siglip = siglip
        self.uni = uni
        if uni is not None:
            # x_uni = (x_siglip * s_std + s_mean - u_mean) / u_std = x_siglip * scale + shift, per channel
            s_mean, s_std = config.image_mean, config.image_std
            u_mean, u_std = uni.config.image_mean, uni.config.image_std
            self.uni_affine = (
                tuple(s / u for s, u in zip(s_std, u_std)),
                tuple((sm - um) / u for sm, um, u in zip(s_mean, u_mean, u_std)),
            )

    def to_uni_normalisation(self, tiles: torch.Tensor) -> torch.Tensor:
        """Re-normalise SigLIP-normalised pixels (T, 3, H, W) to UNI's (ImageNet) statistics."""
        scale, shift = (torch.tensor(v, dtype=tiles.dtype, device=tiles.device).view(1, 3, 1, 1) for v in self.uni_affine)
        return tiles * scale + shift

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def _encode(self, encoder: nn.Module, tiles: torch.Tensor, batch: int, grid: int) -> torch.Tensor:
        """Encode all tiles of all scales in one call; return fused (B, C * n_scales, grid, grid)."""
        tokens = encoder(tiles)  # (T, n, C)
        fused, start = [], 0
        for s in self.config.scales:
            count = batch * s * s
            g = tiles_to_grid(tokens[start : start + count], batch, s)  # (B, C, g_e*s, g_e*s)
            start += count
            if s > 1:
                g = F.avg_pool2d(g, kernel_size=s)  # area-pool back to the encoder's base grid
            if g.shape[-1] != grid:
                g = F.interpolate(g, size=(grid, grid), mode="bilinear", align_corners=False)
            fused.append(g)
        return torch.cat(fused, dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S_max, S_max) SigLIP-normalised -> (B, g*g, feature_dim)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W) RGB, got shape {tuple(pixel_values.shape)}")
        expected = self.config.max_image_size
        if pixel_values.shape[-2:] != (expected, expected):
            raise ValueError(
                f"pixel_values must be {expected}x{expected} (base {self.config.image_size} x largest scale "
                f"{max(self.config.scales)}), got {tuple(pixel_values.shape[-2:])}"
            )
        batch, base, grid = pixel_values.shape[0], self.config.image_size, self.config.grid_size
        tiles = torch.cat([image_to_tiles(pixel_values, s, base) for s in self.config.scales])  # (T, 3, base, base)
        maps = [self._encode(self.siglip, tiles, batch, grid)]
        if self.uni is not None:
            maps.append(self._encode(self.uni, self.to_uni_normalisation(tiles), batch, grid))
        fused = torch.cat(maps, dim=1)  # (B, feature_dim, g, g)
        return fused.flatten(2).transpose(1, 2)  # (B, g*g, feature_dim)


def build_vision_tower(config: OmniPathVisionConfig) -> MultiScaleTower:
    uni = UniTower(config.uni_config) if config.uni_config is not None else None
    return MultiScaleTower(config, siglip=SiglipTower(config), uni=uni)
