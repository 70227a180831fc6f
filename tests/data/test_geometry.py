"""Tests of mask / polygon / box geometry and its pixel convention."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import ellipse
from skimage.measure import label

from omnipath_lvlm.data.formats import format_boxes, parse_boxes
from omnipath_lvlm.data.geometry import (
    resize_mask,
    box_iou,
    dice,
    instance_mask_to_boxes,
    mask_iou,
    mask_to_polygons,
    polygons_to_mask,
    to_absolute,
    to_relative,
)


def random_blobs(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """A mask of ``count`` random ellipses (some may touch and merge)."""
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        r, c = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        rr, cc = ellipse(r, c, rng.uniform(3, 25), rng.uniform(3, 25), shape=shape, rotation=rng.uniform(0, np.pi))
        mask[rr, cc] = True
    return mask


# ---------------------------------------------------------------- pixel convention


def test_box_of_pixels_uses_exclusive_far_edges():
    labels = np.zeros((10, 12), dtype=np.int32)
    labels[2, 3] = 7  # one pixel: row 2, column 3
    labels[4:7, 1:10] = 3  # rows 4..6, columns 1..9
    ids, boxes = instance_mask_to_boxes(labels)
    assert ids.tolist() == [3, 7]
    assert boxes.tolist() == [[1, 4, 10, 7], [3, 2, 4, 3]]


def test_instance_boxes_with_sparse_ids_and_empty_masks():
    labels = np.zeros((50, 40), dtype=np.int64)
    labels[0:5, 30:40] = 1_000_000
    labels[45:50, 0:1] = 2
    ids, boxes = instance_mask_to_boxes(labels)
    assert ids.tolist() == [2, 1_000_000]
    assert boxes.tolist() == [[0, 45, 1, 50], [30, 0, 40, 5]]
    ids, boxes = instance_mask_to_boxes(np.zeros((4, 4), dtype=np.uint8))
    assert ids.shape == (0,) and boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="integer labels"):
        instance_mask_to_boxes(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        instance_mask_to_boxes(np.zeros((2, 4, 4), dtype=np.int32))


def test_instance_boxes_match_a_direct_search():
    rng = np.random.default_rng(5)
    labels = label(random_blobs(rng, (120, 160), 12), connectivity=2)
    ids, boxes = instance_mask_to_boxes(labels)
    for instance, box in zip(ids, boxes):
        rows, cols = np.nonzero(labels == instance)
        assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_rectangle_polygon_lies_on_pixel_edges_and_fills_exactly_those_pixels():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1
    assert {tuple(v) for v in polygons[0].tolist()} == {(3.0, 2.0), (9.0, 2.0), (9.0, 5.0), (3.0, 5.0)}
    square = np.array([[3, 2], [9, 2], [9, 5], [3, 5]], dtype=float)
    np.testing.assert_array_equal(polygons_to_mask([square], mask.shape), mask)


def test_single_pixel_is_the_unit_square():
    mask = np.zeros((5, 5), dtype=bool)
    mask[1, 3] = True
    (polygon,) = mask_to_polygons(mask)
    assert {tuple(v) for v in polygon.tolist()} == {(3.0, 1.0), (4.0, 1.0), (4.0, 2.0), (3.0, 2.0)}
    np.testing.assert_array_equal(polygons_to_mask([polygon], mask.shape), mask)


def test_polygons_to_mask_samples_pixel_centres():
    # Right angle at (0, 0), legs of 4.4: it holds the centres (c + .5, r + .5) with c + r + 1 < 4.4.
    triangle = np.array([[0.0, 0.0], [4.4, 0.0], [0.0, 4.4]])
    expected = np.array([[c + r + 1 < 4.4 for c in range(5)] for r in range(5)])
    np.testing.assert_array_equal(polygons_to_mask([triangle], (5, 5)), expected)
    with pytest.raises(ValueError, match="polygon 0"):
        polygons_to_mask([np.zeros((2, 2))], (5, 5))


# ---------------------------------------------------------------- mask -> polygons -> mask


@pytest.mark.parametrize("seed", range(6))
def test_mask_polygon_round_trip_keeps_blobs(seed):
    rng = np.random.default_rng(seed)
    mask = random_blobs(rng, (160, 200), 6)
    polygons = mask_to_polygons(mask, max_vertices=50)
    assert len(polygons) == label(mask, connectivity=2).max()
    assert all(3 <= len(p) <= 50 for p in polygons)
    for polygon in polygons:
        assert polygon.shape[1] == 2
        assert (polygon >= 0).all() and (polygon[:, 0] <= 200).all() and (polygon[:, 1] <= 160).all()
    restored = polygons_to_mask(polygons, mask.shape)
    assert mask_iou(restored, mask) > 0.9


def test_each_component_round_trips_on_its_own():
    rng = np.random.default_rng(11)
    components = label(random_blobs(rng, (160, 200), 8), connectivity=2)
    for index in range(1, components.max() + 1):
        component = components == index
        (polygon,) = mask_to_polygons(component)
        assert mask_iou(polygons_to_mask([polygon], component.shape), component) > 0.9


def test_vertex_budget_is_respected_on_ragged_shapes():
    rng = np.random.default_rng(3)
    mask = np.zeros((200, 200), dtype=bool)
    mask[40:160, 40:160] = rng.random((120, 120)) < 0.8  # ragged, many tiny holes
    mask[40:160, 40:160] |= np.add.outer(np.arange(120), np.arange(120)) % 7 == 0  # keep it connected
    polygons = mask_to_polygons(mask, max_vertices=8, min_area=100)
    assert len(polygons) == 1
    assert 3 <= len(polygons[0]) <= 8
    with pytest.raises(ValueError, match="max_vertices"):
        mask_to_polygons(mask, max_vertices=3)


def test_min_area_drops_small_components_and_holes_are_filled():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:25, 5:25] = True
    mask[10:15, 10:15] = False  # a hole
    mask[30, 30] = True  # a one-pixel speck
    polygons = mask_to_polygons(mask, min_area=4)
    assert len(polygons) == 1
    filled = np.zeros_like(mask)
    filled[5:25, 5:25] = True
    np.testing.assert_array_equal(polygons_to_mask(polygons, mask.shape), filled)
    assert len(mask_to_polygons(mask, min_area=1)) == 2
    assert mask_to_polygons(np.zeros((8, 8), dtype=bool)) == []


def test_thin_and_diagonal_shapes_become_valid_polygons():
    mask = np.zeros((12, 12), dtype=bool)
    mask[np.arange(8), np.arange(8)] = True  # diagonal line, 8-connected
    mask[10, 0:12] = True  # horizontal line touching both image edges
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    restored = polygons_to_mask(polygons, mask.shape)
    assert dice(restored, mask) > 0.9
    for polygon in polygons:
        assert (polygon >= 0).all() and (polygon <= 12).all()


# ---------------------------------------------------------------- overlap measures


def test_box_iou_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, size=(30, 4))
    a = np.concatenate([np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])], 1)
    b = a[rng.permutation(30)[:12]] + rng.normal(0, 5, size=(12, 4))
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
    b[0] = [10, 10, 10, 20]  # no area
    result = box_iou(a, b)
    assert result.shape == (30, 12)
    for i, (ax1, ay1, ax2, ay2) in enumerate(a):
        for j, (bx1, by1, bx2, by2) in enumerate(b):
            width = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            height = max(0.0, min(ay2, by2) - max(ay1, by1))
            inter = width * height
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            assert result[i, j] == pytest.approx(inter / union if union > 0 else 0.0)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 12)
    assert box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3]])[0, 0] == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou(np.zeros((3, 3)), b)


def test_mask_iou_and_dice_by_hand():
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[0:2, 0:2] = True  # 4 pixels
    b[1:3, 1:3] = True  # 4 pixels, 1 shared
    assert mask_iou(a, b) == pytest.approx(1 / 7)
    assert dice(a, b) == pytest.approx(2 / 8)
    assert mask_iou(a, a) == 1.0 and dice(a, a) == 1.0
    empty = np.zeros((4, 4), dtype=bool)
    assert mask_iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0
    assert mask_iou(a, empty) == 0.0 and dice(a, empty) == 0.0
    with pytest.raises(ValueError, match="shape"):
        dice(a, np.zeros((3, 4), dtype=bool))


def test_mask_iou_of_stacks_is_pairwise():
    rng = np.random.default_rng(2)
    stack_a = rng.random((3, 16, 16)) < 0.3
    stack_b = rng.random((5, 16, 16)) < 0.3
    stack_b[4] = False
    result = mask_iou(stack_a, stack_b)
    assert result.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert result[i, j] == pytest.approx(mask_iou(stack_a[i], stack_b[j]))


# ---------------------------------------------------------------- relative coordinates


def test_relative_and_absolute_coordinates():
    boxes = np.array([[50, 25, 100, 75], [0, 0, 200, 100]], dtype=float)
    relative = to_relative(boxes, width=200, height=100)
    np.testing.assert_allclose(relative, [[0.25, 0.25, 0.5, 0.75], [0, 0, 1, 1]])
    np.testing.assert_allclose(to_absolute(relative, 200, 100), boxes)
    points = np.array([[20.0, 10.0], [200.0, 0.0]])
    np.testing.assert_allclose(to_relative(points, 200, 100), [[0.1, 0.1], [1.0, 0.0]])
    assert boxes[0, 0] == 50  # the input is not modified
    with pytest.raises(ValueError, match="even"):
        to_relative(np.zeros((2, 3)), 10, 10)
    with pytest.raises(ValueError, match="positive"):
        to_absolute(points, 0, 10)


def test_instance_boxes_survive_the_text_format():
    """Mask -> boxes -> relative -> paper text -> parsed -> absolute gives the pixel boxes back."""
    rng = np.random.default_rng(9)
    labels = label(random_blobs(rng, (300, 400), 10), connectivity=2)
    _, boxes = instance_mask_to_boxes(labels)
    text = format_boxes(to_relative(boxes, 400, 300))
    parsed = parse_boxes(text)
    assert parsed.ok
    restored = to_absolute(np.array(parsed.items), 400, 300)
    # Three decimals of 400 px is 0.4 px: rounding recovers the integer edges.
    np.testing.assert_array_equal(np.rint(restored).astype(int), boxes)


def test_resize_mask_is_nearest_neighbour_to_width_height():
    mask = np.zeros((2, 4), dtype=np.uint8)  # (H, W)
    mask[0, 1] = 7  # any non-zero value is set
    big = resize_mask(mask, (8, 4))  # (width, height)
    assert big.shape == (4, 8) and big.dtype == bool
    assert big[:2, 2:4].all() and big.sum() == 4
    assert resize_mask(big, (4, 2)).tolist() == (mask > 0).tolist()
    with pytest.raises(ValueError, match="2-D"):
        resize_mask(np.zeros((2, 2, 3)), (4, 4))
