"""The whole-slide pipeline, its output files and `omnipath analyze` (untrained test-tiny model)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from omnipath_lvlm.cli import main
from omnipath_lvlm.wsi.analysis import Analysis, Region
from omnipath_lvlm.wsi.outputs import analysis_geojson, write_outputs
from omnipath_lvlm.wsi.pgfc import PGFCConfig, cell_box, last_token_image_attention, prompt_embeddings
from omnipath_lvlm.wsi.pipeline import (
    NANO_DIR,
    ImageSlide,
    OmniPathPipeline,
    load_engine,
    parse_answer,
    untrained_pipeline,
)
from omnipath_lvlm.wsi.slide import SlideError

STAGES = {"open", "thumbnail", "encode", "score", "regions", "generate", "parse", "total"}
OUTPUT_FILES = {"answer.json", "regions.geojson", "overlay.png", "attention.png", "report.html"}


@pytest.fixture(scope="module")
def engine() -> OmniPathPipeline:
    return untrained_pipeline("test-tiny")


def tissue_picture(size=(300, 200), seed=0) -> Image.Image:
    """Glass on the left half, purple 'tissue' noise on the right half."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), 242, np.uint8)
    half = size[0] // 2
    pixels[:, half:] = np.clip(rng.normal((150, 60, 160), 20, (size[1], size[0] - half, 3)), 0, 255)
    return Image.fromarray(pixels)


def test_analyze_svs_regions_are_tissue_cells(engine, testdata):
    analysis = engine.analyze(testdata / "CMU-1-Small-Region.svs", "What tissue is this?", max_new_tokens=6,
                              pgfc=PGFCConfig(num_regions=5))
    grid = engine.grid
    assert analysis.slide_size == (2220, 2967)
    assert set(analysis.timings) == STAGES and all(t >= 0 for t in analysis.timings.values())
    assert analysis.score_grid.shape == (grid, grid) and analysis.tissue_grid.shape == (grid, grid)
    assert 0 < analysis.tissue_grid.sum() < grid * grid  # the SVS has glass around the tissue
    assert len(analysis.regions) == 5
    on_tissue = np.sort(analysis.score_grid[analysis.tissue_grid])[::-1]
    for region, expected in zip(analysis.regions, on_tissue):
        assert analysis.tissue_grid[region.token]
        assert region.score == pytest.approx(expected)  # the best tissue scores, best first
        assert region.box == pytest.approx(cell_box(region.token, grid, analysis.slide_size))
    assert analysis.meta["new_tokens"] <= 6 and isinstance(analysis.answer, str)


def test_scores_come_from_the_thumbnail_prompt(engine, testdata):
    """The score grid is A_last of the thumbnail-only prompt, computed once with the thumbnail's features."""
    image = Image.open(testdata / "he-tile-240.png").convert("RGB")
    analysis = engine.analyze(image, "Describe the image.", max_new_tokens=2)
    model, processor = engine.model, engine.processor
    thumbnail = ImageSlide(image).thumbnail(processor.max_image_size)  # what the pipeline reads
    batch = processor([{"from": "human", "value": "<image>\nDescribe the image."}], images=[thumbnail])
    with torch.no_grad():
        encoded = model.encode_images(batch["pixel_values"], batch["image_pool"])
        embeds = prompt_embeddings(model, batch["input_ids"], encoded)
        expected = last_token_image_attention(model, batch["input_ids"], batch["attention_mask"], embeds)
    np.testing.assert_allclose(analysis.score_grid.ravel(), expected.numpy(), atol=1e-6)


def test_png_path_and_pil_image_give_the_same_analysis(engine, testdata):
    path = testdata / "he-tile-240.png"
    by_path = engine.analyze(path, "Is there a tumour?", max_new_tokens=5)
    by_image = engine.analyze(Image.open(path), "Is there a tumour?", max_new_tokens=5)
    assert by_path.slide_size == by_image.slide_size == (240, 240)
    assert by_path.answer == by_image.answer
    assert [r.token for r in by_path.regions] == [r.token for r in by_image.regions]
    assert by_path.meta["backend"] == "image"


def test_background_is_never_chosen_and_modes_differ(engine):
    picture = tissue_picture()
    attention = engine.analyze(picture, "Grade?", pgfc=PGFCConfig(num_regions=30), max_new_tokens=2)
    tissue = attention.tissue_grid
    assert tissue[:, engine.grid // 2:].all() and not tissue[:, : engine.grid // 2].any()
    assert len(attention.regions) == int(tissue.sum())  # S larger than the tissue: every tissue cell, no glass
    assert all(tissue[r.token] for r in attention.regions)

    random = engine.analyze(picture, "Grade?", pgfc=PGFCConfig(num_regions=4, mode="random", seed=1), max_new_tokens=2)
    assert len(random.regions) == 4 and all(tissue[r.token] and r.score == 0.0 for r in random.regions)

    none = engine.analyze(picture, "Grade?", pgfc=PGFCConfig(mode="none"), max_new_tokens=2)
    assert none.regions == [] and none.score_grid is not None
    per_region = engine.processor.tokens_per_image(3) + 1  # pooled tokens and at least one text token each
    assert random.meta["prompt_tokens"] >= none.meta["prompt_tokens"] + 4 * per_region


def test_history_and_streaming(engine):
    pieces: list[str] = []
    analysis = engine.analyze(tissue_picture(), "And the grade?", history=[("What organ?", "Liver.")],
                              max_new_tokens=8, on_text=pieces.append)
    assert "".join(pieces) == analysis.answer
    alone = engine.analyze(tissue_picture(), "And the grade?", max_new_tokens=8)
    assert analysis.meta["prompt_tokens"] > alone.meta["prompt_tokens"]
    with pytest.raises(ValueError, match="<image>"):
        engine.analyze(tissue_picture(), "Look at <image>", max_new_tokens=2)


def test_parse_answer_scales_to_level0():
    size = (1000, 500)
    detections, outlines, problems = parse_answer("<bbox_list><bbox>0.1, 0.2, 0.5, 0.6</bbox></bbox_list>", size)
    assert [d.box for d in detections] == [pytest.approx((100, 100, 500, 300))] and not outlines and not problems
    text = ('<detection_result><bbox_list class="tumor"><bbox>0.0, 0.0, 1.0, 1.0</bbox></bbox_list></detection_result>'
            "<contour_list><polygon>[0.1, 0.1], [0.2, 0.1], [0.2, 0.4]</polygon></contour_list>")
    detections, outlines, problems = parse_answer(text, size)
    assert detections[0].label == "tumor" and detections[0].box == pytest.approx((0, 0, 1000, 500))
    assert outlines[0].points == [pytest.approx(p) for p in [(100, 50), (200, 50), (200, 200)]]
    assert parse_answer("Grade 2.", size) == ([], [], [])


def test_load_engine_names():
    with pytest.warns(UserWarning, match="UNTRAINED"):
        tiny = load_engine("test-tiny")
    assert "UNTRAINED" in tiny.model_name
    if not NANO_DIR.is_dir():
        with pytest.warns(UserWarning, match="falling back to test-tiny"):
            load_engine("nano")
    with pytest.raises(ValueError, match="neither"):
        load_engine("no-such-model")


def test_load_engine_from_a_saved_directory(engine, tmp_path):
    engine.model.save_pretrained(tmp_path)
    engine.processor.save_pretrained(tmp_path)
    loaded = load_engine(tmp_path)
    picture = tissue_picture()
    assert loaded.analyze(picture, "Grade?", max_new_tokens=4).answer == engine.analyze(picture, "Grade?", max_new_tokens=4).answer
    assert loaded.pgfc == PGFCConfig()  # no pgfc.json: the defaults


def test_a_saved_models_pgfc_settings_are_analyzes_defaults(engine, tmp_path):
    model = tmp_path / "model"
    engine.model.save_pretrained(model)
    engine.processor.save_pretrained(model)
    PGFCConfig(num_regions=3, region_pool=2).save(model)
    assert load_engine(model).pgfc == PGFCConfig(num_regions=3, region_pool=2)
    picture = tmp_path / "tissue.png"
    tissue_picture().save(picture)
    for extra, expected in (([], 3), (["--num-regions", "1"], 1)):
        out = tmp_path / f"out{expected}"
        assert main(["analyze", str(picture), "-q", "Grade?", "--model", str(model), "--out", str(out),
                     "--max-new-tokens", "2", *extra]) == 0
        answer = json.loads((out / "answer.json").read_text())
        assert len(answer["regions"]) == expected and answer["meta"]["pgfc"]["region_pool"] == 2


def test_bad_file_raises_slide_error(engine, tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00 this is not really a TIFF")
    with pytest.raises(SlideError, match="broken.svs"):
        engine.analyze(bad, "Grade?", max_new_tokens=2)


# --------------------------------------------------------------------------- files and CLI


def test_geojson_is_a_qupath_feature_collection():
    from omnipath_lvlm.wsi.analysis import Detection, Outline

    analysis = Analysis(
        question="q", answer="a", slide_size=(1000, 800),
        detections=[Detection((10, 20, 30, 40), "tumor")],
        outlines=[Outline([(0, 0), (10, 0), (10, 10)], "mask")],
        regions=[Region((100, 100, 200, 180), 0.25, (1, 1)), Region((0, 0, 100, 80), 0.125, (0, 0))],
    )
    features = analysis_geojson(analysis)["features"]
    kinds = [(f["properties"]["objectType"], f["properties"]["classification"]["name"]) for f in features]
    assert kinds == [("detection", "tumor"), ("annotation", "mask"), ("annotation", "PGFC region"), ("annotation", "PGFC region")]
    ring = features[0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and {tuple(p) for p in ring} == {(10, 20), (30, 20), (30, 40), (10, 40)}
    assert [f["properties"]["measurements"] for f in features[2:]] == [{"score": 0.25, "rank": 1}, {"score": 0.125, "rank": 2}]


def test_failed_render_writes_nothing(tmp_path):
    analysis = Analysis(question="q", answer="a", slide_size=(10, 10))  # no score grid: attention.png cannot be drawn
    with pytest.raises(ValueError, match="score grid"):
        write_outputs(analysis, Image.new("RGB", (10, 10)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_analyze_writes_all_four_files(tmp_path, capsys):
    source = tmp_path / "tile.png"
    tissue_picture((400, 300)).save(source)
    out = tmp_path / "result"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        code = main(["analyze", str(source), "-q", "Where is the tumour?", "--model", "test-tiny", "--out", str(out),
                     "--num-regions", "3", "--max-new-tokens", "4"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES  # no temporary files left behind
    answer = json.loads((out / "answer.json").read_text())
    assert answer["question"] == "Where is the tumour?" and answer["slide_size"] == [400, 300]
    assert capsys.readouterr().out.strip() == answer["answer"].strip()
    regions = [f for f in json.loads((out / "regions.geojson").read_text())["features"]
               if f["properties"]["classification"]["name"] == "PGFC region"]
    assert len(regions) == len(answer["regions"]) == 3
    for feature, region in zip(regions, answer["regions"]):
        x1, y1, x2, y2 = region["box"]
        assert feature["geometry"]["coordinates"][0][0] == pytest.approx([x1, y1], abs=0.01)
        assert feature["properties"]["measurements"]["score"] == pytest.approx(region["score"])
    for name in ("overlay.png", "attention.png"):
        with Image.open(out / name) as picture:
            assert picture.size == (400, 300)
    overlay = np.asarray(Image.open(out / "overlay.png")).astype(int)
    assert (np.abs(overlay - np.asarray(tissue_picture((400, 300)))).sum(2) > 0).any()  # something was drawn


def test_cli_analyze_bad_file_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "empty.svs"
    bad.write_bytes(b"")
    out = tmp_path / "result"
    assert main(["analyze", str(bad), "-q", "Grade?", "--model", "test-tiny", "--out", str(out)]) == 2
    assert "empty.svs" in capsys.readouterr().err
    assert not out.exists()


def test_cli_analyze_folder_and_csv_skip_finished_slides(tmp_path, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    for name, size in (("a.png", (200, 160)), ("b.png", (160, 200))):
        tissue_picture(size).save(folder / name)
    (folder / "notes.txt").write_text("not a slide")
    out = tmp_path / "results"
    args = ["-q", "Grade?", "--model", "test-tiny", "--out", str(out), "--num-regions", "2", "--max-new-tokens", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["analyze", str(folder), *args]) == 0
        assert {p.name for p in out.iterdir()} == {"a", "b"}
        assert {p.name for p in (out / "a").iterdir()} == OUTPUT_FILES
        first = (out / "a" / "answer.json").stat().st_mtime_ns
        capsys.readouterr()
        assert main(["analyze", str(folder), *args]) == 0  # rerun: nothing left to do
        assert "2 already done, 0 to analyse" in capsys.readouterr().err
        assert (out / "a" / "answer.json").stat().st_mtime_ns == first
        listing = tmp_path / "list.csv"
        listing.write_text("path\nslides/b.png\nslides/missing.png\n")
        code = main(["analyze", str(listing), *args[:-6], "--out", str(tmp_path / "csv"), *args[-4:]])
    assert code == 1  # one slide of the list is missing: reported, the others still done
    assert (tmp_path / "csv" / "b" / "answer.json").is_file()
    assert "missing.png" in capsys.readouterr().err


def test_given_regions_are_read_instead_of_chosen(engine):
    picture = tissue_picture((400, 300))
    given = [(10, 20, 110, 120), (350, -5, 450, 60)]  # the second sticks out of the image: clipped
    analysis = engine.analyze(picture, "Grade?", pgfc=PGFCConfig(num_regions=5, mode="none"), max_new_tokens=2,
                              regions=given)
    assert [r.box for r in analysis.regions] == [(10.0, 20.0, 110.0, 120.0), (350.0, 0.0, 400.0, 60.0)]
    grid = analysis.score_grid.shape[0]
    for region in analysis.regions:  # the token cell holding each box's centre, with its attention score
        x1, y1, x2, y2 = cell_box(region.token, grid, (400, 300))
        cx, cy = (region.box[0] + region.box[2]) / 2, (region.box[1] + region.box[3]) / 2
        assert x1 <= cx <= x2 and y1 <= cy <= y2
        assert region.score == pytest.approx(float(analysis.score_grid[region.token]))
    assert engine.analyze(picture, "Grade?", max_new_tokens=1, regions=[]).regions == []
    with pytest.raises(ValueError, match="no area inside"):
        engine.analyze(picture, "Grade?", max_new_tokens=1, regions=[(500, 0, 600, 100)])


def test_cli_analyze_region_option(tmp_path, capsys):
    source = tmp_path / "tile.png"
    tissue_picture((400, 300)).save(source)
    args = ["analyze", str(source), "-q", "Grade?", "--model", "test-tiny", "--max-new-tokens", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main([*args, "--out", str(tmp_path / "r"), "--region", "200,0,300,100"]) == 0
    answer = json.loads((tmp_path / "r" / "answer.json").read_text())
    assert [r["box"] for r in answer["regions"]] == [[200.0, 0.0, 300.0, 100.0]]
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "bad"), "--region", "300,0,200,100"])
    assert "X2 > X1" in capsys.readouterr().err
