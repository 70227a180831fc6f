"""Colours: materials and nuclei become stain densities, densities become RGB (Beer-Lambert).

Each pixel gets a haematoxylin density H (nuclei, purple-blue), an eosin
density E (cytoplasm, collagen, pink) and a red-cell density R.  Their optical
densities add per channel and the transmitted light is

    RGB = illuminant * exp(-(H * h + E * e + R * r))

with h, e, r the per-unit optical densities of the stains, calibrated so that
typical densities give typical H&E colours (nuclei ~ (70, 50, 130), stroma ~
(235, 150, 190), red cells ~ (200, 60, 70), glass ~ (244, 242, 246)).

Organs differ in how their parenchyma and tumour cells take the stains (e.g.
kidney tubules are strongly eosinophilic, clear-cell tumour cytoplasm is almost
empty), which is part of what makes the organ learnable.
"""
from __future__ import annotations

from types import MappingProxyType

import cv2
import numpy as np
from numpy.typing import NDArray

from .grid import PixelWindow
from .noise import ValueNoise, derive_key, noise_tile
from .nuclei import TEXTURE_DENSE, TEXTURE_MITOSIS, TEXTURE_NUCLEOLAR, NucleusSet
from .scene import Scene
from .taxonomy import Material as M

ILLUMINANT = np.array([244.0, 242.0, 246.0], np.float32)
STAIN_H = np.array([0.86, 1.09, 0.44], np.float32)  # optical density per unit haematoxylin
STAIN_E = np.array([0.07, 0.80, 0.43], np.float32)  # per unit eosin
STAIN_R = np.array([0.20, 1.39, 1.26], np.float32)  # per unit red-cell haemoglobin + eosin
BACKGROUND_RGB = tuple(int(v) for v in np.round(ILLUMINANT))  # colour of glass (no stain)

# (haematoxylin, eosin) base density per material; organ-specific rows are overridden below.
_BASE = (
    (M.BACKGROUND, 0.0, 0.0),
    (M.STROMA, 0.03, 0.62),
    (M.FAT, 0.0, 0.015),
    (M.FAT_SEPTUM, 0.03, 0.55),
    (M.ORGAN_EPI, 0.08, 0.55),
    (M.ORGAN_LUMEN, 0.0, 0.03),
    (M.ORGAN_STROMA, 0.06, 0.42),
    (M.GLOMERULUS, 0.12, 0.55),
    (M.TUMOUR_EPI, 0.22, 0.4),
    (M.TUMOUR_LUMEN, 0.01, 0.05),
    (M.TUMOUR_STROMA, 0.02, 0.52),
    (M.NECROSIS, 0.07, 0.55),
    (M.LYMPHOID, 0.14, 0.22),
    (M.FOLLICLE, 0.08, 0.28),
    (M.CAPSULE, 0.03, 0.8),
    (M.VESSEL_WALL, 0.04, 0.78),
    (M.ENDOTHELIUM, 0.03, 0.5),
    (M.VESSEL_LUMEN, 0.0, 0.14),
    (M.NERVE, 0.03, 0.4),
    (M.PERINEURIUM, 0.03, 0.72),
)
# organ -> ((material, H, E), ...)
_ORGAN = MappingProxyType({
    "Liver": ((M.ORGAN_EPI, 0.09, 0.66), (M.ORGAN_LUMEN, 0.0, 0.08), (M.TUMOUR_EPI, 0.2, 0.55)),
    "Lung": ((M.ORGAN_EPI, 0.07, 0.5), (M.ORGAN_LUMEN, 0.0, 0.01), (M.TUMOUR_EPI, 0.22, 0.38)),
    "Kidney": ((M.ORGAN_EPI, 0.05, 0.9), (M.ORGAN_STROMA, 0.04, 0.35), (M.TUMOUR_EPI, 0.04, 0.1)),
    "Colon": ((M.ORGAN_EPI, 0.13, 0.3), (M.ORGAN_LUMEN, 0.04, 0.05), (M.TUMOUR_EPI, 0.25, 0.36)),
})
_GRAIN_TILE = 64  # period (pixels) of the sensor-grain pattern
_FIBROUS = (M.STROMA, M.TUMOUR_STROMA, M.CAPSULE, M.VESSEL_WALL, M.ORGAN_STROMA, M.PERINEURIUM, M.FAT_SEPTUM)
_CYTOPLASM = (M.ORGAN_EPI, M.TUMOUR_EPI, M.GLOMERULUS)


def material_densities(scene: Scene) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(H, E) base density per material, (256,) each (a cv2.LUT table), for this scene's organ and staining."""
    h = np.zeros(256, np.float32)
    e = np.zeros(256, np.float32)
    for mat, hv, ev in _BASE:
        h[mat], e[mat] = hv, ev
    for mat, hv, ev in _ORGAN.get(scene.organ or "", ()):
        h[mat], e[mat] = hv, ev
    return h * np.float32(scene.stain[0]), e * np.float32(scene.stain[1])


def _mask(mat: NDArray[np.uint8], materials: tuple[M, ...]) -> NDArray[np.float32]:
    """1.0 where the material is one of `materials`, else 0.0 (H, W) float32."""
    lut = np.zeros(256, np.float32)
    lut[list(materials)] = 1.0
    return cv2.LUT(mat, lut)


def _blend(base: NDArray[np.float32], mask: NDArray[np.float32], factor: NDArray[np.float32] | float) -> NDArray[np.float32]:
    """base * factor where mask is 1, base where it is 0 (mask may be fractional)."""
    return base * (1.0 + mask * (factor - 1.0))


def textures(scene: Scene, window: PixelWindow) -> dict[str, NDArray[np.float32]]:
    """Texture noises (H, W) in about [-1, 1]: "mid" (3.5 um features) and "fine" (1.1 um, also chromatin)."""
    k = scene.key
    return {
        "mid": window.texture(ValueNoise(derive_key(k, "mid-texture"), 3.5).on_grid, 1.2),
        "fine": window.texture(ValueNoise(derive_key(k, "fine-texture"), 1.1).on_grid, 0.4),
    }


def stain_maps(
    scene: Scene,
    mat: NDArray[np.uint8],
    fields: dict[str, NDArray[np.float32]],
    tex: dict[str, NDArray[np.float32]],
    window: PixelWindow,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Haematoxylin and eosin densities (H, W) of the materials, textures included."""
    hlut, elut = material_densities(scene)
    h = cv2.LUT(mat, hlut)
    e = cv2.LUT(mat, elut)
    mid, fine = tex["mid"], tex["fine"]

    fibrous = _mask(mat, _FIBROUS)
    if fibrous.any():  # wavy collagen fibres with thin clefts
        c, s = np.cos(scene.fibre_angle), np.sin(scene.fibre_angle)
        proj = (window.xs[None, :] * c + window.ys[:, None] * s).astype(np.float32)
        phase = proj * np.float32(2 * np.pi / 7.0) + 9.0 * fields["fib_w"] + 1.5 * mid
        waves = 0.5 + 0.5 * np.sin(phase)
        factor = (0.7 + 0.5 * waves) * (1.0 - 0.45 * np.clip((waves + 0.3 * fine - 1.0) * 6.0, 0.0, 1.0))
        e = _blend(e, fibrous, factor)
    if "nerve_v" in fields:
        nerve = _mask(mat, (M.NERVE,))
        if nerve.any():
            wavy = 0.5 + 0.5 * np.sin(fields["nerve_v"] * np.float32(2 * np.pi / 2.6) + 2.0 * mid)
            e = _blend(e, nerve, 0.7 + 0.5 * wavy)
    cyto = _mask(mat, _CYTOPLASM)
    e = _blend(e, cyto, 1.0 + 0.16 * mid + 0.1 * fine)
    if scene.organ == "Liver" and "o_sep" in fields:  # paler hepatocyte borders
        border = _mask(mat, (M.ORGAN_EPI,)) * (fields["o_sep"] < 1.0)
        e = _blend(e, border, 0.75)
    if scene.organ == "Colon" and "o_f1" in fields:  # goblet cells: pale mucin vacuoles in crypt epithelium
        goblet = _mask(mat, (M.ORGAN_EPI,)) * (fine + 0.6 * mid > 0.55)
        e = _blend(e, goblet, 0.35)
        h = h + 0.05 * goblet
    necrosis = _mask(mat, (M.NECROSIS,))
    if necrosis.any():  # smudgy eosin and nuclear dust
        e = _blend(e, necrosis, 0.8 + 0.3 * mid)
        h = h + necrosis * np.clip(fine - 0.62, 0.0, 0.4) * (4.0 + 2.0 * mid)
    lumen = _mask(mat, (M.TUMOUR_LUMEN, M.VESSEL_LUMEN))
    e = _blend(e, lumen, 0.6 + 0.8 * np.clip(mid + 0.2, 0.0, 1.0))
    return h, e


def nucleus_density(
    nuclei: NucleusSet,
    instances: NDArray[np.int32],
    xs: NDArray[np.float64],
    ys: NDArray[np.float64],
    grain: NDArray[np.float32],
) -> NDArray[np.float32]:
    """Haematoxylin density (H, W) of the drawn nuclei, with chromatin texture, nucleoli and mitoses."""
    out = np.zeros(instances.shape, np.float32)
    rows, cols = np.nonzero(instances)
    if rows.size == 0:
        return out
    idx = instances[rows, cols] - 1
    dx = xs[cols] - nuclei.x[idx]
    dy = ys[rows] - nuclei.y[idx]
    c, s = np.cos(nuclei.angle[idx]), np.sin(nuclei.angle[idx])
    a, b = nuclei.a[idx], nuclei.b[idx]
    rho2 = np.clip(((dx * c + dy * s) / a) ** 2 + ((-dx * s + dy * c) / b) ** 2, 0.0, 1.0)
    g = grain[rows, cols]
    tex = nuclei.texture[idx]
    dens = nuclei.density[idx]
    dense = dens * (0.92 + 0.18 * g) * (1.0 - 0.12 * rho2)
    vesicular = dens * (0.5 + 0.55 * rho2**2 + 0.3 * np.clip(g, 0, 1))  # dark rim, clear centre, chromatin specks
    value = np.where(tex == TEXTURE_DENSE, dense, vesicular)
    shift = 0.2 * a  # nucleolus slightly off-centre
    nucleolus = (tex == TEXTURE_NUCLEOLAR) & ((dx + shift * c) ** 2 + (dy + shift * s) ** 2 < (0.24 * b) ** 2)
    value = value + 1.1 * nucleolus
    value = np.where(tex == TEXTURE_MITOSIS, dens * (0.75 + 0.45 * np.abs(g)), value)
    out[rows, cols] = value
    return out


def compose(
    scene: Scene,
    h: NDArray[np.float32],
    e: NDArray[np.float32],
    red: NDArray[np.float32],
    origin: tuple[int, int],
    blur_sigma: float = 0.6,
) -> NDArray[np.uint8]:
    """RGB (H, W, 3) uint8 from stain densities; `origin` (x, y) pixel index keys the sensor grain."""
    hh, ww = h.shape
    tile = noise_tile(derive_key(scene.key, "grain"), _GRAIN_TILE)
    tile = np.roll(tile, (-(origin[1] % _GRAIN_TILE), -(origin[0] % _GRAIN_TILE)), axis=(0, 1))
    reps = (-(-hh // _GRAIN_TILE), -(-ww // _GRAIN_TILE))
    grain = np.tile(1.0 + 0.06 * tile, reps)[:hh, :ww]  # (H, W), keyed by absolute pixel index
    planes = [cv2.multiply(h, grain), cv2.multiply(e, grain), np.ascontiguousarray(red, np.float32)]
    if blur_sigma > 0:
        planes = [cv2.GaussianBlur(p, (0, 0), blur_sigma, borderType=cv2.BORDER_REPLICATE) for p in planes]
    channels = []
    for c in range(3):
        neg_od = cv2.addWeighted(planes[0], -float(STAIN_H[c]), planes[1], -float(STAIN_E[c]), 0.0)
        neg_od = cv2.scaleAdd(planes[2], -float(STAIN_R[c]), neg_od)
        channels.append(cv2.convertScaleAbs(cv2.exp(neg_od), alpha=float(ILLUMINANT[c])))  # rounds, saturates
    return cv2.merge(channels)


__all__ = [
    "BACKGROUND_RGB",
    "ILLUMINANT",
    "STAIN_E",
    "STAIN_H",
    "STAIN_R",
    "compose",
    "material_densities",
    "nucleus_density",
    "stain_maps",
    "textures",
]
