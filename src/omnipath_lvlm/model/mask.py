"""The `<mask>` machinery: a ResNet mask encoder, a SAM-style mask decoder, BCE + Dice losses.

* ``MaskEncoder``: a binary mask (K, 1, H, W) -> one LLM-width embedding per mask (K, D_llm),
  which replaces the embedding of the corresponding `<mask>` token in a prompt.
* ``MaskDecoder``: SAM's decoder design (a two-way transformer between prompt tokens and the
  image embedding, transposed-convolution upscaling, a hypernetwork MLP producing the mask
  from the output mask token), randomly initialised. Its image embedding is OmniPath's fused
  vision feature map (not SAM's image encoder) and its prompt is a projection of the LLM's
  hidden state at a generated `<mask>`.

Shapes: the image embedding is (K, C, g, g) at SigLIP's token grid; masks come out at (4g, 4g)
and are resized to the target size for the loss. SAM's IoU head and multi-mask outputs are
not built: one `<mask>` yields one mask, and nothing unused is left without gradients.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from omnipath_lvlm.config import MaskConfig


# --------------------------------------------------------------------------- encoder
class MaskEncoder(nn.Module):
    """ResNet (torchvision's BasicBlock ResNet; 2-2-2-2 = ResNet-18) on one channel, projected to the LLM width."""

    def __init__(self, config: MaskConfig, hidden_size: int):
        super().__init__()
        from torchvision.models.resnet import BasicBlock, ResNet

        self.input_size = config.encoder_input_size
        resnet = ResNet(BasicBlock, list(config.encoder_layers), num_classes=hidden_size)
        resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.resnet = resnet

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """(K, 1, H, W) in {0, 1} -> (K, hidden_size)."""
        if masks.ndim != 4 or masks.shape[1] != 1:
            raise ValueError(f"masks for the mask encoder must be (K, 1, H, W), got shape {tuple(masks.shape)}")
        if masks.shape[-2:] != (self.input_size, self.input_size):
            masks = F.interpolate(masks.float(), size=(self.input_size, self.input_size), mode="nearest")
        return self.resnet(masks.to(self.resnet.conv1.weight.dtype))


# --------------------------------------------------------------------------- decoder blocks
class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class MLP(nn.Module):
    def __init__(self, dims: list[int], act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


class Attention(nn.Module):
    """Multi-head attention whose inner width may be downsampled (SAM's cross-attention)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Nq, D), k/v (B, Nk, D) -> (B, Nq, D)."""
        b = q.shape[0]

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, N, inner) -> (B, heads, N, inner/heads)
            return x.reshape(b, x.shape[1], self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v)))
        return self.out_proj(out.transpose(1, 2).reshape(b, q.shape[1], -1))


class TwoWayBlock(nn.Module):
    """Tokens attend to themselves, then to the image; an MLP; then the image attends to the tokens."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int, skip_first_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_token_to_image = Attention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP([dim, mlp_dim, dim])
        self.norm3 = nn.LayerNorm(dim)
        self.cross_image_to_token = Attention(dim, heads, downsample)
        self.norm4 = nn.LayerNorm(dim)
        self.skip_first_pe = skip_first_pe

    def forward(self, tokens, image, token_pe, image_pe):
        if self.skip_first_pe:
            tokens = self.norm1(self.self_attn(tokens, tokens, tokens))
        else:
            q = tokens + token_pe
            tokens = self.norm1(tokens + self.self_attn(q, q, tokens))
        tokens = self.norm2(tokens + self.cross_token_to_image(tokens + token_pe, image + image_pe, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_image_to_token(image + image_pe, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """SAM's two-way transformer: ``depth`` two-way blocks and a final token-to-image attention."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, downsample: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(
            TwoWayBlock(dim, heads, mlp_dim, downsample, skip_first_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn = Attention(dim, heads, downsample)
        self.norm_final = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """image/image_pe (B, C, h, w), tokens (B, N, C) -> tokens (B, N, C), image (B, h*w, C)."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for block in self.blocks:
            tokens, image = block(tokens, image, token_pe, image_pe)
        tokens = self.norm_final(tokens + self.final_attn(tokens + token_pe, image + image_pe, image))
        return tokens, image


class RandomFourierPE(nn.Module):
    """Positional encoding of a (h, w) grid with random spatial frequencies (as SAM)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("gaussian", torch.randn(2, dim // 2))

    def forward(self, h: int, w: int) -> torch.Tensor:
        """-> (1, dim, h, w)."""
        device = self.gaussian.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2)
        proj = (2 * coords - 1) @ self.gaussian.float() * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1).permute(2, 0, 1).unsqueeze(0)


class MaskDecoder(nn.Module):
    """SAM-style mask decoder over an arbitrary image embedding.

    ``transformer`` is passed in (composition, as in SAM). Inputs: the image embedding
    (K, C, g, g) already at the decoder width and prompt tokens (K, P, C); output: mask
    logits (K, 1, 4g, 4g).
    """

    def __init__(self, dim: int, transformer: TwoWayTransformer):
        super().__init__()
        self.transformer = transformer
        self.mask_token = nn.Embedding(1, dim)
        self.pe = RandomFourierPE(dim)
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.hypernet = MLP([dim, dim, dim // 8])

    def forward(self, image_embedding: torch.Tensor, prompt_tokens: torch.Tensor) -> torch.Tensor:
        k, c, h, w = image_embedding.shape
        tokens = torch.cat([self.mask_token.weight.expand(k, 1, c), prompt_tokens], dim=1)  # (K, 1 + P, C)
        image_pe = self.pe(h, w).to(image_embedding.dtype)
        tokens, image = self.transformer(image_embedding, image_pe, tokens)
        image = image.transpose(1, 2).reshape(k, c, h, w)
        upscaled = self.upscale(image)  # (K, C/8, 4h, 4w)
        weights = self.hypernet(tokens[:, 0])  # (K, C/8)
        return torch.einsum("kc,kchw->khw", weights, upscaled).unsqueeze(1)  # (K, 1, 4h, 4w)


class MaskHead(nn.Module):
    """Connects OmniPath to the decoder: vision features and `<mask>` hidden states -> masks."""

    def __init__(self, config: MaskConfig, feature_dim: int, hidden_size: int, decoder: MaskDecoder):
        super().__init__()
        dim = config.decoder_dim
        self.image_neck = nn.Sequential(nn.Conv2d(feature_dim, dim, kernel_size=1, bias=False), LayerNorm2d(dim))
        self.prompt_proj = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, dim))
        self.decoder = decoder

    def forward(self, image_features: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        """image_features (K, g*g, feature_dim), hidden_states (K, D_llm) -> logits (K, 1, 4g, 4g)."""
        k, n, c = image_features.shape
        g = int(round(n**0.5))
        image = self.image_neck(image_features.transpose(1, 2).reshape(k, c, g, g))
        prompt = self.prompt_proj(hidden_states).unsqueeze(1)  # (K, 1, dim)
        return self.decoder(image, prompt)


def build_mask_head(config: MaskConfig, feature_dim: int, hidden_size: int) -> MaskHead:
    transformer = TwoWayTransformer(
        config.decoder_dim, config.decoder_depth, config.decoder_heads, config.decoder_mlp_dim,
        config.decoder_attention_downsample,
    )
    return MaskHead(config, feature_dim, hidden_size, MaskDecoder(config.decoder_dim, transformer))


# --------------------------------------------------------------------------- losses
def mask_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel BCE and soft Dice, averaged over masks.

    logits (K, 1, h, w) are resized to the targets (K, H, W) in {0, 1}.
    """
    if targets.ndim != 3 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{logits.shape[0]} predicted masks but mask targets have shape {tuple(targets.shape)} (expected (K, H, W))"
        )
    logits = F.interpolate(logits.float(), size=targets.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    targets = targets.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    probs = logits.sigmoid().flatten(1)
    flat = targets.flatten(1)
    dice = 1 - (2 * (probs * flat).sum(1) + 1) / (probs.sum(1) + flat.sum(1) + 1)
    return bce, dice.mean()
