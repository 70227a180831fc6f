"""The `omnipath` command: thin argument parsing that calls the library.

Each area of the package owns its subcommands in a small `cli` module exposing
``register(subparsers)``; this file only collects them. Importing an area is
deferred until its subcommand runs, so ``omnipath --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, module that defines `register(subparsers)`)
_AREAS = (
    "omnipath_lvlm.info",
    "omnipath_lvlm.chat",
    "omnipath_lvlm.demo",
    "omnipath_lvlm.data.cli",
    "omnipath_lvlm.synth.cli",
    "omnipath_lvlm.wsi.cli",
    "omnipath_lvlm.train.cli",
    "omnipath_lvlm.eval.cli",
    "omnipath_lvlm.serve.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omnipath", description="OmniPath pathology vision-language model")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
