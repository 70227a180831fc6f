"""COCO instance annotations -> detection, classified detection or segmentation of a chosen task.

The JSON holds ``images`` ({id, file_name, width, height}), ``annotations``
({image_id, category_id, bbox [x, y, w, h], segmentation, iscrowd}) and
``categories`` ({id, name}). The task is not implied by the file, so it must be
named (``tasks=["vessel_detection"]``). Per task kind:

* box tasks (``vessel_detection``, ``nerve_detection``, ``nucleus_detection``...):
  the ``bbox`` of every kept annotation;
* ``nucleus_classification``: boxes grouped by category name;
* region tasks (``nerve_segmentation``, ``cancer_segmentation``...): polygon
  segmentations (each simplified to ``max_vertices``) or, for the ``mask``
  style, a PNG of all instances written to ``out_dir/coco/``. RLE
  segmentations need pycocotools.

Crowd annotations (``iscrowd: 1``) are skipped; ``categories`` keeps only the
named categories. Image files are looked up relative to the JSON file's
folder, its ``images/`` subfolder, or ``image_dir``. Images without kept
annotations give records with empty answers (negative samples).
"""
from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from omnipath_lvlm.data.converters.common import (
    BOX_STYLES,
    DETECTION_STYLES,
    REGION_STYLES,
    pick_style,
    relative_boxes,
    relative_polygon,
    resolve_tasks,
    save_png,
    simplify_outline,
    slug,
    tasks_with_styles,
)
from omnipath_lvlm.data.records import Record, make_record

SOURCE = "coco"


def load_coco(path: str | Path) -> dict:
    """The parsed COCO JSON, checked for its three top-level lists."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"{path}: not a COCO instance file, missing list(s) {missing}")
    return data


def instance_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one annotation's segmentation (polygons or RLE)."""
    from omnipath_lvlm.data.geometry import polygons_to_mask

    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        rings = [np.asarray(s, dtype=float).reshape(-1, 2) for s in segmentation if len(s) >= 6]
        return polygons_to_mask(rings, (height, width)) if rings else np.zeros((height, width), dtype=bool)
    if isinstance(segmentation, dict):
        try:
            from pycocotools import mask as coco_mask
        except ImportError as exc:
            raise ImportError("RLE segmentations need pycocotools (pip install pycocotools)") from exc
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = coco_mask.frPyObjects(rle, height, width)
        return coco_mask.decode(rle).astype(bool)
    raise ValueError(f"annotation {annotation.get('id')} has no segmentation")


def annotation_polygons(annotation: dict, height: int, width: int, max_vertices: int) -> list[np.ndarray]:
    """Pixel polygons (K, 2) of one annotation, each with at most ``max_vertices`` vertices."""
    from omnipath_lvlm.data.geometry import mask_to_polygons

    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        return [simplify_outline(np.asarray(s, dtype=float).reshape(-1, 2), max_vertices)
                for s in segmentation if len(s) >= 6]
    return mask_to_polygons(instance_mask(annotation, height, width), max_vertices=max_vertices)


def convert_coco(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
    *,
    categories: Sequence[str] | None = None,
    image_dir: str | Path | None = None,
    styles: Sequence[str] | None = None,
    max_vertices: int = 50,
    organ: str | None = None,
) -> list[Record]:
    """COCO JSON -> records of the named task(s), one per image and task."""
    supported = tasks_with_styles(BOX_STYLES + DETECTION_STYLES + REGION_STYLES)
    chosen = resolve_tasks(tasks, (), supported, SOURCE)
    rng = random.Random(rng_seed)
    json_file, out = Path(path), Path(out_dir) / SOURCE
    data = load_coco(json_file)
    names = {c["id"]: str(c["name"]) for c in data["categories"]}
    wanted = None if categories is None else set(categories)
    if wanted is not None and not wanted & set(names.values()):
        raise ValueError(f"{json_file}: none of the categories {sorted(wanted)} exist; "
                         f"the file has {sorted(names.values())}")
    per_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) or (wanted is not None and names.get(ann["category_id"]) not in wanted):
            continue
        per_image.setdefault(ann["image_id"], []).append(ann)

    folders = [json_file.parent, json_file.parent / "images"] + ([Path(image_dir)] if image_dir else [])
    records: list[Record] = []
    for info in data["images"]:
        image = next((f / info["file_name"] for f in folders if (f / info["file_name"]).is_file()), None)
        if image is None:
            warnings.warn(f"COCO image {info['file_name']} not found in {[str(f) for f in folders]}; skipped",
                          stacklevel=2)
            continue
        width, height = int(info["width"]), int(info["height"])
        anns = per_image.get(info["id"], [])
        stem = slug(Path(info["file_name"]).with_suffix("").as_posix())
        common = {"organ": organ, "image_size": [width, height], "source": SOURCE}
        for task in chosen:
            style = pick_style(task, rng, BOX_STYLES + DETECTION_STYLES + REGION_STYLES, styles)
            answer = _answer(style, anns, names, width, height, max_vertices,
                             out / f"{stem}_{task}_mask.png")
            records.append(make_record(task, image.resolve(), answer, rng, style=style,
                                       id=f"{SOURCE}-{stem}-{task}", **common))
    return records


def _answer(style: str, anns: list[dict], names: dict[int, str], width: int, height: int, max_vertices: int,
            mask_file: Path) -> object:
    boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
    if style == "boxes":
        return relative_boxes(boxes, width, height)
    if style == "detections":
        grouped: dict[str, list[list[float]]] = {}
        for ann, box in zip(anns, boxes, strict=True):
            grouped.setdefault(names[ann["category_id"]], []).append(box)
        return {name: relative_boxes(b, width, height) for name, b in sorted(grouped.items())}
    if style == "polygons":
        polygons = [p for a in anns for p in annotation_polygons(a, height, width, max_vertices)]
        polygons.sort(key=lambda p: (p[:, 1].min(), p[:, 0].min()))
        return [relative_polygon(p, width, height) for p in polygons]
    mask = np.zeros((height, width), dtype=bool)  # (H, W)
    for ann in anns:
        mask |= instance_mask(ann, height, width)
    return str(save_png(mask, mask_file).resolve())
