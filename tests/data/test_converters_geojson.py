"""QuPath GeoJSON converter: slide-level region records."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.converters.geojson import convert_geojson, read_geojson
from omnipath_lvlm.data.tasks import get_task


def _feature(geometry, name=None):
    props = {"objectType": "annotation", "isLocked": False}
    if name:
        props["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "id": "a1b2", "geometry": geometry, "properties": props}


def _square(x, y, s):
    return [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]


def _collection():
    return {"type": "FeatureCollection", "features": [
        _feature({"type": "Polygon", "coordinates": [_square(1000, 500, 1000), _square(1200, 700, 200)]}, "Tumor"),
        _feature({"type": "MultiPolygon", "coordinates": [[_square(3000, 3000, 500)], [_square(100, 3500, 400)]]},
                 "Tumor"),
        _feature({"type": "Polygon", "coordinates": [_square(0, 0, 50)]}, "Stroma"),
        _feature({"type": "Point", "coordinates": [5, 5]}, "Tumor"),
    ]}


def test_read_geojson_filters_classes(tmp_path):
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps(_collection()))
    assert len(read_geojson(path)) == 4
    tumor = read_geojson(path, classes=["tumor"])
    assert len(tumor) == 3 and len(tumor[0].interiors) == 1
    path.write_text(json.dumps(_collection()["features"]))  # older QuPath: a bare list
    assert len(read_geojson(path, classes=["Stroma"])) == 1


def test_slide_records_relative_to_level0(tmp_path):
    (tmp_path / "slide.svs").write_bytes(b"not opened: the size is given")
    (tmp_path / "slide.geojson").write_text(json.dumps(_collection()))
    records = convert_geojson(tmp_path / "slide.geojson", tmp_path / "out", slide_size=(4000, 5000),
                              classes=["Tumor"], styles=["boxes", "mask"])
    det, seg = records
    assert det.slide == str((tmp_path / "slide.svs").resolve()) and det.image is None
    assert det.image_size == [4000, 5000] and det.question in get_task("cancer_detection").prompts
    np.testing.assert_allclose(formats.parse_boxes(det.answer).items,
                               [[0.25, 0.1, 0.5, 0.3], [0.75, 0.6, 0.875, 0.7], [0.025, 0.7, 0.125, 0.78]])
    assert seg.answer_style == "mask" and seg.question in get_task("cancer_segmentation").prompts
    with Image.open(seg.gt["mask"]) as im:
        mask = np.asarray(im) > 0
    assert mask.shape == (1024, round(4000 * 1024 / 5000))
    scale = 1024 / 5000
    assert mask[int(600 * scale), int(1100 * scale)] and not mask[int(800 * scale), int(1300 * scale)]  # hole
    assert not mask[int(100 * scale), int(100 * scale)]


def test_polygons_limited_to_50_vertices(tmp_path):
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    circle = np.c_[2000 + 800 * np.cos(angles), 2000 + 800 * np.sin(angles)].tolist()
    (tmp_path / "s.tiff").write_bytes(b"")
    feature = _feature({"type": "Polygon", "coordinates": [circle + circle[:1]]})
    (tmp_path / "s.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    (seg,) = convert_geojson(tmp_path / "s.geojson", tmp_path / "out", tasks=["cancer_segmentation"],
                             slide_size=(4000, 4000), styles=["polygons"])
    (polygon,) = formats.parse_polygons(seg.answer).items
    assert 8 <= len(polygon) <= 50
    radii = np.hypot(np.array(polygon)[:, 0] - 0.5, np.array(polygon)[:, 1] - 0.5)
    np.testing.assert_allclose(radii, 0.2, atol=0.002)


def test_real_slide_size_and_detail_crop(tmp_path, testdata):
    import openslide

    slide = testdata / "CMU-1-Small-Region.svs"
    annotation = tmp_path / "annotation.geojson"
    annotation.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature({"type": "Polygon", "coordinates": [_square(1000, 1000, 500)]}, "Tumor")]}))
    (det,) = convert_geojson(annotation, tmp_path / "out", tasks=["cancer_detection"], slide=slide,
                             detail_crops=1, detail_size=150)
    assert det.image_size == [2220, 2967]
    np.testing.assert_allclose(formats.parse_boxes(det.answer).items,
                               np.round([[1000 / 2220, 1000 / 2967, 1500 / 2220, 1500 / 2967]], 3))
    (detail,) = det.regions
    # the crop covers the region with a 10 % margin: level-0 pixels 950..1550
    np.testing.assert_allclose(detail["box"], [950 / 2220, 950 / 2967, 1550 / 2220, 1550 / 2967], atol=1e-6)
    with Image.open(detail["image"]) as im:
        crop = np.asarray(im, dtype=float)
    assert crop.shape == (150, 150, 3)
    handle = openslide.OpenSlide(str(slide))
    reference = handle.read_region((950, 950), 0, (600, 600)).convert("RGB").resize((150, 150))
    handle.close()
    assert np.abs(crop - np.asarray(reference, dtype=float)).mean() < 4
    assert crop.std() > 10  # tissue, not background


def test_missing_slide_is_an_error(tmp_path):
    (tmp_path / "lonely.geojson").write_text(json.dumps(_collection()))
    with pytest.raises(FileNotFoundError, match="no slide file named lonely"):
        convert_geojson(tmp_path / "lonely.geojson", tmp_path / "out", slide_size=(10, 10))
