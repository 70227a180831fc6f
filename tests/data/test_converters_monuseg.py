"""MoNuSeg converter on a tiny dataset in the real layout (TIFF image + Aperio XML)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.converters.monuseg import convert_monuseg, read_monuseg_xml
from omnipath_lvlm.data.tasks import get_task

XML_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<Annotations MicronsPerPixel="0.252100">
<Annotation Id="1" Name="" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" Incremental="0" Type="4"
 LineColor="65280" Visible="1" Selected="1" MarkupImagePath="" MacroName="">
<Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>
<Regions>
<RegionAttributeHeaders>
<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>
</RegionAttributeHeaders>
"""
XML_TAIL = """</Regions>
<Plots/>
</Annotation>
</Annotations>
"""


def _region(rid: int, points: list[tuple[float, float]]) -> str:
    vertices = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>\n' for x, y in points)
    return (f'<Region Id="{rid}" Type="0" Zoom="0.5" Selected="0" ImageLocation="" ImageFocus="-1" Length="50" '
            f'Area="150" LengthMicrons="12" AreaMicrons="9" Text="" NegativeROA="0" InputRegionId="0" Analyze="1" '
            f'DisplayId="{rid}">\n<Attributes/>\n<Vertices>\n{vertices}</Vertices>\n</Region>\n')


NUCLEI = [
    [(10, 12), (20, 12), (20, 22), (10, 22)],  # box 10..20 x 12..22
    [(60.5, 40), (75.5, 45), (70, 58), (58, 50)],  # box 58..75.5 x 40..58
    [(45, 5), (55, 5), (55, 15), (45, 15)],  # straddles the tile border x = 50
]


def _write_dataset(root: Path) -> Path:
    (root / "Tissue Images").mkdir(parents=True)
    (root / "Annotations").mkdir()
    Image.fromarray(np.full((80, 100, 3), 180, np.uint8)).save(root / "Tissue Images" / "TCGA-AA-0001.tif")
    body = "".join(_region(i + 1, pts) for i, pts in enumerate(NUCLEI))
    body += _region(9, [(1, 1), (2, 2)])  # degenerate region: skipped
    (root / "Annotations" / "TCGA-AA-0001.xml").write_text(XML_HEAD + body + XML_TAIL)
    return root


def test_read_xml_returns_outlines(tmp_path):
    root = _write_dataset(tmp_path / "monuseg")
    outlines = read_monuseg_xml(root / "Annotations" / "TCGA-AA-0001.xml")
    assert len(outlines) == 3
    np.testing.assert_allclose(outlines[1], NUCLEI[1])


def test_whole_image_detection_boxes(tmp_path):
    root = _write_dataset(tmp_path / "monuseg")
    records = convert_monuseg(root, tmp_path / "out")
    assert len(records) == 1
    rec = records[0]
    assert rec.task == "nucleus_detection" and rec.answer_style == "boxes"
    assert rec.image == str((root / "Tissue Images" / "TCGA-AA-0001.tif").resolve())
    assert rec.image_size == [100, 80]
    assert rec.question in get_task("nucleus_detection").prompts
    # boxes in reading order (top to bottom), relative to 100 x 80
    expected = [[0.45, 5 / 80, 0.55, 15 / 80], [0.10, 12 / 80, 0.20, 22 / 80], [0.58, 0.5, 0.755, 58 / 80]]
    np.testing.assert_allclose(rec.gt["boxes"], np.round(expected, 3))
    parsed = formats.parse_boxes(rec.answer)
    assert parsed.ok
    np.testing.assert_allclose(parsed.items, np.round(expected, 3))


def test_tiles_keep_mostly_visible_nuclei(tmp_path):
    root = _write_dataset(tmp_path / "monuseg")
    records = convert_monuseg(root, tmp_path / "out", tile_size=50, min_visible=0.5)
    # 100 x 80 in 50 px tiles: x origins 0, 50; y origins 0, 30 (last tile shifted to the border)
    names = sorted(Path(r.image).name for r in records)
    assert names == ["TCGA-AA-0001_x0_y0.png", "TCGA-AA-0001_x0_y30.png",
                     "TCGA-AA-0001_x50_y0.png", "TCGA-AA-0001_x50_y30.png"]
    by_name = {Path(r.image).name: r for r in records}
    top_left = by_name["TCGA-AA-0001_x0_y0.png"]
    assert top_left.image_size == [50, 50]
    # nucleus 0 inside; nucleus 2 is half inside (50 %): kept with its visible part 45..50
    np.testing.assert_allclose(top_left.gt["boxes"], [[0.9, 0.1, 1.0, 0.3], [0.2, 0.24, 0.4, 0.44]])
    top_right = by_name["TCGA-AA-0001_x50_y0.png"]
    np.testing.assert_allclose(top_right.gt["boxes"], [[0.0, 0.1, 0.1, 0.3], [0.16, 0.8, 0.51, 1.0]])
    with Image.open(top_left.image) as im:
        assert im.size == (50, 50)
    stricter = convert_monuseg(root, tmp_path / "out2", tile_size=50, min_visible=0.6)
    assert len({Path(r.image).name: r for r in stricter}["TCGA-AA-0001_x0_y0.png"].gt["boxes"]) == 1


def test_missing_image_warns_and_bad_task_fails(tmp_path):
    root = _write_dataset(tmp_path / "monuseg")
    (root / "Annotations" / "TCGA-ZZ-9999.xml").write_text(XML_HEAD + XML_TAIL)
    with pytest.warns(UserWarning, match="TCGA-ZZ-9999"):
        assert len(convert_monuseg(root, tmp_path / "out")) == 1
    with pytest.raises(ValueError, match="cannot produce task"):
        convert_monuseg(root, tmp_path / "out", tasks=["organ"])
    (tmp_path / "bad.xml").write_text("<ASAP_Annotations/>")
    with pytest.raises(ValueError, match="Aperio"):
        read_monuseg_xml(tmp_path / "bad.xml")


def test_single_xml_finds_its_image_in_a_sibling_folder(tmp_path):
    root = _write_dataset(tmp_path / "monuseg")
    (rec,) = convert_monuseg(root / "Annotations" / "TCGA-AA-0001.xml", tmp_path / "out")
    assert rec.image == str((root / "Tissue Images" / "TCGA-AA-0001.tif").resolve())
    assert len(rec.gt["boxes"]) == 3
