"""Building OmniPath from other checkpoints: an in-memory Llava, or local native-format files.

* ``from_llava(llava)``: transformers ``LlavaForConditionalGeneration`` with a SigLIP tower ->
  OmniPath with UNI off and scales (1,), same weights, same outputs.
* ``from_components(llava=DIR, siglip=DIR, uni=FILE)``: the paper's starting point. The LLM
  comes from a llava-hf LLaVA-1.5 folder, the SigLIP tower from a transformers SigLIP folder,
  UNI from timm's ``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``); the
  projector (whose input size changes) and the mask modules start from random initialisation.
Nothing is downloaded: a missing path raises ``FileNotFoundError`` saying how to obtain it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model.convert import check_and_load, map_llava, map_siglip, map_uni

HOW_TO_GET = {
    "llava": "download it once on a connected machine, e.g. `hf download llava-hf/llava-1.5-7b-hf --local-dir DIR`",
    "siglip": "download it once, e.g. `hf download google/siglip-so400m-patch14-384 --local-dir DIR`",
    "uni": "request access to MahmoodLab/UNI and download `pytorch_model.bin`, e.g. `hf download MahmoodLab/UNI pytorch_model.bin --local-dir DIR`",
}


def _require(path: str | Path, kind: str, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{kind} checkpoint {what} {path} does not exist: {HOW_TO_GET[kind]}")
    return path


def read_safetensors_dir(folder: Path, kind: str) -> dict[str, torch.Tensor]:
    """All tensors of a transformers checkpoint folder (single file or sharded with an index)."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for name in files:
            out.update(load_file(str(_require(folder / name, kind, "shard"))))
        return out
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"{kind} checkpoint folder {folder} has no model.safetensors, model.safetensors.index.json or "
        f"pytorch_model.bin: {HOW_TO_GET[kind]}"
    )


def from_llava(model_cls, llava, *, mask_token_id: int, mask_config: dict[str, Any] | None = None):
    """Convert an in-memory ``LlavaForConditionalGeneration`` whose vision tower is SigLIP."""
    lc = llava.config
    if lc.vision_config.model_type != "siglip_vision_model":
        raise ValueError(f"from_llava needs a SigLIP vision tower, this Llava has {lc.vision_config.model_type!r}")
    if not isinstance(lc.vision_feature_layer, int):
        raise ValueError(f"from_llava supports one vision feature layer, got {lc.vision_feature_layer}")
    if lc.vision_feature_select_strategy != "full":
        raise ValueError(
            "SigLIP has no class token, so the Llava must use vision_feature_select_strategy='full', "
            f"got {lc.vision_feature_select_strategy!r}"
        )
    vision = lc.vision_config.to_dict()
    vision["vision_use_head"] = False
    config = OmniPathConfig(
        vision_config={"siglip_config": vision, "uni_config": None, "scales": [1], "feature_layer": lc.vision_feature_layer},
        text_config=lc.text_config.to_dict(),
        projector_config={"hidden_act": lc.projector_hidden_act, "bias": lc.multimodal_projector_bias},
        mask_config=mask_config or {},
        image_token_id=lc.image_token_id,
        mask_token_id=mask_token_id,
    )
    config._attn_implementation = lc._attn_implementation
    model = model_cls(config).to(llava.dtype)
    mapped = map_llava(llava.state_dict(), config.vision_config.num_siglip_layers_used)
    check_and_load(
        model, mapped, source="Llava model",
        required_prefixes=("vision_tower.siglip.", "multi_modal_projector.", "language_model."),
    )
    return model.eval() if not llava.training else model


def from_components(
    model_cls,
    *,
    llava: str | Path,
    siglip: str | Path,
    uni: str | Path | None,
    preset: str = "omnipath-7b",
    **overrides: Any,
):
    """Build the paper's starting point from local checkpoints in their native formats.

    Returns ``(model, tokenizer)``: the tokenizer is LLaVA's with ``<mask>`` added (the
    embedding matrix is resized when the new id falls outside it).
    """
    from transformers import AutoTokenizer, SiglipConfig, SiglipVisionConfig

    llava_dir = _require(llava, "llava", "folder")
    siglip_dir = _require(siglip, "siglip", "folder")
    uni_file = None if uni is None else _require(uni, "uni", "file")
    llava_cfg = json.loads(_require(llava_dir / "config.json", "llava", "config").read_text())
    sig_cfg = json.loads(_require(siglip_dir / "config.json", "siglip", "config").read_text())
    if sig_cfg.get("model_type") == "siglip":
        sig_vision = SiglipConfig.from_dict(sig_cfg).vision_config.to_dict()
    else:
        sig_vision = SiglipVisionConfig.from_dict(sig_cfg).to_dict()
    sig_vision["vision_use_head"] = False

    tokenizer = AutoTokenizer.from_pretrained(str(llava_dir))
    from omnipath_lvlm.config import MASK_TOKEN

    tokenizer.add_special_tokens({"additional_special_tokens": [MASK_TOKEN]})
    mask_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    text = dict(llava_cfg["text_config"])
    text["vocab_size"] = max(int(text.get("vocab_size", 32000)), len(tokenizer))
    image_token_id = llava_cfg.get("image_token_index", llava_cfg.get("image_token_id"))

    base = OmniPathConfig.preset_dict(preset)
    vision = base["vision_config"]
    vision["siglip_config"] = sig_vision
    if uni is None:
        vision["uni_config"] = None
    config = OmniPathConfig.from_name(
        preset,
        **{"vision_config": vision, "text_config": text, "image_token_id": image_token_id, "mask_token_id": mask_id, **overrides},
    )
    model = model_cls(config)
    n_used = config.vision_config.num_siglip_layers_used

    llava_state = read_safetensors_dir(llava_dir, "llava")
    language = map_llava(llava_state, None, parts=("language",))
    embed_key, head_key = "language_model.model.embed_tokens.weight", "language_model.lm_head.weight"
    for key in (embed_key, head_key):  # rows for ids the checkpoint lacks keep their random init
        if key in language and language[key].shape[0] < config.text_config.vocab_size:
            full = model.state_dict()[key].clone()
            full[: language[key].shape[0]] = language[key]
            language[key] = full
    check_and_load(model, language, source=f"LLaVA checkpoint {llava_dir}", required_prefixes=("language_model.",))
    check_and_load(
        model, map_siglip(read_safetensors_dir(siglip_dir, "siglip"), n_used),
        source=f"SigLIP checkpoint {siglip_dir}", required_prefixes=("vision_tower.siglip.",),
    )
    if uni_file is not None:
        uni_state = torch.load(uni_file, map_location="cpu", weights_only=True)
        check_and_load(model, map_uni(uni_state), source=f"UNI checkpoint {uni_file}", required_prefixes=("vision_tower.uni.",))
    return model, tokenizer
