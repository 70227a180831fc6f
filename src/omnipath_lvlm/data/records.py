"""Instruction records: one LLaVA-style conversation per JSONL line.

A :class:`Record` is the unit every converter, the synthetic-data generator, the
training dataset and the evaluator exchange. On disk a dataset is a JSONL file,
one JSON object per line::

    {"id": "monuseg-TCGA-18-5592-nucleus_detection",
     "image": "images/TCGA-18-5592.png",            # or "slide" (+ "region")
     "conversations": [{"from": "human", "value": "<image>\\nLocate every nucleus ..."},
                       {"from": "gpt", "value": "<bbox_list><bbox>0.120, ...</bbox></bbox_list>"}],
     "task": "nucleus_detection", "answer_style": "boxes",
     "gt": {"boxes": [[0.12, 0.34, 0.56, 0.78]]}, "image_size": [1000, 1000], "source": "monuseg"}

Contract of a record (checked by :meth:`Record.validate`, which runs on construction):

* exactly one of ``image`` (a patch file) or ``slide`` (a whole-slide file) is set;
  ``region`` ([x, y, w, h], level-0 pixels) only accompanies ``slide``;
* ``regions`` are high-resolution detail crops (prompt-guided detail completion
  training): ``{"image": path, "box": [x1, y1, x2, y2]}`` with the box relative
  (0..1) to the full image or slide;
* ``conversations`` alternate human / gpt turns, start with a human turn and end
  with a gpt turn; ``<image>`` appears exactly once, at the very start of the
  first human turn;
* ``masks`` holds one mask file per ``<mask>`` token of the conversation, in the
  order the tokens appear;
* ``answer_style`` is one of :data:`ANSWER_STYLES`; closed-ended records carry
  their ``options`` in the order shown in the question.

Paths: in memory paths are whatever the producer gave (converters give absolute
paths). :func:`write_jsonl` stores paths below the JSONL file's folder relative to
it, so a dataset folder can be moved as a whole; :func:`read_jsonl` resolves
relative paths against the JSONL file's folder and returns absolute paths.

:func:`make_record` builds the conversation of one sample from a task of the
registry in :mod:`omnipath_lvlm.data.tasks`: a prompt sampled from the task's
prompt list, lettered options for closed-ended questions, and the answer text in
the paper's formats (:mod:`omnipath_lvlm.data.formats`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omnipath_lvlm.fileio import atomic_open

IMAGE_TOKEN = "<image>"
MASK_TOKEN = "<mask>"
HUMAN = "human"
GPT = "gpt"
ANSWER_STYLES = ("open", "closed", "yes_no", "boxes", "polygons", "detections", "mask")
YES, NO = "yes", "no"


@dataclass
class Record:
    """One instruction-following sample (see the module docstring for the contract)."""

    id: str
    conversations: list[dict[str, str]]
    task: str
    answer_style: str
    image: str | None = None
    slide: str | None = None
    region: list[int] | None = None
    regions: list[dict[str, Any]] = field(default_factory=list)
    organ: str | None = None
    options: list[str] = field(default_factory=list)
    gt: dict[str, Any] = field(default_factory=dict)
    masks: list[str] = field(default_factory=list)
    image_size: list[int] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ValueError naming the first broken part of the record contract."""
        where = f"record {self.id!r}"
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"record id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"{where}: task must be a non-empty string, got {self.task!r}")
        if self.answer_style not in ANSWER_STYLES:
            raise ValueError(f"{where}: answer_style {self.answer_style!r} is not one of {ANSWER_STYLES}")
        if (self.image is None) == (self.slide is None):
            raise ValueError(f"{where}: exactly one of 'image' and 'slide' must be set "
                             f"(image={self.image!r}, slide={self.slide!r})")
        for name in ("image", "slide"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{where}: {name} must be a non-empty path string, got {value!r}")
        if self.region is not None:
            if self.slide is None:
                raise ValueError(f"{where}: 'region' is only meaningful with 'slide'")
            if (not _is_number_list(self.region, 4) or self.region[2] <= 0 or self.region[3] <= 0):
                raise ValueError(f"{where}: region must be [x, y, w, h] with w, h > 0, got {self.region!r}")
        for i, detail in enumerate(self.regions):
            if not isinstance(detail, Mapping) or set(detail) != {"image", "box"}:
                raise ValueError(f"{where}: regions[{i}] must be {{'image': path, 'box': [x1, y1, x2, y2]}}, "
                                 f"got {detail!r}")
            if not isinstance(detail["image"], str) or not detail["image"]:
                raise ValueError(f"{where}: regions[{i}].image must be a path string, got {detail['image']!r}")
            _check_relative_box(detail["box"], f"{where}: regions[{i}].box")
        if self.image_size is not None:
            if (not _is_number_list(self.image_size, 2)
                    or any(int(v) != v or v <= 0 for v in self.image_size)):
                raise ValueError(f"{where}: image_size must be [width, height] positive integers, "
                                 f"got {self.image_size!r}")
        if self.organ is not None and not isinstance(self.organ, str):
            raise ValueError(f"{where}: organ must be a string or None, got {self.organ!r}")
        if not isinstance(self.gt, dict):
            raise ValueError(f"{where}: gt must be a dict, got {type(self.gt).__name__}")
        if not isinstance(self.options, list) or not all(isinstance(o, str) for o in self.options):
            raise ValueError(f"{where}: options must be a list of strings, got {self.options!r}")
        if self.answer_style == "closed" and len(self.options) < 2:
            raise ValueError(f"{where}: a closed-ended record needs at least 2 options, got {self.options!r}")
        self._validate_conversations(where)
        n_mask_tokens = sum(turn["value"].count(MASK_TOKEN) for turn in self.conversations)
        if not isinstance(self.masks, list) or not all(isinstance(m, str) and m for m in self.masks):
            raise ValueError(f"{where}: masks must be a list of path strings, got {self.masks!r}")
        if n_mask_tokens != len(self.masks):
            raise ValueError(f"{where}: the conversation has {n_mask_tokens} {MASK_TOKEN} tokens "
                             f"but {len(self.masks)} mask files are given")

    def _validate_conversations(self, where: str) -> None:
        turns = self.conversations
        if not isinstance(turns, list) or len(turns) < 2:
            raise ValueError(f"{where}: conversations must hold at least one human and one gpt turn")
        for i, turn in enumerate(turns):
            if not isinstance(turn, Mapping) or set(turn) != {"from", "value"}:
                raise ValueError(f"{where}: conversations[{i}] must be {{'from': ..., 'value': ...}}, got {turn!r}")
            expected = HUMAN if i % 2 == 0 else GPT
            if turn["from"] != expected:
                raise ValueError(f"{where}: conversations[{i}] is from {turn['from']!r}, expected {expected!r} "
                                 "(turns alternate human/gpt starting with human)")
            if not isinstance(turn["value"], str):
                raise ValueError(f"{where}: conversations[{i}].value must be a string")
        if turns[-1]["from"] != GPT:
            raise ValueError(f"{where}: the last turn must be a gpt answer")
        n_image = sum(turn["value"].count(IMAGE_TOKEN) for turn in turns)
        if n_image != 1 or not turns[0]["value"].startswith(IMAGE_TOKEN):
            raise ValueError(f"{where}: {IMAGE_TOKEN} must appear exactly once, at the start of the first "
                             f"human turn (found {n_image})")

    # ------------------------------------------------------------ conversions
    @property
    def question(self) -> str:
        """The first human turn without the image token."""
        return self.conversations[0]["value"].removeprefix(IMAGE_TOKEN).lstrip("\n")

    @property
    def answer(self) -> str:
        """The first gpt turn."""
        return self.conversations[1]["value"]

    def paths(self) -> list[str]:
        """Every file the record refers to (image or slide, detail crops, masks, gt mask)."""
        out = [p for p in (self.image, self.slide) if p is not None]
        out += [d["image"] for d in self.regions]
        out += list(self.masks)
        if isinstance(self.gt.get("mask"), str):
            out.append(self.gt["mask"])
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; optional fields that are None or empty are left out."""
        required = {"id", "conversations", "task", "answer_style"}
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in required or value not in (None, [], {}, ""):
                out[f.name] = copy.deepcopy(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        """Build and validate a record; ValueError names unknown or missing keys."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a record must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown record keys {unknown} (known: {sorted(known)})")
        missing = sorted(k for k in ("id", "conversations", "task", "answer_style") if k not in data)
        if missing:
            raise ValueError(f"record is missing required keys {missing}")
        return cls(**dict(data))

    def map_paths(self, fn: Callable[[str], str]) -> Record:
        """A copy of the record with every path passed through ``fn(str) -> str``."""
        data = self.to_dict()
        for key in ("image", "slide"):
            if data.get(key) is not None:
                data[key] = fn(data[key])
        if "regions" in data:
            data["regions"] = [{"image": fn(d["image"]), "box": list(d["box"])} for d in data["regions"]]
        if "masks" in data:
            data["masks"] = [fn(m) for m in data["masks"]]
        if isinstance(data.get("gt", {}).get("mask"), str):
            data["gt"] = {**data["gt"], "mask": fn(data["gt"]["mask"])}
        return Record.from_dict(data)


# ---------------------------------------------------------------------- JSONL
def write_jsonl(records: Iterable[Record], path: str | os.PathLike[str]) -> Path:
    """Write records atomically (temp file in the same folder, then rename).

    Raises ValueError (leaving any existing file untouched) when two records
    share an id.

    Paths inside the JSONL file's folder are stored relative to it (POSIX
    separators); other paths are stored absolute.
    """
    target = Path(path).resolve()
    base = target.parent

    def relativise(p: str) -> str:
        absolute = Path(p) if Path(p).is_absolute() else Path(p).resolve()
        try:
            return absolute.relative_to(base).as_posix()
        except ValueError:
            return str(absolute)

    seen: set[str] = set()
    with atomic_open(target) as fh:
        for record in records:
            if record.id in seen:
                raise ValueError(f"two records share the id {record.id!r}; ids must be unique in a dataset")
            seen.add(record.id)
            line = json.dumps(record.map_paths(relativise).to_dict(), ensure_ascii=False)
            fh.write(line + "\n")
    return target


def read_jsonl(path: str | os.PathLike[str], check_files: bool = True) -> tuple[list[Record], list[str]]:
    """Read a JSONL dataset, skipping bad lines instead of raising.

    Returns ``(records, problems)``; every problem reads ``"line N: reason"``.
    A line is skipped when it is not valid JSON (e.g. truncated), breaks the
    record contract, repeats an earlier id, or (with ``check_files``) names an
    image, slide, detail crop or mask file that does not exist. Relative paths
    are resolved against the JSONL file's folder. Raises only when the file
    itself cannot be opened.
    """
    source = Path(path)
    base = source.resolve().parent
    records: list[Record] = []
    problems: list[str] = []
    seen: set[str] = set()

    def resolve(p: str) -> str:
        return str(Path(p)) if Path(p).is_absolute() else os.path.normpath(base / p)

    with source.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"line {number}: not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: invalid or truncated JSON ({exc.msg} at column {exc.colno})")
                continue
            try:
                record = Record.from_dict(data).map_paths(resolve)
            except (ValueError, TypeError) as exc:
                problems.append(f"line {number}: {exc}")
                continue
            if record.id in seen:
                problems.append(f"line {number}: duplicate record id {record.id!r}")
                continue
            if check_files:
                missing = [p for p in record.paths() if not Path(p).exists()]
                if missing:
                    problems.append(f"line {number}: record {record.id!r} refers to missing file(s) {missing}")
                    continue
            seen.add(record.id)
            records.append(record)
    return records, problems


# ------------------------------------------------------------------ summary
@dataclass(frozen=True)
class DatasetSummary:
    """Counts of a record set and the distribution of conversation lengths."""

    total: int
    by_task: dict[str, int]
    by_organ: dict[str, int]
    by_style: dict[str, int]
    by_source: dict[str, int]
    lengths: dict[str, float]  # min, median, p95, max (empty when there are no records)


def summarize(records: Sequence[Record], length: Callable[[str], int]) -> DatasetSummary:
    """Samples per task, organ (``"(none)"`` when unknown), answer style and source, plus the
    min / median / 95th percentile / max of ``length(text)`` over each record's whole
    conversation (turn texts joined by newlines)."""
    import numpy as np

    def count(values: Iterable[str]) -> dict[str, int]:
        return dict(Counter(values).most_common())

    sizes = np.array([length("\n".join(t["value"] for t in r.conversations)) for r in records], dtype=float)
    lengths = {} if not len(sizes) else {
        "min": float(sizes.min()), "median": float(np.median(sizes)),
        "p95": float(np.percentile(sizes, 95)), "max": float(sizes.max()),
    }
    return DatasetSummary(
        total=len(records),
        by_task=count(r.task for r in records),
        by_organ=count(r.organ or "(none)" for r in records),
        by_style=count(r.answer_style for r in records),
        by_source=count(r.source or "(none)" for r in records),
        lengths=lengths,
    )


# ------------------------------------------------------------- record builder
def make_record(
    task_name: str,
    image: str | os.PathLike[str] | None,
    answer: Any,
    rng: random.Random,
    style: str | None = None,
    gt: Mapping[str, Any] | None = None,
    **fields_: Any,
) -> Record:
    """Build one sample of ``task_name`` with a prompt sampled from the task.

    ``answer`` depends on ``style`` (default: the task's first style):

    * ``"open"``: the label text, answered as is;
    * ``"closed"``: the label, which must be one of ``options=`` (default: the
      task's classes); the options are appended to the prompt in a shuffled
      lettered order and the answer reads ``"LETTER. label"``;
    * ``"yes_no"``: a bool or ``"yes"``/``"no"``;
    * ``"boxes"``: relative boxes ``[[x1, y1, x2, y2], ...]``;
    * ``"polygons"``: relative polygons ``[[[x, y], ...], ...]``;
    * ``"detections"``: ``{class name: relative boxes}``;
    * ``"mask"``: the path of the ground-truth mask PNG (answer text ``<mask>``).

    ``gt`` is completed with what evaluation needs (label/letter/boxes/...).
    Other keyword arguments are :class:`Record` fields (``slide``, ``region``,
    ``organ``, ``image_size``, ``source``, ``id``, ``regions``...). Without an
    ``id`` a deterministic one is derived from the inputs.
    """
    from omnipath_lvlm.data import formats
    from omnipath_lvlm.data.tasks import closed_question, get_task, sample_prompt

    task = get_task(task_name)
    style = style or task.styles[0]
    if style not in task.styles:
        raise ValueError(f"task {task.name!r} has answer styles {task.styles}, not {style!r}")
    prompt = sample_prompt(task, rng, style=style)
    gt_out: dict[str, Any] = dict(gt or {})
    options: list[str] = list(fields_.pop("options", None) or [])
    masks: list[str] = list(fields_.pop("masks", None) or [])

    if style == "open":
        label = _label_text(answer, task.name)
        question, answer_text = prompt, label
        gt_out.setdefault("label", label)
    elif style == "closed":
        label = _label_text(answer, task.name)
        choices = options or list(task.classes)
        if label not in choices:
            raise ValueError(f"closed-ended answer {label!r} is not one of the options {choices}")
        question, letter = closed_question(prompt, choices, rng, answer=label)
        options = _shown_options(question, choices)
        answer_text = f"{letter}. {label}"
        gt_out.setdefault("label", label)
        gt_out.setdefault("letter", letter)
    elif style == "yes_no":
        label = _yes_no(answer)
        question, answer_text = prompt, label.capitalize()
        gt_out.setdefault("label", label)
    elif style == "boxes":
        question, answer_text = prompt, formats.format_boxes(answer)
        gt_out.setdefault("boxes", _rounded(answer))
    elif style == "polygons":
        question, answer_text = prompt, formats.format_polygons(answer)
        gt_out.setdefault("polygons", _rounded(answer))
    elif style == "detections":
        question, answer_text = prompt, formats.format_detections(answer)
        gt_out.setdefault("detections", {str(k): _rounded(v) for k, v in answer.items()})
    else:  # "mask"
        mask_path = str(answer)
        question, answer_text = prompt, MASK_TOKEN
        masks.append(mask_path)
        gt_out.setdefault("mask", mask_path)

    image_str = None if image is None else str(image)
    record_id = fields_.pop("id", None) or _derived_id(task.name, style, image_str, fields_, answer_text)
    conversations = [
        {"from": HUMAN, "value": f"{IMAGE_TOKEN}\n{question}"},
        {"from": GPT, "value": answer_text},
    ]
    return Record(id=record_id, conversations=conversations, task=task.name, answer_style=style,
                  image=image_str, options=options if style == "closed" else [], gt=gt_out, masks=masks,
                  **fields_)


# ------------------------------------------------------------------- helpers
def _is_number_list(value: Any, length: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in value))


def _check_relative_box(box: Any, what: str) -> None:
    if not _is_number_list(box, 4):
        raise ValueError(f"{what} must be 4 numbers [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = box
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        raise ValueError(f"{what} must be relative with 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, got {box!r}")


def _label_text(answer: Any, task_name: str) -> str:
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"task {task_name!r} needs a non-empty label string as answer, got {answer!r}")
    return answer.strip()


def _yes_no(answer: Any) -> str:
    if isinstance(answer, bool):
        return YES if answer else NO
    if isinstance(answer, str) and answer.strip().lower() in (YES, NO):
        return answer.strip().lower()
    raise ValueError(f"a yes/no answer must be a bool or 'yes'/'no', got {answer!r}")


def _letter_index(letter: str) -> int:
    return ord(letter.upper()) - ord("A")


def _shown_options(question: str, choices: Sequence[str]) -> list[str]:
    """The options in the order the closed question lists them ("A. text" lines)."""
    shown: dict[int, str] = {}
    wanted = set(choices)
    for line in question.splitlines():
        head, sep, text = line.strip().partition(". ")
        if sep and len(head) == 1 and head.isalpha() and text.strip() in wanted:
            shown[_letter_index(head)] = text.strip()
    ordered = [shown[i] for i in sorted(shown)]
    if sorted(ordered) != sorted(choices) or sorted(shown) != list(range(len(choices))):
        raise ValueError(f"the closed question does not list the options {list(choices)} as lettered lines")
    return ordered


def _rounded(value: Any) -> Any:
    """Nested lists of floats rounded to the 3 decimals the answer text carries."""
    if isinstance(value, (int, float)):
        return round(float(value), 3)
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [_rounded(v) for v in value]


def _derived_id(task: str, style: str, image: str | None, extra: Mapping[str, Any], answer_text: str) -> str:
    key = json.dumps([task, style, image, extra.get("slide"), extra.get("region"), answer_text],
                     sort_keys=True, default=str)
    stem = Path(image or extra.get("slide") or "sample").stem
    return f"{stem}-{task}-{style}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
