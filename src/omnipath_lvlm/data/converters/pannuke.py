"""PanNuke: 256 x 256 patches with typed nucleus instances -> nucleus classification / detection, organ.

A PanNuke fold holds three NumPy files (found anywhere below the given folder,
e.g. ``Fold 1/images/fold1/images.npy`` and ``Fold 1/masks/fold1/masks.npy``):

* ``images.npy`` (N, 256, 256, 3), RGB values 0..255 (float64 in the release);
* ``masks.npy`` (N, 256, 256, 6): channels 0-4 are instance-id maps of the
  Neoplastic, Inflammatory, Connective, Dead and Epithelial nuclei, channel 5
  the background;
* ``types.npy`` (N,): the tissue of origin of each patch ("Breast", "Colon",
  "Adrenal_gland", ...).

Patches are written as PNG into ``out_dir/pannuke/``. Nucleus boxes come from
the instance maps (:func:`omnipath_lvlm.data.geometry.instance_mask_to_boxes`).
The tissue names are organs of origin, so by default they feed the ``organ``
task (and set every record's ``organ``); ``tissue_type`` can be requested to
ask the paper's tissue-type prompts about the same labels instead.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from omnipath_lvlm.data.converters.common import label_record, nucleus_records, resolve_tasks, save_png
from omnipath_lvlm.data.records import Record

SOURCE = "pannuke"
CLASS_NAMES = ("neoplastic", "inflammatory", "connective", "dead", "epithelial")  # mask channels 0-4
TASKS = ("nucleus_classification", "nucleus_detection", "organ")
SUPPORTED = TASKS + ("tissue_type",)
# PanNuke tissue names that differ from the organ names of the paper (table 13).
ORGAN_ALIASES = (
    ("adrenal_gland", "Adrenal Gland"),
    ("bile-duct", "Bile Duct"),
    ("headneck", "Head-Neck"),
    ("ovarian", "Ovary"),
    ("pancreatic", "Pancreas"),
)


def organ_name(tissue: str) -> str:
    """PanNuke tissue name -> the organ class of the ``organ`` task ("Bile-duct" -> "Bile Duct").

    Names the organ task does not know are returned title-cased with spaces.
    """
    from omnipath_lvlm.data.tasks import get_task

    key = tissue.strip().lower()
    alias = dict(ORGAN_ALIASES).get(key)
    if alias is not None:
        return alias
    by_lower = {organ.lower(): organ for organ in get_task("organ").classes}
    return by_lower.get(key.replace("_", " "), key.replace("_", " ").title())


def find_fold_files(root: Path) -> list[tuple[Path, Path, Path | None]]:
    """(images.npy, masks.npy, types.npy or None) of every fold below ``root``.

    Each images file is paired with the masks file sharing the longest path prefix.
    """
    images = sorted(root.rglob("images.npy"))
    masks = sorted(root.rglob("masks.npy"))
    if not images or not masks:
        raise FileNotFoundError(f"no PanNuke images.npy / masks.npy under {root}")
    folds = []
    for img in images:
        scores = [len(os.path.commonpath([img, m]).split(os.sep)) for m in masks]
        best = max(scores)
        if scores.count(best) > 1:
            raise ValueError(f"cannot tell which masks.npy belongs to {img}: several are equally close")
        types = img.with_name("types.npy")
        folds.append((img, masks[scores.index(best)], types if types.is_file() else None))
    return folds


def convert_pannuke(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
    *,
    styles: Iterable[str] | None = None,
) -> list[Record]:
    """PanNuke fold folder(s) -> records; ``styles`` restricts organ/tissue questions (open/closed)."""
    from omnipath_lvlm.data.geometry import instance_mask_to_boxes

    chosen = resolve_tasks(tasks, TASKS, SUPPORTED, SOURCE)
    label_styles = None if styles is None else tuple(styles)
    rng = random.Random(rng_seed)
    root, out = Path(path), Path(out_dir) / SOURCE
    records: list[Record] = []
    for fold_index, (images_file, masks_file, types_file) in enumerate(find_fold_files(root)):
        images = np.load(images_file, mmap_mode="r")  # (N, H, W, 3)
        masks = np.load(masks_file, mmap_mode="r")  # (N, H, W, 6)
        types = None if types_file is None else np.load(types_file, allow_pickle=False)  # (N,)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{images_file}: expected (N, H, W, 3) images, got shape {images.shape}")
        if masks.shape[:3] != images.shape[:3] or masks.shape[-1] != 6:
            raise ValueError(f"{masks_file}: expected masks of shape {images.shape[:3] + (6,)}, got {masks.shape}")
        if types is not None and types.shape != images.shape[:1]:
            raise ValueError(f"{types_file}: expected {images.shape[0]} tissue names, got shape {types.shape}")
        organs = None if types is None else [organ_name(str(t)) for t in types]
        needs_types = [t for t in chosen if t in ("organ", "tissue_type")]
        if needs_types and organs is None:
            raise FileNotFoundError(f"task(s) {needs_types} need types.npy beside {images_file}")
        fold = f"f{fold_index}"
        height, width = images.shape[1:3]
        for i in range(images.shape[0]):
            stem = f"{fold}_{i:05d}"
            rgb = np.clip(np.rint(images[i]), 0, 255).astype(np.uint8)
            image = save_png(rgb, out / f"{stem}.png").resolve()
            organ = None if organs is None else organs[i]
            boxes_by_class = {}
            for channel, name in enumerate(CLASS_NAMES):
                _, boxes = instance_mask_to_boxes(np.asarray(masks[i, :, :, channel]).astype(np.int32))
                boxes_by_class[name] = boxes
            nucleus_tasks = [t for t in chosen if t.startswith("nucleus_")]
            records += nucleus_records(image, (width, height), boxes_by_class, nucleus_tasks, rng, SOURCE, stem,
                                       organ=organ)
            for task in needs_types:
                records.append(label_record(task, image, organ, rng, organs, styles=label_styles,
                                            id=f"{SOURCE}-{stem}-{task}", organ=organ,
                                            image_size=[width, height], source=SOURCE))
    return records
