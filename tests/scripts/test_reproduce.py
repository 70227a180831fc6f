"""scripts/reproduce.py: the files it prepares are the files the shipped nano config trains on."""
from __future__ import annotations

from pathlib import Path

from omnipath_lvlm.train.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_nano_config_trains_on_the_prepared_patch_and_slide_files(load_script):
    repro = load_script("reproduce")
    config = load_config(ROOT / "configs" / "train" / "nano-synthpath.yaml")
    listed = sorted(str(item.path) for item in config.data.train)
    prepared = sorted(str(p.relative_to(ROOT)) for p in [repro.DATA / "train-patch.jsonl", *repro.slide_training_files()])
    assert listed == prepared
    assert all(item.weight == 1.0 for item in config.data.train)


def test_val_and_test_slides_come_from_blocks_no_training_file_uses(load_script):
    from omnipath_lvlm.synth.export import split_seeds

    repro = load_script("reproduce")
    val = split_seeds(repro.EXTRA_SEEDS[0], "val", 10**6)
    train = [split_seeds(seed, "train", 10**6) for seed in (0, *repro.EXTRA_SEEDS)]
    test = split_seeds(0, "test", 10**6)
    for block in train:
        assert max(block.start, val.start) >= min(block.stop, val.stop)  # disjoint ranges
        assert max(block.start, test.start) >= min(block.stop, test.stop)
