"""Checkpoint conversion: pure key-mapping functions from native formats to OmniPath names.

Each ``map_*`` function takes a state dict in its source's own naming and returns
``{omnipath_key: tensor}`` for the parts OmniPath uses, dropping what it does not
(SigLIP's text tower, pooling head, post-layernorm and layers after the feature layer; UNI's
classifier). ``check_and_load`` compares every shape with the model before loading anything.

Accepted spellings:
* LLaVA (llava-hf on disk and transformers v5 in memory): ``vision_tower.vision_model.*`` /
  ``model.vision_tower.*``, ``multi_modal_projector.*`` / ``model.multi_modal_projector.*``,
  ``language_model.model.*`` / ``model.language_model.*``, ``language_model.lm_head.*`` / ``lm_head.*``.
* SigLIP (transformers ``SiglipModel`` or ``SiglipVisionModel`` directories): ``vision_model.*``
  or bare ``embeddings.* / encoder.*``.
* UNI (timm ``pytorch_model.bin``): timm ViT names (``patch_embed.*``, ``blocks.N.*``, ``norm.*``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


def _siglip_rest(rest: str, num_layers_used: int) -> str | None:
    """Map a SigLIP vision key without prefix to the tower's name, or None to drop it."""
    if rest.startswith(("post_layernorm.", "head.")):
        return None
    m = _LAYER.match(rest)
    if m and int(m.group(1)) >= num_layers_used:
        return None
    if rest.startswith(("embeddings.", "encoder.")):
        return "vision_tower.siglip." + rest
    return None


def map_siglip(state_dict: Mapping[str, torch.Tensor], num_layers_used: int) -> dict[str, torch.Tensor]:
    """SigLIP checkpoint (full model or vision model) -> ``vision_tower.siglip.*``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("text_model.", "logit_scale", "logit_bias")):
            continue
        rest = key[len("vision_model.") :] if key.startswith("vision_model.") else key
        new = _siglip_rest(rest, num_layers_used)
        if new is not None:
            out[new] = value
    return out


def map_uni(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm UNI checkpoint -> ``vision_tower.uni.vit.*`` (classifier head dropped)."""
    return {
        "vision_tower.uni.vit." + key: value
        for key, value in state_dict.items()
        if not key.startswith(("head.", "fc_norm.")) or key.startswith("head_drop")
    }


_LLAVA_RULES = (
    (re.compile(r"^(?:model\.)?vision_tower\.(?:vision_model\.)?(.*)$"), "vision"),
    (re.compile(r"^(?:model\.)?multi_modal_projector\.(.*)$"), "multi_modal_projector."),
    (re.compile(r"^language_model\.model\.(.*)$"), "language_model.model."),
    (re.compile(r"^model\.language_model\.(.*)$"), "language_model.model."),
    (re.compile(r"^(?:language_model\.)?lm_head\.(.*)$"), "language_model.lm_head."),
)


def map_llava(
    state_dict: Mapping[str, torch.Tensor],
    num_siglip_layers_used: int | None,
    parts: tuple[str, ...] = ("vision", "projector", "language"),
) -> dict[str, torch.Tensor]:
    """LLaVA checkpoint -> OmniPath keys, for the chosen ``parts``.

    ``num_siglip_layers_used`` is needed when ``"vision"`` is in ``parts`` (the tower must be SigLIP).
    """
    out = {}
    for key, value in state_dict.items():
        for pattern, target in _LLAVA_RULES:
            m = pattern.match(key)
            if not m:
                continue
            if target == "vision":
                if "vision" in parts:
                    new = _siglip_rest(m.group(1), num_siglip_layers_used)
                    if new is not None:
                        out[new] = value
            elif target.startswith("multi_modal_projector"):
                if "projector" in parts:
                    out[target + m.group(1)] = value
            elif "language" in parts:
                out[target + m.group(1)] = value
            break
    return out


def check_and_load(model: nn.Module, mapped: Mapping[str, torch.Tensor], *, source: str, required_prefixes: tuple[str, ...]) -> None:
    """Load ``mapped`` into ``model`` after checking names and shapes.

    Every model key under ``required_prefixes`` must be provided, nothing unknown may be
    provided, and every shape must match; otherwise a ValueError lists the problems.
    """
    own = model.state_dict()
    problems = []
    for key, value in mapped.items():
        if key not in own:
            problems.append(f"unexpected key {key}")
        elif tuple(own[key].shape) != tuple(value.shape):
            problems.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
    for key in own:
        if key.startswith(required_prefixes) and key not in mapped and not _is_derived_buffer(key):
            problems.append(f"missing key {key}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{source} does not fit the model ({len(problems)} problems):\n  {shown}{more}")
    with torch.no_grad():
        for key, value in mapped.items():
            own[key].copy_(value.to(own[key].dtype))


def _is_derived_buffer(key: str) -> bool:
    # non-learned buffers that the modules rebuild themselves
    return key.endswith(("position_ids", "num_batches_tracked"))
