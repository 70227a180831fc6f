"""Tissue masks: a pink blob on white, blank and all-tissue images, grid bookkeeping."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.wsi.tissue import tissue_fraction, tissue_mask

PINK = (214, 120, 170)  # eosin-like
WHITE = (246, 245, 247)  # glass


def blob_image(size=(320, 240), centre=(160, 120), radius=60, seed=0) -> np.ndarray:
    """White glass with sensor noise and one pink disc; (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = WHITE
    cv2.circle(image, centre, radius, PINK, thickness=-1)
    noisy = image.astype(np.int16) + rng.integers(-4, 5, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def disc_cover(size, centre, radius, grid) -> np.ndarray:
    """Exact share of each grid cell inside the disc, from a fine rasterisation (independent of the code)."""
    width, height = size
    rows, cols = grid
    ys, xs = np.mgrid[0:height, 0:width]
    inside = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2
    return inside.reshape(rows, height // rows, cols, width // cols).mean(axis=(1, 3))


def test_blob_cells_marked_and_corners_not():
    image = blob_image()
    grid = (12, 16)  # 20 px cells
    mask = tissue_mask(image, grid=grid)
    assert mask.shape == grid and mask.dtype == bool
    cover = disc_cover((320, 240), (160, 120), 60, grid)
    assert mask[cover >= 0.6].all(), "cells well inside the blob must be tissue"
    assert not mask[cover <= 0.05].any(), "cells clear of the blob must be background"
    for corner in (mask[0, 0], mask[0, -1], mask[-1, 0], mask[-1, -1]):
        assert not corner


def test_pixel_mask_matches_blob_area():
    image = blob_image()
    mask = tissue_mask(image)
    assert mask.shape == (240, 320)
    expected = np.pi * 60**2 / (320 * 240)
    assert tissue_fraction(image) == pytest.approx(expected, rel=0.05)
    assert mask[120, 160] and not mask[5, 5]


def test_min_fraction_controls_edge_cells():
    image = blob_image()
    grid = (12, 16)
    cover = disc_cover((320, 240), (160, 120), 60, grid)
    loose = tissue_mask(image, grid=grid, min_fraction=0.05)
    strict = tissue_mask(image, grid=grid, min_fraction=0.95)
    assert loose.sum() > strict.sum()
    assert loose[cover >= 0.2].all()
    assert not strict[(cover > 0.05) & (cover < 0.8)].any()


def test_fraction_grid_agrees_with_geometry():
    fractions = tissue_fraction(blob_image(), grid=(12, 16))
    cover = disc_cover((320, 240), (160, 120), 60, (12, 16))
    assert fractions.shape == (12, 16)
    assert np.abs(fractions - cover).max() < 0.25  # blur and closing move the rim a little
    assert np.abs(fractions - cover).mean() < 0.03


@pytest.mark.parametrize("value", [255, 240, 0])
def test_blank_images_have_no_tissue(value):
    blank = np.full((96, 128, 3), value, np.uint8)
    assert not tissue_mask(blank).any()
    assert not tissue_mask(blank, grid=(7, 9)).any()
    assert tissue_fraction(blank) == 0.0


def test_noisy_glass_has_no_tissue():
    rng = np.random.default_rng(3)
    glass = np.clip(rng.normal(244, 3, (200, 200, 3)), 0, 255).astype(np.uint8)
    assert tissue_fraction(glass) < 0.01


def test_all_tissue_image_is_all_tissue():
    rng = np.random.default_rng(4)
    # two stains only (haematoxylin purple, eosin pink): Otsu alone would split the tissue in two
    stains = np.where(rng.random((120, 160, 1)) < 0.5, (120, 70, 160), (220, 130, 180)).astype(np.uint8)
    assert tissue_mask(stains, grid=(6, 8)).all()
    assert tissue_fraction(stains) > 0.99


def test_pil_input_and_rgba_transparency():
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[:, :50] = (*PINK, 255)  # left: opaque pink; right: transparent (counts as white)
    mask = tissue_mask(Image.fromarray(rgba, "RGBA"), grid=(1, 2))
    assert mask.tolist() == [[True, False]]
    same = tissue_mask(Image.fromarray(blob_image()), grid=(12, 16))
    assert np.array_equal(same, tissue_mask(blob_image(), grid=(12, 16)))


def test_float_input_in_unit_range():
    image = blob_image()
    assert np.array_equal(tissue_mask(image.astype(np.float32) / 255.0), tissue_mask(image))


def test_grid_finer_than_cells_or_uneven_splits():
    image = blob_image(size=(100, 70), centre=(50, 35), radius=20)
    mask = tissue_mask(image, grid=(7, 9))  # 70/7 and 100/9: uneven
    assert mask.shape == (7, 9) and mask[3, 4] and not mask[0, 0]
    assert tissue_mask(np.zeros((1, 1, 3), np.uint8), grid=(2, 2)).shape == (2, 2)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"grid": (0, 4)}, "positive"),
        ({"grid": "ab"}, "grid must be"),
        ({"min_fraction": 0.0, "grid": (2, 2)}, "min_fraction"),
        ({"blur": 4}, "odd"),
        ({"saturation_range": (50, 10)}, "saturation_range"),
    ],
)
def test_bad_arguments_name_the_contract(kwargs, words):
    with pytest.raises(ValueError, match=words):
        tissue_mask(blob_image(), **kwargs)


@pytest.mark.parametrize("array", [np.zeros((4, 4, 2), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros((3, 3, 3), bool)])
def test_bad_arrays_are_refused(array):
    with pytest.raises(ValueError, match="thumbnail"):
        tissue_mask(array)


def test_real_svs_thumbnail_has_tissue_in_the_middle(testdata):
    from omnipath_lvlm.wsi.slide import open_slide

    with open_slide(testdata / "CMU-1-Small-Region.svs") as slide:
        thumb = slide.thumbnail(256)
    fractions = tissue_fraction(thumb, grid=(8, 8))
    assert 0.15 < float(np.mean(fractions)) < 0.7  # the region is part tissue, part glass
    assert fractions[:, :2].mean() < 0.1  # its left edge is glass
