from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelcam.metrics import PixelRatesAccumulator, pixel_rates


def _example():
    mask = np.zeros((4, 4), np.uint8)
    mask[:2] = 1  # 8 FG, 8 BG
    cam = np.zeros((4, 4))
    cam[0] = 1.0  # 4 FG predicted FG
    cam[3, :2] = 0.9  # 2 BG predicted FG
    return cam, mask


def test_hand_computed_rates_and_denominators():
    cam, mask = _example()
    # TP 4 / 8 FG, FN 4 / 8 FG, TN 6 / 8 BG, FP 2 / 8 BG
    r = pixel_rates(cam, mask, threshold=0.5)
    assert r == pytest.approx({"tp": 50.0, "fn": 50.0, "tn": 75.0, "fp": 25.0})
    assert r["tp"] + r["fn"] == pytest.approx(100) and r["tn"] + r["fp"] == pytest.approx(100)


def test_threshold_is_inclusive_and_configurable():
    cam, mask = _example()
    cam[1, 0] = 0.5  # exactly at the threshold: predicted FG
    assert pixel_rates(cam, mask)["tp"] == pytest.approx(5 / 8 * 100)
    # threshold 0.95: only the four 1.0 pixels are FG
    r = pixel_rates(cam, mask, threshold=0.95)
    assert r == pytest.approx({"tp": 50.0, "fn": 50.0, "tn": 100.0, "fp": 0.0})


def test_maps_are_normalised_unless_told_not_to():
    cam, mask = _example()
    scaled = 10.0 * cam + 3.0  # min-max normalisation makes this the same map
    assert pixel_rates(scaled, mask) == pixel_rates(cam, mask)
    half = cam * 0.5  # max 0.5, min 0: normalised back to [0, 1]
    assert pixel_rates(half, mask)["tp"] == 50.0
    # unnormalised, only values >= 0.5 count: the four 0.5 pixels, not the 0.45 ones
    assert pixel_rates(half, mask, normalize=False) == pytest.approx(
        {"tp": 50.0, "fn": 50.0, "tn": 100.0, "fp": 0.0}
    )
    # a constant map becomes zeros: nothing predicted FG
    assert pixel_rates(np.full((4, 4), 0.8), mask)["tp"] == 0.0


def test_ignore_streaming_merge_and_torch():
    rng = np.random.default_rng(0)
    masks = (rng.random((4, 12, 12)) < 0.4).astype(np.uint8)
    masks[:, 0] = 255
    maps = rng.random(masks.shape).astype(np.float32)
    one = pixel_rates(torch.from_numpy(maps), torch.from_numpy(masks))
    acc = PixelRatesAccumulator()
    for i in range(4):
        acc.update(maps[i], masks[i])
    assert acc.compute() == one
    assert acc.counts["tp"] + acc.counts["fn"] == (masks == 1).sum()
    assert acc.counts["tn"] + acc.counts["fp"] == (masks == 0).sum()
    a, b = PixelRatesAccumulator(), PixelRatesAccumulator()
    a.update(maps[:1], masks[:1])
    b.update(maps[1:], masks[1:])
    assert a.merge(b).compute() == one
    with pytest.raises(ValueError, match="settings"):
        a.merge(PixelRatesAccumulator(threshold=0.3))
    acc.reset()
    assert all(np.isnan(v) for v in acc.compute().values())


def test_missing_class_gives_nan_rates():
    r = pixel_rates(np.random.default_rng(1).random((6, 6)), np.zeros((6, 6), np.uint8))
    assert np.isnan(r["tp"]) and np.isnan(r["fn"])
    assert r["tn"] + r["fp"] == pytest.approx(100)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        pixel_rates(np.zeros((4, 4)), np.zeros((4, 5), np.uint8))
