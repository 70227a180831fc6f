"""Tests for omnipath_lvlm.eval.report: hand-built summaries render the paper's table layouts."""
from __future__ import annotations

import csv
import io

import pytest

from omnipath_lvlm.eval.report import (
    build_tables,
    compare_runs,
    table1_patch,
    table2_slide,
    table4_segmentation,
    table5_detection,
    table6_pgfc,
    write_reports,
)


def cls(task, accuracy, n=100, failures=0, level="patch", variant=None, group=None, kind="closed"):
    return {"task": task, "kind": kind, "level": level, "group": group, "variant": variant, "n": n,
            "parse_failures": failures, "accuracy": accuracy, "f1": None, "iou": None, "dice": None}


def det(task, f1, iou, n=10, failures=0, level="patch"):
    return {"task": task, "kind": "boxes", "level": level, "group": None, "variant": None, "n": n,
            "parse_failures": failures, "accuracy": None, "f1": f1, "iou": iou, "dice": None}


def seg(task, dice, n=10, failures=0, level="slide", kind="mask"):
    return {"task": task, "kind": kind, "level": level, "group": None, "variant": None, "n": n,
            "parse_failures": failures, "accuracy": None, "f1": None, "iou": None, "dice": dice}


# Unordered on purpose: the tables must follow the paper's column order.
OMNIPATH = {
    "patch/MVI": cls("MVI", 0.9779, n=50, failures=1, kind="yes_no"),
    "patch/HCC-S": cls("HCC-S", 0.9709, n=100, failures=2),
    "patch/Custom": cls("Custom", 0.5, n=10, kind="open"),
    "slide/HCC-S": cls("HCC-S", 0.9840, n=40, level="slide"),
    "slide/HCC-S@none": cls("HCC-S", 0.2014, n=40, failures=3, level="slide", variant="none"),
    "slide/HCC-S@random": cls("HCC-S", 0.7946, n=40, level="slide", variant="random"),
    "slide/HCC-S@attention": cls("HCC-S", 0.9840, n=40, level="slide", variant="attention"),
    "slide/HCC-G@none": cls("HCC-G", 0.5284, n=20, level="slide", variant="none"),
    "slide/HCC-G@random": cls("HCC-G", 0.4584, n=20, failures=1, level="slide", variant="random"),
    "slide/HCC-G@attention": cls("HCC-G", 0.7084, n=20, level="slide", variant="attention"),
    "patch/MoNuSeg": det("MoNuSeg", 0.8398, 0.7965, n=30, failures=4),
    "slide/HCC (boxes)": det("HCC", 0.9213, 0.9197, n=12, level="slide"),
    "patch/NS": seg("NS", 0.8923, n=8, level="patch", kind="polygons"),
    "slide/HCC (mask)": seg("HCC", 0.9551, n=12),
}

BASELINE = {
    "patch/HCC-S": cls("HCC-S", 0.9289, n=100, failures=7),
    "slide/HCC-S": cls("HCC-S", 0.8974, n=40, level="slide"),
    "patch/MoNuSeg": det("MoNuSeg", 0.1427, 0.6305, n=30, failures=11),
}


def parse_csv(text):
    return list(csv.reader(io.StringIO(text)))


def test_table1_patch_layout_and_numbers():
    table = table1_patch({"Quilt-LLaVA (FT)": BASELINE, "OmniPath": OMNIPATH})
    assert table.columns == ("Method", "HCC-S", "MVI", "Custom", "Parse failures")
    assert parse_csv(table.to_csv()) == [
        ["Method", "HCC-S", "MVI", "Custom", "Parse failures"],
        ["Quilt-LLaVA (FT)", "92.89", "", "", "7/100"],
        ["OmniPath", "97.09", "97.79", "50.00", "3/160"],
    ]
    markdown = table.to_markdown().splitlines()
    assert markdown[0] == "| Method | HCC-S | MVI | Custom | Parse failures |"
    assert markdown[2] == "| Quilt-LLaVA (FT) | 92.89 | – | – | 7/100 |"


def test_table2_slide_shows_the_full_model_only():
    table = table2_slide({"OmniPath": OMNIPATH})
    # HCC-S: plain slide entry wins over its attention variant; HCC-G: only the attention variant exists
    assert table.columns == ("Method", "HCC-S", "HCC-G", "Parse failures")
    assert parse_csv(table.to_csv())[1] == ["OmniPath", "98.40", "70.84", "0/60"]


def test_table4_segmentation_dice():
    table = table4_segmentation({"OmniPath": OMNIPATH})
    assert table.columns == ("Method", "HCC", "NS", "Parse failures")
    assert parse_csv(table.to_csv())[1] == ["OmniPath", "95.51", "89.23", "0/20"]


def test_table5_detection_has_f1_and_iou_rows():
    table = table5_detection({"Quilt-LLaVA (FT)": BASELINE, "OmniPath": OMNIPATH})
    assert table.columns == ("Method", "Metric", "HCC", "MoNuSeg", "Parse failures")
    assert parse_csv(table.to_csv())[1:] == [
        ["Quilt-LLaVA (FT)", "F1-Score (%)", "", "14.27", "11/30"],
        ["Quilt-LLaVA (FT)", "IoU (%)", "", "63.05", "11/30"],
        ["OmniPath", "F1-Score (%)", "92.13", "83.98", "4/42"],
        ["OmniPath", "IoU (%)", "91.97", "79.65", "4/42"],
    ]


def test_table6_pgfc_ablation_with_average_row():
    table = table6_pgfc(OMNIPATH)
    assert table.columns == ("Task", "w/o PGFC", "Random", "w/ PGFC", "Parse failures")
    rows = parse_csv(table.to_csv())[1:]
    assert rows[0] == ["HCC-S", "20.14", "79.46", "98.40", "3/120"]
    assert rows[1] == ["HCC-G", "52.84", "45.84", "70.84", "1/60"]
    # averages by hand: (20.14 + 52.84) / 2, (79.46 + 45.84) / 2, (98.40 + 70.84) / 2
    assert rows[2] == ["Average", "36.49", "62.65", "84.62", "4/180"]
    assert len(rows) == 3


def test_group_column_appears_with_groups():
    runs = {"OmniPath": {
        "a": cls("HCC-S", 0.9, group="hospital A"),
        "b": cls("HCC-S", 0.8, group="hospital B"),
    }}
    table = table1_patch(runs)
    assert table.columns == ("Method", "Group", "HCC-S", "Parse failures")
    assert parse_csv(table.to_csv())[1:] == [["OmniPath", "hospital A", "90.00", "0/100"],
                                             ["OmniPath", "hospital B", "80.00", "0/100"]]


def test_two_summaries_in_one_cell_are_rejected():
    runs = {"OmniPath": {"a": cls("HCC-S", 0.9), "b": cls("HCC-S", 0.8, kind="open")}}
    with pytest.raises(ValueError, match="both fill the 'HCC-S' cell"):
        table1_patch(runs)


def test_summary_without_kind_is_rejected():
    with pytest.raises(ValueError, match="has no 'kind'"):
        table1_patch({"OmniPath": {"HCC-S": {"accuracy": 0.5, "n": 2, "parse_failures": 0}}})


def test_build_tables_skips_empty_tables():
    names = [t.name for t in build_tables({"x": cls("HCC-S", 0.5)})]
    assert names == ["table1_patch"]
    with pytest.raises(ValueError, match="also a baseline"):
        build_tables({}, method="A", baselines={"A": {}})


def test_compare_runs_shows_differences():
    markdown = compare_runs(BASELINE, OMNIPATH, labels=("FT", "OmniPath")).splitlines()
    assert markdown[0] == "| Task | Metric | FT | OmniPath | Δ (OmniPath − FT) | Parse failures FT | Parse failures OmniPath |"
    assert "| patch/HCC-S | Accuracy (%) | 92.89 | 97.09 | +4.20 | 7/100 | 2/100 |" in markdown
    assert "| patch/MoNuSeg | F1-Score (%) | 14.27 | 83.98 | +69.71 | 11/30 | 4/30 |" in markdown
    assert "| patch/MoNuSeg | IoU (%) | 63.05 | 79.65 | +16.60 | 11/30 | 4/30 |" in markdown
    assert "| patch/MVI | Accuracy (%) | – | 97.79 | – | – | 1/50 |" in markdown
    reverse = compare_runs(OMNIPATH, BASELINE)
    assert "| patch/HCC-S | Accuracy (%) | 97.09 | 92.89 | -4.20 | 2/100 | 7/100 |" in reverse


def test_compare_runs_rejects_mismatched_kinds():
    with pytest.raises(ValueError, match="cannot compare"):
        compare_runs({"t": cls("t", 0.5)}, {"t": det("t", 0.5, 0.5)})


def test_write_reports_writes_markdown_and_csvs_atomically(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "tables.md").write_text("stale")
    written = write_reports(OMNIPATH, out, baselines={"Quilt-LLaVA (FT)": BASELINE})
    expected = {"table1_patch", "table2_slide", "table4_segmentation", "table5_detection", "table6_pgfc", "tables"}
    assert set(written) == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["tables.md"] + [f"{name}.csv" for name in expected - {"tables"}])  # no temporary files left
    markdown = (out / "tables.md").read_text()
    assert "stale" not in markdown
    for title in ("Table 1", "Table 2", "Table 4", "Table 5", "Table 6"):
        assert f"## {title}:" in markdown
    assert "| OmniPath | 97.09 | 97.79 | 50.00 | 3/160 |" in markdown
    assert parse_csv((out / "table6_pgfc.csv").read_text())[-1][0] == "Average"


def test_write_reports_with_nothing_scored(tmp_path):
    written = write_reports({}, tmp_path / "empty")
    assert set(written) == {"tables"}
    assert "No scored tasks" in written["tables"].read_text()
