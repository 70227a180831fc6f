"""Analytic shapes of the SynthPath world (coordinates in micrometres).

Each shape has a signed "distance" ``sdf(x, y)`` (negative inside, roughly in
micrometres near the outline), a bounding box and an exact outline polygon.
Pixels and annotations are both derived from the same formula, so the GeoJSON
of a slide lines up with its pixels.

* :class:`Blob`: a star-shaped region whose radius is a sum of cosine
  harmonics of the angle (tissue pieces, tumours, vessels, lymph nodes, emboli).
* :class:`Band`: a wavy band of tapering width along a segment (nerves).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Blob:
    """Star-shaped region: radius(theta) = radius * (1 + sum_k a_k cos(k theta + phi_k)), k = 2, 3, ..."""

    cx: float
    cy: float
    radius: float
    amps: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()

    @staticmethod
    def random(
        rng: np.random.Generator,
        cx: float,
        cy: float,
        radius: float,
        irregularity: float = 0.15,
        harmonics: int = 4,
        aspect: float = 1.0,
    ) -> Blob:
        """A random blob; `irregularity` bounds the summed harmonic amplitude, `aspect` adds an ellipse term."""
        raw = rng.uniform(0.3, 1.0, harmonics) / np.arange(2, harmonics + 2) ** 0.7
        amps = raw / raw.sum() * irregularity
        amps[0] += (aspect - 1.0) / (aspect + 1.0)  # k = 2 term: ellipse-like elongation
        total = amps.sum()
        if total > 0.7:  # keep the radius positive and the outline star-shaped
            amps *= 0.7 / total
        phases = rng.uniform(0, 2 * np.pi, harmonics)
        return Blob(float(cx), float(cy), float(radius), tuple(float(a) for a in amps), tuple(float(p) for p in phases))

    def radius_at(self, theta: FloatArray) -> FloatArray:
        r = np.ones_like(theta)
        for k, (a, p) in enumerate(zip(self.amps, self.phases), start=2):
            r = r + a * np.cos(k * theta + p)
        return self.radius * r

    def sdf(self, x: FloatArray, y: FloatArray, offset: float = 0.0) -> FloatArray:
        """|p - c| - (radius(theta) + offset): negative inside the outline grown by `offset`."""
        dx, dy = x - self.cx, y - self.cy
        return np.hypot(dx, dy) - (self.radius_at(np.arctan2(dy, dx)) + offset)

    @property
    def max_radius(self) -> float:
        return self.radius * (1.0 + float(np.sum(np.abs(self.amps))))

    @property
    def min_radius(self) -> float:
        """A lower bound of radius(theta): a disc of this radius about the centre lies inside the blob."""
        return self.radius * (1.0 - float(np.sum(np.abs(self.amps))))

    def bbox(self, offset: float = 0.0) -> tuple[float, float, float, float]:
        r = self.max_radius + offset
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    def polygon(self, n: int = 128, offset: float = 0.0) -> FloatArray:
        """(n, 2) outline points (x, y), counter-clockwise in image coordinates' maths sense."""
        theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        r = self.radius_at(theta) + offset
        return np.stack([self.cx + r * np.cos(theta), self.cy + r * np.sin(theta)], axis=1)

    def area(self) -> float:
        pts = self.polygon(256)
        x, y = pts[:, 0], pts[:, 1]
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@dataclass(frozen=True)
class Band:
    """A wavy band: centreline v = amp * sin(2 pi u / wavelength + phase) for 0 <= u <= length.

    (u, v) is the frame of the segment starting at (x0, y0) with direction
    `angle`.  The half-width tapers to zero at both ends.
    """

    x0: float
    y0: float
    angle: float
    length: float
    width: float
    amp: float
    wavelength: float
    phase: float

    def local(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx, dy = x - self.x0, y - self.y0
        return dx * c + dy * s, -dx * s + dy * c

    def centre(self, u: FloatArray) -> FloatArray:
        return self.amp * np.sin(2 * np.pi * u / self.wavelength + self.phase)

    def half_width(self, u: FloatArray) -> FloatArray:
        t = np.clip(2.0 * u / self.length - 1.0, -1.0, 1.0)
        return 0.5 * self.width * np.sqrt(np.clip(1.0 - t**6, 0.0, 1.0))

    def offset(self, x: FloatArray, y: FloatArray) -> FloatArray:
        """Signed offset from the centreline, across the band (micrometres)."""
        u, v = self.local(x, y)
        return v - self.centre(u)

    def sdf(self, x: FloatArray, y: FloatArray) -> FloatArray:
        u, v = self.local(x, y)
        d = np.abs(v - self.centre(u)) - self.half_width(u)
        return np.maximum(d, np.maximum(-u, u - self.length))

    def polygon(self, n: int = 160) -> FloatArray:
        """(2n, 2) outline points (x, y): one edge forward, the other back."""
        u = 0.5 * self.length * (1.0 - np.cos(np.linspace(0.0, np.pi, n)))  # dense near the ends
        c, h = self.centre(u), self.half_width(u)
        uu = np.concatenate([u, u[::-1]])
        vv = np.concatenate([c + h, (c - h)[::-1]])
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        return np.stack([self.x0 + uu * ca - vv * sa, self.y0 + uu * sa + vv * ca], axis=1)

    def bbox(self, pad: float = 0.0) -> tuple[float, float, float, float]:
        p = self.polygon(64)
        return (p[:, 0].min() - pad, p[:, 1].min() - pad, p[:, 0].max() + pad, p[:, 1].max() + pad)

    def point_at(self, u: float, across: float = 0.0) -> tuple[float, float]:
        """World position of the point at arc parameter u, `across` micrometres off the centreline."""
        v = float(self.centre(np.array(u))) + across
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        return self.x0 + u * ca - v * sa, self.y0 + u * sa + v * ca


def bbox_overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
