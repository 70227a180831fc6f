"""COCO instance converter on a tiny JSON in the real layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.converters.coco import convert_coco
from omnipath_lvlm.data.tasks import get_task


def _write(root):
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (200, 100)).save(root / "images" / "a.png")
    Image.new("RGB", (200, 100)).save(root / "images" / "b.png")
    coco = {
        "info": {"description": "tiny"},
        "images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 100},
                   {"id": 2, "file_name": "b.png", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "vessel", "supercategory": "structure"},
                       {"id": 2, "name": "nerve", "supercategory": "structure"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 30], "area": 1200, "iscrowd": 0,
             "segmentation": [[20, 10, 60, 10, 60, 40, 20, 40]]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [100, 50, 50, 40], "area": 1000, "iscrowd": 0,
             "segmentation": [[100, 50, 150, 50, 125, 90]]},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 100], "area": 20000, "iscrowd": 1,
             "segmentation": [[0, 0, 200, 0, 200, 100, 0, 100]]},
        ],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    return root / "instances.json"


def test_detection_of_one_category(tmp_path):
    path = _write(tmp_path)
    records = convert_coco(path, tmp_path / "out", tasks=["vessel_detection"], categories=["vessel"])
    assert len(records) == 2
    a, b = records
    assert a.question in get_task("vessel_detection").prompts
    np.testing.assert_allclose(formats.parse_boxes(a.answer).items, [[0.1, 0.1, 0.3, 0.4]])  # crowd skipped
    assert formats.parse_boxes(b.answer).items == []  # image without vessels: a negative sample


def test_classified_detection_and_segmentation(tmp_path):
    path = _write(tmp_path)
    (det,) = convert_coco(path, tmp_path / "out", tasks=["nucleus_classification"])[:1]
    items = formats.parse_detections(det.answer).items
    assert sorted(items) == ["nerve", "vessel"]
    np.testing.assert_allclose(items["nerve"], [[0.5, 0.5, 0.75, 0.9]])

    polys = convert_coco(path, tmp_path / "out", tasks=["nerve_segmentation"], categories=["nerve"],
                         styles=["polygons"])
    parsed = formats.parse_polygons(polys[0].answer)
    assert parsed.ok and len(parsed.items) == 1
    np.testing.assert_allclose(parsed.items[0], [[0.5, 0.5], [0.75, 0.5], [0.625, 0.9]])

    masks = convert_coco(path, tmp_path / "out", tasks=["nerve_segmentation"], categories=["nerve"], styles=["mask"])
    rec = masks[0]
    assert rec.answer == "<mask>" and rec.masks == [rec.gt["mask"]]
    with Image.open(rec.masks[0]) as im:
        mask = np.asarray(im) > 0
    assert mask.shape == (100, 200)
    assert mask[60, 125] and not mask[60, 102] and not mask[20, 30]  # inside the triangle, outside, the vessel
    assert abs(mask.sum() - 0.5 * 50 * 40) < 60


def test_task_is_required_and_categories_checked(tmp_path):
    path = _write(tmp_path)
    with pytest.raises(ValueError, match="no task given"):
        convert_coco(path, tmp_path / "out")
    with pytest.raises(ValueError, match="none of the categories"):
        convert_coco(path, tmp_path / "out", tasks=["vessel_detection"], categories=["gland"])
    with pytest.raises(ValueError, match="cannot produce"):
        convert_coco(path, tmp_path / "out", tasks=["organ"])
