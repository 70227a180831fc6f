import pytest

from omnipath_lvlm.config import OmniPathConfig


@pytest.mark.parametrize("name", ["test-tiny", "nano", "omnipath-7b"])
def test_presets_build_and_round_trip(name, tmp_path):
    config = OmniPathConfig.from_name(name)
    assert config.preset == name
    config.save_pretrained(tmp_path)
    again = OmniPathConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()
    assert again.vision_config.feature_dim == config.vision_config.feature_dim


def test_paper_preset_values():
    c = OmniPathConfig.from_name("omnipath-7b")
    v = c.vision_config
    assert v.scales == (1, 2) and v.feature_layer == -2 and v.use_uni
    assert v.grid_size == 27 and v.num_image_tokens == 729
    assert v.num_siglip_layers_used == 26  # penultimate of 27
    assert v.uni_config.init_values == pytest.approx(1e-5) and v.uni_config.patch_size == 16
    assert v.feature_dim == 2 * 1152 + 2 * 1024
    assert c.text_config.hidden_size == 4096 and c.text_config.num_hidden_layers == 32
    assert c.mask_config.decoder_dim == 256
    assert (c.mask_config.bce_weight, c.mask_config.dice_weight) == (2.0, 0.5)


def test_overrides_by_keyword():
    c = OmniPathConfig.from_name("test-tiny", use_uni=False, scales=(1,))
    assert not c.vision_config.use_uni and c.vision_config.scales == (1,)
    assert c.vision_config.feature_dim == c.vision_config.siglip_config.hidden_size
    c = OmniPathConfig.from_name("test-tiny", text_config={"num_hidden_layers": 3}, mask_config={"dice_weight": 1.0})
    assert c.text_config.num_hidden_layers == 3 and c.mask_config.dice_weight == 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"scales": (2,)}, "start with the base scale 1"),
        ({"scales": (1, 1)}, "distinct"),
        ({"colour": "red"}, "unknown override 'colour'"),
        ({"image_token_id": 99999}, "outside the text model's vocabulary"),
        ({"mask_config": {"decoder_dim": 30}}, "decoder_dim"),
        ({"text_config": 3}, "must be a dict"),
    ],
)
def test_invalid_configs_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        OmniPathConfig.from_name("test-tiny", **overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*test-tiny"):
        OmniPathConfig.from_name("huge")
