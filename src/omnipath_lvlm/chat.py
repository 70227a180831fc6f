"""`omnipath chat SLIDE_OR_IMAGE`: a multi-turn conversation about one slide in the terminal.

Each turn is answered by the whole-slide pipeline with the earlier turns as history; its
outputs (answer.json, regions.geojson, overlay.png, attention.png, report.html) are saved in
``OUT/turn-NNN/`` like ``omnipath analyze``'s. Commands: ``/mask FILE.png QUESTION`` points at
a region with a binary mask (it fills a ``<mask>`` in the question, added if absent), ``/quit``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from omnipath_lvlm.wsi import NUM_REGIONS_HELP


def run_chat(args: argparse.Namespace, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    import numpy as np
    from PIL import Image

    from omnipath_lvlm.wsi.outputs import write_outputs
    from omnipath_lvlm.wsi.pipeline import load_engine
    from omnipath_lvlm.wsi.report import write_report
    from omnipath_lvlm.wsi.slide import SlideError, open_slide

    try:
        slide = open_slide(args.source)
    except SlideError as exc:
        print(f"error: cannot read the slide: {exc}", file=sys.stderr)
        return 2
    engine = load_engine(args.model)
    pgfc = engine.pgfc.with_overrides(mode=args.pgfc, num_regions=args.num_regions)
    history: list[tuple[str, str]] = []
    out = Path(args.out)
    print(f"OmniPath chat about {args.source} ({engine.model_name}); /quit to stop, /mask FILE.png QUESTION to point at a region.",
          file=stdout)
    with slide:
        turn = 0
        while True:
            stdout.write("you> ")
            stdout.flush()
            line = stdin.readline()
            if not line or line.strip() in ("/quit", "/exit"):
                break
            question, masks = line.strip(), []
            if not question:
                continue
            if question.startswith("/mask "):
                parts = question.split(maxsplit=2)
                if len(parts) < 3:
                    print("usage: /mask FILE.png QUESTION", file=stdout)
                    continue
                try:
                    masks = [np.asarray(Image.open(parts[1]).convert("L")) > 0]
                except OSError as exc:
                    print(f"cannot read mask {parts[1]}: {exc}", file=stdout)
                    continue
                question = parts[2] if "<mask>" in parts[2] else f"{parts[2]} <mask>"
            turn += 1
            stdout.write("omnipath> ")
            try:
                analysis = engine.analyze(
                    slide, question, pgfc=pgfc, history=history, max_new_tokens=args.max_new_tokens,
                    on_text=lambda text: (stdout.write(text), stdout.flush()), input_masks=masks,
                )
            except ValueError as exc:
                print(f"\nerror: {exc}", file=stdout)
                continue
            stdout.write("\n")
            folder = out / f"turn-{turn:03d}"
            write_outputs(analysis, slide.thumbnail(1024), folder)
            write_report(analysis, slide, folder)
            print(f"[saved {folder}]", file=stdout)
            history.append((question, analysis.answer))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="multi-turn chat about one slide or image in the terminal")
    p.add_argument("source", help="slide (.svs, .ndpi, .mrxs, .tiff, ...) or image")
    p.add_argument("--model", default="nano", help="nano, test-tiny or a model folder")
    p.add_argument("--out", default="chat-out", help="folder for each turn's outputs")
    p.add_argument("--pgfc", default="attention", choices=["attention", "random", "none"])
    p.add_argument("--num-regions", type=int, help=NUM_REGIONS_HELP)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.set_defaults(func=run_chat)
