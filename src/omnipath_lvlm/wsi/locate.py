"""Localisation on whole slides: boxes and outlines found in windows near the model's patch scale.

A model writes boxes relative to the picture it sees. Asked to find objects on a whole slide,
it sees a thumbnail in which a tumour is a few tokens wide, and nano's slide-relative boxes
do not land on the tumours (docs/RESULTS.md). Locating re-asks the question of *windows*
of a chosen side (``PGFCConfig.window_um``, micrometres, converted with the slide's mpp: by default
the field of view the model's patch tasks were trained at; nano's, 192 um, was chosen on validation
slides; without either, a window is the detail region's own token cell) and maps the windows'
answers to level-0 pixels:

* ``regions``: one window centred on each detail region PGFC chose (A_last decides where to look);
* ``tiles``: windows tiling the slide wherever a window holds tissue (every object, at one
  answer per window);
* ``slide``: nothing re-asked, the boxes are the ones written for the whole slide;
* ``auto``: ``regions`` when the slide answer holds boxes, outlines or masks, else ``slide``.

Windows are answered in batches, each as a patch-level question (the window alone, no
history). Boxes of one label found in *different* windows that overlap are one object cut by
the window edges and are joined into their union box (boxes within one window are kept apart:
the model separated them). Outlines (written polygons and generated masks) of one label are
united with shapely. The combined answer is written back in the format the windows used,
relative to the whole slide, so every consumer of an answer reads it unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from omnipath_lvlm.wsi.analysis import Detection, Outline
from omnipath_lvlm.wsi.pgfc import Box, build_conversation, region_box

LOCATE_MODES: tuple[str, ...] = ("slide", "regions", "tiles", "auto")


@dataclass
class WindowAnswers:
    """What the windows gave, in level-0 pixels, before and after joining."""

    windows: list[Box]  # level-0 boxes read, in the order asked
    answers: list[str]  # the model's answer per window
    detections: list[Detection] = field(default_factory=list)  # joined across windows
    outlines: list[Outline] = field(default_factory=list)  # united per label
    problems: list[str] = field(default_factory=list)  # parser repair notes, prefixed by the window
    kind: str = "boxes"  # "detections" | "boxes" | "polygons" | "masks": the windows' answer format


def resolved_mode(requested: str, has_regions: bool, has_localisation: bool) -> str:
    """The mode actually run: "slide", "regions" or "tiles".

    "auto" means "regions" when the slide answer holds boxes, outlines or masks
    (``has_localisation``); "regions" and "auto" fall back to "slide" when no detail region was
    read (PGFC mode none, or S = 0): there is nowhere to put a window.
    """
    if requested not in LOCATE_MODES:
        raise ValueError(f"locate must be one of {', '.join(LOCATE_MODES)}, got {requested!r}")
    if requested in ("slide", "tiles"):
        return requested
    if not has_regions or (requested == "auto" and not has_localisation):
        return "slide"
    return "regions"


# --------------------------------------------------------------------------- windows


def window_side(slide_size: tuple[int, int], mpp: float | None, window_um: float | None) -> float | None:
    """Level-0 side of a window: ``window_um / mpp`` (capped by the slide's shorter side), or None
    when either is unknown (then each window is a thumbnail token cell, the detail region itself)."""
    if window_um is None or not mpp:
        return None
    return float(min(window_um / float(mpp), *slide_size))


def region_windows(tokens: Sequence[tuple[int, int]], grid: int, slide_size: tuple[int, int],
                   side: float | None) -> list[Box]:
    """Windows of ``side`` centred on the chosen token cells (kept inside the slide; None: the cells), no duplicates."""
    boxes: list[Box] = []
    for token in tokens:
        box = region_box(token, grid, slide_size, side)
        if box not in boxes:
            boxes.append(box)
    return boxes


def tile_windows(tissue: np.ndarray, slide_size: tuple[int, int], side: float | None) -> list[Box]:
    """A regular grid of windows covering the slide, kept where a window holds a tissue cell.

    ``tissue``: (G, G) bool over the stretched thumbnail. ``side`` None: the tissue cells
    themselves. Otherwise columns (rows) of windows of ``side`` are spread evenly so the last one
    ends at the slide's edge; windows overlap slightly when the side does not divide it.
    """
    tissue = np.asarray(tissue, dtype=bool)
    rows, cols = tissue.shape
    width, height = slide_size
    if side is None:
        return [(c / cols * width, r / rows * height, (c + 1) / cols * width, (r + 1) / rows * height)
                for r, c in zip(*np.nonzero(tissue))]

    def starts(length: float) -> list[float]:
        n = max(1, math.ceil(length / side - 1e-9))
        return [0.0] if n == 1 else [i * (length - side) / (n - 1) for i in range(n)]

    boxes: list[Box] = []
    for top in starts(height):
        for left in starts(width):
            r1, r2 = int(top / height * rows), min(rows, math.ceil((top + side) / height * rows))
            c1, c2 = int(left / width * cols), min(cols, math.ceil((left + side) / width * cols))
            if tissue[r1:r2, c1:c2].any():
                boxes.append((left, top, left + side, top + side))
    return boxes


# --------------------------------------------------------------------------- answering


def ask_windows(model, processor, pictures: Sequence[Image.Image], question: str, max_new_tokens: int,
                batch_size: int = 4) -> list[tuple[str, list[np.ndarray]]]:
    """Each picture asked ``question`` as a patch (one image, pool 1): (answer text, masks (h, w) bool) per picture."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tokenizer = processor.tokenizer
    mask_id = processor.mask_token_id
    conversation = build_conversation(question)  # the window alone: "<image>\n" + question, as a patch record
    out: list[tuple[str, list[np.ndarray]]] = []
    for start in range(0, len(pictures), batch_size):
        chunk = list(pictures[start:start + batch_size])
        batch = processor([conversation] * len(chunk), images=chunk, image_pool=[1] * len(chunk))
        inputs = {name: value.to(model.device) for name, value in batch.items()}
        with torch.no_grad():
            result = model.generate_with_masks(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        for i in range(len(chunk)):
            out.append((processor.decode(result.new_tokens[i]), [m.numpy() for m in result.new_masks(i, mask_id)]))
    return out


# --------------------------------------------------------------------------- joining


def _shifted(box: Sequence[float], window: Box) -> Box:
    return (box[0] + window[0], box[1] + window[1], box[2] + window[0], box[3] + window[1])


def join_boxes(per_window: Sequence[Sequence[Detection]]) -> list[Detection]:
    """Boxes (level-0) of one label from different windows that overlap, joined into their union box.

    ``per_window[k]``: the detections of window k. Union-find over every overlapping pair of
    boxes with the same label from different windows; a group becomes its union box.
    """
    flat = [(k, d) for k, dets in enumerate(per_window) for d in dets]
    parent = list(range(len(flat)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (wi, a) in enumerate(flat):
        for j in range(i + 1, len(flat)):
            wj, b = flat[j]
            if wi == wj or a.label != b.label:
                continue
            if min(a.box[2], b.box[2]) > max(a.box[0], b.box[0]) and min(a.box[3], b.box[3]) > max(a.box[1], b.box[1]):
                parent[root(j)] = root(i)
    groups: dict[int, list[Detection]] = {}
    for i, (_, d) in enumerate(flat):
        groups.setdefault(root(i), []).append(d)
    joined = []
    for members in groups.values():
        boxes = np.array([m.box for m in members], dtype=np.float64)  # (M, 4)
        joined.append(Detection((float(boxes[:, 0].min()), float(boxes[:, 1].min()),
                                 float(boxes[:, 2].max()), float(boxes[:, 3].max())), members[0].label))
    return joined


def join_outlines(outlines: Sequence[Outline]) -> list[Outline]:
    """Outlines (level-0) of one label united into their union's polygons (exterior rings)."""
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    by_label: dict[str | None, list] = {}
    for outline in outlines:
        shape = Polygon(outline.points).buffer(0)  # buffer(0) repairs self-intersections
        if not shape.is_empty:
            by_label.setdefault(outline.label, []).append(shape)
    joined = []
    for label, shapes in by_label.items():
        union = unary_union(shapes)
        for part in getattr(union, "geoms", [union]):
            if part.geom_type == "Polygon" and not part.is_empty:
                joined.append(Outline([(float(x), float(y)) for x, y in list(part.exterior.coords)[:-1]], label))
    return joined


def answer_kind(answers: Sequence[str], masks: Sequence[Sequence[np.ndarray]]) -> str:
    """The format the windows answered in: detections, boxes, polygons or masks (boxes when none shows)."""
    text = " ".join(answers)
    if "<detection_result" in text:
        return "detections"
    if "<bbox" in text:
        return "boxes"
    if "<contour_list" in text or "<polygon" in text:
        return "polygons"
    return "masks" if any(len(m) for m in masks) else "boxes"


def combine(windows: Sequence[Box], replies: Sequence[tuple[str, list[np.ndarray]]]) -> WindowAnswers:
    """Map each window's boxes, polygons and masks to level-0 pixels and join them across windows."""
    from omnipath_lvlm.wsi.pipeline import mask_outlines, parse_answer

    if len(windows) != len(replies):
        raise ValueError(f"{len(windows)} windows but {len(replies)} answers")
    per_window: list[list[Detection]] = []
    outlines: list[Outline] = []
    problems: list[str] = []
    for k, (window, (text, masks)) in enumerate(zip(windows, replies)):
        size = (window[2] - window[0], window[3] - window[1])
        detections, polygons, notes = parse_answer(text, size)
        problems += [f"window {k}: {note}" for note in notes]
        per_window.append([Detection(_shifted(d.box, window), d.label) for d in detections])
        for outline in polygons + mask_outlines(masks, size):
            outlines.append(Outline([(x + window[0], y + window[1]) for x, y in outline.points], outline.label))
    return WindowAnswers(
        windows=list(windows), answers=[text for text, _ in replies], detections=join_boxes(per_window),
        outlines=join_outlines(outlines), problems=problems,
        kind=answer_kind([t for t, _ in replies], [m for _, m in replies]),
    )


def answer_text(found: WindowAnswers, slide_size: tuple[int, int]) -> str:
    """The joined boxes or outlines as one answer relative to the whole slide, in the windows' format."""
    from omnipath_lvlm.data.formats import format_boxes, format_detections, format_polygons
    from omnipath_lvlm.wsi.pgfc import relative_box

    width, height = slide_size
    boxes = [relative_box(d.box, slide_size) for d in found.detections]
    if found.kind == "detections":
        by_label: dict[str, list[Box]] = {}
        for d, box in zip(found.detections, boxes):
            by_label.setdefault(d.label or "object", []).append(box)
        return format_detections(by_label)
    if found.kind in ("polygons", "masks"):
        polygons = [[(min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0)) for x, y in o.points]
                    for o in found.outlines if len(o.points) >= 3]
        return format_polygons(polygons)
    return format_boxes(boxes)
