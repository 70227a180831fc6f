"""The main job on bundled defaults: `make demo` / `omnipath demo`.

Generates a SynthPath slide (once; reused on later runs), analyses it with the default model
and PGFC, writes answer.json, regions.geojson, overlay.png, attention.png and report.html, and
prints the answer, what the slide really holds, and the output paths.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from omnipath_lvlm.wsi import NUM_REGIONS_HELP

DEFAULT_QUESTION = "Grade the cancer in this image."


def run_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from omnipath_lvlm.synth.slide import write_slide
    from omnipath_lvlm.wsi.outputs import write_outputs
    from omnipath_lvlm.wsi.pipeline import load_engine
    from omnipath_lvlm.wsi.report import write_report
    from omnipath_lvlm.wsi.slide import open_slide

    out = Path(args.out)
    slide_path = out / f"synthpath-{args.size}-seed{args.seed}.tiff"
    steps = tqdm(total=4, desc="demo", unit="step", file=sys.stderr)
    if not slide_path.is_file():
        steps.set_postfix_str(f"generating a {args.size}px SynthPath slide")
        tic = time.perf_counter()
        write_slide(slide_path, size=args.size, seed=args.seed)
        print(f"generated {slide_path} in {time.perf_counter() - tic:.1f}s", file=sys.stderr)
    steps.update()
    steps.set_postfix_str(f"loading model {args.model}")
    engine = load_engine(args.model)
    steps.update()
    steps.set_postfix_str("analysing (thumbnail, token scores, detail regions, answer)")
    with open_slide(slide_path) as slide:
        pgfc = engine.pgfc.with_overrides(mode=args.pgfc, num_regions=args.num_regions)
        analysis = engine.analyze(slide, args.question, pgfc=pgfc, max_new_tokens=args.max_new_tokens)
        steps.update()
        steps.set_postfix_str("writing outputs")
        result_dir = out / "result"
        paths = write_outputs(analysis, slide.thumbnail(1024), result_dir)
        paths["report.html"] = write_report(analysis, slide, result_dir)
    steps.update()
    steps.close()
    labels = json.loads(slide_path.with_suffix(".json").read_text()).get("labels", {})
    print(f"\nslide:    {slide_path} ({analysis.slide_size[0]}x{analysis.slide_size[1]} px)")
    print(f"model:    {analysis.meta.get('model', args.model)}")
    print(f"question: {args.question}")
    print(f"answer:   {analysis.answer!r}")
    truth = {k: labels[k] for k in ("organ", "subtype", "grade") if k in labels}
    if truth:
        print(f"truth:    {truth}")
    print(f"regions:  {len(analysis.regions)} read at high resolution; total {analysis.timings.get('total', 0):.2f}s")
    print("outputs:")
    for name, path in paths.items():
        print(f"  {name:<16} {path}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-out", help="output folder (the slide is generated once and reused)")
    p.add_argument("--size", type=int, default=16384, help="level-0 side of the synthetic slide in pixels")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--model", default="nano", help="nano (default), test-tiny or a model folder")
    p.add_argument("-q", "--question", default=DEFAULT_QUESTION)
    p.add_argument("--pgfc", default="attention", choices=["attention", "random", "none"])
    p.add_argument("--num-regions", type=int, help=NUM_REGIONS_HELP)
    p.add_argument("--max-new-tokens", type=int, default=64)


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="generate a SynthPath slide and analyse it (the `make demo` job)")
    add_arguments(p)
    p.set_defaults(func=run_demo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnipath_lvlm.demo", description=__doc__)
    add_arguments(parser)
    return run_demo(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
