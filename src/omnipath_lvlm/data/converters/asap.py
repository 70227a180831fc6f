"""ASAP XML annotations of a whole-slide image (e.g. CAMELYON) -> slide-level region records.

Layout::

    <ASAP_Annotations><Annotations>
      <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
        <Coordinates><Coordinate Order="0" X="..." Y="..."/>...</Coordinates>
      </Annotation>
    </Annotations><AnnotationGroups>...</AnnotationGroups></ASAP_Annotations>

Coordinates are level-0 pixels, sorted by ``Order``. Polygon, Spline and
Rectangle annotations are regions (dots and point sets are ignored).
Annotations of the ``exclude_groups`` (CAMELYON16's "_2": non-tumour areas
inside tumour outlines) are cut out of the other regions. ``classes`` keeps
only annotations whose ``PartOfGroup`` is listed (case-insensitive).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

from shapely import unary_union
from shapely.geometry import Polygon

from omnipath_lvlm.data.converters.slide_regions import as_polygons, convert_slide_annotations
from omnipath_lvlm.data.records import Record

SOURCE = "asap"
SUFFIXES = (".xml",)
REGION_TYPES = ("polygon", "spline", "rectangle")
EXCLUDE_GROUPS = ("_2", "exclusion")


def read_asap_xml(path: str | Path, classes: Sequence[str] | None = None,
                  exclude_groups: Sequence[str] = EXCLUDE_GROUPS) -> list[Polygon]:
    """Region polygons (level-0 pixels) of an ASAP XML file, exclusions cut out."""
    root = ET.parse(path).getroot()
    if root.tag != "ASAP_Annotations":
        raise ValueError(f"{path}: expected an <ASAP_Annotations> root element, found <{root.tag}>")
    wanted = None if classes is None else {c.lower() for c in classes}
    excluded = {g.lower() for g in exclude_groups}
    keep: list[Polygon] = []
    cut: list[Polygon] = []
    for annotation in root.iter("Annotation"):
        if annotation.get("Type", "").lower() not in REGION_TYPES:
            continue
        group = annotation.get("PartOfGroup", "")
        try:
            coordinates = sorted(annotation.iter("Coordinate"), key=lambda c: float(c.get("Order", 0)))
            points = [(float(c.attrib["X"]), float(c.attrib["Y"])) for c in coordinates]
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: annotation {annotation.get('Name')!r} has an unreadable coordinate "
                             f"({exc})") from None
        if len(points) < 3:
            continue
        if group.lower() in excluded:
            cut += as_polygons(Polygon(points))
        elif wanted is None or group.lower() in wanted:
            keep += as_polygons(Polygon(points))
    if cut:
        holes = unary_union(cut)
        keep = [part for region in keep for part in as_polygons(region.difference(holes))]
    return keep


def convert_asap(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
    *,
    slide: str | Path | None = None,
    slide_size: tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
    exclude_groups: Sequence[str] = EXCLUDE_GROUPS,
    styles: Sequence[str] | None = None,
    detail_crops: int = 0,
    detail_size: int = 1024,
    mask_size: int = 1024,
    max_vertices: int = 50,
    organ: str | None = None,
) -> list[Record]:
    """ASAP XML file (or folder of them) + slide(s) -> cancer_detection / cancer_segmentation records.

    The keyword options are those of :func:`omnipath_lvlm.data.converters.slide_regions.region_records`.
    """
    return convert_slide_annotations(
        Path(path), Path(out_dir), rng_seed, None if tasks is None else list(tasks), source=SOURCE,
        suffixes=SUFFIXES, reader=lambda f: read_asap_xml(f, classes, exclude_groups),
        slide=None if slide is None else Path(slide), slide_size=slide_size, styles=styles,
        detail_crops=detail_crops, detail_size=detail_size, mask_size=mask_size, max_vertices=max_vertices,
        organ=organ)
