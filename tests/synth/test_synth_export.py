"""Dataset export: disjoint seed splits, valid records, files on disk, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.cli import main
from omnipath_lvlm.data.formats import parse_boxes
from omnipath_lvlm.data.records import read_jsonl
from omnipath_lvlm.synth.export import SPLITS, export_dataset, split_counts, split_seeds


def test_split_seed_ranges_never_overlap():
    ranges = [set(split_seeds(base, split, 1000)) for base in range(3) for split in SPLITS]
    total = sum(len(r) for r in ranges)
    assert len(set().union(*ranges)) == total
    with pytest.raises(ValueError):
        split_seeds(0, "holdout", 3)
    assert split_counts(10) == {"train": 8, "val": 1, "test": 1}
    assert sum(split_counts(37).values()) == 37


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return out, export_dataset(out, n_patches=5, n_slides=1, seed=2, slide_size=1024, patch_size=128)


def test_export_writes_valid_jsonl_splits(exported):
    out, paths = exported
    assert set(paths) == set(SPLITS)
    all_records = {}
    for split, path in paths.items():
        records, problems = read_jsonl(path, check_files=True)
        assert problems == []
        all_records[split] = records
    assert all_records["train"] and all_records["val"] and all_records["test"]
    manifest = json.loads((out / "synthpath.json").read_text())
    seeds = {split: {r.gt["seed"] for r in recs} for split, recs in all_records.items()}
    assert not (seeds["train"] & seeds["test"]) and not (seeds["train"] & seeds["val"])
    for split in SPLITS:
        ranges = [r for r in (manifest["splits"][split]["patch_seeds"], manifest["splits"][split]["slide_seeds"]) if r]
        assert all(any(lo <= s < hi for lo, hi in ranges) for s in seeds[split])
    ids = [r.id for recs in all_records.values() for r in recs]
    assert len(ids) == len(set(ids))


def test_records_carry_answers_and_geometry(exported):
    _, paths = exported
    records = [r for p in paths.values() for r in read_jsonl(p)[0]]
    tasks = {r.task for r in records}
    assert {"nucleus_detection", "nucleus_classification"} <= tasks
    for r in records:
        assert r.source == "synthpath"
        if r.answer_style == "boxes":
            for box in r.gt["boxes"]:
                assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
        if r.task.endswith("segmentation") and r.image is not None:
            mask = np.asarray(Image.open(r.gt["mask"]))
            assert mask.shape == tuple(r.image_size[::-1]) and set(np.unique(mask)) <= {0, 255}
        if r.image is not None:
            assert Image.open(r.image).size == tuple(r.image_size)


def test_slide_records_have_thumbnail_regions_and_tumour_truth(exported):
    out, paths = exported
    slide_records = [r for p in paths.values() for r in read_jsonl(p)[0] if r.slide is not None]
    assert slide_records
    for r in slide_records:
        thumb = Image.open(out / r.gt["thumbnail"])
        assert max(thumb.size) == 384
        assert r.regions and all(0 <= d["box"][0] < d["box"][2] <= 1 for d in r.regions)
        assert r.gt["grade"] and r.gt["subtype"] and r.gt["tumour_boxes"]
    assert {r.task for r in slide_records} >= {"organ", "subtype", "grade", "cancer_detection"}


def test_cli_slide_and_patches(tmp_path, capsys):
    assert main(["synth", "slide", "--size", "1024", "--out", str(tmp_path / "cli.svs"), "--seed", "7"]) == 0
    text = capsys.readouterr().out
    assert "1024x1024" in text and (tmp_path / "cli.geojson").exists() and (tmp_path / "cli.json").exists()
    assert main(["synth", "patches", "--n", "3", "--out", str(tmp_path / "ds"), "--size", "96",
                 "--task", "organ", "--task", "tissue_type"]) == 0
    records = [r for s in SPLITS for r in read_jsonl(tmp_path / "ds" / f"{s}.jsonl")[0]]
    assert records and {r.task for r in records} <= {"organ", "tissue_type"}
    assert main(["synth", "patches", "--n", "3", "--out", str(tmp_path / "only-val"), "--size", "96",
                 "--task", "organ", "--split", "val"]) == 0
    assert sorted(p.name for p in (tmp_path / "only-val").glob("*.jsonl")) == ["val.jsonl"]
    with pytest.raises(SystemExit, match="--max-boxes"):
        main(["synth", "patches", "--n", "3", "--out", str(tmp_path / "x"), "--max-boxes", "0"])


def test_cli_max_boxes_bounds_the_nucleus_crops(tmp_path):
    assert main(["synth", "patches", "--n", "3", "--out", str(tmp_path), "--size", "128", "--split", "train",
                 "--task", "nucleus_detection", "--max-boxes", "4"]) == 0
    records, _ = read_jsonl(tmp_path / "train.jsonl")
    assert records and all(len(parse_boxes(r.answer).items) <= 4 for r in records)


def test_export_of_one_split_writes_the_same_records(exported, tmp_path):
    out, paths = exported
    only = export_dataset(tmp_path, n_patches=5, n_slides=1, seed=2, slide_size=1024, patch_size=128, splits=["test"])
    assert set(only) == {"test"} and not (tmp_path / "train.jsonl").exists()
    full_records, _ = read_jsonl(paths["test"])
    only_records, _ = read_jsonl(only["test"])
    assert [(r.id, r.conversations) for r in only_records] == [(r.id, r.conversations) for r in full_records]
    with pytest.raises(ValueError, match="splits"):
        export_dataset(tmp_path, n_patches=5, n_slides=0, splits=["holdout"])


def test_more_questions_reask_labels_with_the_same_inputs(exported):
    from omnipath_lvlm.synth.export import _options, more_questions

    _, paths = exported
    records = [r for p in paths.values() for r in read_jsonl(p)[0]]
    asked = [r for r in records if r.task in ("grade", "subtype") and r.answer_style in ("open", "closed")]
    assert any(r.slide is not None for r in asked) and asked
    new = more_questions(records, ["grade", "subtype"], 3, seed=5)
    assert len(new) == 3 * len(asked)
    by_id = {r.id: r for r in asked}
    for q in new:
        source = by_id[q.id.rsplit("-q", 1)[0]]
        assert q.task == source.task and q.gt["label"] == source.gt["label"]
        assert (q.image, q.slide, q.regions, q.organ) == (source.image, source.slide, source.regions, source.organ)
        if q.answer_style == "closed":  # the letter names the label among the exporter's options
            assert sorted(q.options) == sorted(_options(q.task, q.organ))
            assert q.options[ord(q.gt["letter"]) - ord("A")] == q.gt["label"]
            assert q.conversations[1]["value"] == f"{q.gt['letter']}. {q.gt['label']}"
        else:
            assert q.conversations[1]["value"] == q.gt["label"]
    assert len({r.id for r in new}) == len(new)
    # fresh wording: not every new question repeats its source's prompt
    assert any(q.conversations[0]["value"] != by_id[q.id.rsplit("-q", 1)[0]].conversations[0]["value"] for q in new)
    # seeded by record id: order does not matter, the seed does
    reversed_order = {r.id: r.to_dict() for r in more_questions(records[::-1], ["grade", "subtype"], 3, seed=5)}
    assert reversed_order == {r.id: r.to_dict() for r in new}
    other_seed = {r.id: r.conversations[0]["value"] for r in more_questions(records, ["grade", "subtype"], 3, seed=6)}
    assert other_seed != {r.id: r.conversations[0]["value"] for r in new}
    with pytest.raises(KeyError, match="unknown task"):
        more_questions(records, ["gradee"], 1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        more_questions(records, ["grade"], -1)


def test_cli_questions_writes_next_to_the_export(exported, capsys):
    out, paths = exported
    target = out / "train-more.jsonl"
    assert main(["synth", "questions", str(paths["train"]), "--task", "grade", "--n", "2", "--out", str(target)]) == 0
    records, problems = read_jsonl(target, check_files=True)
    assert problems == [] and records and {r.task for r in records} == {"grade"}
    assert "questions (2 per record of grade)" in capsys.readouterr().out
    for line in target.read_text().splitlines():  # stored relative to the export folder, as the exporter does
        row = json.loads(line)
        assert not Path(row.get("image") or row["slide"]).is_absolute()
    with pytest.raises(SystemExit, match="is not a file"):
        main(["synth", "questions", str(out / "missing.jsonl"), "--task", "grade", "--n", "1", "--out", str(out / "y.jsonl")])
    assert not (out / "y.jsonl").exists()
    with pytest.raises(SystemExit, match="no open or closed records"):
        main(["synth", "questions", str(paths["train"]), "--task", "nucleus_detection", "--n", "1",
              "--out", str(out / "x.jsonl")])


def test_slide_windows_are_patches_with_the_slide_tumours_clipped_to_them(tmp_path):
    out = tmp_path / "windows"
    export_dataset(out, n_patches=0, n_slides=2, seed=0, slide_size=4096, patch_size=64, tasks=["cancer_detection"],
                   splits=["train"], slide_windows=4)
    records, problems = read_jsonl(out / "train.jsonl")
    assert not problems
    slides = {r.id: r for r in records if r.slide is not None}
    windows = [r for r in records if "-window" in r.id]
    assert len(slides) >= 1 and len(windows) <= 4 * len(slides) and len(windows) >= 2 * len(slides)
    with_tumour = 0
    for window in windows:
        assert window.slide is None and window.task == "cancer_detection"
        assert Image.open(window.image).size == (64, 64)
        x1, y1, x2, y2 = window.gt["window"]
        assert x2 - x1 == y2 - y1 == 384 / 0.25  # the patch field of view at the slide's 0.25 um per pixel
        slide = slides[window.id.split("-window")[0] + "-cancer_detection"]
        side = x2 - x1
        truth = [np.array(b) * 4096 for b in slide.gt["tumour_boxes"]]  # level-0 tumour boxes of its slide
        expected = sorted(
            [round((max(b[0], x1) - x1) / side, 4), round((max(b[1], y1) - y1) / side, 4),
             round((min(b[2], x2) - x1) / side, 4), round((min(b[3], y2) - y1) / side, 4)]
            for b in truth if b[2] > x1 and b[0] < x2 and b[3] > y1 and b[1] < y2)
        got = sorted(list(b) for b in parse_boxes(window.conversations[-1]["value"]).items)
        assert np.allclose(got, expected, atol=2e-3) if expected else got == []
        with_tumour += bool(got)
    assert 0 < with_tumour < len(windows)  # some windows hold a tumour, some none
