"""CoNIC (Lizard patches): instance + class maps -> nucleus classification / detection.

The challenge release holds ``images.npy`` (N, 256, 256, 3) uint8 RGB and
``labels.npy`` (N, 256, 256, 2): channel 0 is the instance-id map, channel 1 the
class map with 1..6 = neutrophil, epithelial, lymphocyte, plasma, eosinophil,
connective (0 = background). Both files are found anywhere below the given
folder (the first pair in sorted order). Patches are written as PNG into
``out_dir/conic/``. A nucleus takes the class that covers most of its pixels; a
nucleus without any class pixel counts for detection only.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy import ndimage

from omnipath_lvlm.data.converters.common import nucleus_records, resolve_tasks, save_png
from omnipath_lvlm.data.records import Record

SOURCE = "conic"
CLASS_NAMES = ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")  # ids 1..6
TASKS = ("nucleus_classification", "nucleus_detection")


def instance_classes(instances: np.ndarray, classes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Majority class id (1..6) of each instance in ``ids``; 0 when none of its pixels has a class.

    ``instances`` and ``classes`` are (H, W) maps; the result is (N,) ints.
    """
    # per-instance pixel count of each real class
    votes = np.stack([ndimage.sum_labels(classes == c, instances, ids)
                      for c in range(1, len(CLASS_NAMES) + 1)], axis=1)  # (N, 6)
    return np.where(votes.max(axis=1) > 0, votes.argmax(axis=1) + 1, 0)


def convert_conic(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
) -> list[Record]:
    """CoNIC folder -> nucleus_classification (six classes) and nucleus_detection records."""
    from omnipath_lvlm.data.geometry import instance_mask_to_boxes

    chosen = resolve_tasks(tasks, TASKS, TASKS, SOURCE)
    rng = random.Random(rng_seed)
    root, out = Path(path), Path(out_dir) / SOURCE
    images_file = next(iter(sorted(root.rglob("images.npy"))), None)
    labels_file = next(iter(sorted(root.rglob("labels.npy"))), None)
    if images_file is None or labels_file is None:
        raise FileNotFoundError(f"no CoNIC images.npy / labels.npy under {root}")
    images = np.load(images_file, mmap_mode="r")  # (N, H, W, 3)
    labels = np.load(labels_file, mmap_mode="r")  # (N, H, W, 2)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{images_file}: expected (N, H, W, 3) images, got shape {images.shape}")
    if labels.shape != images.shape[:3] + (2,):
        raise ValueError(f"{labels_file}: expected labels of shape {images.shape[:3] + (2,)}, got {labels.shape}")
    height, width = images.shape[1:3]
    records: list[Record] = []
    for i in range(images.shape[0]):
        instances = np.asarray(labels[i, :, :, 0]).astype(np.int32)  # (H, W)
        classes = np.asarray(labels[i, :, :, 1]).astype(np.int32)  # (H, W)
        if classes.min() < 0 or classes.max() > len(CLASS_NAMES):
            raise ValueError(f"{labels_file}[{i}]: class ids must lie in 0..{len(CLASS_NAMES)}, "
                             f"found {classes.min()}..{classes.max()}")
        ids, boxes = instance_mask_to_boxes(instances)
        ids, boxes = np.asarray(ids), np.asarray(boxes, dtype=float).reshape(-1, 4)
        cls = instance_classes(instances, classes, ids) if len(ids) else np.zeros(0, dtype=int)
        boxes_by_class = {name: boxes[cls == k + 1] for k, name in enumerate(CLASS_NAMES)}
        stem = f"{i:05d}"
        image = save_png(np.asarray(images[i]), out / f"{stem}.png").resolve()
        records += nucleus_records(image, (width, height), boxes_by_class, chosen, rng, SOURCE, stem,
                                   unlabelled=boxes[cls == 0])
    return records
