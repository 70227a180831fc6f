"""``omnipath train``: run a training config, optionally resuming.

    omnipath train CONFIG.yaml [section.key=value ...] [--resume] [--check]
    accelerate launch --config_file configs/accelerate/ddp.yaml -m omnipath_lvlm train CONFIG.yaml

Overrides use dotted keys with YAML values (``optim.lr=1e-4 train.max_steps=20``).
``--check`` validates the config (files, modules, batch split for this launch's world
size) and prints it resolved, without building a model.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``."""
    parser = subparsers.add_parser("train", help="fine-tune OmniPath from a YAML config (accelerate)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="training config YAML (see configs/train/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted-key overrides, e.g. optim.lr=1e-4")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of output_dir")
    parser.add_argument("--check", action="store_true", help="validate and print the resolved config, then exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    import yaml

    from omnipath_lvlm.train.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        if args.check:
            from accelerate import PartialState

            world_size = PartialState(cpu=config.train.cpu).num_processes
            config.validate(world_size=world_size)
            accumulation = config.gradient_accumulation(world_size)
            config.train.gradient_accumulation_steps = accumulation
            config.train.global_batch_size = config.global_batch(world_size)
            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        from omnipath_lvlm.train.recipe import train

        result = train(config, resume=args.resume)
    except ConfigError as exc:
        print(f"omnipath train: invalid config: {exc}", file=sys.stderr)
        return 2
    where = result.final_dir if result.final_dir is not None else result.run_dir
    print(f"trained {result.state.step} steps; model in {where}")
    return 0
