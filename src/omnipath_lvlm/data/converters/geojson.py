"""QuPath GeoJSON annotations of a whole-slide image -> slide-level region records.

QuPath exports a ``FeatureCollection`` (older versions: a bare list of features
or one feature) whose features carry ``Polygon`` / ``MultiPolygon`` geometries
in level-0 pixels and the class in ``properties.classification.name``. Other
geometry types (points, lines) are ignored. ``classes`` keeps only features of
those classes (case-insensitive); by default every polygon feature is a target
region. Records are built by :mod:`omnipath_lvlm.data.converters.slide_regions`.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from shapely.geometry import Polygon, shape

from omnipath_lvlm.data.converters.slide_regions import as_polygons, convert_slide_annotations
from omnipath_lvlm.data.records import Record

SOURCE = "geojson"
SUFFIXES = (".geojson", ".json")


def feature_class(feature: dict) -> str | None:
    """The QuPath class name of a feature (``properties.classification.name``), if any."""
    classification = (feature.get("properties") or {}).get("classification")
    if isinstance(classification, dict):
        name = classification.get("name")
        return name if isinstance(name, str) else None
    return classification if isinstance(classification, str) else None


def read_geojson(path: str | Path, classes: Sequence[str] | None = None) -> list[Polygon]:
    """Polygons (level-0 pixels) of the polygon features of a QuPath GeoJSON file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise ValueError(f"{path}: expected a GeoJSON FeatureCollection, Feature or list of features")
    wanted = None if classes is None else {c.lower() for c in classes}
    polygons: list[Polygon] = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
            raise ValueError(f"{path}: feature {i} has no geometry object")
        geometry = feature["geometry"]
        if geometry.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        name = feature_class(feature)
        if wanted is not None and (name is None or name.lower() not in wanted):
            continue
        try:
            polygons += as_polygons(shape(geometry))
        except (ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"{path}: feature {i} has an unreadable {geometry['type']} ({exc})") from None
    return polygons


def convert_geojson(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
    *,
    slide: str | Path | None = None,
    slide_size: tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
    styles: Sequence[str] | None = None,
    detail_crops: int = 0,
    detail_size: int = 1024,
    mask_size: int = 1024,
    max_vertices: int = 50,
    organ: str | None = None,
) -> list[Record]:
    """GeoJSON file (or folder of them) + slide(s) -> cancer_detection / cancer_segmentation records.

    The keyword options are those of :func:`omnipath_lvlm.data.converters.slide_regions.region_records`.
    """
    return convert_slide_annotations(
        Path(path), Path(out_dir), rng_seed, None if tasks is None else list(tasks), source=SOURCE,
        suffixes=SUFFIXES, reader=lambda f: read_geojson(f, classes), slide=None if slide is None else Path(slide),
        slide_size=slide_size, styles=styles, detail_crops=detail_crops, detail_size=detail_size,
        mask_size=mask_size, max_vertices=max_vertices, organ=organ)
