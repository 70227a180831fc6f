"""Tests of `omnipath eval` and `omnipath eval compare` through the command-line entry point."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_runner import TABLE_FILES, write_test_set  # the shared small test set (every answer style)

from omnipath_lvlm.cli import main


def _columns(path: Path) -> list[str]:
    with path.open(newline="") as stream:
        return next(csv.reader(stream))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, Path]:
    """(test set, run folder) of one `omnipath eval` run of the test-tiny model."""
    folder = tmp_path_factory.mktemp("cli")
    test_set = write_test_set(folder / "data")
    out = folder / "run"
    argv = ["eval", "--model", "test-tiny", "--data", str(test_set), "--out", str(out), "--max-new-tokens", "3",
            "--batch-size", "4", "--pgfc", "attention", "none"]
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert main(argv) == 0
    return test_set, out


def test_eval_writes_predictions_summary_and_every_table(evaluated):
    _, out = evaluated
    for name in TABLE_FILES:
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == len({line["key"] for line in lines}) == 7 + 2 * 2
    assert {line["engine"] for line in lines} == {"model", "pipeline"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == summary["items"] == 11 and summary["missing"] == []
    assert summary["run"]["pgfc"] == ["attention", "none"]

    assert {"subtype", "mvi", "organ"} <= set(_columns(out / "table1_patch.csv"))
    assert "prognosis" in _columns(out / "table2_slide.csv")
    segmentation = set(_columns(out / "table4_segmentation.csv"))
    assert {"nerve_segmentation (polygons)", "nerve_segmentation (mask)"} <= segmentation
    detection = set(_columns(out / "table5_detection.csv"))
    assert {"nucleus_detection", "nucleus_classification", "cancer_detection"} <= detection
    table6 = (out / "table6_pgfc.csv").read_text()
    assert "prognosis" in table6 and "Average" in table6
    assert "Table 6" in (out / "tables.md").read_text()


def test_rerunning_a_finished_run_answers_nothing_new(evaluated, capsys):
    test_set, out = evaluated
    before = (out / "predictions.jsonl").read_text()
    argv = ["eval", "--model", "test-tiny", "--data", str(test_set), "--out", str(out), "--max-new-tokens", "3",
            "--pgfc", "attention", "none"]
    assert main(argv) == 0
    assert "0 answered now, 11 already answered" in capsys.readouterr().out
    assert (out / "predictions.jsonl").read_text() == before


def test_eval_refuses_a_folder_of_another_setting(evaluated, capsys):
    test_set, out = evaluated
    argv = ["eval", "--model", "test-tiny", "--data", str(test_set), "--out", str(out), "--max-new-tokens", "5"]
    assert main(argv) == 2
    assert "max_new_tokens" in capsys.readouterr().err


def test_eval_reads_regions_with_the_models_own_pgfc_settings(tmp_path):
    from omnipath_lvlm.wsi.pgfc import PGFCConfig
    from omnipath_lvlm.wsi.pipeline import untrained_pipeline

    engine = untrained_pipeline("test-tiny")
    model = tmp_path / "model"
    engine.model.save_pretrained(model)
    engine.processor.save_pretrained(model)
    PGFCConfig(num_regions=2, region_pool=1).save(model)
    test_set = write_test_set(tmp_path / "data")
    for extra, expected in (([], 2), (["--num-regions", "5"], 5)):
        out = tmp_path / f"run{expected}"
        argv = ["eval", "--model", str(model), "--data", str(test_set), "--out", str(out), "--max-new-tokens", "2",
                "--limit", "1", *extra]
        assert main(argv) == 0
        run = json.loads((out / "run.json").read_text())
        assert (run["num_regions"], run["region_pool"]) == (expected, 1)


def test_eval_without_required_options_fails_clearly(capsys):
    assert main(["eval", "--model", "test-tiny"]) == 2
    assert "--data, --out" in capsys.readouterr().err


def _write_summary(folder: Path, accuracy: float, f1: float) -> Path:
    folder.mkdir()
    tasks = {
        "patch/subtype": {"task": "subtype", "kind": "closed", "level": "patch", "group": None, "variant": None,
                          "n": 4, "parse_failures": 1, "accuracy": accuracy, "f1": None, "iou": None, "dice": None},
        "patch/nucleus_detection": {"task": "nucleus_detection", "kind": "boxes", "level": "patch", "group": None,
                                    "variant": None, "n": 2, "parse_failures": 0, "accuracy": None, "f1": f1,
                                    "iou": 0.5, "dice": None},
    }
    (folder / "summary.json").write_text(json.dumps({"tasks": tasks}))
    return folder


def test_compare_prints_both_runs_and_their_difference(tmp_path, capsys):
    run_a = _write_summary(tmp_path / "baseline", accuracy=0.5, f1=0.4)
    run_b = _write_summary(tmp_path / "tuned", accuracy=0.75, f1=0.3)
    assert main(["eval", "compare", str(run_a), str(run_b)]) == 0
    out = capsys.readouterr().out
    header, rows = out.splitlines()[0], out.splitlines()[2:]
    assert "baseline" in header and "tuned" in header
    accuracy_row = next(r for r in rows if "patch/subtype" in r)
    assert "50.00" in accuracy_row and "75.00" in accuracy_row and "+25.00" in accuracy_row
    f1_row = next(r for r in rows if "nucleus_detection" in r and "F1" in r)
    assert "-10.00" in f1_row


def test_compare_of_a_real_run_with_itself_shows_no_difference(evaluated, capsys):
    _, out = evaluated
    assert main(["eval", "compare", str(out), str(out / "summary.json")]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows and all("+0.00" in row or "| – |" in row for row in rows)


def test_compare_of_a_folder_without_summary_fails_clearly(tmp_path, capsys):
    assert main(["eval", "compare", str(tmp_path), str(tmp_path)]) == 2
    assert "summary.json" in capsys.readouterr().err
