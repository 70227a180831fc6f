"""From world position to material: the scene's smooth fields and the rules that threshold them.

Rendering is split in two so that it is both fast and window-independent:

1. :func:`eval_fields` computes smooth scalar fields of position (signed
   distances to shapes, cellular-noise distances for glands, alveoli,
   hepatocytes, adipocytes..., fractal noise for fat lobules and stroma bands).
   The renderer evaluates them on a coarse lattice and interpolates; nucleus
   placement evaluates them exactly at candidate centres.
2. :func:`classify` turns the fields into a :class:`Material` per point with
   plain thresholds (the organ and tumour architectures live here).

Field names (all micrometre-scaled unless noted):
``tissue`` sdf of the tissue pieces; ``o_f1`` organ cellular distance (F1) and
``o_sep`` its F2 - F1 (small near cell borders); ``o_s`` organ noise; ``g_f1``
distance to a glomerulus centre; ``fat_n``/``str_n`` lobule / band noise
(unitless); ``a_sep`` adipocyte F2 - F1; ``tumour`` sdf of tumour regions;
``t_f1``/``t_sep``/``t_n``/``t_p`` tumour architecture;
``v_lumen``/``v_outer``/``embolus`` vessels; ``nerve``/``nerve_v``/``nerve_tum``
nerves; ``ln``/``ln_met``/``ln_fol`` lymph nodes; ``fib_w`` fibre warp (unitless).
"""
from __future__ import annotations

from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from .noise import Cellular, Fbm, derive_key
from .scene import Scene
from .taxonomy import Material as M

FloatArray = NDArray[np.float64]
Fields = dict[str, np.ndarray]

FAR = 1.0e6  # "no such shape here" distance


def organ_cells(scene: Scene) -> Cellular:
    """The organ's main cellular pattern (hepatocytes, alveoli, tubules or crypts)."""
    key = derive_key(scene.key, "organ", scene.organ)
    if scene.organ == "Liver":
        return Cellular(key, 19.0, jitter=0.55)
    if scene.organ == "Lung":
        return Cellular(key, 70.0, jitter=0.9)
    if scene.organ == "Kidney":
        return Cellular(key, 46.0, jitter=0.7)
    return Cellular(key, 42.0, jitter=0.45, stretch=2.4, angle=scene.crypt_angle)  # Colon


def glomeruli(scene: Scene) -> Cellular:
    return Cellular(derive_key(scene.key, "glomeruli"), 230.0, jitter=0.6, presence=0.55)


def adipocytes(scene: Scene) -> Cellular:
    return Cellular(derive_key(scene.key, "adipocytes"), 50.0, jitter=0.85)


def tumour_cells(scene: Scene) -> Cellular:
    arch = scene.tumour.architecture if scene.tumour else "solid"
    spacing = {"glandular": 56.0, "solid": 105.0, "papillary": 60.0}[arch]
    return Cellular(derive_key(scene.key, "tumour-architecture", arch), spacing, jitter=0.75)


def follicles(scene: Scene) -> Cellular:
    return Cellular(derive_key(scene.key, "follicles"), 95.0, jitter=0.7, presence=0.5)


def _union(sdfs: list[FloatArray], shape: tuple[int, ...]) -> FloatArray:
    if not sdfs:
        return np.full(shape, FAR)
    out = sdfs[0]
    for d in sdfs[1:]:
        out = np.minimum(out, d)
    return out


def _needs_fat(scene: Scene) -> bool:
    return scene.filler == "fat" or (scene.filler in ("organ", "stroma") and scene.fat_level > 0)


def eval_fields(scene: Scene, x: FloatArray, y: FloatArray) -> Fields:
    """All fields the scene needs, at points x, y (same shape); shapes absent from `scene` give FAR."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    shape = np.broadcast_shapes(x.shape, y.shape)
    k = scene.key
    f: Fields = {}

    if scene.tissue:
        d = _union([b.sdf(x, y) for b in scene.tissue], shape)
        if scene.tissue_edge > 0:
            d = d + scene.tissue_edge * Fbm(derive_key(k, "edge"), 70.0, 3).at(x, y)
        f["tissue"] = d
        if scene.filler == "organ":
            f1, f2, _, _ = organ_cells(scene).at(x, y)
            f["o_f1"], f["o_sep"] = f1, f2 - f1
            f["o_s"] = Fbm(derive_key(k, "organ-noise"), 42.0, 2).at(x, y)
            if scene.organ == "Kidney":
                f["g_f1"] = glomeruli(scene).at(x, y)[0]
            f["str_n"] = Fbm(derive_key(k, "stroma-bands"), 160.0, 3).at(x, y)
        if _needs_fat(scene):
            f["fat_n"] = Fbm(derive_key(k, "fat-lobules"), 170.0, 3).at(x, y)
            a1, a2, _, _ = adipocytes(scene).at(x, y)
            f["a_sep"] = a2 - a1
    else:
        f["tissue"] = np.full(shape, FAR)

    if scene.tumours:
        f["tumour"] = _union([b.sdf(x, y) for b in scene.tumours], shape)
        arch = scene.tumour.architecture if scene.tumour else "solid"
        if arch == "papillary":
            f["t_p"] = Fbm(derive_key(k, "papillae"), 80.0, 3, gain=0.45).at(x, y)
        else:
            t1, t2, _, _ = tumour_cells(scene).at(x, y)
            f["t_f1"], f["t_sep"] = t1, t2 - t1
        f["t_n"] = Fbm(derive_key(k, "tumour-noise"), 55.0, 2).at(x, y)

    if scene.vessels:
        f["v_lumen"] = _union([v.lumen.sdf(x, y) for v in scene.vessels], shape)
        f["v_outer"] = _union([v.outer_sdf(x, y) for v in scene.vessels], shape)
        f["embolus"] = _union([v.embolus.sdf(x, y) for v in scene.vessels if v.embolus is not None], shape)

    if scene.nerves:
        sdfs = [n.band.sdf(x, y) for n in scene.nerves]
        best = np.argmin(np.stack(sdfs), axis=0) if len(sdfs) > 1 else np.zeros(shape, np.int64)
        offsets = np.zeros(shape)
        for i, n in enumerate(scene.nerves):
            offsets = np.where(best == i, n.band.offset(x, y), offsets)
        f["nerve"] = _union(sdfs, shape)
        f["nerve_v"] = offsets
        f["nerve_tum"] = _union([c.sdf(x, y) for n in scene.nerves for c in n.clusters], shape)

    if scene.lymph_nodes:
        f["ln"] = _union([n.body.sdf(x, y) for n in scene.lymph_nodes], shape)
        f["ln_met"] = _union([m.sdf(x, y) for n in scene.lymph_nodes for m in n.metastases], shape)
        f["ln_fol"] = follicles(scene).at(x, y)[0]
        f["ln_cap"] = _union([n.body.sdf(x, y) + n.capsule for n in scene.lymph_nodes], shape)

    f["fib_w"] = Fbm(derive_key(k, "fibre-warp"), 55.0, 2).at(x, y)
    return f


def _paint(mat: NDArray[np.uint8], material: M, where: NDArray[np.bool_]) -> None:
    np.copyto(mat, np.uint8(material), where=where)


def _paint_fat(mat: NDArray[np.uint8], f: Fields, where: NDArray[np.bool_]) -> None:
    """Adipocytes: empty cells with thin membranes."""
    _paint(mat, M.FAT, where)
    _paint(mat, M.FAT_SEPTUM, where & (f["a_sep"] < 2.4))


def _paint_organ(scene: Scene, mat: NDArray[np.uint8], f: Fields, where: NDArray[np.bool_]) -> None:
    f1, sep, s = f["o_f1"], f["o_sep"], f["o_s"]
    organ = scene.organ
    if organ == "Liver":  # hepatocyte plates with sinusoids between them
        _paint(mat, M.ORGAN_EPI, where)
        _paint(mat, M.ORGAN_LUMEN, where & (np.abs(s) < 0.03))
    elif organ == "Lung":  # alveolar spaces and thin septa
        _paint(mat, M.ORGAN_LUMEN, where)
        _paint(mat, M.ORGAN_EPI, where & (sep < 3.0 + 5.0 * np.clip(s + 0.3, 0.0, 1.0)))
    elif organ == "Kidney":  # tubules in interstitium, glomeruli in Bowman's capsules
        _paint(mat, M.ORGAN_STROMA, where)
        _paint(mat, M.ORGAN_EPI, where & (f1 < 17.0) & (sep > 2.5))
        _paint(mat, M.ORGAN_LUMEN, where & (f1 < 5.5))
        g = f["g_f1"]
        _paint(mat, M.ORGAN_STROMA, where & (g < 52.0))
        _paint(mat, M.ORGAN_LUMEN, where & (g < 49.0))
        _paint(mat, M.GLOMERULUS, where & (g < 41.0))
    else:  # Colon: crypts (lumen, epithelium) in lamina propria
        _paint(mat, M.ORGAN_STROMA, where)
        _paint(mat, M.ORGAN_EPI, where & (f1 < 17.0) & (sep > 3.0))
        _paint(mat, M.ORGAN_LUMEN, where & (f1 < 6.0))


def _paint_tumour(scene: Scene, mat: NDArray[np.uint8], f: Fields, where: NDArray[np.bool_]) -> None:
    spec = scene.tumour
    if spec is None:
        raise ValueError("a scene with tumour regions needs a TumourSpec")
    n = f["t_n"]
    if spec.architecture == "glandular":  # glands: lumen ringed by tumour cells, stroma between
        f1 = f["t_f1"]
        _paint(mat, M.TUMOUR_STROMA, where)
        _paint(mat, M.TUMOUR_EPI, where & (f1 < 26.0 + 4.0 * n) & (f["t_sep"] > 4.0))
        _paint(mat, M.TUMOUR_LUMEN, where & (f1 < (12.0 + 4.0 * n) * (1.0, 0.85, 0.65)[spec.grade - 1]))
    elif spec.architecture == "solid":  # nests split by thin septa
        _paint(mat, M.TUMOUR_EPI, where)
        _paint(mat, M.TUMOUR_STROMA, where & (f["t_sep"] < 4.5 + 2.0 * n))
        if spec.grade == 3:  # comedo-type necrosis in the centre of some nests
            _paint(mat, M.NECROSIS, where & (f["t_f1"] < 18.0) & (n > 0.1))
    else:  # papillary: stromal cores lined by tumour cells, floating in spaces
        a = np.abs(f["t_p"])
        _paint(mat, M.TUMOUR_LUMEN, where)
        _paint(mat, M.TUMOUR_EPI, where & (a < 0.17))
        _paint(mat, M.TUMOUR_STROMA, where & (a < 0.04))


_FILLER_MATERIAL = MappingProxyType({"stroma": M.STROMA, "necrosis": M.NECROSIS, "lymphoid": M.LYMPHOID})


def classify(scene: Scene, f: Fields) -> NDArray[np.uint8]:
    """Material per point from the fields of :func:`eval_fields` (or their interpolation).

    Painter's order: tissue filler, fat lobules and stroma bands, tumours,
    lymph nodes, vessels, nerves (later layers cover earlier ones).
    """
    shape = f["tissue"].shape
    mat = np.zeros(shape, np.uint8)  # Material.BACKGROUND
    if scene.tissue:
        inside = f["tissue"] < 0
        if scene.filler == "organ":
            _paint_organ(scene, mat, f, inside)
            _paint(mat, M.STROMA, inside & (np.abs(f["str_n"]) < 0.1 * scene.stroma_level))
        elif scene.filler == "fat":
            _paint_fat(mat, f, inside)
        else:
            _paint(mat, _FILLER_MATERIAL[scene.filler], inside)
        if _needs_fat(scene) and scene.filler != "fat":
            _paint_fat(mat, f, inside & (f["fat_n"] > 0.42 - 0.85 * scene.fat_level))

    if scene.tumours:
        _paint_tumour(scene, mat, f, f["tumour"] < 0)

    if scene.lymph_nodes:
        node = f["ln"] < 0
        cap = f["ln_cap"]
        _paint(mat, M.LYMPHOID, node)
        _paint(mat, M.FOLLICLE, node & (f["ln_fol"] < 30.0) & (cap < -22.0))
        _paint(mat, M.CAPSULE, node & (cap >= 0))
        _paint(mat, M.TUMOUR_EPI, node & (f["ln_met"] < 0) & (cap < 0))

    if scene.vessels:
        vessel = f["v_outer"] < 0
        lumen = f["v_lumen"]
        _paint(mat, M.VESSEL_WALL, vessel)
        _paint(mat, M.ENDOTHELIUM, vessel & (lumen < 1.0))
        _paint(mat, M.VESSEL_LUMEN, vessel & (lumen < -1.5))
        _paint(mat, M.TUMOUR_EPI, vessel & (f["embolus"] < 0))

    if scene.nerves:
        d = f["nerve"]
        nerve = d < 0
        _paint(mat, M.NERVE, nerve)
        _paint(mat, M.PERINEURIUM, nerve & (d > -2.5))
        _paint(mat, M.TUMOUR_EPI, nerve & (f["nerve_tum"] < 0))
    return mat


def materials_at(scene: Scene, x: FloatArray, y: FloatArray) -> NDArray[np.uint8]:
    """Exact material at points (no interpolation)."""
    return classify(scene, eval_fields(scene, x, y))
