"""Pixel windows and the coarse node lattices their smooth fields are sampled on.

A pixel grid of pitch `px` micrometres has pixel (i, j) centred at
``((j + 0.5) * px, (i + 0.5) * px)``.  Smooth quantities (signed distances,
cellular-noise distances, texture noise) are evaluated only on *nodes* every
``f`` pixels (``f`` a power of two) at world positions ``(k + 0.5) * f * px``,
then enlarged to pixels with ``cv2.resize`` (bicubic, so iso-lines stay round
instead of showing the node lattice's facets).  For an integer factor that
resize gives every pixel a fixed weighting of its four neighbouring nodes per
axis that depends only on the pixel's index modulo ``f``, so as long as windows
start on multiples of the largest factor (:data:`ALIGN`) every window computes
the same value for a pixel: tiles, strips and ``render_region`` all agree.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

ALIGN = 16  # windows start and end on multiples of this many pixels (the largest node factor)
_PAD = 2  # extra nodes on each side (bicubic interpolation reads two nodes either way)


def node_factor(step_um: float, px: float) -> int:
    """The power-of-two pixel factor closest to a node spacing of `step_um` (1 = evaluate every pixel)."""
    ratio = step_um / px
    if ratio < 1.5:
        return 1
    return int(min(ALIGN, 2 ** round(np.log2(ratio))))


class PixelWindow:
    """An aligned window [x0, x0 + w) x [y0, y0 + h) of a pixel grid of pitch `px` micrometres."""

    def __init__(self, x0: int, y0: int, w: int, h: int, px: float) -> None:
        if x0 % ALIGN or y0 % ALIGN or w % ALIGN or h % ALIGN:
            raise ValueError(f"window {x0},{y0} {w}x{h} is not aligned to {ALIGN} pixels")
        self.x0, self.y0, self.w, self.h, self.px = x0, y0, w, h, float(px)
        self.xs = (x0 + np.arange(w) + 0.5) * self.px  # (W,) pixel-centre world x
        self.ys = (y0 + np.arange(h) + 0.5) * self.px  # (H,)

    @staticmethod
    def around(x0: int, y0: int, w: int, h: int, px: float, margin: int) -> PixelWindow:
        """The smallest aligned window containing the given one grown by `margin` pixels."""
        ax0 = (x0 - margin) // ALIGN * ALIGN
        ay0 = (y0 - margin) // ALIGN * ALIGN
        ax1 = -((-(x0 + w + margin)) // ALIGN) * ALIGN
        ay1 = -((-(y0 + h + margin)) // ALIGN) * ALIGN
        return PixelWindow(ax0, ay0, ax1 - ax0, ay1 - ay0, px)

    @property
    def rect(self) -> tuple[float, float, float, float]:
        """World rectangle (x0, y0, x1, y1) micrometres covered by the window."""
        return (self.x0 * self.px, self.y0 * self.px, (self.x0 + self.w) * self.px, (self.y0 + self.h) * self.px)

    def node_axes(self, factor: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World coordinates (nx,), (ny,) of the node columns and rows every `factor` pixels (_PAD extra each side)."""
        if factor == 1:
            return self.xs, self.ys
        kx = np.arange(self.x0 // factor - _PAD, (self.x0 + self.w) // factor + _PAD)
        ky = np.arange(self.y0 // factor - _PAD, (self.y0 + self.h) // factor + _PAD)
        step = factor * self.px
        return (kx + 0.5) * step, (ky + 0.5) * step

    def nodes(self, factor: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World coordinates (ny, nx) of the node grid of :meth:`node_axes`."""
        ax, ay = self.node_axes(factor)
        return np.meshgrid(ax, ay, indexing="xy")

    def enlarge(self, values: NDArray[np.floating], factor: int) -> NDArray[np.float32]:
        """Node values (ny, nx) from :meth:`nodes` -> pixel values (H, W), bicubic."""
        v = np.asarray(values, np.float32)
        if factor == 1:
            return v
        big = cv2.resize(v, (v.shape[1] * factor, v.shape[0] * factor), interpolation=cv2.INTER_CUBIC)
        o = _PAD * factor
        return big[o : o + self.h, o : o + self.w]

    def sample(
        self,
        fn: Callable[[NDArray[np.float64], NDArray[np.float64]], dict[str, NDArray]],
        step_um: float,
    ) -> dict[str, NDArray[np.float32]]:
        """Evaluate a dict-valued smooth function on the nodes for `step_um` and enlarge every entry.

        `fn` receives a row of x (1, nx) and a column of y (ny, 1) and must broadcast them.
        """
        factor = node_factor(step_um, self.px)
        ax, ay = self.node_axes(factor)
        shape = (ay.size, ax.size)
        out = {}
        for name, v in fn(ax[None, :], ay[:, None]).items():
            v = np.broadcast_to(np.where(np.isfinite(v), v, 1e6), shape)
            out[name] = self.enlarge(v, factor)
        return out

    def texture(
        self, grid_fn: Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray], step_um: float
    ) -> NDArray[np.float32]:
        """Evaluate a separable-grid function ``grid_fn(xs, ys) -> (ny, nx)`` on the nodes and enlarge it."""
        factor = node_factor(step_um, self.px)
        return self.enlarge(grid_fn(*self.node_axes(factor)), factor)
