"""The slide folder as the server sees it: listing, metadata and Deep Zoom tiles.

`SlideLibrary` lists the slide files of one folder, keeps a small LRU cache of
open OpenSlide handles (re-opened when a file changes on disk) and renders Deep
Zoom descriptors and JPEG tiles with `openslide.deepzoom.DeepZoomGenerator`.
Plain images (PNG/JPEG) are served through `openslide.ImageSlide`. Deep Zoom
uses the whole level-0 plane (``limit_bounds=False``) so viewer coordinates
are the same level-0 pixels the model's answers use.
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import UnidentifiedImageError

from omnipath_lvlm.serve.errors import ApiError
from omnipath_lvlm.serve.limits import resolve_slide_path

# File name endings listed as slides (whole-slide formats OpenSlide reads, plus plain images).
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm",
                  ".czi", ".png", ".jpg", ".jpeg")


@dataclass
class _OpenSlide:
    stamp: tuple[int, int]  # (mtime_ns, size) of the file when it was opened
    slide: openslide.AbstractSlide
    deepzoom: DeepZoomGenerator


class SlideLibrary:
    def __init__(self, slides_dir: Path, *, cache_size: int = 16, tile_size: int = 254, overlap: int = 1,
                 quality: int = 80) -> None:
        if not slides_dir.is_dir():
            raise ValueError(f"slide folder {slides_dir} does not exist or is not a folder")
        self.slides_dir = slides_dir.resolve()
        self.cache_size = cache_size
        self.tile_size = tile_size
        self.overlap = overlap
        self.quality = quality
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, _OpenSlide] = OrderedDict()

    def path(self, slide_id: str) -> Path:
        """The slide's file (400/404 for ids that are malformed or not in the folder)."""
        return resolve_slide_path(self.slides_dir, slide_id)

    def slide_ids(self) -> list[str]:
        """Slide file names in the folder, sorted (hidden files and links leaving the folder skipped)."""
        ids = []
        for entry in sorted(self.slides_dir.iterdir()):
            if entry.name.startswith(".") or entry.suffix.lower() not in SLIDE_SUFFIXES:
                continue
            resolved = entry.resolve()
            if resolved.parent == self.slides_dir and resolved.is_file():
                ids.append(entry.name)
        return ids

    def describe(self, slide_id: str) -> dict[str, Any]:
        """The `/v1/slides` entry of one slide: size, levels, microns per pixel, vendor."""
        slide = self._open(slide_id).slide
        props = slide.properties
        return {
            "id": slide_id,
            "object": "slide",
            "width": slide.dimensions[0],
            "height": slide.dimensions[1],
            "level_count": slide.level_count,
            "level_dimensions": [list(d) for d in slide.level_dimensions],
            "mpp_x": _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_X)),
            "mpp_y": _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_Y)),
            "objective_power": _float_or_none(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
            "vendor": props.get(openslide.PROPERTY_NAME_VENDOR, "image"),
            "dzi": f"/slides/{slide_id}.dzi",
        }

    def describe_all(self) -> list[dict[str, Any]]:
        """`describe` for every slide; a file that cannot be read is listed with an ``error`` instead."""
        out = []
        for slide_id in self.slide_ids():
            try:
                out.append(self.describe(slide_id))
            except ApiError as exc:
                out.append({"id": slide_id, "object": "slide", "error": exc.message})
        return out

    def dzi(self, slide_id: str) -> str:
        """The Deep Zoom descriptor XML (JPEG tiles)."""
        return self._open(slide_id).deepzoom.get_dzi("jpeg")

    def tile(self, slide_id: str, level: int, col: int, row: int) -> bytes:
        """One Deep Zoom tile as JPEG bytes (404 when the level or address is outside the pyramid)."""
        deepzoom = self._open(slide_id).deepzoom
        if not 0 <= level < deepzoom.level_count:
            raise ApiError(404, f"Deep Zoom level {level} is outside 0..{deepzoom.level_count - 1} for "
                                f"slide {slide_id!r}", code="tile_not_found")
        cols, rows = deepzoom.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise ApiError(404, f"tile ({col}, {row}) is outside the {cols} x {rows} tiles of Deep Zoom level "
                                f"{level}", code="tile_not_found")
        try:
            image = deepzoom.get_tile(level, (col, row))  # RGB, at most tile_size + 2*overlap per side
        except openslide.OpenSlideError as exc:
            raise ApiError(422, f"slide {slide_id!r} could not be read at tile ({level}, {col}, {row}): {exc}",
                           code="slide_unreadable") from exc
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=self.quality)
        return buffer.getvalue()

    def close(self) -> None:
        with self._lock:
            entries = list(self._cache.values())
            self._cache.clear()
        for entry in entries:
            entry.slide.close()

    def _open(self, slide_id: str) -> _OpenSlide:
        path = self.path(slide_id)
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            entry = self._cache.get(path)
            if entry is not None and entry.stamp == stamp:
                self._cache.move_to_end(path)
                return entry
        try:
            slide = openslide.open_slide(path)
        except (openslide.OpenSlideError, UnidentifiedImageError, OSError) as exc:
            raise ApiError(422, f"slide {slide_id!r} could not be opened: {exc}", code="slide_unreadable") from exc
        entry = _OpenSlide(stamp, slide, DeepZoomGenerator(slide, self.tile_size, self.overlap, limit_bounds=False))
        with self._lock:
            # Evicted handles are only dropped, not closed: a tile request may still be
            # reading from one; OpenSlide frees it when the last reference goes.
            self._cache[path] = entry
            self._cache.move_to_end(path)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return entry


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
