from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pixelcam.metrics import (
    ClassificationAccumulator,
    accuracy,
    feature_map_separability,
    paired_ttest,
    pixel_rates,
    separability_index,
)


def test_accuracy_and_confusion():
    logits = np.array([[2.0, 0.1], [0.1, 2.0], [3.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    assert accuracy(logits, labels) == 75.0
    acc = ClassificationAccumulator(2)
    acc.update(logits[:2], labels[:2])
    acc.update(np.array([0, 1]), labels[2:])
    assert acc.accuracy() == 75.0
    assert acc.confusion.tolist() == [[1, 0], [1, 2]]
    assert np.allclose(acc.per_class_accuracy(), [100.0, 200 / 3])


def test_pixel_rates_pair_up_to_100():
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, :2] = 1  # 8 FG
    cam = np.zeros((1, 4, 4))
    cam[0, 0] = 1.0  # 4 FG predicted
    cam[0, 3, :2] = 0.9  # 2 BG predicted FG
    r = pixel_rates(cam, mask, threshold=0.5)
    assert r == pytest.approx({"tp": 50.0, "fn": 50.0, "tn": 75.0, "fp": 25.0})


def test_separability_known_values():
    # Two point masses at 0 and 2 (one dimension): S_W = 0 -> inf.
    x = np.array([[0.0], [0.0], [2.0], [2.0]])
    assert separability_index(x, [0, 0, 1, 1]) == np.inf
    # Classes {-1, 1} around 0 and {3, 5} around 4: S_W = 4 * 1 = 4;
    # global mean 2, S_B = 2*(0-2)^2 + 2*(4-2)^2 = 16 -> J = 4.
    x = np.array([[-1.0], [1.0], [3.0], [5.0]])
    assert separability_index(x, [0, 0, 1, 1]) == pytest.approx(4.0)
    # Invariant to permutation, scale-free
    perm = np.array([2, 0, 3, 1])
    assert separability_index(x[perm], np.array([0, 0, 1, 1])[perm]) == pytest.approx(4.0)
    assert separability_index(10 * x, [0, 0, 1, 1]) == pytest.approx(4.0)
    assert np.isnan(separability_index(x, [0, 0, 0, 0]))


def test_separability_gaussians_match_analytic_value():
    # Equal-size classes, d dims, means +-mu on one axis, unit variance: tr(S_W)/N -> d,
    # tr(S_B)/N -> mu^2, so J -> mu^2 / d.
    rng = np.random.default_rng(0)
    d, mu, n = 4, 3.0, 50000
    a = rng.normal(0, 1, (n, d))
    b = rng.normal(0, 1, (n, d))
    a[:, 0] -= mu
    b[:, 0] += mu
    j = separability_index(np.vstack([a, b]), np.r_[np.zeros(n), np.ones(n)])
    assert j == pytest.approx(mu**2 / d, rel=0.02)


def test_feature_map_separability_uses_mask_at_feature_resolution():
    f = np.zeros((2, 4, 4))
    f[0, :2] = 1.0  # channel 0 is on in the top half
    mask = np.zeros((16, 16), np.uint8)
    mask[:8] = 1
    assert feature_map_separability(f, mask) == np.inf
    mask[:, :8] = 255  # ignored half: still both classes, still separable
    assert feature_map_separability(f, mask) == np.inf


def test_paired_ttest_matches_hand_computation():
    a = np.array([70.0, 65.0, 80.0, np.nan, 75.0])
    b = np.array([60.0, 66.0, 71.0, 50.0, 70.0])
    t, p, n = paired_ttest(a, b)
    d = np.array([10.0, -1.0, 9.0, 5.0])
    t_hand = d.mean() / (d.std(ddof=1) / np.sqrt(4))
    assert n == 4 and t == pytest.approx(t_hand)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_hand), df=3))
    with pytest.raises(ValueError):
        paired_ttest([1.0], [2.0])
