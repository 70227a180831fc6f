"""scripts/reproduce.py: the files it prepares are the files the shipped nano config trains on."""
from __future__ import annotations

from pathlib import Path

from omnipath_lvlm.train.config import load_config

ROOT = Path(__file__).resolve().parents[2]




def test_nano_config_trains_on_the_prepared_files_and_their_reasked_questions(load_script):
    repro = load_script("reproduce")
    config = load_config(ROOT / "configs" / "train" / "nano-synthpath.yaml")
    listed = sorted(str(item.path) for item in config.data.train)
    files = repro.training_files()
    prepared = sorted(str(p.relative_to(ROOT)) for p in [*files, *map(repro.more_questions_file, files)])
    assert listed == prepared
    assert all(item.weight == 1.0 for item in config.data.train)


def test_more_questions_command_reasks_grade_and_subtype_beside_its_input(load_script):
    repro = load_script("reproduce")
    path = repro.DATA / "train-patch.jsonl"
    command = repro.more_questions_command(path)
    assert command[-6:] == ["--task", "subtype", "--n", str(repro.ENV["REPRO_MORE_QUESTIONS"]), "--out",
                            "data/synthpath/train-patch-more.jsonl"]
    assert "grade" in command and repro.more_questions_file(path).parent == path.parent
