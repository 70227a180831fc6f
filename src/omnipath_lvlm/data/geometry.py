"""Geometry between masks, polygons and boxes, in one pixel convention.

Pixel convention (used by every function here and by the answer formats)
------------------------------------------------------------------------
``x`` runs along columns (to the right), ``y`` along rows (downwards).  The
pixel in row ``r`` and column ``c`` is the unit square ``[c, c+1) x [r, r+1)``;
its centre is ``(c + 0.5, r + 0.5)``.  Coordinates are therefore *pixel
edges*:

* a box ``(x1, y1, x2, y2)`` of a set of pixels has ``x1 = min col``,
  ``y1 = min row``, ``x2 = max col + 1``, ``y2 = max row + 1`` (x2/y2 are
  exclusive), so its width ``x2 - x1`` is its number of columns and the whole
  image is ``(0, 0, W, H)``;
* polygon vertices lie on the outline of the pixels they cover, and a
  polygon covers a pixel when it contains the pixel's centre;
* relative coordinates (the paper's 0..1 values) are absolute ones divided
  by the image width (x) and height (y), so the whole image is ``(0, 0, 1, 1)``.

Arrays of boxes are ``(N, 4)`` ``x1, y1, x2, y2``; polygons are ``(K, 2)``
``x, y`` without a repeated closing vertex.
"""
from __future__ import annotations

import cv2
import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from PIL import Image
from scipy import ndimage
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.polygon import orient
from skimage.draw import polygon2mask

_MAX_SIMPLIFY_ROUNDS = 64


def _outline(component: NDArray[np.uint8]) -> Polygon:
    """The outer pixel-edge outline of one 8-connected component (holes filled), in the crop's frame."""
    # An 8-connected component has one outer boundary, traced through its boundary pixels' (col, row).
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    centres = max(contours, key=len).reshape(-1, 2).astype(np.float64) + 0.5  # (P, 2) pixel centres
    if len(centres) >= 3:
        # A thin part of the component makes the traced ring run back on itself; make_valid splits it.
        line = shapely.make_valid(Polygon(centres))
    elif len(centres) == 2:
        line = LineString(centres)
    else:
        line = Point(centres[0])
    # Growing the centre outline by half a pixel (square corners) puts it on the pixel edges.
    grown = line.buffer(0.5, join_style="mitre", cap_style="square")
    if grown.geom_type == "MultiPolygon":
        grown = max(grown.geoms, key=lambda part: part.area)
    return Polygon(grown.exterior)


def _simplified(outline: Polygon, max_vertices: int) -> Polygon:
    """The outline with at most ``max_vertices`` vertices, simplified with a growing tolerance."""
    tolerance = 0.0
    shape = outline.simplify(tolerance)
    for _ in range(_MAX_SIMPLIFY_ROUNDS):
        if len(shape.exterior.coords) - 1 <= max_vertices:
            return shape
        tolerance = 0.25 if tolerance == 0.0 else tolerance * 1.5
        shape = outline.simplify(tolerance, preserve_topology=True)
    # Simplification could not get there (very large max_vertices never reaches this): use the rectangle.
    return outline.minimum_rotated_rectangle


def mask_to_polygons(mask: ArrayLike, max_vertices: int = 50, min_area: float = 1.0) -> list[NDArray[np.float64]]:
    """One polygon per 8-connected component of ``mask`` (H, W), outlining its pixels' edges.

    Holes are filled (the answer format has no holes); components with fewer
    than ``min_area`` pixels are dropped.  Each outline is simplified (shapely
    ``simplify`` with a growing tolerance) until it has at most
    ``max_vertices`` vertices (the paper uses 50).  Returns ``(K, 2)`` float
    ``x, y`` arrays in pixel-edge coordinates inside ``0..W, 0..H``,
    counter-clockwise in shapely's sense, components in row-major order of
    their first pixel.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if max_vertices < 4:
        raise ValueError(f"max_vertices must be at least 4 (a rectangle), got {max_vertices}")
    labels, count = ndimage.label(mask.astype(bool), structure=np.ones((3, 3), dtype=bool))  # (H, W)
    polygons = []
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None:
            continue
        component = (labels[window] == index)  # (h, w)
        if component.sum() < min_area:
            continue
        # One pixel of padding keeps cv2's tracing away from the crop border.
        padded = np.pad(component, 1).astype(np.uint8)
        outline = _simplified(_outline(padded), max_vertices)
        outline = orient(outline, sign=1.0)
        offset = np.array([window[1].start - 1, window[0].start - 1], dtype=np.float64)  # (x, y) of the pad
        vertices = np.asarray(outline.exterior.coords, dtype=np.float64)[:-1] + offset  # (K, 2)
        # Half-pixel growth around diagonal ends can poke past the image edge: keep vertices on the image.
        vertices[:, 0] = np.clip(vertices[:, 0], 0.0, mask.shape[1])
        vertices[:, 1] = np.clip(vertices[:, 1], 0.0, mask.shape[0])
        polygons.append(vertices)
    return polygons


def resize_mask(mask: ArrayLike, size: tuple[int, int]) -> NDArray[np.bool_]:
    """A 2-D mask (non-zero = set) resized to ``size`` = (width, height) by nearest neighbour -> (H, W) bool."""
    values = np.asarray(mask)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"a mask must be a non-empty 2-D array, got shape {values.shape}")
    width, height = int(size[0]), int(size[1])
    picture = Image.fromarray((values > 0).astype(np.uint8) * 255)
    return np.asarray(picture.resize((width, height), Image.NEAREST)) > 127


def polygons_to_mask(polygons: list[ArrayLike], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """The (H, W) boolean union of polygons given as ``(K, 2)`` x, y pixel-edge coordinates.

    A pixel is set when the polygon contains its centre.
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {shape}")
    mask = np.zeros(shape, dtype=bool)  # (H, W)
    for i, polygon in enumerate(polygons):
        vertices = np.asarray(polygon, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
            raise ValueError(f"polygon {i} must be a (K, 2) array with K >= 3, got shape {vertices.shape}")
        if not np.isfinite(vertices).all():
            raise ValueError(f"polygon {i} has non-finite vertices")
        # skimage samples pixel (r, c) at the point (r, c); our centres are at (r + 0.5, c + 0.5).
        rows_cols = vertices[:, ::-1] - 0.5  # (K, 2) row, col
        mask |= polygon2mask(shape, rows_cols)
    return mask


def instance_mask_to_boxes(instance_mask: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Instance ids (N,) in increasing order and their boxes (N, 4) x1, y1, x2, y2 (x2, y2 exclusive).

    ``instance_mask`` is an (H, W) integer label image; 0 is background.
    """
    labels = np.asarray(instance_mask)
    if labels.ndim != 2:
        raise ValueError(f"instance_mask must be 2-D (H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise ValueError(f"instance_mask must hold integer labels, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("instance_mask has negative labels; ids must be >= 0 with 0 as background")
    ids = np.unique(labels)
    ids = ids[ids != 0].astype(np.int64)  # (N,)
    boxes = np.zeros((len(ids), 4), dtype=np.int64)  # (N, 4)
    if len(ids) == 0:
        return ids, boxes
    # Relabel to 1..N so find_objects does not allocate one slot per unused id.
    dense = np.searchsorted(ids, labels) + 1
    dense[labels == 0] = 0
    for i, window in enumerate(ndimage.find_objects(dense)):
        rows, cols = window
        boxes[i] = (cols.start, rows.start, cols.stop, rows.stop)
    return ids, boxes


def _as_boxes(boxes: ArrayLike, name: str) -> NDArray[np.float64]:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must be an (N, 4) array of x1, y1, x2, y2, got shape {array.shape}")
    return array


def box_iou(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Pairwise intersection over union of boxes a (N, 4) and b (M, 4): an (N, M) array.

    Boxes with no area have IoU 0 with everything (never NaN).
    """
    a = _as_boxes(a, "a")  # (N, 4)
    b = _as_boxes(b, "b")  # (M, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)  # (N,)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # (M,)
    left_top = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    right_bottom = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    overlap = np.clip(right_bottom - left_top, 0, None)  # (N, M, 2)
    intersection = overlap[..., 0] * overlap[..., 1]  # (N, M)
    union = area_a[:, None] + area_b[None, :] - intersection  # (N, M)
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def mask_iou(a: ArrayLike, b: ArrayLike) -> float | NDArray[np.float64]:
    """Intersection over union of masks.

    Two (H, W) masks give a float; stacks (N, H, W) and (M, H, W) give the
    pairwise (N, M) array.  Two empty masks agree perfectly: IoU 1.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.ndim == 2 and b.ndim == 2:
        if a.shape != b.shape:
            raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")
        union = np.logical_or(a, b).sum()
        return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask_iou takes two (H, W) masks or stacks (N, H, W), (M, H, W); got {a.shape}, {b.shape}")
    flat_a = a.reshape(len(a), -1).astype(np.float64)  # (N, H*W)
    flat_b = b.reshape(len(b), -1).astype(np.float64)  # (M, H*W)
    intersection = flat_a @ flat_b.T  # (N, M)
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - intersection  # (N, M)
    return np.divide(intersection, union, out=np.ones_like(intersection), where=union > 0)


def dice(pred: ArrayLike, target: ArrayLike) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|) of two same-shape masks; 1 when both are empty."""
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {pred.shape} and {target.shape}")
    total = int(pred.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, target).sum()) / total


def _scale(values: ArrayLike, x_factor: float, y_factor: float) -> NDArray[np.float64]:
    array = np.array(values, dtype=np.float64)
    if array.ndim == 0 or array.shape[-1] % 2:
        raise ValueError(
            f"coordinates must end in an even axis of x, y pairs (points (K, 2) or boxes (N, 4)), got {array.shape}"
        )
    array[..., 0::2] *= x_factor
    array[..., 1::2] *= y_factor
    return array


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got width={width}, height={height}")


def to_relative(coords: ArrayLike, width: float, height: float) -> NDArray[np.float64]:
    """Pixel-edge coordinates (..., 2k) of x, y pairs divided by the image width and height."""
    _check_size(width, height)
    return _scale(coords, 1.0 / width, 1.0 / height)


def to_absolute(coords: ArrayLike, width: float, height: float) -> NDArray[np.float64]:
    """Relative coordinates (..., 2k) of x, y pairs multiplied by the image width and height."""
    _check_size(width, height)
    return _scale(coords, float(width), float(height))
