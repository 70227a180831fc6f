"""`omnipath analyze` and `omnipath attention`: thin wrappers over the whole-slide pipeline.

Exit codes: 0 done, 2 bad input (unreadable slide, unknown model, bad option). Nothing is
written unless the analysis succeeded; each file is written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnipath_lvlm.wsi import NUM_REGIONS_HELP, WINDOW_UM_HELP, window_um_argument

DISPLAY_SIZE = 1024  # side of the thumbnail the pictures are drawn on


def register(subparsers: argparse._SubParsersAction) -> None:
    analyze = subparsers.add_parser(
        "analyze", help="answer a question about a whole slide or image (with PGFC detail regions)",
        description="Writes answer.json, regions.geojson (QuPath), overlay.png, attention.png and report.html into --out.",
    )
    analyze.add_argument("slide", type=Path, help="slide file (SVS, NDPI, TIFF, ...) or plain image; or a folder or "
                         "CSV list of slides (one result folder per slide, finished ones skipped, split across "
                         "`accelerate launch` processes)")
    analyze.add_argument("-q", "--question", required=True)
    analyze.add_argument("--model", default="nano", help="test-tiny, nano, or a saved model directory (default: nano)")
    analyze.add_argument("--out", type=Path, required=True, help="output folder")
    analyze.add_argument("--pgfc", choices=("attention", "random", "none"), default="attention")
    analyze.add_argument("--num-regions", type=int, help=NUM_REGIONS_HELP)
    analyze.add_argument("--region", type=_box, action="append", metavar="X1,Y1,X2,Y2",
                         help="read this level-0 box as a detail region instead of choosing regions (repeatable; "
                              "e.g. a region of interest drawn in QuPath)")
    analyze.add_argument("--locate", choices=("auto", "slide", "regions", "tiles"), default="auto",
                         help="where boxes and outlines come from: re-ask the question of windows (--window-um) "
                              "around each detail region (regions) or tiling the tissue "
                              "(tiles, one answer per window), or keep those written for the whole slide (slide); "
                              "auto (default): regions when the answer holds boxes, outlines or masks")
    analyze.add_argument("--window-um", type=window_um_argument, metavar="UM|cells", help=WINDOW_UM_HELP)
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


SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".tif", ".tiff", ".scn", ".vms", ".vmu", ".bif", ".svslide",
                  ".png", ".jpg", ".jpeg"}


def batch_items(source: Path, out: Path) -> list[tuple[Path, Path]] | None:
    """(slide, result folder) pairs for a folder or a CSV list of slides; None for a single slide.

    A CSV names the slides in a ``path`` column (or its first column), relative to the CSV.
    Result folders are ``OUT/<slide file stem>`` (numbered when two stems collide).
    """
    if source.is_dir():
        slides = sorted(p for p in source.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES and p.is_file())
    elif source.suffix.lower() == ".csv":
        import csv

        with source.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            raise ValueError(f"{source} lists no slides")
        column = "path" if "path" in rows[0] else next(iter(rows[0]))
        slides = [(source.parent / row[column]).resolve() if not Path(row[column]).is_absolute() else Path(row[column])
                  for row in rows if row.get(column)]
    else:
        return None
    seen: dict[str, int] = {}
    items = []
    for slide in slides:
        n = seen.get(slide.stem, 0)
        seen[slide.stem] = n + 1
        items.append((slide, out / (slide.stem if n == 0 else f"{slide.stem}-{n + 1}")))
    return items


def _box(text: str) -> list[float]:
    """'x1,y1,x2,y2' (level-0 pixels) -> four floats; argparse reports the ValueError as a usage error."""
    values = [float(v) for v in text.split(",")]
    if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1]:
        raise argparse.ArgumentTypeError(f"a region is X1,Y1,X2,Y2 with X2 > X1 and Y2 > Y1, got {text!r}")
    return values


def analyze_one(engine, slide_path: Path, out_dir: Path, args: argparse.Namespace) -> str:
    """Analyse one slide and atomically write its five result files; returns the answer."""
    from omnipath_lvlm.wsi.outputs import write_outputs
    from omnipath_lvlm.wsi.report import write_report
    from omnipath_lvlm.wsi.slide import open_slide

    pgfc = engine.pgfc.with_overrides(mode=args.pgfc, num_regions=args.num_regions, window_um=args.window_um)
    with open_slide(slide_path) as slide:
        analysis = engine.analyze(slide, args.question, pgfc=pgfc, max_new_tokens=args.max_new_tokens,
                                  regions=args.region, locate=args.locate)
        thumbnail = slide.thumbnail(DISPLAY_SIZE)
        write_outputs(analysis, thumbnail, out_dir)
        write_report(analysis, slide, out_dir)
    return analysis.answer


def run_analyze(args: argparse.Namespace) -> int:
    from omnipath_lvlm.wsi.pipeline import load_engine
    from omnipath_lvlm.wsi.slide import SlideError

    if args.out.exists() and not args.out.is_dir():
        return _fail(f"--out {args.out} exists and is not a folder")
    if not args.slide.exists():
        return _fail(f"cannot read the slide: {args.slide} does not exist")
    try:
        items = batch_items(args.slide, args.out)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    if items is not None and args.region:
        return _fail("--region boxes are level-0 pixels of one slide; give one slide, not a folder or CSV")
    if items is None:  # one slide: results straight into --out
        try:
            from omnipath_lvlm.wsi.slide import open_slide

            open_slide(args.slide).close()  # refuse a bad slide before loading the model
            answer = analyze_one(load_engine(args.model), args.slide, args.out, args)
        except SlideError as exc:
            return _fail(f"cannot read the slide: {exc}")
        except ValueError as exc:
            return _fail(str(exc))
        print(answer)
        print(f"wrote {args.out}/{{answer.json, regions.geojson, overlay.png, attention.png, report.html}}", file=sys.stderr)
        return 0
    return _run_batch(items, args)


def _run_batch(items: list[tuple[Path, Path]], args: argparse.Namespace) -> int:
    """Many slides: skip finished ones, split the rest between accelerate processes."""
    from accelerate import PartialState
    from tqdm import tqdm

    from omnipath_lvlm.wsi.outputs import ANSWER_FILE
    from omnipath_lvlm.wsi.pipeline import load_engine
    from omnipath_lvlm.wsi.slide import SlideError

    todo = [(s, o) for s, o in items if not (o / ANSWER_FILE).is_file()]
    print(f"{len(items)} slides, {len(items) - len(todo)} already done, {len(todo)} to analyse", file=sys.stderr)
    state = PartialState()
    failures = 0
    engine = None
    with state.split_between_processes(todo) as mine:
        for slide_path, out_dir in tqdm(mine, desc=f"analyse (process {state.process_index})", unit="slide", file=sys.stderr):
            try:
                engine = engine or load_engine(args.model)
                answer = analyze_one(engine, slide_path, out_dir, args)
                print(f"{slide_path}\t{answer}")
            except (SlideError, ValueError) as exc:
                failures += 1
                print(f"error: {slide_path}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def run_attention(args: argparse.Namespace) -> int:
    from omnipath_lvlm.wsi.attention import attention_figure, attention_maps
    from omnipath_lvlm.fileio import atomic_write_bytes
    from omnipath_lvlm.wsi.outputs import png_bytes
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
