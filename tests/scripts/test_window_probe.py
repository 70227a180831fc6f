"""scripts/window_probe.py: windows on and off the true tumours of exported SynthPath slides."""
from __future__ import annotations

import json

import torch

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import OmniPathProcessor
from omnipath_lvlm.synth.export import export_dataset


def test_probe_reads_a_tumour_window_and_a_tumour_free_one_per_slide(tmp_path, load_script, capsys):
    probe = load_script("window_probe")
    out = tmp_path / "export"
    export_dataset(out, n_patches=0, n_slides=4, seed=0, slide_size=2048, patch_size=64, tasks=["cancer_detection"],
                   splits=["train"])
    torch.manual_seed(0)
    config = OmniPathConfig.from_name("test-tiny")
    model_dir = tmp_path / "model"
    OmniPathForConditionalGeneration(config).save_pretrained(model_dir)
    OmniPathProcessor.for_config(config).save_pretrained(model_dir)
    result_file = tmp_path / "probe.json"
    assert probe.main([str(model_dir), str(out / "train.jsonl"), "--window-um", "96", "--max-new-tokens", "8",
                       "--out", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    n_slides = len((out / "train.jsonl").read_text().splitlines())
    assert result["tumour"]["windows"] == n_slides > 0
    assert 0 < result["no tumour"]["windows"] <= n_slides
    for kind in ("tumour", "no tumour"):
        assert 0.0 <= result[kind]["answered_with_box"] <= 1.0
    assert "| tumour |" in capsys.readouterr().out
