"""scripts/teacher_forced.py: teacher-forced answers through the training dataset and forward."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.data.records import read_jsonl
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import OmniPathProcessor
from omnipath_lvlm.synth.export import export_dataset

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("omnipath_teacher_forced", ROOT / "scripts" / "teacher_forced.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_teacher_forced_reads_each_records_reference_answer(tmp_path):
    paths = export_dataset(tmp_path, n_patches=2, n_slides=0, seed=0, patch_size=64, tasks=["organ", "tissue_type"],
                           splits=["train"])
    records, _ = read_jsonl(paths["train"])
    torch.manual_seed(0)
    config = OmniPathConfig.from_name("test-tiny")
    model = OmniPathForConditionalGeneration(config).eval()
    rows = _script().teacher_forced(model, OmniPathProcessor.for_config(config), paths["train"])
    assert [r.id for r in rows] == [r.id for r in records]
    for row, record in zip(rows, records):
        assert record.answer in row.reference  # the labels hold the record's answer
        assert row.predicted and row.exact == (row.predicted == row.reference)
