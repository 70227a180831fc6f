"""`omnipath info --config NAME`: parameter counts per component, computed on the meta device.

No weight memory is allocated, so ``omnipath-7b`` reports in seconds on a laptop.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

COMPONENTS = {
    "vision.siglip": "vision_tower.siglip",
    "vision.uni": "vision_tower.uni",
    "projector": "multi_modal_projector",
    "llm": "language_model",
    "mask_encoder": "mask_encoder",
    "mask_decoder": "mask_head",
}


def model_info(name: str, **overrides: Any) -> dict[str, Any]:
    import torch

    from omnipath_lvlm.config import OmniPathConfig
    from omnipath_lvlm.model import OmniPathForConditionalGeneration

    config = OmniPathConfig.from_name(name, **overrides)
    with torch.device("meta"):
        model = OmniPathForConditionalGeneration(config)
    counts = {key: 0 for key in COMPONENTS}
    for pname, param in model.named_parameters():
        for key, prefix in COMPONENTS.items():
            if pname.startswith(prefix + "."):
                counts[key] += param.numel()
                break
        else:
            raise RuntimeError(f"parameter {pname} belongs to no reported component")
    counts["total"] = sum(counts.values())
    v = config.vision_config
    return {
        "config": name,
        "parameters": counts,
        "image_tokens_per_image": v.num_image_tokens,
        "image_size": v.image_size,
        "scales": list(v.scales),
        "input_image_size": v.max_image_size,
        "use_uni": v.use_uni,
        "projector_input_dim": v.feature_dim,
        "llm_hidden_size": config.text_config.hidden_size,
    }


def _run(args: argparse.Namespace) -> int:
    info = model_info(args.config)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['config']}: {info['image_tokens_per_image']} image tokens per image "
          f"({info['input_image_size']} px input, scales {info['scales']}, UNI {'on' if info['use_uni'] else 'off'})")
    for key, n in info["parameters"].items():
        print(f"  {key:<14} {n:>15,d}  ({n / 1e6:,.1f} M)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="parameter counts and token budget of a model preset")
    p.add_argument("--config", default="omnipath-7b", help="preset name (omnipath-7b, nano, test-tiny)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run)
