"""Localisation in windows at the model's patch scale (`omnipath_lvlm.wsi.locate`) and `analyze(locate=...)`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.cli import main
from omnipath_lvlm.data.formats import parse_boxes, parse_detections, parse_polygons
from omnipath_lvlm.eval.runner import EvalConfig
from omnipath_lvlm.wsi.analysis import Detection, Outline
from omnipath_lvlm.wsi.locate import (
    answer_text,
    ask_windows,
    combine,
    join_boxes,
    join_outlines,
    region_windows,
    resolved_mode,
    tile_windows,
    window_side,
)
from omnipath_lvlm.wsi.pgfc import PGFCConfig
from omnipath_lvlm.wsi.pipeline import untrained_pipeline


@pytest.fixture(scope="module")
def engine():
    return untrained_pipeline("test-tiny")


def half_tissue(size=(320, 240), seed=0) -> Image.Image:
    """Glass on the left half, purple noise ('tissue') on the right half."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), 242, np.uint8)
    pixels[:, size[0] // 2:] = np.clip(rng.normal((150, 60, 160), 20, (size[1], size[0] - size[0] // 2, 3)), 0, 255)
    return Image.fromarray(pixels)


# ----------------------------------------------------------------------------- windows


def test_window_side_uses_mpp_and_falls_back_to_a_token_cell():
    assert window_side((6144, 6144), 0.25, 384.0) == pytest.approx(1536.0)
    assert window_side((6144, 3072), None, 384.0) is None  # no mpp: the token cells themselves
    assert window_side((6144, 6144), 0.25, None) is None
    assert window_side((1000, 800), 0.25, 384.0) == pytest.approx(800.0)  # never larger than the slide


def test_region_windows_are_centred_inside_and_unique():
    windows = region_windows([(0, 0), (5, 5), (5, 5), (11, 11)], 12, (1200, 1200), 300.0)
    assert len(windows) == 3
    assert windows[0] == (0.0, 0.0, 300.0, 300.0)  # a corner cell's window is pushed inside the slide
    assert windows[1] == pytest.approx((400.0, 400.0, 700.0, 700.0))  # cell 500..600 centred
    assert windows[2] == (900.0, 900.0, 1200.0, 1200.0)


def test_tile_windows_cover_the_tissue_and_skip_glass():
    tissue = np.zeros((12, 12), bool)
    tissue[:, 6:] = True  # right half
    windows = tile_windows(tissue, (1200, 1000), 400.0)
    assert windows, "tissue but no window"
    lefts = sorted({w[0] for w in windows})
    assert lefts == pytest.approx([400.0, 800.0])  # columns at 0, 400, 800; the left one is all glass
    tops = sorted({w[1] for w in windows})
    assert tops[0] == 0.0 and tops[-1] + 400.0 == pytest.approx(1000.0)  # last row ends at the edge
    assert all(w[2] - w[0] == pytest.approx(400.0) for w in windows)
    # every tissue point is inside some window
    for x, y in [(650.0, 10.0), (1199.0, 999.0), (700.0, 500.0)]:
        assert any(w[0] <= x <= w[2] and w[1] <= y <= w[3] for w in windows)
    assert tile_windows(np.zeros((12, 12), bool), (1200, 1000), 400.0) == []
    cells = tile_windows(tissue, (1200, 1200), None)  # no side: the tissue cells
    assert len(cells) == 72 and cells[0] == (600.0, 0.0, 700.0, 100.0)
    assert region_windows([(0, 0)], 12, (1200, 600), None) == [(0.0, 0.0, 100.0, 50.0)]


def test_resolved_mode():
    assert resolved_mode("slide", True, True) == "slide"
    assert resolved_mode("tiles", False, False) == "tiles"
    assert resolved_mode("regions", True, False) == "regions"
    assert resolved_mode("regions", False, True) == "slide"  # nowhere to put a window
    assert resolved_mode("auto", True, True) == "regions"
    assert resolved_mode("auto", True, False) == "slide"
    with pytest.raises(ValueError, match="locate must be one of"):
        resolved_mode("everywhere", True, True)


# ----------------------------------------------------------------------------- joining


def test_join_boxes_unites_pieces_cut_by_window_edges_only():
    joined = join_boxes([
        [Detection((0, 0, 10, 10), "cancer"), Detection((5, 5, 15, 15), "cancer")],  # one window: kept apart
        [Detection((8, 8, 30, 20), "cancer"), Detection((100, 100, 110, 110), "cancer")],
        [Detection((9, 9, 12, 12), "vessel")],  # another label: kept apart
    ])
    boxes = sorted((d.box, d.label) for d in joined)
    # (8, 8, 30, 20) overlaps both boxes of window 0, so all three are one object
    assert boxes == [((0.0, 0.0, 30.0, 20.0), "cancer"), ((9, 9, 12, 12), "vessel"), ((100.0, 100.0, 110.0, 110.0), "cancer")]
    assert join_boxes([[Detection((0, 0, 10, 10))], [Detection((10, 0, 20, 10))]]) == [
        Detection((0, 0, 10, 10)), Detection((10, 0, 20, 10))]  # touching edges do not overlap


def test_join_outlines_unites_overlapping_polygons():
    square = lambda x, y, s: Outline([(x, y), (x + s, y), (x + s, y + s), (x, y + s)])  # noqa: E731
    joined = join_outlines([square(0, 0, 10), square(5, 0, 10), square(50, 50, 5)])
    assert len(joined) == 2
    from shapely.geometry import Polygon

    areas = sorted(Polygon(o.points).area for o in joined)
    assert areas == pytest.approx([25.0, 150.0])


def test_combine_maps_window_answers_to_level0_and_back_to_the_slide():
    windows = [(100.0, 200.0, 300.0, 400.0), (200.0, 200.0, 400.0, 400.0)]
    replies = [("<bbox_list><bbox>0.5, 0.5, 1.0, 1.0</bbox></bbox_list>", []),
               ("<bbox_list><bbox>0.0, 0.5, 0.25, 0.75</bbox><bbox>0.9, 0.0, 1.0, 0.1</bbox></bbox_list>", [])]
    found = combine(windows, replies)
    assert found.kind == "boxes"
    # window 0's (200, 300, 300, 400) and window 1's (200, 300, 250, 350) overlap: one box
    assert sorted(d.box for d in found.detections) == [(200.0, 300.0, 300.0, 400.0), (380.0, 200.0, 400.0, 220.0)]
    text = answer_text(found, (1000, 1000))
    assert parse_boxes(text).ok
    assert np.allclose(sorted(parse_boxes(text).items), [(0.2, 0.3, 0.3, 0.4), (0.38, 0.2, 0.4, 0.22)])
    with pytest.raises(ValueError, match="2 windows but 1 answers"):
        combine(windows, replies[:1])


def test_combine_keeps_labels_and_turns_masks_into_outlines():
    windows = [(0.0, 0.0, 100.0, 100.0)]
    found = combine(windows, [('<detection_result><bbox_list class="vessel"><bbox>0.1, 0.1, 0.2, 0.2</bbox>'
                               '</bbox_list></detection_result>', [])])
    assert found.kind == "detections"
    parsed = parse_detections(answer_text(found, (200, 100))).items
    assert list(parsed) == ["vessel"] and np.allclose(parsed["vessel"], [(0.05, 0.1, 0.1, 0.2)])

    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    found = combine([(1000.0, 0.0, 1160.0, 160.0)], [("<mask>", [mask])])
    assert found.kind == "masks" and len(found.outlines) == 1
    xs = [x for x, _ in found.outlines[0].points]
    assert 1030 <= min(xs) <= 1050 and 1110 <= max(xs) <= 1130  # mask pixels 4..12 of 16 over 160 level-0 px
    assert parse_polygons(answer_text(found, (2000, 2000))).ok


# ----------------------------------------------------------------------------- the pipeline


def test_ask_windows_answers_every_window_in_any_batch_size(engine):
    pictures = [half_tissue(seed=s) for s in range(3)]
    one = ask_windows(engine.model, engine.processor, pictures, "Find the vessels.", max_new_tokens=4, batch_size=1)
    three = ask_windows(engine.model, engine.processor, pictures, "Find the vessels.", max_new_tokens=4, batch_size=3)
    assert len(one) == len(three) == 3
    assert all(isinstance(text, str) for text, _ in one)
    with pytest.raises(ValueError, match="batch_size"):
        ask_windows(engine.model, engine.processor, pictures, "Find.", max_new_tokens=4, batch_size=0)


def test_analyze_regions_reads_one_window_per_region(engine):
    pgfc = PGFCConfig(num_regions=3)
    slide = engine.analyze(half_tissue(), "Detect the cancer regions.", pgfc=pgfc, max_new_tokens=6)
    located = engine.analyze(half_tissue(), "Detect the cancer regions.", pgfc=pgfc, max_new_tokens=6, locate="regions")
    info = located.meta["locate"]
    assert info["mode"] == "regions" and info["slide_answer"] == slide.answer  # same slide pass first
    assert 1 <= len(info["windows"]) <= 3 and len(info["window_answers"]) == len(info["windows"])
    assert "locate" in located.timings and "locate" not in slide.timings
    for window, region in zip(info["windows"], located.regions):  # no mpp: each window is its region's cell
        assert window == pytest.approx(list(region.box))
    for d in located.detections:  # every box inside the slide
        assert 0 <= d.box[0] <= d.box[2] <= 320 and 0 <= d.box[1] <= d.box[3] <= 240


def test_analyze_tiles_and_errors(engine):
    tiles = engine.analyze(half_tissue(), "Detect the cancer regions.", max_new_tokens=4, locate="tiles")
    windows = tiles.meta["locate"]["windows"]
    assert windows and all(w[2] > 160 for w in windows)  # none on the glass-only left half
    none = engine.analyze(half_tissue(), "Detect.", pgfc=PGFCConfig(mode="none"), max_new_tokens=4, locate="regions")
    assert "locate" not in none.meta  # no detail region: the slide's own boxes
    with pytest.raises(ValueError, match="locate must be one of"):
        engine.analyze(half_tissue(), "Detect.", max_new_tokens=2, locate="all")
    with pytest.raises(ValueError, match="input masks"):
        engine.analyze(half_tissue(), "Detect in <mask>.", max_new_tokens=2, locate="regions",
                       input_masks=[np.ones((8, 8), bool)])


def test_eval_config_records_locate_only_when_used(tmp_path):
    plain = EvalConfig(model="test-tiny", data=tmp_path / "d.jsonl", out=tmp_path / "o")
    assert "locate" not in plain.identity()  # run folders made before locating existed still resume
    located = EvalConfig(model="test-tiny", data=tmp_path / "d.jsonl", out=tmp_path / "o", locate="regions")
    assert located.identity()["locate"] == "regions"
    with pytest.raises(ValueError, match="locate must be one of"):
        EvalConfig(model="test-tiny", data=tmp_path / "d.jsonl", out=tmp_path / "o", locate="x")
    assert "window_um" not in located.identity()  # the model's own window
    for given, stored in (("cells", "cells"), ("CELLS", "cells"), ("96", 96.0), (96, 96.0)):
        config = EvalConfig(model="test-tiny", data=tmp_path / "d.jsonl", out=tmp_path / "o", locate="regions",
                            window_um=given)
        assert config.identity()["window_um"] == stored  # a folder holds the answers of one window size
    with pytest.raises(ValueError, match="locate window"):
        EvalConfig(model="test-tiny", data=tmp_path / "d.jsonl", out=tmp_path / "o", window_um="0")


def test_cli_window_um_sets_the_locate_window_on_a_slide_with_mpp(tmp_path, capsys):
    from omnipath_lvlm.synth.slide import write_slide

    slide = tmp_path / "s.svs"
    write_slide(slide, 1024, seed=3, mpp=0.5)  # 512 um across
    sides = {}
    for name, window in (("cells", "cells"), ("um", "100")):
        out = tmp_path / name
        code = main(["analyze", str(slide), "-q", "Detect the cancer regions.", "--model", "test-tiny", "--out",
                     str(out), "--locate", "regions", "--num-regions", "2", "--window-um", window,
                     "--max-new-tokens", "4"])
        assert code == 0
        located = json.loads((out / "answer.json").read_text())["meta"]["locate"]
        sides[name] = (located["window_side"], {round(w[2] - w[0]) for w in located["windows"]})
    assert sides["um"] == (pytest.approx(200.0), {200})  # 100 um at 0.5 um per pixel
    assert sides["cells"][0] is None and sides["cells"][1] != {200}  # a thumbnail token cell instead
    with pytest.raises(SystemExit):  # refused by argparse, before any model is loaded
        main(["analyze", str(slide), "-q", "Detect.", "--model", "test-tiny", "--out", str(tmp_path / "x"),
              "--window-um", "-1"])
    assert "locate window" in capsys.readouterr().err


def test_cli_analyze_locate_tiles(tmp_path, capsys):
    picture = tmp_path / "slide.png"
    half_tissue().save(picture)
    out = tmp_path / "out"
    code = main(["analyze", str(picture), "-q", "Detect the cancer regions.", "--model", "test-tiny",
                 "--out", str(out), "--locate", "tiles", "--max-new-tokens", "4"])
    assert code == 0
    answer = json.loads((out / "answer.json").read_text())
    assert answer["meta"]["locate"]["mode"] == "tiles" and answer["meta"]["locate"]["windows"]
