"""Tests of the instruction record, its JSONL storage and make_record."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from omnipath_lvlm.data import formats
from omnipath_lvlm.data.records import (
    IMAGE_TOKEN,
    MASK_TOKEN,
    Record,
    make_record,
    read_jsonl,
    summarize,
    write_jsonl,
)
from omnipath_lvlm.data.tasks import get_task


def _image(path: Path, size=(32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 120, 180)).save(path)
    return path


def _question(record: Record) -> str:
    first = record.conversations[0]["value"]
    assert first.startswith(IMAGE_TOKEN + "\n")
    return first[len(IMAGE_TOKEN) + 1:]


def test_open_record_uses_a_task_prompt_and_the_label(tmp_path):
    image = _image(tmp_path / "a.png")
    record = make_record("subtype", image, "clear cell carcinoma", random.Random(1), style="open")
    assert _question(record) in get_task("subtype").prompts
    assert record.answer == "clear cell carcinoma"
    assert record.gt == {"label": "clear cell carcinoma"}
    assert record.image == str(image) and record.slide is None
    assert [t["from"] for t in record.conversations] == ["human", "gpt"]


def test_closed_record_letters_match_the_listed_options(tmp_path):
    options = ["grade 1", "grade 2", "grade 3", "grade 4"]
    for seed in range(8):
        record = make_record("grade", tmp_path / "a.png", "grade 3", random.Random(seed), style="closed",
                             options=options)
        lines = _question(record).splitlines()
        assert lines[0] in get_task("grade").prompts
        shown = {line[0]: line[3:] for line in lines[1:]}
        assert sorted(shown.values()) == sorted(options)
        assert record.options == [shown[letter] for letter in "ABCD"]
        letter = record.gt["letter"]
        assert shown[letter] == "grade 3"
        assert record.answer == f"{letter}. grade 3"


def test_closed_record_is_reproducible_and_checks_the_answer(tmp_path):
    a = make_record("grade", tmp_path / "a.png", "G2", random.Random(5), style="closed", options=["G1", "G2", "G3"])
    b = make_record("grade", tmp_path / "a.png", "G2", random.Random(5), style="closed", options=["G1", "G2", "G3"])
    assert a == b
    with pytest.raises(ValueError, match="not one of the options"):
        make_record("grade", tmp_path / "a.png", "G4", random.Random(5), style="closed", options=["G1", "G2"])


def test_closed_record_defaults_to_the_task_classes(tmp_path):
    record = make_record("prognosis", tmp_path / "a.png", "no recurrence within five years", random.Random(0))
    assert record.answer_style == "closed"
    assert sorted(record.options) == sorted(get_task("prognosis").classes)


def test_yes_no_record(tmp_path):
    yes = make_record("til", tmp_path / "a.png", True, random.Random(0))
    no = make_record("msi", tmp_path / "a.png", "No", random.Random(0))
    assert (yes.answer_style, yes.gt["label"], no.gt["label"]) == ("yes_no", "yes", "no")
    assert _question(yes) in get_task("til").prompts
    assert formats.parse_yes_no(yes.answer).items == "yes"
    assert formats.parse_yes_no(no.answer).items == "no"
    with pytest.raises(ValueError, match="yes/no"):
        make_record("til", tmp_path / "a.png", "maybe", random.Random(0))


def test_spatial_records_round_trip_through_the_parsers(tmp_path):
    rng = random.Random(3)
    boxes = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.95]]
    rec = make_record("vessel_detection", tmp_path / "a.png", boxes, rng)
    assert rec.answer_style == "boxes"
    assert formats.parse_boxes(rec.answer).items == [tuple(b) for b in boxes]
    assert rec.gt["boxes"] == boxes

    polygons = [[[0.1, 0.1], [0.4, 0.1], [0.25, 0.3]]]
    rec = make_record("nerve_segmentation", tmp_path / "a.png", polygons, rng, style="polygons")
    assert formats.parse_polygons(rec.answer).items == [[tuple(p) for p in polygons[0]]]

    detections = {"tumor": [[0.1, 0.1, 0.2, 0.2]], "lymphocyte": [[0.3, 0.3, 0.35, 0.36]]}
    rec = make_record("nucleus_classification", tmp_path / "a.png", detections, rng)
    parsed = formats.parse_detections(rec.answer).items
    assert {k: [list(b) for b in v] for k, v in parsed.items()} == detections


def test_mask_record_lists_its_mask(tmp_path):
    rec = make_record("nerve_segmentation", tmp_path / "a.png", tmp_path / "m.png", random.Random(0), style="mask")
    assert rec.answer == MASK_TOKEN
    assert rec.masks == [str(tmp_path / "m.png")] and rec.gt["mask"] == str(tmp_path / "m.png")


def test_make_record_rejects_a_style_the_task_lacks(tmp_path):
    with pytest.raises(ValueError, match="answer styles"):
        make_record("nucleus_detection", tmp_path / "a.png", "x", random.Random(0), style="open")


def _conv(question: str = f"{IMAGE_TOKEN}\nWhat?", answer: str = "x") -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image": "a.png", "slide": "s.svs"}, "exactly one of 'image' and 'slide'"),
        ({}, "exactly one of 'image' and 'slide'"),
        ({"image": "a.png", "conversations": _conv("What?")}, "exactly once"),
        ({"image": "a.png", "conversations": _conv(f"{IMAGE_TOKEN}\nA {IMAGE_TOKEN}")}, "exactly once"),
        ({"image": "a.png", "conversations": _conv()[::-1]}, "expected 'human'"),
        ({"image": "a.png", "conversations": _conv(answer=MASK_TOKEN)}, "1 <mask> tokens but 0 mask files"),
        ({"image": "a.png", "answer_style": "closed"}, "at least 2 options"),
        ({"image": "a.png", "answer_style": "essay"}, "answer_style"),
        ({"image": "a.png", "region": [0, 0, 10, 10]}, "only meaningful with 'slide'"),
        ({"slide": "s.svs", "region": [0, 0, 0, 10]}, "region must be"),
        ({"slide": "s.svs", "regions": [{"image": "c.png", "box": [0.5, 0.1, 0.2, 0.3]}]}, "regions\\[0\\].box"),
        ({"image": "a.png", "image_size": [10.5, 3]}, "image_size"),
    ],
)
def test_record_contract_violations_are_named(fields, message):
    data = {"id": "r1", "conversations": _conv(), "task": "organ", "answer_style": "open", **fields}
    with pytest.raises(ValueError, match=message):
        Record(**data)


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match="unknown record keys \\['conversation'\\]"):
        Record.from_dict({"id": "r", "conversation": [], "task": "t", "answer_style": "open"})
    with pytest.raises(ValueError, match="missing required keys \\['answer_style'\\]"):
        Record.from_dict({"id": "r", "conversations": _conv(), "task": "t", "image": "a.png"})


def test_jsonl_round_trip_stores_relative_paths(tmp_path):
    image = _image(tmp_path / "data" / "imgs" / "a.png")
    outside = _image(tmp_path / "elsewhere" / "b.png")
    mask = _image(tmp_path / "data" / "masks" / "m.png")
    rng = random.Random(0)
    records = [
        make_record("organ", image, "Liver", rng, style="open", id="one", organ="Liver"),
        make_record("nerve_segmentation", outside, mask, rng, style="mask", id="two"),
    ]
    target = write_jsonl(records, tmp_path / "data" / "set.jsonl")
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines[0]["image"] == "imgs/a.png"
    assert lines[1]["image"] == str(outside.resolve())
    assert lines[1]["masks"] == ["masks/m.png"] and lines[1]["gt"]["mask"] == "masks/m.png"
    assert "slide" not in lines[0] and "regions" not in lines[0]
    back, problems = read_jsonl(target)
    assert problems == []
    assert [r.to_dict() for r in back] == [r.map_paths(lambda p: str(Path(p).resolve())).to_dict() for r in records]


def test_read_jsonl_skips_and_reports_bad_lines(tmp_path):
    image = _image(tmp_path / "a.png")
    good = make_record("organ", image, "Liver", random.Random(0), style="open", id="good").to_dict()
    missing = {**good, "id": "missing", "image": "nope.png"}
    bad_contract = {**good, "id": "bad", "answer_style": "essay"}
    lines = [
        json.dumps(good),
        "",
        json.dumps(missing),
        "{not json",
        json.dumps(bad_contract),
        json.dumps(good),  # duplicate id
        json.dumps([1, 2]),
    ]
    path = tmp_path / "set.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe bad bytes\n" + json.dumps(good)[:40].encode())
    records, problems = read_jsonl(path)
    assert [r.id for r in records] == ["good"]
    assert records[0].image == str(image)
    text = "\n".join(problems)
    assert len(problems) == 7, text
    assert problems[0].startswith("line 3:") and "missing file" in problems[0]
    assert problems[1].startswith("line 4:") and "invalid or truncated JSON" in problems[1]
    assert problems[2].startswith("line 5:") and "answer_style" in problems[2]
    assert problems[3].startswith("line 6:") and "duplicate record id 'good'" in problems[3]
    assert problems[4].startswith("line 7:") and "JSON object" in problems[4]
    assert problems[5].startswith("line 8:") and "UTF-8" in problems[5]
    assert problems[6].startswith("line 9:") and "truncated" in problems[6]
    unchecked, problems = read_jsonl(path, check_files=False)
    assert [r.id for r in unchecked] == ["good", "missing"]


def test_write_jsonl_is_atomic(tmp_path):
    image = _image(tmp_path / "a.png")
    target = tmp_path / "set.jsonl"
    target.write_text("previous content\n")
    good = make_record("organ", image, "Liver", random.Random(0), style="open")

    def records():
        yield good
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        write_jsonl(records(), target)
    assert target.read_text() == "previous content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "set.jsonl"]


def test_summarize_counts_and_lengths(tmp_path):
    rng = random.Random(0)
    recs = [
        make_record("organ", tmp_path / "a.png", "Liver", rng, style="open", id="1", organ="Liver", source="x"),
        make_record("organ", tmp_path / "b.png", "Lung", rng, style="open", id="2", organ="Lung", source="x"),
        make_record("til", tmp_path / "c.png", True, rng, id="3"),
    ]
    summary = summarize(recs, lambda text: len(text))
    assert summary.total == 3
    assert summary.by_task == {"organ": 2, "til": 1}
    assert summary.by_organ == {"Liver": 1, "Lung": 1, "(none)": 1}
    assert summary.by_style == {"open": 2, "yes_no": 1}
    assert summary.by_source == {"x": 2, "(none)": 1}
    sizes = sorted(len("\n".join(t["value"] for t in r.conversations)) for r in recs)
    assert summary.lengths["min"] == sizes[0] and summary.lengths["max"] == sizes[-1]
    assert summary.lengths["median"] == sizes[1]


def test_write_jsonl_rejects_duplicate_ids(tmp_path):
    rec = make_record("organ", tmp_path / "a.png", "Liver", random.Random(0), style="open", id="same")
    with pytest.raises(ValueError, match="share the id 'same'"):
        write_jsonl([rec, rec], tmp_path / "set.jsonl")
    assert not (tmp_path / "set.jsonl").exists()
