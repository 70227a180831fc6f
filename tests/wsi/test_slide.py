"""Slide access on small pyramidal TIFFs written here, and on the real test files."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from omnipath_lvlm.wsi.slide import SlideError, open_slide, slide_info

SIZE = (2048, 1536)  # level-0 (width, height)
BACKGROUND = (235, 230, 235)  # the slide's own (pinkish grey) background
MARKER = (700, 500, 128)  # blue square: level-0 x, y, side; deliberately not tile-aligned
MARKER_RGB = (30, 60, 200)


def level0_pixels() -> np.ndarray:
    image = np.empty((SIZE[1], SIZE[0], 3), np.uint8)  # (H, W, 3)
    image[:] = BACKGROUND
    x, y, side = MARKER
    image[y : y + side, x : x + side] = MARKER_RGB
    return image


def shrink(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.resize(image, (width // factor, height // factor), interpolation=cv2.INTER_AREA)


def write_aperio(path: Path, factors=(1, 4, 16), thumbnail_size: tuple[int, int] | None = None, mpp=0.5) -> Path:
    """An Aperio-style SVS: JPEG tiles, level 0, [stripped thumbnail], reduced levels."""
    base = level0_pixels()
    desc = (
        f"Aperio Image Library v12.0.0\r\n{SIZE[0]}x{SIZE[1]} [0,0 {SIZE[0]}x{SIZE[1]}] (256x256) "
        f"JPEG/RGB Q=90|AppMag = 20|MPP = {mpp}"
    )
    jpeg = dict(compression="jpeg", compressionargs={"level": 95}, photometric="rgb", metadata=None)
    with tifffile.TiffWriter(path) as tw:
        tw.write(base, tile=(256, 256), description=desc, **jpeg)
        if thumbnail_size is not None:
            thumb = cv2.resize(base, thumbnail_size, interpolation=cv2.INTER_AREA)
            tw.write(thumb, rowsperstrip=16, description=desc + f" -> {thumbnail_size[0]}x{thumbnail_size[1]}", **jpeg)
        for factor in factors[1:]:
            tw.write(shrink(base, factor), tile=(256, 256), description=desc, **jpeg)
    return path


def blue_box(picture: Image.Image) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) bounding box of clearly blue pixels."""
    rgb = np.asarray(picture).astype(int)
    ys, xs = np.nonzero(rgb[:, :, 2] - rgb[:, :, 0] > 80)
    assert len(xs), "no marker pixels found"
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.fixture(scope="module")
def aperio(tmp_path_factory) -> Path:
    return write_aperio(tmp_path_factory.mktemp("slides") / "pyramid.svs")


def test_pyramid_metadata_comes_from_openslide(aperio):
    with open_slide(aperio) as slide:
        assert slide.backend == "openslide"
        assert slide.properties["openslide.vendor"] == "aperio"
        assert slide.dimensions == SIZE
        assert slide.level_count == 3
        assert slide.level_dimensions == [(2048, 1536), (512, 384), (128, 96)]
        assert slide.level_downsamples == pytest.approx([1.0, 4.0, 16.0])
        assert slide.mpp == pytest.approx(0.5)
        assert slide.objective_power == pytest.approx(20.0)
        assert slide.background_color == (255, 255, 255)
    assert slide.closed


def test_read_region_level0_places_marker(aperio):
    x, y, side = MARKER
    with open_slide(aperio) as slide:
        region = slide.read_region((x - 100, y - 50), (300, 260))
        assert region.mode == "RGB" and region.size == (300, 260)
        assert slide.last_read_level == 0
    x0, y0, x1, y1 = blue_box(region)
    assert abs(x0 - 100) <= 1 and abs(y0 - 50) <= 1
    assert abs(x1 - (100 + side)) <= 1 and abs(y1 - (50 + side)) <= 1
    pixels = np.asarray(region).astype(int)
    assert np.abs(pixels[50 + side // 2, 100 + side // 2] - MARKER_RGB).max() <= 12
    assert np.abs(pixels[5, 5] - BACKGROUND).max() <= 6


@pytest.mark.parametrize(("out_size", "level"), [((256, 192), 1), ((1024, 768), 0), ((128, 96), 2), ((64, 48), 2)])
def test_read_region_coarse_out_size_uses_best_level(aperio, out_size, level):
    x, y, side = MARKER
    scale = SIZE[0] / out_size[0]
    with open_slide(aperio) as slide:
        picture = slide.read_region((0, 0), SIZE, out_size)
        assert picture.size == out_size
        assert slide.last_read_level == level
    x0, y0, x1, y1 = blue_box(picture)
    tolerance = 1.5
    assert abs(x0 - x / scale) <= tolerance and abs(x1 - (x + side) / scale) <= tolerance
    assert abs(y0 - y / scale) <= tolerance and abs(y1 - (y + side) / scale) <= tolerance


def test_read_region_outside_slide_is_background_colour(aperio):
    with open_slide(aperio) as slide:
        pixels = np.asarray(slide.read_region((-100, -60), (200, 120))).astype(int)
        assert (pixels[:60, :] == 255).all() and (pixels[:, :100] == 255).all()  # outside: white background colour
        assert np.abs(pixels[90:, 150:] - BACKGROUND).max() <= 6  # inside: the slide
        far = np.asarray(slide.read_region((5000, 5000), (64, 64), (16, 16)))
        assert (far == 255).all()
        assert slide.last_read.chunks == 0
        edge = np.asarray(slide.read_region((SIZE[0] - 40, SIZE[1] - 40), (80, 80), (20, 20))).astype(int)
        assert np.abs(edge[2, 2] - BACKGROUND).max() <= 6 and (edge[15:, :] == 255).all()


def test_thumbnail_reads_smallest_adequate_level(aperio):
    with open_slide(aperio) as slide:
        small = slide.thumbnail(100)
        assert small.size == (100, 75) and slide.last_read_level == 2
        medium = slide.thumbnail(300)
        assert medium.size == (300, 225) and slide.last_read_level == 1
        boxed = slide.thumbnail((64, 200))
        assert boxed.size == (64, 48) and slide.last_read_level == 2
        full = slide.thumbnail(5000)  # never enlarged past level 0
        assert full.size == SIZE and slide.last_read_level == 0
    x0, y0, x1, y1 = blue_box(medium)
    scale = SIZE[0] / 300
    assert abs(x0 - MARKER[0] / scale) <= 1.5 and abs(y1 - (MARKER[1] + MARKER[2]) / scale) <= 1.5


def test_thumbnail_prefers_associated_image_when_cheaper(tmp_path):
    path = write_aperio(tmp_path / "with_thumb.svs", factors=(1, 2), thumbnail_size=(512, 384))
    with open_slide(path) as slide:
        assert "thumbnail" in slide.associated_image_names
        picture = slide.thumbnail(384)
        assert picture.size == (384, 288)
        assert slide.last_read.source == "associated:thumbnail" and slide.last_read_level is None
        big = slide.thumbnail(600)  # the associated image is too small: read a level
        assert big.size == (600, 450) and slide.last_read_level == 1
    x0, y0, _, _ = blue_box(picture)
    assert abs(x0 - MARKER[0] * 384 / SIZE[0]) <= 1.5 and abs(y0 - MARKER[1] * 384 / SIZE[0]) <= 1.5


def test_thumbnail_pixel_cap_reads_a_coarser_level(aperio):
    with open_slide(aperio, max_read_pixels=150_000) as slide:  # level 1 is 196,608 px
        picture = slide.thumbnail(384)
        assert picture.size == (384, 288)
        assert slide.last_read_level == 2


def test_chunked_read_matches_single_read(aperio):
    with open_slide(aperio) as slide:
        whole = np.asarray(slide.read_region((-30, 10), (1500, 1200), (750, 600))).astype(int)
        slide.chunk_side = 200
        pieces = np.asarray(slide.read_region((-30, 10), (1500, 1200), (750, 600))).astype(int)
        assert slide.last_read.chunks > 10
    assert np.abs(whole - pieces).mean() < 0.5
    assert np.abs(whole - pieces).max() <= 60  # only at block seams across the marker edge


def test_tiffslide_fallback_for_webp_pyramid(tmp_path):
    path = tmp_path / "webp.tif"
    base = level0_pixels()
    with tifffile.TiffWriter(path) as tw:
        tw.write(base, tile=(256, 256), compression="webp", compressionargs={"lossless": True}, subifds=2,
                 resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER", metadata=None)
        for factor in (4, 16):
            tw.write(shrink(base, factor), tile=(256, 256), compression="webp", compressionargs={"lossless": True},
                     subfiletype=1, metadata=None)
    with open_slide(path) as slide:
        assert slide.backend == "tiffslide"
        assert slide.level_count == 3
        assert slide.mpp == pytest.approx(0.25)
        region = np.asarray(slide.read_region(MARKER[:2], (MARKER[2], MARKER[2])))
        assert (region == MARKER_RGB).all()  # lossless
        slide.thumbnail(100)
        assert slide.last_read_level == 2


def test_stripped_tiff_resolution_units(tmp_path):
    base = level0_pixels()[:300, :400]
    tifffile.imwrite(tmp_path / "cm.tif", base, resolution=(1e4 / 0.8, 1e4 / 0.8), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "inch.tif", base, resolution=(72, 72), resolutionunit="INCH")
    with open_slide(tmp_path / "cm.tif") as slide:
        assert slide.level_count == 1 and slide.mpp == pytest.approx(0.8)
    with open_slide(tmp_path / "inch.tif") as slide:
        assert slide.mpp is None  # 72 dpi says nothing about the microscope
        assert np.array_equal(np.asarray(slide.read_region((0, 0), (400, 300))), base)


def test_real_svs(testdata):
    with open_slide(testdata / "CMU-1-Small-Region.svs") as slide:
        assert slide.backend == "openslide"
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.objective_power == pytest.approx(20)
        region = slide.read_region((1000, 1400), (512, 512), (256, 256))
        assert region.size == (256, 256) and region.mode == "RGB"
        thumb = slide.thumbnail(384)
        assert thumb.size == (287, 384)
        assert slide.last_read.source == "associated:thumbnail"
    region_std = np.asarray(region).std()
    assert region_std > 10, "the region should show tissue, not flat background"
    assert np.asarray(thumb).std() > 10


def test_real_png_is_one_level_image(testdata):
    path = testdata / "he-tile-240.png"
    with open_slide(path) as slide:
        assert slide.backend == "image"
        assert slide.level_count == 1 and slide.dimensions == (240, 240)
        assert slide.mpp is None and slide.objective_power is None
        region = np.asarray(slide.read_region((17, 33), (100, 80)))
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGB"))[33:113, 17:117]
    assert np.array_equal(region, expected)


def test_real_jpeg_thumbnail(testdata):
    with open_slide(testdata / "he-tcia-500x300.jpg") as slide:
        assert slide.backend == "image" and slide.dimensions == (500, 300)
        assert slide.thumbnail(100).size == (100, 60)


def test_transparent_png_composites_onto_background(tmp_path):
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, :30] = (200, 20, 20, 255)  # left: opaque red; right: fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    with open_slide(tmp_path / "alpha.png") as slide:
        pixels = np.asarray(slide.read_region((0, 0), (60, 40)))
    assert (pixels[:, :30] == (200, 20, 20)).all()
    assert (pixels[:, 30:] == 255).all()


def test_best_level(aperio):
    with open_slide(aperio) as slide:
        assert [slide.best_level(d) for d in (0.5, 1, 3.9, 4, 10, 16, 100)] == [0, 0, 0, 1, 1, 2, 2]


def test_slide_info_is_json(aperio):
    info = slide_info(aperio, with_properties=True)
    text = json.dumps(info)
    assert info["backend"] == "openslide" and info["mpp"] == pytest.approx(0.5)
    assert info["level_dimensions"] == [[2048, 1536], [512, 384], [128, 96]]
    assert info["vendor"] == "aperio" and "aperio.MPP" in info["properties"]
    assert str(aperio) in text


def test_slide_error_message_and_pickle(tmp_path):
    import pickle

    error = SlideError(tmp_path / "x.svs", "no reader could open it", [("openslide", "bad"), ("pillow", "worse")])
    text = str(error)
    assert str(tmp_path / "x.svs") in text and "openslide: bad" in text and "pillow: worse" in text
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == text and again.attempts == error.attempts
