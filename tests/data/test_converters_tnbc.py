"""TNBC converter on a tiny Slide_XX / GT_XX layout."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.converters.tnbc import convert_tnbc
from omnipath_lvlm.data.tasks import get_task


def _write(root, mask):
    (root / "Slide_01").mkdir(parents=True)
    (root / "GT_01").mkdir()
    Image.fromarray(np.full(mask.shape + (3,), 150, np.uint8)).save(root / "Slide_01" / "01_1.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "GT_01" / "01_1.png")


def test_components_become_boxes(tmp_path):
    mask = np.zeros((64, 80), bool)
    mask[5:15, 10:30] = True  # nucleus A
    mask[15:25, 30:40] = True  # touches A only at a corner: a separate 4-connected nucleus
    mask[50:52, 70:71] = True  # 2-pixel speck: dropped (min_area 4)
    _write(tmp_path, mask)
    (rec,) = convert_tnbc(tmp_path, tmp_path / "out")
    assert rec.task == "nucleus_detection" and rec.image_size == [80, 64]
    assert rec.question in get_task("nucleus_detection").prompts
    parsed = formats.parse_boxes(rec.answer)
    assert parsed.ok
    np.testing.assert_allclose(parsed.items, np.round([[10 / 80, 5 / 64, 30 / 80, 15 / 64],
                                                       [30 / 80, 15 / 64, 40 / 80, 25 / 64]], 3))
    (with_speck,) = convert_tnbc(tmp_path, tmp_path / "out", min_area=1)
    assert len(formats.parse_boxes(with_speck.answer).items) == 3


def test_missing_pairs(tmp_path):
    with pytest.raises(FileNotFoundError, match="Slide_XX"):
        convert_tnbc(tmp_path, tmp_path / "out")
    _write(tmp_path, np.zeros((8, 8), bool))
    Image.new("RGB", (8, 8)).save(tmp_path / "Slide_01" / "01_2.png")
    with pytest.warns(UserWarning, match="01_2.png has no mask"):
        records = convert_tnbc(tmp_path, tmp_path / "out")
    assert len(records) == 1 and formats.parse_boxes(records[0].answer).items == []
