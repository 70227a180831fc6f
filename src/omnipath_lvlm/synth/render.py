"""Render any rectangular window of a scene at a given pixel size.

A window is given in *pixel indices* of a grid whose pixel (i, j) has its
centre at world position ((x0 + j + 0.5) * px, (y0 + i + 0.5) * px)
micrometres.  Every ingredient (node-sampled fields and textures, nuclei,
sensor grain) is keyed by world position or pixel index, and the window is
internally grown to an aligned one (see :mod:`.grid`) with a margin for the
optical blur, so a big window and any tiling of it give the same pixels.

:func:`render_rgb` returns only the image (what the slide writer needs);
:func:`render_truth` also returns the material map, the nucleus instance map
and the interpolated fields, from which patches derive their ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from .grid import PixelWindow
from .materials import classify, eval_fields
from .nuclei import NucleusSet, layers_for, max_nucleus_radius, place_nuclei, red_cells
from .palette import BACKGROUND_RGB, compose, nucleus_density, stain_maps, textures
from .scene import Scene

FIELD_STEP_UM = 1.5  # node spacing of the smooth scene fields (micrometres)
MARGIN_PX = 4  # extra pixels rendered around a window for the blur
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices


@dataclass
class Rendered:
    """A rendered window and the truth behind its pixels."""

    rgb: NDArray[np.uint8]  # (H, W, 3)
    material: NDArray[np.uint8]  # (H, W) Material values
    instances: NDArray[np.int32]  # (H, W) 0 = no nucleus, i + 1 = nuclei[i]
    nuclei: NucleusSet  # every nucleus drawn (some may only touch the margin)
    fields: dict[str, NDArray[np.float32]]  # (H, W) interpolated fields


def _to_pixels(points: NDArray[np.float64], window: PixelWindow) -> NDArray[np.int32]:
    """World micrometres -> fixed-point cv2 vertex coordinates in the window."""
    pix = points / window.px - np.array([window.x0 + 0.5, window.y0 + 0.5])
    return np.round(pix * (1 << _SHIFT)).astype(np.int32)


def _draw_instances(nuclei: NucleusSet, window: PixelWindow) -> NDArray[np.int32]:
    inst = np.zeros((window.h, window.w), np.int32)
    if len(nuclei) == 0:
        return inst
    polys = _to_pixels(nuclei.polygons(), window)  # (N, K, 2)
    for i in range(len(nuclei)):  # one fill per nucleus (the ids differ); the filling itself is C
        cv2.fillPoly(inst, [polys[i]], int(i + 1), cv2.LINE_8, _SHIFT)
    return inst


def _draw_red_cells(outlines: NDArray[np.float64], window: PixelWindow) -> NDArray[np.float32]:
    """Red-cell coverage (H, W) in [0, 1], anti-aliased (one fill per cell so overlaps stay filled)."""
    red = np.zeros((window.h, window.w), np.uint8)
    for poly in _to_pixels(outlines, window):
        cv2.fillPoly(red, [poly], 255, cv2.LINE_AA, _SHIFT)
    return red.astype(np.float32) * np.float32(1.0 / 255.0)


def _background(h: int, w: int) -> NDArray[np.uint8]:
    return np.full((h, w, 3), BACKGROUND_RGB, np.uint8)


def _render(scene: Scene, x0: int, y0: int, w: int, h: int, px: float, truth: bool) -> Rendered:
    """Render the window; in image-only mode, only the part that shapes can reach is computed."""
    if w <= 0 or h <= 0:
        raise ValueError(f"window size must be positive, got {w}x{h}")
    layers = layers_for(scene)
    r_max = max_nucleus_radius(layers)
    grow = 3.0 * r_max + 4.0 * FIELD_STEP_UM + MARGIN_PX * px
    rect = (x0 * px - grow, y0 * px - grow, (x0 + w) * px + grow, (y0 + h) * px + grow)
    sub = scene.within(rect)
    extent = sub.extent()
    if extent is None:
        empty = np.zeros((h, w), np.int32)
        return Rendered(_background(h, w), np.zeros((h, w), np.uint8), empty, NucleusSet.empty(), {})
    if not truth:  # everything outside the shapes' reach is plain glass: render only the rest
        reach = r_max + (MARGIN_PX + 1) * px
        cx0 = max(x0, int(np.floor((extent[0] - reach) / px)))
        cy0 = max(y0, int(np.floor((extent[1] - reach) / px)))
        cx1 = min(x0 + w, int(np.ceil((extent[2] + reach) / px)))
        cy1 = min(y0 + h, int(np.ceil((extent[3] + reach) / px)))
        if cx0 >= cx1 or cy0 >= cy1:
            return Rendered(_background(h, w), np.zeros((0, 0), np.uint8), np.zeros((0, 0), np.int32),
                            NucleusSet.empty(), {})
        if (cx0, cy0, cx1, cy1) != (x0, y0, x0 + w, y0 + h):
            inner = _render_window(sub, cx0, cy0, cx1 - cx0, cy1 - cy0, px, layers, truth=False)
            rgb = _background(h, w)
            rgb[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = inner.rgb
            return Rendered(rgb, np.zeros((0, 0), np.uint8), np.zeros((0, 0), np.int32), NucleusSet.empty(), {})
    return _render_window(sub, x0, y0, w, h, px, layers, truth)


def _render_window(
    sub: Scene, x0: int, y0: int, w: int, h: int, px: float, layers: tuple, truth: bool
) -> Rendered:
    win = PixelWindow.around(x0, y0, w, h, px, MARGIN_PX)
    crop = (slice(y0 - win.y0, y0 - win.y0 + h), slice(x0 - win.x0, x0 - win.x0 + w))
    fields = win.sample(lambda x, y: eval_fields(sub, x, y), FIELD_STEP_UM)  # (H', W') each
    mat = classify(sub, fields)
    nuclei = place_nuclei(sub, win.rect, layers)
    inst = _draw_instances(nuclei, win)
    red = _draw_red_cells(red_cells(sub, win.rect), win)

    tex = textures(sub, win)
    hd, ed = stain_maps(sub, mat, fields, tex, win)
    hn = nucleus_density(nuclei, inst, win.xs, win.ys, tex["fine"])
    in_nucleus = (inst > 0).astype(np.float32)
    h_total = hd * (1.0 - 0.75 * in_nucleus) + hn  # nuclei keep a little of the cytoplasm's stain
    e_total = (ed * (1.0 - 0.65 * in_nucleus) + 0.12 * in_nucleus) * (1.0 - 0.7 * red)
    rgb = compose(sub, h_total, e_total, red * np.float32(1.1), (win.x0, win.y0))
    if not truth:
        return Rendered(rgb[crop], np.zeros((0, 0), np.uint8), np.zeros((0, 0), np.int32), NucleusSet.empty(), {})
    return Rendered(rgb[crop], mat[crop], inst[crop], nuclei, {name: v[crop] for name, v in fields.items()})


def render_rgb(scene: Scene, x0: int, y0: int, w: int, h: int, px: float) -> NDArray[np.uint8]:
    """The (h, w, 3) image of the window whose top-left pixel index is (x0, y0), at `px` micrometres per pixel."""
    return _render(scene, x0, y0, w, h, px, truth=False).rgb


def render_truth(scene: Scene, x0: int, y0: int, w: int, h: int, px: float) -> Rendered:
    """Like :func:`render_rgb` but with the material map, nucleus instances and fields."""
    return _render(scene, x0, y0, w, h, px, truth=True)
