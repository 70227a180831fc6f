"""scripts/teacher_forced.py: teacher-forced answers through the training dataset and forward."""
from __future__ import annotations

import torch

from omnipath_lvlm.config import OmniPathConfig
from omnipath_lvlm.data.records import read_jsonl
from omnipath_lvlm.model import OmniPathForConditionalGeneration
from omnipath_lvlm.processing import OmniPathProcessor
from omnipath_lvlm.synth.export import export_dataset


def test_teacher_forced_reads_each_records_reference_answer(tmp_path, load_script):
    paths = export_dataset(tmp_path, n_patches=2, n_slides=0, seed=0, patch_size=64, tasks=["organ", "tissue_type"],
                           splits=["train"])
    records, _ = read_jsonl(paths["train"])
    torch.manual_seed(0)
    config = OmniPathConfig.from_name("test-tiny")
    model = OmniPathForConditionalGeneration(config).eval()
    rows = load_script("teacher_forced").teacher_forced(model, OmniPathProcessor.for_config(config), paths["train"])
    assert [r.id for r in rows] == [r.id for r in records]
    for row, record in zip(rows, records):
        assert record.answer in row.reference  # the labels hold the record's answer
        assert row.predicted and row.exact == (row.predicted == row.reference)
