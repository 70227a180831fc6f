"""The `omnipath data` subcommands, run through omnipath_lvlm.cli.main."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from omnipath_lvlm.cli import main


def _tnbc(root):
    (root / "Slide_01").mkdir(parents=True)
    (root / "GT_01").mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(root / "Slide_01" / f"01_{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[2:8, 2:8 + 5 * i] = 255
        Image.fromarray(mask).save(root / "GT_01" / f"01_{i}.png")


def test_build_then_stats(tmp_path, capsys):
    _tnbc(tmp_path / "tnbc")
    out = tmp_path / "sets" / "tnbc.jsonl"
    assert main(["data", "build", "tnbc", str(tmp_path / "tnbc"), "--out", str(out), "--seed", "3"]) == 0
    assert "wrote 3 records" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and {line["task"] for line in lines} == {"nucleus_detection"}

    assert main(["data", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 records, 0 lines skipped" in text
    assert "nucleus_detection" in text and "boxes" in text and "(none)" in text and "tnbc" in text
    assert "conversation length (" in text and "median" in text and "p95" in text


def test_stats_reports_skipped_lines(tmp_path, capsys):
    _tnbc(tmp_path / "tnbc")
    out = tmp_path / "t.jsonl"
    main(["data", "build", "tnbc", str(tmp_path / "tnbc"), "--out", str(out)])
    with out.open("a") as fh:
        fh.write('{"id": "cut", "conversa')
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 records, 1 lines skipped" in text and "line 4: invalid or truncated JSON" in text


def test_build_with_task_and_errors(tmp_path, capsys):
    for name in ("Liver", "Lung"):
        (tmp_path / "ds" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "ds" / name / "x.png")
    out = tmp_path / "organ.jsonl"
    assert main(["data", "build", "folder", str(tmp_path / "ds"), "--out", str(out), "--task", "organ",
                 "--style", "open"]) == 0
    assert sorted(json.loads(line)["organ"] for line in out.read_text().splitlines()) == ["Liver", "Lung"]
    capsys.readouterr()
    assert main(["data", "build", "folder", str(tmp_path / "ds"), "--out", str(out)]) == 2
    assert "no task given" in capsys.readouterr().err
    assert main(["data", "build", "folder", str(tmp_path / "ds"), "--out", str(out), "--task", "organ",
                 "--tile-size", "64"]) == 2
    assert "--tile-size does not apply to source kind 'folder'" in capsys.readouterr().err
    assert main(["data", "stats", str(tmp_path / "absent.jsonl")]) == 2
