"""ASAP XML converter (CAMELYON layout) with an exclusion group."""
from __future__ import annotations

import numpy as np
import pytest

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.converters.asap import convert_asap, read_asap_xml
from omnipath_lvlm.data.tasks import get_task


def _annotation(name, group, points, kind="Polygon"):
    coords = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(points))
    return (f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}" Color="#F4FA58">'
            f"<Coordinates>{coords}</Coordinates></Annotation>")


def _xml(*annotations):
    return ('<?xml version="1.0"?><ASAP_Annotations><Annotations>' + "".join(annotations) +
            '</Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#ff0000">'
            "<Attributes /></Group><Group Name=\"_2\" PartOfGroup=\"None\" Color=\"#00ff00\"><Attributes /></Group>"
            "</AnnotationGroups></ASAP_Annotations>")


TUMOR = [(0, 0), (1000, 0), (1000, 1000), (0, 1000)]
# coordinates listed out of order: Order decides
SHUFFLED = '<Coordinate Order="1" X="3000" Y="2000" /><Coordinate Order="0" X="2000" Y="2000" />' \
           '<Coordinate Order="3" X="2000" Y="2500" /><Coordinate Order="2" X="3000" Y="2500" />'


def test_read_asap_cuts_exclusions(tmp_path):
    path = tmp_path / "tumor_001.xml"
    second = ('<Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_1" Color="#F4FA58">'
              f"<Coordinates>{SHUFFLED}</Coordinates></Annotation>")
    path.write_text(_xml(_annotation("Annotation 0", "_0", TUMOR), second,
                         _annotation("Annotation 2", "_2", [(500, -10), (1010, -10), (1010, 1010), (500, 1010)]),
                         _annotation("Dot 0", "_0", [(5, 5)], kind="Dot")))
    regions = read_asap_xml(path)
    assert [tuple(round(v) for v in r.bounds) for r in regions] == [(0, 0, 500, 1000), (2000, 2000, 3000, 2500)]
    assert abs(regions[1].area - 1000 * 500) < 1e-6  # the Order attribute gave a rectangle, not a bow tie
    assert len(read_asap_xml(path, classes=["_1"])) == 1
    assert len(read_asap_xml(path, exclude_groups=())) == 3


def test_convert_asap_folder_pairs_slides_by_name(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "tumor_001.xml").write_text(_xml(_annotation("A0", "Tumor", TUMOR)))
    (tmp_path / "images" / "tumor_001.tif").write_bytes(b"")
    records = convert_asap(tmp_path, tmp_path / "out", slide_size=(4000, 2000), styles=["boxes", "polygons"])
    det, seg = records
    assert det.slide == str((tmp_path / "images" / "tumor_001.tif").resolve())
    assert det.question in get_task("cancer_detection").prompts
    np.testing.assert_allclose(formats.parse_boxes(det.answer).items, [[0.0, 0.0, 0.25, 0.5]])
    (polygon,) = formats.parse_polygons(seg.answer).items
    assert sorted(polygon) == sorted([(0.0, 0.0), (0.25, 0.0), (0.25, 0.5), (0.0, 0.5)])


def test_wrong_root_element(tmp_path):
    (tmp_path / "x.xml").write_text("<Annotations/>")
    with pytest.raises(ValueError, match="ASAP_Annotations"):
        read_asap_xml(tmp_path / "x.xml")


def test_single_file_finds_the_slide_in_a_sibling_folder(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "tumor_002.xml").write_text(_xml(_annotation("A0", "Tumor", TUMOR)))
    (tmp_path / "images" / "tumor_002.tif").write_bytes(b"")
    (det,) = convert_asap(tmp_path / "annotations" / "tumor_002.xml", tmp_path / "out", tasks=["cancer_detection"],
                          slide_size=(2000, 2000))
    assert det.slide == str((tmp_path / "images" / "tumor_002.tif").resolve())
    np.testing.assert_allclose(formats.parse_boxes(det.answer).items, [[0.0, 0.0, 0.5, 0.5]])
