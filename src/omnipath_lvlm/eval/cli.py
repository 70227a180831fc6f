"""``omnipath eval``: answer a test set with a model and score it; compare two runs.

    omnipath eval --model M --data TEST.jsonl --out DIR [--pgfc attention|random|none ...]
                  [--num-regions S] [--batch-size B] [--max-new-tokens N] [--limit N] [--seed S]
                  [--locate slide|regions|tiles|auto] [--window-um UM|cells]
    omnipath eval compare RUN_A RUN_B

A run is resumable: run the same command again after a stop and only the missing
answers are generated (see :mod:`omnipath_lvlm.eval.runner`). Under
``accelerate launch`` the items are split between the processes. Several
``--pgfc`` modes answer every slide-level record once per mode (the PGFC ablation).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnipath_lvlm.wsi import WINDOW_UM_HELP, window_um_argument

PGFC_CHOICES = ("attention", "random", "none", "record")  # omnipath_lvlm.eval.runner.PGFC_MODES (kept import-free)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` (run an evaluation) and ``eval compare``."""
    parser = subparsers.add_parser(
        "eval", help="evaluate a model on a JSONL test set (resumable) or compare two runs",
        description="Generate answers for a JSONL test set, score them per task and write summary.json and the "
                    "paper's tables to --out. Run it again to resume a stopped run. "
                    "`omnipath eval compare RUN_A RUN_B` prints two runs side by side.")
    parser.add_argument("--model", help="test-tiny, nano or a saved model folder (see omnipath_lvlm.wsi.pipeline.load_engine)")
    parser.add_argument("--data", type=Path, help="JSONL test set (omnipath_lvlm.data.records format)")
    parser.add_argument("--out", type=Path, help="run folder: predictions.jsonl, summary.json, tables")
    parser.add_argument("--pgfc", nargs="+", choices=PGFC_CHOICES, default=["attention"],
                        help="PGFC mode(s) for slide-level records; several modes give the ablation; 'record' "
                             "reads the regions each record lists instead of choosing (default: attention)")
    parser.add_argument("--num-regions", type=int,
                        help="detail regions PGFC adds per slide (default: the model's, from its pgfc.json; else 8)")
    parser.add_argument("--batch-size", type=int, default=4, help="items generated together (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="answer length cap (default 512)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N records")
    parser.add_argument("--seed", type=int, default=0, help="torch seed set before each batch (default 0)")
    parser.add_argument("--group-by", choices=("source", "organ", "none"), default="source",
                        help="table rows per record source (dataset), organ, or none (default: source)")
    parser.add_argument("--centroid-radius", type=float, metavar="PX",
                        help="match nucleus_* boxes by centroid within PX pixels (6 at 20x, 12 at 40x) "
                             "instead of IoU >= 0.5")
    parser.add_argument("--locate", choices=("slide", "regions", "tiles", "auto"), default="slide",
                        help="slide items: boxes and outlines as written for the whole slide (default), or found "
                             "by re-asking the question of windows (--window-um) around the detail "
                             "regions / tiling the tissue (see `omnipath analyze --locate`)")
    parser.add_argument("--window-um", type=window_um_argument, metavar="UM|cells", help=WINDOW_UM_HELP)
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="eval_command", metavar="compare")
    compare = sub.add_parser("compare", help="print two runs side by side with their differences",
                             description="Print the per-task metrics of two run folders side by side (Markdown) "
                                         "with the difference B - A in percentage points.")
    compare.add_argument("run_a", type=Path, help="first run folder (or its summary.json)")
    compare.add_argument("run_b", type=Path, help="second run folder (or its summary.json)")
    compare.set_defaults(func=compare_command)


def run(args: argparse.Namespace) -> int:
    missing = [flag for flag, value in (("--model", args.model), ("--data", args.data), ("--out", args.out))
               if value is None]
    if missing:
        print(f"error: omnipath eval needs {', '.join(missing)} (or use `omnipath eval compare RUN_A RUN_B`)",
              file=sys.stderr)
        return 2
    if not args.data.is_file():
        print(f"error: --data {args.data} is not a file", file=sys.stderr)
        return 2

    from accelerate import Accelerator

    from omnipath_lvlm.eval.runner import EvalConfig, run_eval
    from omnipath_lvlm.wsi.pgfc import PGFCConfig
    from omnipath_lvlm.wsi.pipeline import model_folder

    try:
        trained = PGFCConfig.for_model(model_folder(args.model))  # the model's own S and pooling
        config = EvalConfig(model=args.model, data=args.data, out=args.out, pgfc=tuple(args.pgfc),
                            num_regions=trained.num_regions if args.num_regions is None else args.num_regions,
                            region_pool=trained.region_pool, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, limit=args.limit, seed=args.seed,
                            group_by=args.group_by, centroid_radius_px=args.centroid_radius,
                            locate=args.locate, window_um=args.window_um)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    accelerator = Accelerator()
    try:
        result = run_eval(config, process=accelerator)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not accelerator.is_main_process:
        return 0
    for problem in result.data_problems:
        print(f"warning: {args.data}: {problem}", file=sys.stderr)
    share = "" if accelerator.num_processes == 1 else f" (main process of {accelerator.num_processes})"
    print(f"{result.items} items, {result.generated} answered now, {result.skipped} already answered{share}; "
          f"{result.items - len(result.missing)} scored in {len(result.summaries)} task groups")
    if result.missing:
        print(f"warning: {len(result.missing)} items have no prediction, e.g. {result.missing[:3]}", file=sys.stderr)
    for name, path in result.files.items():
        print(f"wrote {name}: {path}")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from omnipath_lvlm.eval.runner import compare_run_dirs

    try:
        print(compare_run_dirs(args.run_a, args.run_b), end="")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
