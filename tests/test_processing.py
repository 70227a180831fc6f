"""OmniPathProcessor: template, image-token expansion, labels, masks, errors, save/load."""
import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.processing import OmniPathProcessor


@pytest.fixture(scope="module")
def processor():
    return OmniPathProcessor.for_config(OmniPathConfig.from_name("test-tiny"))


def _img(w=50, h=40):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_images_expand_to_pooled_token_counts(processor):
    conv = [{"from": "human", "value": "<image>\nDetail region at x 0.1-0.2, y 0.3-0.4: <image>\nGrade?"}]
    enc = processor.encode_conversation(conv, image_pools=[1, 3], add_generation_prompt=True)
    g = processor.grid_size
    expected = g * g + (-(-g // 3)) ** 2
    assert enc.input_ids.count(processor.image_token_id) == expected
    assert processor.tokens_per_image(1) == g * g


def test_labels_cover_exactly_the_assistant_answers(processor):
    conv = [{"from": "human", "value": "<image>\nWhat organ is this?"}, {"from": "gpt", "value": "Liver"},
            {"from": "human", "value": "Grade?"}, {"from": "gpt", "value": "well differentiated"}]
    enc = processor.encode_conversation(conv, image_pools=[1])
    labelled = [t for t, l in zip(enc.input_ids, enc.labels) if l != -100]
    assert all(l in (-100, t) for t, l in zip(enc.input_ids, enc.labels))
    text = processor.tokenizer.decode(labelled)
    assert "Liver" in text and "well differentiated" in text and "organ" not in text and "Grade" not in text
    assert text.count(processor.tokenizer.eos_token) == 2


def test_inference_prompt_is_the_training_prefix(processor):
    turn = [{"from": "human", "value": "<image>\nWhat organ is this?"}]
    prompt = processor.encode_conversation(turn, [1], add_generation_prompt=True).input_ids
    full = processor.encode_conversation(turn + [{"from": "gpt", "value": "Liver"}], [1]).input_ids
    assert full[: len(prompt)] == prompt


def test_batch_call_left_pads_and_marks_input_masks(processor):
    convs = [[{"from": "human", "value": "<image>\nIs this region <mask> a nerve?"}],
             [{"from": "human", "value": "<image>\nDetect all nuclei in this larger pathology image please."}]]
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    batch = processor(convs, images=[_img(), _img(30, 60)], input_masks=[mask])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0, 0] == 0 or batch["attention_mask"][1, 0] == 0  # left padding
    assert batch["pixel_values"].shape == (2, 3, processor.max_image_size, processor.max_image_size)
    assert batch["mask_input_positions"].sum() == 1
    assert batch["mask_pixel_values"].shape == (1, 1, processor.mask_input_size, processor.mask_input_size)


def test_errors_name_the_problem(processor):
    with pytest.raises(ValueError, match="2 images given but the prompts have 1 <image> tokens"):
        processor([{"from": "human", "value": "<image>\nGrade?"}], images=[_img(), _img()])
    with pytest.raises(ValueError, match="more <image> placeholders"):
        processor([{"from": "human", "value": "<image><image>\nGrade?"}], images=[_img()])
    with pytest.raises(ValueError, match="user\\) is empty"):
        processor([{"from": "human", "value": "   "}])
    with pytest.raises(ValueError, match="1 input masks given but the user turns hold 0 <mask> tokens"):
        processor("What organ?", input_masks=[np.ones((4, 4))])
    with pytest.raises(ValueError, match="non-empty 2-D binary mask"):
        processor("Is <mask> a vessel?", input_masks=[np.ones((4, 4, 3))])
    with pytest.raises(ValueError, match="RGB image"):
        processor.preprocess_images([np.zeros((4, 4, 5), np.uint8)])


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    again = OmniPathProcessor.from_pretrained(tmp_path)
    conv = [{"from": "human", "value": "<image>\nGrade?"}]
    assert again.encode_conversation(conv, [1]).input_ids == processor.encode_conversation(conv, [1]).input_ids
    assert (again.image_size, again.max_image_size, again.grid_size) == (processor.image_size, processor.max_image_size, processor.grid_size)
