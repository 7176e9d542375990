from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelcam.metrics import feature_map_separability, separability_index


def _j_from_matrices(x, y):
    """Paper Eqs. 4-6 literally: full scatter matrices, then traces."""
    m = x.mean(axis=0)
    s_w = np.zeros((x.shape[1], x.shape[1]))
    s_b = np.zeros_like(s_w)
    for c in (0, 1):
        xc = x[y == c]
        mc = xc.mean(axis=0)
        for xj in xc:
            s_w += np.outer(xj - mc, xj - mc)
        s_b += len(xc) * np.outer(mc - m, mc - m)
    return np.trace(s_b) / np.trace(s_w)


def test_matches_the_paper_equations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 5))
    y = (np.arange(70) < 20).astype(int)  # unequal classes: 20 vs 50
    x[y == 1] += [1.0, -0.5, 0.0, 2.0, 0.3]
    assert separability_index(x, y) == pytest.approx(_j_from_matrices(x, y), rel=1e-10)


def test_hand_computed_values_and_point_masses():
    # Classes {-1, 1} around 0 and {3, 5} around 4: tr(S_W) = 4 * 1 = 4; global mean 2,
    # tr(S_B) = 2 * (0 - 2)^2 + 2 * (4 - 2)^2 = 16 -> J = 4.
    x = np.array([[-1.0], [1.0], [3.0], [5.0]])
    assert separability_index(x, [0, 0, 1, 1]) == pytest.approx(4.0)
    # Two point masses at different places: zero within-class scatter -> inf.
    points = np.array([[0.0, 1.0], [0.0, 1.0], [2.0, 1.0], [2.0, 1.0]])
    assert separability_index(points, [0, 0, 1, 1]) == np.inf
    # Everything at one point: 0 / 0 -> NaN; one class absent -> NaN.
    assert np.isnan(separability_index(np.ones((4, 2)), [0, 0, 1, 1]))
    assert np.isnan(separability_index(x, [0, 0, 0, 0]))
    assert np.isnan(separability_index(x, [1, 1, 1, 1]))
    # Same class means: no between-class scatter -> 0.
    assert separability_index(np.array([[-1.0], [1.0], [-2.0], [2.0]]), [0, 0, 1, 1]) == 0.0


def test_two_gaussians_match_the_analytic_value():
    # n0 = 3 n1 (priors 3/4, 1/4), means 2*mu apart on one axis, sigma0 = 1, sigma1 = 2,
    # d dims. Per pixel: tr(S_B)/N -> P0 P1 (2 mu)^2 and tr(S_W)/N -> d (P0 s0^2 + P1 s1^2),
    # so J -> P0 P1 (2 mu)^2 / (d (P0 s0^2 + P1 s1^2)) = 0.1875 * 16 / (3 * 1.75) = 0.5714.
    rng = np.random.default_rng(1)
    d, mu, n1 = 3, 2.0, 20000
    a = rng.normal(0, 1, (3 * n1, d))
    b = rng.normal(0, 2, (n1, d))
    a[:, 0] -= mu
    b[:, 0] += mu
    expected = 0.75 * 0.25 * (2 * mu) ** 2 / (d * (0.75 * 1 + 0.25 * 4))
    j = separability_index(np.vstack([a, b]), np.r_[np.zeros(3 * n1), np.ones(n1)])
    assert j == pytest.approx(expected, rel=0.02)


def test_invariances_and_scaling():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    y = (rng.random(200) < 0.3).astype(int)
    x[y == 1] += 1.5
    j = separability_index(x, y)
    perm = rng.permutation(200)
    assert separability_index(x[perm], y[perm]) == pytest.approx(j, rel=1e-12)
    assert separability_index(7.0 * x, y) == pytest.approx(j, rel=1e-12)  # global scale
    assert separability_index(x - 100.0, y) == pytest.approx(j, rel=1e-12)  # translation
    # Moving the classes apart by k scales tr(S_B) by k^2 and leaves tr(S_W): J * k^2.
    centred = x.copy()
    for c in (0, 1):
        centred[y == c] -= x[y == c].mean(axis=0)
    offsets = x - centred  # each point's class mean
    assert separability_index(centred + 3.0 * offsets, y) == pytest.approx(9 * j, rel=1e-9)
    # float32 and torch give the same value (accumulated in float64)
    assert separability_index(torch.from_numpy(x).float(), torch.from_numpy(y)) == (
        pytest.approx(j, rel=1e-5)
    )


def test_separability_bad_inputs():
    with pytest.raises(ValueError, match="N labels"):
        separability_index(np.zeros((4, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        separability_index(np.zeros((3, 2)), [0, 1, 2])


def test_feature_map_separability_uses_mask_at_feature_resolution():
    f = np.zeros((2, 4, 4))
    f[0, :2] = 1.0  # channel 0 is on in the top half
    mask = np.zeros((16, 16), np.uint8)
    mask[:8] = 1
    assert feature_map_separability(f, mask) == np.inf
    mask[:, :8] = 255  # ignored half: still both classes, still separable
    assert feature_map_separability(torch.from_numpy(f), torch.from_numpy(mask)) == np.inf
    mask[8:] = 255  # no background left
    assert np.isnan(feature_map_separability(f, mask))


def test_feature_map_mask_sampled_at_cell_centres():
    # A 2 x 2 feature map over an 8 x 8 mask: cell centres fall on mask pixels (2, 2), (2, 6),
    # (6, 2), (6, 6). Only those pixels' labels count, whatever the rest of the mask says.
    rng = np.random.default_rng(3)
    f = rng.normal(size=(3, 2, 2))
    mask = np.full((8, 8), 255, np.uint8)
    mask[2, 2] = mask[2, 6] = 1
    mask[6, 2] = mask[6, 6] = 0
    expected = separability_index(f.reshape(3, -1).T, [1, 1, 0, 0])
    assert feature_map_separability(f, mask) == pytest.approx(expected)
    mask[0, 0] = 0  # top-left corner sampling would see this; nearest at centres does not
    assert feature_map_separability(f, mask) == pytest.approx(expected)
    same = np.array([[1, 1], [0, 0]], np.uint8)  # a mask already at feature resolution
    assert feature_map_separability(f, same) == pytest.approx(expected)


def test_feature_map_bad_inputs():
    with pytest.raises(ValueError, match=r"\[C, h, w\]"):
        feature_map_separability(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="found \\[3\\]"):
        feature_map_separability(np.zeros((2, 4, 4)), np.full((4, 4), 3, np.uint8))
