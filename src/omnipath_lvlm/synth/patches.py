"""Seeded histology patches with exact ground truth for every patch-level task.

``generate_patch(seed, size, kind)`` builds a small :class:`~.scene.Scene`
(always 384 x 384 micrometres, so `size` only changes the resolution: 1 um
per pixel at the default 384) for one of the :data:`~.taxonomy.PATCH_KINDS`,
renders it, and reads the truth off the very arrays the pixels came from:

* ``objects``: every visible nucleus (class, instance mask, box) and every
  structure (tumour region, vessel, nerve, lymph node) with its outline;
* ``region_masks``: tumour, vessel, nerve, lymph_node, metastasis, invasion
  (plus ``vessel_lumen``, used for "cancerous nuclei in vessel");
* ``labels``: answers of the classification tasks that apply to this patch
  (organ, disease, subtype, grade, tissue_type, til, mvi, neural_invasion,
  lymph_node_metastasis) - a task is left out when the patch cannot answer it;
* :meth:`SynthPatch.target` gives boxes / classes / masks for the geometric
  tasks (detection and segmentation).

Boxes are (x1, y1, x2, y2) pixels with x2, y2 exclusive.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from shapely.geometry import Polygon

from .noise import derive_key
from .render import Rendered, render_truth
from .scene import LymphNode, Nerve, Scene, TumourSpec, Vessel, place_embolus, place_nerve_clusters
from .shapes import Band, Blob
from .taxonomy import (
    ARCHITECTURES,
    DISEASES,
    GRADE_NAMES,
    LYMPH_NODE_ORGAN,
    NORMAL_DISEASE,
    ORGANS,
    PATCH_KINDS,
    REGIONS,
    SUBTYPES,
)
from .taxonomy import Material as M

PATCH_UM = 384.0  # field of view of every patch, micrometres
# how often each kind is drawn when generate_patch is not told one
KIND_WEIGHTS: tuple[float, ...] = (0.22, 0.12, 0.13, 0.13, 0.13, 0.07, 0.07, 0.06, 0.07)
MIN_NUCLEUS_PIXELS = 4  # visible nucleus fragments smaller than this are not objects

_ORGAN_MATERIALS = (M.ORGAN_EPI, M.ORGAN_LUMEN, M.ORGAN_STROMA, M.GLOMERULUS)
_TISSUE_CLASSES: tuple[tuple[str, tuple[M, ...]], ...] = (
    ("normal", _ORGAN_MATERIALS),
    ("stroma", (M.STROMA, M.VESSEL_WALL, M.ENDOTHELIUM, M.VESSEL_LUMEN, M.NERVE, M.PERINEURIUM, M.CAPSULE)),
    ("lymphocytes", (M.LYMPHOID, M.FOLLICLE)),
    ("adipose", (M.FAT, M.FAT_SEPTUM)),
    ("necrosis", (M.NECROSIS,)),
)
Box = tuple[int, int, int, int]


@dataclass
class SynthObject:
    """One nucleus or structure: class, box (x1, y1, x2, y2; exclusive ends), mask inside the box."""

    cls: str
    kind: str  # "nucleus" or "structure"
    box: Box
    mask: NDArray[np.bool_]  # (y2 - y1, x2 - x1)
    polygon: NDArray[np.float64] | None = None  # (K, 2) x, y pixels; the analytic outline (may leave the patch)

    def full_mask(self, shape: tuple[int, int]) -> NDArray[np.bool_]:
        out = np.zeros(shape, bool)
        x1, y1, x2, y2 = self.box
        out[y1:y2, x1:x2] = self.mask
        return out

    @property
    def centre(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean() + self.box[0] + 0.5), float(ys.mean() + self.box[1] + 0.5)


@dataclass
class PatchTarget:
    """Ground truth of a geometric task: boxes (and their classes) or a mask."""

    boxes: list[Box] = field(default_factory=list)
    classes: list[str] | None = None
    mask: NDArray[np.bool_] | None = None


@dataclass
class SynthPatch:
    seed: int
    kind: str
    image: NDArray[np.uint8]  # (H, W, 3)
    objects: list[SynthObject]
    region_masks: dict[str, NDArray[np.bool_]]  # name -> (H, W)
    labels: dict[str, str]  # classification task -> answer
    material: NDArray[np.uint8]  # (H, W) Material values
    scene: Scene
    geometry_tasks: tuple[str, ...]  # geometric tasks that apply to this patch

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def nuclei(self) -> list[SynthObject]:
        return [o for o in self.objects if o.kind == "nucleus"]

    def structures(self, cls: str) -> list[SynthObject]:
        return [o for o in self.objects if o.kind == "structure" and o.cls == cls]

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task (registry name) this patch has ground truth for."""
        return tuple(self.labels) + self.geometry_tasks

    def target(self, task: str) -> PatchTarget:
        """Boxes / classes / mask answering a geometric task."""
        if task not in self.geometry_tasks:
            raise KeyError(f"task {task!r} does not apply to this {self.kind} patch (it has {self.geometry_tasks})")
        if task == "nucleus_detection":
            return PatchTarget([o.box for o in self.nuclei])
        if task == "nucleus_classification":
            nuclei = self.nuclei
            return PatchTarget([o.box for o in nuclei], [o.cls for o in nuclei])
        if task == "vessel_detection":
            return PatchTarget([o.box for o in self.structures("vessel")])
        if task == "nerve_detection":
            return PatchTarget([o.box for o in self.structures("nerve")])
        if task == "lymph_node_detection":
            return PatchTarget([o.box for o in self.structures("lymph_node")])
        if task == "cancer_detection":
            return PatchTarget([o.box for o in self.structures("tumour_region")])
        if task == "cancer_nuclei_in_vessel":
            lumen = self.region_masks["vessel_lumen"]
            boxes = [o.box for o in self.nuclei if o.cls in ("tumour", "mitosis") and _mostly_inside(o, lumen)]
            return PatchTarget(boxes)
        masks = {
            "nerve_segmentation": "nerve",
            "cancer_in_nerve_segmentation": "invasion",
            "cancer_in_lymph_node_segmentation": "metastasis",
            "cancer_segmentation": "tumour",
        }
        return PatchTarget(mask=self.region_masks[masks[task]].copy())


def _mostly_inside(obj: SynthObject, mask: NDArray[np.bool_]) -> bool:
    x1, y1, x2, y2 = obj.box
    return bool(mask[y1:y2, x1:x2][obj.mask].mean() > 0.5)


# ---------------------------------------------------------------- scene builders


def _base(rng: np.random.Generator, seed: int, organ: str | None, filler: str, **kw) -> dict:
    c = PATCH_UM / 2
    return dict(
        key=derive_key(seed, "patch"),
        organ=organ,
        filler=filler,
        tissue=(Blob.random(rng, c + rng.uniform(-30, 30), c + rng.uniform(-30, 30), rng.uniform(420, 560), 0.1),),
        tissue_edge=6.0,
        fibre_angle=float(rng.uniform(0, np.pi)),
        crypt_angle=float(rng.uniform(0, np.pi)),
        stain=(float(rng.uniform(0.88, 1.12)), float(rng.uniform(0.88, 1.12))),
        **kw,
    )


def _spec(rng: np.random.Generator) -> TumourSpec:
    return TumourSpec(str(rng.choice(ARCHITECTURES)), int(rng.integers(1, 4)), bool(rng.random() < 0.5))


def _far_from(poly: Polygon, others: list[Polygon], clearance: float) -> bool:
    return all(poly.distance(o) > clearance for o in others)


def _tumour_blob_away(rng: np.random.Generator, avoid: list[Polygon], radius: tuple[float, float]) -> Blob | None:
    """A tumour blob in the patch that keeps 15 um from the given structures (None if none fits)."""
    for _ in range(40):
        blob = Blob.random(rng, rng.uniform(0, PATCH_UM), rng.uniform(0, PATCH_UM), rng.uniform(*radius), 0.25)
        if _far_from(Polygon(blob.polygon(96)), avoid, 15.0):
            return blob
    return None


def _scene_normal(rng: np.random.Generator, seed: int, organ: str) -> Scene:
    kw = _base(rng, seed, organ, "organ", stroma_level=float(rng.uniform(0, 0.6)), fat_level=float(rng.uniform(0, 0.25)))
    if rng.random() < 0.25:  # show a tissue edge
        c = PATCH_UM / 2
        ang = rng.uniform(0, 2 * np.pi)
        r = rng.uniform(260, 340)
        kw["tissue"] = (Blob.random(rng, c + r * 0.8 * np.cos(ang), c + r * 0.8 * np.sin(ang), r, 0.15),)
    return Scene(**kw)


def _scene_tumour(rng: np.random.Generator, seed: int, organ: str) -> Scene:
    c = PATCH_UM / 2
    blobs = [Blob.random(rng, c + rng.uniform(-70, 70), c + rng.uniform(-70, 70), rng.uniform(120, 230), 0.25, aspect=rng.uniform(1, 1.5))]
    if rng.random() < 0.3:
        blobs.append(Blob.random(rng, rng.uniform(0, PATCH_UM), rng.uniform(0, PATCH_UM), rng.uniform(50, 100), 0.3))
    kw = _base(rng, seed, organ, "organ", stroma_level=float(rng.uniform(0, 0.4)), fat_level=float(rng.uniform(0, 0.15)))
    return Scene(tumours=tuple(blobs), tumour=_spec(rng), **kw)


def _scene_vessel(rng: np.random.Generator, seed: int, organ: str) -> Scene:
    filler = "organ" if rng.random() < 0.7 else "stroma"
    positive = rng.random() < 0.5
    vessels: list[Vessel] = []
    polys: list[Polygon] = []
    for i in range(int(rng.integers(1, 4))):
        for _ in range(40):
            r = (rng.uniform(32, 62) if positive else rng.uniform(20, 62)) if i == 0 else rng.uniform(16, 45)
            wall = 0.18 * r + rng.uniform(3, 7)
            lumen = Blob.random(rng, rng.uniform(r, PATCH_UM - r), rng.uniform(r, PATCH_UM - r), r, 0.12, aspect=rng.uniform(1, 1.7))
            outer = Polygon(lumen.polygon(96, offset=wall))
            if _far_from(outer, polys, 12.0):
                embolus = None
                if positive and i == 0:
                    embolus = place_embolus(rng, lumen, (0.5, 0.7), 14.0)
                vessels.append(Vessel(lumen, wall, embolus))
                polys.append(outer)
                break
    tumours: tuple[Blob, ...] = ()
    if not positive and rng.random() < 0.25:  # hard negative: tumour nearby, outside every vessel
        blob = _tumour_blob_away(rng, polys, (45, 90))
        tumours = (blob,) if blob is not None else ()
    kw = _base(rng, seed, organ if filler == "organ" else None, filler, stroma_level=float(rng.uniform(0, 0.3)))
    return Scene(vessels=tuple(vessels), tumours=tumours, tumour=_spec(rng), **kw)


def _scene_nerve(rng: np.random.Generator, seed: int, organ: str) -> Scene:
    filler = "stroma" if rng.random() < 0.6 else "fat"
    positive = rng.random() < 0.5
    nerves: list[Nerve] = []
    polys: list[Polygon] = []
    for i in range(1 if rng.random() < 0.75 else 2):
        for _ in range(40):
            length = rng.uniform(300, 520)
            width = rng.uniform(40, 85) if i == 0 else rng.uniform(30, 55)
            ang = rng.uniform(0, np.pi)
            cx, cy = rng.uniform(110, PATCH_UM - 110), rng.uniform(110, PATCH_UM - 110)
            band = Band(cx - 0.5 * length * np.cos(ang), cy - 0.5 * length * np.sin(ang), float(ang), length, width,
                        rng.uniform(4, 14), rng.uniform(90, 170), rng.uniform(0, 2 * np.pi))
            poly = Polygon(band.polygon(80))
            if _far_from(poly, polys, 15.0):
                clusters = place_nerve_clusters(rng, band, (0.3, 0.7), 8.0) if positive and i == 0 else ()
                nerves.append(Nerve(band, clusters))
                polys.append(poly)
                break
    tumours: tuple[Blob, ...] = ()
    if not positive and rng.random() < 0.25:
        blob = _tumour_blob_away(rng, polys, (40, 80))
        tumours = (blob,) if blob is not None else ()
    kw = _base(rng, seed, None, filler, fat_level=float(rng.uniform(0.1, 0.4)) if filler == "stroma" else 0.0)
    return Scene(nerves=tuple(nerves), tumours=tumours, tumour=_spec(rng), **kw)


def _scene_lymph_node(rng: np.random.Generator, seed: int, organ: str) -> Scene:
    c = PATCH_UM / 2
    r = rng.uniform(110, 170)
    body = Blob.random(rng, c + rng.uniform(-35, 35), c + rng.uniform(-35, 35), r, 0.12, aspect=rng.uniform(1, 1.35))
    capsule = float(rng.uniform(5, 9))
    mets: list[Blob] = []
    if rng.random() < 0.5:
        inner = body.min_radius - capsule
        for _ in range(int(rng.integers(1, 3))):
            mr = rng.uniform(28, min(70, 0.5 * inner))
            room = max(0.0, inner - 1.3 * mr - 8)
            ang, off = rng.uniform(0, 2 * np.pi), rng.uniform(0, room)
            mets.append(Blob.random(rng, body.cx + off * np.cos(ang), body.cy + off * np.sin(ang), mr, 0.25))
    kw = _base(rng, seed, None, "fat")
    return Scene(lymph_nodes=(LymphNode(body, capsule, tuple(mets)),), tumour=_spec(rng), **kw)


def _scene_filler(filler: str):
    def build(rng: np.random.Generator, seed: int, organ: str) -> Scene:
        return Scene(**_base(rng, seed, None, filler, tumour=_spec(rng)))

    return build


_BUILDERS = MappingProxyType({
    "tumour": _scene_tumour,
    "normal": _scene_normal,
    "vessel": _scene_vessel,
    "nerve": _scene_nerve,
    "lymph_node": _scene_lymph_node,
    "stroma": _scene_filler("stroma"),
    "adipose": _scene_filler("fat"),
    "necrosis": _scene_filler("necrosis"),
    "lymphocytes": _scene_filler("lymphoid"),
})


def build_scene(seed: int, kind: str | None = None) -> tuple[str, Scene]:
    """The kind and scene of patch `seed` (the same whatever the output size)."""
    rng = np.random.default_rng([int(seed), 0x5E7])
    drawn = str(rng.choice(PATCH_KINDS, p=np.asarray(KIND_WEIGHTS) / np.sum(KIND_WEIGHTS)))
    kind = drawn if kind is None else kind
    if kind not in _BUILDERS:
        raise ValueError(f"unknown patch kind {kind!r}; choose one of {PATCH_KINDS}")
    organ = str(rng.choice(ORGANS))
    return kind, _BUILDERS[kind](rng, seed, organ)


# ---------------------------------------------------------------- truth


def _structure(cls: str, mask: NDArray[np.bool_], polygon: NDArray[np.float64] | None) -> SynthObject | None:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return SynthObject(cls, "structure", (x1, y1, x2, y2), mask[y1:y2, x1:x2].copy(), polygon)


def _pixel_grid(size: int, px: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    c = (np.arange(size) + 0.5) * px
    return np.meshgrid(c, c, indexing="xy")


def _nucleus_objects(r: Rendered) -> list[SynthObject]:
    inst = r.instances
    ids = np.unique(inst)
    ids = ids[ids > 0]
    if ids.size == 0:
        return []
    # bounding slices of every id in one pass
    slices = ndimage.find_objects(inst, max_label=int(ids.max()))
    names = r.nuclei.class_names()
    out = []
    for i in ids:
        sl = slices[i - 1]
        if sl is None:
            continue
        mask = inst[sl] == i
        if mask.sum() < MIN_NUCLEUS_PIXELS:
            continue
        ys, xs = sl
        out.append(SynthObject(names[i - 1], "nucleus", (xs.start, ys.start, xs.stop, ys.stop), mask))
    return out


def _labels(kind: str, scene: Scene, mat: NDArray[np.uint8], regions: dict[str, NDArray[np.bool_]],
            tumour_regions: NDArray[np.bool_]) -> dict[str, str]:
    n = mat.size
    labels: dict[str, str] = {}
    organ_frac = np.isin(mat, _ORGAN_MATERIALS).sum() / n
    tumour_frac = regions["tumour"].sum() / n
    region_frac = tumour_regions.sum() / n
    if kind == "lymph_node" and regions["lymph_node"].sum() / n >= 0.3:
        labels["organ"] = LYMPH_NODE_ORGAN
    elif scene.organ is not None and organ_frac + region_frac >= 0.15:  # parenchyma or the organ's own tumour
        labels["organ"] = scene.organ
        if tumour_frac >= 0.05:
            labels["disease"] = DISEASES[scene.organ]
        elif tumour_frac == 0:
            labels["disease"] = NORMAL_DISEASE
    if scene.tumour is not None and scene.organ is not None and region_frac >= 0.15:
        labels["subtype"] = SUBTYPES[scene.organ][scene.tumour.architecture]
        labels["grade"] = GRADE_NAMES[scene.tumour.grade]
        if kind == "tumour":
            labels["til"] = "yes" if scene.tumour.til else "no"
    tissue = mat != M.BACKGROUND
    if tissue.sum() >= 0.5 * n:
        counts = {"tumour": int((regions["tumour"] & tissue).sum())}
        for name, mats in _TISSUE_CLASSES:
            counts[name] = int((np.isin(mat, mats) & tissue & ~regions["tumour"]).sum())
        best = max(counts, key=counts.get)
        if counts[best] >= 0.6 * tissue.sum():
            labels["tissue_type"] = best
    if kind == "vessel":
        labels["mvi"] = "yes" if regions["invasion"].any() else "no"
    if kind == "nerve":
        labels["neural_invasion"] = "yes" if regions["invasion"].any() else "no"
    if kind == "lymph_node":
        labels["lymph_node_metastasis"] = "yes" if regions["metastasis"].any() else "no"
    return labels


_KIND_TASKS = MappingProxyType({
    "tumour": ("cancer_detection", "cancer_segmentation"),
    "normal": ("cancer_detection", "cancer_segmentation"),
    "vessel": ("vessel_detection", "cancer_nuclei_in_vessel"),
    "nerve": ("nerve_detection", "nerve_segmentation", "cancer_in_nerve_segmentation"),
    "lymph_node": ("lymph_node_detection", "cancer_in_lymph_node_segmentation"),
})


def generate_patch(seed: int, size: int = 384, kind: str | None = None) -> SynthPatch:
    """A deterministic synthetic H&E patch of `size` x `size` pixels (384 um field of view) with its truth."""
    if size < 16:
        raise ValueError(f"patch size must be at least 16 pixels, got {size}")
    kind, scene = build_scene(seed, kind)
    px = PATCH_UM / size
    r = render_truth(scene, 0, 0, size, size, px)
    f = r.fields
    far = np.full((size, size), 1e6, np.float32)

    def below(name: str) -> NDArray[np.bool_]:
        return f.get(name, far) < 0

    vessel_lumen = below("v_lumen")
    nerve = below("nerve")
    node = below("ln")
    invasion = (below("embolus") & vessel_lumen) | (below("nerve_tum") & nerve)
    metastasis = below("ln_met") & below("ln_cap")
    tumour_regions = below("tumour")
    regions = {
        "tumour": tumour_regions | invasion | metastasis,
        "vessel": below("v_outer"),
        "nerve": nerve,
        "lymph_node": node,
        "metastasis": metastasis,
        "invasion": invasion,
    }

    objects = _nucleus_objects(r)
    X, Y = _pixel_grid(size, px)
    to_px = 1.0 / px
    n_lbl, comp = cv2.connectedComponents(tumour_regions.astype(np.uint8), connectivity=8)
    for i in range(1, n_lbl):
        part = comp == i
        if part.sum() >= 0.002 * size * size:
            objects.append(_structure("tumour_region", part, None))
    for v in scene.vessels:
        objects.append(_structure("vessel", v.outer_sdf(X, Y) < 0, v.outline() * to_px))
    for nv in scene.nerves:
        objects.append(_structure("nerve", nv.band.sdf(X, Y) < 0, nv.band.polygon() * to_px))
    for ln in scene.lymph_nodes:
        objects.append(_structure("lymph_node", ln.body.sdf(X, Y) < 0, ln.body.polygon() * to_px))
    objects = [o for o in objects if o is not None]

    labels = _labels(kind, scene, r.material, regions, tumour_regions)
    geometry = ("nucleus_detection", "nucleus_classification") + _KIND_TASKS.get(kind, ())
    region_masks = {name: regions[name] for name in REGIONS}
    region_masks["vessel_lumen"] = vessel_lumen
    return SynthPatch(int(seed), kind, r.rgb, objects, region_masks, labels, r.material, scene, geometry)
