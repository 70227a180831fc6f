"""The full model on test-tiny: gradients, segmentation overfit, save/load, generation, bad input."""
import numpy as np
import pytest
import torch

from helpers_model import random_pixels, tiny
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import pad_batch


def _seg_batch(processor, with_input_mask=True):
    conv = [
        {"from": "human", "value": "<image>\nSegment the region like this one: <mask>" if with_input_mask else "<image>\nSegment all nerves."},
        {"from": "gpt", "value": "<mask>"},
    ]
    enc = processor.encode_conversation(conv, image_pools=[1])
    batch = pad_batch([enc], processor.tokenizer.pad_token_id, left=False)
    s = processor.mask_target_size
    target = torch.zeros(1, s, s)
    target[0, s // 4 : s // 2, s // 3 : 3 * s // 4] = 1
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                  pixel_values=random_pixels(processor), image_pool=torch.tensor([1]), mask_targets=target)
    if with_input_mask:
        inputs["mask_pixel_values"] = target.unsqueeze(1)
        inputs["mask_input_positions"] = batch["mask_input_positions"]
    return inputs, target


def test_every_module_gets_gradients():
    model, processor = tiny()
    inputs, _ = _seg_batch(processor)
    out = model(**inputs)
    assert out.lm_loss is not None and out.mask_bce is not None and out.mask_dice is not None
    out.loss.backward()
    modules = {
        "vision.siglip": model.vision_tower.siglip, "vision.uni": model.vision_tower.uni,
        "projector": model.multi_modal_projector, "llm": model.language_model,
        "mask_encoder": model.mask_encoder, "mask_decoder": model.mask_head,
    }
    for name, module in modules.items():
        params = list(module.parameters())
        assert all(p.requires_grad for p in params), f"{name} has frozen parameters"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), f"{name} got no gradient"


def test_loss_is_lm_plus_weighted_mask_losses():
    model, processor = tiny()
    inputs, _ = _seg_batch(processor)
    out = model(**inputs)
    mc = model.config.mask_config
    expected = out.lm_loss + mc.bce_weight * out.mask_bce + mc.dice_weight * out.mask_dice
    torch.testing.assert_close(out.loss, expected)


def test_overfits_one_segmentation_sample():
    model, processor = tiny(seed=1)
    inputs, target = _seg_batch(processor, with_input_mask=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dice = 0.0
    for step in range(200):
        out = model(**inputs)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        with torch.no_grad():
            logits = torch.nn.functional.interpolate(out.pred_masks, size=target.shape[-2:], mode="bilinear")[:, 0]
            pred = (logits > 0).float()
            dice = (2 * (pred * target).sum() / (pred.sum() + target.sum())).item()
        if dice > 0.9 and step > 20:
            break
    assert dice > 0.9, f"Dice {dice:.3f} after {step + 1} steps"


def test_save_load_round_trip(tmp_path):
    model, processor = tiny()
    model.eval()
    inputs, _ = _seg_batch(processor)
    with torch.no_grad():
        before = model(**inputs)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = OmniPathForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = loaded(**inputs)
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)  # every weight and buffer, bit for bit
    # the same weights in a new instance may take other kernel paths (memory layout): equal to float noise
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(after.pred_masks, before.pred_masks, rtol=0, atol=1e-5)
    from transformers import AutoModelForImageTextToText

    auto = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert isinstance(auto, OmniPathForConditionalGeneration)


def test_generate_returns_a_mask_per_generated_mask_token():
    model, processor = tiny()
    model.eval()
    with torch.no_grad():  # make <mask> the most likely next token so generation emits it
        model.language_model.lm_head.weight[processor.mask_token_id] *= 0
        model.language_model.lm_head.weight[processor.mask_token_id] += 0  # keep shape
        bias = torch.zeros(model.config.text_config.vocab_size)
        bias[processor.mask_token_id] = 1e4
    model.language_model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    from PIL import Image

    img = Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8))
    batch = processor([{"from": "human", "value": "<image>\nSegment the nerve."}], images=[img])
    result = model.generate_with_masks(**batch, max_new_tokens=3, do_sample=False)
    assert (result.new_tokens[0] == processor.mask_token_id).sum() == 3
    g = model.config.vision_config.grid_size
    assert len(result.masks[0]) == 3 and result.masks[0][0].shape == (4 * g, 4 * g)
    sampled = model.generate_with_masks(**batch, max_new_tokens=2, do_sample=True, top_k=5)
    assert sampled.new_tokens.shape[1] == 2


def test_bad_inputs_name_the_problem():
    model, processor = tiny()
    px = random_pixels(processor, 2)
    g2 = model.config.vision_config.num_image_tokens
    ids = torch.tensor([[1, 7] + [processor.image_token_id] * g2 + [8]])
    with pytest.raises(ValueError, match="2 images give .* but the prompt has 36 image tokens"):
        model(input_ids=ids, pixel_values=px)
    with pytest.raises(ValueError, match="RGB"):
        model(input_ids=ids, pixel_values=torch.randn(1, 1, processor.max_image_size, processor.max_image_size))
    with pytest.raises(ValueError, match="prompt is empty"):
        model(input_ids=torch.zeros(1, 0, dtype=torch.long))
    inputs, _ = _seg_batch(processor)
    inputs["mask_pixel_values"] = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="2 input masks given but the prompt marks 1"):
        model(**inputs)
    inputs, _ = _seg_batch(processor)
    inputs["mask_targets"] = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="mask targets have shape"):
        model(**inputs)


@pytest.mark.parametrize("model_type", ["qwen2", "mistral"])
def test_other_causal_lm_backbones(model_type):
    text = {"model_type": model_type, "vocab_size": 2048, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0,
            "bos_token_id": 1, "eos_token_id": 2}
    model, processor = tiny(text_config=text)
    assert type(model.language_model).__name__.lower().startswith(model_type)
    inputs, _ = _seg_batch(processor)
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    model.eval()
    from PIL import Image

    batch = processor([{"from": "human", "value": "<image>\nWhat organ is this?"}], images=[Image.new("RGB", (40, 30), "pink")])
    result = model.generate_with_masks(**batch, max_new_tokens=3, do_sample=False)
    assert result.new_tokens.shape == (1, 3)


def test_generation_result_new_masks_are_the_generated_tokens_maps_thresholded_at_zero():
    from omnipath_lvlm.model.omnipath import GenerationResult

    mask_id = 7
    maps = [torch.full((4, 4), -1.0), torch.full((4, 4), 2.0), torch.tensor([[1.0, -1.0], [0.0, 3.0]])]
    result = GenerationResult(
        sequences=torch.zeros(2, 5, dtype=torch.long),
        new_tokens=torch.tensor([[3, 7, 7], [3, 4, 5]]),
        masks=[maps, [torch.ones(2, 2)]],  # sample 0: one input-mask map, then two generated; sample 1: input only
    )
    first = result.new_masks(0, mask_id)
    assert [m.dtype for m in first] == [torch.bool, torch.bool]
    assert first[0].all() and first[1].tolist() == [[True, False], [False, True]]
    assert result.new_masks(1, mask_id) == []
