"""Shared converter helpers: tiling, outline simplification, relative boxes."""
from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Polygon

from omnipath_lvlm.data.converters.common import relative_boxes, simplify_outline, tile_origins


def test_tile_origins_cover_the_length_with_full_tiles():
    assert tile_origins(100, 50) == [0, 50]
    assert tile_origins(80, 50) == [0, 30]
    assert tile_origins(40, 50) == [0]
    assert tile_origins(256, 256) == [0]
    with pytest.raises(ValueError):
        tile_origins(10, 0)


def test_simplify_outline_keeps_the_shape_within_budget():
    angles = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    star = np.c_[100 + (60 + 20 * np.sin(5 * angles)) * np.cos(angles),
                 100 + (60 + 20 * np.sin(5 * angles)) * np.sin(angles)]
    simple = simplify_outline(star, max_vertices=30)
    assert 10 <= len(simple) <= 30
    original, reduced = Polygon(star), Polygon(simple)
    assert original.symmetric_difference(reduced).area / original.area < 0.05
    small = star[::30]
    np.testing.assert_array_equal(simplify_outline(small, 50), small)  # already within budget
    bow_tie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]] * 20, dtype=float)
    assert len(simplify_outline(bow_tie, 6)) <= 6


def test_relative_boxes_clip_drop_and_sort():
    boxes = [[50, 60, 70, 80], [-10, 5, 20, 15], [10, 200, 30, 220]]  # last lies below the 100 x 100 image
    assert relative_boxes(boxes, 100, 100) == [[0.0, 0.05, 0.2, 0.15], [0.5, 0.6, 0.7, 0.8]]
    assert relative_boxes(np.zeros((0, 4)), 10, 10) == []
