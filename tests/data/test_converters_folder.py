"""Classification-folder converter (root/CLASS/*.png)."""
from __future__ import annotations

from collections import Counter

import pytest
from PIL import Image

from omnipath_lvlm.data.converters.classification_folder import convert_classification_folder
from omnipath_lvlm.data.converters.common import yes_no_label
from omnipath_lvlm.data.tasks import get_task


def _write(root, classes, per_class=3):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (16, 12)).save(root / name / f"{i}.png")


def test_open_and_closed_subtype_records(tmp_path):
    _write(tmp_path / "ds", ["clear cell", "papillary", "chromophobe"])
    records = convert_classification_folder(tmp_path / "ds", tmp_path / "out", rng_seed=4, tasks=["subtype"])
    assert len(records) == 9
    prompts = get_task("subtype").prompts
    styles = Counter(r.answer_style for r in records)
    assert set(styles) == {"open", "closed"}  # both styles drawn over 9 images
    for rec in records:
        folder = rec.image.rsplit("/", 2)[-2]
        assert rec.gt["label"] == folder and rec.image_size == [16, 12]
        assert rec.question.splitlines()[0] in prompts
        if rec.answer_style == "closed":
            assert sorted(rec.options) == ["chromophobe", "clear cell", "papillary"]
            assert rec.answer == f"{rec.gt['letter']}. {folder}"
        else:
            assert rec.answer == folder
    again = convert_classification_folder(tmp_path / "ds", tmp_path / "out", rng_seed=4, tasks=["subtype"])
    assert again == records


def test_closed_options_are_capped(tmp_path):
    _write(tmp_path / "ds", [f"class{i}" for i in range(9)], per_class=1)
    records = convert_classification_folder(tmp_path / "ds", tmp_path / "out", tasks=["tissue_type"],
                                            styles=["closed"], max_options=4)
    for rec in records:
        assert len(rec.options) == 4 and rec.gt["label"] in rec.options


def test_yes_no_tasks_map_labels(tmp_path):
    _write(tmp_path / "msi", ["MSIMUT", "MSS"], per_class=2)
    records = convert_classification_folder(tmp_path / "msi", tmp_path / "out", tasks=["msi"])
    assert {(r.image.rsplit("/", 2)[-2], r.gt["label"]) for r in records} == {("MSIMUT", "yes"), ("MSS", "no")}
    assert all(r.answer_style == "yes_no" and r.question in get_task("msi").prompts for r in records)
    _write(tmp_path / "mvi", ["vessel_with_tumor", "healthy_vessel"], per_class=1)
    with pytest.raises(ValueError, match="cannot tell whether label"):
        convert_classification_folder(tmp_path / "mvi", tmp_path / "out", tasks=["mvi"])
    records = convert_classification_folder(tmp_path / "mvi", tmp_path / "out", tasks=["mvi"],
                                            positive=["vessel_with_tumor"])
    assert sorted(r.gt["label"] for r in records) == ["no", "yes"]


def test_yes_no_label_words():
    assert yes_no_label("TIL_positive") == "yes"
    assert yes_no_label("til-negative") == "no"
    assert yes_no_label("0") == "no"
    with pytest.raises(ValueError):
        yes_no_label("positive_and_negative")


def test_organ_task_sets_the_organ_and_task_is_required(tmp_path):
    _write(tmp_path / "ds", ["Liver", "Lung"], per_class=1)
    records = convert_classification_folder(tmp_path / "ds", tmp_path / "out", tasks=["organ"])
    assert sorted(r.organ for r in records) == ["Liver", "Lung"]
    with pytest.raises(ValueError, match="no task given"):
        convert_classification_folder(tmp_path / "ds", tmp_path / "out")
    with pytest.raises(ValueError, match="cannot produce"):
        convert_classification_folder(tmp_path / "ds", tmp_path / "out", tasks=["nucleus_detection"])
