"""Seeded gigapixel whole-slide images with exact annotations.

``write_slide(path, size, seed)`` lays out a slide analytically (tissue pieces
of one organ on glass, small tumours of one subtype and grade, vessels - some
with tumour emboli -, nerves - some invaded -, lymph nodes - maybe with a
metastasis -), renders it strip by strip at ``mpp`` micrometres per pixel and
streams it into a pyramidal JPEG-tiled TIFF (see :mod:`.pyramid`).  Next to the
TIFF it writes ``<name>.geojson`` (QuPath annotations in level-0 pixels) and
``<name>.json`` (slide labels and parameters).

Tumours are small (3.5-6 % of the slide side): on a 384-pixel thumbnail they
are purple spots whose nuclei are sub-pixel, so their grade can only be read
at high resolution, which is what prompt-guided detail completion is for.

:func:`render_region` returns the generator's own pixels of any region at any
level, so tests can compare what OpenSlide reads with what was meant.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .noise import derive_key
from .palette import BACKGROUND_RGB
from .pyramid import halve, level_dimensions, padded_size, write_aperio_pyramid
from .render import render_rgb
from .scene import LymphNode, Nerve, Scene, TumourSpec, Vessel, place_embolus, place_nerve_clusters
from .shapes import Band, Blob
from .taxonomy import ARCHITECTURES, DISEASES, GRADE_NAMES, ORGANS, SUBTYPES

RENDER_CHUNK = 2048  # columns per rendering call
ROWS_PER_CALL = 256  # rows per rendering call
THUMBNAIL_LEVEL_MAX = 1024  # the default pyramid goes down until the longest side is at most this
# GeoJSON classification names and colours of the annotation classes
ANNOTATION_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Tumor", (200, 0, 0)),
    ("Vessel", (150, 0, 200)),
    ("Nerve", (230, 180, 0)),
    ("Lymph node", (0, 120, 255)),
    ("Metastasis", (255, 100, 0)),
    ("Invasion", (0, 180, 60)),
)


@dataclass(frozen=True)
class SlideParams:
    """Everything that determines a slide's pixels."""

    seed: int = 0
    width: int = 16384
    height: int = 16384
    mpp: float = 0.25
    tile: int = 256
    levels: int = 4
    quality: int = 90

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64:
            raise ValueError(f"slide must be at least 64 x 64 pixels, got {self.width} x {self.height}")
        if not 0.05 <= self.mpp <= 10:
            raise ValueError(f"mpp {self.mpp} is outside 0.05..10 micrometres per pixel")
        if self.tile < 16 or self.tile % 16:
            raise ValueError(f"tile size must be a positive multiple of 16 (JPEG 4:2:0 tiles), got {self.tile}")
        if self.levels < 1:
            raise ValueError(f"a pyramid needs at least one level, got {self.levels}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.quality}")


@dataclass(frozen=True)
class Annotation:
    """One annotated region: GeoJSON class name and closed outline (K, 2) in level-0 pixels."""

    cls: str
    polygon: tuple[tuple[float, float], ...]

    def array(self) -> NDArray[np.float64]:
        return np.asarray(self.polygon, np.float64)

    def box(self) -> tuple[float, float, float, float]:
        p = self.array()
        return (float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max()))


@dataclass
class SlideLayout:
    """The analytic slide: the scene to render, its labels and its annotations."""

    scene: Scene
    labels: dict[str, str]
    annotations: list[Annotation]


@dataclass
class SlideTruth:
    """What :func:`write_slide` wrote and the ground truth of the slide."""

    path: Path
    geojson_path: Path
    labels_path: Path
    params: SlideParams
    level_dimensions: list[tuple[int, int]]
    labels: dict[str, str]
    annotations: list[Annotation] = field(default_factory=list)

    def regions(self, cls: str) -> list[Annotation]:
        return [a for a in self.annotations if a.cls == cls]


def default_levels(width: int, height: int) -> int:
    """At least 4 levels, and enough that the smallest has its longest side <= 1024 pixels."""
    longest = max(width, height)
    return max(4, int(np.ceil(np.log2(max(longest, 1) / THUMBNAIL_LEVEL_MAX))) + 1)


# ---------------------------------------------------------------- layout


class _Occupancy:
    """Bounding circles of placed structures, for vectorised collision checks."""

    def __init__(self) -> None:
        self.c: list[tuple[float, float, float]] = []

    def free(self, x: float, y: float, r: float, clearance: float) -> bool:
        if not self.c:
            return True
        a = np.asarray(self.c)
        return bool(np.all(np.hypot(a[:, 0] - x, a[:, 1] - y) > a[:, 2] + r + clearance))

    def add(self, x: float, y: float, r: float) -> None:
        self.c.append((x, y, r))


def _tissue_sdf(pieces: list[Blob], x: NDArray | float, y: NDArray | float) -> NDArray:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return np.min(np.stack([b.sdf(x, y) for b in pieces]), axis=0)


def _place_pieces(rng: np.random.Generator, lx: float, ly: float) -> list[Blob]:
    side = min(lx, ly)
    occ = _Occupancy()
    pieces: list[Blob] = []
    for i in range(int(rng.integers(2, 4))):
        for _ in range(80):
            r = side * (rng.uniform(0.2, 0.28) if i == 0 else rng.uniform(0.12, 0.22))
            blob = Blob.random(rng, 0, 0, r, 0.22, harmonics=6, aspect=rng.uniform(1.0, 1.6))
            rm = blob.max_radius
            margin = 0.03 * side
            if 2 * (rm + margin) >= min(lx, ly):
                continue
            cx, cy = rng.uniform(rm + margin, lx - rm - margin), rng.uniform(rm + margin, ly - rm - margin)
            if occ.free(cx, cy, rm, 0.02 * side):
                pieces.append(Blob(cx, cy, blob.radius, blob.amps, blob.phases))
                occ.add(cx, cy, rm)
                break
    if not pieces:  # a tiny slide: one central piece
        pieces.append(Blob.random(rng, lx / 2, ly / 2, 0.35 * side, 0.15))
    return pieces


def _point_in(rng: np.random.Generator, piece: Blob, keep_in: float) -> tuple[float, float] | None:
    room = piece.min_radius - keep_in
    if room <= 0:
        return None
    ang, off = rng.uniform(0, 2 * np.pi), room * np.sqrt(rng.uniform(0, 1))
    return piece.cx + off * np.cos(ang), piece.cy + off * np.sin(ang)


def _anchor(
    rng: np.random.Generator,
    near: list[Blob] | None,
    pieces: list[Blob],
    weights: NDArray[np.float64],
    reach: float,
    gap: tuple[float, float],
) -> tuple[float, float] | None:
    """A centre for a structure reaching `reach` um from it.

    With `near`, it is just outside one of those tumours (``uniform(*gap)`` um
    between the two); otherwise inside a tissue piece drawn by `weights`.
    """
    if near is not None:
        t = near[int(rng.integers(len(near)))]
        ang, d = rng.uniform(0, 2 * np.pi), t.max_radius + reach + rng.uniform(*gap)
        return t.cx + d * np.cos(ang), t.cy + d * np.sin(ang)
    host = pieces[int(rng.choice(len(pieces), p=weights))]
    return _point_in(rng, host, reach)


def build_layout(params: SlideParams) -> SlideLayout:
    """The deterministic analytic layout of the slide described by `params`."""
    rng = np.random.default_rng([int(params.seed), 0x511DE])
    lx, ly = params.width * params.mpp, params.height * params.mpp
    side = min(lx, ly)
    organ = str(rng.choice(ORGANS))
    spec = TumourSpec(str(rng.choice(ARCHITECTURES)), int(rng.integers(1, 4)), bool(rng.random() < 0.5))
    want_mvi, want_ni, want_lnm = (bool(v) for v in rng.random(3) < 0.5)

    pieces = _place_pieces(rng, lx, ly)
    occ = _Occupancy()
    for b in pieces:
        occ.add(b.cx, b.cy, b.max_radius)

    # lymph nodes: separate pieces on the glass
    nodes: list[LymphNode] = []
    for _ in range(int(rng.integers(1, 3))):
        for _ in range(60):
            r = max(120.0, side * rng.uniform(0.05, 0.075))
            if r * 2.6 >= side:  # no room for a lymph node on a tiny slide
                break
            body = Blob.random(rng, rng.uniform(r * 1.3, lx - r * 1.3), rng.uniform(r * 1.3, ly - r * 1.3), r, 0.12,
                               aspect=rng.uniform(1.0, 1.4))
            if occ.free(body.cx, body.cy, body.max_radius, 0.02 * side):
                nodes.append(LymphNode(body, float(rng.uniform(6, 10))))
                occ.add(body.cx, body.cy, body.max_radius)
                break
    if want_lnm and nodes:
        node = nodes[0]
        inner = node.body.min_radius - node.capsule
        mets = []
        for _ in range(int(rng.integers(1, 3))):
            mr = rng.uniform(0.2, 0.4) * inner
            room = max(0.0, inner - 1.3 * mr - 10.0)
            ang, off = rng.uniform(0, 2 * np.pi), rng.uniform(0, room)
            mets.append(Blob.random(rng, node.body.cx + off * np.cos(ang), node.body.cy + off * np.sin(ang), mr, 0.25))
        nodes[0] = LymphNode(node.body, node.capsule, tuple(mets))

    # tumours inside the tissue pieces
    struct = _Occupancy()
    tumours: list[Blob] = []
    order = sorted(range(len(pieces)), key=lambda i: -pieces[i].radius)
    for i in range(int(rng.integers(1, 4))):
        host = pieces[order[0]] if i == 0 else pieces[int(rng.integers(len(pieces)))]
        inner = host.min_radius
        for _ in range(60):
            rt = min(max(side * rng.uniform(0.035, 0.06), 40.0), 0.45 * inner)
            blob = Blob.random(rng, 0, 0, rt, 0.28, harmonics=5, aspect=rng.uniform(1.0, 1.5))
            p = _point_in(rng, host, 1.1 * blob.max_radius)
            if p is not None and struct.free(p[0], p[1], blob.max_radius, 30.0):
                tumours.append(Blob(p[0], p[1], blob.radius, blob.amps, blob.phases))
                struct.add(p[0], p[1], blob.max_radius)
                break
    if not tumours:
        host = pieces[order[0]]
        tumours.append(Blob.random(rng, host.cx, host.cy, 0.4 * host.min_radius, 0.2))
        struct.add(host.cx, host.cy, tumours[0].max_radius)

    tissue_mm2 = sum(b.area() for b in pieces) / 1e6
    areas = np.asarray([b.area() for b in pieces])
    weights = areas / areas.sum()

    def inside_tissue(x: float, y: float, r: float) -> bool:
        return bool(_tissue_sdf(pieces, x, y) < -(r + 8.0))

    # vessels (invaded ones first, next to tumours)
    vessels: list[Vessel] = []
    n_invaded = int(rng.integers(1, 4)) if want_mvi else 0
    n_vessels = int(np.clip(tissue_mm2 * 10, 3, 600))
    for i in range(n_vessels + n_invaded):
        for _ in range(30):
            r = rng.uniform(18, 55) if i < n_invaded else rng.uniform(12, 55)
            wall = 0.2 * r + rng.uniform(3, 8)
            lumen = Blob.random(rng, 0, 0, r, 0.12, aspect=rng.uniform(1, 1.8))
            outer = lumen.max_radius + wall
            p = _anchor(rng, tumours if i < n_invaded else None, pieces, weights, outer, (15, 60))
            if p is None or not inside_tissue(p[0], p[1], outer) or not struct.free(p[0], p[1], outer, 12.0):
                continue
            lumen = Blob(p[0], p[1], lumen.radius, lumen.amps, lumen.phases)
            vessels.append(Vessel(lumen, wall, place_embolus(rng, lumen, (0.45, 0.7), 8.0) if i < n_invaded else None))
            struct.add(p[0], p[1], outer)
            break

    # nerves (invaded ones first, next to tumours)
    nerves: list[Nerve] = []
    n_inv_nerves = int(rng.integers(1, 3)) if want_ni else 0
    n_nerves = int(np.clip(tissue_mm2 * 3, 2, 200))
    for i in range(n_nerves + n_inv_nerves):
        for _ in range(30):
            length = rng.uniform(180, 600)
            width = rng.uniform(30, 80) if i >= n_inv_nerves else rng.uniform(45, 80)
            reach = 0.5 * length + width
            p = _anchor(rng, tumours if i < n_inv_nerves else None, pieces, weights, reach, (10, 50))
            if p is None or not inside_tissue(p[0], p[1], reach) or not struct.free(p[0], p[1], reach, 12.0):
                continue
            ang = rng.uniform(0, np.pi)
            band = Band(p[0] - 0.5 * length * np.cos(ang), p[1] - 0.5 * length * np.sin(ang), float(ang), length, width,
                        rng.uniform(4, 16), rng.uniform(90, 180), rng.uniform(0, 2 * np.pi))
            nerves.append(Nerve(band, place_nerve_clusters(rng, band, (0.25, 0.75), 7.0) if i < n_inv_nerves else ()))
            struct.add(p[0], p[1], reach)
            break

    scene = Scene(
        key=derive_key(params.seed, "slide"),
        organ=organ,
        filler="organ",
        tissue=tuple(pieces),
        tissue_edge=float(np.clip(0.012 * side, 4.0, 30.0)),
        tumours=tuple(tumours),
        tumour=spec,
        vessels=tuple(vessels),
        nerves=tuple(nerves),
        lymph_nodes=tuple(nodes),
        fat_level=float(rng.uniform(0.05, 0.3)),
        stroma_level=float(rng.uniform(0.2, 0.6)),
        fibre_angle=float(rng.uniform(0, np.pi)),
        crypt_angle=float(rng.uniform(0, np.pi)),
        stain=(float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.9, 1.1))),
    )
    labels = {
        "organ": organ,
        "disease": DISEASES[organ],
        "subtype": SUBTYPES[organ][spec.architecture],
        "grade": GRADE_NAMES[spec.grade],
        "til": "yes" if spec.til else "no",
        "mvi": "yes" if any(v.embolus is not None for v in vessels) else "no",
        "neural_invasion": "yes" if any(n.clusters for n in nerves) else "no",
    }
    if nodes:
        labels["lymph_node_metastasis"] = "yes" if any(n.metastases for n in nodes) else "no"
    return SlideLayout(scene, labels, _annotations(scene, params.mpp))


def _annotations(scene: Scene, mpp: float) -> list[Annotation]:
    def ann(cls: str, pts: NDArray[np.float64]) -> Annotation:
        px = np.round(pts / mpp, 2)
        return Annotation(cls, tuple((float(x), float(y)) for x, y in px))

    out = [ann("Tumor", b.polygon(256)) for b in scene.tumours]
    out += [ann("Vessel", v.outline(128)) for v in scene.vessels]
    out += [ann("Nerve", n.band.polygon(128)) for n in scene.nerves]
    out += [ann("Lymph node", n.body.polygon(192)) for n in scene.lymph_nodes]
    out += [ann("Metastasis", m.polygon(96)) for n in scene.lymph_nodes for m in n.metastases]
    out += [ann("Invasion", v.embolus.polygon(64)) for v in scene.vessels if v.embolus is not None]
    out += [ann("Invasion", c.polygon(64)) for n in scene.nerves for c in n.clusters]
    return out


# ---------------------------------------------------------------- outputs


def geojson(annotations: list[Annotation], seed: int) -> dict:
    """QuPath-style GeoJSON FeatureCollection of the annotations (level-0 pixels)."""
    colours = dict(ANNOTATION_CLASSES)
    features = []
    for i, a in enumerate(annotations):
        ring = [list(p) for p in a.polygon]
        ring.append(ring[0])
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.UUID(int=derive_key(seed, "annotation", i) << 65 | i)),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": a.cls, "color": list(colours[a.cls])},
                    "isLocked": False,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _as_params(truth_or_params: SlideTruth | SlideParams) -> SlideParams:
    if isinstance(truth_or_params, SlideTruth):
        return truth_or_params.params
    if isinstance(truth_or_params, SlideParams):
        return truth_or_params
    raise TypeError(f"expected SlideTruth or SlideParams, got {type(truth_or_params).__name__}")


def _render_block(scene: Scene, x0: int, y0: int, w: int, h: int, mpp: float) -> NDArray[np.uint8]:
    """Level-0 pixels of a block, rendered in windows of at most ROWS_PER_CALL x RENDER_CHUNK (bounded memory)."""
    out = np.empty((h, w, 3), np.uint8)
    for dy in range(0, h, ROWS_PER_CALL):
        hh = min(ROWS_PER_CALL, h - dy)
        for dx in range(0, w, RENDER_CHUNK):
            ww = min(RENDER_CHUNK, w - dx)
            out[dy : dy + hh, dx : dx + ww] = render_rgb(scene, x0 + dx, y0 + dy, ww, hh, mpp)
    return out


def render_region(
    truth_or_params: SlideTruth | SlideParams, x: int, y: int, w: int, h: int, level: int = 0
) -> NDArray[np.uint8]:
    """The generator's own (h, w, 3) pixels of the region at (x, y) in level-`level` pixel coordinates."""
    params = _as_params(truth_or_params)
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    scale = 2**level
    img = _render_block(build_layout(params).scene, x * scale, y * scale, w * scale, h * scale, params.mpp)
    for _ in range(level):
        img = halve(img)
    return img


def write_slide(
    path: str | Path,
    size: int | tuple[int, int] = 16384,
    seed: int = 0,
    tile: int = 256,
    levels: int | None = None,
    mpp: float = 0.25,
    quality: int = 90,
) -> SlideTruth:
    """Write a synthetic pyramidal slide and its annotations; returns the truth.

    `size` is the level-0 side (or (width, height)) in pixels.  Writes `path`,
    ``path.with_suffix(".geojson")`` and ``path.with_suffix(".json")``.
    """
    width, height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    n_levels = default_levels(width, height) if levels is None else int(levels)
    params = SlideParams(int(seed), width, height, float(mpp), int(tile), n_levels, int(quality))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = build_layout(params)
    pw, _ = padded_size(width, height, tile, n_levels)
    dims = write_aperio_pyramid(
        path,
        width,
        height,
        lambda y0, h: _render_block(layout.scene, 0, y0, pw, h, params.mpp),
        mpp=params.mpp,
        tile=tile,
        levels=n_levels,
        quality=quality,
        background=BACKGROUND_RGB,
        title=f"synthpath-{seed}",
    )
    geo_path = path.with_suffix(".geojson")
    geo_path.write_text(json.dumps(geojson(layout.annotations, params.seed)))
    labels_path = path.with_suffix(".json")
    labels_path.write_text(
        json.dumps(
            {"generator": "omnipath_lvlm.synth", "params": asdict(params), "labels": layout.labels,
             "level_dimensions": [list(d) for d in dims]},
            indent=2,
        )
    )
    return SlideTruth(path, geo_path, labels_path, params, dims, layout.labels, layout.annotations)


def read_truth(path: str | Path) -> SlideTruth:
    """Rebuild the SlideTruth of a slide written by :func:`write_slide` from its JSON side file."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    params = SlideParams(**meta["params"])
    layout = build_layout(params)
    dims = [tuple(d) for d in meta["level_dimensions"]]
    return SlideTruth(path, path.with_suffix(".geojson"), path.with_suffix(".json"), params, dims,
                      layout.labels, layout.annotations)


__all__ = [
    "ANNOTATION_CLASSES",
    "Annotation",
    "SlideLayout",
    "SlideParams",
    "SlideTruth",
    "build_layout",
    "default_levels",
    "geojson",
    "level_dimensions",
    "read_truth",
    "render_region",
    "write_slide",
]
