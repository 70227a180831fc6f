"""Classification tables (CSV ``image,label[,organ]``) -> open / closed / yes-no records of a chosen task.

Image paths are relative to the CSV file's folder (or absolute). The optional
``organ`` column fills the records' organ. Task handling is that of
:mod:`omnipath_lvlm.data.converters.classification_folder`.
"""
from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from omnipath_lvlm.data.converters.common import LABEL_STYLES, classification_records, resolve_tasks, tasks_with_styles
from omnipath_lvlm.data.records import Record

SOURCE = "csv"


def read_label_table(path: str | Path) -> list[tuple[Path, str, str | None]]:
    """(image path, label, organ or None) rows of a classification CSV."""
    table = Path(path)
    rows = []
    with table.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if not {"image", "label"} <= columns:
            raise ValueError(f"{table}: a classification table needs 'image' and 'label' columns, "
                             f"found {sorted(columns)}")
        for line, row in enumerate(reader, start=2):
            image, label = (row["image"] or "").strip(), (row["label"] or "").strip()
            if not image or not label:
                raise ValueError(f"{table} line {line}: empty image or label")
            organ = (row.get("organ") or "").strip() or None
            image_path = Path(image) if Path(image).is_absolute() else table.parent / image
            if not image_path.is_file():
                raise FileNotFoundError(f"{table} line {line}: image {image_path} does not exist")
            rows.append((image_path, label, organ))
    if not rows:
        raise ValueError(f"{table}: the table has no rows")
    return rows


def convert_classification_csv(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
    *,
    positive: Sequence[str] | None = None,
    styles: Sequence[str] | None = None,
    max_options: int = 6,
) -> list[Record]:
    """CSV table -> one record per row and task (``out_dir`` is unused: images stay put)."""
    chosen = resolve_tasks(tasks, (), tasks_with_styles(LABEL_STYLES), SOURCE)
    table = Path(path)
    return classification_records(read_label_table(table), chosen, random.Random(rng_seed), SOURCE,
                                  root=table.parent, positive=positive, styles=styles, max_options=max_options)
