"""Figure-2 attention maps equal transformers' eager layer-0 attention; the figure and `omnipath attention`."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from omnipath_lvlm.cli import main
from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import OmniPathProcessor
from omnipath_lvlm.wsi.attention import attention_figure, attention_maps


@pytest.fixture(scope="module")
def eager():
    config = OmniPathConfig.from_name("test-tiny")
    config._attn_implementation = "eager"
    torch.manual_seed(1)
    model = OmniPathForConditionalGeneration(config).eval()
    return model, OmniPathProcessor.for_config(config)


def picture(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8))


def test_maps_equal_eager_attention_rows(eager):
    model, processor = eager
    image, question = picture(), "What cancer subtype is shown in this image?"
    maps = attention_maps(model, processor, image, question)
    batch = processor([{"from": "human", "value": "<image>\n" + question}], images=[image])
    ids = batch["input_ids"]
    with torch.no_grad():
        tokens = model.encode_images(batch["pixel_values"], batch["image_pool"]).tokens  # (G*G, D)
        where = (ids == model.config.image_token_id)[..., None].expand(-1, -1, model.config.hidden_size)
        embeds = model.get_input_embeddings()(ids).masked_scatter(where, tokens)
        reference = model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], output_attentions=True)
    rows = reference.attentions[0][0].mean(0)  # (L, L)
    image_pos = torch.nonzero(ids[0] == model.config.image_token_id).flatten()
    grid = model.config.vision_config.grid_size
    last = rows[-1, image_pos].numpy().reshape(grid, grid)
    np.testing.assert_allclose(maps.last, last, atol=1e-5)
    assert maps.key_token == np.unravel_index(np.argmax(last), last.shape)
    for token, values in ((maps.key_token, maps.key), (maps.ordinary_token, maps.ordinary)):
        index = token[0] * grid + token[1]
        expected = rows[image_pos[index], image_pos].numpy().reshape(grid, grid)
        np.testing.assert_allclose(values, expected, atol=1e-5)
        assert np.all(values.ravel()[index + 1:] == 0)  # causal: nothing after the token itself
    ranks = np.argsort(np.argsort(-last.ravel(), kind="stable"), kind="stable")
    assert ranks[maps.ordinary_token[0] * grid + maps.ordinary_token[1]] == grid * grid // 2  # the median token


def test_figure_has_three_panels(eager):
    model, processor = eager
    maps = attention_maps(model, processor, picture(2), "Grade?")
    figure = attention_figure(picture(2), maps, panel_size=120)
    assert figure.size == (3 * 120 + 20, 120 + 18)
    pixels = np.asarray(figure)
    panels = [pixels[18:, i * 130: i * 130 + 120] for i in range(3)]
    assert all(p.std() > 5 for p in panels)  # each panel holds a picture
    assert not np.array_equal(panels[0], panels[1])


def test_cli_attention_writes_png(tmp_path, capsys):
    source = tmp_path / "image.png"
    picture(3).save(source)
    out = tmp_path / "figure.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["attention", str(source), "-q", "Grade?", "--model", "test-tiny", "--out", str(out)]) == 0
        with Image.open(out) as figure:
            assert figure.width > 2 * figure.height
        assert main(["attention", str(source), "-q", "Grade?", "--model", "test-tiny", "--out", str(tmp_path / "f.jpg")]) == 2
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not a png")
        assert main(["attention", str(bad), "-q", "Grade?", "--model", "test-tiny", "--out", str(tmp_path / "g.png")]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
