"""scripts/feature_probe.py: linear probes of slide labels on the views the LLM is shown."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import OmniPathProcessor
from omnipath_lvlm.synth.export import export_dataset
from omnipath_lvlm.synth.taxonomy import SUBTYPES


def test_architecture_inverts_the_subtype_names(load_script):
    fp = load_script("feature_probe")
    for organ, names in SUBTYPES.items():
        for arch, name in names.items():
            assert fp.architecture(organ, name) == arch
    with pytest.raises(ValueError, match="not a subtype of Liver"):
        fp.architecture("Liver", "papillary renal cell carcinoma")


def test_probe_reads_a_separable_label_and_not_a_random_one(load_script):
    fp = load_script("feature_probe")
    rng = np.random.default_rng(0)
    y_fit, y_score = list(rng.choice(["a", "b", "c"], 90)), list(rng.choice(["a", "b", "c"], 60))
    code = {"a": 0.0, "b": 5.0, "c": 10.0}

    def features(labels, signal):
        x = rng.normal(size=(len(labels), 4))
        x[:, 0] += signal * np.array([code[v] for v in labels])
        return x

    readable = fp.probe(features(y_fit, 1.0), y_fit, features(y_score, 1.0), y_score)
    unreadable = fp.probe(features(y_fit, 0.0), y_fit, features(y_score, 0.0), y_score)
    assert readable["accuracy"] > 0.95 and readable["n_fit"] == 90 and readable["n_score"] == 60
    assert unreadable["accuracy"] < 0.6
    commonest = max(sorted(set(y_fit)), key=y_fit.count)
    assert readable["constant"] == unreadable["constant"] == y_score.count(commonest) / 60
    one_label = fp.probe(features(["a"] * 5, 1.0), ["a"] * 5, features(y_score, 1.0), y_score)
    assert one_label["accuracy"] == one_label["constant"] == y_score.count("a") / 60


def test_run_probes_pixels_and_a_saved_model(tmp_path, load_script):
    fp = load_script("feature_probe")
    folders = []
    for seed in (0, 1):
        out = tmp_path / f"export-{seed}"
        export_dataset(out, n_patches=0, n_slides=6, seed=seed, slide_size=1024, patch_size=64, tasks=["grade"],
                       splits=["train"])
        folders.append(out)
    torch.manual_seed(0)
    config = OmniPathConfig.from_name("test-tiny")
    model_dir = tmp_path / "model"
    OmniPathForConditionalGeneration(config).save_pretrained(model_dir)
    OmniPathProcessor.for_config(config).save_pretrained(model_dir)
    slides = fp.load_slides(folders[0])
    assert len(slides) == 4 and set(slides[0].images) == set(fp.VIEWS)  # 6 slides split 80/10/10: 4 train
    results = fp.run([model_dir], folders[0], folders[1], region_pool=2)
    assert set(results) == {"pixels", str(model_dir)}
    for views in results.values():
        assert set(views) == set(fp.VIEWS)
        for labels in views.values():
            assert set(labels) == set(fp.LABELS)
            assert all(0 <= r["accuracy"] <= 1 and r["n_fit"] == 4 and r["n_score"] == 4 for r in labels.values())
    with pytest.raises(FileNotFoundError, match="no exported slides"):
        fp.load_slides(tmp_path / "model")
