"""Tests of the recipe's model set-up: freezing, per-module learning rates, LoRA, checkpointing."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from omnipath_lvlm.data.dataset import InstructionDataset, model_inputs
from omnipath_lvlm.data.records import make_record, write_jsonl
from omnipath_lvlm.train.config import MODULE_NAMES, config_from_dict
from omnipath_lvlm.train.recipe import Trainer, build_model, build_optimizer, module_group


def _tiny(**sections):
    return config_from_dict({"model": {"preset": "test-tiny", "overrides": {"scales": [1]}}, **sections})


def _data(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    image = folder / "a.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :10] = 255
    Image.fromarray(mask).save(folder / "m.png")
    records = [make_record("subtype", image, "clear cell carcinoma", rng, style="open", id="a"),
               make_record("nerve_segmentation", image, str(folder / "m.png"), rng, style="mask", id="b")]
    return str(write_jsonl(records, folder / "train.jsonl"))


def test_freezing_and_per_module_learning_rates():
    config = _tiny(optim={"freeze": ["vision_tower.siglip", "mask_encoder"], "module_lr": {"multi_modal_projector": 1e-3},
                          "lr": 2e-5, "weight_decay": 0.1})
    model, _ = build_model(config)
    for name, param in model.named_parameters():
        frozen = module_group(name) in ("vision_tower.siglip", "mask_encoder")
        assert param.requires_grad != frozen, name
    optimizer = build_optimizer(model, config)
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == sum(p.requires_grad for p in model.parameters())
    for group in optimizer.param_groups:
        module = group["name"].split("/")[0]
        assert group["lr"] == (1e-3 if module == "multi_modal_projector" else 2e-5)
        assert group["weight_decay"] == (0.0 if group["name"].endswith("/no_decay") else 0.1)
        assert all((p.ndim >= 2) != group["name"].endswith("/no_decay") for p in group["params"])
    assert {g["name"].split("/")[0] for g in optimizer.param_groups} == set(MODULE_NAMES) - {"vision_tower.siglip", "mask_encoder"}


def test_activation_checkpointing_gives_the_same_gradients(tmp_path):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model, processor = build_model(_tiny(model={"preset": "test-tiny", "gradient_checkpointing": checkpointing}))
        data = InstructionDataset([_data(tmp_path / "data")], processor)
        assert model.is_activation_checkpointing == checkpointing
        model.train()
        out = model(**model_inputs(data.collate([data[0], data[1]])), use_cache=False)
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_lora_trains_adapters_and_exports_a_merged_model(tmp_path):
    config = _tiny(output_dir=str(tmp_path / "run"), data={"train": [_data(tmp_path / "data")]},
                   lora={"enabled": True, "r": 4, "alpha": 8},
                   optim={"lr": 1e-2, "warmup_steps": 0},
                   train={"max_steps": 2, "per_device_batch_size": 2, "precision": "fp32", "cpu": True},
                   logging={"progress": False, "tensorboard": False})
    model, _ = build_model(config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or module_group(n) in config.lora.train_modules for n in trainable)
    assert any("language_model" in n and "lora_" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)

    Trainer(config).train()
    merged = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in merged)
    torch.manual_seed(0)
    plain, _ = build_model(_tiny())
    assert set(merged) <= set(plain.state_dict()) and "language_model.model.layers.0.self_attn.q_proj.weight" in merged


def test_a_bf16_checkpoint_trains_from_fp32_master_weights(tmp_path):
    """The shipped nano is saved in bf16; fine-tuning it must not run bf16 kernels the CPU lacks."""
    model, processor = build_model(_tiny())
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    processor.save_pretrained(tmp_path / "bf16")
    assert load_file(str(tmp_path / "bf16" / "model.safetensors"))["multi_modal_projector.linear_1.weight"].dtype == torch.bfloat16
    loaded, _ = build_model(config_from_dict({"model": {"preset": None, "checkpoint": str(tmp_path / "bf16")}}))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
