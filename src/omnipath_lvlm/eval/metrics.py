"""Scoring OmniPath answers against ground truth, per sample and per task.

The model answers in text, so every metric starts from the tolerant parsers of
:mod:`omnipath_lvlm.data.formats` (which never raise) and counts what could not
be read instead of dropping it:

* **closed-ended** questions (`score_closed`): the answer must name exactly one
  option (by letter or by text). An answer naming two options or none is
  *wrong* and counted as *unreadable*; it is never dropped and never guessed.
* **yes/no** questions (`score_yes_no`): same rule, "yes and no" or neither is
  wrong and unreadable.
* **open-ended** answers (`score_open`): SQuAD-style exact match after
  `normalize_answer`, token recall and token F1 over the normalised tokens.
  When either side has no tokens, recall and F1 are 1.0 if both are empty,
  else 0.0 (the SQuAD rule).
* **detection** (`match_boxes`, `match_centroids`, `match_detections`): boxes
  are relative ``(x1, y1, x2, y2)`` in 0..1. Predictions and ground truth are
  paired one-to-one with the Hungarian algorithm
  (`scipy.optimize.linear_sum_assignment`); a pair counts only when its IoU is
  at least the threshold (or, for nuclei, its centroid distance is within a
  pixel radius: 6 px at 20x, 12 px at 40x, as HoVer-Net scores nuclei). Among
  the admissible pairs the assignment first maximises the *number* of matches,
  then their total IoU (resp. closeness). Unmatched predictions are false
  positives, unmatched ground truth false negatives. IoU does not change under
  the per-axis scaling from relative to pixel coordinates, so IoU is computed
  on relative boxes; centroid distances need the image size in pixels.
  A dataset's F1 sums TP/FP/FN over all its images (the paper's F1 column),
  and its IoU is the mean IoU of all matched pairs (the paper's IoU column).
  Class-aware detection (``<detection_result>``) matches within each class
  (class names compared case- and space-insensitively) and micro-averages.
  When a dataset has no boxes at all on either side, precision, recall and F1
  are 1.0 (nothing was missed, nothing invented); the mean IoU is None when no
  pair was matched.
* **segmentation** (`dice_score`): Dice of two binary masks, either the mask
  decoder's output or polygons rasterised at the image size
  (`rasterize_polygons`). Empty prediction and empty truth score 1.0; empty
  versus non-empty scores 0.0. A dataset's Dice is the mean of the per-sample
  Dice values.

`TaskScores` accumulates samples per task (optionally per level, dataset/organ
group and ablation variant) and returns JSON-ready summaries with ``accuracy``,
``f1``, ``iou``, ``dice``, ``n`` and ``parse_failures`` (None where a metric
does not apply). A prediction runner can instead hand it plain dict rows
through `TaskScores.add_row` / `score_rows`; the row layout is documented on
`TaskScores.add_row`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from omnipath_lvlm.data import formats, geometry

# Answer styles a task can be scored in (the same names as `Task.styles`).
CLASSIFICATION_KINDS = ("closed", "yes_no", "open")
DETECTION_KINDS = ("boxes", "detections")
SEGMENTATION_KINDS = ("polygons", "mask")
KINDS = CLASSIFICATION_KINDS + DETECTION_KINDS + SEGMENTATION_KINDS

# Nucleus centroid match radius in pixels at 20x (HoVer-Net's convention); it
# scales with magnification (12 px at 40x), i.e. about 3 micrometres.
NUCLEUS_RADIUS_PX_AT_20X = 6.0


# --------------------------------------------------------------------------- #
# Classification: closed-ended, yes/no, open-ended
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class SampleScore:
    """One classification answer: right or wrong, and whether it was readable."""

    correct: bool
    unreadable: bool
    detail: str = ""
    predicted: int | str | None = None  # option index, "yes"/"no", or None when unreadable


def score_closed(answer_text: str, options: Sequence[str], correct_index: int) -> SampleScore:
    """Score a closed-ended answer against the index of the correct option.

    An answer that names two different options, or none, is wrong and unreadable.
    """
    if not options:
        raise ValueError("a closed-ended question needs at least one option, got none")
    if not 0 <= correct_index < len(options):
        raise ValueError(f"correct_index {correct_index} is outside the {len(options)} options")
    match = formats.match_option(answer_text, options)
    if match.index is None:
        return SampleScore(correct=False, unreadable=True, detail=match.problem or "no option recognised")
    return SampleScore(correct=match.index == correct_index, unreadable=False, predicted=match.index)


def _yes_no_truth(truth: str | bool) -> str:
    if isinstance(truth, bool):
        return "yes" if truth else "no"
    value = truth.strip().lower()
    if value not in ("yes", "no"):
        raise ValueError(f"a yes/no ground truth must be 'yes' or 'no', got {truth!r}")
    return value


def score_yes_no(answer_text: str, truth: str | bool) -> SampleScore:
    """Score a yes/no answer; an answer saying both or neither is wrong and unreadable."""
    expected = _yes_no_truth(truth)
    parsed = formats.parse_yes_no(answer_text)
    if parsed.items is None:
        detail = "; ".join(parsed.problems) or "no yes/no answer recognised"
        return SampleScore(correct=False, unreadable=True, detail=detail)
    return SampleScore(correct=parsed.items == expected, unreadable=False, predicted=parsed.items)


def answer_tokens(text: str) -> list[str]:
    """Tokens of an open-ended answer after `formats.normalize_answer`."""
    return formats.normalize_answer(text).split()


def exact_match(prediction: str, reference: str) -> bool:
    """True when both answers are equal after normalisation."""
    return answer_tokens(prediction) == answer_tokens(reference)


def _overlap(pred_tokens: list[str], ref_tokens: list[str]) -> int:
    common = Counter(pred_tokens) & Counter(ref_tokens)
    return sum(common.values())


def token_recall(prediction: str, reference: str) -> float:
    """Share of the reference tokens (with multiplicity) found in the prediction."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    return _overlap(pred, ref) / len(ref)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between a prediction and a reference answer."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    same = _overlap(pred, ref)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class OpenScore:
    """One open-ended answer: exact match, token recall and token F1."""

    exact: bool
    recall: float
    f1: float
    empty: bool  # the answer had no tokens after normalisation (counted as a parse failure)


def score_open(answer_text: str, reference: str) -> OpenScore:
    """Score an open-ended answer against its reference text."""
    return OpenScore(
        exact=exact_match(answer_text, reference),
        recall=token_recall(answer_text, reference),
        f1=token_f1(answer_text, reference),
        empty=not answer_tokens(answer_text),
    )


def macro_f1(truth: Sequence[int | str], predicted: Sequence[int | str | None]) -> float:
    """Macro F1 over the classes seen in the truth or in readable predictions.

    An unreadable prediction (None) is a miss for its true class and a false
    alarm for no class.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    classes = {*truth, *(p for p in predicted if p is not None)}
    if not classes:
        return 1.0
    scores = []
    for label in classes:
        tp = sum(t == label and p == label for t, p in zip(truth, predicted))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


# --------------------------------------------------------------------------- #
# Detection
# --------------------------------------------------------------------------- #


def as_boxes(boxes: Any, what: str = "boxes") -> np.ndarray:
    """Boxes as a float array of shape (N, 4); ValueError naming `what` otherwise."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4) as x1, y1, x2, y2; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite coordinates")
    return array


def box_iou(a: Any, b: Any) -> np.ndarray:
    """Pairwise IoU of boxes (N, 4) and (M, 4) -> (N, M); zero-area pairs score 0."""
    return geometry.box_iou(as_boxes(a, "first boxes"), as_boxes(b, "second boxes"))


def best_iou(pred: Any, gt: Any) -> np.ndarray:
    """For each predicted box (N, 4), its highest IoU with any true box (M, 4) -> (N,); 0 where M == 0.

    A looser reading than F1 at IoU 0.5: ``best_iou(p, g) > 0`` says which predictions touch a
    true object at all (used to ask whether an undertrained model's boxes land on the objects).
    """
    pred, gt = as_boxes(pred, "predicted boxes"), as_boxes(gt, "true boxes")
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros(len(pred), dtype=np.float64)
    return box_iou(pred, gt).max(axis=1)


@dataclass(frozen=True, eq=False)
class BoxMatch:
    """One image's one-to-one pairing of predicted and ground-truth boxes."""

    pairs: tuple[tuple[int, int], ...]  # (pred index, gt index)
    ious: np.ndarray  # (K,) IoU of each matched pair
    n_pred: int
    n_gt: int

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return self.n_pred - len(self.pairs)

    @property
    def fn(self) -> int:
        return self.n_gt - len(self.pairs)


def _assign(score: np.ndarray, admissible: np.ndarray) -> list[tuple[int, int]]:
    """Maximum-cardinality assignment over admissible pairs, ties broken by total score.

    score: (N, M) in [0, 1]; admissible: (N, M) bool. Each admissible pair weighs
    `bonus + score` with bonus larger than any possible total score, so one more
    match always beats any gain in score.
    """
    if score.size == 0 or not admissible.any():
        return []
    bonus = float(min(score.shape) + 1)
    weight = np.where(admissible, bonus + score, 0.0)  # (N, M)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if admissible[r, c]]


def _box_match(pairs: list[tuple[int, int]], iou: np.ndarray, n_pred: int, n_gt: int) -> BoxMatch:
    ious = np.array([iou[p, g] for p, g in pairs], dtype=np.float64)  # (K,)
    return BoxMatch(pairs=tuple(sorted(pairs)), ious=ious, n_pred=n_pred, n_gt=n_gt)


def match_boxes(pred: Any, gt: Any, iou_threshold: float = 0.5) -> BoxMatch:
    """Pair predicted (N, 4) and ground-truth (M, 4) boxes one-to-one at IoU >= threshold."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    pred, gt = as_boxes(pred, "predicted boxes"), as_boxes(gt, "ground-truth boxes")
    iou = box_iou(pred, gt)  # (N, M)
    return _box_match(_assign(iou, iou >= iou_threshold), iou, len(pred), len(gt))


def nucleus_radius_px(magnification: float) -> float:
    """Centroid match radius for nuclei: 6 px at 20x, 12 px at 40x (linear in magnification)."""
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    return NUCLEUS_RADIUS_PX_AT_20X * magnification / 20.0


def _image_wh(image_size: Sequence[int] | None, what: str) -> tuple[int, int]:
    if image_size is None or len(image_size) != 2:
        raise ValueError(f"{what} needs image_size as (width, height) in pixels, got {image_size!r}")
    width, height = int(image_size[0]), int(image_size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"{what} needs a positive image size, got {width}x{height}")
    return width, height


def box_centroids(boxes: Any, image_size: Sequence[int]) -> np.ndarray:
    """Centres of relative boxes (N, 4) in pixels -> (N, 2) as x, y."""
    width, height = _image_wh(image_size, "box_centroids")
    boxes = as_boxes(boxes)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0  # (N, 2) relative
    return centre * np.array([width, height], dtype=np.float64)


def match_centroids(pred: Any, gt: Any, image_size: Sequence[int], radius_px: float) -> BoxMatch:
    """Pair boxes one-to-one by centroid distance <= radius_px (pixels at image_size).

    The matched pairs still report their box IoU, for the IoU column.
    """
    if radius_px <= 0:
        raise ValueError(f"radius_px must be positive, got {radius_px}")
    pred, gt = as_boxes(pred, "predicted boxes"), as_boxes(gt, "ground-truth boxes")
    c_pred, c_gt = box_centroids(pred, image_size), box_centroids(gt, image_size)  # (N, 2), (M, 2)
    distance = np.linalg.norm(c_pred[:, None, :] - c_gt[None, :, :], axis=-1)  # (N, M)
    closeness = np.clip(1.0 - distance / radius_px, 0.0, 1.0)  # (N, M)
    pairs = _assign(closeness, distance <= radius_px)
    return _box_match(pairs, box_iou(pred, gt), len(pred), len(gt))


@dataclass(frozen=True)
class MatchRule:
    """How predicted boxes are paired with ground truth: by IoU or by nucleus centroid."""

    method: Literal["iou", "centroid"] = "iou"
    iou_threshold: float = 0.5
    radius_px: float = NUCLEUS_RADIUS_PX_AT_20X  # centroid method only, pixels at the image size

    def __post_init__(self) -> None:
        if self.method not in ("iou", "centroid"):
            raise ValueError(f"match method must be 'iou' or 'centroid', got {self.method!r}")

    def match(self, pred: Any, gt: Any, image_size: Sequence[int] | None = None) -> BoxMatch:
        """Pair one image's boxes; the centroid rule needs image_size (width, height)."""
        if self.method == "iou":
            return match_boxes(pred, gt, self.iou_threshold)
        return match_centroids(pred, gt, _image_wh(image_size, "centroid matching"), self.radius_px)


def canonical_class(name: str) -> str:
    """Class name used for class-aware matching: lower case, single spaces."""
    return " ".join(name.lower().split())


def _group_by_class(detections: Mapping[str, Any], what: str) -> dict[str, np.ndarray]:
    grouped: dict[str, list[np.ndarray]] = {}
    for name, boxes in detections.items():
        grouped.setdefault(canonical_class(name), []).append(as_boxes(boxes, f"{what} of class {name!r}"))
    return {name: np.concatenate(parts, axis=0) for name, parts in grouped.items()}


def match_detections(
    pred: Mapping[str, Any],
    gt: Mapping[str, Any],
    rule: MatchRule | None = None,
    image_size: Sequence[int] | None = None,
) -> dict[str, BoxMatch]:
    """Class-aware matching: boxes pair only within the same class; one BoxMatch per class."""
    rule = rule or MatchRule()
    pred_by_class = _group_by_class(pred, "predicted boxes")
    gt_by_class = _group_by_class(gt, "ground-truth boxes")
    empty = np.zeros((0, 4))
    return {
        name: rule.match(pred_by_class.get(name, empty), gt_by_class.get(name, empty), image_size)
        for name in sorted(pred_by_class.keys() | gt_by_class.keys())
    }


@dataclass
class DetectionTally:
    """Detection counts summed over a dataset: F1 from summed TP/FP/FN, mean IoU of matches."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def add(self, match: BoxMatch) -> None:
        self.tp += match.tp
        self.fp += match.fp
        self.fn += match.fn
        self.iou_sum += float(match.ious.sum())

    @property
    def precision(self) -> float:
        if self.tp + self.fp == 0:
            return 1.0 if self.fn == 0 else 0.0
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        if self.tp + self.fn == 0:
            return 1.0 if self.fp == 0 else 0.0
        return self.tp / (self.tp + self.fn)

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else 2 * self.tp / denominator

    @property
    def mean_iou(self) -> float | None:
        return self.iou_sum / self.tp if self.tp else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "f1": self.f1,
            "precision": self.precision,
            "recall": self.recall,
            "iou": self.mean_iou,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


# --------------------------------------------------------------------------- #
# Segmentation
# --------------------------------------------------------------------------- #


def rasterize_polygons(polygons: Iterable[Any], image_size: Sequence[int]) -> np.ndarray:
    """Fill relative polygons (each (K, 2) x, y in 0..1) into a bool mask (height, width).

    Uses the pixel convention of `omnipath_lvlm.data.geometry`: vertices scaled
    to pixel edges (x * width, y * height), a pixel is filled when its centre
    lies inside a polygon. Polygons with fewer than 3 vertices fill nothing.
    """
    width, height = _image_wh(image_size, "rasterize_polygons")
    absolute = []
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64)
        if points.size == 0:
            continue
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"a polygon must have shape (K, 2) as x, y; got shape {points.shape}")
        if len(points) >= 3:
            absolute.append(geometry.to_absolute(points, width, height))  # (K, 2) pixel edges
    return geometry.polygons_to_mask(absolute, (height, width))


def dice_score(pred_mask: Any, gt_mask: Any) -> float:
    """Dice of two binary masks of the same shape: 2|P∩G| / (|P| + |G|); both empty -> 1.0."""
    pred, gt = np.asarray(pred_mask).astype(bool), np.asarray(gt_mask).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"predicted mask shape {pred.shape} differs from ground-truth mask shape {gt.shape}")
    return geometry.dice(pred, gt)


# --------------------------------------------------------------------------- #
# Aggregation per task
# --------------------------------------------------------------------------- #


def task_key(task: str, *, level: str | None = None, group: str | None = None, variant: str | None = None) -> str:
    """Unique key of a scored task: ``level/task[group]@variant`` with absent parts left out."""
    key = f"{level}/{task}" if level else task
    if group:
        key += f"[{group}]"
    if variant:
        key += f"@{variant}"
    return key


@dataclass
class _TaskRecord:
    """Everything accumulated for one task key."""

    task: str
    kind: str
    level: str | None
    group: str | None
    variant: str | None
    n: int = 0
    parse_failures: int = 0
    correct: int = 0
    truth: list[Any] = field(default_factory=list)
    predicted: list[Any] = field(default_factory=list)
    recall_sum: float = 0.0
    f1_sum: float = 0.0
    detection: DetectionTally = field(default_factory=DetectionTally)
    per_class: dict[str, DetectionTally] = field(default_factory=dict)
    dice: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "kind": self.kind,
            "level": self.level,
            "group": self.group,
            "variant": self.variant,
            "n": self.n,
            "parse_failures": self.parse_failures,
            "accuracy": None,
            "f1": None,
            "iou": None,
            "dice": None,
        }
        if self.kind in CLASSIFICATION_KINDS:
            out["accuracy"] = self.correct / self.n if self.n else None
        if self.kind == "closed":
            out["macro_f1"] = macro_f1(self.truth, self.predicted) if self.n else None
        if self.kind == "open":
            out["exact_match"] = out["accuracy"]
            out["token_recall"] = self.recall_sum / self.n if self.n else None
            out["token_f1"] = self.f1_sum / self.n if self.n else None
        if self.kind in DETECTION_KINDS:
            out.update(self.detection.as_dict())
        if self.kind == "detections":
            out["per_class"] = {name: tally.as_dict() for name, tally in sorted(self.per_class.items())}
        if self.kind in SEGMENTATION_KINDS:
            out["dice"] = float(np.mean(self.dice)) if self.dice else None
        return out


class TaskScores:
    """Accumulates per-sample scores per task and summarises them.

    Each ``add_*`` method scores one sample, files it under
    ``task_key(task, level=, group=, variant=)`` and returns the sample's score.
    A key holds one answer kind only (one of `KINDS`).
    """

    def __init__(self) -> None:
        self._records: dict[str, _TaskRecord] = {}

    def _record(self, task: str, kind: str, level: str | None, group: str | None, variant: str | None) -> _TaskRecord:
        key = task_key(task, level=level, group=group, variant=variant)
        record = self._records.get(key)
        if record is None:
            record = _TaskRecord(task=task, kind=kind, level=level, group=group, variant=variant)
            self._records[key] = record
        elif record.kind != kind:
            raise ValueError(f"task {key!r} already holds {record.kind!r} scores; cannot add a {kind!r} sample")
        record.n += 1
        return record

    def add_closed(
        self, task: str, answer_text: str, options: Sequence[str], correct_index: int, *,
        level: str | None = None, group: str | None = None, variant: str | None = None,
    ) -> SampleScore:
        """Score a closed-ended answer; unreadable answers are wrong and counted as parse failures."""
        score = score_closed(answer_text, options, correct_index)
        record = self._record(task, "closed", level, group, variant)
        record.correct += score.correct
        record.parse_failures += score.unreadable
        record.truth.append(correct_index)
        record.predicted.append(score.predicted)
        return score

    def add_yes_no(
        self, task: str, answer_text: str, truth: str | bool, *,
        level: str | None = None, group: str | None = None, variant: str | None = None,
    ) -> SampleScore:
        """Score a yes/no answer; unreadable answers are wrong and counted as parse failures."""
        score = score_yes_no(answer_text, truth)
        record = self._record(task, "yes_no", level, group, variant)
        record.correct += score.correct
        record.parse_failures += score.unreadable
        return score

    def add_open(
        self, task: str, answer_text: str, reference: str, *,
        level: str | None = None, group: str | None = None, variant: str | None = None,
    ) -> OpenScore:
        """Score an open-ended answer; accuracy is the exact-match rate, empty answers are parse failures."""
        score = score_open(answer_text, reference)
        record = self._record(task, "open", level, group, variant)
        record.correct += score.exact
        record.parse_failures += score.empty
        record.recall_sum += score.recall
        record.f1_sum += score.f1
        return score

    def add_boxes(
        self, task: str, answer_text: str, gt_boxes: Any, *, rule: MatchRule | None = None,
        image_size: Sequence[int] | None = None,
        level: str | None = None, group: str | None = None, variant: str | None = None,
    ) -> BoxMatch:
        """Score a ``<bbox_list>`` answer against ground-truth boxes (N, 4) or their text form."""
        parsed = formats.parse_boxes(answer_text)
        gt = as_boxes(_clean_truth(gt_boxes, formats.parse_boxes, task), f"ground-truth boxes of {task!r}")
        match = (rule or MatchRule()).match(as_boxes(parsed.items, "parsed boxes"), gt, image_size)
        record = self._record(task, "boxes", level, group, variant)
        record.parse_failures += bool(parsed.problems)
        record.detection.add(match)
        return match

    def add_detections(
        self, task: str, answer_text: str, gt: Mapping[str, Any] | str, *, rule: MatchRule | None = None,
        image_size: Sequence[int] | None = None,
        level: str | None = None, group: str | None = None, variant: str | None = None,
    ) -> dict[str, BoxMatch]:
        """Score a ``<detection_result>`` answer class by class (micro-averaged and per class)."""
        parsed = formats.parse_detections(answer_text)
        truth = _clean_truth(gt, formats.parse_detections, task)
        matches = match_detections(parsed.items, truth, rule, image_size)
        record = self._record(task, "detections", level, group, variant)
        record.parse_failures += bool(parsed.problems)
        for name, match in matches.items():
            record.detection.add(match)
            record.per_class.setdefault(name, DetectionTally()).add(match)
        return matches

    def add_polygons(
        self, task: str, answer_text: str, gt_polygons: Any, image_size: Sequence[int], *,
        pred_mask: Any | None = None,
        level: str | None = None, group: str | None = None, variant: str | None = None,
    ) -> float:
        """Dice of a ``<contour_list>`` answer against ground-truth polygons, both rasterised at image_size.

        A model that answers the outline prompt with ``<mask>`` instead is scored by its decoded
        mask (``pred_mask``, bool (h, w) at any size, resized to image_size), not as unreadable text.
        """
        truth = _clean_truth(gt_polygons, formats.parse_polygons, task)
        if pred_mask is not None:
            pred, unreadable = geometry.resize_mask(pred_mask, (image_size[0], image_size[1])), False
        else:
            parsed = formats.parse_polygons(answer_text)
            pred, unreadable = rasterize_polygons(parsed.items, image_size), bool(parsed.problems)
        value = dice_score(pred, rasterize_polygons(truth, image_size))
        record = self._record(task, "polygons", level, group, variant)
        record.parse_failures += unreadable
        record.dice.append(value)
        return value

    def add_mask(
        self, task: str, pred_mask: Any | None, gt_mask: Any, *,
        level: str | None = None, group: str | None = None, variant: str | None = None,
    ) -> float:
        """Dice of a mask-decoder output against the truth; None (no ``<mask>`` emitted) is an empty mask and a parse failure."""
        gt = np.asarray(gt_mask).astype(bool)
        pred = np.zeros_like(gt) if pred_mask is None else pred_mask
        value = dice_score(pred, gt)
        record = self._record(task, "mask", level, group, variant)
        record.parse_failures += pred_mask is None
        record.dice.append(value)
        return value

    def add_row(self, row: Mapping[str, Any]) -> Any:
        """Score one prediction row (a plain dict, e.g. a JSON line from a runner).

        Keys: ``task`` and ``kind`` (one of `KINDS`), ``prediction`` (the model's
        text), optional ``level``, ``group``, ``variant``, and per kind:

        * closed: ``options`` (list of option texts), ``answer_index`` (int)
        * yes_no: ``answer`` ("yes"/"no" or bool)
        * open: ``answer`` (reference text)
        * boxes: ``answer`` (boxes (M, 4) or ``<bbox_list>`` text); optional
          ``match`` ("iou"/"centroid"), ``iou_threshold``, ``radius_px``,
          ``image_size`` ([width, height], needed for centroid matching)
        * detections: ``answer`` (dict class -> boxes, or ``<detection_result>``
          text); matching keys as for boxes
        * polygons: ``answer`` (polygons or ``<contour_list>`` text), ``image_size``
        * mask: ``pred_mask`` (array or None) and ``gt_mask`` (array)
        """
        missing = [k for k in ("task", "kind") if k not in row]
        if missing:
            raise ValueError(f"prediction row lacks {missing}; it has keys {sorted(row)}")
        kind = row["kind"]
        meta = {"level": row.get("level"), "group": row.get("group"), "variant": row.get("variant")}
        task = str(row["task"])

        def need(*keys: str) -> list[Any]:
            absent = [k for k in keys if k not in row]
            if absent:
                raise ValueError(f"a {kind!r} row for task {task!r} needs {absent}; it has keys {sorted(row)}")
            return [row[k] for k in keys]

        if kind == "closed":
            prediction, options, index = need("prediction", "options", "answer_index")
            return self.add_closed(task, prediction, options, int(index), **meta)
        if kind == "yes_no":
            prediction, answer = need("prediction", "answer")
            return self.add_yes_no(task, prediction, answer, **meta)
        if kind == "open":
            prediction, answer = need("prediction", "answer")
            return self.add_open(task, prediction, answer, **meta)
        if kind in DETECTION_KINDS:
            prediction, answer = need("prediction", "answer")
            rule = MatchRule(
                method=row.get("match", "iou"),
                iou_threshold=float(row.get("iou_threshold", 0.5)),
                radius_px=float(row.get("radius_px", NUCLEUS_RADIUS_PX_AT_20X)),
            )
            add = self.add_boxes if kind == "boxes" else self.add_detections
            return add(task, prediction, answer, rule=rule, image_size=row.get("image_size"), **meta)
        if kind == "polygons":
            prediction, answer, image_size = need("prediction", "answer", "image_size")
            return self.add_polygons(task, prediction, answer, image_size, pred_mask=row.get("pred_mask"), **meta)
        if kind == "mask":
            (gt_mask,) = need("gt_mask")
            return self.add_mask(task, row.get("pred_mask"), gt_mask, **meta)
        raise ValueError(f"row kind must be one of {KINDS}, got {kind!r} (task {task!r})")

    def keys(self) -> list[str]:
        """Task keys in the order they were first scored."""
        return list(self._records)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per task key: task, kind, level, group, variant, n, parse_failures, accuracy, f1, iou, dice, ...

        Metrics that do not apply to a kind are None. Classification adds
        ``macro_f1`` (closed) or ``exact_match``/``token_recall``/``token_f1``
        (open); detection adds precision, recall, tp, fp, fn and, for class-aware
        detection, ``per_class``.
        """
        return {key: record.summary() for key, record in self._records.items()}


def _clean_truth(truth: Any, parser: Any, task: str) -> Any:
    """Ground truth given as text is parsed and must parse cleanly (it is our own data)."""
    if not isinstance(truth, str):
        return truth
    parsed = parser(truth)
    if parsed.problems:
        raise ValueError(f"ground truth of task {task!r} does not parse cleanly: {'; '.join(parsed.problems)}")
    return parsed.items


def score_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Score prediction rows (see `TaskScores.add_row`) and return the per-task summaries."""
    scores = TaskScores()
    for row in rows:
        scores.add_row(row)
    return scores.summary()
