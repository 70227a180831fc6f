"""Synthetic slides: readable by OpenSlide and tiffslide, deterministic, annotations aligned with pixels."""
from __future__ import annotations

import hashlib
import json

import imagecodecs
import numpy as np
import openslide
import pytest
import tiffslide
from shapely.geometry import Point, Polygon

from omnipath_lvlm.synth.materials import materials_at
from omnipath_lvlm.synth.palette import BACKGROUND_RGB
from omnipath_lvlm.synth.slide import (
    ANNOTATION_CLASSES,
    SlideParams,
    build_layout,
    read_truth,
    render_region,
    write_slide,
)
from omnipath_lvlm.synth.taxonomy import Material as M

TUMOUR_MATERIALS = (M.TUMOUR_EPI, M.TUMOUR_LUMEN, M.TUMOUR_STROMA, M.NECROSIS)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("slide") / "s.svs", 2048, seed=5)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rgb(region):
    return np.asarray(region.convert("RGB")).astype(int)


def test_openslide_reads_levels_dimensions_downsamples_and_mpp(slide):
    s = openslide.OpenSlide(str(slide.path))
    assert s.properties["openslide.vendor"] == "aperio"
    assert s.level_count == len(slide.level_dimensions) >= 4
    assert list(s.level_dimensions) == [tuple(d) for d in slide.level_dimensions]
    assert s.level_dimensions[0] == (2048, 2048)
    np.testing.assert_allclose(s.level_downsamples, [2.0**k for k in range(s.level_count)])
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.25)
    assert float(s.properties["openslide.objective-power"]) == pytest.approx(40)
    assert "thumbnail" in s.associated_images
    s.close()


def test_tiffslide_reads_the_same_pyramid(slide):
    t = tiffslide.TiffSlide(str(slide.path))
    assert t.level_count == len(slide.level_dimensions)
    assert list(t.level_dimensions) == [tuple(d) for d in slide.level_dimensions]
    np.testing.assert_allclose(t.level_downsamples, [2.0**k for k in range(t.level_count)])
    assert float(t.properties["tiffslide.mpp-x"]) == pytest.approx(0.25)
    t.close()


@pytest.mark.parametrize("level", [0, 2])
def test_region_read_equals_render_region(slide, level):
    x1, y1, x2, y2 = slide.regions("Tumor")[0].box()
    scale = 2**level
    w, h = 300 // scale + 40, 200 // scale + 40
    x, y = int((x1 + x2) / 2 / scale) - w // 2, int((y1 + y2) / 2 / scale) - h // 2
    ours = render_region(slide, x, y, w, h, level)
    assert ours.shape == (h, w, 3) and ours.dtype == np.uint8
    with openslide.OpenSlide(str(slide.path)) as s:
        read = _rgb(s.read_region((x * scale, y * scale), level, (w, h)))
    with tiffslide.TiffSlide(str(slide.path)) as t:
        read_t = _rgb(t.read_region((x * scale, y * scale), level, (w, h)))
    # what JPEG 4:2:0 at the slide's quality alone does to these pixels
    jpeg = imagecodecs.jpeg_decode(
        imagecodecs.jpeg_encode(ours, level=90, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2))
    ).astype(int)
    baseline = np.abs(jpeg - ours).mean()
    for got in (read, read_t):
        diff = np.abs(got - ours)
        assert diff.mean() < 1.25 * baseline + 0.5
        assert diff.mean() < 7
    assert ours.std() > 10  # the region is not blank glass


def test_render_region_is_tile_independent(slide):
    whole = render_region(slide.params, 900, 1000, 160, 96)
    left = render_region(slide.params, 900, 1000, 77, 96)
    bottom_right = render_region(slide.params, 977, 1031, 83, 65)
    np.testing.assert_array_equal(whole[:, :77], left)
    np.testing.assert_array_equal(whole[31:, 77:], bottom_right)


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = write_slide(tmp_path / "a.svs", 1024, seed=3)
    b = write_slide(tmp_path / "b.svs", 1024, seed=3)
    c = write_slide(tmp_path / "c.svs", 1024, seed=4)
    assert _sha(a.path) == _sha(b.path)
    assert _sha(a.geojson_path) == _sha(b.geojson_path)
    assert a.labels_path.read_text() == b.labels_path.read_text()
    assert _sha(a.path) != _sha(c.path)
    assert _sha(a.geojson_path) != _sha(c.geojson_path)


def test_geojson_is_a_qupath_feature_collection(slide):
    data = json.loads(slide.geojson_path.read_text())
    assert data["type"] == "FeatureCollection"
    names = {n for n, _ in ANNOTATION_CLASSES}
    assert len(data["features"]) == len(slide.annotations) > 0
    assert any(f["properties"]["classification"]["name"] == "Tumor" for f in data["features"])
    for f in data["features"]:
        assert f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        assert f["properties"]["objectType"] == "annotation"
        assert f["properties"]["classification"]["name"] in names
        xy = np.asarray(ring)
        assert (xy >= 0).all() and (xy[:, 0] <= 2048).all() and (xy[:, 1] <= 2048).all()
    assert len({f["id"] for f in data["features"]}) == len(data["features"])


def test_tumour_annotations_line_up_with_tumour_pixels(slide):
    scene = build_layout(slide.params).scene
    mpp = slide.params.mpp
    rng = np.random.default_rng(0)
    with openslide.OpenSlide(str(slide.path)) as s:
        for ann in slide.regions("Tumor"):
            poly = Polygon(ann.polygon).buffer(-4)  # away from the outline
            x0, y0, x1, y1 = poly.bounds
            pts = [p for p in zip(rng.uniform(x0, x1, 400), rng.uniform(y0, y1, 400)) if poly.contains(Point(p))]
            assert len(pts) > 30
            px = np.asarray(pts)
            mats = materials_at(scene, (np.floor(px[:, 0]) + 0.5) * mpp, (np.floor(px[:, 1]) + 0.5) * mpp)
            assert np.isin(mats, TUMOUR_MATERIALS).all()
            cells = px[mats == M.TUMOUR_EPI]
            colours = np.array([_rgb(s.read_region((int(x), int(y)), 0, (1, 1)))[0, 0] for x, y in cells[:60]])
            far = np.abs(colours - np.array(BACKGROUND_RGB)).max(axis=1)
            assert (far > 40).mean() > 0.9  # tumour cells are stained, unlike glass
        # and a point far from every annotation and tissue piece is glass
        corner = _rgb(s.read_region((0, 0), 0, (16, 16)))
        assert np.abs(corner - np.array(BACKGROUND_RGB)).max() <= 4


def test_labels_file_and_read_truth(slide):
    meta = json.loads(slide.labels_path.read_text())
    assert meta["labels"] == slide.labels
    assert meta["params"]["seed"] == 5 and meta["params"]["width"] == 2048
    again = read_truth(slide.path)
    assert again.labels == slide.labels and again.annotations == slide.annotations
    assert slide.labels["mvi"] == ("yes" if any(a.cls == "Invasion" for a in slide.annotations) and
                                   any(v.embolus is not None for v in build_layout(slide.params).scene.vessels) else "no")


def test_default_slides_hide_grade_from_the_thumbnail():
    params = SlideParams(seed=1, width=16384, height=16384, levels=5)
    scene = build_layout(params).scene
    thumb_scale = 384 / 16384  # thumbnail pixels per level-0 pixel
    nucleus_px = 2 * 6.6 / params.mpp  # a grade-3 tumour nucleus at level 0
    assert nucleus_px > 40 and nucleus_px * thumb_scale < 2
    for t in scene.tumours:
        r_px = t.radius / params.mpp * thumb_scale
        assert 5 < r_px < 40  # visible as a spot, far too small to show nuclei


def test_write_slide_rejects_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        write_slide(tmp_path / "x.svs", 512, tile=200)
    with pytest.raises(ValueError, match="at least 64"):
        write_slide(tmp_path / "y.svs", 32)
