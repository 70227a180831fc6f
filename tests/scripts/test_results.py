"""scripts/results.py: the tables RESULTS.md is built from, on hand-made predictions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest



@pytest.fixture(scope="module")
def results(load_script):
    return load_script("results")


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _closed(i: int, label: str, options: list[str]) -> dict:
    letter = "ABCDEF"[options.index(label)]
    return {"id": f"q{i}", "task": "organ", "answer_style": "closed", "options": options,
            "gt": {"label": label, "letter": letter}, "slide": "s.tiff",
            "conversations": [{"from": "human", "value": "<image>\nWhich organ?"},
                              {"from": "gpt", "value": f"{letter}. {label}"}]}


def test_detection_overlap_scores_own_image_against_another(results, tmp_path):
    a = "<bbox_list><bbox>0.000, 0.000, 0.400, 0.400</bbox></bbox_list>"
    b = "<bbox_list><bbox>0.600, 0.600, 1.000, 1.000</bbox></bbox_list>"
    preds = _write(tmp_path / "p.jsonl", [
        {"id": "1", "task": "cancer_detection", "kind": "boxes", "prediction": a, "reference": a},
        {"id": "2", "task": "cancer_detection", "kind": "boxes", "prediction": b.replace("</bbox_list>", ""), "reference": b}])
    row = results.detection_overlap_table(preds).splitlines()[-1].split(" | ")
    # task, images, boxes, repaired, own share, control share, own IoU, control IoU
    assert row[1:] == ["2", "2", "1", "100.0", "0.0", "100.0", "0.0 |"]


def test_pgfc_paired_table_counts_discordant_questions(results, tmp_path):
    options = ["Colon", "Liver", "Kidney"]
    records = [_closed(i, label, options) for i, label in enumerate(["Liver", "Kidney", "Colon"])]
    test = _write(tmp_path / "t.jsonl", records)
    rows = []
    for r in records:
        right = r["conversations"][-1]["value"]
        rows.append({"id": r["id"], "variant": "none", "prediction": "unsure"})
        rows.append({"id": r["id"], "variant": "attention", "prediction": right if r["id"] != "q2" else "A. Colon, B. Liver"})
    table = results.pgfc_paired_table([_write(tmp_path / "p.jsonl", rows), tmp_path / "absent.jsonl"], test)
    assert "| none | 3 | 0 | 0.0 |" in table and "| attention | 3 | 2 | 66.7 |" in table
    assert "| attention vs none | 2 | 0 | 0.5 |" in table  # exact binomial test on 2 discordant pairs


def test_closed_text_table_separates_letter_from_text(results, tmp_path):
    test = _write(tmp_path / "t.jsonl", [_closed(0, "Liver", ["Colon", "Liver", "Kidney"])])
    preds = _write(tmp_path / "p.jsonl", [{"id": "q0", "variant": None, "prediction": "C. Liver"}])
    row = results.closed_text_table([(preds, test)]).splitlines()[-1]
    assert row == "| slide | organ | – | 1 | 0.0 | 100.0 |"


def test_chance_table_uses_uniform_and_best_constant_guesses(results, tmp_path):
    records = [_closed(0, "Liver", ["Colon", "Liver"]), _closed(1, "Colon", ["Colon", "Liver", "Kidney", "Lung"])]
    for i, answer in enumerate(["Yes", "No", "No"]):
        records.append({"id": f"y{i}", "task": "mvi", "answer_style": "yes_no",
                        "conversations": [{"from": "human", "value": "?"}, {"from": "gpt", "value": answer}]})
    table = results.chance_table(_write(tmp_path / "t.jsonl", records))
    assert "| slide | organ (closed) | 2 | 37.5 | uniform |" in table
    assert '| patch | mvi | 3 | 66.7 | "no" |' in table


def test_carried_section_keeps_earlier_tables_with_their_commands(results):
    heading = "## UNI and MSFF ablation (tables 9 and 10 analogue)"
    previous = "\n".join([
        "# Results", "", "## Commands", "", "```",
        "omnipath train c.yaml output_dir=runs/repro/full train.max_steps=250", "#   25.0 min",
        "omnipath train c.yaml output_dir=runs/repro/nano train.max_steps=600", "#   58.1 min",
        "omnipath eval --model runs/repro/no-uni/final --out runs/repro/eval-no-uni --pgfc none", "#   1.3 min",
        "```", "", heading, "", "Same data.", "", "| Model | Mean |", "|---|---|", "| full | 36.4 |", "",
        "## Next section", "not this"])
    section = results.carried_section(previous, heading, ["full", "no-uni"])
    text = "\n".join(section)
    assert section[0] == heading and "| full | 36.4 |" in section and "not this" not in text
    assert "output_dir=runs/repro/full" in text and "#   25.0 min" in text and "eval-no-uni" in text
    assert "runs/repro/nano" not in text and "58.1" not in text
    # carried again: unchanged, not annotated twice
    again = results.carried_section("\n".join(["# Results", "", *section, "## Next"]), heading, ["full", "no-uni"])
    assert "| full | 36.4 |" in again and "\n".join(again).count(results.CARRIED) == 1
    # nothing to carry: no section, or only the placeholder
    assert results.carried_section("# Results\n", heading, ["full"]) == []
    assert results.carried_section(f"{heading}\n\nNot run yet.\n", heading, ["full"]) == []


def test_at_least_is_the_poisson_binomial_tail(results):
    assert results.at_least(0, [0.3, 0.9]) == pytest.approx(1.0)
    assert results.at_least(1, [0.5, 0.5]) == pytest.approx(0.75)
    assert results.at_least(2, [0.5, 0.2]) == pytest.approx(0.1)
    assert results.at_least(3, [0.5, 0.2]) == pytest.approx(0.0)


def test_above_chance_table_counts_right_answers_against_guessing(results, tmp_path):
    options = ["well differentiated", "moderately differentiated", "poorly differentiated"]
    records = []
    for i in range(4):
        rec = _closed(i, options[i % 3], options)
        rec["task"] = "grade"
        records.append(rec)
    test = _write(tmp_path / "t.jsonl", records)
    letters = ["A. well differentiated", "B. moderately differentiated", "C. poorly differentiated", "A. well differentiated"]
    rows = [{"id": f"q{i}", "variant": "attention", "prediction": letters[i]} for i in range(4)]  # all right
    rows += [{"id": f"q{i}", "variant": "none", "prediction": "B. moderately differentiated"} for i in range(4)]  # 1 right
    table = results.above_chance_table(_write(tmp_path / "p.jsonl", rows), test)
    assert f"| attention | grade | 4 | 4 | 1.3 | {(1 / 3) ** 4:.3g} |" in table
    assert "| none | grade | 4 | 1 | 1.3 |" in table
    assert "| attention | grade + subtype | 4 | 4 |" in table  # the pooled row (no subtype questions here)


def test_region_hit_table_splits_accuracy_by_regions_on_tumour(results, tmp_path):
    options = ["well differentiated", "moderately differentiated", "poorly differentiated"]
    records = []
    for i in range(3):
        rec = _closed(i, options[0], options)
        rec["task"], rec["gt"]["tumour_boxes"] = "grade", [[0.1, 0.1, 0.2, 0.2]]
        records.append(rec)
    test = _write(tmp_path / "t.jsonl", records)
    on, off = [[0.15, 0.15, 0.3, 0.3]], [[0.5, 0.5, 0.6, 0.6]]
    rows = [{"id": "q0", "variant": "attention", "prediction": "A. well differentiated", "regions": on},
            {"id": "q1", "variant": "attention", "prediction": "B. moderately differentiated", "regions": off},
            {"id": "q2", "variant": "attention", "prediction": "A. well differentiated", "regions": off},
            {"id": "q0", "variant": "none", "prediction": "A. well differentiated", "regions": []}]
    table = results.region_hit_table([_write(tmp_path / "p.jsonl", rows)], test)
    assert "| attention | 3 | 33.3 | 100.0 (n = 1) | 50.0 (n = 2) |" in table
    assert "| none |" not in table


def test_runs_table_puts_runs_side_by_side(results):
    a = {"x": {"task": "grade (closed)", "accuracy": 0.25}, "y": {"task": "organ (open)", "accuracy": 0.5}}
    b = {"x": {"task": "grade (closed)", "accuracy": 1.0}}
    table = results.runs_table({"nano": a, "probe": b}).splitlines()
    assert table[0] == "| Task | nano | probe |"
    assert "| grade (closed) | 25.0 | 100.0 |" in table and "| organ (open) | 50.0 | – |" in table
    modes = {"n": {"task": "grade (closed)", "variant": "none", "accuracy": 0.0},
             "a": {"task": "grade (closed)", "variant": "attention", "accuracy": 0.75}}
    assert "| grade (closed) | 75.0 |" in results.runs_table({"nano": modes}, "attention").splitlines()
    assert "| grade (closed) | 0.0 |" in results.runs_table({"nano": modes}, "none").splitlines()


def test_feature_probe_table_lists_each_source_and_view(results):
    probe = lambda acc, const: {"accuracy": acc, "constant": const, "n_fit": 120, "n_score": 36}  # noqa: E731
    data = {"pixels": {"detail0": {"grade": probe(0.5, 0.4), "organ": probe(0.25, 0.3)}},
            "runs/repro/nano/final": {"thumbnail": {"grade": probe(0.3, 0.4), "organ": probe(0.9, 0.3)}}}
    table = results.feature_probe_table(data, {"runs/repro/nano/final": "nano"}).splitlines()
    assert table[0] == "| Features | View | grade | organ | Slides (fit / scored) |"
    assert "| pixels | detail0 | 50.0 (constant 40.0) | 25.0 (constant 30.0) | 120 / 36 |" in table
    assert "| nano | thumbnail | 30.0 (constant 40.0) | 90.0 (constant 30.0) | 120 / 36 |" in table


def test_mixture_shares_weigh_each_file(results, tmp_path):
    patch = _write(tmp_path / "p.jsonl", [{"task": "grade", "image": "a.png"}, {"task": "organ", "image": "b.png"}])
    slide = _write(tmp_path / "s.jsonl", [{"task": "subtype", "slide": "s.tiff"}])
    config = f"data:\n  train:\n    - {{path: {patch}, weight: 1.0}}\n    - {{path: {slide}, weight: 2.0}}\n"
    shares = results.mixture_shares(config)
    assert shares["records"] == 4 and shares["slide"] == 0.5 and shares["asked"] == 0.75
    filtered = f"data:\n  train:\n    - {{path: {patch}, weight: 0.5}}\n    - {{path: {patch}, tasks: [organ]}}\n"
    shares = results.mixture_shares(filtered, tasks=("organ",))
    assert shares["records"] == 2 and shares["asked"] == 0.75 and shares["slide"] == 0


def test_training_facts_read_their_own_runs_wall_time_not_a_prefix_namesakes(results, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RUNS", tmp_path)
    for name, loss in (("nano-base", 7.0), ("nano", 0.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"split": "train", "step": 3, "loss": loss}) + "\n")
    (tmp_path / "commands.log").write_text(
        f"omnipath train a.yaml output_dir={tmp_path / 'nano-base'} train.max_steps=600\n#   63.1 min\n"
        f"omnipath train b.yaml output_dir={tmp_path / 'nano'} logging.progress=false\n#   20.4 min (beside other jobs)\n")
    assert results.training_facts(tmp_path / "nano-base")["wall_min"] == 63.1
    assert results.training_facts(tmp_path / "nano")["wall_min"] == 20.4
    assert results.minutes(results.training_facts(tmp_path / "nano-base")) == "63 min"
    assert results.minutes(results.training_facts(tmp_path / "nano")) == "20 min (beside other jobs)"
    assert results.minutes(None) == "not measured here"
    assert results.training_facts(tmp_path / "nano")["last_loss"] == 0.5


def test_model_card_describes_each_of_reproduces_stages_from_its_config(results, tmp_path, monkeypatch):
    assert [name for name, _ in results.nano_stages()][-1] == "nano"  # reproduce.py's stages, the shipped one last
    patch = _write(tmp_path / "train-patch.jsonl", [{"task": "organ", "image": "a.png"}] * 3)
    slide = _write(tmp_path / "s.jsonl", [{"task": "grade", "slide": "s.tiff"}, {"task": "disease", "slide": "s.tiff"}])
    first = (f"data:\n  train:\n    - {{path: {patch}}}\n    - {{path: {slide}}}\noptim: {{lr: 3.0e-4, schedule: cosine}}\n"
             "train: {global_batch_size: 16, precision: bf16, seed: 0}\n")
    second = (f"data:\n  train:\n    - {{path: {slide}, tasks: [grade]}}\n    - {{path: {patch}, weight: 0.25}}\n"
              "  cache_vision_features: true\n  closed_answers: text\n  focus_boxes: tumour_boxes\n"
              "optim: {lr: 2.0e-4, schedule: cosine, freeze: [vision_tower.siglip]}\n"
              "train: {global_batch_size: 16, precision: bf16, seed: 0, focus_loss_weight: 0.5}\n")
    (tmp_path / "one.yaml").write_text(first)
    (tmp_path / "two.yaml").write_text(second)
    monkeypatch.setattr(results, "ROOT", tmp_path)
    order = (("nano-base", "one.yaml"), ("nano", "two.yaml"))
    card = results.model_card(order, {"nano": {"steps": 300, "config": second, "wall_min": 20.0, "wall_note": ""}}, "| metrics |")
    lines = card.splitlines()
    stage1 = next(l for l in lines if l.startswith("- Stage 1 (one.yaml)"))
    assert "run by an earlier session" in stage1 and "not measured here" in stage1  # no run folder: its config, no time
    assert "- Stage 2 (two.yaml): 300 steps from stage 1, 20 min on 2 CPU cores;" in lines
    assert "  global batch 16, AdamW lr 0.0002 cosine, bf16 on CPU, seed 0;" in lines
    assert "  2 records per pass; slide records 57.1 %, grade questions (slides and patches) 57.1 %; patch records replayed at weight 0.25;" in lines
    assert any("frozen: vision_tower.siglip; the vision tower's features cached" in l for l in lines)
    assert any("focus loss weight 0.5" in l for l in lines) and any("option text alone" in l for l in lines)
    assert "  5 records per pass; slide records 40.0 %, grade and subtype questions 20.0 %;" in lines  # stage 1
    assert card.count("```yaml") == 2 and "| metrics |" in card
    assert "pgfc.json" not in card  # no settings given: no line
    with_pgfc = results.model_card(order, {}, "", {"num_regions": 4, "region_pool": 3, "window_um": 192.0})
    assert "- PGFC (pgfc.json): S = 4 detail regions, each pooled 3x3; `--locate` windows of 192 um" in with_pgfc
    assert results.read_pgfc(tmp_path) is None  # no pgfc.json
    (tmp_path / "pgfc.json").write_text('{"num_regions": 4, "window_um": 192.0}')
    assert results.window_words(results.read_pgfc(tmp_path)["window_um"]) == "192 um"
    assert results.window_words(None) == "one thumbnail token cell"
    assert "windows of one thumbnail token cell" in results.model_card(order, {}, "", {"num_regions": 4, "region_pool": 3,
                                                                                       "window_um": None})
