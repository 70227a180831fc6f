"""Classification-table converter (CSV image,label[,organ])."""
from __future__ import annotations

import pytest
from PIL import Image

from omnipath_lvlm.data.converters.classification_csv import convert_classification_csv
from omnipath_lvlm.data.tasks import get_task


def test_csv_rows_become_records(tmp_path):
    (tmp_path / "tiles").mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (20, 10)).save(tmp_path / "tiles" / f"{name}.png")
    (tmp_path / "labels.csv").write_text(
        "image,label,organ\ntiles/a.png,well differentiated,Liver\ntiles/b.png,poorly differentiated,Liver\n"
        f"{tmp_path / 'tiles' / 'c.png'},moderately differentiated,\n")
    records = convert_classification_csv(tmp_path / "labels.csv", tmp_path / "out", tasks=["grade"],
                                         styles=["open"])
    assert [r.answer for r in records] == ["well differentiated", "poorly differentiated", "moderately differentiated"]
    assert [r.organ for r in records] == ["Liver", "Liver", None]
    assert records[0].image == str((tmp_path / "tiles" / "a.png").resolve())
    assert all(r.question in get_task("grade").prompts and r.source == "csv" for r in records)


def test_csv_errors_name_the_problem(tmp_path):
    (tmp_path / "t.csv").write_text("path,class\nx.png,1\n")
    with pytest.raises(ValueError, match="'image' and 'label' columns"):
        convert_classification_csv(tmp_path / "t.csv", tmp_path / "out", tasks=["grade"])
    (tmp_path / "t.csv").write_text("image,label\nmissing.png,G1\n")
    with pytest.raises(FileNotFoundError, match="line 2"):
        convert_classification_csv(tmp_path / "t.csv", tmp_path / "out", tasks=["grade"])
