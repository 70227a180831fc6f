"""The paper's figure 2 analysis: where the first LLM layer looks in an image.

Three head-averaged, first-layer attention maps over the image tokens (section 3.2):

1. A_last: the last prompt token's attention, which PGFC uses to pick detail regions;
2. the attention of a *key* image token (the one A_last weights most) over all image
   tokens: key tokens gather from every preceding image token;
3. the attention of an *ordinary* image token (the one whose A_last is the median) over
   all image tokens: ordinary tokens look mostly at their neighbours.

An image token only attends to the tokens before it (causal attention), so the maps of
panels 2 and 3 are zero after the token itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from omnipath_lvlm.wsi.outputs import heatmap_overlay
from omnipath_lvlm.wsi.pgfc import build_conversation, first_layer_attention, prompt_embeddings

KEY_RGB = (230, 0, 0)
ORDINARY_RGB = (255, 220, 0)


@dataclass
class AttentionMaps:
    """Layer-0, head-averaged attention maps over an image's (G, G) token grid."""

    last: np.ndarray  # (G, G) last prompt token -> image tokens (A_last)
    key: np.ndarray  # (G, G) key image token -> image tokens
    ordinary: np.ndarray  # (G, G) ordinary image token -> image tokens
    key_token: tuple[int, int]  # (row, col)
    ordinary_token: tuple[int, int]  # (row, col)


def attention_maps(model, processor, image: Image.Image, question: str) -> AttentionMaps:
    """Encode ``image`` with ``question`` (one user turn) and read the three maps of figure 2."""
    from omnipath_lvlm.processing import pad_batch

    grid = int(model.config.vision_config.grid_size)
    enc = processor.encode_conversation(build_conversation(question), image_pools=[1], add_generation_prompt=True)
    batch = pad_batch([enc], processor.tokenizer.pad_token_id, left=True)
    ids, attention = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)  # (1, L)
    with torch.no_grad():
        encoded = model.encode_images(processor.preprocess_images([image]).to(model.device), image_pool=[1])
        embeds = prompt_embeddings(model, ids, encoded)  # (1, L, D)
        image_positions = torch.nonzero(ids[0] == model.config.image_token_id).flatten()  # (G*G,)
        last = first_layer_attention(model, embeds, attention, [ids.shape[1] - 1])[0, image_positions]  # (G*G,)
        order = torch.argsort(last, descending=True, stable=True)
        key_index, ordinary_index = int(order[0]), int(order[len(order) // 2])
        rows = first_layer_attention(
            model, embeds, attention, [int(image_positions[key_index]), int(image_positions[ordinary_index])]
        )[:, image_positions]  # (2, G*G)

    def as_grid(values: torch.Tensor) -> np.ndarray:
        return values.float().cpu().numpy().reshape(grid, grid)

    return AttentionMaps(
        last=as_grid(last), key=as_grid(rows[0]), ordinary=as_grid(rows[1]),
        key_token=divmod(key_index, grid), ordinary_token=divmod(ordinary_index, grid),
    )


def _token_rect(token: tuple[int, int], grid: int, size: int) -> tuple[float, float, float, float]:
    row, col = token
    cell = size / grid
    return (col * cell, row * cell, (col + 1) * cell - 1, (row + 1) * cell - 1)


def _seen_by(token: tuple[int, int], grid: int) -> np.ndarray:
    """(G, G) bool: the image tokens at or before ``token`` in row-major order (what it can attend to)."""
    index = token[0] * grid + token[1]
    return (np.arange(grid * grid) <= index).reshape(grid, grid)


def attention_figure(image: Image.Image, maps: AttentionMaps, panel_size: int = 384) -> Image.Image:
    """Three panels (A_last with the key token in red and the ordinary one in yellow; key; ordinary).

    The image is stretched to a square as the model sees it; each map is scaled to its own range.
    """
    grid = maps.last.shape[0]
    square = image.convert("RGB").resize((panel_size, panel_size), Image.Resampling.BICUBIC)
    title_height = 18
    figure = Image.new("RGB", (3 * panel_size + 20, panel_size + title_height), (255, 255, 255))
    panels = [
        ("last token -> image tokens", maps.last, None, [(maps.key_token, KEY_RGB), (maps.ordinary_token, ORDINARY_RGB)]),
        (f"key token {maps.key_token} -> image tokens", maps.key, _seen_by(maps.key_token, grid), [(maps.key_token, KEY_RGB)]),
        (f"ordinary token {maps.ordinary_token} -> image tokens", maps.ordinary, _seen_by(maps.ordinary_token, grid),
         [(maps.ordinary_token, ORDINARY_RGB)]),
    ]
    draw = ImageDraw.Draw(figure)
    line = max(2, panel_size // 150)
    for i, (title, values, seen, marks) in enumerate(panels):
        # an image token sees only the tokens up to itself: colour (and scale over) just those
        shown = values if seen is None else np.where(seen, values, np.nan)
        panel = heatmap_overlay(square, shown, mask=seen)
        panel_draw = ImageDraw.Draw(panel)
        for token, rgb in marks:
            panel_draw.rectangle(_token_rect(token, grid, panel_size), outline=rgb, width=line)
        x = i * (panel_size + 10)
        figure.paste(panel, (x, title_height))
        draw.text((x + 2, 3), title, fill=(0, 0, 0))
    return figure
