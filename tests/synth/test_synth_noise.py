"""Position-keyed noise: determinism, grid == points, cellular distances, lattice points."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from omnipath_lvlm.synth.grid import ALIGN, PixelWindow, node_factor
from omnipath_lvlm.synth.noise import Cellular, Fbm, ValueNoise, derive_key, hash_uniform


def test_derive_key_is_stable_and_separates_names():
    assert derive_key(3, "a") == derive_key(3, "a")
    assert len({derive_key(3, "a"), derive_key(3, "b"), derive_key(4, "a")}) == 3
    assert 0 <= derive_key(123, "x") < 2**63


def test_hash_uniform_range_and_spread():
    u = hash_uniform(7, np.arange(-500, 500)[:, None], np.arange(40)[None, :])
    assert u.shape == (1000, 40)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert np.unique(u).size == u.size  # no collisions on a small grid


@settings(max_examples=25, deadline=None)
@given(x0=st.floats(-1e4, 1e4), y0=st.floats(-1e4, 1e4), scale=st.floats(0.5, 200.0))
def test_value_noise_grid_equals_points(x0, y0, scale):
    noise = ValueNoise(derive_key(1, "v"), scale)
    xs = x0 + np.arange(37) * 0.7
    ys = y0 + np.arange(23) * 1.3
    grid = noise.on_grid(xs, ys)  # (23, 37)
    pts = noise.at(xs[None, :], ys[:, None])
    assert grid.shape == (23, 37)
    np.testing.assert_allclose(grid, pts, atol=1e-5)
    assert np.abs(pts).max() <= 1.0


def test_value_noise_does_not_depend_on_the_window():
    noise = Fbm(derive_key(2, "f"), 30.0, 3)
    xs = np.arange(200) * 0.5
    ys = np.arange(100) * 0.5
    whole = noise.on_grid(xs, ys)
    part = noise.on_grid(xs[60:140], ys[30:90])
    np.testing.assert_array_equal(whole[30:90, 60:140], part)


def test_cellular_f1_f2_and_nearest_point():
    cell = Cellular(derive_key(3, "c"), 20.0, jitter=0.8)
    x, y, cu, cv = cell.points_in(0.0, 0.0, 200.0, 200.0)
    assert x.size > 50
    assert ((x >= 0) & (x < 200) & (y >= 0) & (y < 200)).all()
    f1, f2, nu, nv = cell.at(x, y)  # at its own points F1 is zero and the nearest cell is itself
    np.testing.assert_allclose(f1, 0.0, atol=1e-9)
    assert (f2 > 0).all()
    np.testing.assert_array_equal(nu, cu)
    np.testing.assert_array_equal(nv, cv)
    px = np.random.default_rng(0).uniform(20, 180, (2, 500))
    d1, d2, _, _ = cell.at(px[0], px[1])
    brute = np.hypot(px[0][:, None] - x[None, :], px[1][:, None] - y[None, :])  # (500, N)
    brute.sort(axis=1)
    np.testing.assert_allclose(d1, brute[:, 0], rtol=1e-9)
    np.testing.assert_allclose(d2, brute[:, 1], rtol=1e-9)


def test_cellular_presence_thins_points():
    full = Cellular(derive_key(4, "c"), 10.0)
    half = Cellular(derive_key(4, "c"), 10.0, presence=0.5)
    n_full = full.points_in(0, 0, 500, 500)[0].size
    n_half = half.points_in(0, 0, 500, 500)[0].size
    assert 0.35 * n_full < n_half < 0.65 * n_full


def test_pixel_window_alignment_and_node_enlargement_are_window_independent():
    assert node_factor(1.5, 0.25) == 8 and node_factor(0.3, 0.25) == 1 and node_factor(1.5, 1.0) == 2
    big = PixelWindow.around(5, 7, 300, 90, 0.25, 4)
    assert big.x0 % ALIGN == 0 and big.w % ALIGN == 0 and big.x0 <= 1 and big.x0 + big.w >= 309
    fn = Fbm(derive_key(5, "g"), 20.0, 2).at  # finest octave 10 um, nodes every 2 um
    small = PixelWindow(big.x0 + 64, big.y0 + 32, 128, 48, 0.25)
    a = big.sample(lambda x, y: {"v": fn(x, y)}, 1.5)["v"]
    b = small.sample(lambda x, y: {"v": fn(x, y)}, 1.5)["v"]
    np.testing.assert_allclose(a[32:80, 64:192], b, atol=1e-6)
    # and the enlarged field is close to the exact one
    exact = fn(big.xs[None, :], big.ys[:, None])
    assert np.abs(a - exact).max() < 0.03
