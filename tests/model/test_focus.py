"""The focus loss: batched first-layer attention (as PGFC reads it) and training it towards target tokens."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.model.focus import first_layer_attention, focus_loss
from omnipath_lvlm.processing import OmniPathProcessor, pad_batch
from omnipath_lvlm.wsi.pgfc import build_conversation, last_token_image_attention, prompt_embeddings


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = OmniPathConfig.from_name("test-tiny")
    return OmniPathForConditionalGeneration(config).eval(), OmniPathProcessor.for_config(config)


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def _prompts(processor, questions: list[str]) -> dict[str, torch.Tensor]:
    encoded = [processor.encode_conversation(build_conversation(q), [1], add_generation_prompt=True) for q in questions]
    return pad_batch(encoded, processor.tokenizer.pad_token_id, left=True)


def test_batched_left_padded_rows_equal_pgfc_a_last_of_each_prompt(tiny):
    model, processor = tiny
    questions = ["Grade?", "Which subtype of carcinoma is shown in this slide, if any?"]
    batch = _prompts(processor, questions)
    pixels = processor.preprocess_images([_image(1), _image(2)])
    with torch.no_grad():
        encoded = model.encode_images(pixels, [1, 1])
        embeds = model.embed_inputs(batch["input_ids"], encoded)
        length = batch["input_ids"].shape[1]
        rows = first_layer_attention(model.decoder, embeds, batch["attention_mask"],
                                     torch.full((2, 1), length - 1))[:, 0]  # (2, L)
        for i, question in enumerate(questions):
            alone = _prompts(processor, [question])["input_ids"]
            one = model.encode_images(pixels[i:i + 1], [1])
            expected = last_token_image_attention(model, alone, None, prompt_embeddings(model, alone, one))
            got = rows[i][batch["input_ids"][i] == model.config.image_token_id]
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert batch["attention_mask"][0, 0] == 0  # the short prompt really was padded


def test_focus_loss_is_minus_log_the_attention_share_on_targets():
    attention = torch.full((2, 8), 0.05)  # rows need not sum to one
    targets = torch.zeros(2, 8, dtype=torch.bool)
    targets[0, :2] = True
    targets[1, :4] = True
    expected = -(math.log(2 / 8) + math.log(4 / 8)) / 2
    assert focus_loss(attention, targets).item() == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="at least one target token"):
        focus_loss(attention, torch.zeros(2, 8, dtype=torch.bool))


def test_training_on_the_focus_loss_moves_a_last_onto_the_targets(tiny):
    _, processor = tiny
    torch.manual_seed(1)
    model = OmniPathForConditionalGeneration(OmniPathConfig.from_name("test-tiny")).train()
    batch = _prompts(processor, ["Grade?", "Subtype?"])
    pixels = processor.preprocess_images([_image(3), _image(4)])
    n = model.config.vision_config.num_image_tokens
    targets = torch.zeros(2, n, dtype=torch.bool)
    targets[0, 0] = True  # one token, in different places of the two thumbnails
    targets[1, -1] = True
    ids = batch["input_ids"]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def share() -> torch.Tensor:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=batch["attention_mask"], pixel_values=pixels,
                        image_pool=torch.tensor([1, 1]), focus_input_ids=ids, focus_attention_mask=batch["attention_mask"],
                        focus_samples=torch.tensor([0, 1]), focus_targets=targets)
        return torch.exp(-out.focus_loss)  # geometric mean of the two rows' shares

    before = share()
    for _ in range(30):
        out = model(input_ids=ids, attention_mask=batch["attention_mask"], pixel_values=pixels,
                    image_pool=torch.tensor([1, 1]), focus_input_ids=ids, focus_attention_mask=batch["attention_mask"],
                    focus_samples=torch.tensor([0, 1]), focus_targets=targets)
        optimizer.zero_grad()
        out.focus_loss.backward()
        optimizer.step()
    after = share()
    assert n >= 9 and before < 2 / n and after > 0.9, (n, before, after)  # from about uniform to nearly all


def test_focus_inputs_name_what_is_missing(tiny):
    model, processor = tiny
    batch = _prompts(processor, ["Grade?"])
    with pytest.raises(ValueError, match="focus prompts need input_ids, images, focus_samples and focus_targets"):
        model(input_ids=batch["input_ids"], pixel_values=processor.preprocess_images([_image(1)]),
              image_pool=torch.tensor([1]), focus_input_ids=batch["input_ids"])
