"""Does a model's patch-level cancer detector see a slide's tumours in windows at its patch scale?

For every slide-level cancer_detection record of a JSONL file, two windows of ``--window-um``
micrometres are read (at the model's input size) and asked the record's question as patches:
one centred on the slide's first true tumour box, one centred on a tissue cell whose window
holds no tumour (drawn with ``--seed``). Printed per kind: the share of windows answered with
at least one box, the share of their boxes that touch a true tumour box, and the boxes' mean
best IoU with the tumours. A detector that sees slide tumours boxes the tumour windows, and
its boxes there touch the tumour; on the tumour-free windows it answers with no box.

    .venv/bin/python scripts/window_probe.py models/omnipath-nano data/synthpath-val-slides/val-boxes.jsonl \
        --out runs/s10/window_probe-val.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from omnipath_lvlm.data.formats import parse_boxes
    from omnipath_lvlm.data.records import read_jsonl
    from omnipath_lvlm.eval.metrics import best_iou
    from omnipath_lvlm.wsi.locate import ask_windows
    from omnipath_lvlm.wsi.pgfc import read_regions
    from omnipath_lvlm.wsi.pipeline import load_engine
    from omnipath_lvlm.wsi.slide import open_slide
    from omnipath_lvlm.wsi.tissue import tissue_mask

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("data", type=Path, help="JSONL with slide-level cancer_detection records")
    parser.add_argument("--window-um", type=float, default=384.0, help="window side in micrometres (default 384)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--out", type=Path, help="JSON file for the numbers")
    args = parser.parse_args(argv)

    engine = load_engine(args.model)
    size = engine.processor.max_image_size
    rng = np.random.default_rng(args.seed)
    records = [r for r in read_jsonl(args.data)[0] if r.slide is not None and r.task == "cancer_detection"]
    rows: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"tumour": [], "no tumour": []}
    for record in records:
        with open_slide(record.slide) as slide:
            width, height = slide.dimensions
            side = args.window_um / float(slide.mpp)
            truth = np.array(record.gt["tumour_boxes"], dtype=np.float64) * [width, height, width, height]  # (T, 4)
            grid = 24
            tissue = tissue_mask(slide.thumbnail(size), (grid, grid))  # (grid, grid) bool
            cx, cy = (truth[0, 0] + truth[0, 2]) / 2, (truth[0, 1] + truth[0, 3]) / 2
            windows = {"tumour": (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)}
            free = []
            for r, c in zip(*np.nonzero(tissue)):
                x, y = (c + 0.5) / grid * width, (r + 0.5) / grid * height
                box = np.array([[x - side / 2, y - side / 2, x + side / 2, y + side / 2]])
                if best_iou(truth, box).max() == 0:  # no tumour box touches this window
                    free.append(tuple(box[0]))
            if free:
                windows["no tumour"] = free[rng.integers(len(free))]
            pictures = read_regions(slide, list(windows.values()), size)
        question = record.conversations[0]["value"].replace("<image>", "").strip()
        replies = ask_windows(engine.model, engine.processor, pictures, question, args.max_new_tokens)
        for (kind, window), (text, _) in zip(windows.items(), replies):
            boxes = np.array([[b[0], b[1], b[2], b[3]] for b in parse_boxes(text).items], dtype=np.float64).reshape(-1, 4)
            level0 = boxes * (window[2] - window[0]) + [window[0], window[1], window[0], window[1]]
            rows[kind].append((len(boxes), level0, best_iou(level0, truth) if len(boxes) else np.zeros(0)))

    result = {}
    print(f"| Window ({args.window_um:g} um) | windows | answered with a box | boxes | boxes touching a tumour | mean best IoU |")
    print("|---|---|---|---|---|---|")
    for kind, items in rows.items():
        ious = np.concatenate([iou for _, _, iou in items] or [np.zeros(0)])
        answered = float(np.mean([n > 0 for n, _, _ in items])) if items else float("nan")
        touch = float((ious > 0).mean()) if len(ious) else float("nan")
        mean = float(ious.mean()) if len(ious) else float("nan")
        result[kind] = {"windows": len(items), "answered_with_box": answered, "boxes": int(len(ious)),
                        "touch": touch, "mean_best_iou": mean}
        print(f"| {kind} | {len(items)} | {100 * answered:.1f} % | {len(ious)} | {100 * touch:.1f} % | {100 * mean:.1f} % |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "data": str(args.data), "window_um": args.window_um,
                                        "seed": args.seed, **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
