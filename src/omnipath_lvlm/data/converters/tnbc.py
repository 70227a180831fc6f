"""TNBC-style nucleus sets (images + binary masks) -> nucleus detection.

The TNBC release holds ``Slide_XX/<name>.png`` images and ``GT_XX/<name>.png``
binary masks (nucleus pixels > 0). Folders called ``images`` / ``masks`` with
files of the same names are read the same way. Each 4-connected component of
a mask (of at least ``min_area`` pixels) is one nucleus; touching nuclei that
share an edge therefore count as one, a limit of binary ground truth.
"""
from __future__ import annotations

import random
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.measure import label

from omnipath_lvlm.data.converters.common import IMAGE_SUFFIXES, nucleus_records, resolve_tasks
from omnipath_lvlm.data.records import Record

SOURCE = "tnbc"
TASKS = ("nucleus_detection",)


def find_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) file pairs: ``Slide_XX`` with ``GT_XX``, or ``images`` with ``masks``."""
    folder_pairs = []
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        name = folder.name
        if name.lower().startswith("slide_"):
            masks = folder.with_name("GT_" + name[len("slide_"):])
        elif name.lower() == "images":
            masks = folder.with_name("masks")
        else:
            continue
        if masks.is_dir():
            folder_pairs.append((folder, masks))
    pairs = []
    for images, masks in folder_pairs:
        for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            mask = next((m for m in sorted(masks.glob(image.stem + ".*")) if m.suffix.lower() in IMAGE_SUFFIXES), None)
            if mask is None:
                warnings.warn(f"TNBC image {image} has no mask in {masks}; skipped", stacklevel=3)
                continue
            pairs.append((image, mask))
    return pairs


def mask_components(mask_file: Path, min_area: int) -> np.ndarray:
    """Instance map (H, W) int32 of the 4-connected components of a binary mask file."""
    with Image.open(mask_file) as im:
        binary = np.asarray(im.convert("L")) > 0  # (H, W)
    instances = label(binary, connectivity=1).astype(np.int32)
    if min_area > 1:
        areas = np.bincount(instances.ravel())
        small = np.flatnonzero(areas < min_area)
        instances[np.isin(instances, small[small > 0])] = 0
    return instances


def convert_tnbc(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
    *,
    min_area: int = 4,
) -> list[Record]:
    """TNBC folder -> nucleus_detection records; images are referenced where they are."""
    from omnipath_lvlm.data.geometry import instance_mask_to_boxes

    chosen = resolve_tasks(tasks, TASKS, TASKS, SOURCE)
    rng = random.Random(rng_seed)
    root = Path(path)
    pairs = find_pairs(root)
    if not pairs:
        raise FileNotFoundError(f"no Slide_XX/GT_XX or images/masks folder pairs under {root}")
    records: list[Record] = []
    for image, mask in pairs:
        instances = mask_components(mask, min_area)
        with Image.open(image) as im:
            size = im.size
        if size != instances.shape[::-1]:
            raise ValueError(f"{mask}: mask size {instances.shape[::-1]} differs from image size {size}")
        _, boxes = instance_mask_to_boxes(instances)
        stem = f"{image.parent.name}_{image.stem}"
        records += nucleus_records(image.resolve(), size, {"nucleus": boxes}, chosen, rng, SOURCE, stem)
    return records
