"""Image-classification folders (``root/CLASS/*.png``) -> open / closed / yes-no records of a chosen task.

Every image below ``root/CLASS/`` (sub-folders included) is labelled ``CLASS``;
``rename`` maps folder names to label text (e.g. NCT-CRC's ``"TUM"`` ->
``"tumor epithelium"``). The task must be named: text tasks (organ, disease,
subtype, grade, tissue_type, pancancer, prognosis) ask open or closed
questions, yes/no tasks (til, msi, mvi, neural_invasion,
lymph_node_metastasis) map labels to yes/no (``positive`` names the labels that
mean "yes" where the label words do not tell).
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from omnipath_lvlm.data.converters.common import (
    IMAGE_SUFFIXES,
    LABEL_STYLES,
    classification_records,
    resolve_tasks,
    tasks_with_styles,
)
from omnipath_lvlm.data.records import Record

SOURCE = "folder"


def convert_classification_folder(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
    *,
    rename: Mapping[str, str] | None = None,
    organ: str | None = None,
    positive: Sequence[str] | None = None,
    styles: Sequence[str] | None = None,
    max_options: int = 6,
) -> list[Record]:
    """``root/CLASS/*.png`` -> one record per image and task (``out_dir`` is unused: images stay put)."""
    chosen = resolve_tasks(tasks, (), tasks_with_styles(LABEL_STYLES), SOURCE)
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder of class folders")
    names = dict(rename or {})
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = names.get(class_dir.name, class_dir.name)
        for image in sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            items.append((image, label, organ))
    if not items:
        raise FileNotFoundError(f"no images in class folders below {root}")
    return classification_records(items, chosen, random.Random(rng_seed), SOURCE, root=root, positive=positive,
                                  styles=styles, max_options=max_options)
