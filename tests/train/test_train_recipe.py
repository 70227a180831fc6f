"""Tests of the accelerate training recipe on the test-tiny model (CPU, tiny data)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from omnipath_lvlm.data.records import make_record, write_jsonl
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.train.config import ConfigError, TrainConfig, config_from_dict
from omnipath_lvlm.train.recipe import Trainer, list_checkpoints

REPO = Path(__file__).resolve().parents[2]


def _write_data(folder: Path, n: int, same_image: bool = False) -> str:
    """n records alternating an open answer and a <mask> answer, on noise images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    records = []
    for i in range(n):
        pixels = np.random.RandomState(0 if same_image else i).randint(0, 255, (32, 32, 3), dtype=np.uint8)
        image = folder / f"image{i}.png"
        Image.fromarray(pixels).save(image)
        if i % 2:
            mask = np.zeros((32, 32), np.uint8)
            mask[: 8 + 2 * i] = 255
            Image.fromarray(mask).save(folder / f"mask{i}.png")
            records.append(make_record("nerve_segmentation", image, str(folder / f"mask{i}.png"), rng, style="mask",
                                       id=f"seg-{i}"))
        else:
            records.append(make_record("subtype", image, "clear cell carcinoma", rng, style="open", id=f"open-{i}"))
    return str(write_jsonl(records, folder / "train.jsonl"))


def _config(run: Path, data_file: str, **sections) -> TrainConfig:
    base = {
        "output_dir": str(run),
        "model": {"preset": "test-tiny", "overrides": {"scales": [1]}},  # one scale: 3x faster on CPU
        "data": {"train": [data_file]},
        "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_steps": 1},
        "train": {"max_steps": 6, "per_device_batch_size": 2, "global_batch_size": 2, "precision": "fp32", "cpu": True},
        "checkpoint": {"keep_last": 2},
        "logging": {"log_every": 1, "progress": False},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return config_from_dict(base)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def test_twenty_steps_on_a_repeated_batch_lower_the_loss(tmp_path):
    data = _write_data(tmp_path / "data", 2, same_image=True)
    config = _config(tmp_path / "run", data, train={"max_steps": 20},
                     optim={"schedule": "constant", "warmup_steps": 0, "lr": 2e-3},
                     data={"train": [data], "eval": [data]}, logging={"log_every": 1, "eval_every": 10, "progress": False})
    result = Trainer(config).train()
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 20 and result.state.step == 20
    assert losses[-1] < 0.7 * losses[0], losses  # falls by more than 30 %
    assert result.history[-1]["lm_loss"] < result.history[0]["lm_loss"]

    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lines = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in lines] == list(range(1, 21))
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20] and evals[1]["loss"] < evals[0]["loss"]
    for key in ("lm_loss", "mask_bce", "mask_dice", "task/subtype/lm_loss", "task/nerve_segmentation/mask_dice", "lr"):
        assert key in lines[-1], key
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["gradient_accumulation_steps"] == 1 and resolved["train"]["global_batch_size"] == 2
    # the exported model loads and holds the trained weights
    final = OmniPathForConditionalGeneration.from_pretrained(run / "final")
    checkpoint = list_checkpoints(run / "checkpoints")[-1]
    saved = load_file(str(checkpoint / "model.safetensors"))
    weights = final.state_dict()
    assert set(saved) <= set(weights) and len(saved) > 50
    for name, value in saved.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=0)
    assert (run / "final" / "tokenizer.json").is_file()


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    data = _write_data(tmp_path / "data", 6)  # 3 steps per epoch: the stop falls inside the second epoch
    straight = Trainer(_config(tmp_path / "straight", data)).train()
    assert straight.state.step == 6 and straight.state.epoch == 2

    stopped = Trainer(_config(tmp_path / "resumed", data)).train(stop_after_steps=4)
    assert stopped.final_dir is None and stopped.state.step == 4
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == ["checkpoint-00000004"]
    resumed = Trainer(_config(tmp_path / "resumed", data), resume=True).train()
    assert resumed.state.step == 6 and resumed.final_dir is not None

    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    logged = {r["step"]: r["loss"] for r in straight.history}
    for record in resumed.history:  # steps 5 and 6 saw the same batches
        assert record["loss"] == pytest.approx(logged[record["step"]], abs=1e-5)


def test_checkpoint_folders_are_complete_or_absent(tmp_path, monkeypatch):
    data = _write_data(tmp_path / "data", 2)
    trainer = Trainer(_config(tmp_path / "run", data, checkpoint={"keep_last": 2}))
    folder = tmp_path / "run" / "checkpoints"
    for step in (1, 2, 3):
        trainer.state.step = step
        trainer.save_checkpoint()
    assert [p.name for p in list_checkpoints(folder)] == ["checkpoint-00000002", "checkpoint-00000003"]

    def crash(output_dir: str, **kwargs):
        Path(output_dir, "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(trainer.accelerator, "save_state", crash)
    trainer.state.step = 4
    with pytest.raises(RuntimeError, match="disk full"):
        trainer.save_checkpoint()
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-00000002", "checkpoint-00000003"]
    assert json.loads((folder / "checkpoint-00000003" / "trainer_state.json").read_text())["step"] == 3


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path):
    data = _write_data(tmp_path / "data", 8)
    # one process: 2 per device x 2 accumulation steps
    single = Trainer(_config(tmp_path / "single", data, train={"max_steps": 3, "global_batch_size": 4})).train()
    # two processes (gloo): 2 per device x 1 accumulation step x 2 processes
    two = _config(tmp_path / "double", data, train={"max_steps": 3, "global_batch_size": 4})
    config_path = two.save(tmp_path / "double.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # accelerate's --cpu flag starts one process; the torchrun launcher + train.cpu gives two gloo processes
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs/accelerate/cpu-2proc.yaml"), "-m", "omnipath_lvlm", "train", str(config_path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = yaml.safe_load((tmp_path / "double" / "config.yaml").read_text())
    assert resolved["train"]["gradient_accumulation_steps"] == 1
    lines = [json.loads(line) for line in (tmp_path / "double" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    for mine, theirs in zip(single.history, lines):
        assert theirs["loss"] == pytest.approx(mine["loss"], rel=1e-4, abs=1e-5)
    a, b = _final_weights(tmp_path / "single"), _final_weights(tmp_path / "double")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_region_jitter_reaches_the_training_data_only(tmp_path):
    data = _write_data(tmp_path / "data", 2)
    trainer = Trainer(_config(tmp_path / "run", data, data={"train": [data], "eval": [data], "region_jitter": 0.25}))
    assert trainer.train_data.region_jitter == 0.25 and trainer.eval_data.region_jitter == 0.0
    with pytest.raises(ConfigError, match="region_jitter"):
        _config(tmp_path / "run2", data, data={"train": [data], "region_jitter": -0.1}).validate()
