"""Tests of the frozen vision tower's feature cache and the model's ``vision_features`` input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.train.feature_cache import VisionFeatureCache, image_key
from omnipath_lvlm.train.recipe import Trainer

from test_train_recipe import _config, _write_data


@pytest.fixture(scope="module")
def model() -> OmniPathForConditionalGeneration:
    torch.manual_seed(0)
    return OmniPathForConditionalGeneration(OmniPathConfig.from_name("test-tiny")).eval()


def _images(model, n: int, seed: int = 0) -> torch.Tensor:
    size = model.config.vision_config.max_image_size  # base size x largest scale
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_cache_returns_the_towers_output_and_computes_each_image_once(model):
    model.vision_tower.requires_grad_(False)
    calls = []
    hook = model.vision_tower.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        cache = VisionFeatureCache(model.vision_tower)
        images = _images(model, 3)
        batch = torch.stack([images[0], images[1], images[0]])  # one image twice in a batch
        first = cache(batch)
        with torch.no_grad():
            expected = model.vision_tower(batch)
        torch.testing.assert_close(first, expected, rtol=0, atol=1e-6)
        assert calls == [2, 3] and cache.stats.misses == 2 and cache.stats.hits == 1  # computed once each
        second = cache(torch.stack([images[2], images[1]]))
        assert calls[-1] == 1  # only the unseen image went through the tower
        torch.testing.assert_close(second[1], first[1], rtol=0, atol=0)
        assert len(cache) == 3 and cache.stats.hits == 2 and cache.stats.misses == 3
        assert cache.stats.bytes == 3 * first[0].numel() * first.element_size()
    finally:
        hook.remove()
        model.vision_tower.requires_grad_(True)


def test_cache_keeps_only_the_images_marked_to_store(model):
    model.vision_tower.requires_grad_(False)
    try:
        cache = VisionFeatureCache(model.vision_tower)
        images = _images(model, 3, seed=1)
        out = cache(images, store=torch.tensor([True, False, True]))
        with torch.no_grad():
            expected = model.vision_tower(images)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)  # all three answered
        assert len(cache) == 2 and cache.stats.misses == 3  # the unmarked one was encoded but not kept
        cache(images[1:2], store=torch.tensor([False]))
        assert len(cache) == 2 and cache.stats.misses == 4  # and is encoded again when seen again
        cache(images[0:1], store=torch.tensor([False]))
        assert cache.stats.hits == 1  # a kept image is still a hit, however it is marked now
        with pytest.raises(ValueError, match="3 images given but store marks 2"):
            cache(images, store=torch.tensor([True, False]))
    finally:
        model.vision_tower.requires_grad_(True)


def test_image_key_tells_images_apart_by_value_shape_and_dtype():
    image = torch.zeros(3, 4, 4)
    assert image_key(image) == image_key(image.clone())
    changed = image.clone()
    changed[0, 0, 0] = 1e-6
    assert image_key(changed) != image_key(image)
    assert image_key(image.reshape(3, 2, 8)) != image_key(image)
    assert image_key(image.double()) != image_key(image)


def test_cache_refuses_a_tower_that_trains(model):
    with pytest.raises(ValueError, match="needs a frozen vision tower, but .* parameters train"):
        VisionFeatureCache(model.vision_tower)


def test_vision_features_give_the_same_forward_as_pixels(model):
    tokens = model.config.vision_config.grid_size ** 2
    pools = [1, 2]
    n_image_tokens = tokens + (model.config.vision_config.grid_size // 2) ** 2
    input_ids = torch.tensor([[1] + [model.config.image_token_id] * n_image_tokens + [7, 8, 9]])
    images = _images(model, 2, seed=1)
    with torch.no_grad():
        from_pixels = model(input_ids=input_ids, pixel_values=images, image_pool=torch.tensor(pools)).logits
        features = model.vision_tower(images)
        from_features = model(input_ids=input_ids, vision_features=features, image_pool=torch.tensor(pools)).logits
    torch.testing.assert_close(from_features, from_pixels, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exactly one of pixel_values and vision_features"):
        model.encode_images(images, pools, vision_features=features)
    with pytest.raises(ValueError, match=r"vision_features must be \(N_img, \d+, F\)"):
        model.encode_images(vision_features=features[:, :3], image_pool=pools)


def test_training_with_the_cache_matches_training_without_it(tmp_path):
    """A frozen tower: the cached run takes the same steps as the plain one, and reuses features."""
    data = _write_data(tmp_path / "data", 4)  # 2 steps per epoch: epochs 2 and 3 read the cache
    frozen = {"freeze": ["vision_tower.siglip", "vision_tower.uni"]}
    plain = Trainer(_config(tmp_path / "plain", data, optim=frozen))
    cached = Trainer(_config(tmp_path / "cached", data, optim=frozen, data={"cache_vision_features": True}))
    assert plain.feature_cache is None and cached.feature_cache is not None
    losses = [[r["loss"] for r in trainer.train().history] for trainer in (plain, cached)]
    assert len(losses[0]) == 6
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6)
    stats = cached.feature_cache.stats
    assert stats.misses == 4 and stats.hits == 2 * 6 - 4  # 4 images, 6 steps of 2


def test_the_focus_loss_is_logged_and_optimised_beside_the_model_loss(tmp_path):
    """Records with focus boxes: the recipe adds weight x focus loss to what it minimises, and logs it."""
    import json

    data = _write_data(tmp_path / "data", 4)
    lines = [json.loads(line) for line in Path(data).read_text().splitlines()]
    for rec in lines:
        rec["gt"] = {**rec.get("gt", {}), "tumour_boxes": [[0.0, 0.0, 0.3, 0.3]]}
    Path(data).write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    trainer = Trainer(_config(tmp_path / "focus", data, data={"focus_boxes": "tumour_boxes"},
                              train={"focus_loss_weight": 2.0}))
    batch = trainer.train_data.collate([trainer.train_data[0], trainer.train_data[1]])
    out = trainer.model(**trainer._inputs(batch), use_cache=False)
    torch.testing.assert_close(trainer._objective(out), out.loss + 2.0 * out.focus_loss)
    history = trainer.train().history
    assert all("focus_loss" in row and row["focus_loss"] > 0 for row in history)
    plain = Trainer(_config(tmp_path / "plain", data, data={"focus_boxes": "tumour_boxes"}))  # weight 0: no focus prompts
    assert "focus_input_ids" not in plain.train_data.collate([plain.train_data[0]])
