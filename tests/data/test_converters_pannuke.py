"""PanNuke converter on a tiny fold in the real layout and dtypes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.converters.pannuke import convert_pannuke, organ_name
from omnipath_lvlm.data.tasks import get_task


def _write_fold(root: Path) -> np.ndarray:
    """Fold layout of the release: images and types under images/fold1, masks under masks/fold1."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(2, 256, 256, 3)).round()  # float64 like the release
    masks = np.zeros((2, 256, 256, 6), dtype=np.float64)
    masks[0, 10:20, 20:40, 0] = 3  # neoplastic nucleus id 3: cols 20..39, rows 10..19
    masks[0, 100:110, 100:105, 1] = 7  # inflammatory nucleus id 7
    masks[0, 200:256, 0:8, 1] = 8  # inflammatory nucleus touching the border
    masks[0, 50:60, 50:60, 4] = 12  # epithelial nucleus
    masks[..., 5] = (masks[..., :5].sum(-1) == 0)  # background channel
    types = np.array(["Breast", "Bile-duct"])
    (root / "images" / "fold1").mkdir(parents=True)
    (root / "masks" / "fold1").mkdir(parents=True)
    np.save(root / "images" / "fold1" / "images.npy", images)
    np.save(root / "images" / "fold1" / "types.npy", types)
    np.save(root / "masks" / "fold1" / "masks.npy", masks)
    return images


def test_organ_names_follow_the_organ_task():
    organs = get_task("organ").classes
    for tissue, organ in [("Breast", "Breast"), ("Bile-duct", "Bile Duct"), ("HeadNeck", "Head-Neck"),
                          ("Adrenal_gland", "Adrenal Gland"), ("Ovarian", "Ovary"), ("Pancreatic", "Pancreas")]:
        assert organ_name(tissue) == organ and organ in organs


def test_pannuke_fold(tmp_path):
    images = _write_fold(tmp_path / "Fold 1")
    records = convert_pannuke(tmp_path / "Fold 1", tmp_path / "out", rng_seed=1)
    by_key = {(Path(r.image).stem, r.task): r for r in records}
    assert sorted(by_key) == [(f"f0_{i:05d}", t) for i in range(2)
                              for t in ("nucleus_classification", "nucleus_detection", "organ")]

    cls = by_key[("f0_00000", "nucleus_classification")]
    assert cls.answer_style == "detections" and cls.organ == "Breast" and cls.image_size == [256, 256]
    assert cls.question in get_task("nucleus_classification").prompts
    parsed = formats.parse_detections(cls.answer)
    assert parsed.ok
    expected = {
        "neoplastic": [[20 / 256, 10 / 256, 40 / 256, 20 / 256]],
        "inflammatory": [[100 / 256, 100 / 256, 105 / 256, 110 / 256], [0.0, 200 / 256, 8 / 256, 1.0]],
        "epithelial": [[50 / 256, 50 / 256, 60 / 256, 60 / 256]],
    }
    assert sorted(parsed.items) == sorted(expected)
    for name, boxes in expected.items():
        np.testing.assert_allclose(parsed.items[name], np.round(boxes, 3))

    det = by_key[("f0_00000", "nucleus_detection")]
    assert len(formats.parse_boxes(det.answer).items) == 4
    empty = by_key[("f0_00001", "nucleus_detection")]
    assert formats.parse_boxes(empty.answer).items == [] and empty.organ == "Bile Duct"

    organ = by_key[("f0_00001", "organ")]
    assert organ.gt["label"] == "Bile Duct"
    question = organ.question.splitlines()[0]
    assert question in get_task("organ").prompts
    if organ.answer_style == "closed":
        assert sorted(organ.options) == ["Bile Duct", "Breast"]

    with Image.open(cls.image) as im:
        np.testing.assert_array_equal(np.asarray(im), images[0].astype(np.uint8))


def test_pannuke_styles_and_tissue_type(tmp_path):
    _write_fold(tmp_path / "fold")
    closed = convert_pannuke(tmp_path / "fold", tmp_path / "out", tasks=["organ"], styles=["closed"])
    assert {r.answer_style for r in closed} == {"closed"}
    for rec in closed:
        assert rec.answer == f"{rec.gt['letter']}. {rec.gt['label']}"
    tissue = convert_pannuke(tmp_path / "fold", tmp_path / "out", tasks=["tissue_type"], styles=["open"])
    assert [r.answer for r in tissue] == ["Breast", "Bile Duct"]
    assert all(r.question in get_task("tissue_type").prompts for r in tissue)


def test_pannuke_errors(tmp_path):
    _write_fold(tmp_path / "fold")
    (tmp_path / "fold" / "images" / "fold1" / "types.npy").unlink()
    with pytest.raises(FileNotFoundError, match="types.npy"):
        convert_pannuke(tmp_path / "fold", tmp_path / "out")
    assert len(convert_pannuke(tmp_path / "fold", tmp_path / "out", tasks=["nucleus_detection"])) == 2
    np.save(tmp_path / "fold" / "masks" / "fold1" / "masks.npy", np.zeros((2, 256, 256, 5)))
    with pytest.raises(ValueError, match="expected masks of shape"):
        convert_pannuke(tmp_path / "fold", tmp_path / "out", tasks=["nucleus_detection"])
