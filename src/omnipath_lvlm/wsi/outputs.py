"""Files written for one analysis: answer.json, regions.geojson, overlay.png, attention.png.

Everything is rendered in memory first and each file is then written atomically (a
temporary file in the same folder, flushed, then renamed over the target), so a failure
leaves either no file or the complete one, never a half-written file.

``regions.geojson`` is a GeoJSON FeatureCollection QuPath imports (File > Import objects):
level-0 pixel coordinates, detections as rectangles with ``objectType: "detection"``,
outlines and PGFC regions as annotations (``classification: "PGFC region"``, the region's
attention score and rank as measurements).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from omnipath_lvlm.fileio import atomic_write_bytes  # also importable from here, as before
from omnipath_lvlm.wsi.analysis import Analysis

ANSWER_FILE = "answer.json"
GEOJSON_FILE = "regions.geojson"
OVERLAY_FILE = "overlay.png"
ATTENTION_FILE = "attention.png"

DETECTION_RGB = (0, 200, 0)
OUTLINE_RGB = (255, 200, 0)
MASK_RGB = (0, 200, 255)
REGION_RGB = (230, 0, 0)
REGION_CLASS = "PGFC region"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, default=_json_default) + "\n").encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# --------------------------------------------------------------------------- GeoJSON


def _feature(ring: list[tuple[float, float]], object_type: str, name: str, cls: str, rgb, measurements=None) -> dict:
    coords = [[round(float(x), 2), round(float(y), 2)] for x, y in ring]
    coords.append(coords[0])  # GeoJSON rings are closed
    properties: dict[str, Any] = {"objectType": object_type, "name": name, "classification": {"name": cls, "color": list(rgb)}}
    if measurements:
        properties["measurements"] = measurements
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]}, "properties": properties}


def _rectangle(box) -> list[tuple[float, float]]:
    x1, y1, x2, y2 = box
    return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]


def analysis_geojson(analysis: Analysis) -> dict[str, Any]:
    """QuPath-importable FeatureCollection of detections, outlines and PGFC regions (level-0 pixels)."""
    features = []
    for i, det in enumerate(analysis.detections):
        label = det.label or "detection"
        features.append(_feature(_rectangle(det.box), "detection", f"{label} {i + 1}", label, DETECTION_RGB))
    for i, outline in enumerate(analysis.outlines):
        if len(outline.points) < 3:
            continue
        label = outline.label or "outline"
        rgb = MASK_RGB if label == "mask" else OUTLINE_RGB
        features.append(_feature(outline.points, "annotation", f"{label} {i + 1}", label, rgb))
    for rank, region in enumerate(analysis.regions, start=1):
        features.append(
            _feature(_rectangle(region.box), "annotation", f"{REGION_CLASS} {rank}", REGION_CLASS, REGION_RGB,
                     {"score": float(region.score), "rank": rank})
        )
    return {"type": "FeatureCollection", "features": features}


# --------------------------------------------------------------------------- pictures


def heatmap_overlay(image: Image.Image, grid: np.ndarray, alpha: float = 0.5, mask: np.ndarray | None = None) -> Image.Image:
    """``image`` with a (rows, cols) grid drawn over it as a blue (low) to red (high) heatmap.

    Values are scaled to their own min..max; cells where ``mask`` is False are left uncoloured.
    """
    values = np.asarray(grid, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"heatmap grid must be a non-empty (rows, cols) array, got shape {values.shape}")
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low)
    levels = np.round(np.nan_to_num(scaled) * 255).astype(np.uint8)  # (rows, cols)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)  # (rows, cols, 3)
    width, height = image.size
    colours = cv2.resize(colours, (width, height), interpolation=cv2.INTER_NEAREST)  # (H, W, 3)
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    weight = np.full((height, width, 1), alpha, dtype=np.float32)
    if mask is not None:
        keep = cv2.resize(np.asarray(mask, dtype=np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        weight[keep == 0] = 0.0
    blended = base * (1 - weight) + colours.astype(np.float32) * weight
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))


def draw_overlay(thumbnail: Image.Image, analysis: Analysis) -> Image.Image:
    """The thumbnail with detections (green), outlines (yellow; masks cyan) and PGFC regions (red, ranked)."""
    picture = thumbnail.convert("RGB").copy()
    draw = ImageDraw.Draw(picture)
    width0, height0 = analysis.slide_size
    sx, sy = picture.width / max(width0, 1), picture.height / max(height0, 1)
    line = max(1, round(min(picture.size) / 300))

    def scaled(points):
        return [(x * sx, y * sy) for x, y in points]

    for region_rank, region in enumerate(analysis.regions, start=1):
        x1, y1, x2, y2 = region.box
        draw.rectangle((x1 * sx, y1 * sy, x2 * sx, y2 * sy), outline=REGION_RGB, width=line)
        draw.text((x1 * sx + 2, y1 * sy + 1), str(region_rank), fill=REGION_RGB)
    for outline in analysis.outlines:
        if len(outline.points) >= 2:
            rgb = MASK_RGB if outline.label == "mask" else OUTLINE_RGB
            draw.line(scaled(outline.points + outline.points[:1]), fill=rgb, width=line)
    for det in analysis.detections:
        x1, y1, x2, y2 = det.box
        draw.rectangle((x1 * sx, y1 * sy, x2 * sx, y2 * sy), outline=DETECTION_RGB, width=line)
    return picture


def draw_attention(thumbnail: Image.Image, analysis: Analysis) -> Image.Image:
    """The last-token attention grid (A_last) as a heatmap over the thumbnail (stretched grid cells)."""
    if analysis.score_grid is None:
        raise ValueError("the analysis has no score grid to draw")
    return heatmap_overlay(thumbnail, analysis.score_grid)


# --------------------------------------------------------------------------- all files


def write_outputs(analysis: Analysis, thumbnail: Image.Image, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Render, then atomically write the four files into ``out_dir``; returns their paths by name."""
    rendered = {
        ANSWER_FILE: json_bytes(analysis.to_json()),
        GEOJSON_FILE: json_bytes(analysis_geojson(analysis)),
        OVERLAY_FILE: png_bytes(draw_overlay(thumbnail, analysis)),
        ATTENTION_FILE: png_bytes(draw_attention(thumbnail, analysis)),
    }
    out = Path(out_dir)
    return {name: atomic_write_bytes(out / name, data) for name, data in rendered.items()}
