"""Helpers shared by the dataset converters.

Every converter turns one public annotation format into :class:`Record` objects
with :func:`omnipath_lvlm.data.records.make_record`. The pieces they share live
here: choosing the tasks and answer styles a source can produce, reading image
sizes, writing PNG files, turning pixel boxes into relative ones and building the
one or more records of an image from its boxes / classes / polygons.

Pixel conventions: instance-mask boxes follow :mod:`omnipath_lvlm.data.geometry`
(x2 = last column + 1); vector annotations (XML vertices, GeoJSON, COCO) are
continuous coordinates used as they are. Relative values divide by the image's
width and height and are clipped to [0, 1].
"""
from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from omnipath_lvlm.data.records import Record, make_record

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".svslide", ".bif")
# Answer styles whose content a converter derives from each kind of annotation.
BOX_STYLES = ("boxes",)
DETECTION_STYLES = ("detections",)
REGION_STYLES = ("polygons", "mask")
LABEL_STYLES = ("open", "closed", "yes_no")


# ------------------------------------------------------------ tasks and styles
def resolve_tasks(requested: Iterable[str] | None, default: Sequence[str], supported: Sequence[str],
                  source: str) -> tuple[str, ...]:
    """The tasks to produce: ``requested`` (each must be supported) or ``default``."""
    tasks = tuple(default) if requested is None else tuple(requested)
    if not tasks:
        raise ValueError(f"{source}: no task given; this source supports {sorted(supported)}")
    unsupported = [t for t in tasks if t not in supported]
    if unsupported:
        raise ValueError(f"{source} cannot produce task(s) {unsupported}; it supports {sorted(supported)}")
    return tasks


def tasks_with_styles(styles: Sequence[str]) -> tuple[str, ...]:
    """Names of the registered tasks that accept at least one of ``styles``."""
    from omnipath_lvlm.data.tasks import TASKS

    return tuple(name for name, task in TASKS.items() if set(task.styles) & set(styles))


def pick_style(task_name: str, rng: random.Random, producible: Sequence[str],
               styles: Sequence[str] | None = None) -> str:
    """One answer style of the task that this source can fill (random among several)."""
    from omnipath_lvlm.data.tasks import get_task

    task = get_task(task_name)
    candidates = [s for s in task.styles if s in producible and (styles is None or s in styles)]
    if not candidates:
        raise ValueError(f"task {task_name!r} (styles {task.styles}) has no answer style this source can "
                         f"produce among {list(styles or producible)}")
    return candidates[0] if len(candidates) == 1 else rng.choice(candidates)


# ------------------------------------------------------------------- files
def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) read from the image header."""
    with Image.open(path) as im:
        return im.size


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) RGB or (H, W) mask array as PNG (bool masks become 0/255)."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"cannot store values in [{arr.min()}, {arr.max()}] as an 8-bit PNG ({path})")
        arr = arr.astype(np.uint8)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) array for {path}, got shape {arr.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def index_by_stem(root: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Files below ``root`` with one of ``suffixes`` keyed by file stem (first in sorted order wins)."""
    found: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in suffixes:
            found.setdefault(p.stem, p)
    return found


def find_companion(file: Path, suffixes: Sequence[str]) -> Path | None:
    """The file with ``file``'s stem and one of ``suffixes``, beside it or in a sibling folder.

    Covers layouts such as ``Annotations/x.xml`` + ``Tissue Images/x.tif`` without
    searching further up the tree.
    """
    folders = [file.parent, *sorted(d for d in file.parent.parent.iterdir() if d.is_dir() and d != file.parent)]
    for folder in folders:
        for candidate in sorted(folder.iterdir()):
            if (candidate != file and candidate.stem == file.stem and candidate.suffix.lower() in suffixes
                    and candidate.is_file()):
                return candidate
    return None


def slug(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"


# ---------------------------------------------------------------- geometry
def relative_boxes(boxes: np.ndarray | Sequence[Sequence[float]], width: int, height: int) -> list[list[float]]:
    """Pixel boxes (N, 4) x1, y1, x2, y2 -> relative boxes clipped to [0, 1] in reading order.

    Boxes left empty by the clipping are dropped; the rest are sorted top to
    bottom, then left to right, so answers list objects in a stable order.
    """
    from omnipath_lvlm.data.geometry import to_relative

    arr = np.asarray(boxes, dtype=float).reshape(-1, 4)
    rel = np.clip(np.asarray(to_relative(arr, width, height), dtype=float).reshape(-1, 4), 0.0, 1.0)
    rel = rel[(rel[:, 2] > rel[:, 0]) & (rel[:, 3] > rel[:, 1])]
    order = np.lexsort((rel[:, 0], rel[:, 1]))
    return rel[order].round(6).tolist()


def relative_polygon(points: np.ndarray, width: int, height: int) -> list[list[float]]:
    """Pixel polygon (K, 2) x, y -> relative points clipped to [0, 1]."""
    from omnipath_lvlm.data.geometry import to_relative

    rel = np.asarray(to_relative(np.asarray(points, dtype=float).reshape(-1, 2), width, height), dtype=float)
    return np.clip(rel.reshape(-1, 2), 0.0, 1.0).round(6).tolist()


def simplify_outline(points: np.ndarray, max_vertices: int = 50) -> np.ndarray:
    """A closed outline (K, 2) reduced to at most ``max_vertices`` vertices (open ring, x, y).

    Uses shapely's topology-preserving Douglas-Peucker simplification with a
    tolerance that grows until the vertex budget is met. A self-intersecting
    outline is repaired first and its largest part kept; a zero-area one is
    subsampled evenly.
    """
    import shapely
    from shapely.geometry import Polygon

    if max_vertices < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, max_vertices={max_vertices}")
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
        pts = pts[:-1]  # drop the closing vertex
    if len(pts) <= max_vertices:
        return pts
    repaired = shapely.make_valid(Polygon(pts))
    parts = [g for g in getattr(repaired, "geoms", [repaired]) if g.geom_type == "Polygon" and g.area > 0]
    if not parts:
        return pts[np.linspace(0, len(pts) - 1, max_vertices).round().astype(int)]
    polygon = max(parts, key=lambda g: g.area)
    tolerance = max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])) * 1e-3
    simple = polygon
    while len(simple.exterior.coords) - 1 > max_vertices:
        simple = polygon.simplify(tolerance, preserve_topology=True)
        tolerance *= 1.5
    return np.asarray(simple.exterior.coords, dtype=float)[:-1]


def tile_origins(length: int, tile: int) -> list[int]:
    """Start offsets of full tiles covering ``length`` (the last tile is shifted to end at the border)."""
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


# ----------------------------------------------------------------- records
def nucleus_records(
    image: Path,
    size: tuple[int, int],
    boxes_by_class: Mapping[str, np.ndarray | Sequence[Sequence[float]]],
    tasks: Sequence[str],
    rng: random.Random,
    source: str,
    stem: str,
    organ: str | None = None,
    unlabelled: np.ndarray | Sequence[Sequence[float]] | None = None,
) -> list[Record]:
    """Records of one nucleus image: detection (all boxes) and/or classification (boxes per class).

    ``boxes_by_class`` holds pixel boxes per class name; for a source without
    classes pass a single key (it is not shown in detection answers).
    ``unlabelled`` boxes are nuclei without a class: detected, never classified.
    """
    width, height = size
    rel = {name: relative_boxes(b, width, height) for name, b in boxes_by_class.items()}
    all_boxes = relative_boxes(np.concatenate([np.asarray(b, dtype=float).reshape(-1, 4) for b in
                                               [*boxes_by_class.values(), [] if unlabelled is None else unlabelled]]),
                               width, height)
    records = []
    for task in tasks:
        if task == "nucleus_classification":
            answer: object = {name: boxes for name, boxes in rel.items() if boxes}
            style = "detections"
        else:
            answer, style = all_boxes, "boxes"
        records.append(make_record(task, image, answer, rng, style=style, id=f"{source}-{stem}-{task}",
                                   organ=organ, image_size=[width, height], source=source))
    return records


def label_record(
    task_name: str,
    image: Path | None,
    label: str | bool,
    rng: random.Random,
    choices: Sequence[str],
    *,
    styles: Sequence[str] | None = None,
    max_options: int = 6,
    **fields: object,
) -> Record:
    """A classification record (open, closed or yes/no, whichever the task allows).

    Closed-ended questions show the label and up to ``max_options - 1`` other
    labels drawn from ``choices`` (the labels of the source); when ``choices``
    offers no alternative the record falls back to the open-ended style.
    """
    style = pick_style(task_name, rng, LABEL_STYLES, styles)
    options: list[str] = []
    if style == "closed":
        others = sorted({c for c in choices if c != label})
        if not others:
            if styles is not None and "open" not in styles:
                raise ValueError(f"a closed-ended {task_name!r} question about {label!r} needs other labels as "
                                 "options, but the source has only this one")
            style = "open"
        else:
            options = [str(label)] + rng.sample(others, min(len(others), max_options - 1))
            options.sort()
    extra = {"options": options} if options else {}
    return make_record(task_name, image, label, rng, style=style, **extra, **fields)


YES_WORDS = frozenset({"yes", "true", "1", "positive", "pos", "present", "msimut", "msih", "msi"})
NO_WORDS = frozenset({"no", "false", "0", "negative", "neg", "absent", "mss", "none"})


def yes_no_label(label: str, positive: Sequence[str] | None = None) -> str:
    """Map a dataset label to "yes"/"no" for a yes/no task.

    With ``positive`` the listed labels mean "yes" and every other label "no".
    Without it the label's words decide ("TIL_positive", "true", "1" -> yes;
    "negative", "MSS" -> no; Kather's "MSIMUT" -> yes); a label with no such
    word, or with both kinds, raises ValueError asking for ``positive``.
    """
    if positive is not None:
        return "yes" if label in positive else "no"
    words = set(re.split(r"[^a-z0-9]+", label.lower())) - {""}
    is_yes, is_no = bool(words & YES_WORDS), bool(words & NO_WORDS)
    if is_yes != is_no:
        return "yes" if is_yes else "no"
    raise ValueError(f"cannot tell whether label {label!r} means yes or no; name the positive label(s) "
                     "(positive=... / --positive)")


def classification_records(
    items: Sequence[tuple[Path, str, str | None]],
    tasks: Sequence[str],
    rng: random.Random,
    source: str,
    *,
    root: Path,
    positive: Sequence[str] | None = None,
    styles: Sequence[str] | None = None,
    max_options: int = 6,
) -> list[Record]:
    """Records of (image, label, organ or None) items for classification or yes/no tasks.

    Text tasks ask open or closed questions (options drawn from the labels of
    all items); yes/no tasks map labels with :func:`yes_no_label`. For the
    ``organ`` task the label is also the record's organ.
    """
    from omnipath_lvlm.data.tasks import get_task

    labels = sorted({label for _, label, _ in items})
    records = []
    for task_name in tasks:
        task = get_task(task_name)
        for image, label, organ in items:
            answer = yes_no_label(label, positive) if task.answer_format == "yes_no" else label
            if task_name == "organ":
                organ = label
            rel = image.relative_to(root) if image.is_relative_to(root) else Path(*image.parts[1:])
            records.append(label_record(task_name, image.resolve(), answer, rng, labels, styles=styles,
                                        max_options=max_options,
                                        id=f"{source}-{slug(rel.with_suffix('').as_posix())}-{task_name}",
                                        organ=organ, image_size=list(image_size(image)), source=source))
    return records
