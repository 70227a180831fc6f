"""Prompt-guided detail feature completion (PGFC, paper section 4.2).

A whole slide is first seen as one thumbnail, stretched to the model's square input. The
last prompt token's attention over the thumbnail's image tokens in the LLM's first layer,
averaged over heads (the paper's A_last, section 3.2), says which parts of the image the
answer is about to draw on. PGFC drops the tokens that lie on background, keeps the top-S,
reads the slide regions under those token cells at high resolution, encodes them in one
batch through the same vision tower (average-pooled to fewer tokens) and answers from the
thumbnail, the regions (each preceded by a text description of its position, written by
`omnipath_lvlm.data.dataset.describe_region` exactly as in training) and the prompt.

This module holds the pieces; `omnipath_lvlm.wsi.pipeline` strings them together:

* `first_layer_attention` / `last_token_image_attention`: A_last without running the LLM,
* `PGFCConfig` and `select_tokens`: which token cells get a detail region,
* `cell_box` / `region_box`: token cell -> level-0 box, `relative_box`: -> 0..1 of the slide,
* `read_regions` / `encode_regions`: pixels and vision tokens of the chosen regions,
* `build_conversation`: the prompt with the thumbnail and the regions in place.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from PIL import Image

from omnipath_lvlm.config import IMAGE_TOKEN
from omnipath_lvlm.model import EncodedImages
from omnipath_lvlm.model.focus import first_layer_attention as layer0_attention
from omnipath_lvlm.wsi import parse_window_um

Box = tuple[float, float, float, float]  # (x1, y1, x2, y2)
Mode = Literal["attention", "random", "none"]
MODES: tuple[str, ...] = ("attention", "random", "none")
PGFC_FILE = "pgfc.json"  # beside a model's weights: the PGFC settings it was trained to read
_RUN_TIME_FIELDS = ("mode", "seed")  # chosen per question, never stored with a model


class RegionSource(Protocol):
    """What PGFC needs from a slide: its level-0 size and region reads (see `wsi.slide.Slide`)."""

    @property
    def dimensions(self) -> tuple[int, int]: ...

    def read_region(
        self, location_level0: tuple[float, float], size_level0: tuple[float, float], out_size: tuple[int, int] | None = None
    ) -> Image.Image: ...


@dataclass(frozen=True)
class PGFCConfig:
    """How detail regions are chosen and read.

    ``num_regions``: S, regions per answer. ``mode``: "attention" (top-S of A_last on tissue),
    "random" (S random tissue tokens, the paper's ablation) or "none" (thumbnail only).
    ``region_pool``: average-pooling of each region's token grid. ``region_size``: level-0
    side of a region (default: the token cell's own level-0 size). ``read_size``: pixels a
    region is read at (default: the processor's ``max_image_size``). ``min_tissue``: share
    of a token cell that must be tissue for it to be a candidate. ``window_um``: side, in
    micrometres, of the windows a localisation question is re-asked on (`omnipath_lvlm.wsi.locate`):
    usually the field of view of the model's patch training data (nano: 192 um, chosen on validation
    slides); None, or a slide without mpp: one token cell.
    """

    num_regions: int = 8
    mode: Mode = "attention"
    region_pool: int = 3
    region_size: int | None = None
    read_size: int | None = None
    seed: int = 0
    min_tissue: float = 0.25
    window_um: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"PGFC mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.num_regions < 0:
            raise ValueError(f"num_regions must be >= 0, got {self.num_regions}")
        if self.region_pool < 1:
            raise ValueError(f"region_pool must be >= 1, got {self.region_pool}")
        if self.region_size is not None and self.region_size < 1:
            raise ValueError(f"region_size must be a positive level-0 side in pixels, got {self.region_size}")
        if self.read_size is not None and self.read_size < 1:
            raise ValueError(f"read_size must be a positive side in pixels, got {self.read_size}")
        if not 0.0 < self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue must be in (0, 1], got {self.min_tissue}")
        if self.window_um is not None and not self.window_um > 0:
            raise ValueError(f"window_um must be a positive side in micrometres, got {self.window_um}")

    @property
    def active(self) -> bool:
        """Whether any detail region is read at all."""
        return self.mode != "none" and self.num_regions > 0

    def save(self, model_dir: str | Path) -> Path:
        """Write the settings a model was trained with (not ``mode`` or ``seed``) to ``model_dir/pgfc.json``."""
        path = Path(model_dir) / PGFC_FILE
        stored = {k: v for k, v in asdict(self).items() if k not in _RUN_TIME_FIELDS}
        path.write_text(json.dumps(stored, indent=2) + "\n")
        return path

    @classmethod
    def for_model(cls, model_dir: str | Path | None) -> PGFCConfig:
        """The defaults for a model: its ``pgfc.json`` when it has one, else the class defaults.

        ValueError names the file when it holds unknown keys or values that fail validation.
        """
        path = None if model_dir is None else Path(model_dir) / PGFC_FILE
        if path is None or not path.is_file():
            return cls()
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(stored, dict):
            raise ValueError(f"{path} must hold a JSON object of PGFC settings, got {type(stored).__name__}")
        known = {f.name for f in fields(cls)} - set(_RUN_TIME_FIELDS)
        unknown = sorted(set(stored) - known)
        if unknown:
            raise ValueError(f"{path}: unknown PGFC settings {unknown}; known: {sorted(known)}")
        try:
            return cls(**stored)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def with_overrides(self, mode: str | None = None, num_regions: int | None = None,
                       window_um: float | str | None = None) -> PGFCConfig:
        """This config with a caller's choices (None keeps the value).

        ``window_um``: micrometres, or ``"cells"`` for windows of one token cell (stored as None).
        """
        changes: dict = {k: v for k, v in (("mode", mode), ("num_regions", num_regions)) if v is not None}
        if window_um is not None:
            changes["window_um"] = parse_window_um(window_um)
        return replace(self, **changes)



# --------------------------------------------------------------------------- token scores


def prompt_embeddings(model, input_ids: torch.Tensor, encoded: EncodedImages, mask_inputs: dict | None = None) -> torch.Tensor:
    """Input embeddings (B, L, D) exactly as the model builds them (image features, input masks spliced in)."""
    return model.embed_inputs(input_ids, encoded, **(mask_inputs or {}))


def first_layer_attention(
    model, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, query_positions: Sequence[int]
) -> torch.Tensor:
    """Head-averaged attention of the LLM's first layer for some query positions of one prompt: (Q, L).

    ``inputs_embeds`` (1, L, D); see :func:`omnipath_lvlm.model.focus.first_layer_attention` (which
    this calls without gradients) for what is computed.
    """
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] != 1:
        raise ValueError(f"inputs_embeds must be (1, L, D) (one prompt), got shape {tuple(inputs_embeds.shape)}")
    mask = None if attention_mask is None else attention_mask.reshape(1, -1)  # the core checks its length
    positions = torch.tensor([list(query_positions)], dtype=torch.long)  # (1, Q); the core checks the range
    with torch.no_grad():
        return layer0_attention(model.decoder, inputs_embeds, mask, positions)[0]  # (Q, L)


def last_token_image_attention(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, inputs_embeds: torch.Tensor
) -> torch.Tensor:
    """A_last: the last prompt token's first-layer, head-averaged attention over the image tokens (N_img,).

    ``input_ids`` (1, L) locates the image tokens; ``inputs_embeds`` (1, L, D) holds the
    embeddings the LLM sees (image tokens already replaced by vision features).
    """
    ids = input_ids.reshape(1, -1) if input_ids.ndim == 1 else input_ids
    if ids.shape[0] != 1 or ids.shape[1] != inputs_embeds.shape[1]:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and inputs_embeds {tuple(inputs_embeds.shape)} must be one prompt of the same length"
        )
    row = first_layer_attention(model, inputs_embeds, attention_mask, [ids.shape[1] - 1])[0]  # (L,)
    return row[(ids[0] == model.config.image_token_id).to(row.device)]  # (N_img,)


# --------------------------------------------------------------------------- selection


def select_tokens(scores: np.ndarray, tissue: np.ndarray, config: PGFCConfig) -> list[tuple[int, int]]:
    """(row, col) of the token cells that get a detail region, best first.

    "attention": the top-S scores among tissue cells (ties broken by position);
    "random": S tissue cells drawn with ``config.seed``; "none": nothing. Background cells
    are never chosen; fewer than S tissue cells give fewer regions.
    """
    scores, tissue = np.asarray(scores, dtype=np.float64), np.asarray(tissue, dtype=bool)
    if scores.ndim != 2 or scores.shape != tissue.shape:
        raise ValueError(f"scores {scores.shape} and tissue {tissue.shape} must be the same (rows, cols) grid")
    if not config.active:
        return []
    cols = scores.shape[1]
    candidates = np.flatnonzero(tissue.ravel())  # (C,)
    count = min(config.num_regions, len(candidates))
    if config.mode == "attention":
        order = np.argsort(-scores.ravel()[candidates], kind="stable")
        chosen = candidates[order[:count]]
    else:
        chosen = np.random.default_rng(config.seed).choice(candidates, size=count, replace=False)
    return [(int(i) // cols, int(i) % cols) for i in chosen]


# --------------------------------------------------------------------------- geometry


def cell_box(token: tuple[int, int], grid: int, slide_size: tuple[int, int]) -> Box:
    """Level-0 box of token cell (row, col) of a grid x grid thumbnail stretched to a square."""
    row, col = token
    if not (0 <= row < grid and 0 <= col < grid):
        raise ValueError(f"token {token} is outside the {grid}x{grid} token grid")
    width, height = slide_size
    return (col / grid * width, row / grid * height, (col + 1) / grid * width, (row + 1) / grid * height)


def region_box(token: tuple[int, int], grid: int, slide_size: tuple[int, int], region_size: int | None = None) -> Box:
    """Level-0 box read for a token: its cell, or a ``region_size`` square centred on it (kept inside the slide)."""
    x1, y1, x2, y2 = cell_box(token, grid, slide_size)
    if region_size is None:
        return (x1, y1, x2, y2)
    width, height = slide_size
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = min(max(cx - region_size / 2, 0.0), max(width - region_size, 0.0))
    top = min(max(cy - region_size / 2, 0.0), max(height - region_size, 0.0))
    return (left, top, left + region_size, top + region_size)


def given_region(box: Sequence[float], grid: int, slide_size: tuple[int, int]) -> tuple[Box, tuple[int, int]]:
    """A caller's level-0 box clipped to the slide, and the (row, col) token cell holding its centre.

    ValueError when the box is not four numbers or has no area inside the slide.
    """
    if len(box) != 4:
        raise ValueError(f"a region is (x1, y1, x2, y2) in level-0 pixels, got {list(box)}")
    width, height = slide_size
    x1, y1 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
    x2, y2 = min(float(box[2]), float(width)), min(float(box[3]), float(height))
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"region {list(box)} has no area inside the {width}x{height} slide")
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    token = (min(int(cy / height * grid), grid - 1), min(int(cx / width * grid), grid - 1))
    return (x1, y1, x2, y2), token


def relative_box(box: Box, slide_size: tuple[int, int]) -> Box:
    """A level-0 box as fractions (0..1) of the slide's width and height, clipped to the slide."""
    width, height = slide_size
    x1, y1, x2, y2 = box
    return (max(x1 / width, 0.0), max(y1 / height, 0.0), min(x2 / width, 1.0), min(y2 / height, 1.0))


# --------------------------------------------------------------------------- reading and encoding


def read_regions(slide: RegionSource, boxes: Sequence[Box], read_size: int) -> list[Image.Image]:
    """RGB pictures (read_size x read_size) of level-0 boxes; pixels off the slide come out as background."""
    pictures = []
    for x1, y1, x2, y2 in boxes:
        location = (math.floor(x1), math.floor(y1))
        size = (max(1, math.ceil(x2) - location[0]), max(1, math.ceil(y2) - location[1]))
        pictures.append(slide.read_region(location, size, (read_size, read_size)))
    return pictures


def encode_regions(model, processor, pictures: Sequence[Image.Image], pool: int) -> EncodedImages:
    """All regions through the vision tower in ONE batch, each token grid pooled by ``pool``."""
    pixel_values = processor.preprocess_images(list(pictures)).to(model.device)  # (S, 3, size, size)
    with torch.no_grad():
        return model.encode_images(pixel_values, image_pool=[pool] * len(pictures))


# --------------------------------------------------------------------------- prompt


def build_conversation(
    question: str, history: Sequence[tuple[str, str]] = (), region_texts: Sequence[str] = ()
) -> list[dict[str, str]]:
    """The conversation: thumbnail ``<image>`` and detail regions in the first user turn, earlier turns, the question.

    The layout is the training data's (``omnipath_lvlm.data.dataset``): the first user turn reads
    ``<image>`` then, per region, ``"\n" + position text + " <image>"``, then ``"\n"`` and its text.
    """
    if IMAGE_TOKEN in question or any(IMAGE_TOKEN in q or IMAGE_TOKEN in a for q, a in history):
        raise ValueError(f"the question and history must not contain {IMAGE_TOKEN}: the pipeline places the images")
    images = IMAGE_TOKEN + "".join(f"\n{text} {IMAGE_TOKEN}" for text in region_texts) + "\n"
    asked = [q for q, _ in history] + [question]
    turns: list[dict[str, str]] = []
    for i, text in enumerate(asked):
        turns.append({"from": "human", "value": (images if i == 0 else "") + text})
        if i < len(history):
            turns.append({"from": "gpt", "value": history[i][1]})
    return turns
