"""Tests of the training dataset and its collator, through the test-tiny model's forward."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.data.dataset import InstructionDataset, describe_region, model_inputs
from omnipath_lvlm.data.records import Record, make_record, write_jsonl
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import OmniPathProcessor


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = OmniPathConfig.from_name("test-tiny")
    return OmniPathForConditionalGeneration(config).eval(), OmniPathProcessor.for_config(config)


def _png(path: Path, size=(40, 30), colour=(200, 120, 180)) -> str:
    Image.new("RGB", size, colour).save(path)
    return str(path)


def _mask_png(path: Path, box: tuple[int, int, int, int], size=(40, 30)) -> str:
    arr = np.zeros(size[::-1], dtype=np.uint8)
    x1, y1, x2, y2 = box
    arr[y1:y2, x1:x2] = 255
    Image.fromarray(arr).save(path)
    return str(path)


def _every_kind(tmp_path: Path) -> list[Record]:
    """One record per answer style, plus a detail-region record and a user-turn input mask."""
    rng = random.Random(0)
    img = _png(tmp_path / "a.png")
    left = _mask_png(tmp_path / "left.png", (0, 0, 20, 30))
    top = _mask_png(tmp_path / "top.png", (0, 0, 40, 15))
    crop = _png(tmp_path / "crop.png", (32, 32), (90, 40, 150))
    records = [
        make_record("subtype", img, "clear cell carcinoma", rng, style="open"),
        make_record("grade", img, "grade 2", rng, style="closed", options=["grade 1", "grade 2", "grade 3"]),
        make_record("mvi", img, True, rng),
        make_record("nucleus_detection", img, [[0.1, 0.2, 0.3, 0.4]], rng),
        make_record("nucleus_classification", img, {"tumor": [[0.1, 0.1, 0.2, 0.2]]}, rng),
        # polygons answer: the left half of the image, with its gt mask file
        make_record("nerve_segmentation", img, [[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]], rng,
                    style="polygons", gt={"mask": left}),
        make_record("cancer_in_nerve_segmentation", img, top, rng, style="mask"),
        make_record("organ", img, "liver", rng, style="open",
                    regions=[{"image": crop, "box": [0.1, 0.2, 0.4, 0.6]}]),
        Record(id="input-mask", task="neural_invasion", answer_style="yes_no", image=img,
               conversations=[{"from": "human", "value": "<image>\nIs there cancer inside <mask>?"},
                              {"from": "gpt", "value": "Yes"}], masks=[left]),
    ]
    return records


def _dataset(tmp_path: Path, processor, **kwargs) -> InstructionDataset:
    path = write_jsonl(_every_kind(tmp_path), tmp_path / "train.jsonl")
    return InstructionDataset([path], processor, **kwargs)


def test_describe_region_text():
    assert describe_region([0.12, 0.4, 0.25, 0.52]) == "Detail region at x 0.12-0.25, y 0.40-0.52:"
    with pytest.raises(ValueError, match="relative"):
        describe_region([0.5, 0.1, 0.2, 0.3])


def test_every_task_kind_goes_through_collate_and_forward(tmp_path, tiny):
    model, processor = tiny
    data = _dataset(tmp_path, processor)
    assert len(data) == 9 and not data.skipped
    samples = [data[i] for i in range(len(data))]
    batch = data.collate(samples)
    ids, labels = batch["input_ids"], batch["labels"]

    # labels only on assistant answers: each labelled span decodes to the gpt turn (+ eos)
    for row, sample in enumerate(samples):
        record = data.record(row)
        labelled = labels[row][labels[row] != -100]
        answer = processor.decode(labelled)
        if record.answer_style in ("mask", "polygons"):
            assert answer == "<mask>"
        else:
            assert answer == record.answer
        n = len(sample.encoded.input_ids)
        assert torch.equal(labelled, ids[row, :n][labels[row, :n] != -100])
        assert int(batch["attention_mask"][row].sum()) == n

    # image tokens: one full image per sample, plus one pooled detail region for the region record
    pools = batch["image_pool"].tolist()
    assert pools == [1] * 7 + [1, 3] + [1]
    expected_tokens = sum(processor.tokens_per_image(p) for p in pools)
    assert int((ids == processor.image_token_id).sum()) == expected_tokens
    assert batch["pixel_values"].shape == (10, 3, processor.max_image_size, processor.max_image_size)
    region_row = processor.decode(ids[7][ids[7] != processor.image_token_id])
    assert describe_region([0.1, 0.2, 0.4, 0.6]) in region_row

    # two output masks (rows 5 and 6), one input mask (row 8)
    targets = batch["mask_targets"]
    assert targets.shape == (2, processor.mask_target_size, processor.mask_target_size)
    out_rows = [r for r in range(len(samples)) for _ in range(int(((ids[r] == processor.mask_token_id)
                                                                    & (labels[r] != -100)).sum()))]
    assert out_rows == [5, 6]
    half = processor.mask_target_size // 2
    assert targets[0, :, :half].all() and not targets[0, :, half:].any()  # left half (polygons row)
    assert targets[1, :half].all() and not targets[1, half:].any()  # top half (mask row)
    assert batch["mask_pixel_values"].shape[0] == 1
    assert batch["mask_input_positions"].sum() == 1 and batch["mask_input_positions"][8].sum() == 1

    with torch.no_grad():
        out = model(**model_inputs(batch))
    assert out.pred_masks.shape[0] == 2
    assert torch.isfinite(out.loss) and torch.isfinite(out.mask_bce) and torch.isfinite(out.mask_dice)
    assert batch["tasks"] == [data.record(i).task for i in range(len(data))]


def test_polygons_mode_turns_mask_answers_into_contour_text(tmp_path, tiny):
    _, processor = tiny
    data = _dataset(tmp_path, processor, segmentation_output="polygons")
    batch = data.collate([data[5], data[6]])
    assert "mask_targets" not in batch
    answer = processor.decode(batch["labels"][1][batch["labels"][1] != -100])
    assert answer.replace(" ", "").startswith("<contour_list><polygon>[0.000,0.000]")
    # the polygon record keeps its text answer
    assert processor.decode(batch["labels"][0][batch["labels"][0] != -100]) == data.record(5).answer


def test_mixture_weights_repeat_and_subsample(tmp_path, tiny):
    _, processor = tiny
    path = write_jsonl(_every_kind(tmp_path), tmp_path / "train.jsonl")
    assert len(InstructionDataset([path, path], processor, mixture_weights=[2.0, 0.0])) == 18
    half = InstructionDataset([path], processor, mixture_weights=[0.5], seed=3)
    again = InstructionDataset([path], processor, mixture_weights=[0.5], seed=3)
    assert len(half) == round(0.5 * 9) and half.index == again.index
    with pytest.raises(ValueError, match="2 JSONL files given but 1 mixture weights"):
        InstructionDataset([path, path], processor, mixture_weights=[1.0])


def test_task_filters_keep_only_the_named_tasks_of_their_file(tmp_path, tiny):
    _, processor = tiny
    path = write_jsonl(_every_kind(tmp_path), tmp_path / "train.jsonl")
    both = InstructionDataset([path, path], processor, tasks=[["grade", "organ"], []], mixture_weights=[2.0, 1.0])
    assert len(both) == 2 * 2 + 9
    assert sorted(both.record(i).task for i in range(len(both)) if both.index[i][0] == 0) == [
        "grade", "grade", "organ", "organ"]
    with pytest.raises(ValueError, match="train.jsonl has no records of the tasks \\['lymph'\\]"):
        InstructionDataset([path], processor, tasks=[["lymph"]])
    with pytest.raises(ValueError, match="2 JSONL files given but 1 task filters"):
        InstructionDataset([path, path], processor, tasks=[["grade"]])


def test_focus_boxes_give_pgfc_prompt_and_touched_token_cells(tmp_path, tiny):
    from omnipath_lvlm.wsi.pgfc import build_conversation

    model, processor = tiny
    rng = random.Random(0)
    img, crop = _png(tmp_path / "a.png"), _png(tmp_path / "crop.png", (32, 32))
    g = processor.grid_size
    box = [0.0, 0.5, 1.0 / g, 0.5 + 1.5 / g]  # the first column, rows g/2 .. g/2 + 1 (touches two cells)
    focused = make_record("grade", img, "grade 2", rng, style="open", gt={"tumour_boxes": [box]},
                          regions=[{"image": crop, "box": [0.1, 0.2, 0.4, 0.6]}], id="focused")
    plain = make_record("grade", img, "grade 1", rng, style="open", id="plain")
    path = write_jsonl([plain, focused], tmp_path / "train.jsonl")
    data = InstructionDataset([path], processor, focus_boxes="tumour_boxes")
    samples = [data[0], data[1]]
    assert samples[0].focus is None and samples[1].focus is not None
    targets = samples[1].focus_targets.view(g, g)
    assert targets.sum() == 2 and targets[g // 2, 0] and targets[g // 2 + 1, 0]
    question = focused.conversations[0]["value"].split("\n", 1)[1]
    expected = processor.encode_conversation(build_conversation(question), [1], add_generation_prompt=True)
    assert samples[1].focus.input_ids == expected.input_ids  # the prompt `omnipath analyze` scores
    batch = data.collate(samples)
    assert batch["focus_samples"].tolist() == [1] and batch["focus_targets"].shape == (1, g * g)
    out = model(**model_inputs(batch))
    assert out.focus_loss is not None and torch.isfinite(out.focus_loss)
    assert InstructionDataset([path], processor)[1].focus is None  # off unless asked for


def test_missing_image_truncated_line_and_unreadable_image_are_skipped(tmp_path, tiny):
    _, processor = tiny
    good = [make_record("subtype", _png(tmp_path / f"g{i}.png"), f"type {i}", random.Random(i), style="open",
                        id=f"good-{i}") for i in range(3)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad_image = make_record("subtype", str(broken), "x", random.Random(9), style="open", id="unreadable")
    missing = make_record("subtype", str(tmp_path / "gone.png"), "x", random.Random(8), style="open", id="missing")
    lines = [json.dumps(r.to_dict()) for r in (good[0], missing, good[1], bad_image, good[2])]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[0][: len(lines[0]) // 2] + "\n")

    data = InstructionDataset([path], processor)
    assert [r.id for r in data.files[0]] == ["good-0", "good-1", "unreadable", "good-2"]
    load_skips = dict(data.skipped)
    assert len(load_skips) == 2
    assert any("line 2" in where and "missing" in reason for where, reason in load_skips.items())
    assert any("line 6" in where and "truncated" in reason for where, reason in load_skips.items())

    sample = data[2]  # the unreadable image: replaced by the next sample, deterministically
    assert sample.id == "good-2" and len(sample.skipped) == 1 and "unreadable" in sample.skipped[0]
    assert data[2].id == "good-2"
    assert "record 'unreadable'" in data.skipped and len(data.skipped) == 3
    assert data.collate([data[0], data[2]])["skipped"] == sample.skipped


def _gradient_slide(path: Path, side: int = 1024) -> Path:
    """A two-level pyramid whose red channel rises with x and green with y (a region's colour names its place)."""
    import tifffile

    ramp = np.linspace(0, 255, side).astype(np.uint8)
    level0 = np.stack([np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)), np.full((side, side), 128, np.uint8)], -1)
    desc = f"Aperio Image Library v12.0.0\r\n{side}x{side} (256x256) RGB|AppMag = 20|MPP = 0.5"
    with tifffile.TiffWriter(path) as tw:
        for factor in (1, 4):
            level = np.asarray(Image.fromarray(level0).reduce(factor)) if factor > 1 else level0
            tw.write(level, tile=(256, 256), description=desc, photometric="rgb", metadata=None)
    return path


def test_region_jitter_rereads_shifted_regions_from_the_slide_and_announces_them(tmp_path, tiny):
    model, processor = tiny
    slide = _gradient_slide(tmp_path / "ramp.svs")
    crop = _png(tmp_path / "crop.png", (64, 64), (10, 200, 30))  # the exported crop: nothing like the slide there
    box = [0.40, 0.40, 0.60, 0.60]
    record = Record(id="s", task="grade", answer_style="open", slide=str(slide),
                    conversations=[{"from": "human", "value": "<image>\nGrade?"}, {"from": "gpt", "value": "grade 2"}],
                    regions=[{"image": crop, "box": box}, {"image": crop, "box": [0.0, 0.0, 0.2, 0.2]}])
    path = write_jsonl([record], tmp_path / "train.jsonl")

    fixed = InstructionDataset([path], processor)[0]  # no jitter: the exported crops and boxes
    assert fixed.cacheable == [True, True, True]
    assert "Detail region at x 0.40-0.60, y 0.40-0.60:" in processor.tokenizer.decode(fixed.encoded.input_ids)

    data = InstructionDataset([path], processor, region_jitter=0.5)
    torch.manual_seed(0)
    seen = set()
    for _ in range(6):
        sample = data[0]
        assert sample.cacheable == [True, False, False]  # the thumbnail is the same every time; regions are not
        text = processor.tokenizer.decode(sample.encoded.input_ids)
        (x1, x2, y1, y2), corner = _announced(text)
        assert 0.30 - 1e-6 <= x1 <= 0.50 + 1e-6 and 0.30 - 1e-6 <= y1 <= 0.50 + 1e-6  # moved by <= half a side
        assert abs((x2 - x1) - 0.2) < 0.011 and abs((y2 - y1) - 0.2) < 0.011  # same size
        assert corner[0] >= 0 and corner[1] >= 0  # the corner region is kept on the slide
        # the picture is the slide at the announced place: its mean red/green is the box centre's ramp value
        pixels = (sample.pixel_values[1] * 0.5 + 0.5).clamp(0, 1)  # processor normalises to [-1, 1]
        red, green = pixels[0].mean().item(), pixels[1].mean().item()
        assert abs(red - (x1 + x2) / 2) < 0.03 and abs(green - (y1 + y2) / 2) < 0.03, (red, green, x1, x2, y1, y2)
        seen.add((x1, y1))
    assert len(seen) > 3  # a fresh shift at each sighting
    import omnipath_lvlm.wsi.slide as wsi_slide

    opened = []
    real_open = wsi_slide.open_slide
    with pytest.MonkeyPatch.context() as patch:  # the thumbnail and the shifted regions share one open slide
        patch.setattr(wsi_slide, "open_slide", lambda path: opened.append(path) or real_open(path))
        data[0]
    assert opened == [str(slide)]
    batch = data.collate([data[0], fixed])
    assert batch["image_cacheable"].tolist() == [True, False, False, True, True, True]
    with pytest.raises(ValueError, match="region_jitter"):
        InstructionDataset([path], processor, region_jitter=1.5)


def _announced(text: str) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
    """The first announced region's (x1, x2, y1, y2) and the second one's top-left corner."""
    import re as _re

    found = [tuple(map(float, m)) for m in _re.findall(r"x ([\d.]+)-([\d.]+), y ([\d.]+)-([\d.]+)", text)]
    assert len(found) == 2, text
    return found[0], (found[1][0], found[1][2])


def test_closed_answers_as_text_train_the_option_text_and_keep_the_lettered_options(tmp_path, tiny):
    _, processor = tiny
    rng = random.Random(3)
    img = _png(tmp_path / "a.png")
    record = make_record("grade", img, "grade 2", rng, style="closed", options=["grade 1", "grade 2", "grade 3"])
    broken = Record(**{**record.__dict__, "id": "broken", "gt": {**record.gt, "letter": "Z"}})
    path = write_jsonl([record, broken], tmp_path / "train.jsonl")

    def answer_and_prompt(sample):
        ids, labels = sample.encoded.input_ids, sample.encoded.labels
        answer = processor.tokenizer.decode([t for t, lab in zip(ids, labels) if lab != -100], skip_special_tokens=True)
        return answer.strip(), processor.tokenizer.decode(ids)

    lettered = InstructionDataset([path], processor)
    as_text = InstructionDataset([path], processor, closed_answers="text")
    letter = record.gt["letter"]
    assert answer_and_prompt(lettered[0])[0] == f"{letter}. grade 2"
    answer, prompt = answer_and_prompt(as_text[0])
    assert answer == "grade 2" and f"{letter}. grade 2" in prompt  # the question still lists lettered options
    as_text[1]  # an answer that does not match its gt's letter and label is skipped, with the reason
    assert any("not '<letter>. <label>'" in reason for reason in as_text.skipped.values())
    with pytest.raises(ValueError, match="closed_answers"):
        InstructionDataset([path], processor, closed_answers="letters")
