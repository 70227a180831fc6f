"""The training dataset: instruction records -> tokenised samples -> model batches.

``InstructionDataset`` reads one or more JSONL record files (see
:mod:`omnipath_lvlm.data.records`), mixes them with per-file weights and turns a
record into a :class:`Sample` when it is indexed (images are opened lazily, in
``__getitem__``, so a data-loader worker does the decoding):

* the record's image (a patch file, or a slide read at its ``region`` / as a
  thumbnail) is the first image, pool 1;
* each detail crop in ``regions`` (prompt-guided detail completion training)
  becomes an extra image with pool ``region_pool``, announced in the first user
  turn by :func:`describe_region` text placed before its ``<image>``
  placeholder; with ``region_jitter`` > 0 every sighting re-reads the crops from
  the slide instead, each shifted by up to that fraction of its side (as
  ``omnipath analyze`` reads regions), so that a slide's answer cannot be learnt
  from one fixed set of pixels;
* segmentation answers follow ``segmentation_output``: in ``"mask"`` mode a
  ``<contour_list>...</contour_list>`` answer becomes one output ``<mask>``
  token whose target is ``gt["mask"]`` (or its polygons rasterised); in
  ``"polygons"`` mode an output ``<mask>`` answer becomes the polygon text of
  its mask file;
* a ``<mask>`` in a user turn is an input mask, read from the record's ``masks``;
* with ``closed_answers="text"`` a closed-ended answer ``"C. <option>"`` is trained as the option's
  text alone (the options stay lettered in the question): a small model then does not have to find
  the letter of what it is about to say before saying it.

A sample whose files cannot be read (or that is longer than ``max_length``) is
logged, remembered in ``dataset.skipped`` (where -> reason) and replaced by the
next readable sample, so the choice is deterministic and a run never dies on one
bad sample. Lines ``read_jsonl`` rejects (truncated JSON, missing files, broken
records) are in ``dataset.skipped`` too.

``dataset.collate(samples)`` right-pads a list of samples into the keyword
arguments of ``OmniPathForConditionalGeneration.forward`` plus bookkeeping
(``tasks``, ``ids``, ``skipped``, ``image_cacheable``) that :data:`BOOKKEEPING_KEYS` names.
"""
from __future__ import annotations

import logging
import math
import os
import random
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from omnipath_lvlm.config import IMAGE_TOKEN, MASK_TOKEN
from omnipath_lvlm.data.records import GPT, Record, read_jsonl
from omnipath_lvlm.processing import Encoded, OmniPathProcessor, pad_batch

logger = logging.getLogger(__name__)

SegmentationOutput = Literal["mask", "polygons"]
# Keys of a collated batch that are not model inputs.
# ``image_cacheable`` (N_img,) bool: False for pictures that differ at every sighting (jittered regions).
BOOKKEEPING_KEYS = ("tasks", "ids", "skipped", "image_cacheable")

_CONTOUR_LIST = re.compile(r"<contour_list>.*?</contour_list>", re.DOTALL)


def describe_region(box: Sequence[float]) -> str:
    """The text announcing a detail region of relative box ``[x1, y1, x2, y2]``.

    >>> describe_region([0.12, 0.4, 0.25, 0.52])
    'Detail region at x 0.12-0.25, y 0.40-0.52:'
    """
    if len(box) != 4:
        raise ValueError(f"a detail region box must be [x1, y1, x2, y2], got {list(box)!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        raise ValueError(f"a detail region box must be relative with 0 <= x1 < x2 <= 1, 0 <= y1 < y2 <= 1, got {list(box)!r}")
    return f"Detail region at x {x1:.2f}-{x2:.2f}, y {y1:.2f}-{y2:.2f}:"


@dataclass
class Sample:
    """One tokenised conversation with its images and masks."""

    id: str
    task: str
    encoded: Encoded
    pixel_values: torch.Tensor  # (N_img, 3, S, S)
    mask_pixel_values: torch.Tensor  # (K_in, 1, h, h) input masks of user-turn <mask> tokens
    mask_targets: torch.Tensor  # (K_out, H, H) targets of assistant-turn <mask> tokens
    skipped: list[str] = field(default_factory=list)  # samples passed over to reach this one
    focus: Encoded | None = None  # PGFC's prompt (question + first image alone), when the record has focus boxes
    focus_targets: torch.Tensor | None = None  # (G*G,) bool: the first image's tokens under those boxes
    cacheable: list[bool] | None = None  # per image: the same pixels at every sighting (None: all are)

    @property
    def image_pools(self) -> list[int]:
        return list(self.encoded.image_pools)


class InstructionDataset(Dataset):
    """Instruction records of one or more JSONL files, mixed by weight (see the module docstring).

    ``mixture_weights[i]`` is how many times file ``i``'s records are seen per
    epoch: 2.0 repeats the file twice, 0.5 takes a seeded random half of it.
    ``tasks[i]``, when given and not empty, keeps only file ``i``'s records of those tasks
    (before weighting).
    """

    def __init__(
        self,
        jsonl_paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        processor: OmniPathProcessor,
        mixture_weights: Sequence[float] | None = None,
        segmentation_output: SegmentationOutput = "mask",
        region_pool: int = 3,
        seed: int = 0,
        max_length: int | None = None,
        tasks: Sequence[Sequence[str] | None] | None = None,
        focus_boxes: str | None = None,
        region_jitter: float = 0.0,
        closed_answers: Literal["letter", "text"] = "letter",
    ):
        paths = [jsonl_paths] if isinstance(jsonl_paths, (str, os.PathLike)) else list(jsonl_paths)
        keep = [None] * len(paths) if tasks is None else [set(t) if t else None for t in tasks]
        if len(keep) != len(paths):
            raise ValueError(f"{len(paths)} JSONL files given but {len(keep)} task filters")
        if not paths:
            raise ValueError("no JSONL files given")
        weights = [1.0] * len(paths) if mixture_weights is None else [float(w) for w in mixture_weights]
        if len(weights) != len(paths):
            raise ValueError(f"{len(paths)} JSONL files given but {len(weights)} mixture weights")
        if any(w < 0 or w != w for w in weights):
            raise ValueError(f"mixture weights must be non-negative numbers, got {weights}")
        if segmentation_output not in ("mask", "polygons"):
            raise ValueError(f"segmentation_output must be 'mask' or 'polygons', got {segmentation_output!r}")
        if region_pool < 1:
            raise ValueError(f"region_pool must be >= 1, got {region_pool}")
        if not 0.0 <= region_jitter <= 1.0:
            raise ValueError(f"region_jitter is a fraction of a region's side in [0, 1], got {region_jitter}")
        self.region_jitter = float(region_jitter)
        if closed_answers not in ("letter", "text"):
            raise ValueError(f"closed_answers must be 'letter' or 'text', got {closed_answers!r}")
        self.closed_answers = closed_answers
        self.processor = processor
        self.segmentation_output: SegmentationOutput = segmentation_output
        self.region_pool = int(region_pool)
        self.max_length = max_length
        self.focus_boxes = focus_boxes
        self.skipped: dict[str, str] = {}  # where -> reason
        self.files: list[list[Record]] = []
        for path, wanted in zip(paths, keep):
            if not Path(path).is_file():
                raise FileNotFoundError(f"training data file {path} does not exist")
            records, problems = read_jsonl(path)
            for problem in problems:
                self._skip(f"{path} {problem.split(':', 1)[0]}", problem.split(":", 1)[1].strip())
            if wanted is not None:
                records = [r for r in records if r.task in wanted]
                if not records:
                    raise ValueError(f"{path} has no records of the tasks {sorted(wanted)}")
            self.files.append(records)
        self.index = _mixture_index([len(r) for r in self.files], weights, seed)  # [(file, record)]
        if not self.index:
            raise ValueError(f"no usable records in {', '.join(map(str, paths))} (weights {weights})")

    # ------------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        return len(self.index)

    def record(self, idx: int) -> Record:
        f, r = self.index[idx]
        return self.files[f][r]

    @property
    def task_names(self) -> list[str]:
        """Every task in the data, sorted (a fixed order for per-task loss logging)."""
        return sorted({r.task for records in self.files for r in records})

    def _skip(self, where: str, reason: str) -> None:
        logger.warning("skipping %s: %s", where, reason)
        self.skipped[where] = reason

    # ------------------------------------------------------------------ samples
    def __getitem__(self, idx: int) -> Sample:
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} is outside the dataset of {len(self)} samples")
        passed: list[str] = []
        for offset in range(len(self)):
            record = self.record((idx + offset) % len(self))
            try:
                sample = self.build_sample(record)
            except Exception as exc:  # a bad file must not end the run: skip it, note why
                reason = f"{type(exc).__name__}: {exc}"
                self._skip(f"record {record.id!r}", reason)
                passed.append(f"record {record.id!r}: {reason}")
                continue
            sample.skipped = passed
            return sample
        raise RuntimeError(f"every one of the {len(self)} samples failed to load; first failures: {passed[:3]}")

    def build_sample(self, record: Record) -> Sample:
        """Load and tokenise one record (raises on unreadable files)."""
        proc = self.processor
        with self._opened_slide(record) as slide:  # opened once for the thumbnail and shifted regions
            details, boxes = self._details(record, slide)
            images = [self._main_image(record, slide)] + details
        conversation, input_files, targets = self._conversation(record, boxes)
        pools = [1] + [self.region_pool] * len(record.regions)
        encoded = proc.encode_conversation(conversation, image_pools=pools)
        if self.max_length is not None and len(encoded.input_ids) > self.max_length:
            raise ValueError(f"{len(encoded.input_ids)} tokens exceed max_length {self.max_length}")
        n_in = sum(encoded.mask_input_positions)
        if n_in != len(input_files):
            raise ValueError(f"{len(input_files)} input masks for {n_in} user-turn {MASK_TOKEN} tokens")
        n_out = sum(1 for t, lab in zip(encoded.input_ids, encoded.labels) if t == proc.mask_token_id and lab != -100)
        if n_out != len(targets):
            raise ValueError(f"{len(targets)} mask targets for {n_out} assistant-turn {MASK_TOKEN} tokens")
        size = proc.mask_target_size
        focus, focus_targets = self._focus(record)
        return Sample(
            focus=focus,
            focus_targets=focus_targets,
            id=record.id,
            task=record.task,
            encoded=encoded,
            pixel_values=proc.preprocess_images(images),
            mask_pixel_values=proc.preprocess_masks(
                [_read_mask(p) for p in input_files], proc.mask_input_size, "input mask").unsqueeze(1),
            mask_targets=proc.preprocess_masks([t if isinstance(t, np.ndarray) else _read_mask(t) for t in targets],
                                               size, "mask target"),
            cacheable=[True] + [not self._jitters(record)] * len(details),
        )

    def _jitters(self, record: Record) -> bool:
        """Whether this record's detail regions are re-read, shifted, at every sighting."""
        return bool(self.region_jitter) and bool(record.regions) and record.slide is not None

    def _opened_slide(self, record: Record) -> AbstractContextManager[Any]:
        """The record's slide, open, when a picture is read from it (its thumbnail or shifted regions); else None."""
        if record.slide is None or (record.image is not None and not self._jitters(record)):
            return nullcontext(None)
        from omnipath_lvlm.wsi.slide import open_slide

        return open_slide(record.slide)

    def _details(self, record: Record, slide: Any) -> tuple[list[Image.Image], list[list[float]]]:
        """The record's detail-region pictures and their relative boxes, shifted when ``region_jitter`` > 0.

        Unshifted: the exported crops and the record's boxes. Shifted (slide records only): every box
        moves by up to ``region_jitter`` of its width and height (uniform, from torch's generator, so
        a seeded loader repeats it), stays inside the slide, and is read from the slide at the
        processor's image size, as the WSI pipeline reads PGFC regions.
        """
        boxes = [[float(v) for v in d["box"]] for d in record.regions]
        if not self._jitters(record):
            return [_read_rgb(d["image"]) for d in record.regions], boxes
        from omnipath_lvlm.data.geometry import to_absolute
        from omnipath_lvlm.wsi.pgfc import read_regions

        shifts = (torch.rand(len(boxes), 2) * 2 - 1) * self.region_jitter  # (R, 2) in units of a side
        moved = []
        for (x1, y1, x2, y2), (sx, sy) in zip(boxes, shifts.tolist()):
            w, h = x2 - x1, y2 - y1
            nx, ny = min(max(x1 + sx * w, 0.0), 1.0 - w), min(max(y1 + sy * h, 0.0), 1.0 - h)
            moved.append([round(nx, 4), round(ny, 4), round(nx + w, 4), round(ny + h, 4)])
        level0 = to_absolute(moved, *slide.dimensions)  # (R, 4) level-0 x1, y1, x2, y2
        return read_regions(slide, level0.tolist(), self.processor.max_image_size), moved

    def _focus(self, record: Record) -> tuple[Encoded | None, torch.Tensor | None]:
        """PGFC's prompt for this record and its target tokens, when ``gt[focus_boxes]`` lists boxes.

        The prompt is the first question with the main image alone, as ``omnipath analyze`` scores
        it; the targets are the main image's token cells (image stretched to a square) that a box
        (relative x1, y1, x2, y2) touches.
        """
        boxes = record.gt.get(self.focus_boxes) if self.focus_boxes else None
        if not boxes:
            return None, None
        turn = record.conversations[0]  # the record's own first turn: no region placeholders yet
        first = turn["value"]
        if first.count(IMAGE_TOKEN) != 1 or MASK_TOKEN in first:
            return None, None
        g = self.processor.grid_size
        grid = torch.zeros(g, g, dtype=torch.bool)
        for box in boxes:
            x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in box)
            c1, r1 = min(int(x1 * g), g - 1), min(int(y1 * g), g - 1)
            c2, r2 = max(c1 + 1, math.ceil(x2 * g)), max(r1 + 1, math.ceil(y2 * g))
            grid[r1:r2, c1:c2] = True
        encoded = self.processor.encode_conversation([turn], image_pools=[1], add_generation_prompt=True)
        return encoded, grid.flatten()

    def _main_image(self, record: Record, slide: Any) -> Image.Image:
        """The record's image, or its slide's region or thumbnail (``slide``: the record's slide, open)."""
        if record.image is not None:
            return _read_rgb(record.image)
        if slide is None:
            raise ValueError(f"record {record.id!r} has neither an image nor an open slide to read")
        side = self.processor.max_image_size
        if record.region is not None:
            x, y, w, h = record.region
            return slide.read_region((x, y), (w, h), out_size=(side, side))
        return slide.thumbnail(side)

    def _conversation(self, record: Record, region_boxes: Sequence[Sequence[float]] | None = None
                      ) -> tuple[list[dict[str, str]], list[str], list[str | np.ndarray]]:
        """The conversation as the model sees it, the input-mask files and the output-mask targets.

        ``region_boxes`` (default: the record's) are the detail regions the first turn announces.
        """
        if region_boxes is None:
            region_boxes = [d["box"] for d in record.regions]
        mask_files = iter(record.masks)
        n_contours = sum(len(_CONTOUR_LIST.findall(t["value"])) for t in record.conversations if t["from"] == GPT)
        gt_mask = record.gt.get("mask") if isinstance(record.gt.get("mask"), str) and n_contours == 1 else None
        size = self.processor.mask_target_size
        inputs: list[str] = []
        targets: list[str | np.ndarray] = []
        turns: list[dict[str, str]] = []
        for i, turn in enumerate(record.conversations):
            text = turn["value"]
            if turn["from"] != GPT:
                inputs += [next(mask_files) for _ in range(text.count(MASK_TOKEN))]
            elif self.segmentation_output == "mask":
                # existing <mask> answers and <contour_list> answers both become output masks, in order
                pieces: list[str] = []
                for part in re.split(f"({_CONTOUR_LIST.pattern}|{re.escape(MASK_TOKEN)})", text, flags=re.DOTALL):
                    if part == MASK_TOKEN:
                        targets.append(next(mask_files))
                    elif part.startswith("<contour_list>") and part.endswith("</contour_list>"):
                        targets.append(gt_mask if gt_mask is not None else _rasterise(part, size))
                        part = MASK_TOKEN
                    pieces.append(part)
                text = "".join(pieces)
            else:
                pieces = text.split(MASK_TOKEN)
                text = pieces[0] + "".join(_polygon_text(next(mask_files)) + p for p in pieces[1:])
            if turn["from"] == GPT and self.closed_answers == "text" and record.answer_style == "closed":
                text = _option_text(text, record)
            if i == 0 and record.regions:
                head, _, rest = text.partition(IMAGE_TOKEN)
                details = "".join(f"\n{describe_region(box)} {IMAGE_TOKEN}" for box in region_boxes)
                text = head + IMAGE_TOKEN + details + rest
            turns.append({"from": turn["from"], "value": text})
        return turns, inputs, targets

    # ------------------------------------------------------------------ batches
    def collate(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Right-padded model inputs of ``samples`` plus ``tasks`` / ``ids`` / ``skipped`` bookkeeping.

        ``mask_targets`` (K_out, H, H) follow the output ``<mask>`` tokens in batch order (sample by
        sample, left to right), which is the order the model decodes them in.
        """
        if not samples:
            raise ValueError("cannot collate an empty batch")
        padded = pad_batch([s.encoded for s in samples], self.processor.tokenizer.pad_token_id, left=False)
        batch: dict[str, Any] = {
            "input_ids": padded["input_ids"],  # (B, L)
            "attention_mask": padded["attention_mask"],  # (B, L)
            "labels": padded["labels"],  # (B, L)
            "pixel_values": torch.cat([s.pixel_values for s in samples]),  # (N_img, 3, S, S)
            "image_pool": torch.tensor([p for s in samples for p in s.image_pools], dtype=torch.long),  # (N_img,)
        }
        if any(len(s.mask_pixel_values) for s in samples):
            batch["mask_pixel_values"] = torch.cat([s.mask_pixel_values for s in samples])  # (K_in, 1, h, h)
            batch["mask_input_positions"] = padded["mask_input_positions"]  # (B, L)
        if any(len(s.mask_targets) for s in samples):
            batch["mask_targets"] = torch.cat([s.mask_targets for s in samples])  # (K_out, H, H)
        focused = [i for i, s in enumerate(samples) if s.focus is not None]
        if focused:
            prompts = pad_batch([samples[i].focus for i in focused], self.processor.tokenizer.pad_token_id, left=True)
            batch["focus_input_ids"] = prompts["input_ids"]  # (B_f, L_f), left-padded
            batch["focus_attention_mask"] = prompts["attention_mask"]  # (B_f, L_f)
            batch["focus_samples"] = torch.tensor(focused, dtype=torch.long)  # (B_f,)
            batch["focus_targets"] = torch.stack([samples[i].focus_targets for i in focused])  # (B_f, G*G)
        batch["image_cacheable"] = torch.tensor(  # (N_img,)
            [c for s in samples for c in (s.cacheable or [True] * len(s.pixel_values))], dtype=torch.bool)
        batch["tasks"] = [s.task for s in samples]
        batch["ids"] = [s.id for s in samples]
        batch["skipped"] = [reason for s in samples for reason in s.skipped]
        return batch


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The model-forward keyword arguments of a collated batch (bookkeeping removed)."""
    return {k: v for k, v in batch.items() if k not in BOOKKEEPING_KEYS}


# ---------------------------------------------------------------------- helpers
def _mixture_index(sizes: Sequence[int], weights: Sequence[float], seed: int) -> list[tuple[int, int]]:
    """(file, record) pairs: each file repeated ``floor(w)`` times plus a seeded ``frac(w)`` share."""
    rng = random.Random(seed)
    index: list[tuple[int, int]] = []
    for f, (n, w) in enumerate(zip(sizes, weights)):
        whole, frac = int(w), w - int(w)
        chosen = list(range(n)) * whole + sorted(rng.sample(range(n), round(frac * n)))
        index += [(f, r) for r in chosen]
    return index


def _option_text(answer: str, record: Record) -> str:
    """A closed answer ``"C. <option>"`` (the record's letter and label) as the option text alone."""
    letter, label = record.gt.get("letter"), record.gt.get("label")
    if not letter or not label or answer.strip() != f"{letter}. {label}":
        raise ValueError(f"closed answer {answer!r} is not '<letter>. <label>' of its gt ({letter!r}, {label!r})")
    return str(label)


def _read_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decode now: a truncated file fails here, inside the skip handler
        return image.convert("RGB")


def _read_mask(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0  # (H, W) bool


def _rasterise(contour_text: str, size: int) -> np.ndarray:
    """A ``<contour_list>`` answer (relative polygons) drawn as a (size, size) mask."""
    from omnipath_lvlm.data.formats import parse_polygons
    from omnipath_lvlm.data.geometry import polygons_to_mask, to_absolute

    parsed = parse_polygons(contour_text)
    polygons = [to_absolute(np.asarray(p, dtype=np.float64), size, size) for p in parsed.items]
    return polygons_to_mask(polygons, (size, size))


def _polygon_text(mask_path: str) -> str:
    """The ``<contour_list>`` answer of a mask file (relative polygons)."""
    from omnipath_lvlm.data.formats import format_polygons
    from omnipath_lvlm.data.geometry import mask_to_polygons, to_relative

    mask = _read_mask(mask_path)
    height, width = mask.shape
    polygons = [to_relative(p, width, height) for p in mask_to_polygons(mask)]
    return format_polygons(np.clip(p, 0.0, 1.0).tolist() for p in polygons)
