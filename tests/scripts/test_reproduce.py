"""scripts/reproduce.py: the files it prepares are the files the shipped nano config trains on."""
from __future__ import annotations

from pathlib import Path

from omnipath_lvlm.train.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_first_stage_trains_on_the_prepared_patch_records_and_the_second_on_every_training_slide(load_script):
    repro = load_script("reproduce")
    first = load_config(ROOT / repro.NANO_CONFIG)
    assert [(str(item.path), item.weight, item.tasks) for item in first.data.train] == [
        (str((repro.DATA / "train-patch.jsonl").relative_to(ROOT)), 1.0, [])]
    second = load_config(ROOT / repro.SLIDE_STAGE_CONFIG, ["model.checkpoint=runs/repro/nano-base/final"])
    listed = sorted(str(item.path) for item in second.data.train)
    prepared = sorted(str(p.relative_to(ROOT)) for p in [repro.DATA / "train-patch.jsonl", *repro.slide_training_files()])
    assert listed == prepared


def test_nano_trains_in_a_chain_of_stages_and_ships_the_last(load_script):
    repro = load_script("reproduce")
    names = [name for name, _ in repro.NANO_STAGES]
    assert repro.NANO_STAGES[0] == ("nano-base", repro.NANO_CONFIG) and names[-1] == "nano" and len(set(names)) == len(names)
    for _, path in repro.NANO_STAGES[1:]:  # later stages start from a checkpoint, not a preset
        assert load_config(ROOT / path, ["model.checkpoint=runs/repro/nano-base/final"]).model.preset is None


def test_second_stage_asks_the_training_slides_questions_with_a_cached_frozen_tower(load_script):
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
    assert config.data.closed_answers == "text"  # asked a closed question, nano answers with the option's text


def test_ablations_train_the_first_stage_config_in_two_lanes_of_alternating_models(load_script, tmp_path, monkeypatch):
    repro = load_script("reproduce")
    monkeypatch.setattr(repro, "RUNS", tmp_path)
    lanes = repro.ablation_lanes()
    trained = [[c[c.index("train") + 2].split("=")[1] for c in lane if "train" in c] for lane in lanes]
    assert trained == [[str(tmp_path / n) for n in ("full", "no-uni-no-msff")], [str(tmp_path / n) for n in ("no-msff", "no-uni")]]
    for lane in lanes:
        assert [("train" in c) for c in lane] == [True, False, True, False]  # each model: train, then evaluate
        for command in lane:
            if "train" in command:
                assert command[command.index("train") + 1] == repro.NANO_CONFIG  # patch records, as nano's stage 1
                assert f"train.max_steps={repro.ENV['REPRO_ABLATION_STEPS']}" in command
            else:
                assert command[command.index("--data") + 1] == str(repro.DATA / "test-patch.jsonl")
    (tmp_path / "full" / "final").mkdir(parents=True)
    (tmp_path / "full" / "final" / "config.json").write_text("{}")
    assert repro.ablation_lanes()[0][0] is None  # a trained model is not trained again


def test_val_and_test_slides_come_from_blocks_no_training_file_uses(load_script):
    from omnipath_lvlm.synth.export import split_seeds

    repro = load_script("reproduce")
    val = split_seeds(repro.EXTRA_SEEDS[0], "val", 10**6)
    train = [split_seeds(seed, "train", 10**6) for seed in (0, *repro.EXTRA_SEEDS)]
    test = split_seeds(0, "test", 10**6)
    for block in train:
        assert max(block.start, val.start) >= min(block.stop, val.stop)  # disjoint ranges
        assert max(block.start, test.start) >= min(block.stop, test.stop)


def test_lanes_run_every_job_in_order_with_one_thread_each_and_log_each_command(load_script, tmp_path, monkeypatch):
    import sys

    import pytest

    repro = load_script("reproduce")
    monkeypatch.setattr(repro, "RUNS", tmp_path)
    monkeypatch.setattr(repro, "LOG", tmp_path / "commands.log")
    out = tmp_path / "out.txt"

    def step(job: str, i: int) -> list[str]:  # appends "job i threads" to out
        code = f"import os; open({str(out)!r}, 'a').write('{job} {i} ' + os.environ['OMP_NUM_THREADS'] + '\\n')"
        return [sys.executable, "-c", code]

    repro.run_lanes([[step("a", 0), None, step("a", 1)], [None], [step("b", 0), step("b", 1)], [step("c", 0)]])
    done = out.read_text().split("\n")[:-1]
    assert sorted(done) == ["a 0 1", "a 1 1", "b 0 1", "b 1 1", "c 0 1"]
    for job in "ab":  # a job's commands run in order
        assert done.index(f"{job} 0 1") < done.index(f"{job} 1 1")
    log = (tmp_path / "commands.log").read_text().splitlines()
    commands = [line for line in log if not line.startswith("#")]
    assert len(commands) == 5
    assert all(log[log.index(c) + 1].startswith("#   ") and "lanes side by side" in log[log.index(c) + 1] for c in commands)
    assert log[-1].startswith("# the 2 lanes above took")

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # one lane: the process keeps every thread
    repro.run_lanes([[step("d", 0)], [None]])
    assert out.read_text().endswith("d 0 2\n")

    with pytest.raises(RuntimeError, match="failed"):
        repro.run_lanes([[[sys.executable, "-c", "raise SystemExit(3)"]]])


def test_split_by_level_keeps_slide_windows_apart(load_script, tmp_path):
    import json

    repro = load_script("reproduce")
    lines = [{"id": "synthpath-patch-1-organ", "image": "a.png"},
             {"id": "synthpath-slide-2-grade", "slide": "s.tiff"},
             {"id": "synthpath-slide-2-window0-cancer_detection", "image": "w.png"}]
    source = tmp_path / "train.jsonl"
    source.write_text("".join(json.dumps(l) + "\n" for l in lines))
    files = [tmp_path / f"train-{kind}.jsonl" for kind in ("patch", "slide", "window")]
    repro.split_by_level(source, *files)
    ids = [[json.loads(l)["id"] for l in f.read_text().splitlines() if l] for f in files]
    assert ids == [["synthpath-patch-1-organ"], ["synthpath-slide-2-grade"], ["synthpath-slide-2-window0-cancer_detection"]]


def test_nano_is_evaluated_with_the_pgfc_settings_it_ships_with(load_script, tmp_path):
    # the evaluations read the fp32 run, not the shipped copy: without its pgfc.json `--locate`
    # would fall back to token-cell windows instead of nano's chosen window
    from omnipath_lvlm.wsi.pgfc import PGFCConfig

    repro = load_script("reproduce")
    settings = repro.nano_pgfc(tmp_path)
    assert settings.window_um == repro.NANO_LOCATE_UM and settings.num_regions == repro.ENV["REPRO_NUM_REGIONS"]
    settings.save(tmp_path)
    assert PGFCConfig.for_model(tmp_path).window_um == repro.NANO_LOCATE_UM
    shipped = PGFCConfig.for_model(repro.ROOT / "models" / "omnipath-nano")
    assert shipped == settings  # the shipped copy carries the same settings as the run it came from
