"""Tests of the evaluation runner: planning, resumable prediction files, rank split, scoring."""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.data.records import Record, make_record, read_jsonl, write_jsonl
from omnipath_lvlm.eval.runner import (
    PREDICTIONS,
    Answer,
    EvalConfig,
    ModelAnswerer,
    SingleProcess,
    WorkItem,
    input_mask_paths,
    load_pipeline,
    plan_items,
    raster_size,
    read_predictions,
    repair_tail,
    run_eval,
    score_row,
)

PGFC = ("none", "random", "attention")
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
        make_record("nucleus_classification", patch,
                    {"tumor": [[0.1, 0.1, 0.3, 0.3]], "lymphocyte": [[0.6, 0.6, 0.8, 0.9]]}, rng, source="pannuke"),
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
    with pytest.warns(UserWarning, match="UNTRAINED"):
        return load_pipeline("test-tiny")


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


class Oracle:
    """Answers items with an even index with the reference answer (and true mask), the others with 'unsure'."""

    def answer(self, items):
        answers = []
        for item in items:
            if item.index % 2:
                answers.append(Answer(text="unsure"))
                continue
            masks = []
            if item.record.answer_style == "mask":
                with Image.open(item.record.gt["mask"]) as truth:
                    masks = [np.asarray(truth) > 0]
            answers.append(Answer(text=item.record.conversations[-1]["value"], masks=masks))
        return answers


def _answerer(loaded, **kwargs) -> ModelAnswerer:
    return ModelAnswerer(loaded, max_new_tokens=4, **kwargs)


def _config(test_set: Path, out: Path, **kwargs) -> EvalConfig:
    values = {"model": "test-tiny", "data": test_set, "out": out, "batch_size": 3, "max_new_tokens": 4,
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


def test_patch_items_prompt_without_the_answer(test_set, loaded):
    records, _ = read_jsonl(test_set)
    answerer = ModelAnswerer(loaded)
    prepared = answerer.prepare(WorkItem(0, records[0], None))
    assert prepared.turns == records[0].conversations[:1]
    assert [image.size for image in prepared.images] == [(40, 32)] and prepared.input_masks == []
    with pytest.raises(ValueError, match="slide-level"):
        answerer.prepare(WorkItem(0, records[-1], "none"))


def test_slide_items_go_through_the_pipeline_with_their_pgfc_mode(test_set, loaded):
    records, _ = read_jsonl(test_set)
    slide_record = next(r for r in records if r.slide is not None)
    answerer = ModelAnswerer(loaded, max_new_tokens=3, num_regions=2)
    items = [WorkItem(0, slide_record, mode) for mode in ("attention", "random", "none")]
    items.append(WorkItem(1, records[0], None))
    answers = answerer.answer(items)
    assert [a.engine for a in answers] == ["pipeline", "pipeline", "pipeline", "model"]
    assert len(answers[0].regions) == 2 and len(answers[1].regions) == 2 and answers[2].regions == []
    for box in answers[0].regions + answers[1].regions:
        assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1


def test_slide_items_read_the_window_size_given_for_locating(test_set, loaded):
    records, _ = read_jsonl(test_set)
    slide_record = next(r for r in records if r.slide is not None)
    seen = []

    class Recording:  # the loaded pipeline with a 384 um window, noting the PGFC settings each analysis is given
        model, processor, pgfc = loaded.model, loaded.processor, loaded.pgfc.with_overrides(window_um=384.0)

        def analyze(self, *args, pgfc, **kwargs):
            seen.append(pgfc.window_um)
            return loaded.analyze(*args, pgfc=pgfc, **kwargs)

    for window in (None, "cells", 50.0):
        ModelAnswerer(Recording(), max_new_tokens=2, num_regions=1, locate="regions",
                      window_um=window).answer([WorkItem(0, slide_record, "attention")])
    assert seen == [384.0, None, 50.0]  # None keeps the model's own


def test_score_row_reads_the_ground_truth_of_each_style(test_set, tmp_path):
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
    # the last item is a slide item, answered alone by the pipeline both times: same text again
    assert (tmp_path / PREDICTIONS).read_text() == text
    assert _tables(tmp_path) == _tables(reference_out)


def test_resuming_with_other_settings_is_refused(reference_run, test_set, loaded):
    reference_out, _, _ = reference_run
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_eval(_config(test_set, reference_out, max_new_tokens=7), answerer=Recording(_answerer(loaded)))


class FakeRank(SingleProcess):
    """One rank of a multi-process run, simulated in this process (ranks run one after the other)."""


def test_ranks_split_items_by_index_and_main_merges(test_set, tmp_path):
    rank1 = Recording(Oracle())
    result1 = run_eval(_config(test_set, tmp_path), answerer=rank1,
                       process=FakeRank(process_index=1, num_processes=2, is_main_process=False))
    assert result1.summaries == {} and not (tmp_path / "summary.json").exists()
    assert _file_keys(tmp_path / "predictions.rank1.jsonl") == rank1.keys
    assert not (tmp_path / PREDICTIONS).exists()

    rank0 = Recording(Oracle())
    result0 = run_eval(_config(test_set, tmp_path), answerer=rank0,
                       process=FakeRank(process_index=0, num_processes=2, is_main_process=True))
    index = {item.key: item.index for item in plan_items(read_jsonl(test_set)[0], ("attention", "none"))}
    assert rank1.keys and all(index[key] % 2 == 1 for key in rank1.keys)
    assert rank0.keys and all(index[key] % 2 == 0 for key in rank0.keys)
    assert sorted(rank0.keys + rank1.keys) == sorted(index)
    assert not list(tmp_path.glob("predictions.rank*.jsonl"))
    keys = _file_keys(tmp_path / PREDICTIONS)
    assert sorted(keys) == sorted(index) and result0.missing == []


def test_generated_masks_are_saved_at_truth_size_and_scored(test_set, loaded, tmp_path):
    mask_id = loaded.processor.mask_token_id
    forced = ModelAnswerer(loaded, max_new_tokens=2, generate_kwargs={"sequence_bias": {(mask_id,): 100.0}})
    config = _config(test_set, tmp_path, max_new_tokens=2, limit=7)  # the patch records
    result = run_eval(config, answerer=forced)
    line = next(p for p in read_predictions(tmp_path / PREDICTIONS).values() if p["kind"] == "mask")
    assert line["prediction"].count("<mask>") == 2
    with Image.open(tmp_path / line["pred_mask"]) as saved:
        assert saved.size == (40, 32)
    mask_summary = next(s for s in result.summaries.values() if s["kind"] == "mask")
    assert mask_summary["parse_failures"] == 0 and 0.0 <= mask_summary["dice"] <= 1.0
    # an outline prompt answered with <mask> is scored by its mask, not as unreadable text
    outline = next(p for p in read_predictions(tmp_path / PREDICTIONS).values() if p["kind"] == "polygons")
    assert outline["pred_mask"] and (tmp_path / outline["pred_mask"]).is_file()
    polygons_summary = next(s for s in result.summaries.values() if s["kind"] == "polygons")
    assert polygons_summary["parse_failures"] == 0


def test_scores_follow_the_answers(test_set, tmp_path):
    result = run_eval(_config(test_set, tmp_path, pgfc=("attention", "random", "none")), answerer=Oracle())
    by_task = {(s["task"], s["variant"]): s for s in result.summaries.values()}
    # patch records 0..6 are items 0..6: even ones answered right, odd ones unreadable
    assert by_task["subtype", None]["accuracy"] == 1.0  # item 0
    assert by_task["mvi", None]["accuracy"] == 0.0 and by_task["mvi", None]["parse_failures"] == 1  # item 1
    assert by_task["organ", None]["accuracy"] == 1.0  # item 2
    assert by_task["nucleus_detection", None]["f1"] == 0.0  # item 3
    assert by_task["nucleus_classification", None]["f1"] == 1.0  # item 4
    assert by_task["nerve_segmentation (polygons)", None]["dice"] == 0.0  # item 5
    assert by_task["nerve_segmentation (mask)", None]["dice"] == 1.0  # item 6: the true mask
    # slide records: prognosis = items 7, 8, 9 (attention, random, none); cancer_detection = items 10, 11, 12
    assert [by_task["prognosis", v]["accuracy"] for v in PGFC] == [0.0, 1.0, 0.0]
    assert [by_task["cancer_detection", v]["f1"] for v in PGFC] == [1.0, 0.0, 1.0]
    table6 = (tmp_path / "table6_pgfc.csv").read_text().splitlines()
    assert table6[0].startswith("Task,Group,w/o PGFC,Random,w/ PGFC")
    assert table6[1].startswith("prognosis,slides,0.00,100.00,0.00")


def test_oracle_run_resumed_and_split_gives_the_same_tables(test_set, tmp_path):
    whole = tmp_path / "whole"
    run_eval(_config(test_set, whole), answerer=Oracle())
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError):
        run_eval(_config(test_set, crashed), answerer=Recording(Oracle(), fail_at=2))
    limited = run_eval(_config(test_set, crashed, limit=8), answerer=Oracle())
    # 8 records: 7 patch items + 1 slide record in 2 PGFC modes; the 2 batches of 3 before the crash stay
    assert (limited.items, limited.skipped, limited.generated) == (9, 6, 3)
    run_eval(_config(test_set, crashed), answerer=Oracle())
    assert _tables(crashed) == _tables(whole)
    assert "100.00" in _tables(whole)["table1_patch.csv"]
    split = tmp_path / "split"
    for rank in (2, 1, 0):
        run_eval(_config(test_set, split), answerer=Oracle(),
                 process=FakeRank(process_index=rank, num_processes=3, is_main_process=rank == 0))
    assert _tables(split) == _tables(whole)


def test_pgfc_mode_record_reads_the_regions_the_record_lists(test_set, loaded):
    records, _ = read_jsonl(test_set)
    slide_record = next(r for r in records if r.slide is not None)
    answer = ModelAnswerer(loaded, max_new_tokens=2, num_regions=3).answer([WorkItem(0, slide_record, "record")])[0]
    assert answer.engine == "pipeline"
    assert answer.regions == [pytest.approx([0.1, 0.2, 0.4, 0.6])]  # the record's box, not S = 3 chosen ones
    bare = dataclasses.replace(slide_record, regions=[])
    with pytest.raises(ValueError, match="lists no regions"):
        ModelAnswerer(loaded, max_new_tokens=2).answer([WorkItem(0, bare, "record")])
