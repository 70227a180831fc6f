"""MoNuSeg: H&E images with nucleus outlines in Aperio ImageScope XML -> nucleus detection.

Layout (as distributed): ``Tissue Images/<name>.tif`` and ``Annotations/<name>.xml``;
each XML holds ``<Annotations><Annotation><Regions><Region><Vertices><Vertex X= Y=/>``,
one Region per nucleus, vertices in pixel coordinates of the image. Images and
annotations are paired by file stem anywhere below the given folder (for a
single XML file: beside it or in a sibling folder).

Each nucleus becomes the bounding box of its outline. The 1000 x 1000 images
hold hundreds of nuclei, so ``tile_size`` optionally cuts them into tiles (saved
as PNG in ``out_dir``); a nucleus belongs to a tile when at least
``min_visible`` of its area lies inside, and its box is that of the visible part.
"""
from __future__ import annotations

import random
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import shapely
from PIL import Image
from shapely.geometry import Polygon, box

from omnipath_lvlm.data.converters.common import (
    IMAGE_SUFFIXES,
    find_companion,
    image_size,
    index_by_stem,
    nucleus_records,
    resolve_tasks,
    save_png,
    tile_origins,
)
from omnipath_lvlm.data.records import Record

SOURCE = "monuseg"
TASKS = ("nucleus_detection",)


def read_monuseg_xml(path: str | Path) -> list[np.ndarray]:
    """Nucleus outlines of one Aperio XML file: a list of (K, 2) float arrays of x, y pixels.

    Regions with fewer than 3 vertices are skipped. Raises ValueError when the
    file is not an Aperio ``<Annotations>`` document.
    """
    root = ET.parse(path).getroot()
    if root.tag != "Annotations":
        raise ValueError(f"{path}: expected an Aperio <Annotations> root element, found <{root.tag}>")
    polygons = []
    for region in root.iter("Region"):
        points = [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
        if len(points) >= 3:
            polygons.append(np.asarray(points, dtype=float))  # (K, 2)
    return polygons


def convert_monuseg(
    path: str | Path,
    out_dir: str | Path,
    rng_seed: int = 0,
    tasks: Iterable[str] | None = None,
    *,
    tile_size: int | None = None,
    min_visible: float = 0.5,
) -> list[Record]:
    """MoNuSeg folder (or one XML file) -> nucleus_detection records, one per image or tile."""
    chosen = resolve_tasks(tasks, TASKS, TASKS, SOURCE)
    rng = random.Random(rng_seed)
    path, out = Path(path), Path(out_dir)
    if path.is_file():
        xml_files = [path]
        companion = find_companion(path, IMAGE_SUFFIXES)
        images = {} if companion is None else {path.stem: companion}
    else:
        xml_files = sorted(path.rglob("*.xml"))
        images = index_by_stem(path, IMAGE_SUFFIXES)
    if not xml_files:
        raise FileNotFoundError(f"no MoNuSeg XML annotation files under {path}")

    records: list[Record] = []
    for xml_file in xml_files:
        image = images.get(xml_file.stem)
        if image is None:
            warnings.warn(f"MoNuSeg annotation {xml_file} has no image with the same name; skipped", stacklevel=2)
            continue
        outlines = read_monuseg_xml(xml_file)
        if tile_size is None:
            size = image_size(image)
            boxes = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in outlines])
            records += nucleus_records(image.resolve(), size, {"nucleus": boxes.reshape(-1, 4)}, chosen, rng,
                                       SOURCE, xml_file.stem)
        else:
            records += _tile_records(image, outlines, tile_size, min_visible, chosen, rng, out / SOURCE)
    return records


def _tile_records(image: Path, outlines: list[np.ndarray], tile: int, min_visible: float,
                  tasks: tuple[str, ...], rng: random.Random, out: Path) -> list[Record]:
    with Image.open(image) as im:
        pixels = np.asarray(im.convert("RGB"))  # (H, W, 3)
    height, width = pixels.shape[:2]
    shapes = [shapely.make_valid(Polygon(p)) for p in outlines]
    records = []
    for y0 in tile_origins(height, tile):
        for x0 in tile_origins(width, tile):
            th, tw = min(tile, height), min(tile, width)
            window = box(x0, y0, x0 + tw, y0 + th)
            boxes = []
            for shape in shapes:
                if shape.area <= 0 or not shape.intersects(window):
                    continue
                visible = shape.intersection(window)
                if visible.area >= min_visible * shape.area:
                    x1, y1, x2, y2 = visible.bounds
                    boxes.append([x1 - x0, y1 - y0, x2 - x0, y2 - y0])
            stem = f"{image.stem}_x{x0}_y{y0}"
            crop = save_png(pixels[y0:y0 + th, x0:x0 + tw], out / f"{stem}.png")
            records += nucleus_records(crop.resolve(), (tw, th), {"nucleus": np.reshape(boxes, (-1, 4))}, tasks,
                                       rng, SOURCE, stem)
    return records
