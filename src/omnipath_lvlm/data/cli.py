"""``omnipath data``: build instruction datasets from public formats and summarise them.

    omnipath data build SOURCE_KIND PATH --out FILE.jsonl [--task T ...] [--seed S]
    omnipath data stats FILE.jsonl

``build`` runs the converter of ``SOURCE_KIND`` (see
:data:`omnipath_lvlm.data.converters.CONVERTERS`) and writes its records with
:func:`omnipath_lvlm.data.records.write_jsonl`; PNG files the converter creates go
to ``--assets`` (default: ``<FILE stem>_assets/`` beside the JSONL file).
``stats`` prints samples per task, organ, answer style and source and the
conversation length distribution, in tokens of
``omnipath_lvlm.processing.default_tokenizer()`` when it loads, else in
whitespace-separated words.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

# CLI flag -> converter keyword; a flag is accepted only by converters that take the keyword.
_OPTIONS = (
    ("slide", "slide"),
    ("classes", "classes"),
    ("category", "categories"),
    ("positive", "positive"),
    ("style", "styles"),
    ("tile_size", "tile_size"),
    ("detail_crops", "detail_crops"),
    ("organ", "organ"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data build`` and ``data stats``."""
    from omnipath_lvlm.data.converters import CONVERTERS

    data = subparsers.add_parser("data", help="build and inspect instruction datasets (JSONL)")
    sub = data.add_subparsers(dest="data_command", required=True)

    kinds = "; ".join(f"{k}: {desc}" for k, (_, _, desc) in CONVERTERS.items())
    build = sub.add_parser("build", help="convert a public dataset into instruction records",
                           description=f"Source kinds - {kinds}.")
    build.add_argument("kind", choices=list(CONVERTERS), metavar="SOURCE_KIND", help=f"one of {', '.join(CONVERTERS)}")
    build.add_argument("path", type=Path, help="dataset folder or annotation file")
    build.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    build.add_argument("--task", action="append", help="task to produce (repeatable; default: the source's tasks)")
    build.add_argument("--seed", type=int, default=0, help="seed of prompt / option sampling")
    build.add_argument("--assets", type=Path, help="folder for written PNG files (default: <out stem>_assets)")
    build.add_argument("--slide", type=Path, help="slide file of a single GeoJSON / ASAP annotation file")
    build.add_argument("--classes", action="append", help="annotation class names to keep (geojson, asap)")
    build.add_argument("--category", action="append", help="COCO category names to keep")
    build.add_argument("--positive", action="append", help="labels meaning 'yes' for yes/no tasks (folder, csv)")
    build.add_argument("--style", action="append", help="restrict answer styles (e.g. closed, polygons)")
    build.add_argument("--tile-size", type=int, help="cut images into tiles of this size (monuseg)")
    build.add_argument("--detail-crops", type=int, help="high-resolution crops of the largest regions (geojson, asap)")
    build.add_argument("--organ", help="organ of every image (coco, folder, geojson, asap)")
    build.set_defaults(func=run_build)

    stats = sub.add_parser("stats", help="summarise a JSONL dataset")
    stats.add_argument("file", type=Path, help="JSONL file")
    stats.set_defaults(func=run_stats)


def run_build(args: argparse.Namespace) -> int:
    """Convert, write the JSONL atomically, report counts."""
    from omnipath_lvlm.data.converters import get_converter
    from omnipath_lvlm.data.records import write_jsonl

    converter = get_converter(args.kind)
    accepted = inspect.signature(converter).parameters
    options = {}
    for flag, keyword in _OPTIONS:
        value = getattr(args, flag)
        if value is None:
            continue
        if keyword not in accepted:
            print(f"error: --{flag.replace('_', '-')} does not apply to source kind {args.kind!r}", file=sys.stderr)
            return 2
        options[keyword] = value
    assets = args.assets or args.out.with_name(f"{args.out.stem}_assets")
    try:
        records = converter(args.path, assets, rng_seed=args.seed, tasks=args.task, **options)
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = write_jsonl(records, args.out)
    print(f"wrote {len(records)} records to {written}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """Print the summary of a JSONL dataset."""
    from omnipath_lvlm.data.records import read_jsonl, summarize

    if not args.file.is_file():
        print(f"error: {args.file} does not exist", file=sys.stderr)
        return 2
    records, problems = read_jsonl(args.file)
    length, unit = _length_function()
    summary = summarize(records, length)
    print(f"{args.file}: {summary.total} records, {len(problems)} lines skipped")
    for problem in problems[:10]:
        print(f"  skipped {problem}")
    if len(problems) > 10:
        print(f"  ... and {len(problems) - 10} more")
    for title, counts in (("task", summary.by_task), ("organ", summary.by_organ),
                          ("answer style", summary.by_style), ("source", summary.by_source)):
        print(f"samples per {title}:")
        for name, n in counts.items():
            print(f"  {name:<40} {n:>8}")
    if summary.lengths:
        values = "  ".join(f"{k} {v:g}" for k, v in summary.lengths.items())
        print(f"conversation length ({unit}): {values}")
    return 0


def _length_function():
    """(text -> length, unit description): the project tokenizer if it loads, else word counts.

    The tokenizer is looked up as ``omnipath_lvlm.processing.default_tokenizer``,
    then ``omnipath_lvlm.tokenizer.default_tokenizer``.
    """
    import importlib

    reasons = []
    for module_name in ("omnipath_lvlm.processing", "omnipath_lvlm.tokenizer"):
        try:
            tokenizer = importlib.import_module(module_name).default_tokenizer()
        except Exception as exc:  # any failure to load falls back, and says why
            reasons.append(f"{module_name}: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}")
            continue
        return _token_counter(tokenizer), f"tokens of {module_name}.default_tokenizer()"
    return (lambda text: len(text.split())), f"whitespace words; no tokenizer loaded ({'; '.join(reasons)})"


def _token_counter(tokenizer):
    """text -> number of tokens (no special tokens added)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
