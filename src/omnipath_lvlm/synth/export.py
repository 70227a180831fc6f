"""Export SynthPath patches and slides as instruction datasets (train / val / test JSONL).

Seeds and splits
----------------
Split ``s`` (train = 0, val = 1, test = 2) of an export with base seed ``S``
uses the item seeds ``(3 * S + s) * 2**20 + i`` for ``i < n`` (patches and
slides draw from the same ranges but are different generators).  The blocks
of different (S, s) never overlap, so a test seed is never a training seed of
any export, and val/test stay fixed when the training set grows.

Layout of ``out_dir``::

    train.jsonl val.jsonl test.jsonl   records (paths relative to out_dir)
    synthpath.json                     what was generated: seeds, sizes, counts
    images/   patch PNGs and the crops nucleus tasks are asked on
    masks/    target masks of segmentation records (PNG, 0/255)
    slides/   slide-<seed>.tiff + .geojson + .json, thumbnails, detail crops

Patch records ask every task the patch has ground truth for.  Nucleus
detection / classification are asked on a crop small enough to hold at most
``max_boxes`` nuclei (a whole 384-pixel patch can hold several hundred), with
boxes relative to the crop.  Slide records set ``slide`` (the dataset reads the
slide itself); the thumbnail PNG the model sees is ``gt["thumbnail"]`` and
``regions`` are high-resolution crops (two on tumour, two elsewhere on tissue)
with their boxes relative to the slide.
"""
from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
from numpy.typing import NDArray

from .noise import derive_key
from .patches import PATCH_UM, SynthPatch, generate_patch
from .slide import SlideTruth, render_region, write_slide
from .taxonomy import (
    DISEASES,
    GRADE_NAMES,
    LYMPH_NODE_ORGAN,
    NORMAL_DISEASE,
    NUCLEUS_CLASSES,
    ORGANS,
    SUBTYPES,
    TISSUE_TYPES,
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: tuple[float, ...] = (0.8, 0.1, 0.1)
SEED_BLOCK = 2**20  # seeds per (base seed, split) block
SLIDE_TASKS: tuple[str, ...] = (
    "organ", "disease", "subtype", "grade", "lymph_node_metastasis", "cancer_detection", "cancer_segmentation",
)
_SEGMENTATION = ("nerve_segmentation", "cancer_in_nerve_segmentation", "cancer_in_lymph_node_segmentation",
                 "cancer_segmentation")
_BOX_TASKS = ("vessel_detection", "nerve_detection", "lymph_node_detection", "cancer_nuclei_in_vessel",
              "cancer_detection")


def split_seeds(seed: int, split: str, n: int) -> range:
    """The item seeds of `n` items of `split` for base seed `seed` (disjoint across splits and base seeds)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    if seed < 0:
        raise ValueError(f"base seed must be >= 0, got {seed}")
    if n > SEED_BLOCK:
        raise ValueError(f"at most {SEED_BLOCK} items per split, {n} requested")
    start = (seed * len(SPLITS) + SPLITS.index(split)) * SEED_BLOCK
    return range(start, start + n)


def split_counts(n: int) -> dict[str, int]:
    """How many of `n` items go to each split (80 / 10 / 10, at least one val and test item when n >= 3)."""
    if n < 3:
        return {"train": n, "val": 0, "test": 0}
    val = max(1, round(n * SPLIT_FRACTIONS[1]))
    test = max(1, round(n * SPLIT_FRACTIONS[2]))
    return {"train": n - val - test, "val": val, "test": test}


def _options(task: str, organ: str | None) -> list[str]:
    """The answer options of a closed-ended question about this world."""
    if task == "organ":
        return [*ORGANS, LYMPH_NODE_ORGAN]
    if task == "disease":
        return [*DISEASES.values(), NORMAL_DISEASE]
    if task == "subtype":
        return list(SUBTYPES[organ].values()) if organ in SUBTYPES else []
    if task == "grade":
        return list(GRADE_NAMES.values())
    if task == "tissue_type":
        return list(TISSUE_TYPES)
    return []


def _save_png(path: Path, rgb: NDArray[np.uint8]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def _save_mask(path: Path, mask: NDArray[np.bool_]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255):
        raise OSError(f"could not write {path}")
    return path


def _relative_boxes(boxes: Iterable[tuple[float, float, float, float]], w: float, h: float) -> list[list[float]]:
    from omnipath_lvlm.data.geometry import to_relative

    return [[round(float(v), 4) for v in to_relative(np.asarray(b, float), w, h)] for b in boxes]


def _mask_polygons(mask: NDArray[np.bool_]) -> list[list[list[float]]]:
    from omnipath_lvlm.data.geometry import mask_to_polygons, to_relative

    h, w = mask.shape
    polys = mask_to_polygons(mask, max_vertices=50, min_area=max(4.0, 0.0005 * mask.size))
    return [to_relative(p, w, h).round(4).tolist() for p in polys]


def _nucleus_crop(patch: SynthPatch, rng: random.Random, max_boxes: int) -> tuple[NDArray[np.uint8], list, list[str]] | None:
    """A square crop of the patch with at most `max_boxes` visible nuclei: (image, boxes in crop px, classes)."""
    size = patch.size
    for side in (size // 2, size // 3, size // 4, size // 6):
        if side < 32:
            break
        x0, y0 = rng.randrange(0, size - side + 1), rng.randrange(0, size - side + 1)
        boxes, classes = [], []
        for o in patch.nuclei:
            m = o.full_mask((size, size))[y0 : y0 + side, x0 : x0 + side]
            ys, xs = np.nonzero(m)
            if xs.size >= 4:
                boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
                classes.append(o.cls)
        if len(boxes) <= max_boxes:
            return patch.image[y0 : y0 + side, x0 : x0 + side].copy(), boxes, classes
    return None


def patch_records(patch: SynthPatch, out_dir: Path, rng: random.Random, tasks: set[str] | None,
                  max_boxes: int = 120) -> list[Any]:
    """All records of one patch (images and masks are written under out_dir)."""
    from omnipath_lvlm.data.records import make_record
    from omnipath_lvlm.data.tasks import get_task

    name = f"patch-{patch.seed}"
    image_path = _save_png(out_dir / "images" / f"{name}.png", patch.image)
    size = patch.size
    organ = patch.labels.get("organ")
    common = dict(source="synthpath", organ=organ, image_size=[size, size])
    out = []
    for task_name in patch.tasks:
        if tasks is not None and task_name not in tasks:
            continue
        task = get_task(task_name)
        gt: dict[str, Any] = {"seed": patch.seed, "kind": patch.kind}
        rid = f"synthpath-{name}-{task_name}"
        if task_name in patch.labels:
            answer = patch.labels[task_name]
            style = rng.choice(task.styles)
            options = _options(task_name, patch.scene.organ)
            if style == "closed" and (answer not in options or len(options) < 2):
                style = "open"
            extra = {"options": options} if style == "closed" else {}
            out.append(make_record(task_name, image_path, answer, rng, style=style, gt=gt, id=rid, **common, **extra))
        elif task_name in ("nucleus_detection", "nucleus_classification"):
            crop = _nucleus_crop(patch, rng, max_boxes)
            if crop is None:
                continue
            img, boxes, classes = crop
            side = img.shape[0]
            crop_path = _save_png(out_dir / "images" / f"{name}-{task_name}.png", img)
            rel = _relative_boxes(boxes, side, side)
            ccommon = {**common, "image_size": [side, side]}
            if task_name == "nucleus_detection":
                out.append(make_record(task_name, crop_path, rel, rng, style="boxes", gt=gt, id=rid, **ccommon))
            else:
                det = {c: [b for b, k in zip(rel, classes) if k == c] for c in NUCLEUS_CLASSES}
                out.append(make_record(task_name, crop_path, det, rng, style="detections", gt=gt, id=rid, **ccommon))
        elif task_name in _BOX_TASKS:
            target = patch.target(task_name)
            rel = _relative_boxes(target.boxes, size, size)
            out.append(make_record(task_name, image_path, rel, rng, style="boxes", gt=gt, id=rid, **common))
        elif task_name in _SEGMENTATION:
            mask = patch.target(task_name).mask
            mask_path = _save_mask(out_dir / "masks" / f"{name}-{task_name}.png", mask)
            gt["mask"] = str(mask_path)
            style = rng.choice(task.styles) if mask.any() else "polygons"
            answer: Any = str(mask_path) if style == "mask" else _mask_polygons(mask)
            out.append(make_record(task_name, image_path, answer, rng, style=style, gt=gt, id=rid, **common))
    return out


def _thumbnail(truth: SlideTruth, longest: int) -> NDArray[np.uint8]:
    """The slide's thumbnail page resized so that its longest side is `longest` pixels."""
    with tifffile.TiffFile(truth.path) as tf:
        page = tf.pages[1] if len(tf.pages) > 1 else tf.pages[0]
        img = page.asarray()
    w, h = truth.level_dimensions[0]
    scale = longest / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _detail_boxes(truth: SlideTruth, rng: random.Random, side: int) -> list[tuple[int, int]]:
    """Top-left corners of detail crops: two on tumours, two on other annotated tissue."""
    w, h = truth.level_dimensions[0]
    corners = []
    tumours = truth.regions("Tumor")
    others = [a for a in truth.annotations if a.cls in ("Vessel", "Nerve", "Lymph node")]
    for group in (tumours, tumours, others, others):
        if not group:
            continue
        x1, y1, x2, y2 = group[rng.randrange(len(group))].box()
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x = int(np.clip(cx - side / 2, 0, max(0, w - side)))
        y = int(np.clip(cy - side / 2, 0, max(0, h - side)))
        corners.append((x, y))
    return corners


def slide_records(truth: SlideTruth, out_dir: Path, rng: random.Random, tasks: set[str] | None,
                  thumbnail_size: int = 384, detail_size: int = 512) -> list[Any]:
    """All records of one slide (thumbnail, detail crops and masks are written next to it)."""
    from omnipath_lvlm.data.records import make_record
    from omnipath_lvlm.data.tasks import get_task

    w, h = truth.level_dimensions[0]
    stem = truth.path.stem
    folder = truth.path.parent
    thumb = _thumbnail(truth, thumbnail_size)
    thumb_path = _save_png(folder / f"{stem}-thumbnail.png", thumb)
    side = min(detail_size, w, h)
    regions = []
    for i, (x, y) in enumerate(_detail_boxes(truth, rng, side)):
        crop_path = _save_png(folder / f"{stem}-detail{i}.png", render_region(truth, x, y, side, side))
        regions.append({"image": str(crop_path), "box": _relative_boxes([(x, y, x + side, y + side)], w, h)[0]})
    tumours = truth.regions("Tumor")
    tumour_boxes = _relative_boxes([a.box() for a in tumours], w, h)
    tumour_polys = [np.clip(a.array()[:: max(1, len(a.polygon) // 40)] / [w, h], 0, 1).round(4).tolist() for a in tumours]
    base_gt = {
        "seed": truth.params.seed,
        "thumbnail": thumb_path.relative_to(out_dir).as_posix(),
        "grade": truth.labels["grade"],
        "subtype": truth.labels["subtype"],
        "tumour_boxes": tumour_boxes,
    }
    common = dict(slide=str(truth.path), regions=regions, source="synthpath", organ=truth.labels["organ"],
                  image_size=[w, h])
    out = []
    for task_name in SLIDE_TASKS:
        if tasks is not None and task_name not in tasks:
            continue
        task = get_task(task_name)
        gt = dict(base_gt)
        rid = f"synthpath-{stem}-{task_name}"
        if task_name in truth.labels:
            answer = truth.labels[task_name]
            style = rng.choice(task.styles)
            options = _options(task_name, truth.labels["organ"])
            if style == "closed" and answer not in options:
                style = "open"
            extra = {"options": options} if style == "closed" else {}
            out.append(make_record(task_name, None, answer, rng, style=style, gt=gt, id=rid, **common, **extra))
        elif task_name == "cancer_detection":
            out.append(make_record(task_name, None, tumour_boxes, rng, style="boxes", gt=gt, id=rid, **common))
        elif task_name == "cancer_segmentation":
            mask = np.zeros(thumb.shape[:2], np.uint8)
            scale = np.array([thumb.shape[1] / w, thumb.shape[0] / h])
            for a in tumours:
                cv2.fillPoly(mask, [np.round(a.array() * scale * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
            mask_path = _save_mask(folder / f"{stem}-tumour-mask.png", mask > 0)
            gt["mask"] = str(mask_path)
            gt["tumour_polygons"] = tumour_polys
            out.append(make_record(task_name, None, tumour_polys, rng, style="polygons", gt=gt, id=rid, **common))
    return out


LABEL_STYLES = ("open", "closed")  # the answer styles more_questions re-asks a label in


def more_questions(records: Iterable[Any], tasks: Iterable[str], n: int, seed: int = 0) -> list[Any]:
    """``n`` more questions per record of ``tasks``: same images and answer, fresh prompt and style.

    Slide and patch exports ask each label (grade, subtype, ...) once per item. A small model
    sees each slide label a handful of times in a whole training run, too few to learn to read
    it from the detail regions; re-asking it in other words and styles multiplies that signal
    without rendering anything. Only open and closed records are re-asked; closed questions list
    the same options the exporter uses (``_options``), and a label without options stays open.
    New ids are ``<id>-q<k>`` (k = 1..n), and the choice of prompt and style is seeded by
    ``seed`` and the record id, so the output does not depend on the order of ``records``.
    """
    from omnipath_lvlm.data.records import make_record
    from omnipath_lvlm.data.tasks import get_task

    if n < 0:
        raise ValueError(f"n must be >= 0 more questions per record, got {n}")
    wanted = set(tasks)
    for name in wanted:
        get_task(name)  # KeyError naming the known tasks
    out = []
    for record in records:
        if record.task not in wanted or record.answer_style not in LABEL_STYLES:
            continue
        task = get_task(record.task)
        label = record.gt["label"]
        options = _options(record.task, record.organ)
        gt = {k: v for k, v in record.gt.items() if k not in ("label", "letter")}
        fields_ = dict(slide=record.slide, region=record.region, regions=record.regions, source=record.source,
                       organ=record.organ, image_size=record.image_size)
        rng = random.Random(derive_key(seed, "more-questions", record.id))
        for k in range(1, n + 1):
            style = rng.choice([s for s in task.styles if s in LABEL_STYLES])
            if style == "closed" and label not in options:
                style = "open"
            extra = {"options": options} if style == "closed" else {}
            out.append(make_record(record.task, record.image, label, rng, style=style, gt=gt,
                                   id=f"{record.id}-q{k}", **fields_, **extra))
    return out


def _window_corners(truth: SlideTruth, rng: random.Random, side: int, tissue: NDArray[np.bool_],
                    count: int) -> list[tuple[int, int, bool]]:
    """Top-left corners of `count` windows, alternately holding a whole tumour and no tumour: (x, y, has_tumour).

    A tumour window puts a random tumour at a random place inside it (whole when it fits); a
    tumour-free window is drawn where the window touches no tumour and its middle is tissue
    (`tissue`: (G, G) bool over the stretched thumbnail). Windows that cannot be placed are skipped.
    """
    w, h = truth.level_dimensions[0]
    boxes = [a.box() for a in truth.regions("Tumor")]
    rows, cols = tissue.shape
    out = []
    for k in range(count):
        if k % 2 == 0 and boxes:
            x1, y1, x2, y2 = boxes[rng.randrange(len(boxes))]
            lo_x, hi_x = (x2 - side, x1) if x2 - x1 <= side else (x1, x2 - side)
            lo_y, hi_y = (y2 - side, y1) if y2 - y1 <= side else (y1, y2 - side)
            x = int(np.clip(rng.uniform(lo_x, hi_x), 0, max(0, w - side)))
            y = int(np.clip(rng.uniform(lo_y, hi_y), 0, max(0, h - side)))
            out.append((x, y, True))
            continue
        for _ in range(200):
            x, y = rng.randrange(max(1, w - side + 1)), rng.randrange(max(1, h - side + 1))
            middle = tissue[min(rows - 1, int((y + side / 2) / h * rows)), min(cols - 1, int((x + side / 2) / w * cols))]
            clear = all(bx2 <= x or bx1 >= x + side or by2 <= y or by1 >= y + side for bx1, by1, bx2, by2 in boxes)
            if middle and clear:
                out.append((x, y, False))
                break
    return out


def window_records(truth: SlideTruth, out_dir: Path, rng: random.Random, count: int, window_um: float = PATCH_UM,
                   size: int = 384) -> list[Any]:
    """`count` patch-level cancer_detection records cut from a slide at the patch records' field of view.

    Each window (``window_um`` micrometres, read from the written TIFF at ``size`` pixels, as
    `omnipath analyze --locate` reads it) is a patch image whose answer is the slide's tumour
    boxes clipped to it; half of them hold a tumour, half none (`_window_corners`). A slide's
    tumours are small inside normal tissue, unlike the tumour patches, which a tumour fills.
    """
    from omnipath_lvlm.data.records import make_record
    from omnipath_lvlm.wsi.slide import open_slide
    from omnipath_lvlm.wsi.tissue import tissue_mask

    w, h = truth.level_dimensions[0]
    side = int(min(round(window_um / truth.params.mpp), w, h))
    tumours = [a.box() for a in truth.regions("Tumor")]
    out = []
    with open_slide(truth.path) as slide:
        tissue = tissue_mask(slide.thumbnail(384), (24, 24))
        for k, (x, y, _) in enumerate(_window_corners(truth, rng, side, tissue, count)):
            picture = np.asarray(slide.read_region((x, y), (side, side), (size, size)).convert("RGB"))
            name = f"{truth.path.stem}-window{k}"
            path = _save_png(out_dir / "images" / f"{name}.png", picture)
            inside = [(max(bx1, x) - x, max(by1, y) - y, min(bx2, x + side) - x, min(by2, y + side) - y)
                      for bx1, by1, bx2, by2 in tumours if bx2 > x and bx1 < x + side and by2 > y and by1 < y + side]
            boxes = _relative_boxes(inside, side, side)
            gt = {"seed": truth.params.seed, "window": [x, y, x + side, y + side], "boxes": boxes}
            out.append(make_record("cancer_detection", path, boxes, rng, style="boxes", gt=gt,
                                   id=f"synthpath-{name}-cancer_detection", source="synthpath", organ=truth.labels["organ"],
                                   image_size=[size, size]))
    return out


def export_dataset(
    out_dir: str | Path,
    n_patches: int,
    n_slides: int,
    seed: int = 0,
    slide_size: int = 16384,
    patch_size: int = 384,
    tasks: Iterable[str] | None = None,
    thumbnail_size: int = 384,
    max_boxes: int = 120,
    splits: Iterable[str] = SPLITS,
    slide_windows: int = 0,
) -> dict[str, Path]:
    """Generate patches and slides, write their records as train/val/test JSONL; returns split -> JSONL path.

    `slide_windows`: per slide, that many patch-level cancer-detection windows cut from it at the
    patch field of view (`window_records`), beside its slide-level records.

    `splits` limits the output to some of the splits (the others are neither generated nor
    written); an item's seed, and so its content, does not depend on which splits are written.
    """
    from omnipath_lvlm.data.records import write_jsonl
    from omnipath_lvlm.data.tasks import get_task

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = None if tasks is None else set(tasks)
    for name in wanted or ():
        get_task(name)  # KeyError naming the known tasks
    splits = list(splits)
    if not splits or any(split not in SPLITS for split in splits):
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {splits}")
    patch_n, slide_n = split_counts(n_patches), split_counts(n_slides)
    manifest: dict[str, Any] = {
        "generator": "omnipath_lvlm.synth",
        "base_seed": seed,
        "seed_rule": "(3 * base_seed + split_index) * 2**20 + i, split_index train=0 val=1 test=2",
        "patch_size": patch_size,
        "slide_size": slide_size,
        "splits": {},
    }
    paths = {}
    for split in splits:
        records: list[Any] = []
        p_seeds = split_seeds(seed, split, patch_n[split])
        s_seeds = split_seeds(seed, split, slide_n[split])
        for s in p_seeds:
            rng = random.Random(derive_key(s, "patch-records"))
            records += patch_records(generate_patch(s, patch_size), out_dir, rng, wanted, max_boxes)
        for s in s_seeds:
            truth = write_slide(out_dir / "slides" / f"slide-{s}.tiff", slide_size, s)
            rng = random.Random(derive_key(s, "slide-records"))
            records += slide_records(truth, out_dir, rng, wanted, thumbnail_size)
            if slide_windows:
                window_rng = random.Random(derive_key(s, "slide-windows"))
                records += window_records(truth, out_dir, window_rng, slide_windows, PATCH_UM, patch_size)
        paths[split] = write_jsonl(records, out_dir / f"{split}.jsonl")
        manifest["splits"][split] = {
            "patch_seeds": [p_seeds.start, p_seeds.stop] if len(p_seeds) else [],
            "slide_seeds": [s_seeds.start, s_seeds.stop] if len(s_seeds) else [],
            "records": len(records),
        }
    (out_dir / "synthpath.json").write_text(json.dumps(manifest, indent=2))
    return paths
