"""Draw docs/img/synthpath_montage.png: SynthPath patches with their ground truth, and a slide with its GeoJSON.

    python scripts/synthpath_montage.py [--out docs/img/synthpath_montage.png] [--slide-size 8192]

Top: one patch per kind with nucleus outlines coloured by class and structure
outlines; middle: the tumour architectures (subtype cue) at grades 1-3 and the
four organs' normal tissue; bottom: a slide thumbnail with its annotations and a
level-0 detail of a tumour (where the grade becomes visible).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import tifffile

from omnipath_lvlm.synth.patches import SynthPatch, build_scene, generate_patch
from omnipath_lvlm.synth.slide import ANNOTATION_CLASSES, render_region, write_slide
from omnipath_lvlm.synth.taxonomy import ARCHITECTURES, ORGANS, PATCH_KINDS

TILE = 256
NUCLEUS_COLOURS = MappingProxyType({  # RGB
    "tumour": (230, 30, 30),
    "mitosis": (255, 140, 0),
    "epithelial": (30, 160, 30),
    "lymphocyte": (30, 90, 230),
    "stromal": (240, 220, 40),
})
STRUCTURE_COLOURS = MappingProxyType({"tumour_region": (200, 0, 0), "vessel": (150, 0, 200), "nerve": (230, 180, 0),
                                      "lymph_node": (0, 120, 255)})


def annotate(p: SynthPatch) -> np.ndarray:
    img = p.image.copy()
    for o in p.nuclei:
        m = o.full_mask(img.shape[:2]).astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, NUCLEUS_COLOURS[o.cls], 1)
    for o in p.objects:
        if o.kind == "structure":
            m = o.full_mask(img.shape[:2]).astype(np.uint8)
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, STRUCTURE_COLOURS[o.cls], 2)
    return img


def caption(img: np.ndarray, lines: list[str]) -> np.ndarray:
    band = np.full((16 * len(lines) + 6, img.shape[1], 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(band, text[:42], (4, 14 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([img, band])


def pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.full((h, w, 3), 255, np.uint8)
    out[: img.shape[0], : img.shape[1]] = img
    return out


def row(images: list[np.ndarray], gap: int = 6) -> np.ndarray:
    h = max(i.shape[0] for i in images)
    parts = []
    for i, img in enumerate(images):
        parts.append(pad_to(img, h, img.shape[1]))
        if i + 1 < len(images):
            parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=1)


def find_seed(pred, start: int = 0, limit: int = 400) -> int:
    for seed in range(start, start + limit):
        if pred(seed):
            return seed
    raise RuntimeError("no seed satisfies the condition")


def kinds_row() -> np.ndarray:
    tiles = []
    for kind in PATCH_KINDS:
        p = generate_patch(find_seed(lambda s: build_scene(s, kind)[0] == kind) + 1000, TILE, kind)
        main = {k: v for k, v in p.labels.items() if k in ("mvi", "neural_invasion", "lymph_node_metastasis",
                                                              "tissue_type", "organ")}
        tiles.append(caption(annotate(p), [kind] + [f"{k}: {v}" for k, v in list(main.items())[:2]]))
    return row(tiles)


def tumour_row() -> np.ndarray:
    tiles = []
    for arch in ARCHITECTURES:
        for grade in (1, 3):
            seed = find_seed(lambda s: (sc := build_scene(s, "tumour")[1]).tumour.architecture == arch
                             and sc.tumour.grade == grade)
            p = generate_patch(seed, TILE, "tumour")
            tiles.append(caption(p.image, [p.labels["subtype"][:40], f"{p.labels['grade']} ({p.labels['organ']})"]))
    for organ in ORGANS[:3]:
        seed = find_seed(lambda s: build_scene(s, "normal")[1].organ == organ, start=50)
        p = generate_patch(seed, TILE, "normal")
        tiles.append(caption(p.image, ["normal", organ]))
    return row(tiles)


def slide_row(slide_size: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        truth = write_slide(Path(tmp) / "montage.svs", slide_size, seed=2)
        with tifffile.TiffFile(truth.path) as tf:
            thumb = tf.pages[1].asarray()
        geo = json.loads(truth.geojson_path.read_text())
    scale = 760 / max(thumb.shape[:2])
    thumb = cv2.resize(thumb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    s = thumb.shape[1] / truth.level_dimensions[0][0]
    colours = dict(ANNOTATION_CLASSES)
    for f in geo["features"]:
        ring = np.asarray(f["geometry"]["coordinates"][0]) * s
        name = f["properties"]["classification"]["name"]
        cv2.polylines(thumb, [np.round(ring * 16).astype(np.int32)], True, colours[name], 1, cv2.LINE_AA, 4)
    legend = [f"{k}: {v}" for k, v in truth.labels.items()]
    left = caption(thumb, [f"slide {slide_size} px, thumbnail + GeoJSON"] + legend[:4])
    x1, y1, x2, y2 = truth.regions("Tumor")[0].box()
    side = 760
    cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
    detail = render_region(truth, cx - side // 2, cy - side // 2, side, side)
    right = caption(detail, ["level 0 (0.25 um/px) inside the tumour", legend[3]] + legend[4:7])
    return row([left, right], gap=12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/img/synthpath_montage.png"))
    parser.add_argument("--slide-size", type=int, default=8192)
    args = parser.parse_args(argv)
    rows = [kinds_row(), tumour_row(), slide_row(args.slide_size)]
    width = max(r.shape[1] for r in rows)
    sep = np.full((10, width, 3), 255, np.uint8)
    parts = []
    for r in rows:
        parts += [pad_to(r, r.shape[0], width), sep]
    out = np.concatenate(parts[:-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({out.shape[1]}x{out.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
