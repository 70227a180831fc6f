"""`omnipath analyze` and `omnipath attention`: thin wrappers over the whole-slide pipeline.

Exit codes: 0 done, 2 bad input (unreadable slide, unknown model, bad option). Nothing is
written unless the analysis succeeded; each file is written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DISPLAY_SIZE = 1024  # side of the thumbnail the pictures are drawn on


def register(subparsers: argparse._SubParsersAction) -> None:
    analyze = subparsers.add_parser(
        "analyze", help="answer a question about a whole slide or image (with PGFC detail regions)",
        description="Writes answer.json, regions.geojson (QuPath), overlay.png and attention.png into --out.",
    )
    analyze.add_argument("slide", type=Path, help="slide file (SVS, NDPI, TIFF, ...) or plain image")
    analyze.add_argument("-q", "--question", required=True)
    analyze.add_argument("--model", default="nano", help="test-tiny, nano, or a saved model directory (default: nano)")
    analyze.add_argument("--out", type=Path, required=True, help="output folder")
    analyze.add_argument("--pgfc", choices=("attention", "random", "none"), default="attention")
    analyze.add_argument("--num-regions", type=int, default=8, help="S, detail regions per answer (default 8)")
    analyze.add_argument("--max-new-tokens", type=int, default=256)
    analyze.set_defaults(func=run_analyze)

    attention = subparsers.add_parser(
        "attention", help="draw the first-layer attention analysis of the paper's figure 2",
        description="Three panels: last-token attention over the image, and the attention maps of a key and an "
        "ordinary image token (layer 0, head-averaged).",
    )
    attention.add_argument("image", type=Path, help="image or slide file (a slide is seen as its thumbnail)")
    attention.add_argument("-q", "--question", required=True)
    attention.add_argument("--model", default="nano", help="test-tiny, nano, or a saved model directory (default: nano)")
    attention.add_argument("--out", type=Path, required=True, help="output PNG file")
    attention.set_defaults(func=run_attention)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_analyze(args: argparse.Namespace) -> int:
    from omnipath_lvlm.wsi.outputs import write_outputs
    from omnipath_lvlm.wsi.pgfc import PGFCConfig
    from omnipath_lvlm.wsi.pipeline import load_engine
    from omnipath_lvlm.wsi.slide import SlideError, open_slide

    if args.out.exists() and not args.out.is_dir():
        return _fail(f"--out {args.out} exists and is not a folder")
    try:
        pgfc = PGFCConfig(num_regions=args.num_regions, mode=args.pgfc)
        with open_slide(args.slide) as slide:
            engine = load_engine(args.model)
            analysis = engine.analyze(slide, args.question, pgfc=pgfc, max_new_tokens=args.max_new_tokens)
            thumbnail = slide.thumbnail(DISPLAY_SIZE)
    except SlideError as exc:
        return _fail(f"cannot read the slide: {exc}")
    except ValueError as exc:
        return _fail(str(exc))
    paths = write_outputs(analysis, thumbnail, args.out)
    print(analysis.answer)
    for path in paths.values():
        print(f"wrote {path}", file=sys.stderr)
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from omnipath_lvlm.wsi.attention import attention_figure, attention_maps
    from omnipath_lvlm.wsi.outputs import atomic_write_bytes, png_bytes
    from omnipath_lvlm.wsi.pipeline import load_engine
    from omnipath_lvlm.wsi.slide import SlideError, open_slide

    if args.out.suffix.lower() != ".png":
        return _fail(f"--out must name a .png file, got {args.out}")
    try:
        with open_slide(args.image) as slide:
            engine = load_engine(args.model)
            image = slide.thumbnail(engine.processor.max_image_size)
            display = slide.thumbnail(DISPLAY_SIZE)
        maps = attention_maps(engine.model, engine.processor, image, args.question)
    except SlideError as exc:
        return _fail(f"cannot read the image: {exc}")
    except ValueError as exc:
        return _fail(str(exc))
    figure = attention_figure(display, maps)
    atomic_write_bytes(args.out, png_bytes(figure))
    print(f"key token {maps.key_token}, ordinary token {maps.ordinary_token}; wrote {args.out}", file=sys.stderr)
    return 0
