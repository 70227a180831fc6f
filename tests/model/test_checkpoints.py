"""Loading the paper's starting point from tiny random checkpoints written in each source's native format."""
import pytest
import torch
from transformers import (
    CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipConfig, SiglipModel,
)

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.tokenizer import default_tokenizer


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    torch.manual_seed(0)
    tiny = OmniPathConfig.preset_dict("test-tiny")
    # llava-hf LLaVA-1.5 folder: CLIP tower (replaced by SigLIP in OmniPath), Llama text model, tokenizer
    text = LlamaConfig(**{k: v for k, v in tiny["text_config"].items() if k != "model_type"})
    clip = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8, image_size=32)
    llava = LlavaForConditionalGeneration(LlavaConfig(vision_config=clip.to_dict(), text_config=text.to_dict(), image_token_index=4))
    llava.save_pretrained(root / "llava")
    default_tokenizer().save_pretrained(root / "llava")
    # transformers SigLIP folder (full SiglipModel: vision + text towers)
    sig_vision = dict(tiny["vision_config"]["siglip_config"])
    sig_vision.pop("vision_use_head")
    siglip = SiglipModel(SiglipConfig(vision_config=sig_vision, text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)))
    siglip.save_pretrained(root / "siglip")
    # UNI: timm state dict saved with torch.save as pytorch_model.bin
    from timm.models.vision_transformer import VisionTransformer

    uni_cfg = OmniPathConfig.from_name("test-tiny").vision_config.uni_config
    vit = VisionTransformer(**{**uni_cfg.timm_kwargs(), "num_classes": 5, "global_pool": "token"})
    torch.save(vit.state_dict(), root / "pytorch_model.bin")
    return root, llava, siglip, vit


def test_from_components_loads_every_native_checkpoint(native):
    root, llava, siglip, vit = native
    model, tokenizer = OmniPathForConditionalGeneration.from_components(
        llava=root / "llava", siglip=root / "siglip", uni=root / "pytorch_model.bin", preset="test-tiny")
    assert tokenizer.convert_tokens_to_ids("<mask>") == model.config.mask_token_id
    state = model.state_dict()
    ll = llava.state_dict()
    assert torch.equal(state["language_model.model.layers.1.mlp.up_proj.weight"], ll["model.language_model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(state["language_model.lm_head.weight"], ll["lm_head.weight"])
    sg = siglip.state_dict()
    sig_key = next(k for k in sg if k.endswith("encoder.layers.0.self_attn.q_proj.weight") and "vision" in k)
    assert torch.equal(state["vision_tower.siglip.encoder.layers.0.self_attn.q_proj.weight"], sg[sig_key])
    assert torch.equal(state["vision_tower.uni.vit.blocks.1.ls1.gamma"], vit.state_dict()["blocks.1.ls1.gamma"])
    # the projector's input grew (SigLIP+UNI at two scales): it is freshly initialised, not copied
    assert model.multi_modal_projector.linear_1.in_features == model.config.vision_config.feature_dim
    assert model.multi_modal_projector.linear_1.in_features != llava.model.multi_modal_projector.linear_1.in_features


def test_missing_paths_say_what_and_how(native, tmp_path):
    root, *_ = native
    with pytest.raises(FileNotFoundError, match=r"llava checkpoint folder .*nowhere.*hf download llava-hf"):
        OmniPathForConditionalGeneration.from_components(llava=tmp_path / "nowhere", siglip=root / "siglip", uni=None, preset="test-tiny")
    with pytest.raises(FileNotFoundError, match=r"uni checkpoint file .*missing.bin.*MahmoodLab/UNI"):
        OmniPathForConditionalGeneration.from_components(llava=root / "llava", siglip=root / "siglip", uni=tmp_path / "missing.bin", preset="test-tiny")


def test_shape_mismatch_is_reported(native, tmp_path):
    root, *_ = native
    torch.save({"patch_embed.proj.weight": torch.zeros(3, 3, 16, 16)}, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match=r"patch_embed.proj.weight: checkpoint \(3, 3, 16, 16\) vs model"):
        OmniPathForConditionalGeneration.from_components(llava=root / "llava", siglip=root / "siglip", uni=tmp_path / "bad.bin", preset="test-tiny")
