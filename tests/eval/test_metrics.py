"""Tests for omnipath_lvlm.eval.metrics: each metric against an independent implementation, plus edge cases."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from sklearn.metrics import accuracy_score, f1_score

from omnipath_lvlm.eval.metrics import (
    best_iou,
    MatchRule,
    TaskScores,
    box_iou,
    dice_score,
    match_boxes,
    match_centroids,
    match_detections,
    nucleus_radius_px,
    rasterize_polygons,
    score_closed,
    score_open,
    score_rows,
    score_yes_no,
    task_key,
    token_f1,
    token_recall,
)

OPTIONS = ["adenoma", "carcinoma in situ", "lymphoma", "sarcoma"]


# --------------------------------------------------------------------------- #
# Text helpers: the paper's answer formats, written here independently.
# --------------------------------------------------------------------------- #


def bbox_text(boxes) -> str:
    inner = "".join(f"<bbox>{x1:.3f}, {y1:.3f}, {x2:.3f}, {y2:.3f}</bbox>" for x1, y1, x2, y2 in boxes)
    return f"<bbox_list>{inner}</bbox_list>"


def detection_text(by_class) -> str:
    lists = "".join(
        f'<bbox_list class="{name}">' + "".join(
            f"<bbox>{x1:.3f}, {y1:.3f}, {x2:.3f}, {y2:.3f}</bbox>" for x1, y1, x2, y2 in boxes
        ) + "</bbox_list>"
        for name, boxes in by_class.items()
    )
    return f"<detection_result>{lists}</detection_result>"


def polygon_text(polygons) -> str:
    inner = "".join(
        "<polygon>" + ", ".join(f"[{x:.3f}, {y:.3f}]" for x, y in polygon) + "</polygon>" for polygon in polygons
    )
    return f"<contour_list>{inner}</contour_list>"


def grid_boxes(rng: np.random.Generator, cells: list[int], grid: int = 4) -> np.ndarray:
    """One box per chosen grid cell, inside the cell (boxes of different cells never overlap)."""
    size = 1.0 / grid
    boxes = []
    for cell in cells:
        cx, cy = (cell % grid) * size, (cell // grid) * size
        x1, y1 = cx + rng.uniform(0.01, 0.05), cy + rng.uniform(0.01, 0.05)
        boxes.append([x1, y1, x1 + rng.uniform(0.12, 0.18), y1 + rng.uniform(0.12, 0.18)])
    return np.round(np.array(boxes, dtype=np.float64).reshape(-1, 4), 3)


# --------------------------------------------------------------------------- #
# Closed-ended, yes/no and open-ended answers
# --------------------------------------------------------------------------- #


def test_closed_accuracy_and_macro_f1_match_sklearn():
    rng = random.Random(0)
    scores = TaskScores()
    y_true, y_pred = [], []
    for _ in range(300):
        truth = rng.randrange(len(OPTIONS))
        style = rng.random()
        if style < 0.15:  # names two options: unreadable
            i, j = rng.sample(range(len(OPTIONS)), 2)
            answer, predicted = f"It is {OPTIONS[i]} or {OPTIONS[j]}.", -1
        elif style < 0.2:  # names none
            answer, predicted = "unclear", -1
        else:
            predicted = truth if rng.random() < 0.6 else rng.randrange(len(OPTIONS))
            answer = "ABCD"[predicted] if rng.random() < 0.5 else OPTIONS[predicted]
        scores.add_closed("HCC-S", answer, OPTIONS, truth)
        y_true.append(truth)
        y_pred.append(predicted)
    summary = scores.summary()["HCC-S"]
    assert summary["n"] == 300
    assert summary["parse_failures"] == y_pred.count(-1)
    assert summary["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    labels = sorted(set(y_true) | {p for p in y_pred if p != -1})
    assert summary["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro"))


@pytest.mark.parametrize("answer", ["adenoma or lymphoma", "unclear", ""])
def test_closed_answer_naming_two_options_or_none_is_wrong_and_unreadable(answer):
    # correct_index 0 (adenoma): even an answer that includes the right option is not guessed as right.
    score = score_closed(answer, OPTIONS, 0)
    assert score.correct is False
    assert score.unreadable is True
    assert score.detail


def test_closed_letter_and_text_answers_are_read():
    assert score_closed("B", OPTIONS, 1).correct
    assert score_closed("The answer is lymphoma.", OPTIONS, 2).correct
    wrong = score_closed("D", OPTIONS, 2)
    assert not wrong.correct and not wrong.unreadable


def test_closed_rejects_a_correct_index_outside_the_options():
    with pytest.raises(ValueError, match="outside the 4 options"):
        score_closed("A", OPTIONS, 4)


def test_yes_no_accuracy_matches_sklearn_and_counts_unreadable():
    rng = random.Random(1)
    scores = TaskScores()
    y_true, y_pred = [], []
    for _ in range(200):
        truth = rng.choice(["yes", "no"])
        style = rng.random()
        if style < 0.1:
            answer, predicted = "maybe", "none"
        else:
            predicted = rng.choice(["yes", "no"])
            answer = rng.choice([f"{predicted.capitalize()}.", predicted, f"{predicted}, it does"])
        scores.add_yes_no("MVI", answer, truth)
        y_true.append(truth)
        y_pred.append(predicted)
    summary = scores.summary()["MVI"]
    assert summary["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert summary["parse_failures"] == y_pred.count("none")


def test_yes_no_accepts_bool_truth_and_rejects_bad_truth():
    assert score_yes_no("Yes.", True).correct
    assert not score_yes_no("no", True).correct
    assert score_yes_no("maybe", False).unreadable
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        score_yes_no("yes", "perhaps")


def _reference_f1_recall(pred: str, ref: str) -> tuple[float, float]:
    """Token F1 / recall by repeated removal (texts already normalised: lowercase words)."""
    p, r = pred.split(), ref.split()
    if not p or not r:
        return float(p == r), float(p == r)
    remaining, common = list(r), 0
    for token in p:
        if token in remaining:
            remaining.remove(token)
            common += 1
    if common == 0:
        return 0.0, 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall), recall


def test_token_f1_and_recall_match_an_independent_count():
    rng = random.Random(2)
    words = ["tumour", "cells", "nuclei", "vessel", "nerve", "stroma", "grade", "two"]
    for _ in range(300):
        pred = " ".join(rng.choices(words, k=rng.randrange(0, 7)))
        ref = " ".join(rng.choices(words, k=rng.randrange(0, 7)))
        expected_f1, expected_recall = _reference_f1_recall(pred, ref)
        assert token_f1(pred, ref) == pytest.approx(expected_f1)
        assert token_recall(pred, ref) == pytest.approx(expected_recall)


def test_open_exact_match_after_normalisation():
    score = score_open("The Adenoma.", "adenoma")
    assert score.exact and score.f1 == 1.0 and score.recall == 1.0
    partial = score_open("tubular adenoma", "adenoma")
    assert not partial.exact and partial.recall == 1.0 and partial.f1 == pytest.approx(2 / 3)
    assert score_open("", "adenoma").empty


def test_open_summary_counts_empty_answers_as_parse_failures():
    scores = TaskScores()
    scores.add_open("OC", "liver", "liver")
    scores.add_open("OC", "   ", "lung")
    summary = scores.summary()["OC"]
    assert summary["accuracy"] == 0.5 and summary["exact_match"] == 0.5
    assert summary["parse_failures"] == 1
    assert summary["token_f1"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- #
# Detection
# --------------------------------------------------------------------------- #


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 0.8, size=(n, 2))
    wh = rng.uniform(0.01, 0.4, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def test_box_iou_matches_pycocotools():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = _random_boxes(rng, rng.integers(1, 12)), _random_boxes(rng, rng.integers(1, 12))
        expected = mask_utils.iou(_xywh(a), _xywh(b), [0] * len(b))
        np.testing.assert_allclose(box_iou(a, b), expected, atol=1e-9)


def _brute_force_best(score: np.ndarray, admissible: np.ndarray) -> tuple[int, float]:
    """Largest number of admissible one-to-one pairs, then the largest total score, by enumeration."""
    n, m = score.shape
    best = (0, 0.0)
    small, large = (n, m) if n <= m else (m, n)
    for chosen in itertools.permutations(range(large), small):
        pairs = [(i, j) if n <= m else (j, i) for i, j in enumerate(chosen)]
        kept = [(i, j) for i, j in pairs if admissible[i, j]]
        candidate = (len(kept), sum(score[i, j] for i, j in kept))
        if candidate[0] > best[0] or (candidate[0] == best[0] and candidate[1] > best[1] + 1e-12):
            best = candidate
    return best


def test_match_boxes_is_the_best_one_to_one_matching():
    rng = np.random.default_rng(4)
    for _ in range(60):
        gt = _random_boxes(rng, rng.integers(0, 5))
        # predictions near some ground truth, plus random ones, so that matches compete
        near = gt[rng.random(len(gt)) < 0.7]
        near = near + rng.normal(0, 0.03, size=near.shape)
        pred = np.concatenate([near, _random_boxes(rng, rng.integers(0, 3))])[:5]
        match = match_boxes(pred, gt, 0.3)
        iou = mask_utils.iou(_xywh(pred), _xywh(gt), [0] * len(gt)) if len(pred) and len(gt) else np.zeros((len(pred), len(gt)))
        best_count, best_total = _brute_force_best(np.asarray(iou), np.asarray(iou) >= 0.3)
        assert match.tp == best_count
        assert match.ious.sum() == pytest.approx(best_total)
        assert match.fp == len(pred) - best_count and match.fn == len(gt) - best_count
        assert len({p for p, _ in match.pairs}) == len({g for _, g in match.pairs}) == match.tp


def test_dataset_f1_and_iou_match_sklearn_and_pycocotools():
    rng = np.random.default_rng(5)
    scores = TaskScores()
    y_true, y_pred, matched_ious = [], [], []
    for _ in range(40):
        cells = rng.permutation(16)
        n_gt, n_fake = int(rng.integers(0, 7)), int(rng.integers(0, 4))
        gt = grid_boxes(rng, list(cells[:n_gt]))
        keep = rng.random(n_gt) < 0.7
        found = np.round(gt[keep] + rng.uniform(-0.008, 0.008, size=(int(keep.sum()), 4)), 3)
        fakes = grid_boxes(rng, list(cells[n_gt:n_gt + n_fake]))
        pred = np.concatenate([found, fakes])
        scores.add_boxes("HCC", bbox_text(pred[rng.permutation(len(pred))]), gt)
        y_true += [1] * n_gt + [0] * n_fake
        y_pred += [1 if k else 0 for k in keep] + [1] * n_fake
        if len(found):
            matched_ious += list(np.diag(mask_utils.iou(_xywh(found), _xywh(gt[keep]), [0] * len(found))))
    summary = scores.summary()["HCC"]
    assert summary["f1"] == pytest.approx(f1_score(y_true, y_pred))
    assert summary["iou"] == pytest.approx(np.mean(matched_ious))
    assert summary["n"] == 40 and summary["parse_failures"] == 0


def test_detection_edge_cases():
    gt = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.7]])
    no_pred = match_boxes(np.zeros((0, 4)), gt)
    assert (no_pred.tp, no_pred.fp, no_pred.fn) == (0, 0, 2)
    no_gt = match_boxes(gt, [])
    assert (no_gt.tp, no_gt.fp, no_gt.fn) == (0, 2, 0)
    both_empty = match_boxes([], [])
    assert (both_empty.tp, both_empty.fp, both_empty.fn) == (0, 0, 0)
    duplicate = match_boxes(np.array([gt[0], gt[0]]), gt[:1])
    assert (duplicate.tp, duplicate.fp, duplicate.fn) == (1, 1, 0)


def test_dataset_scores_for_empty_cases():
    empty = TaskScores()
    empty.add_boxes("LD", "<bbox_list></bbox_list>", [])
    summary = empty.summary()["LD"]
    assert summary["f1"] == 1.0 and summary["iou"] is None
    missed = TaskScores()
    missed.add_boxes("LD", "<bbox_list></bbox_list>", [[0.1, 0.1, 0.2, 0.2]])
    assert missed.summary()["LD"]["f1"] == 0.0
    assert missed.summary()["LD"]["precision"] == 0.0 and missed.summary()["LD"]["recall"] == 0.0
    invented = TaskScores()
    invented.add_boxes("LD", bbox_text([[0.1, 0.1, 0.2, 0.2]]), [])
    assert invented.summary()["LD"]["f1"] == 0.0 and invented.summary()["LD"]["precision"] == 0.0


def test_out_of_range_box_is_clipped_by_the_parser_and_counted():
    scores = TaskScores()
    text = "<bbox_list><bbox>-0.100, 0.200, 0.500, 1.300</bbox></bbox_list>"
    match = scores.add_boxes("VD", text, [[0.0, 0.2, 0.5, 1.0]])
    assert match.tp == 1 and match.ious[0] == pytest.approx(1.0)
    assert scores.summary()["VD"]["parse_failures"] == 1


def test_unreadable_detection_answer_counts_as_parse_failure_and_misses():
    scores = TaskScores()
    match = scores.add_boxes("ND", "I cannot find any nerves here, sorry", [[0.1, 0.1, 0.2, 0.2]])
    assert (match.tp, match.fn) == (0, 1)
    summary = scores.summary()["ND"]
    assert summary["parse_failures"] == 1 and summary["n"] == 1  # counted, never dropped
    assert summary["f1"] == 0.0


def test_centroid_matching_uses_a_pixel_radius():
    assert nucleus_radius_px(20) == 6.0 and nucleus_radius_px(40) == 12.0
    size = (256, 256)
    gt = np.array([[100, 100, 108, 108]]) / 256.0
    shifted_5 = gt + np.array([5, 0, 5, 0]) / 256.0
    shifted_7 = gt + np.array([7, 0, 7, 0]) / 256.0
    assert match_boxes(shifted_5, gt).tp == 0  # IoU 3/13 is below 0.5
    assert match_centroids(shifted_5, gt, size, nucleus_radius_px(20)).tp == 1
    assert match_centroids(shifted_7, gt, size, nucleus_radius_px(20)).tp == 0
    assert match_centroids(shifted_7, gt, size, nucleus_radius_px(40)).tp == 1
    # the same relative shift is 10 px in a 512 px image
    assert match_centroids(shifted_5, gt, (512, 512), 6.0).tp == 0
    matched = match_centroids(shifted_5, gt, size, 6.0)
    assert matched.ious[0] == pytest.approx(3 * 8 / (2 * 64 - 3 * 8))


def test_centroid_matching_is_the_best_one_to_one_matching():
    rng = np.random.default_rng(6)
    size, radius = (100, 80), 10.0
    for _ in range(40):
        gt = _random_boxes(rng, rng.integers(0, 5)) * 0.2 + 0.4
        pred = _random_boxes(rng, rng.integers(0, 5)) * 0.2 + 0.4
        match = match_centroids(pred, gt, size, radius)
        scale = np.array(size, dtype=float)
        cp = (pred[:, :2] + pred[:, 2:]) / 2 * scale
        cg = (gt[:, :2] + gt[:, 2:]) / 2 * scale
        distance = np.array([[np.hypot(*(p - g)) for g in cg] for p in cp]).reshape(len(pred), len(gt))
        best_count, _ = _brute_force_best(np.clip(1 - distance / radius, 0, 1), distance <= radius)
        assert match.tp == best_count
        assert all(distance[p, g] <= radius for p, g in match.pairs)


def test_centroid_rule_needs_image_size():
    with pytest.raises(ValueError, match="image_size"):
        MatchRule(method="centroid").match([[0, 0, 0.1, 0.1]], [[0, 0, 0.1, 0.1]])


def test_class_aware_detection_matches_within_classes():
    tumour = [[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.6, 0.6]]
    lymph = [[0.3, 0.3, 0.4, 0.4]]
    pred = {"Tumour": [tumour[0]], "lymphocyte": [tumour[1], lymph[0]]}  # tumour[1] labelled wrongly
    matches = match_detections(pred, {"tumour": tumour, "Lymphocyte": lymph})
    assert set(matches) == {"tumour", "lymphocyte"}
    assert (matches["tumour"].tp, matches["tumour"].fp, matches["tumour"].fn) == (1, 0, 1)
    assert (matches["lymphocyte"].tp, matches["lymphocyte"].fp, matches["lymphocyte"].fn) == (1, 1, 0)

    scores = TaskScores()
    scores.add_detections("PanNuke", detection_text(pred), {"tumour": tumour, "lymphocyte": lymph})
    summary = scores.summary()["PanNuke"]
    # micro: TP 2, FP 1, FN 1 -> F1 = 4 / 6
    assert summary["f1"] == pytest.approx(f1_score([1, 1, 0, 1], [1, 1, 1, 0]))
    assert summary["per_class"]["tumour"]["f1"] == pytest.approx(2 / 3)
    assert summary["per_class"]["lymphocyte"]["f1"] == pytest.approx(2 / 3)


def test_class_aware_micro_f1_matches_sklearn_on_random_cases():
    rng = np.random.default_rng(7)
    classes = ["tumour", "lymphocyte", "stromal"]
    scores = TaskScores()
    y_true, y_pred = [], []
    for _ in range(30):
        cells = list(rng.permutation(16))
        gt: dict[str, list] = {c: [] for c in classes}
        pred: dict[str, list] = {c: [] for c in classes}
        for cell in cells[: int(rng.integers(0, 8))]:
            box = grid_boxes(rng, [cell])[0]
            label = classes[int(rng.integers(3))]
            gt[label].append(box)
            outcome = rng.random()
            if outcome < 0.6:  # found with the right class
                pred[label].append(box)
                y_true.append(1)
                y_pred.append(1)
            elif outcome < 0.8:  # found with a wrong class: a miss and a false alarm
                pred[classes[(classes.index(label) + 1) % 3]].append(box)
                y_true += [1, 0]
                y_pred += [0, 1]
            else:  # missed
                y_true.append(1)
                y_pred.append(0)
        scores.add_detections("NuCLS", detection_text({c: b for c, b in pred.items() if b}), gt)
    assert scores.summary()["NuCLS"]["f1"] == pytest.approx(f1_score(y_true, y_pred))


# --------------------------------------------------------------------------- #
# Segmentation
# --------------------------------------------------------------------------- #


def _numpy_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    if a.sum() + b.sum() == 0:
        return 1.0
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def test_dice_matches_numpy_and_dataset_dice_is_the_mean():
    rng = np.random.default_rng(8)
    scores = TaskScores()
    expected = []
    for _ in range(25):
        gt = rng.random((32, 40)) < rng.uniform(0, 0.5)
        pred = rng.random((32, 40)) < rng.uniform(0, 0.5)
        assert dice_score(pred, gt) == pytest.approx(_numpy_dice(pred, gt))
        scores.add_mask("NS", pred, gt)
        expected.append(_numpy_dice(pred, gt))
    assert scores.summary()["NS"]["dice"] == pytest.approx(np.mean(expected))


def test_dice_empty_cases_and_shape_mismatch():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    assert dice_score(empty, empty) == 1.0
    assert dice_score(empty, full) == 0.0 and dice_score(full, empty) == 0.0
    with pytest.raises(ValueError, match="shape"):
        dice_score(np.zeros((4, 4)), np.zeros((4, 5)))


def test_missing_mask_is_empty_and_a_parse_failure():
    scores = TaskScores()
    scores.add_mask("NIS", None, np.ones((4, 4), bool))
    scores.add_mask("NIS", None, np.zeros((4, 4), bool))
    summary = scores.summary()["NIS"]
    assert summary["dice"] == pytest.approx(0.5) and summary["parse_failures"] == 2


def test_rasterized_rectangle_covers_exactly_its_pixels():
    mask = rasterize_polygons([[(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)]], (16, 8))
    expected = np.zeros((8, 16), bool)
    expected[2:6, 4:12] = True
    assert mask.shape == (8, 16)
    np.testing.assert_array_equal(mask, expected)
    assert not rasterize_polygons([], (16, 8)).any()


def test_polygon_dice_from_text():
    square = [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)]
    left_half = [(0.25, 0.25), (0.5, 0.25), (0.5, 0.75), (0.25, 0.75)]
    scores = TaskScores()
    value = scores.add_polygons("HCC", polygon_text([left_half]), [square], (64, 64))
    assert value == pytest.approx(2 * 512 / (512 + 1024))
    assert scores.add_polygons("HCC", "<contour_list></contour_list>", [], (64, 64)) == 1.0
    assert scores.summary()["HCC"]["dice"] == pytest.approx((2 / 3 + 1.0) / 2)


# --------------------------------------------------------------------------- #
# Aggregation
# --------------------------------------------------------------------------- #


def test_task_keys_and_summary_fields():
    scores = TaskScores()
    scores.add_closed("HCC-S", "A", OPTIONS, 0, level="slide", group="liver", variant="random")
    scores.add_closed("HCC-S", "A", OPTIONS, 1, level="patch")
    assert scores.keys() == [task_key("HCC-S", level="slide", group="liver", variant="random"), "patch/HCC-S"]
    summary = scores.summary()["patch/HCC-S"]
    assert {"accuracy", "f1", "iou", "dice", "n", "parse_failures"} <= summary.keys()
    assert summary["accuracy"] == 0.0 and summary["f1"] is None and summary["dice"] is None
    assert summary["level"] == "patch" and summary["kind"] == "closed"


def test_a_task_holds_one_kind():
    scores = TaskScores()
    scores.add_yes_no("MVI", "yes", "yes")
    with pytest.raises(ValueError, match="already holds 'yes_no'"):
        scores.add_closed("MVI", "A", OPTIONS, 0)


def test_score_rows_handles_every_kind():
    gt_mask = np.zeros((8, 8), bool)
    gt_mask[2:6, 2:6] = True
    rows = [
        {"task": "HCC-S", "kind": "closed", "prediction": "B", "options": OPTIONS, "answer_index": 1},
        {"task": "HCC-S", "kind": "closed", "prediction": "adenoma or sarcoma", "options": OPTIONS, "answer_index": 0},
        {"task": "MVI", "kind": "yes_no", "prediction": "No.", "answer": "no"},
        {"task": "OC", "kind": "open", "prediction": "liver", "answer": "Liver"},
        {"task": "LD", "kind": "boxes", "prediction": bbox_text([[0.1, 0.1, 0.3, 0.3]]),
         "answer": bbox_text([[0.1, 0.1, 0.3, 0.3]])},
        {"task": "MoNuSeg", "kind": "boxes", "prediction": bbox_text([[0.1, 0.1, 0.12, 0.12]]),
         "answer": [[0.105, 0.1, 0.125, 0.12]], "match": "centroid", "radius_px": 6, "image_size": [256, 256]},
        {"task": "PanNuke", "kind": "detections", "prediction": detection_text({"tumour": [[0.1, 0.1, 0.2, 0.2]]}),
         "answer": {"tumour": [[0.1, 0.1, 0.2, 0.2]]}},
        {"task": "NS", "kind": "polygons", "prediction": polygon_text([[(0.25, 0.25), (0.75, 0.25), (0.75, 0.75)]]),
         "answer": [[(0.25, 0.25), (0.75, 0.25), (0.75, 0.75)]], "image_size": [32, 32]},
        {"task": "LNMS", "kind": "mask", "pred_mask": gt_mask, "gt_mask": gt_mask},
    ]
    summary = score_rows(rows)
    assert summary["HCC-S"]["accuracy"] == 0.5 and summary["HCC-S"]["parse_failures"] == 1
    assert summary["MVI"]["accuracy"] == 1.0 and summary["OC"]["accuracy"] == 1.0
    assert summary["LD"]["f1"] == 1.0 and summary["MoNuSeg"]["f1"] == 1.0 and summary["PanNuke"]["f1"] == 1.0
    assert summary["NS"]["dice"] == 1.0 and summary["LNMS"]["dice"] == 1.0


def test_bad_rows_name_the_broken_contract():
    with pytest.raises(ValueError, match="lacks"):
        score_rows([{"kind": "closed"}])
    with pytest.raises(ValueError, match="needs \\['options', 'answer_index'\\]"):
        score_rows([{"task": "HCC-S", "kind": "closed", "prediction": "A"}])
    with pytest.raises(ValueError, match="row kind must be one of"):
        score_rows([{"task": "HCC-S", "kind": "essay", "prediction": "A"}])
    with pytest.raises(ValueError, match="does not parse cleanly"):
        score_rows([{"task": "LD", "kind": "boxes", "prediction": "", "answer": "<bbox>1.5, 0, 2, 2</bbox>"}])



def test_best_iou_takes_the_best_true_box_per_prediction():
    gt = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]
    pred = [[0.0, 0.0, 0.5, 0.5],      # equals the first true box
            [0.5, 0.5, 1.0, 0.75],     # half of the second
            [0.6, 0.0, 0.9, 0.3]]      # touches nothing
    np.testing.assert_allclose(best_iou(pred, gt), [1.0, 0.5, 0.0])
    assert best_iou(pred, []).tolist() == [0.0, 0.0, 0.0]
    assert best_iou([], gt).shape == (0,)
    with pytest.raises(ValueError, match="predicted boxes"):
        best_iou([[0.0, 0.0, 1.0]], gt)


def test_outline_answered_with_a_mask_is_scored_by_the_mask():
    square = [[[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]]
    scores = TaskScores()
    truth_mask = rasterize_polygons(square, (64, 64))  # (64, 64), at another size than the raster below
    assert scores.add_polygons("seg", "<mask>", square, (32, 32), pred_mask=truth_mask) == pytest.approx(1.0)
    assert scores.add_polygons("seg", "<mask>", square, (32, 32), pred_mask=~truth_mask) == 0.0
    assert scores.add_polygons("seg", "<mask>", square, (32, 32)) == 0.0  # no mask: unreadable text
    summary = scores.summary()[task_key("seg")]
    assert summary["n"] == 3 and summary["parse_failures"] == 1
