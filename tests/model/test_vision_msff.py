"""Multi-scale feature fusion against encoding by hand."""
import torch
import torch.nn.functional as F

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model.vision import build_vision_tower


def _tower(**overrides):
    torch.manual_seed(0)
    config = OmniPathConfig.from_name("test-tiny", **overrides)
    config.vision_config._attn_implementation = "eager"
    return build_vision_tower(config.vision_config).eval(), config.vision_config


def test_scale_one_without_uni_is_plain_siglip():
    tower, v = _tower(use_uni=False, scales=(1,))
    x = torch.randn(2, 3, v.image_size, v.image_size)
    with torch.no_grad():
        fused = tower(x)
        plain = tower.siglip(x)
    assert fused.shape == (2, v.num_image_tokens, v.siglip_config.hidden_size)
    assert torch.equal(fused, plain)


def test_scale_two_equals_four_tiles_by_hand():
    tower, v = _tower()
    base, g = v.image_size, v.grid_size
    x = torch.randn(1, 3, 2 * base, 2 * base)
    with torch.no_grad():
        fused = tower(x)  # (1, g*g, F)
        small = F.interpolate(x, size=(base, base), mode="bilinear", align_corners=False, antialias=True)
        expected = []
        for enc, grid_of in ((tower.siglip, g), (tower.uni, base // v.uni_config.patch_size)):
            prep = (lambda t: t) if enc is tower.siglip else tower.to_uni_normalisation

            def as_grid(tokens, side):
                return tokens.reshape(1, side, side, -1).permute(0, 3, 1, 2)

            s1 = as_grid(enc(prep(small)), grid_of)
            tiles = [x[:, :, r * base:(r + 1) * base, c * base:(c + 1) * base] for r in range(2) for c in range(2)]
            grids = [as_grid(enc(prep(t)), grid_of) for t in tiles]
            top = torch.cat([grids[0], grids[1]], dim=3)
            bottom = torch.cat([grids[2], grids[3]], dim=3)
            s2 = F.avg_pool2d(torch.cat([top, bottom], dim=2), 2)
            for m in (s1, s2):
                if m.shape[-1] != g:
                    m = F.interpolate(m, size=(g, g), mode="bilinear", align_corners=False)
                expected.append(m)
        expected = torch.cat(expected, dim=1).flatten(2).transpose(1, 2)
    assert fused.shape == expected.shape == (1, g * g, v.feature_dim)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)


def test_uni_grid_is_resampled_to_siglip_grid():
    tower, v = _tower()
    assert v.image_size // v.uni_config.patch_size != v.grid_size  # the tiny preset exercises resampling
    out = tower(torch.randn(1, 3, v.max_image_size, v.max_image_size))
    assert out.shape == (1, v.num_image_tokens, v.feature_dim)


def test_wrong_input_shapes_are_refused():
    tower, v = _tower()
    import pytest

    with pytest.raises(ValueError, match="RGB"):
        tower(torch.randn(1, 4, v.max_image_size, v.max_image_size))
    with pytest.raises(ValueError, match=f"must be {v.max_image_size}x{v.max_image_size}"):
        tower(torch.randn(1, 3, v.image_size, v.image_size))
