"""Tests of the evaluation runner: planning, resumable prediction files, rank split, scoring."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.data.records import Record, make_record, write_jsonl
from omnipath_lvlm.eval.runner import (
    PREDICTIONS,
    Answer,
    EvalConfig,
    ModelAnswerer,
    SingleProcess,
    WorkItem,
    input_mask_paths,
    load_model,
    plan_items,
    raster_size,
    read_predictions,
    repair_tail,
    run_eval,
    score_row,
)

TABLE_FILES = ("tables.md", "table1_patch.csv", "table2_slide.csv", "table4_segmentation.csv",
               "table5_detection.csv", "table6_pgfc.csv")


def _noise_png(path: Path, size: tuple[int, int], seed: int) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def write_test_set(folder: Path) -> Path:
    """A small test set covering every answer style, patch and slide level; returns the JSONL path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    patch = _noise_png(folder / "patch.png", (40, 32), 1)
    slide = _noise_png(folder / "slide.png", (120, 90), 2)
    crop = _noise_png(folder / "crop.png", (30, 30), 3)
    mask = np.zeros((32, 40), dtype=np.uint8)
    mask[8:20, 10:30] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    slide_fields = {"slide": slide, "regions": [{"image": crop, "box": [0.1, 0.2, 0.4, 0.6]}], "organ": "liver",
                    "source": "slides"}
    records = [
        make_record("subtype", patch, "HCC", rng, style="closed", options=["HCC", "ICC", "CHC"], source="liver_set"),
        make_record("mvi", patch, True, rng, source="liver_set"),
        make_record("organ", patch, "Liver", rng, style="open", source="organ_set"),
        make_record("nucleus_detection", patch, [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.8]], rng,
                    image_size=[40, 32], source="monuseg"),
        make_record("nucleus_classification", patch, {"tumor": [[0.1, 0.1, 0.3, 0.3]], "lymphocyte": [[0.6, 0.6, 0.8, 0.9]]},
                    rng, source="pannuke"),
        make_record("nerve_segmentation", patch, [[[0.1, 0.1], [0.6, 0.1], [0.5, 0.7]]], rng, style="polygons",
                    source="nerves"),
        make_record("nerve_segmentation", patch, str(folder / "mask.png"), rng, style="mask", source="nerves"),
        make_record("prognosis", None, "no recurrence within five years", rng, style="closed",
                    options=["recurrence within two years", "no recurrence within five years"], **slide_fields),
        make_record("cancer_detection", None, [[0.2, 0.2, 0.5, 0.6]], rng, **slide_fields),
    ]
    return write_jsonl(records, folder / "test.jsonl")


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> Path:
    return write_test_set(tmp_path_factory.mktemp("testset"))


@pytest.fixture(scope="module")
def loaded():
    return load_model("test-tiny")


class Recording:
    """Wraps an answerer: records which keys each batch asked for, optionally fails on batch `fail_at`."""

    def __init__(self, inner, fail_at: int | None = None):
        self.inner, self.fail_at, self.batches = inner, fail_at, []

    def answer(self, items):
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise RuntimeError("simulated crash")
        self.batches.append([item.key for item in items])
        return self.inner.answer(items)

    @property
    def keys(self) -> list[str]:
        return [key for batch in self.batches for key in batch]


def _answerer(loaded, **kwargs) -> ModelAnswerer:
    return ModelAnswerer(loaded.model, loaded.processor, pipeline=loaded.pipeline, max_new_tokens=6, **kwargs)


def _config(test_set: Path, out: Path, **kwargs) -> EvalConfig:
    values = {"model": "test-tiny", "data": test_set, "out": out, "batch_size": 3, "max_new_tokens": 6,
              "pgfc": ("attention", "none")} | kwargs
    return EvalConfig(**values)


def _file_keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def _tables(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text() for name in TABLE_FILES}


@pytest.fixture(scope="module")
def reference_run(test_set, loaded, tmp_path_factory):
    """An uninterrupted run: (output folder, result, recorded answerer)."""
    out = tmp_path_factory.mktemp("reference")
    recording = Recording(_answerer(loaded))
    result = run_eval(_config(test_set, out), answerer=recording)
    return out, result, recording


# --------------------------------------------------------------------------- #
# Planning and files
# --------------------------------------------------------------------------- #


def test_plan_items_repeats_slide_records_per_pgfc_mode(test_set):
    from omnipath_lvlm.data.records import read_jsonl

    records, problems = read_jsonl(test_set)
    assert problems == []
    items = plan_items(records, ("attention", "random", "none"))
    slide_keys = [i.key for i in items if i.level == "slide"]
    assert len(items) == 7 + 2 * 3
    assert len(slide_keys) == len(set(slide_keys)) == 6
    assert all(i.variant is None for i in items if i.level == "patch")
    assert [i.index for i in items] == list(range(len(items)))
    assert len(plan_items(records, ("none",), limit=2)) == 2


def test_repair_tail_cuts_an_unfinished_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"key": "a"}\n{"key": "b"}\n{"key": "c", "predic')
    assert repair_tail(path) == len(b'{"key": "c", "predic')
    assert path.read_bytes() == b'{"key": "a"}\n{"key": "b"}\n'
    assert repair_tail(path) == 0
    path.write_bytes(b'{"key": "only", "tru')
    repair_tail(path)
    assert path.read_bytes() == b""


def test_read_predictions_skips_bad_lines_and_keeps_first_key(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"key": "a", "prediction": "1"}\nnot json\n[1, 2]\n{"key": "a", "prediction": "2"}\n'
                     b'\xff\xfe\n{"key": "b", "pre')
    predictions = read_predictions(path)
    assert list(predictions) == ["a"]
    assert predictions["a"]["prediction"] == "1"
    assert read_predictions(tmp_path / "absent.jsonl") == {}


def test_input_mask_paths_take_user_turn_masks_only():
    record = Record(id="r", task="nerve_segmentation", answer_style="mask", image="x.png",
                    conversations=[{"from": "human", "value": "<image>\nIs <mask> a nerve?"},
                                   {"from": "gpt", "value": "Yes, <mask>"},
                                   {"from": "human", "value": "And <mask>?"},
                                   {"from": "gpt", "value": "<mask>"}],
                    masks=["in1.png", "out1.png", "in2.png", "out2.png"])
    assert input_mask_paths(record) == ["in1.png", "in2.png"]


def test_raster_size_caps_the_longest_side():
    assert raster_size([100, 50]) == [100, 50]
    assert raster_size([100_000, 50_000], max_side=1000) == [1000, 500]


def test_config_rejects_unknown_pgfc_mode(tmp_path):
    with pytest.raises(ValueError, match="pgfc modes"):
        EvalConfig(model="test-tiny", data=tmp_path / "d.jsonl", out=tmp_path, pgfc=("everything",))


# --------------------------------------------------------------------------- #
# Prompts and scoring rows
# --------------------------------------------------------------------------- #


def test_slide_items_show_thumbnail_and_detail_crops_by_mode(test_set, loaded):
    from omnipath_lvlm.data.records import read_jsonl

    records, _ = read_jsonl(test_set)
    slide_record = next(r for r in records if r.slide is not None)
    answerer = ModelAnswerer(loaded.model, loaded.processor, num_regions=2, region_pool=3)
    by_mode = {mode: answerer.prepare(WorkItem(0, slide_record, mode)) for mode in ("attention", "random", "none")}
    assert by_mode["none"].pools == [1]
    assert by_mode["none"].turns == slide_record.conversations[:-1]
    # the record has one detail crop: attention shows it after the thumbnail, with its box in the text
    assert by_mode["attention"].pools == [1, 3]
    assert by_mode["attention"].boxes == [[0.1, 0.2, 0.4, 0.6]]
    first_turn = by_mode["attention"].turns[0]["value"]
    assert first_turn.count("<image>") == 2 and "[0.100, 0.200, 0.400, 0.600]" in first_turn
    assert first_turn.endswith(slide_record.question)
    assert by_mode["random"].pools == [1, 3, 3]
    for box in by_mode["random"].boxes:
        assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
    again = answerer.prepare(WorkItem(0, slide_record, "random"))
    assert again.boxes == by_mode["random"].boxes  # seeded by the record id


def test_score_row_reads_the_ground_truth_of_each_style(test_set, tmp_path):
    from omnipath_lvlm.data.records import read_jsonl

    records, _ = read_jsonl(test_set)
    config = EvalConfig(model="test-tiny", data=test_set, out=tmp_path, centroid_radius_px=6.0)
    rows = {r.answer_style + ("-slide" if r.slide else ""): score_row(WorkItem(0, r, "none" if r.slide else None),
                                                                     {"prediction": "x"}, config) for r in records}
    closed = rows["closed"]
    assert closed["options"][closed["answer_index"]] == "HCC"
    assert rows["yes_no"]["answer"] == "yes"
    assert rows["open"]["answer"] == "Liver"
    assert rows["boxes"]["match"] == "centroid" and rows["boxes"]["image_size"] == [40, 32]
    assert rows["polygons"]["image_size"] == [40, 32]
    assert rows["mask"]["pred_mask"] is None and rows["mask"]["gt_mask"].sum() == 12 * 20
    assert rows["closed-slide"]["level"] == "slide" and rows["closed-slide"]["variant"] == "none"
    assert rows["closed-slide"]["group"] == "slides" and closed["group"] == "liver_set"
    assert "match" not in rows["boxes-slide"]  # centroid matching is for nucleus tasks only


# --------------------------------------------------------------------------- #
# Whole runs
# --------------------------------------------------------------------------- #


def test_reference_run_answers_every_item_once_and_writes_tables(reference_run):
    out, result, recording = reference_run
    keys = _file_keys(out / PREDICTIONS)
    assert len(keys) == len(set(keys)) == result.items == 7 + 2 * 2
    assert sorted(recording.keys) == sorted(keys)
    assert all(len(batch) <= 3 for batch in recording.batches)
    assert result.missing == [] and result.generated == result.items
    for name in TABLE_FILES:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == result.items
    kinds = {s["kind"] for s in summary["tasks"].values()}
    assert kinds == {"closed", "yes_no", "open", "boxes", "detections", "polygons", "mask"}
    assert sum(s["n"] for s in summary["tasks"].values()) == result.items


def test_crashed_run_resumes_without_recomputing(reference_run, test_set, loaded, tmp_path):
    reference_out, reference, _ = reference_run
    first = Recording(_answerer(loaded), fail_at=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_eval(_config(test_set, tmp_path), answerer=first)
    assert _file_keys(tmp_path / PREDICTIONS) == first.keys and len(first.keys) == 3

    second = Recording(_answerer(loaded))
    result = run_eval(_config(test_set, tmp_path), answerer=second)
    assert set(second.keys).isdisjoint(first.keys)
    assert result.generated == len(second.keys) == reference.items - 3 and result.skipped == 3
    keys = _file_keys(tmp_path / PREDICTIONS)
    assert len(keys) == len(set(keys)) == reference.items
    assert _tables(tmp_path) == _tables(reference_out)
    assert result.summaries == reference.summaries

    third = Recording(_answerer(loaded))  # a finished run only re-scores
    run_eval(_config(test_set, tmp_path), answerer=third)
    assert third.keys == []


def test_limit_then_full_run_matches_the_uninterrupted_run(reference_run, test_set, loaded, tmp_path):
    reference_out, reference, _ = reference_run
    first = Recording(_answerer(loaded))
    limited = run_eval(_config(test_set, tmp_path, limit=2), answerer=first)
    assert limited.items == 2 and sorted(first.keys) == sorted(_file_keys(tmp_path / PREDICTIONS))
    second = Recording(_answerer(loaded))
    run_eval(_config(test_set, tmp_path), answerer=second)
    assert set(second.keys).isdisjoint(first.keys) and len(first.keys) + len(second.keys) == reference.items
    assert _tables(tmp_path) == _tables(reference_out)


def test_truncated_last_line_is_answered_again(reference_run, test_set, loaded, tmp_path):
    reference_out, reference, _ = reference_run
    text = (reference_out / PREDICTIONS).read_text()
    lines = text.splitlines(keepends=True)
    lost_key = json.loads(lines[-1])["key"]
    (tmp_path / PREDICTIONS).write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    (tmp_path / "run.json").write_text((reference_out / "run.json").read_text())
    if (reference_out / "masks").is_dir():
        (tmp_path / "masks").mkdir()
        for mask in (reference_out / "masks").iterdir():
            (tmp_path / "masks" / mask.name).write_bytes(mask.read_bytes())
    recording = Recording(_answerer(loaded))
    run_eval(_config(test_set, tmp_path), answerer=recording)
    assert recording.keys == [lost_key]
    assert (tmp_path / PREDICTIONS).read_text() == text
    assert _tables(tmp_path) == _tables(reference_out)


def test_resuming_with_other_settings_is_refused(reference_run, test_set, loaded):
    reference_out, _, _ = reference_run
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_eval(_config(test_set, reference_out, max_new_tokens=7), answerer=Recording(_answerer(loaded)))


class FakeRank(SingleProcess):
    """One rank of a multi-process run, simulated in this process (ranks run one after the other)."""


def test_ranks_split_items_by_index_and_main_merges(reference_run, test_set, loaded, tmp_path):
    reference_out, reference, _ = reference_run
    rank1 = Recording(_answerer(loaded))
    result1 = run_eval(_config(test_set, tmp_path), answerer=rank1,
                       process=FakeRank(process_index=1, num_processes=2, is_main_process=False))
    assert result1.summaries == {} and not (tmp_path / "summary.json").exists()
    rank_keys = _file_keys(tmp_path / "predictions.rank1.jsonl")
    assert rank_keys == rank1.keys
    items = {key: index for index, key in enumerate(_file_keys(reference_out / PREDICTIONS))}
    assert all(items[key] % 2 == 1 for key in rank1.keys)

    rank0 = Recording(_answerer(loaded))
    run_eval(_config(test_set, tmp_path), answerer=rank0,
             process=FakeRank(process_index=0, num_processes=2, is_main_process=True))
    assert all(items[key] % 2 == 0 for key in rank0.keys)
    assert sorted(rank0.keys + rank1.keys) == sorted(items)
    assert not list(tmp_path.glob("predictions.rank*.jsonl"))
    assert sorted(_file_keys(tmp_path / PREDICTIONS)) == sorted(items)
    assert _tables(tmp_path) == _tables(reference_out)


def test_generated_masks_are_saved_at_truth_size_and_scored(test_set, loaded, tmp_path):
    mask_id = loaded.processor.mask_token_id
    forced = ModelAnswerer(loaded.model, loaded.processor, max_new_tokens=2,
                           generate_kwargs={"sequence_bias": {(mask_id,): 100.0}})
    config = _config(test_set, tmp_path, max_new_tokens=2)
    result = run_eval(config, answerer=forced)
    line = next(p for p in read_predictions(tmp_path / PREDICTIONS).values() if p["kind"] == "mask")
    assert line["prediction"].count("<mask>") == 2
    with Image.open(tmp_path / line["pred_mask"]) as saved:
        assert saved.size == (40, 32)
    mask_summary = next(s for s in result.summaries.values() if s["kind"] == "mask")
    assert mask_summary["parse_failures"] == 0 and 0.0 <= mask_summary["dice"] <= 1.0


def test_answer_without_mask_is_a_parse_failure(test_set, tmp_path):
    class Silent:
        def answer(self, items):
            return [Answer(text="no idea") for _ in items]

    result = run_eval(_config(test_set, tmp_path), answerer=Silent())
    mask_summary = next(s for s in result.summaries.values() if s["kind"] == "mask")
    assert mask_summary["parse_failures"] == 1 and mask_summary["dice"] == 0.0
    closed = [s for s in result.summaries.values() if s["kind"] == "closed"]
    assert all(s["accuracy"] == 0.0 and s["parse_failures"] == s["n"] for s in closed)
