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


def test_second_stage_asks_the_training_slides_grade_subtype_and_organ_with_a_cached_frozen_tower(load_script):
    repro = load_script("reproduce")
    config = load_config(ROOT / repro.SLIDE_STAGE_CONFIG, ["model.checkpoint=runs/repro/nano-base/final"])
    config.validate(check_files=False)
    slides = [item for item in config.data.train if item.tasks]
    assert sorted(str(item.path) for item in slides) == sorted(str(p.relative_to(ROOT)) for p in repro.slide_training_files())
    assert all(sorted(item.tasks) == ["grade", "organ", "subtype"] and item.weight == 1.0 for item in slides)
    replay = [item for item in config.data.train if not item.tasks]  # patch records, so that patch tasks are kept
    assert [str(item.path) for item in replay] == [str((repro.DATA / "train-patch.jsonl").relative_to(ROOT))]
    assert 0 < replay[0].weight < 1
    assert config.data.cache_vision_features and {"vision_tower.siglip", "vision_tower.uni"} <= set(config.optim.freeze)
    assert config.data.region_pool == load_config(ROOT / repro.NANO_CONFIG).data.region_pool  # regions as in stage 1


def test_val_and_test_slides_come_from_blocks_no_training_file_uses(load_script):
    from omnipath_lvlm.synth.export import split_seeds

    repro = load_script("reproduce")
    val = split_seeds(repro.EXTRA_SEEDS[0], "val", 10**6)
    train = [split_seeds(seed, "train", 10**6) for seed in (0, *repro.EXTRA_SEEDS)]
    test = split_seeds(0, "test", 10**6)
    for block in train:
        assert max(block.start, val.start) >= min(block.stop, val.stop)  # disjoint ranges
        assert max(block.start, test.start) >= min(block.stop, test.stop)
