"""The evaluation runner: answer a test set with a model, resumably, then score it.

A run reads a JSONL test set (:func:`omnipath_lvlm.data.records.read_jsonl`) and
turns it into *work items*: one per patch-level record, and one per slide-level
record and PGFC mode (``attention`` / ``random`` / ``none``), so one run can hold
the PGFC ablation of the paper's table 6. An item's key is the record id, plus
``@mode`` for slide items.

Answers are generated greedily (``do_sample=False``, ``torch.manual_seed(seed)``)
in batches and appended to ``OUT/predictions.jsonl``, flushed and synced after
every batch. A stopped run resumes where it stopped: items whose key is already
in the file are skipped, and a truncated last line left by a killed process is
cut off before appending (it is never scored). ``OUT/run.json`` records what
determines the answers (model, data, PGFC regions, token budget, seed); resuming
into a folder holding a different run raises instead of mixing two runs.

How an item is answered (:class:`ModelAnswerer`):

* patch records: ``processor(conversation without its last answer, images=[image])``
  then ``model.generate_with_masks``; input masks (``<mask>`` in a user turn) are
  read from the record's ``masks``;
* slide records: one at a time through the WSI pipeline
  (``omnipath_lvlm.wsi.pipeline.OmniPathPipeline.analyze``: thumbnail plus
  ``num_regions`` detail regions chosen by the item's PGFC mode, or for mode
  ``record`` the regions the record lists), which also reads the slide; the
  regions it used are stored with the prediction.

Greedy answers of patch items can depend slightly on the batch they share
(left padding changes the floating-point sums), so a resumed run is bit-exact
with an uninterrupted one at ``batch_size=1`` or when the batches come out the same.

A generated ``<mask>`` becomes a binary mask (logit > 0), resized (nearest) to the
ground-truth mask and saved as ``OUT/masks/<key>.png``; several output masks of
one answer are united.

Scoring rebuilds one row per item (layout of
:meth:`omnipath_lvlm.eval.metrics.TaskScores.add_row`) from the record and its
prediction, in test-set order (so resuming does not reorder the tables).
``level`` is ``slide`` or ``patch``, ``variant`` the PGFC mode of slide items,
``group`` the record's source (or organ, or nothing: ``group_by``). A task asked
in several answer styles in one test set (e.g. ``subtype`` open and closed) is
scored as one task per style, named ``task (style)``. Polygons are rasterised at the image size scaled down to at most
``RASTER_MAX_SIDE`` on the longest side (relative polygons keep their Dice, and a
level-0 slide raster would not fit in memory). Results go to ``OUT/summary.json``
and the report tables (:func:`omnipath_lvlm.eval.report.write_reports`).

Several processes (``accelerate launch``): items are split by index
(``index % world == rank``), rank K appends to ``OUT/predictions.rankK.jsonl``,
and after ``wait_for_everyone`` the main process merges the rank files into
``predictions.jsonl`` (also any left by an earlier, stopped run) and scores.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from omnipath_lvlm.data import formats, geometry
from omnipath_lvlm.data.records import HUMAN, IMAGE_TOKEN, MASK_TOKEN, Record, read_jsonl
from omnipath_lvlm.fileio import atomic_write_text
from omnipath_lvlm.wsi import window_um_value

PGFC_MODES = ("attention", "random", "none", "record")  # "record": the regions the record lists
LOCATE_MODES = ("slide", "regions", "tiles", "auto")  # omnipath_lvlm.wsi.locate.LOCATE_MODES (kept import-free)
GROUP_BY = ("source", "organ", "none")
PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
RUN_CONFIG = "run.json"
MASK_DIR = "masks"
RASTER_MAX_SIDE = 1024
# Fields of EvalConfig that change the answers: a folder holds predictions of one setting only.
_IDENTITY_FIELDS = ("model", "data", "num_regions", "region_pool", "max_new_tokens", "seed")


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run (see the module docstring)."""

    model: str
    data: Path
    out: Path
    pgfc: tuple[str, ...] = ("attention",)
    num_regions: int = 8
    region_pool: int = 3
    batch_size: int = 4
    max_new_tokens: int = 512
    limit: int | None = None
    seed: int = 0
    group_by: str = "source"
    centroid_radius_px: float | None = None  # nucleus_* box tasks match by centroid within this radius
    locate: str = "slide"  # where slide items' boxes and outlines come from (omnipath_lvlm.wsi.locate)
    window_um: float | str | None = None  # locate windows: micrometres, "cells", or None for the model's

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "pgfc", tuple(dict.fromkeys(self.pgfc)))
        unknown = [m for m in self.pgfc if m not in PGFC_MODES]
        if unknown or not self.pgfc:
            raise ValueError(f"pgfc modes must be a non-empty selection of {PGFC_MODES}, got {list(self.pgfc)}")
        for name in ("num_regions", "region_pool", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {self.limit}")
        if self.group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY}, got {self.group_by!r}")
        if self.centroid_radius_px is not None and self.centroid_radius_px <= 0:
            raise ValueError(f"centroid_radius_px must be positive, got {self.centroid_radius_px}")
        if self.locate not in LOCATE_MODES:
            raise ValueError(f"locate must be one of {LOCATE_MODES}, got {self.locate!r}")
        if self.window_um is not None:  # stored as given ("cells" or micrometres), checked here
            object.__setattr__(self, "window_um", window_um_value(self.window_um))

    def identity(self) -> dict[str, Any]:
        """What the answers depend on; stored in ``run.json`` and checked on resume."""
        model = Path(self.model)
        out = {name: getattr(self, name) for name in _IDENTITY_FIELDS}
        out["model"] = str(model.resolve()) if model.exists() else self.model
        out["data"] = str(self.data.resolve())
        if self.locate != "slide":  # absent from the folders of runs made before locating existed
            out["locate"] = self.locate
        if self.window_um is not None:  # likewise: absent when the model's own window is used
            out["window_um"] = self.window_um
        return out


# --------------------------------------------------------------------------- #
# Work items
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class WorkItem:
    """One question to answer: a record, and for slide records the PGFC mode."""

    index: int  # position in the run's item list (the split between ranks uses it)
    record: Record
    variant: str | None

    @property
    def key(self) -> str:
        return self.record.id if self.variant is None else f"{self.record.id}@{self.variant}"

    @property
    def level(self) -> str:
        return "slide" if self.record.slide is not None else "patch"


def plan_items(records: Sequence[Record], pgfc: Sequence[str], limit: int | None = None) -> list[WorkItem]:
    """Work items of the first ``limit`` records: patch records once, slide records once per PGFC mode."""
    chosen = records if limit is None else records[:limit]
    items: list[WorkItem] = []
    for record in chosen:
        for variant in ((None,) if record.slide is None else tuple(pgfc)):
            items.append(WorkItem(index=len(items), record=record, variant=variant))
    return items


def prompt_turns(record: Record) -> list[dict[str, str]]:
    """The conversation up to (not including) its last answer: what the model is asked."""
    return [dict(turn) for turn in record.conversations[:-1]]


def input_mask_paths(record: Record) -> list[str]:
    """Mask files of the ``<mask>`` tokens in the prompt's user turns (inputs to the mask encoder)."""
    paths, used = [], 0
    for turn in record.conversations[:-1]:
        count = turn["value"].count(MASK_TOKEN)
        if turn["from"] == HUMAN:
            paths += record.masks[used:used + count]
        used += count
    return paths


# --------------------------------------------------------------------------- #
# Answers
# --------------------------------------------------------------------------- #


@dataclass
class Answer:
    """The model's answer to one item."""

    text: str
    masks: list[np.ndarray] = field(default_factory=list)  # (h, w) bool, one per generated <mask>
    engine: str = "model"  # "model" (patch, batched) or "pipeline" (slide, PGFC)
    regions: list[list[float]] = field(default_factory=list)  # relative boxes of the detail crops shown


@dataclass
class PreparedItem:
    """Model inputs of one item before batching."""

    turns: list[dict[str, str]]  # the conversation without its last answer
    images: list[Image.Image]  # the patch (pool 1)
    input_masks: list[np.ndarray]  # (h, w) bool, one per <mask> in a user turn


class Answerer(Protocol):
    """Answers a batch of items, one Answer per item in the same order."""

    def answer(self, items: Sequence[WorkItem]) -> list[Answer]: ...


def _rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


class ModelAnswerer:
    """Answers patch items in batches with the model, slide items one by one with the WSI pipeline."""

    def __init__(self, pipeline: Any, *, max_new_tokens: int = 512, num_regions: int = 8, region_pool: int = 3,
                 seed: int = 0, generate_kwargs: Mapping[str, Any] | None = None, locate: str = "slide",
                 window_um: float | str | None = None):
        self.pipeline = pipeline  # omnipath_lvlm.wsi.pipeline.OmniPathPipeline (has .model and .processor)
        self.model = pipeline.model
        self.processor = pipeline.processor
        self.max_new_tokens = int(max_new_tokens)
        self.num_regions = int(num_regions)
        self.region_pool = int(region_pool)
        self.seed = int(seed)
        self.generate_kwargs = dict(generate_kwargs or {})  # extra `generate` arguments for patch items
        self.locate = locate  # slide items: see OmniPathPipeline.analyze
        self.window_um = window_um  # locate windows (micrometres or "cells"); None: the model's pgfc.json

    def answer(self, items: Sequence[WorkItem]) -> list[Answer]:
        answers: dict[int, Answer] = {}
        patches = [(position, item) for position, item in enumerate(items) if item.level == "patch"]
        for position, item in enumerate(items):
            if item.level == "slide":
                answers[position] = self._answer_slide(item)
        if patches:
            for (position, _), answer in zip(patches, self._generate([item for _, item in patches])):
                answers[position] = answer
        return [answers[p] for p in range(len(items))]

    # ------------------------------------------------------------------ slides
    def _answer_slide(self, item: WorkItem) -> Answer:
        from dataclasses import replace

        turns = prompt_turns(item.record)
        question = turns[-1]["value"].replace(IMAGE_TOKEN, "").strip()
        history = [(turns[i]["value"].replace(IMAGE_TOKEN, "").strip(), turns[i + 1]["value"])
                   for i in range(0, len(turns) - 1, 2)]
        given = None
        if item.variant == "record":  # the record's own regions (relative boxes) instead of PGFC's choice
            if not item.record.regions:
                raise ValueError(f"record {item.record.id!r} lists no regions, which PGFC mode 'record' reads")
            given = geometry.to_absolute([r["box"] for r in item.record.regions], *image_size_of(item.record)).tolist()
        pgfc = replace(self.pipeline.pgfc, mode="attention" if given is not None else item.variant,  # the model's
                       num_regions=self.num_regions, region_pool=self.region_pool, seed=self.seed)  # read settings
        pgfc = pgfc.with_overrides(window_um=self.window_um)  # None keeps the model's locate window
        analysis = self.pipeline.analyze(item.record.slide, question, pgfc=pgfc, history=history,
                                         max_new_tokens=self.max_new_tokens, regions=given, locate=self.locate)
        width, height = analysis.slide_size
        regions = [[r.box[0] / width, r.box[1] / height, r.box[2] / width, r.box[3] / height]
                   for r in analysis.regions]
        return Answer(text=analysis.answer, masks=[np.asarray(m, dtype=bool) for m in analysis.masks],
                      engine="pipeline", regions=regions)

    # ------------------------------------------------------------------ model
    def prepare(self, item: WorkItem) -> PreparedItem:
        """The prompt turns, image and input masks of one patch-level item."""
        if item.level != "patch":
            raise ValueError(f"item {item.key!r} is slide-level: slides are answered through the WSI pipeline")
        masks = []
        for path in input_mask_paths(item.record):
            with Image.open(path) as mask:
                masks.append(np.asarray(mask.convert("L")) > 0)
        return PreparedItem(turns=prompt_turns(item.record), images=[_rgb(item.record.image)], input_masks=masks)

    def _generate(self, items: Sequence[WorkItem]) -> list[Answer]:
        import torch

        conversations, images, masks = [], [], []
        for item in items:
            prepared = self.prepare(item)
            conversations.append(prepared.turns)
            images += prepared.images
            masks += prepared.input_masks
        batch = self.processor(conversations, images=images, image_pool=[1] * len(images), input_masks=masks or None)
        device = self.model.device
        inputs = {name: value.to(device) for name, value in batch.items()}
        tokenizer = self.processor.tokenizer
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": False,
                  "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                  **self.generate_kwargs}
        torch.manual_seed(self.seed)
        result = self.model.generate_with_masks(**inputs, **kwargs)
        mask_id = self.processor.mask_token_id
        return [Answer(text=self.processor.decode(result.new_tokens[i]),
                       masks=[m.numpy() for m in result.new_masks(i, mask_id)]) for i in range(len(items))]


def load_pipeline(name_or_dir: str, device: Any | None = None) -> Any:
    """``omnipath_lvlm.wsi.pipeline.load_engine(name_or_dir)`` with its model moved to ``device``, in eval mode."""
    from omnipath_lvlm.wsi.pipeline import load_engine

    pipeline = load_engine(name_or_dir)
    if device is not None:
        pipeline.model.to(device)
    pipeline.model.eval()
    return pipeline


# --------------------------------------------------------------------------- #
# Prediction files
# --------------------------------------------------------------------------- #


def repair_tail(path: Path) -> int:
    """Cut an unfinished last line (a killed writer's) so appends start on a fresh line; bytes cut."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as stream:
        stream.seek(-1, os.SEEK_END)
        if stream.read(1) == b"\n":
            return 0
        size = stream.seek(0, os.SEEK_END)
        chunk = min(size, 1 << 20)
        while True:
            stream.seek(size - chunk)
            data = stream.read(chunk)
            cut = data.rfind(b"\n")
            if cut >= 0 or chunk == size:
                keep = size - chunk + cut + 1 if cut >= 0 else 0
                break
            chunk = min(size, chunk * 2)
        stream.truncate(keep)
    return size - keep


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """key -> prediction line; unreadable lines (e.g. a truncated last one) are ignored, first key wins."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    with path.open("rb") as stream:
        for raw in stream:
            try:
                line = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(line, dict) and isinstance(line.get("key"), str):
                out.setdefault(line["key"], line)
    return out


def append_predictions(path: Path, lines: Iterable[Mapping[str, Any]]) -> None:
    """Append JSON lines, flushed and synced to disk before returning."""
    with path.open("a", encoding="utf-8") as stream:
        for line in lines:
            stream.write(json.dumps(line, ensure_ascii=False) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def rank_file(out: Path, rank: int) -> Path:
    return out / f"predictions.rank{rank}.jsonl"


def merge_rank_files(out: Path) -> int:
    """Move every ``predictions.rankK.jsonl`` into ``predictions.jsonl`` (new keys only); lines added."""
    main = out / PREDICTIONS
    pattern = re.compile(r"predictions\.rank(\d+)\.jsonl")
    ranks = sorted((int(m.group(1)), p) for p in out.iterdir() if (m := pattern.fullmatch(p.name)))
    if not ranks:
        return 0
    repair_tail(main)
    known = set(read_predictions(main))
    added = 0
    for _, path in ranks:
        fresh = [line for key, line in read_predictions(path).items() if key not in known]
        append_predictions(main, fresh)
        known.update(line["key"] for line in fresh)
        added += len(fresh)
        path.unlink()
    return added


def _mask_name(key: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:60]
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.png"


def _gt_mask_path(record: Record) -> str:
    path = record.gt.get("mask")
    if isinstance(path, str):
        return path
    if record.masks:
        return record.masks[-1]
    raise ValueError(f"record {record.id!r} is a mask task without a ground-truth mask (gt.mask or masks)")


def save_answer_mask(item: WorkItem, answer: Answer, out: Path) -> str | None:
    """Union of the answer's masks as PNG, its path relative to ``out``; None when the answer has no mask.

    Mask items save at the ground-truth mask's size; outline (polygons) items answered with
    ``<mask>`` save at the size their polygons are rasterised at for scoring.
    """
    style = item.record.answer_style
    if style not in ("mask", "polygons") or not answer.masks:
        return None
    if style == "mask":
        with Image.open(_gt_mask_path(item.record)) as truth:
            size = truth.size  # (width, height)
    else:
        size = tuple(raster_size(image_size_of(item.record)))
    union = np.zeros((size[1], size[0]), dtype=bool)
    for mask in answer.masks:
        union |= geometry.resize_mask(mask, size)
    relative = Path(MASK_DIR) / _mask_name(item.key)
    (out / MASK_DIR).mkdir(parents=True, exist_ok=True)
    Image.fromarray(union.astype(np.uint8) * 255).save(out / relative)
    return relative.as_posix()


def prediction_line(item: WorkItem, answer: Answer, out: Path) -> dict[str, Any]:
    """What ``predictions.jsonl`` stores for one answered item (ground truth stays in the records)."""
    return {
        "key": item.key,
        "id": item.record.id,
        "variant": item.variant,
        "task": item.record.task,
        "kind": item.record.answer_style,
        "prediction": answer.text,
        "reference": item.record.conversations[-1]["value"],
        "pred_mask": save_answer_mask(item, answer, out),
        "engine": answer.engine,
        "regions": answer.regions,
    }


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #


def image_size_of(record: Record) -> tuple[int, int]:
    """(width, height) of the record's image or slide at level 0."""
    if record.image_size is not None:
        return int(record.image_size[0]), int(record.image_size[1])
    if record.image is not None:
        with Image.open(record.image) as image:
            return image.size
    from omnipath_lvlm.wsi.slide import open_slide

    with open_slide(record.slide) as slide:
        return tuple(int(v) for v in slide.dimensions)


def raster_size(size: Sequence[int], max_side: int = RASTER_MAX_SIDE) -> list[int]:
    """``size`` scaled down (aspect kept) so its longest side is at most ``max_side``."""
    width, height = int(size[0]), int(size[1])
    scale = min(1.0, max_side / max(width, height))
    return [max(1, round(width * scale)), max(1, round(height * scale))]


def _closed_index(record: Record) -> int:
    options = record.options
    letter = record.gt.get("letter")
    if isinstance(letter, str) and len(letter) == 1 and 0 <= ord(letter.upper()) - ord("A") < len(options):
        return ord(letter.upper()) - ord("A")
    label = record.gt.get("label")
    if isinstance(label, str) and label in options:
        return options.index(label)
    match = formats.match_option(record.conversations[-1]["value"], options)
    if match.index is None:
        raise ValueError(f"closed record {record.id!r}: no gt letter/label and the reference answer names no option")
    return match.index


def _yes_no_truth(record: Record) -> str:
    label = record.gt.get("label")
    if isinstance(label, (str, bool)):
        return label if isinstance(label, bool) else label.strip().lower()
    parsed = formats.parse_yes_no(record.conversations[-1]["value"])
    if parsed.items is None:
        raise ValueError(f"yes/no record {record.id!r}: no gt label and the reference answer is not yes or no")
    return parsed.items


def _group(record: Record, group_by: str) -> str | None:
    if group_by == "source":
        return record.source or record.organ or None
    if group_by == "organ":
        return record.organ
    return None


def task_labels(items: Iterable[WorkItem]) -> dict[tuple[str, str], str]:
    """(task, style) -> task name in the tables: ``task``, or ``task (style)`` when the task has several styles."""
    styles: dict[str, list[str]] = {}
    for item in items:
        styles.setdefault(item.record.task, [])
        if item.record.answer_style not in styles[item.record.task]:
            styles[item.record.task].append(item.record.answer_style)
    return {(task, style): task if len(found) == 1 else f"{task} ({style})"
            for task, found in styles.items() for style in found}


def score_row(item: WorkItem, prediction: Mapping[str, Any], config: EvalConfig,
              task_name: str | None = None) -> dict[str, Any]:
    """The metrics row (`TaskScores.add_row` layout) of one answered item, filed under ``task_name``."""
    record = item.record
    kind = record.answer_style
    reference = record.conversations[-1]["value"]
    row: dict[str, Any] = {"task": task_name or record.task, "kind": kind, "level": item.level,
                           "group": _group(record, config.group_by), "variant": item.variant,
                           "prediction": prediction.get("prediction", "")}
    if kind == "closed":
        row.update(options=list(record.options), answer_index=_closed_index(record))
    elif kind == "yes_no":
        row["answer"] = _yes_no_truth(record)
    elif kind == "open":
        row["answer"] = record.gt.get("label", reference)
    elif kind in ("boxes", "detections"):
        row["answer"] = record.gt.get(kind, reference)
        if config.centroid_radius_px is not None and record.task.startswith("nucleus_"):
            row.update(match="centroid", radius_px=config.centroid_radius_px, image_size=list(image_size_of(record)))
    elif kind == "polygons":
        row.update(answer=record.gt.get("polygons", reference), image_size=raster_size(image_size_of(record)))
        if prediction.get("pred_mask"):  # the outline prompt was answered with <mask>
            with Image.open(config.out / prediction["pred_mask"]) as mask:
                row["pred_mask"] = np.asarray(mask.convert("L")) > 0
    elif kind == "mask":
        with Image.open(_gt_mask_path(record)) as truth:
            row["gt_mask"] = np.asarray(truth.convert("L")) > 0
        path = prediction.get("pred_mask")
        row["pred_mask"] = None
        if path:
            with Image.open(config.out / path) as mask:
                row["pred_mask"] = np.asarray(mask.convert("L")) > 0
    return row


def score_predictions(items: Sequence[WorkItem], predictions: Mapping[str, Mapping[str, Any]],
                      config: EvalConfig) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per-task summaries over the items that have a prediction (in item order), and the keys that lack one."""
    from omnipath_lvlm.eval.metrics import score_rows

    missing = [item.key for item in items if item.key not in predictions]
    labels = task_labels(items)
    rows = (score_row(item, predictions[item.key], config, labels[item.record.task, item.record.answer_style])
            for item in items if item.key in predictions)
    return score_rows(rows), missing


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #


class ProcessGroup(Protocol):
    """What the runner needs from ``accelerate.Accelerator``."""

    process_index: int
    num_processes: int
    is_main_process: bool

    def wait_for_everyone(self) -> None: ...


@dataclass
class SingleProcess:
    """A one-process stand-in for ``accelerate.Accelerator``."""

    process_index: int = 0
    num_processes: int = 1
    is_main_process: bool = True
    device: Any = None

    def wait_for_everyone(self) -> None:
        return None


@dataclass
class EvalResult:
    """What a run did; summaries and files only on the main process."""

    items: int
    generated: int  # items this process answered in this call
    skipped: int  # items of this process already answered by an earlier call
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    data_problems: list[str] = field(default_factory=list)


def check_run_config(config: EvalConfig, write: bool = True) -> None:
    """Check that ``run.json`` (if any) describes the same setting; with ``write``, create it when absent."""
    path = config.out / RUN_CONFIG
    identity = config.identity()
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(k for k in identity if stored.get(k) != identity[k])
        if differ:
            detail = ", ".join(f"{k}: {stored.get(k)!r} there, {identity[k]!r} now" for k in differ)
            raise ValueError(f"{config.out} holds predictions of a different run ({detail}); use another --out")
    elif write:
        atomic_write_text(path, json.dumps(identity, indent=2) + "\n")


def run_eval(config: EvalConfig, answerer: Answerer | None = None, process: ProcessGroup | None = None) -> EvalResult:
    """Answer the items of this process not answered yet, then (main process) merge, score and report.

    ``answerer`` defaults to a :class:`ModelAnswerer` around :func:`load_pipeline`
    (loaded only when something is left to answer).
    """
    process = process or SingleProcess()
    records, problems = read_jsonl(config.data)
    items = plan_items(records, config.pgfc, config.limit)
    config.out.mkdir(parents=True, exist_ok=True)
    check_run_config(config, write=process.is_main_process)  # every rank, so none waits on a failed main
    if process.is_main_process:
        merge_rank_files(config.out)
        repair_tail(config.out / PREDICTIONS)
    process.wait_for_everyone()

    world = process.num_processes
    own = config.out / PREDICTIONS if world == 1 else rank_file(config.out, process.process_index)
    repair_tail(own)
    done = set(read_predictions(config.out / PREDICTIONS)) | set(read_predictions(own))
    mine = [item for item in items if item.index % world == process.process_index]
    pending = [item for item in mine if item.key not in done]
    if pending and answerer is None:
        answerer = ModelAnswerer(load_pipeline(config.model, getattr(process, "device", None)),
                                 max_new_tokens=config.max_new_tokens, num_regions=config.num_regions,
                                 region_pool=config.region_pool, seed=config.seed, locate=config.locate,
                                 window_um=config.window_um)
    for start in range(0, len(pending), config.batch_size):
        batch = pending[start:start + config.batch_size]
        answers = answerer.answer(batch)
        if len(answers) != len(batch):
            raise ValueError(f"the answerer gave {len(answers)} answers for {len(batch)} items")
        append_predictions(own, [prediction_line(item, answer, config.out) for item, answer in zip(batch, answers)])
    process.wait_for_everyone()

    result = EvalResult(items=len(items), generated=len(pending), skipped=len(mine) - len(pending),
                        data_problems=problems)
    if not process.is_main_process:
        return result
    merge_rank_files(config.out)
    summaries, missing = score_predictions(items, read_predictions(config.out / PREDICTIONS), config)
    result.summaries, result.missing = summaries, missing
    result.files = write_summary(config, result)
    return result


def write_summary(config: EvalConfig, result: EvalResult) -> dict[str, Path]:
    """``summary.json`` and the report tables of a finished run."""
    from omnipath_lvlm.eval.report import write_reports

    summary = {
        "run": {**config.identity(), "pgfc": list(config.pgfc), "limit": config.limit, "group_by": config.group_by,
                "centroid_radius_px": config.centroid_radius_px},
        "items": result.items,
        "scored": result.items - len(result.missing),
        "missing": result.missing,
        "data_problems": result.data_problems,
        "tasks": result.summaries,
    }
    path = config.out / SUMMARY
    atomic_write_text(path, json.dumps(summary, indent=2, default=_json_default) + "\n")
    files = {"summary": path}
    files.update(write_reports(result.summaries, config.out))
    return files


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_summaries(run: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Per-task summaries of a run folder (its ``summary.json``) or of a summary file."""
    path = Path(run)
    if path.is_dir():
        path = path / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run} a finished `omnipath eval` run?")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ValueError(f"{path} has no 'tasks' mapping; it is not an `omnipath eval` summary")
    return data["tasks"]


def compare_run_dirs(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str],
                     labels: tuple[str, str] | None = None) -> str:
    """Markdown table of two runs side by side with their differences."""
    from omnipath_lvlm.eval.report import compare_runs

    names = labels or (Path(run_a).name or str(run_a), Path(run_b).name or str(run_b))
    if names[0] == names[1]:
        names = (f"A: {names[0]}", f"B: {names[1]}")
    return compare_runs(load_summaries(run_a), load_summaries(run_b), labels=names)


__all__ = [
    "Answer", "Answerer", "PreparedItem", "EvalConfig", "EvalResult", "ModelAnswerer", "PGFC_MODES", "SingleProcess",
    "WorkItem", "compare_run_dirs", "load_pipeline", "load_summaries", "merge_rank_files", "plan_items",
    "prediction_line", "read_predictions", "repair_tail", "run_eval", "score_predictions",
    "score_row", "task_labels",
]
