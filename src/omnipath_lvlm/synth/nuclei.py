"""Nuclei (and red blood cells): where they are, what class, what shape.

Each :class:`NucleusLayer` scatters candidates on its own jittered lattice
(:class:`~omnipath_lvlm.synth.noise.Cellular` points) and keeps a candidate
with a probability that depends on the material under its centre, e.g.
lymphocytes are dense in lymphoid tissue and rare in stroma.  All per-nucleus
attributes (size, elongation, orientation, outline irregularity, stain density,
mitosis) are hashed from the lattice cell, so a nucleus is the same in every
window that sees it.

Overlaps are thinned with a local rule (a nucleus is dropped when a neighbour
of higher priority is too close), which only needs candidates within a fixed
margin: windows agree as long as they enumerate that margin.

Tumour nuclei carry the grade: bigger, more variable, more irregular, darker
and with nucleoli and mitoses as the grade rises.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from .materials import classify, eval_fields, organ_cells
from .noise import Cellular, derive_key, hash_uniform
from .scene import Rect, Scene
from .taxonomy import N_MATERIALS, NUCLEUS_CLASSES
from .taxonomy import Material as M

TEXTURE_DENSE, TEXTURE_VESICULAR, TEXTURE_NUCLEOLAR, TEXTURE_MITOSIS = 0, 1, 2, 3
N_VERTICES = 18
N_HARMONICS = 3
ORIENTATIONS = ("random", "flow", "radial")  # NucleusLayer.orient values, coded 0, 1, 2
# material -> field whose iso-lines nuclei in that material follow
FLOW_MATERIALS: tuple[tuple[M, str], ...] = (
    (M.VESSEL_WALL, "v_lumen"),
    (M.ENDOTHELIUM, "v_lumen"),
    (M.NERVE, "nerve_v"),
    (M.PERINEURIUM, "nerve"),
    (M.CAPSULE, "ln"),
)


def _presence(table: dict[M, float]) -> tuple[float, ...]:
    out = [0.0] * N_MATERIALS
    for mat, p in table.items():
        out[int(mat)] = float(p)
    return tuple(out)


@dataclass(frozen=True)
class NucleusLayer:
    """One population of nuclei (a class with its look and where it lives)."""

    cls: str
    lattice: Cellular
    presence: tuple[float, ...]  # probability per Material
    size: float  # mean equivalent radius sqrt(a * b), micrometres
    size_sd: float  # relative spread of the size
    aspect: tuple[float, float]  # range of major / minor axis
    irregularity: float  # amplitude of the outline's radial harmonics
    density: float  # haematoxylin density
    density_sd: float
    texture: int
    orient: str = "random"  # "random", "flow" (follow the local structure), "radial" (across crypt walls)
    mitosis_rate: float = 0.0

    @property
    def max_radius(self) -> float:
        """Largest semi-axis any nucleus of this layer can have (micrometres)."""
        return self.size * (1.0 + 2.5 * self.size_sd) * np.sqrt(self.aspect[1]) * (1.0 + N_HARMONICS * self.irregularity)


@dataclass
class NucleusSet:
    """Nuclei as parallel arrays (N,); coordinates in micrometres."""

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    a: NDArray[np.float64]  # semi-major axis
    b: NDArray[np.float64]  # semi-minor axis
    angle: NDArray[np.float64]
    amps: NDArray[np.float64]  # (N, N_HARMONICS)
    phases: NDArray[np.float64]  # (N, N_HARMONICS)
    density: NDArray[np.float64]
    texture: NDArray[np.int64]
    cls: NDArray[np.int64]  # index into NUCLEUS_CLASSES
    priority: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.x.size)

    def take(self, index: NDArray) -> NucleusSet:
        return NucleusSet(**{k: v[index] for k, v in vars(self).items()})

    @staticmethod
    def concat(parts: list[NucleusSet]) -> NucleusSet:
        if not parts:
            return NucleusSet.empty()
        return NucleusSet(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in vars(parts[0])})

    @staticmethod
    def empty() -> NucleusSet:
        z = np.zeros(0)
        zi = np.zeros(0, np.int64)
        zz = np.zeros((0, N_HARMONICS))
        return NucleusSet(z, z, z, z, z, zz, zz, z, zi, zi, z)

    def class_names(self) -> list[str]:
        return [NUCLEUS_CLASSES[i] for i in self.cls]

    def polygons(self, n: int = N_VERTICES) -> NDArray[np.float64]:
        """(N, n, 2) outline vertices (x, y) in micrometres."""
        t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)[None, :]  # (1, n)
        k = np.arange(2, 2 + N_HARMONICS)[None, None, :]  # (1, 1, H)
        rho = 1.0 + np.sum(self.amps[:, None, :] * np.cos(k * t[..., None] + self.phases[:, None, :]), axis=-1)  # (N, n)
        lx = self.a[:, None] * np.cos(t) * rho
        ly = self.b[:, None] * np.sin(t) * rho
        c, s = np.cos(self.angle)[:, None], np.sin(self.angle)[:, None]
        return np.stack([self.x[:, None] + lx * c - ly * s, self.y[:, None] + lx * s + ly * c], axis=-1)


def _normal(u1: NDArray[np.float64], u2: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.sqrt(-2.0 * np.log(np.maximum(u1, 1e-12))) * np.cos(2 * np.pi * u2)


def layers_for(scene: Scene) -> tuple[NucleusLayer, ...]:
    """The nucleus populations of a scene (depend on organ, tumour grade and TIL status)."""
    k = scene.key
    til = bool(scene.tumour and scene.tumour.til)
    colon = scene.organ == "Colon"
    layers = [
        NucleusLayer(
            "stromal",
            Cellular(derive_key(k, "stromal"), 15.0, 0.9),
            _presence({M.STROMA: 0.3, M.TUMOUR_STROMA: 0.34, M.ORGAN_STROMA: 0.2, M.CAPSULE: 0.3,
                       M.VESSEL_WALL: 0.5, M.NERVE: 0.45, M.PERINEURIUM: 0.3, M.FAT_SEPTUM: 0.05}),
            size=2.6, size_sd=0.08, aspect=(3.5, 6.0), irregularity=0.03, density=1.45, density_sd=0.1,
            texture=TEXTURE_DENSE, orient="flow",
        ),
        NucleusLayer(
            "stromal",
            Cellular(derive_key(k, "endothelial"), 8.0, 0.6),
            _presence({M.ENDOTHELIUM: 0.5}),
            size=2.2, size_sd=0.08, aspect=(4.0, 6.0), irregularity=0.02, density=1.45, density_sd=0.1,
            texture=TEXTURE_DENSE, orient="flow",
        ),
        NucleusLayer(
            "lymphocyte",
            Cellular(derive_key(k, "lymphocytes"), 7.8, 0.75),
            _presence({M.LYMPHOID: 0.95, M.FOLLICLE: 0.3, M.ORGAN_STROMA: 0.14 if colon else 0.05,
                       M.STROMA: 0.03, M.TUMOUR_STROMA: 0.35 if til else 0.02,
                       M.TUMOUR_EPI: 0.16 if til else 0.004, M.CAPSULE: 0.03}),
            size=2.9, size_sd=0.07, aspect=(1.0, 1.15), irregularity=0.03, density=2.0, density_sd=0.08,
            texture=TEXTURE_DENSE,
        ),
        NucleusLayer(
            "lymphocyte",
            Cellular(derive_key(k, "centroblasts"), 11.0, 0.8),
            _presence({M.FOLLICLE: 0.55}),
            size=4.0, size_sd=0.1, aspect=(1.0, 1.3), irregularity=0.04, density=1.15, density_sd=0.1,
            texture=TEXTURE_VESICULAR,
        ),
    ]
    layers.extend(_epithelial_layers(scene))
    layers.append(_tumour_layer(scene))
    return tuple(layers)


def _epithelial_layers(scene: Scene) -> list[NucleusLayer]:
    k = scene.key
    if scene.filler != "organ" or scene.organ is None:
        return []
    if scene.organ == "Liver":
        return [NucleusLayer("epithelial", organ_cells(scene), _presence({M.ORGAN_EPI: 0.92}),
                             size=3.6, size_sd=0.08, aspect=(1.0, 1.15), irregularity=0.02, density=1.2,
                             density_sd=0.08, texture=TEXTURE_NUCLEOLAR)]
    if scene.organ == "Lung":
        return [NucleusLayer("epithelial", Cellular(derive_key(k, "pneumocytes"), 16.0, 0.9),
                             _presence({M.ORGAN_EPI: 0.6}), size=2.6, size_sd=0.1, aspect=(1.8, 3.2),
                             irregularity=0.03, density=1.6, density_sd=0.1, texture=TEXTURE_DENSE, orient="flow")]
    if scene.organ == "Kidney":
        return [
            NucleusLayer("epithelial", Cellular(derive_key(k, "tubular"), 9.5, 0.7), _presence({M.ORGAN_EPI: 0.55}),
                         size=3.2, size_sd=0.08, aspect=(1.0, 1.2), irregularity=0.02, density=1.35,
                         density_sd=0.08, texture=TEXTURE_VESICULAR),
            NucleusLayer("epithelial", Cellular(derive_key(k, "glomerular"), 6.5, 0.8), _presence({M.GLOMERULUS: 0.8}),
                         size=2.7, size_sd=0.1, aspect=(1.0, 1.4), irregularity=0.04, density=1.7,
                         density_sd=0.1, texture=TEXTURE_DENSE),
        ]
    return [NucleusLayer("epithelial", Cellular(derive_key(k, "colonocytes"), 6.5, 0.6), _presence({M.ORGAN_EPI: 0.75}),
                         size=2.8, size_sd=0.08, aspect=(2.0, 2.8), irregularity=0.02, density=1.6,
                         density_sd=0.08, texture=TEXTURE_DENSE, orient="radial")]


def _tumour_layer(scene: Scene) -> NucleusLayer:
    grade = scene.tumour.grade if scene.tumour else 2
    g = grade - 1
    return NucleusLayer(
        "tumour",
        Cellular(derive_key(scene.key, "tumour-nuclei"), (11.5, 13.5, 15.5)[g], 0.7),
        _presence({M.TUMOUR_EPI: 0.95}),
        size=(4.0, 5.3, 6.6)[g],
        size_sd=(0.05, 0.14, 0.26)[g],
        aspect=((1.05, 1.3), (1.1, 1.6), (1.0, 1.9))[g],
        irregularity=(0.02, 0.06, 0.13)[g],
        density=(1.0, 1.25, 1.45)[g],
        density_sd=(0.04, 0.12, 0.25)[g],
        texture=(TEXTURE_VESICULAR, TEXTURE_NUCLEOLAR, TEXTURE_NUCLEOLAR)[g],
        mitosis_rate=(0.0, 0.03, 0.09)[g],
    )


def max_nucleus_radius(layers: tuple[NucleusLayer, ...]) -> float:
    return max(layer.max_radius for layer in layers)


def _gradients(scene: Scene, x: NDArray, y: NDArray, names: tuple[str, ...]) -> dict[str, tuple[NDArray, NDArray]]:
    """Central-difference gradients (gx, gy) of the named fields at points (fields absent from the scene are skipped)."""
    eps = 0.5
    n = x.size
    f = eval_fields(scene, np.concatenate([x + eps, x - eps, x, x]), np.concatenate([y, y, y + eps, y - eps]))
    out = {}
    for name in names:
        if name in f:
            v = f[name]
            out[name] = (v[:n] - v[n : 2 * n], v[2 * n : 3 * n] - v[3 * n :])
    return out


def _orientations(scene: Scene, x: NDArray, y: NDArray, mats: NDArray, fib_w: NDArray, mode: NDArray) -> NDArray:
    """Nucleus angles: "flow" ones follow fibres / vessel, nerve and capsule outlines / alveolar septa;
    "radial" ones point across the crypt wall; mode is 0 random (angle left 0), 1 flow, 2 radial."""
    angle = np.where(mode == 1, scene.fibre_angle + 1.2 * fib_w, 0.0)
    if not (mode > 0).any():
        return angle
    grads = _gradients(scene, x, y, tuple(name for _, name in FLOW_MATERIALS) + ("o_f1", "o_sep"))
    for mat, name in FLOW_MATERIALS:
        if name in grads:
            gx, gy = grads[name]
            angle = np.where((mode == 1) & (mats == mat), np.arctan2(gy, gx) + np.pi / 2, angle)
    if "o_sep" in grads:  # along alveolar septa
        gx, gy = grads["o_sep"]
        angle = np.where((mode == 1) & (mats == M.ORGAN_EPI), np.arctan2(gy, gx) + np.pi / 2, angle)
    if "o_f1" in grads:  # across crypt walls
        gx, gy = grads["o_f1"]
        angle = np.where(mode == 2, np.arctan2(gy, gx), angle)
    return angle


def _attributes(
    layer: NucleusLayer, index: int, x: NDArray, y: NDArray, cu: NDArray, cv: NDArray, base_angle: NDArray
) -> NucleusSet:
    """Hash every attribute of the kept candidates of one layer from their lattice cells."""
    key = derive_key(layer.lattice.key, "attributes", index)

    def u(stream: int) -> NDArray[np.float64]:
        return hash_uniform(key, cu, cv, stream)

    n = x.size
    size = layer.size * np.clip(1.0 + layer.size_sd * _normal(u(1), u(2)), 0.5, 1.0 + 2.5 * layer.size_sd)
    aspect = layer.aspect[0] + (layer.aspect[1] - layer.aspect[0]) * u(3)
    a, b = size * np.sqrt(aspect), size / np.sqrt(aspect)
    if layer.orient == "random":
        angle = 2 * np.pi * u(4)
    else:
        angle = base_angle + 0.3 * (u(4) - 0.5)
    amps = layer.irregularity * np.stack([u(10 + i) for i in range(N_HARMONICS)], axis=1) * 2.0
    phases = 2 * np.pi * np.stack([u(20 + i) for i in range(N_HARMONICS)], axis=1)
    density = layer.density * np.clip(1.0 + layer.density_sd * _normal(u(5), u(6)), 0.6, 1.8)
    texture = np.full(n, layer.texture, np.int64)
    cls = np.full(n, NUCLEUS_CLASSES.index(layer.cls), np.int64)
    if layer.mitosis_rate > 0:
        mitosis = u(7) < layer.mitosis_rate
        cls[mitosis] = NUCLEUS_CLASSES.index("mitosis")
        texture[mitosis] = TEXTURE_MITOSIS
        density[mitosis] = 2.2
        amps[mitosis] = np.clip(amps[mitosis] * 2.5, 0.0, 0.3)
        a[mitosis] *= 0.85
        b[mitosis] *= 0.85
    return NucleusSet(x, y, a, b, angle, amps, phases, density, texture, cls, u(8))


def place_nuclei(scene: Scene, rect: Rect, layers: tuple[NucleusLayer, ...] | None = None) -> NucleusSet:
    """All nuclei that can touch `rect` (micrometres), overlaps thinned.

    `scene` must contain every shape within ``3 * max_radius`` of `rect`
    (callers pass ``scene.within(...)`` of a suitably grown rectangle).
    """
    layers = layers_for(scene) if layers is None else layers
    r_max = max_nucleus_radius(layers)
    pair = 2.0 * r_max
    x0, y0, x1, y1 = rect
    outer = (x0 - r_max - pair, y0 - r_max - pair, x1 + r_max + pair, y1 + r_max + pair)
    # 1. every layer's candidates, judged by the material under them (one field evaluation for all)
    cands = [layer.lattice.points_in(*outer) for layer in layers]
    owner = np.concatenate([np.full(c[0].size, i) for i, c in enumerate(cands)])
    if owner.size == 0:
        return NucleusSet.empty()
    x, y, cu, cv = (np.concatenate([c[j] for c in cands]) for j in range(4))
    fields = eval_fields(scene, x, y)
    mats = classify(scene, fields)
    presence = np.asarray([layer.presence for layer in layers])  # (L, N_MATERIALS)
    draw = np.concatenate(
        [hash_uniform(derive_key(layer.lattice.key, "attributes", i), c[2], c[3], 0) for i, (layer, c) in enumerate(zip(layers, cands))]
    )
    keep = draw < presence[owner, mats]
    if not keep.any():
        return NucleusSet.empty()
    x, y, cu, cv, mats, owner = x[keep], y[keep], cu[keep], cv[keep], mats[keep], owner[keep]
    # 2. orientations (one more field evaluation for all oriented nuclei)
    mode = np.asarray([ORIENTATIONS.index(layer.orient) for layer in layers])[owner]
    angle = np.zeros(x.size)
    oriented = mode > 0
    if oriented.any():
        angle[oriented] = _orientations(
            scene, x[oriented], y[oriented], mats[oriented], fields["fib_w"][keep][oriented], mode[oriented]
        )
    # 3. attributes per layer
    parts = []
    for i, layer in enumerate(layers):
        sel = owner == i
        if sel.any():
            parts.append(_attributes(layer, i, x[sel], y[sel], cu[sel], cv[sel], angle[sel]))
    nuc = _thin(NucleusSet.concat(parts))
    touching = (nuc.x > x0 - r_max) & (nuc.x < x1 + r_max) & (nuc.y > y0 - r_max) & (nuc.y < y1 + r_max)
    return nuc.take(np.nonzero(touching)[0])


def _thin(nuc: NucleusSet) -> NucleusSet:
    """Drop every nucleus that a higher-priority neighbour overlaps too much (a local, order-free rule)."""
    radius = np.sqrt(nuc.a * nuc.b) * 1.05
    tree = cKDTree(np.stack([nuc.x, nuc.y], axis=1))
    pairs = tree.query_pairs(r=float(2.0 * radius.max()), output_type="ndarray")
    if len(pairs) == 0:
        return nuc
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.hypot(nuc.x[i] - nuc.x[j], nuc.y[i] - nuc.y[j])
    clash = d < 0.85 * (radius[i] + radius[j])
    i, j = i[clash], j[clash]
    loser = np.where(nuc.priority[i] < nuc.priority[j], i, j)
    keep = np.ones(len(nuc), bool)
    keep[loser] = False
    return nuc.take(np.nonzero(keep)[0])


def red_cells(scene: Scene, rect: Rect) -> NDArray[np.float64]:
    """Red blood cell outlines (M, 12, 2) micrometres: packed in vessel lumens, sparse in capillary-rich tissue."""
    lattice = Cellular(derive_key(scene.key, "red-cells"), 6.0, 0.8)
    r = 3.6
    x0, y0, x1, y1 = rect
    x, y, cu, cv = lattice.points_in(x0 - r, y0 - r, x1 + r, y1 + r)
    if x.size == 0:
        return np.zeros((0, 12, 2))
    mats = classify(scene, eval_fields(scene, x, y))
    p = np.zeros(N_MATERIALS)
    p[M.VESSEL_LUMEN] = 0.75
    if scene.organ == "Lung":
        p[M.ORGAN_EPI] = 0.12
    if scene.organ == "Liver":
        p[M.ORGAN_LUMEN] = 0.25
    if scene.organ == "Kidney":
        p[M.GLOMERULUS] = 0.2
    keep = hash_uniform(lattice.key, cu, cv, 1) < p[mats]
    x, y, cu, cv = x[keep], y[keep], cu[keep], cv[keep]
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)[None, :]
    rad = r * (0.85 + 0.3 * hash_uniform(lattice.key, cu, cv, 2))[:, None]
    squash = (0.75 + 0.25 * hash_uniform(lattice.key, cu, cv, 3))[:, None]
    ang = (2 * np.pi * hash_uniform(lattice.key, cu, cv, 4))[:, None]
    lx, ly = rad * np.cos(t), rad * squash * np.sin(t)
    c, s = np.cos(ang), np.sin(ang)
    return np.stack([x[:, None] + lx * c - ly * s, y[:, None] + lx * s + ly * c], axis=-1)


__all__ = [
    "NucleusLayer",
    "NucleusSet",
    "layers_for",
    "place_nuclei",
    "red_cells",
    "max_nucleus_radius",
]
