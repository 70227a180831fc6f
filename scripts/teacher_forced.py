"""Did training fit these records? Teacher-forced answers of a model on a JSONL of records.

Runs the training forward pass (the training dataset's inputs, labels included) and reads, for
every answer token, the model's most likely token given the reference answer so far. A model that
has fit a record reproduces its answer; one that has not shows what it falls back to. This reads
the same code path as training, so it also separates "not learnt" from "learnt, but inference
builds different inputs".

    .venv/bin/python scripts/teacher_forced.py runs/repro/nano/final \
        data/synthpath-train-slides-1/fit-questions.jsonl --limit 30
"""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Row:
    id: str
    task: str
    reference: str  # the answer tokens as the labels hold them
    predicted: str  # the argmax token at each of those positions

    @property
    def exact(self) -> bool:
        return self.reference == self.predicted


def teacher_forced(model, processor, jsonl: str | Path, limit: int | None = None, region_pool: int = 3) -> list[Row]:
    """One Row per record of `jsonl` (the first `limit`), through the training dataset and forward."""
    from omnipath_lvlm.data.dataset import InstructionDataset, model_inputs

    dataset = InstructionDataset([jsonl], processor, region_pool=region_pool)
    tokenizer = processor.tokenizer
    rows = []
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        batch = dataset.collate([dataset[i]])
        with torch.no_grad():
            logits = model(**model_inputs(batch)).logits[0]  # (L, V)
        labels = batch["labels"][0]  # (L,)
        positions = (labels != -100).nonzero().flatten()
        predicted = logits[positions - 1].argmax(-1)  # the token predicted at each answer position
        rows.append(Row(batch["ids"][0], batch["tasks"][0], tokenizer.decode(labels[positions]),
                        tokenizer.decode(predicted)))
    return rows


def main(argv: list[str] | None = None) -> int:
    from omnipath_lvlm.model import OmniPathForConditionalGeneration
    from omnipath_lvlm.processing import OmniPathProcessor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a saved model folder")
    parser.add_argument("data", help="JSONL of records (paths relative to its folder, as exported)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N records")
    args = parser.parse_args(argv)
    model = OmniPathForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    processor = OmniPathProcessor.from_pretrained(args.model)
    rows = teacher_forced(model, processor, args.data, args.limit)
    for row in rows:
        print(f"{row.task:10s} {row.reference.strip()!r:50s} -> {row.predicted.strip()!r}")
    exact = Counter(r.task for r in rows if r.exact)
    for task, n in sorted(Counter(r.task for r in rows).items()):
        print(f"{task}: {exact[task]}/{n} answers reproduced exactly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
