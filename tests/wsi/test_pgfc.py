"""PGFC pieces: A_last equals transformers' eager layer-0 attention; selection; token cell -> slide region."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import OmniPathProcessor
from omnipath_lvlm.wsi.pgfc import (
    PGFCConfig,
    build_conversation,
    cell_box,
    first_layer_attention,
    last_token_image_attention,
    prompt_embeddings,
    read_regions,
    region_box,
    select_tokens,
)
from omnipath_lvlm.wsi.slide import open_slide

SMALL_TEXT = {"vocab_size": 2048, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2}
TEXT_CONFIGS = {
    "llama": {},
    "qwen2": {"model_type": "qwen2", **SMALL_TEXT},  # q/k/v biases
    "qwen3": {"model_type": "qwen3", "head_dim": 16, **SMALL_TEXT},  # q/k norms
    "mistral-window": {"model_type": "mistral", "sliding_window": 20, **SMALL_TEXT},
}


def eager_model(text_config: dict) -> OmniPathForConditionalGeneration:
    config = OmniPathConfig.from_name("test-tiny", **({"text_config": text_config} if text_config else {}))
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return OmniPathForConditionalGeneration(config).eval()


def noise_image(seed: int, size=(80, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=list(TEXT_CONFIGS))
def family_model(request) -> OmniPathForConditionalGeneration:
    return eager_model(TEXT_CONFIGS[request.param])


@pytest.mark.parametrize("left_pad", [0, 3])
def test_last_token_scores_equal_eager_layer0_attention(family_model, left_pad):
    model = family_model
    assert model.language_model.config._attn_implementation == "eager"
    processor = OmniPathProcessor.for_config(model.config)
    enc = processor.encode_conversation(build_conversation("Which grade is this tumour?"), [1], add_generation_prompt=True)
    enc.input_ids = [processor.tokenizer.pad_token_id] * left_pad + enc.input_ids
    enc.labels = [-100] * left_pad + enc.labels
    enc.mask_input_positions = [False] * left_pad + enc.mask_input_positions
    ids = torch.tensor([enc.input_ids])
    attention = (torch.arange(ids.shape[1]) >= left_pad).long()[None]  # (1, L) left padding masked
    with torch.no_grad():
        encoded = model.encode_images(processor.preprocess_images([noise_image(1)]), [1])
        embeds = prompt_embeddings(model, ids, encoded)
        scores = last_token_image_attention(model, ids, attention, embeds)  # (N_img,)
        out = model.language_model(inputs_embeds=embeds, attention_mask=attention, output_attentions=True)
    reference = out.attentions[0][0].mean(0)[-1]  # (L,) layer 0, heads averaged, last query row
    image = ids[0] == model.config.image_token_id
    assert scores.shape == (model.config.vision_config.num_image_tokens,)
    torch.testing.assert_close(scores, reference[image], atol=1e-5, rtol=0)
    # the rows of other query positions too (the figure-2 maps use image-token rows)
    rows = first_layer_attention(model, embeds, attention, [left_pad + 5, ids.shape[1] - 2])
    torch.testing.assert_close(rows, out.attentions[0][0].mean(0)[[left_pad + 5, ids.shape[1] - 2]], atol=1e-5, rtol=0)


def test_sliding_window_case_is_exercised():
    """The mistral case above only tests the window if the prompt is longer than the window."""
    model = eager_model(TEXT_CONFIGS["mistral-window"])
    processor = OmniPathProcessor.for_config(model.config)
    enc = processor.encode_conversation(build_conversation("Which grade is this tumour?"), [1], add_generation_prompt=True)
    assert model.config.text_config.sliding_window == 20 < len(enc.input_ids)


def test_attention_rejects_batches_and_foreign_positions():
    model = eager_model({})
    embeds = torch.zeros(2, 5, model.config.hidden_size)
    with pytest.raises(ValueError, match=r"\(1, L, D\)"):
        first_layer_attention(model, embeds, None, [4])
    with pytest.raises(ValueError, match="inside 0..4"):
        first_layer_attention(model, embeds[:1], None, [5])


# --------------------------------------------------------------------------- selection


def test_attention_mode_takes_top_scores_but_never_background():
    scores = np.arange(36, dtype=float).reshape(6, 6)  # best cells are the last ones
    tissue = np.ones((6, 6), bool)
    tissue[5, :] = False  # the six best cells are background
    chosen = select_tokens(scores, tissue, PGFCConfig(num_regions=4))
    assert chosen == [(4, 5), (4, 4), (4, 3), (4, 2)]
    assert all(tissue[t] for t in chosen)


def test_random_mode_draws_distinct_tissue_cells_reproducibly():
    rng = np.random.default_rng(3)
    scores, tissue = rng.random((8, 8)), rng.random((8, 8)) > 0.6
    picks = select_tokens(scores, tissue, PGFCConfig(num_regions=5, mode="random", seed=7))
    assert len(set(picks)) == 5 and all(tissue[t] for t in picks)
    assert picks == select_tokens(scores, tissue, PGFCConfig(num_regions=5, mode="random", seed=7))
    others = [select_tokens(scores, tissue, PGFCConfig(num_regions=5, mode="random", seed=s)) for s in range(8, 12)]
    assert any(o != picks for o in others)


def test_none_mode_and_scarce_tissue():
    scores, tissue = np.ones((4, 4)), np.zeros((4, 4), bool)
    assert select_tokens(scores, tissue, PGFCConfig(mode="none")) == []
    assert select_tokens(scores, tissue, PGFCConfig()) == []  # all glass: nothing to complete
    tissue[1, 2] = True
    assert select_tokens(scores, tissue, PGFCConfig(num_regions=8)) == [(1, 2)]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="mode"):
        PGFCConfig(mode="top")
    with pytest.raises(ValueError, match="region_pool"):
        PGFCConfig(region_pool=0)
    with pytest.raises(ValueError, match="num_regions"):
        PGFCConfig(num_regions=-1)


# --------------------------------------------------------------------------- geometry


def test_cells_tile_a_non_square_slide():
    grid, size = 5, (3000, 1200)
    boxes = [cell_box((r, c), grid, size) for r in range(grid) for c in range(grid)]
    assert cell_box((0, 0), grid, size) == (0, 0, 600, 240)
    assert cell_box((4, 2), grid, size) == (1200, 960, 1800, 1200)
    assert sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) == pytest.approx(size[0] * size[1])
    with pytest.raises(ValueError, match="outside the 5x5"):
        cell_box((5, 0), grid, size)


def test_region_size_is_centred_and_kept_on_the_slide():
    grid, size = 4, (4000, 2000)  # cells 1000 x 500
    assert region_box((1, 1), grid, size, 300) == (1350, 600, 1650, 900)
    assert region_box((0, 0), grid, size, 800) == (100, 0, 900, 800)  # pushed down onto the slide
    assert region_box((3, 3), grid, size, 800) == (3100, 1200, 3900, 2000)  # pushed up
    assert region_box((0, 3), grid, size, 5000) == (0, 0, 5000, 5000)  # larger than the slide: from the origin


SLIDE = (3072, 2048)  # level-0 (width, height): 6x6 cells of 512 x 341.33
GLASS = (242, 240, 243)
PURPLE = (150, 60, 160)
ORANGE = (230, 120, 30)


def write_marker_slide(path: Path) -> Path:
    """An Aperio-style pyramid: glass, a purple marker over cell (2, 4), an orange one over cell (4, 1)."""
    level0 = np.empty((SLIDE[1], SLIDE[0], 3), np.uint8)
    level0[:] = GLASS
    for (row, col), rgb in (((2, 4), PURPLE), ((4, 1), ORANGE)):
        x1, y1, x2, y2 = (round(v) for v in cell_box((row, col), 6, SLIDE))
        level0[y1:y2, x1:x2] = rgb
    desc = f"Aperio Image Library v12.0.0\r\n{SLIDE[0]}x{SLIDE[1]} (256x256) JPEG/RGB Q=90|AppMag = 20|MPP = 0.5"
    with tifffile.TiffWriter(path) as tw:
        for factor in (1, 4, 16):
            level = np.asarray(Image.fromarray(level0).reduce(factor)) if factor > 1 else level0
            tw.write(level, tile=(256, 256), description=desc, photometric="rgb", compression="jpeg", metadata=None)
    return path


def test_region_of_a_chosen_token_is_read_from_the_right_place(tmp_path):
    path = write_marker_slide(tmp_path / "marker.svs")
    scores = np.zeros((6, 6))
    scores[4, 1], scores[2, 4] = 0.5, 0.9
    with open_slide(path) as slide:
        assert slide.level_count == 3
        tokens = select_tokens(scores, np.ones((6, 6), bool), PGFCConfig(num_regions=2))
        assert tokens == [(2, 4), (4, 1)]
        boxes = [region_box(t, 6, slide.dimensions) for t in tokens]
        pictures = read_regions(slide, boxes, 96)
        glass = read_regions(slide, [region_box((0, 0), 6, slide.dimensions)], 96)[0]
    assert [p.size for p in pictures] == [(96, 96), (96, 96)]
    # the inner part of each read (away from JPEG edge blur) is the marker's colour
    for picture, rgb in zip(pictures, (PURPLE, ORANGE)):
        inner = np.asarray(picture)[8:-8, 8:-8].reshape(-1, 3).mean(0)
        assert np.abs(inner - rgb).max() < 12, (inner, rgb)
    assert np.abs(np.asarray(glass).reshape(-1, 3).mean(0) - GLASS).max() < 12


def test_conversation_places_regions_as_the_training_data_does():
    """Thumbnail first, then '\\n<position text> <image>' per region, then the text (data/dataset.py layout)."""
    turns = build_conversation("Grade?", region_texts=["Detail region at x 0.00-0.50, y 0.00-0.50:", "R2:"])
    assert turns == [{"from": "human", "value": "<image>\nDetail region at x 0.00-0.50, y 0.00-0.50: <image>\nR2: <image>\nGrade?"}]
    turns = build_conversation("And the grade?", history=[("Organ?", "Liver.")], region_texts=["R1:"])
    assert [t["from"] for t in turns] == ["human", "gpt", "human"]
    assert turns[0]["value"] == "<image>\nR1: <image>\nOrgan?" and turns[2]["value"] == "And the grade?"
    with pytest.raises(ValueError, match="<image>"):
        build_conversation("Look at <image>")


def test_pipeline_reads_the_marker_cells_of_a_written_slide(tmp_path):
    """Only the two marker cells are tissue, so PGFC must choose exactly those and read them from level 0."""
    from omnipath_lvlm.wsi.pipeline import untrained_pipeline

    engine = untrained_pipeline("test-tiny")
    assert engine.grid == 6  # the marker slide is drawn on a 6 x 6 cell grid
    path = write_marker_slide(tmp_path / "marker.svs")
    analysis = engine.analyze(path, "Where is the tumour?", pgfc=PGFCConfig(num_regions=8), max_new_tokens=2)
    assert sorted(r.token for r in analysis.regions) == [(2, 4), (4, 1)]
    assert np.argwhere(analysis.tissue_grid).tolist() == [[2, 4], [4, 1]]
    for region in analysis.regions:
        assert region.box == pytest.approx(cell_box(region.token, 6, SLIDE))


def test_settings_saved_beside_a_model_come_back_as_its_defaults(tmp_path):
    import json

    assert PGFCConfig.for_model(None) == PGFCConfig() == PGFCConfig.for_model(tmp_path)  # nothing saved: defaults
    path = PGFCConfig(num_regions=4, region_pool=2, mode="random", seed=7).save(tmp_path)
    stored = json.loads(path.read_text())
    assert stored["num_regions"] == 4 and "mode" not in stored and "seed" not in stored  # run-time choices stay out
    loaded = PGFCConfig.for_model(tmp_path)
    assert (loaded.num_regions, loaded.region_pool, loaded.mode, loaded.seed) == (4, 2, "attention", 0)
    assert loaded.with_overrides(mode="none") == PGFCConfig(num_regions=4, region_pool=2, mode="none")
    assert loaded.with_overrides(num_regions=0).num_regions == 0 and loaded.with_overrides().num_regions == 4
    windowed = PGFCConfig(window_um=384.0)
    assert windowed.with_overrides().window_um == 384.0  # None keeps the model's window
    assert windowed.with_overrides(window_um="cells").window_um is None  # one token cell
    assert windowed.with_overrides(window_um="192").window_um == 192.0
    for bad in ("0", "-5", "nan", "wide"):
        with pytest.raises(ValueError, match="locate window"):
            windowed.with_overrides(window_um=bad)

    path.write_text(json.dumps({**stored, "regions": 3}))
    with pytest.raises(ValueError, match=r"pgfc\.json: unknown PGFC settings \['regions'\]"):
        PGFCConfig.for_model(tmp_path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"pgfc\.json is not valid JSON"):
        PGFCConfig.for_model(tmp_path)
    path.write_text("[4, 3]")
    with pytest.raises(ValueError, match=r"pgfc\.json must hold a JSON object"):
        PGFCConfig.for_model(tmp_path)
    path.write_text(json.dumps({**stored, "region_pool": 0}))
    with pytest.raises(ValueError, match=r"pgfc\.json: region_pool must be >= 1"):
        PGFCConfig.for_model(tmp_path)
