"""Tissue masks on slide thumbnails, in the manner of CLAM.

Stained tissue is coloured and glass is grey-white, so the HSV saturation
separates them: median-blur the saturation, threshold it with Otsu's method,
and close small gaps morphologically. Otsu always splits an image in two, even
one that is all glass or all tissue, so its threshold is clipped into
`saturation_range`: a blank white slide (saturation near 0) stays all
background and an image that is tissue throughout (saturation well above the
upper bound everywhere) stays all tissue.

`tissue_fraction` gives the tissue share of the image or of each cell of a
(rows, cols) grid (e.g. the vision encoder's token grid); `tissue_mask` turns
that into booleans with `min_fraction`.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image
from skimage.filters import threshold_otsu

# Saturation (0..255) bounds for the Otsu threshold: glass rarely exceeds the lower
# bound, stained tissue rarely falls under the upper one.
DEFAULT_SATURATION_RANGE = (15, 40)


def _as_rgb_array(thumbnail: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a PIL image or an array; transparency goes to white."""
    if isinstance(thumbnail, Image.Image):
        if thumbnail.mode in ("RGBA", "LA", "PA") or "transparency" in thumbnail.info:
            rgba = thumbnail.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba.convert("RGB"), (0, 0), rgba.getchannel("A"))
            return np.asarray(canvas)
        return np.asarray(thumbnail.convert("RGB"))
    array = np.asarray(thumbnail)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"thumbnail array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"thumbnail is empty: shape {array.shape}")
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"thumbnail array must hold numbers (uint8 0..255 or float 0..1), got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        array = np.nan_to_num(array.astype(np.float32) * 255.0)
    array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[2] == 4:  # composite onto white
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = (array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def _grid(grid: tuple[int, int]) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be (rows, cols), got {grid!r}") from None
    if rows <= 0 or cols <= 0:
        raise ValueError(f"grid must have positive rows and cols, got {grid!r}")
    return rows, cols


def _pixel_mask(
    rgb: np.ndarray, saturation_range: tuple[float, float], blur: int, close: int
) -> np.ndarray:
    """(H, W) bool tissue mask of an (H, W, 3) uint8 RGB image."""
    if blur < 1 or blur % 2 == 0:
        raise ValueError(f"blur must be a positive odd kernel size, got {blur}")
    if close < 0:
        raise ValueError(f"close must be a kernel size >= 0, got {close}")
    low, high = saturation_range
    if not 0 <= low <= high <= 255:
        raise ValueError(f"saturation_range must satisfy 0 <= low <= high <= 255, got {saturation_range}")
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 1]  # (H, W) uint8
    if blur > 1:
        saturation = cv2.medianBlur(saturation, blur)
    # Otsu is undefined on a flat image; its threshold is then irrelevant once clipped.
    otsu = float(threshold_otsu(saturation)) if saturation.min() != saturation.max() else float(saturation.min())
    mask = saturation > np.clip(otsu, low, high)  # (H, W) bool
    if close > 0:
        kernel = np.ones((close, close), np.uint8)
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    return mask


def tissue_fraction(
    thumbnail: Image.Image | np.ndarray,
    grid: tuple[int, int] | None = None,
    *,
    saturation_range: tuple[float, float] = DEFAULT_SATURATION_RANGE,
    blur: int = 7,
    close: int = 4,
) -> float | np.ndarray:
    """Share of tissue pixels: a float for the whole image, or a (rows, cols) float32 array per grid cell."""
    mask = _pixel_mask(_as_rgb_array(thumbnail), saturation_range, blur, close)
    if grid is None:
        return float(mask.mean())
    rows, cols = _grid(grid)
    # area interpolation averages exactly the pixels each cell covers, also for uneven splits
    return cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)  # (rows, cols)


def tissue_mask(
    thumbnail: Image.Image | np.ndarray,
    grid: tuple[int, int] | None = None,
    min_fraction: float = 0.25,
    *,
    saturation_range: tuple[float, float] = DEFAULT_SATURATION_RANGE,
    blur: int = 7,
    close: int = 4,
) -> np.ndarray:
    """Bool tissue mask: (H, W) per pixel, or (rows, cols) with a cell marked when >= min_fraction of it is tissue."""
    if grid is None:
        return _pixel_mask(_as_rgb_array(thumbnail), saturation_range, blur, close)
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    fractions = tissue_fraction(thumbnail, grid, saturation_range=saturation_range, blur=blur, close=close)
    return np.asarray(fractions) >= min_fraction - 1e-6  # tolerance for float area sums

