from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pixelcam.metrics import paired_ttest


def test_paired_ttest_matches_hand_computation():
    a = np.array([70.0, 65.0, 80.0, np.nan, 75.0, 60.0])
    b = np.array([60.0, 66.0, 71.0, 50.0, 70.0, np.nan])
    t, p, n = paired_ttest(a, b)
    # Pairs left: differences d = 10, -1, 9, 5 (n = 4). mean(d) = 23/4 = 5.75;
    # sum((d - 5.75)^2) = 18.0625 + 45.5625 + 10.5625 + 0.5625 = 74.75, s^2 = 74.75/3;
    # t = 5.75 / sqrt(74.75 / 3 / 4) = 2.30384...; p = 2 * P(T_3 > |t|).
    t_hand = 5.75 / math.sqrt(74.75 / 3 / 4)
    assert n == 4
    assert t == pytest.approx(t_hand, rel=1e-12) and t == pytest.approx(2.303843, rel=1e-6)
    assert p == pytest.approx(2 * stats.t.sf(t_hand, df=3), rel=1e-12)
    t_rev, p_rev, _ = paired_ttest(b, a)  # sign follows a - b
    assert t_rev == pytest.approx(-t) and p_rev == pytest.approx(p)


def test_paired_ttest_accepts_torch_and_lists():
    a, b = [1.0, 2.0, 4.0], [0.5, 2.5, 3.0]
    expected = paired_ttest(np.array(a), np.array(b))
    assert paired_ttest(torch.tensor(a), b) == pytest.approx(expected)


def test_paired_ttest_errors():
    with pytest.raises(ValueError, match="at least 2"):
        paired_ttest([1.0], [2.0])
    with pytest.raises(ValueError, match="got 1"):
        paired_ttest([1.0, np.nan, 3.0], [2.0, 2.0, np.inf])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_ttest([1.0, 2.0, 3.0], [1.0, 2.0])
