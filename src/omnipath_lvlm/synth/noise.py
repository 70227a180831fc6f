"""Position-keyed randomness: integer hashing, value noise, cellular noise, point lattices.

Every number produced here is a pure function of a 64-bit *key* and a world
position (micrometres), never of the window being rendered.  That is what lets
the slide writer render tile by tile while ``render_region`` reproduces any
region exactly: the same world point always gets the same noise.

* :func:`derive_key` turns a seed and names into a key (stable across runs).
* :func:`hash_uniform` maps integer lattice coordinates to uniforms in [0, 1).
* :class:`ValueNoise` / :class:`Fbm` are smooth noise fields, at arbitrary points
  (lattice nodes shared by nearby points are hashed once) or on a separable
  grid (two gathers per value).
* :class:`Cellular` is Worley noise (distances to the nearest and second nearest
  jittered lattice point) with optional anisotropy; its lattice points double as
  cell centres (e.g. one hepatocyte nucleus per cell).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)

FloatArray = NDArray[np.float64]


def derive_key(seed: int, *names: object) -> int:
    """A 63-bit key from a seed and any names (stable across processes, unlike hash())."""
    text = ":".join([str(int(seed)), *(str(n) for n in names)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def _mix(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 finaliser (a bijection on uint64 with good avalanche)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def hash_u64(key: int, *coords: NDArray[np.integer] | int) -> NDArray[np.uint64]:
    """Hash a key and broadcastable integer coordinates into uint64 values."""
    arrays = [np.asarray(c, dtype=np.int64) for c in coords]
    shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
    with np.errstate(over="ignore"):
        h = np.full(shape if shape else (1,), np.uint64(key & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
        for a in arrays:
            h = _mix(h ^ (np.broadcast_to(a, shape).astype(np.uint64) * _GOLDEN))
        h = _mix(h + _GOLDEN)
    return h.reshape(shape)


def hash_uniform(key: int, *coords: NDArray[np.integer] | int) -> FloatArray:
    """Uniform numbers in [0, 1) keyed by integer coordinates (same shape as the broadcast coords)."""
    return (hash_u64(key, *coords) >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def _fade(t: FloatArray) -> FloatArray:
    return t * t * (3.0 - 2.0 * t)


def _gather(
    fn: Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray],
    ix: NDArray[np.int64],
    iy: NDArray[np.int64],
) -> NDArray:
    """fn(ix, iy) for integer lattice coordinates, hashing each distinct node once when they are compact.

    Nearby points share lattice nodes; a small table of the nodes in the
    bounding range is hashed and then indexed, which is much cheaper than
    hashing every point's corners.
    """
    ix, iy = np.broadcast_arrays(ix, iy)
    if ix.size == 0:
        return fn(ix, iy)
    x0, y0 = int(ix.min()), int(iy.min())
    nx, ny = int(ix.max()) - x0 + 1, int(iy.max()) - y0 + 1
    if nx * ny > max(4 * ix.size, 4096):
        return fn(ix, iy)
    table = fn(np.arange(x0, x0 + nx)[None, :], np.arange(y0, y0 + ny)[:, None])  # (ny, nx)
    return table[iy - y0, ix - x0]


@dataclass(frozen=True)
class ValueNoise:
    """Smooth noise in [-1, 1] with lattice spacing `scale` (micrometres)."""

    key: int
    scale: float

    def lattice(self, ix: NDArray[np.integer], iy: NDArray[np.integer]) -> FloatArray:
        return hash_uniform(self.key, ix, iy) * 2.0 - 1.0

    def at(self, x: FloatArray, y: FloatArray) -> FloatArray:
        """Noise at points (any broadcastable shapes; a row x (1, W) with a column y (H, 1) is a grid)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.ndim == 2 and y.ndim == 2 and x.shape[0] == 1 and y.shape[1] == 1:
            return self.on_grid(x[0], y[:, 0])
        fx, fy = x / self.scale, y / self.scale
        ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        tx, ty = _fade(fx - ix), _fade(fy - iy)
        v00, v10 = _gather(self.lattice, ix, iy), _gather(self.lattice, ix + 1, iy)
        v01, v11 = _gather(self.lattice, ix, iy + 1), _gather(self.lattice, ix + 1, iy + 1)
        top = v00 + (v10 - v00) * tx
        bottom = v01 + (v11 - v01) * tx
        return top + (bottom - top) * ty

    def on_grid(self, xs: FloatArray, ys: FloatArray) -> NDArray[np.float32]:
        """Noise on the grid of column coordinates xs (W,) and row coordinates ys (H,) -> (H, W).

        Separable: the lattice nodes of the grid's range are hashed once, then
        rows and columns are interpolated with two gathers.  Each value depends
        only on its own coordinates, exactly as in :meth:`at`.
        """
        fx, fy = np.asarray(xs, np.float64) / self.scale, np.asarray(ys, np.float64) / self.scale
        ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        tx, ty = _fade(fx - ix).astype(np.float32), _fade(fy - iy).astype(np.float32)
        x0, y0 = int(ix.min()), int(iy.min())
        lat = self.lattice(np.arange(x0, int(ix.max()) + 2)[None, :], np.arange(y0, int(iy.max()) + 2)[:, None])
        lat = lat.astype(np.float32)  # (my, mx)
        rows = lat[iy - y0] + (lat[iy - y0 + 1] - lat[iy - y0]) * ty[:, None]  # (H, mx)
        left, right = rows[:, ix - x0], rows[:, ix - x0 + 1]  # (H, W)
        return left + (right - left) * tx[None, :]


@dataclass(frozen=True)
class Fbm:
    """Fractal sum of value-noise octaves (each octave half the scale, `gain` the amplitude)."""

    key: int
    scale: float
    octaves: int = 3
    gain: float = 0.5

    def _octaves(self) -> list[tuple[ValueNoise, float]]:
        out, amp, total = [], 1.0, 0.0
        for i in range(self.octaves):
            out.append((ValueNoise(derive_key(self.key, "octave", i), self.scale / 2**i), amp))
            total += amp
            amp *= self.gain
        return [(n, a / total) for n, a in out]

    def at(self, x: FloatArray, y: FloatArray) -> FloatArray:
        return sum(a * n.at(x, y) for n, a in self._octaves())

    def on_grid(self, xs: FloatArray, ys: FloatArray) -> NDArray[np.float32]:
        return sum(np.float32(a) * n.on_grid(xs, ys) for n, a in self._octaves())


@dataclass(frozen=True)
class Cellular:
    """Worley noise over jittered lattice points (mean spacing `scale` micrometres).

    `stretch` > 1 elongates cells along the direction `angle` (radians), giving
    e.g. tubular crypts.  Distances are returned in micrometres of the
    un-stretched lattice frame.
    """

    key: int
    scale: float
    jitter: float = 0.8
    stretch: float = 1.0
    angle: float = 0.0
    presence: float = 1.0  # probability that a cell holds a point (absent cells are skipped)

    def _to_lattice(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        u = (x * c + y * s) / (self.scale * self.stretch)
        v = (-x * s + y * c) / self.scale
        return u, v

    def _from_lattice(self, u: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        uu, vv = u * self.scale * self.stretch, v * self.scale
        return uu * c - vv * s, uu * s + vv * c

    def feature(self, iu: NDArray[np.integer], iv: NDArray[np.integer]) -> tuple[FloatArray, FloatArray]:
        """Position (lattice units) of the point of cell (iu, iv)."""
        ju = hash_uniform(self.key, iu, iv, 0) - 0.5
        jv = hash_uniform(self.key, iu, iv, 1) - 0.5
        return iu + 0.5 + self.jitter * ju, iv + 0.5 + self.jitter * jv

    def at(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray, NDArray[np.int64], NDArray[np.int64]]:
        """(F1, F2, cell_u, cell_v): nearest and second-nearest distances and the nearest cell."""
        u, v = self._to_lattice(np.asarray(x, np.float64), np.asarray(y, np.float64))
        u, v = np.broadcast_arrays(u, v)
        iu0, iv0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        features = self._feature_lookup(iu0, iv0)
        f1 = np.full(u.shape, np.inf)
        f2 = np.full(u.shape, np.inf)
        cu = np.zeros(u.shape, np.int64)
        cv = np.zeros(u.shape, np.int64)
        for du in (-1, 0, 1):
            for dv in (-1, 0, 1):
                iu, iv = iu0 + du, iv0 + dv
                pu, pv, here = features(iu, iv)
                d = np.where(here, (u - pu) ** 2 + (v - pv) ** 2, np.inf)
                nearer = d < f1
                f2 = np.where(nearer, f1, np.minimum(f2, d))
                f1 = np.where(nearer, d, f1)
                cu = np.where(nearer, iu, cu)
                cv = np.where(nearer, iv, cv)
        return np.sqrt(f1) * self.scale, np.sqrt(f2) * self.scale, cu, cv

    def _feature_lookup(
        self, iu0: NDArray[np.int64], iv0: NDArray[np.int64]
    ) -> Callable[[NDArray[np.int64], NDArray[np.int64]], tuple[FloatArray, FloatArray, NDArray[np.bool_]]]:
        """A function giving (pu, pv, present) of cells near iu0/iv0, from a table when the cells are compact."""

        def direct(iu: NDArray[np.int64], iv: NDArray[np.int64]) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
            pu, pv = self.feature(iu, iv)
            return pu, pv, self.cell_uniform(iu, iv, 0) < self.presence

        if iu0.size == 0:
            return direct
        u0, v0 = int(iu0.min()) - 1, int(iv0.min()) - 1
        nu, nv = int(iu0.max()) - u0 + 2, int(iv0.max()) - v0 + 2
        if nu * nv > max(4 * iu0.size, 4096):
            return direct
        tu, tv, tp = direct(np.arange(u0, u0 + nu)[None, :], np.arange(v0, v0 + nv)[:, None])  # (nv, nu)

        def table(iu: NDArray[np.int64], iv: NDArray[np.int64]) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
            r, c = iv - v0, iu - u0
            return tu[r, c], tv[r, c], tp[r, c]

        return table

    def points_in(
        self, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[FloatArray, FloatArray, NDArray[np.int64], NDArray[np.int64]]:
        """Lattice points inside the rectangle [x0, x1) x [y0, y1): (x, y, cell_u, cell_v), 1-D arrays."""
        cx = np.array([x0, x1, x0, x1])
        cy = np.array([y0, y0, y1, y1])
        u, v = self._to_lattice(cx, cy)
        iu = np.arange(int(np.floor(u.min())) - 1, int(np.floor(u.max())) + 2)
        iv = np.arange(int(np.floor(v.min())) - 1, int(np.floor(v.max())) + 2)
        gu, gv = np.meshgrid(iu, iv, indexing="xy")
        gu, gv = gu.ravel(), gv.ravel()
        pu, pv = self.feature(gu, gv)
        px, py = self._from_lattice(pu, pv)
        keep = (px >= x0) & (px < x1) & (py >= y0) & (py < y1)
        if self.presence < 1.0:
            keep &= self.cell_uniform(gu, gv, 0) < self.presence
        return px[keep], py[keep], gu[keep], gv[keep]

    def cell_uniform(self, cu: NDArray[np.integer], cv: NDArray[np.integer], stream: int) -> FloatArray:
        """A uniform number per cell (e.g. whether the cell holds a glomerulus)."""
        return hash_uniform(self.key, cu, cv, 100 + stream)


def noise_tile(key: int, size: int = 256) -> NDArray[np.float32]:
    """A (size, size) tile of white noise in [-1, 1], to be indexed by pixel position modulo size."""
    iy, ix = np.mgrid[0:size, 0:size]
    return (hash_uniform(key, ix, iy) * 2.0 - 1.0).astype(np.float32)
