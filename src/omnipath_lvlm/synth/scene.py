"""The analytic description of a SynthPath scene (a patch or a whole slide).

A :class:`Scene` is a small, immutable list of shapes plus the seeded
parameters of the procedural textures; it never holds pixels.  Renderers ask
``scene.within(rect)`` for the part of the scene that can touch a window, so
rendering a tile costs the same whatever the size of the slide.

All coordinates are micrometres; (x, y) with y pointing down.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from .shapes import Band, Blob
from .taxonomy import ARCHITECTURES, GRADES, ORGANS

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1) micrometres

FILLERS = ("organ", "stroma", "fat", "necrosis", "lymphoid")


@dataclass(frozen=True)
class TumourSpec:
    """How every tumour cell of the scene looks: its architecture (subtype cue), grade, lymphocyte infiltration."""

    architecture: str
    grade: int
    til: bool

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"tumour architecture {self.architecture!r} is not one of {ARCHITECTURES}")
        if self.grade not in GRADES:
            raise ValueError(f"tumour grade {self.grade!r} is not one of {GRADES}")


@dataclass(frozen=True)
class Vessel:
    """A blood vessel: a lumen outline, a wall of `wall` micrometres around it, maybe a tumour embolus inside."""

    lumen: Blob
    wall: float
    embolus: Blob | None = None

    def outer_sdf(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.lumen.sdf(x, y, offset=self.wall)

    def outline(self, n: int = 96) -> NDArray[np.float64]:
        return self.lumen.polygon(n, offset=self.wall)

    def bbox(self) -> Rect:
        return self.lumen.bbox(self.wall)


@dataclass(frozen=True)
class Nerve:
    """A nerve bundle; `clusters` are tumour-cell clusters inside it (neural invasion)."""

    band: Band
    clusters: tuple[Blob, ...] = ()

    def bbox(self) -> Rect:
        return self.band.bbox(pad=2.0)


@dataclass(frozen=True)
class LymphNode:
    """A lymph node: a disc of lymphocytes with a fibrous capsule; `metastases` are tumour deposits inside."""

    body: Blob
    capsule: float
    metastases: tuple[Blob, ...] = ()

    def bbox(self) -> Rect:
        return self.body.bbox(2.0)


@dataclass(frozen=True)
class Scene:
    """Everything needed to render any window of one patch or slide.

    `filler` says what the tissue pieces are made of ("organ" parenchyma of
    `organ`, or pure "stroma", "fat", "necrosis", "lymphoid").  Inside organ
    tissue, `fat_level` / `stroma_level` (0..1) set how much of it becomes fat
    lobules / stroma bands.  `stain` scales the haematoxylin and eosin
    densities (staining variability).
    """

    key: int
    organ: str | None
    filler: str
    tissue: tuple[Blob, ...] = ()
    tissue_edge: float = 0.0
    tumours: tuple[Blob, ...] = ()
    tumour: TumourSpec | None = None
    vessels: tuple[Vessel, ...] = ()
    nerves: tuple[Nerve, ...] = ()
    lymph_nodes: tuple[LymphNode, ...] = ()
    fat_level: float = 0.0
    stroma_level: float = 0.0
    fibre_angle: float = 0.0
    crypt_angle: float = 0.0
    stain: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.filler not in FILLERS:
            raise ValueError(f"scene filler {self.filler!r} is not one of {FILLERS}")
        if self.filler == "organ" and self.organ not in ORGANS:
            raise ValueError(f"an organ-filled scene needs an organ in {ORGANS}, got {self.organ!r}")
        if self.tumours and self.tumour is None:
            raise ValueError("the scene has tumour regions but no TumourSpec describing them")

    @cached_property
    def _boxes(self) -> dict[str, NDArray[np.float64]]:
        def boxes(items: list[Rect]) -> NDArray[np.float64]:
            return np.asarray(items, np.float64).reshape(-1, 4)

        return {
            "tissue": boxes([b.bbox(3 * self.tissue_edge + 1.0) for b in self.tissue]),
            "tumours": boxes([b.bbox(1.0) for b in self.tumours]),
            "vessels": boxes([v.bbox() for v in self.vessels]),
            "nerves": boxes([n.bbox() for n in self.nerves]),
            "lymph_nodes": boxes([n.bbox() for n in self.lymph_nodes]),
        }

    def within(self, rect: Rect) -> Scene:
        """The same scene keeping only the shapes whose bounding boxes meet `rect`."""
        x0, y0, x1, y1 = rect

        def pick(name: str, items: tuple) -> tuple:
            b = self._boxes[name]
            if not len(items):
                return items
            hit = (b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0)
            return tuple(item for item, h in zip(items, hit) if h)

        return replace(
            self,
            tissue=pick("tissue", self.tissue),
            tumours=pick("tumours", self.tumours),
            vessels=pick("vessels", self.vessels),
            nerves=pick("nerves", self.nerves),
            lymph_nodes=pick("lymph_nodes", self.lymph_nodes),
        )

    def extent(self) -> Rect | None:
        """Union of the bounding boxes of all shapes (None for an empty scene)."""
        boxes = [b for b in self._boxes.values() if len(b)]
        if not boxes:
            return None
        a = np.concatenate(boxes)
        return (float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 2].max()), float(a[:, 3].max()))

    @property
    def empty(self) -> bool:
        """True when nothing but glass is left (after `within`)."""
        return not (self.tissue or self.tumours or self.vessels or self.nerves or self.lymph_nodes)


def place_embolus(rng: np.random.Generator, lumen: Blob, scale: tuple[float, float], min_radius: float) -> Blob:
    """A tumour cell cluster floating inside `lumen`, kept 3 um from its outline.

    Its radius is ``uniform(*scale)`` times the lumen's inner radius, at least
    `min_radius` micrometres.
    """
    inner = lumen.min_radius
    r = float(np.clip(rng.uniform(*scale) * inner, min_radius, max(min_radius, inner - 6.0)))
    room = max(0.0, inner - 1.25 * r - 3.0)
    ang, off = rng.uniform(0, 2 * np.pi), rng.uniform(0, room)
    return Blob.random(rng, lumen.cx + off * np.cos(ang), lumen.cy + off * np.sin(ang), r, 0.2)


def place_nerve_clusters(
    rng: np.random.Generator, band: Band, span: tuple[float, float], min_radius: float
) -> tuple[Blob, ...]:
    """One to three tumour clusters inside a nerve `band` (neural invasion).

    Each sits at a random fraction ``uniform(*span)`` of the band's length, with
    a radius of 35-60 % of the local half width, at least `min_radius` micrometres.
    """
    out = []
    for _ in range(int(rng.integers(1, 4))):
        u = rng.uniform(*span) * band.length
        half = float(band.half_width(np.array(u)))
        r = float(np.clip(rng.uniform(0.35, 0.6) * half, min_radius, max(min_radius, half - 6.0)))
        across = rng.uniform(-1, 1) * max(0.0, half - 1.3 * r - 4.0)
        x, y = band.point_at(u, across)
        out.append(Blob.random(rng, x, y, r, 0.15))
    return tuple(out)
