"""Tests of the typed training config: YAML loading, overrides and validation errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from omnipath_lvlm.cli import main
from omnipath_lvlm.train.config import ConfigError, TrainConfig, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def data_file(tmp_path) -> str:
    path = tmp_path / "train.jsonl"
    path.write_text("")
    return str(path)


def test_yaml_and_dotted_overrides(tmp_path, data_file):
    path = _write(tmp_path, {"output_dir": "runs/x", "data": {"train": [{"path": data_file, "weight": 2}]},
                             "optim": {"lr": "2e-5"}})
    config = load_config(path, ["optim.lr=1e-4", "train.max_steps=20", "optim.betas=[0.9, 0.95]",
                                "optim.freeze=[vision_tower.uni]", "model.overrides={use_uni: false}"])
    assert config.optim.lr == pytest.approx(1e-4) and isinstance(config.optim.lr, float)
    assert config.train.max_steps == 20
    assert config.optim.betas == (0.9, 0.95)
    assert config.data.train[0].path == data_file and config.data.train[0].weight == 2.0
    assert config.model.overrides == {"use_uni": False}
    config.validate(world_size=1)
    # a saved config loads back to the same values
    again = load_config(config.save(tmp_path / "resolved.yaml"))
    assert again == config


@pytest.mark.parametrize(
    "data, message",
    [
        ({"optim": {"lrr": 1.0}}, "unknown config key optim.lrr"),
        ({"bogus": 1}, "unknown config key bogus"),
        ({"train": {"epochs": "two"}}, "train.epochs must be an integer"),
        ({"train": {"precision": "fp8"}}, "train.precision must be one of"),
        ({"optim": {"betas": [0.9]}}, "optim.betas must be a list of 2 values"),
    ],
)
def test_unknown_keys_and_wrong_types_are_named(data, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(data)


def test_missing_data_file_is_named(tmp_path):
    config = config_from_dict({"data": {"train": [str(tmp_path / "nope.jsonl")]}})
    with pytest.raises(ConfigError, match=r"data\.train\[0\]\.path .*nope\.jsonl does not exist"):
        config.validate()


def test_batch_split_is_checked_against_the_world_size(data_file):
    config = config_from_dict({"data": {"train": [data_file]},
                               "train": {"per_device_batch_size": 4, "global_batch_size": 128}})
    assert config.gradient_accumulation(world_size=8) == 4
    assert config.global_batch(world_size=8) == 128
    with pytest.raises(ConfigError, match="global_batch_size 128 is not a multiple of per_device_batch_size 4 x world size 3"):
        config.validate(world_size=3)
    fixed = config_from_dict({"data": {"train": [data_file]},
                              "train": {"per_device_batch_size": 4, "global_batch_size": 128,
                                        "gradient_accumulation_steps": 2}})
    with pytest.raises(ConfigError, match="gradient_accumulation_steps 2"):
        fixed.validate(world_size=8)
    fixed.validate(world_size=16)  # 4 x 2 x 16 == 128


@pytest.mark.parametrize(
    "section, value, message",
    [
        ("optim", {"freeze": ["vision_tower.clip"]}, "optim.freeze names unknown module 'vision_tower.clip'"),
        ("optim", {"module_lr": {"projector": 1e-3}}, "optim.module_lr names unknown module 'projector'"),
        ("model", {"preset": "giant"}, "model.preset 'giant' is unknown"),
        ("model", {"preset": None}, "set exactly one of model.preset and model.checkpoint"),
        ("train", {"max_steps": 0}, "train.max_steps must be >= 1"),
        ("logging", {"eval_every": 5}, "data.eval lists no files"),
        ("data", {"cache_vision_features": True}, "add vision_tower.siglip and vision_tower.uni to optim.freeze"),
        ("train", {"focus_loss_weight": 0.5}, "data.focus_boxes must name the gt field"),
        ("train", {"focus_loss_weight": -1.0}, "train.focus_loss_weight must be >= 0"),
    ],
)
def test_semantic_errors(data_file, section, value, message):
    config = config_from_dict({"data": {"train": [data_file]}})
    config = config_from_dict({**config.to_dict(), section: {**config.to_dict()[section], **value}})
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        config.validate()


def test_shipped_configs_parse_and_carry_the_paper_settings():
    paper = load_config(REPO / "configs/train/omnipath-7b.yaml")
    assert paper.optim.lr == pytest.approx(2e-5)
    assert paper.train.global_batch_size == 128 and paper.train.epochs == 2
    assert paper.train.precision == "bf16" and not paper.optim.freeze and not paper.lora.enabled
    assert paper.gradient_accumulation(world_size=8) * paper.train.per_device_batch_size * 8 == 128
    nano = load_config(REPO / "configs/train/nano-synthpath.yaml")
    assert nano.model.preset == "nano" and nano.train.precision == "fp32"
    for path in sorted((REPO / "configs").glob("*/*.yaml")):  # each names the command that runs it
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and " train " in first and str(path.relative_to(REPO)) in first


def test_cli_reports_config_errors_before_training(tmp_path, capsys, data_file):
    path = _write(tmp_path, {"data": {"train": [data_file]}, "optim": {"lr": 1e-5}})
    assert main(["train", str(path), "optim.wrong=1"]) == 2
    assert "unknown config key optim.wrong" in capsys.readouterr().err
    assert main(["train", str(path), "train.per_device_batch_size=2", "train.global_batch_size=8", "--check"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["gradient_accumulation_steps"] == 4 and printed["optim"]["lr"] == pytest.approx(1e-5)
    assert isinstance(config_from_dict(printed), TrainConfig)


def test_a_data_file_can_name_the_tasks_it_contributes(data_file):
    config = config_from_dict({"data": {"train": [{"path": data_file, "tasks": ["grade", "subtype"]}, data_file]}})
    assert config.data.train[0].tasks == ["grade", "subtype"] and config.data.train[1].tasks == []


def test_the_feature_cache_names_the_vision_module_left_training(data_file):
    config = config_from_dict({"data": {"train": [data_file], "cache_vision_features": True},
                               "optim": {"freeze": ["vision_tower.siglip"]}})
    with pytest.raises(ConfigError, match=r"add vision_tower\.uni to optim\.freeze"):
        config.validate()
    config.optim.freeze.append("vision_tower.uni")
    config.validate()
