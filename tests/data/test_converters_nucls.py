"""NuCLS converter on a tiny FOV in the real layout (csv/ + rgb/, real CSV header)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.converters.nucls import convert_nucls, read_nucls_csv
from omnipath_lvlm.data.tasks import get_task

FOV = "TCGA-A1-A0SP-DX1_id-5ea4095addda5f8398977ebc_left-7053_top-53967_bottom-54231_right-7311"
TABLE = """,raw_classification,main_classification,super_classification,type,xmin,ymin,xmax,ymax,coords_x,coords_y
0,tumor,tumor_nonMitotic,tumor_any,polyline,10,20,30,44,"10,30,30,10","20,20,44,44"
1,lymphocyte,lymphocyte,sTIL,rectangle,100,50,112,60,"100,112,112,100","50,50,60,60"
2,mitotic_figure,tumor_mitotic,tumor_any,polyline,,,,,"150,170,160","90,95,120"
3,fibroblast,nonTILnonMQ_stromal,nonTIL_stromal,rectangle,5,150,25,170,"5,25,25,5","150,150,170,170"
4,tumor,tumor_nonMitotic,tumor_any,rectangle,60,160,80,180,"60,80,80,60","160,160,180,180"
"""


def _write(root):
    (root / "csv").mkdir(parents=True)
    (root / "rgb").mkdir()
    (root / "csv" / f"{FOV}.csv").write_text(TABLE)
    Image.fromarray(np.zeros((264, 258, 3), np.uint8)).save(root / "rgb" / f"{FOV}.png")


def test_read_table(tmp_path):
    _write(tmp_path)
    nuclei = read_nucls_csv(tmp_path / "csv" / f"{FOV}.csv")
    assert nuclei[0] == ("tumor", [10.0, 20.0, 30.0, 44.0])
    assert nuclei[2] == ("mitotic figure", [150.0, 90.0, 170.0, 120.0])  # bounds from the outline
    assert [n[0] for n in nuclei] == ["tumor", "lymphocyte", "mitotic figure", "stromal", "tumor"]


def test_convert_classification_and_detection(tmp_path):
    _write(tmp_path)
    records = convert_nucls(tmp_path, tmp_path / "out", tasks=["nucleus_classification", "nucleus_detection"])
    cls, det = records
    assert cls.image_size == [258, 264]
    assert cls.question in get_task("nucleus_classification").prompts
    parsed = formats.parse_detections(cls.answer)
    assert parsed.ok
    w, h = 258, 264
    expected = {
        "tumor": [[10 / w, 20 / h, 30 / w, 44 / h], [60 / w, 160 / h, 80 / w, 180 / h]],
        "lymphocyte": [[100 / w, 50 / h, 112 / w, 60 / h]],
        "mitotic figure": [[150 / w, 90 / h, 170 / w, 120 / h]],
        "stromal": [[5 / w, 150 / h, 25 / w, 170 / h]],
    }
    assert sorted(parsed.items) == sorted(expected)
    for name, boxes in expected.items():
        np.testing.assert_allclose(parsed.items[name], np.round(boxes, 3))
    assert det.task == "nucleus_detection" and len(formats.parse_boxes(det.answer).items) == 5


def test_default_task_and_bad_table(tmp_path):
    _write(tmp_path)
    assert [r.task for r in convert_nucls(tmp_path, tmp_path / "out")] == ["nucleus_classification"]
    (tmp_path / "csv" / f"{FOV}.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="main_classification"):
        convert_nucls(tmp_path, tmp_path / "out")
