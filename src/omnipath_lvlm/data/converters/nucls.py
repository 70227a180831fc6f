"""NuCLS: per-FOV nucleus tables -> nucleus classification (and detection).

The release pairs ``rgb/<fov>.png`` with ``csv/<fov>.csv`` (paired by file stem
anywhere below the given folder). Each CSV row is one nucleus, with the header
``,raw_classification,main_classification,super_classification,type,xmin,ymin,xmax,ymax,coords_x,coords_y``;
``xmin..ymax`` are pixel bounds in the FOV image and ``coords_x`` / ``coords_y``
the outline as comma-separated strings (used when the bounds are absent).

Classes come from ``main_classification`` and are shown with readable names
(``tumor_nonMitotic`` -> "tumor", ``nonTILnonMQ_stromal`` -> "stromal", ...);
unknown names are kept with underscores turned into spaces.
"""
from __future__ import annotations

import csv
import random
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from omnipath_lvlm.data.converters.common import (
    IMAGE_SUFFIXES,
    image_size,
    index_by_stem,
    nucleus_records,
    resolve_tasks,
)
from omnipath_lvlm.data.records import Record

SOURCE = "nucls"
TASKS = ("nucleus_classification",)
SUPPORTED = ("nucleus_classification", "nucleus_detection")
CLASS_NAMES = (
    ("tumor_nonMitotic", "tumor"),
    ("tumor_mitotic", "mitotic figure"),
    ("nonTILnonMQ_stromal", "stromal"),
    ("macrophage", "macrophage"),
    ("lymphocyte", "lymphocyte"),
    ("plasma_cell", "plasma cell"),
    ("other_nucleus", "other"),
    ("AMBIGUOUS", "ambiguous"),
)


def class_name(raw: str) -> str:
    """Readable class name of a NuCLS ``main_classification`` value."""
    return dict(CLASS_NAMES).get(raw.strip(), raw.strip().replace("_", " "))


def read_nucls_csv(path: str | Path) -> list[tuple[str, list[float]]]:
    """(class name, [xmin, ymin, xmax, ymax] pixels) of every nucleus of one NuCLS table."""
    nuclei = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if "main_classification" not in columns:
            raise ValueError(f"{path}: NuCLS table without a 'main_classification' column (columns: {sorted(columns)})")
        has_bounds = {"xmin", "ymin", "xmax", "ymax"} <= columns
        if not has_bounds and not {"coords_x", "coords_y"} <= columns:
            raise ValueError(f"{path}: NuCLS table needs xmin/ymin/xmax/ymax or coords_x/coords_y columns")
        for line, row in enumerate(reader, start=2):
            try:
                if has_bounds and all(row[k].strip() for k in ("xmin", "ymin", "xmax", "ymax")):
                    bounds = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
                else:
                    xs = np.array(row["coords_x"].split(","), dtype=float)
                    ys = np.array(row["coords_y"].split(","), dtype=float)
                    bounds = [xs.min(), ys.min(), xs.max(), ys.max()]
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path} line {line}: unreadable nucleus coordinates ({exc})") from None
            nuclei.append((class_name(row["main_classification"]), [float(v) for v in bounds]))
    return nuclei


def convert_nucls(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
) -> list[Record]:
    """NuCLS folder (``csv/`` + ``rgb/``) -> records; images are referenced where they are."""
    chosen = resolve_tasks(tasks, TASKS, SUPPORTED, SOURCE)
    rng = random.Random(rng_seed)
    root = Path(path)
    tables = sorted(root.rglob("*.csv"))
    if not tables:
        raise FileNotFoundError(f"no NuCLS CSV tables under {root}")
    images = index_by_stem(root, IMAGE_SUFFIXES)
    records: list[Record] = []
    for table in tables:
        image = images.get(table.stem)
        if image is None:
            warnings.warn(f"NuCLS table {table} has no image with the same name; skipped", stacklevel=2)
            continue
        by_class: dict[str, list[list[float]]] = {}
        for name, bounds in read_nucls_csv(table):
            by_class.setdefault(name, []).append(bounds)
        records += nucleus_records(image.resolve(), image_size(image), by_class, chosen, rng, SOURCE, table.stem)
    return records
