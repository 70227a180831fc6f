"""``omnipath synth``: generate SynthPath data.

    omnipath synth patches --n N --out DIR [--seed S] [--size 384] [--slides K] [--slide-size 4096] [--task T ...]
                           [--split S ...] [--max-boxes 120]
    omnipath synth slide --out FILE.tiff [--size 16384] [--seed S] [--mpp 0.25] [--levels L]
    omnipath synth questions IN.jsonl --task T [--task T ...] --n N --out OUT.jsonl [--seed S]

``patches`` writes PNGs and train/val/test JSONL splits (see
:mod:`omnipath_lvlm.synth.export`); ``slide`` writes one pyramidal TIFF with its
``.geojson`` annotations and ``.json`` labels; ``questions`` re-asks the label
questions of an export (e.g. slide grade and subtype) ``N`` more times in fresh
words and styles (:func:`omnipath_lvlm.synth.export.more_questions`).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth patches`` and ``synth slide``."""
    synth = subparsers.add_parser("synth", help="generate synthetic H&E patches and slides with ground truth")
    sub = synth.add_subparsers(dest="synth_command", required=True)

    patches = sub.add_parser("patches", help="patch (and optionally slide) instruction dataset: PNGs + JSONL splits")
    patches.add_argument("--n", type=int, required=True, help="number of patches (split 80/10/10)")
    patches.add_argument("--out", type=Path, required=True, help="output folder")
    patches.add_argument("--seed", type=int, default=0, help="base seed (>= 0)")
    patches.add_argument("--size", type=int, default=384, help="patch side in pixels (field of view is 384 um)")
    patches.add_argument("--slides", type=int, default=0, help="number of slides to add (split 80/10/10)")
    patches.add_argument("--slide-size", type=int, default=4096, help="level-0 side of the slides in pixels")
    patches.add_argument("--split", action="append", choices=("train", "val", "test"),
                         help="only write these splits (repeatable; default: all three); seeds do not change")
    patches.add_argument("--task", action="append", help="only these tasks (repeatable; default: all that apply)")
    patches.add_argument("--slide-windows", type=int, default=0, metavar="K",
                         help="per slide, K patch-level cancer-detection windows cut from it at the patch field "
                              "of view, half with a tumour, half without (default 0)")
    patches.add_argument("--max-boxes", type=int, default=120,
                         help="nucleus tasks are asked on a crop holding at most this many nuclei")
    patches.set_defaults(func=run_patches)

    slide = sub.add_parser("slide", help="one pyramidal tiled TIFF (Aperio-style) + GeoJSON + labels JSON")
    slide.add_argument("--out", type=Path, required=True, help="TIFF file to write")
    slide.add_argument("--size", type=int, default=16384, help="level-0 side in pixels")
    slide.add_argument("--seed", type=int, default=0)
    slide.add_argument("--mpp", type=float, default=0.25, help="micrometres per level-0 pixel")
    slide.add_argument("--levels", type=int, default=None, help="pyramid levels (default: down to <= 1024 px, >= 4)")
    slide.add_argument("--tile", type=int, default=256, help="tile side in pixels (multiple of 16)")
    slide.set_defaults(func=run_slide)

    questions = sub.add_parser("questions", help="re-ask an export's label questions in fresh words and styles")
    questions.add_argument("data", type=Path, help="a SynthPath JSONL (e.g. DIR/train.jsonl)")
    questions.add_argument("--task", action="append", required=True, help="re-ask these tasks (repeatable)")
    questions.add_argument("--n", type=int, required=True, help="more questions per matching record")
    questions.add_argument("--seed", type=int, default=0, help="seed of the prompt and style choices")
    questions.add_argument("--out", type=Path, required=True,
                           help="JSONL to write (in the input's folder, so paths stay relative)")
    questions.set_defaults(func=run_questions)


def run_patches(args: argparse.Namespace) -> int:
    from omnipath_lvlm.synth.export import SPLITS, export_dataset

    if args.n < 0 or args.slides < 0 or args.slide_windows < 0:
        raise SystemExit("--n, --slides and --slide-windows must be >= 0")
    if args.max_boxes < 1:
        raise SystemExit(f"--max-boxes must be >= 1, got {args.max_boxes}")
    start = time.perf_counter()
    paths = export_dataset(args.out, args.n, args.slides, seed=args.seed, slide_size=args.slide_size,
                           patch_size=args.size, tasks=args.task, max_boxes=args.max_boxes, splits=args.split or SPLITS,
                           slide_windows=args.slide_windows)
    for split, path in paths.items():
        lines = sum(1 for _ in open(path, encoding="utf-8"))
        print(f"{split}: {lines} records -> {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def run_slide(args: argparse.Namespace) -> int:
    from omnipath_lvlm.synth.slide import write_slide

    start = time.perf_counter()
    truth = write_slide(args.out, args.size, seed=args.seed, tile=args.tile, levels=args.levels, mpp=args.mpp)
    dims = " ".join(f"{w}x{h}" for w, h in truth.level_dimensions)
    print(f"wrote {truth.path} ({dims}) in {time.perf_counter() - start:.1f} s")
    print(f"annotations: {truth.geojson_path} ({len(truth.annotations)} regions); labels: {truth.labels_path}")
    for task, answer in truth.labels.items():
        print(f"  {task}: {answer}")
    return 0


def run_questions(args: argparse.Namespace) -> int:
    from omnipath_lvlm.data.records import read_jsonl, write_jsonl
    from omnipath_lvlm.synth.export import more_questions

    if args.n < 1:
        raise SystemExit(f"--n must be >= 1, got {args.n}")
    if not args.data.is_file():
        raise SystemExit(f"{args.data} is not a file (a JSONL of records, e.g. an export's train.jsonl)")
    records, problems = read_jsonl(args.data)
    if problems:
        raise SystemExit(f"{args.data}: {len(problems)} unreadable records, first: {problems[0]}")
    try:
        new = more_questions(records, args.task, args.n, seed=args.seed)
    except KeyError as exc:
        raise SystemExit(str(exc.args[0]) if exc.args else str(exc)) from None
    if not new:
        raise SystemExit(f"{args.data} has no open or closed records of {args.task}")
    path = write_jsonl(new, args.out)
    print(f"{len(new)} questions ({args.n} per record of {', '.join(args.task)}) -> {path}")
    return 0
