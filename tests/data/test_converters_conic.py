"""CoNIC converter on tiny arrays with the release's shapes and dtypes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.converters.conic import CLASS_NAMES, convert_conic
from omnipath_lvlm.data.tasks import get_task


def test_conic_classes_by_majority(tmp_path):
    images = np.full((2, 256, 256, 3), 200, dtype=np.uint8)
    labels = np.zeros((2, 256, 256, 2), dtype=np.int32)
    inst, cls = labels[0, ..., 0], labels[0, ..., 1]
    inst[10:20, 10:20] = 1  # lymphocyte (3) on most pixels, epithelial (2) on a few
    cls[10:20, 10:20] = 3
    cls[10:12, 10:20] = 2
    inst[30:40, 100:130] = 2  # connective (6)
    cls[30:40, 100:130] = 6
    inst[200:210, 200:206] = 5  # no class pixel: detection only
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)

    records = convert_conic(tmp_path, tmp_path / "out")
    by_key = {(Path(r.image).stem, r.task): r for r in records}
    assert len(records) == 4
    cls_rec = by_key[("00000", "nucleus_classification")]
    assert cls_rec.question in get_task("nucleus_classification").prompts
    parsed = formats.parse_detections(cls_rec.answer).items
    assert sorted(parsed) == ["connective", "lymphocyte"]
    np.testing.assert_allclose(parsed["lymphocyte"], np.round([[10 / 256, 10 / 256, 20 / 256, 20 / 256]], 3))
    np.testing.assert_allclose(parsed["connective"], np.round([[100 / 256, 30 / 256, 130 / 256, 40 / 256]], 3))
    det = formats.parse_boxes(by_key[("00000", "nucleus_detection")].answer).items
    np.testing.assert_allclose(det[-1], np.round([200 / 256, 200 / 256, 206 / 256, 210 / 256], 3))
    assert len(det) == 3
    assert formats.parse_detections(by_key[("00001", "nucleus_classification")].answer).items == {}
    assert CLASS_NAMES[2] == "lymphocyte" and CLASS_NAMES[5] == "connective"
