"""OmniPath with UNI off and scales (1,) is LLaVA-1.5 with a SigLIP tower: same logits, same generation."""
import pytest
import torch
from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

from omnipath_lvlm.model import OmniPathForConditionalGeneration

IMAGE_ID = 100


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, patch_size=8, image_size=48)
    text = LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    config = LlavaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=IMAGE_ID,
        vision_feature_select_strategy="full", vision_feature_layer=-2,
    )
    config._attn_implementation = "eager"
    llava = LlavaForConditionalGeneration(config).eval()
    omni = OmniPathForConditionalGeneration.from_llava(
        llava, mask_token_id=101,
        mask_config=dict(decoder_dim=32, decoder_heads=2, decoder_mlp_dim=64, encoder_layers=[1, 1, 1, 1], encoder_input_size=32),
    )
    return llava, omni


def _inputs(batch=2):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 90, (batch, 50), generator=g)
    ids[:, 4:40] = IMAGE_ID  # 6x6 grid = 36 image tokens per sample
    return ids, torch.randn(batch, 3, 48, 48, generator=g)


def test_converted_model_is_llava_shaped(pair):
    _, omni = pair
    v = omni.config.vision_config
    assert not v.use_uni and v.scales == (1,) and len(omni.vision_tower.siglip.encoder.layers) == 2
    assert omni.config.text_config._attn_implementation == "eager"


def test_logits_match_llava(pair):
    llava, omni = pair
    ids, px = _inputs()
    with torch.no_grad():
        expected = llava(input_ids=ids, pixel_values=px).logits
        got = omni(input_ids=ids, pixel_values=px).logits
    assert expected.shape == got.shape
    assert (expected - got).abs().max().item() < 1e-5


def test_greedy_generation_matches_llava(pair):
    llava, omni = pair
    ids, px = _inputs(batch=1)
    a = llava.generate(input_ids=ids, pixel_values=px, max_new_tokens=12, do_sample=False, pad_token_id=0)
    b = omni.generate(input_ids=ids, pixel_values=px, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(a, b)


def test_from_llava_refuses_class_token_strategy(pair):
    llava, _ = pair
    llava.config.vision_feature_select_strategy = "default"
    try:
        with pytest.raises(ValueError, match="vision_feature_select_strategy='full'"):
            OmniPathForConditionalGeneration.from_llava(llava, mask_token_id=101)
    finally:
        llava.config.vision_feature_select_strategy = "full"
