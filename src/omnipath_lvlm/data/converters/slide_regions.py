"""Slide-level region records shared by the QuPath GeoJSON and ASAP XML converters.

Annotated regions (shapely polygons in level-0 pixels) of one whole-slide image
become records of region tasks (``cancer_detection``, ``cancer_segmentation``,
...) about the whole slide: ``slide`` is the slide path, ``image_size`` its
level-0 size and every box / polygon is relative to that size, i.e. relative to
any thumbnail of the slide.

* ``boxes`` answers: one box per region;
* ``polygons`` answers: each region's outer boundary, at most 50 vertices
  (the text format has no holes);
* ``mask`` answers: a PNG of all regions (holes kept) at thumbnail size,
  longest side ``mask_size``, written to ``out_dir/<source>/``.

With ``detail_crops > 0`` the largest regions are also cut from the slide at
the resolution that fits ``detail_size`` pixels (PNG crops in ``out_dir``) and
listed in every record's ``regions``: the high-resolution detail views used to
train prompt-guided detail feature completion.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import Polygon

from omnipath_lvlm.data.converters.common import (
    BOX_STYLES,
    REGION_STYLES,
    SLIDE_SUFFIXES,
    find_companion,
    index_by_stem,
    pick_style,
    relative_boxes,
    relative_polygon,
    save_png,
    simplify_outline,
    slug,
    tasks_with_styles,
)
from omnipath_lvlm.data.records import Record, make_record

DEFAULT_TASKS = ("cancer_detection", "cancer_segmentation")


def region_tasks() -> tuple[str, ...]:
    """Tasks whose answers are boxes, polygons or masks of regions (nucleus tasks excluded)."""
    return tuple(t for t in tasks_with_styles(BOX_STYLES + REGION_STYLES) if not t.startswith("nucleus_"))


def slide_dimensions(path: str | Path) -> tuple[int, int]:
    """Level-0 (width, height) of a whole-slide image."""
    from omnipath_lvlm.wsi.slide import open_slide

    with open_slide(path) as slide:
        width, height = slide.dimensions
    return int(width), int(height)


def as_polygons(geometry) -> list[Polygon]:
    """The non-empty polygons of a shapely geometry, repaired when invalid."""
    valid = shapely.make_valid(geometry) if not geometry.is_valid else geometry
    parts = getattr(valid, "geoms", [valid])
    out = []
    for part in parts:
        if part.geom_type == "Polygon" and part.area > 0:
            out.append(part)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            out += as_polygons(part)
    return out


def region_records(
    slide: Path,
    regions: Sequence[Polygon],
    tasks: Sequence[str],
    rng: random.Random,
    out_dir: Path,
    source: str,
    *,
    slide_size: tuple[int, int] | None = None,
    styles: Sequence[str] | None = None,
    max_vertices: int = 50,
    mask_size: int = 1024,
    detail_crops: int = 0,
    detail_size: int = 1024,
    organ: str | None = None,
) -> list[Record]:
    """One record per task about ``slide`` from its level-0 ``regions``."""
    from omnipath_lvlm.data.geometry import polygons_to_mask

    width, height = slide_size or slide_dimensions(slide)
    stem = slug(slide.stem)
    regions = sorted(regions, key=lambda g: (g.bounds[1], g.bounds[0]))
    details = _detail_crops(slide, regions, (width, height), detail_crops, detail_size, out_dir / source, stem)
    common = {"organ": organ, "image_size": [width, height], "source": source, "regions": details}
    records = []
    for task in tasks:
        style = pick_style(task, rng, BOX_STYLES + REGION_STYLES, styles)
        if style == "boxes":
            answer: object = relative_boxes([g.bounds for g in regions], width, height)
        elif style == "polygons":
            answer = [relative_polygon(simplify_outline(np.asarray(g.exterior.coords), max_vertices), width, height)
                      for g in regions]
        else:  # mask at thumbnail size, holes kept
            scale = mask_size / max(width, height)
            shape = (max(1, round(height * scale)), max(1, round(width * scale)))
            filled = polygons_to_mask([np.asarray(g.exterior.coords) * scale for g in regions], shape)
            holes = polygons_to_mask([np.asarray(r.coords) * scale for g in regions for r in g.interiors], shape)
            answer = str(save_png(filled & ~holes, out_dir / source / f"{stem}_{task}_mask.png").resolve())
        records.append(make_record(task, None, answer, rng, style=style, id=f"{source}-{stem}-{task}",
                                   slide=str(slide.resolve()), **common))
    return records


def _detail_crops(slide: Path, regions: Sequence[Polygon], size: tuple[int, int], count: int, detail_size: int,
                  out: Path, stem: str) -> list[dict[str, object]]:
    """Crops of the ``count`` largest regions (10 % margin), longest side at most ``detail_size``, as PNG."""
    from omnipath_lvlm.wsi.slide import open_slide

    if count <= 0 or not regions:
        return []
    width, height = size
    details = []
    with open_slide(slide) as handle:
        for k, region in enumerate(sorted(regions, key=lambda g: -g.area)[:count]):
            x1, y1, x2, y2 = region.bounds
            margin = 0.1 * max(x2 - x1, y2 - y1)
            x1, y1 = max(0, int(x1 - margin)), max(0, int(y1 - margin))
            x2, y2 = min(width, int(np.ceil(x2 + margin))), min(height, int(np.ceil(y2 + margin)))
            if x2 <= x1 or y2 <= y1:
                continue
            scale = min(1.0, detail_size / max(x2 - x1, y2 - y1))
            out_size = (max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale)))
            crop = handle.read_region((x1, y1), (x2 - x1, y2 - y1), out_size=out_size)  # RGB
            path = save_png(np.asarray(crop.convert("RGB")), out / f"{stem}_detail{k}.png")
            box = [x1 / width, y1 / height, x2 / width, y2 / height]
            details.append({"image": str(path.resolve()), "box": [round(v, 6) for v in box]})
    return details


def convert_slide_annotations(
    path: Path,
    out_dir: Path,
    rng_seed: int,
    tasks: Sequence[str] | None,
    *,
    source: str,
    suffixes: Sequence[str],
    reader,
    slide: Path | None = None,
    slide_size: tuple[int, int] | None = None,
    **options: object,
) -> list[Record]:
    """Run ``reader(annotation_file) -> list[Polygon]`` on one file or every file below a folder.

    Each annotation file is paired with ``slide`` when given, else with the slide
    file of the same stem (anywhere below a ``path`` folder; for a single file,
    beside it or in a sibling folder); ``options`` go to :func:`region_records`.
    """
    from omnipath_lvlm.data.converters.common import resolve_tasks

    chosen = resolve_tasks(tasks, DEFAULT_TASKS, region_tasks(), source)
    rng = random.Random(rng_seed)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
    if not files:
        raise FileNotFoundError(f"no {source} annotation files ({', '.join(suffixes)}) under {path}")
    if slide is not None and len(files) > 1:
        raise ValueError(f"one slide was given for {len(files)} annotation files; give a single file or let "
                         "each annotation find the slide of the same name")
    slides = index_by_stem(path, SLIDE_SUFFIXES) if path.is_dir() else {}
    records: list[Record] = []
    for annotation in files:
        slide_file = slide or (slides.get(annotation.stem) if path.is_dir() else find_companion(annotation,
                                                                                               SLIDE_SUFFIXES))
        if slide_file is None:
            raise FileNotFoundError(f"no slide file named {annotation.stem}.* ({', '.join(SLIDE_SUFFIXES)}) found "
                                    f"for {annotation}; pass the slide explicitly")
        records += region_records(Path(slide_file), reader(annotation), chosen, rng, out_dir, source,
                                  slide_size=slide_size, **options)
    return records
