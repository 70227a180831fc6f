"""The result of analysing one slide or image with one question.

`Analysis` is what `OmniPathPipeline.analyze` returns and what every interface
(CLI, chat, server, report) consumes. Coordinates are level-0 slide pixels
(for a plain image: its own pixels), x to the right and y down.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Region:
    """A high-resolution region read by PGFC."""

    box: tuple[float, float, float, float]  # (x1, y1, x2, y2), level-0 pixels
    score: float  # the token's share of the last prompt token's attention (or 0 for random picks)
    token: tuple[int, int]  # (row, col) in the thumbnail token grid


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2), level-0 pixels
    label: str | None = None


@dataclass
class Outline:
    points: list[tuple[float, float]]  # closed polygon, level-0 pixels
    label: str | None = None


@dataclass
class Analysis:
    question: str
    answer: str
    detections: list[Detection] = field(default_factory=list)
    outlines: list[Outline] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)  # (h, w) bool, on the thumbnail grid
    regions: list[Region] = field(default_factory=list)
    score_grid: np.ndarray | None = None  # (G, G) float, last-token attention over thumbnail tokens
    tissue_grid: np.ndarray | None = None  # (G, G) bool, tokens on tissue
    slide_size: tuple[int, int] = (0, 0)  # (width, height), level 0
    thumbnail_size: tuple[int, int] = (0, 0)  # (width, height) of the thumbnail the model saw
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    parse_problems: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (masks summarised by their area; grids as nested lists)."""
        out = asdict(self)
        out["masks"] = [{"shape": list(m.shape), "area": int(np.count_nonzero(m))} for m in self.masks]
        out["score_grid"] = None if self.score_grid is None else np.asarray(self.score_grid).round(6).tolist()
        out["tissue_grid"] = None if self.tissue_grid is None else np.asarray(self.tissue_grid).astype(int).tolist()
        return out
