from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from pixelcam.metrics import BIN_EDGES, PxAPAccumulator, per_image_pxap, pxap, score_histogram


def _masks(rng, b=4, h=24, w=24, p=0.3):
    return (rng.random((b, h, w)) < p).astype(np.uint8)


def test_perfect_map_gives_100():
    rng = np.random.default_rng(0)
    masks = _masks(rng)
    assert pxap(masks.astype(float), masks) == pytest.approx(100.0)


def test_constant_map_gives_foreground_fraction():
    rng = np.random.default_rng(1)
    masks = _masks(rng, p=0.37)
    frac = masks.mean()
    assert pxap(np.full(masks.shape, 0.3), masks) == pytest.approx(100 * frac, abs=1e-6)


def test_random_maps_agree_with_sklearn_average_precision():
    # sklearn's AP uses every distinct score as a threshold; PxAP uses 1000 bins: scores
    # quantised to 0.001 make the two curves the same up to ties inside a bin.
    worst = 0.0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        masks = _masks(rng, b=3, h=40, w=40, p=0.2 + 0.1 * seed)
        maps = np.clip(rng.normal(0.5, 0.2, masks.shape) + 0.2 * masks, 0, 1)
        maps[:, 0, 0], maps[:, 0, 1] = 0.0, 1.0  # min-max normalisation is then a no-op
        ours = pxap(maps, masks)
        ref = 100 * average_precision_score(masks.ravel(), maps.ravel())
        worst = max(worst, abs(ours - ref))
    assert worst < 0.5, worst  # measured: 0.07 points at most


def test_hand_computed_4x4():
    # FG pixels score 0.9, 0.8, 0.3; BG pixels: one at 0.8, twelve at 0.1 (min 0.1 and
    # max 0.9 are normalised to 0 and 1: scores become 1.0, 0.875, 0.25 / 0.875, 0.0).
    # Descending thresholds: at 1.0 -> tp 1, fp 0 (P 1, R 1/3); at 0.875 -> tp 2, fp 1
    # (P 2/3, R 2/3); at 0.25 -> tp 3, fp 1 (P 3/4, R 1); at 0 -> tp 3, fp 13 (R stays 1).
    # AP = 1*(1/3) + (2/3)*(1/3) + (3/4)*(1/3) = 0.80556 -> 80.556
    cam = np.full((4, 4), 0.1)
    mask = np.zeros((4, 4), np.uint8)
    cam[0, 0], cam[0, 1], cam[0, 2], cam[0, 3] = 0.9, 0.8, 0.3, 0.8
    mask[0, :3] = 1
    assert pxap(cam, mask) == pytest.approx(100 * (1 / 3 + 2 / 9 + 1 / 4), abs=1e-9)


def test_ignore_value_is_excluded():
    rng = np.random.default_rng(3)
    masks = _masks(rng)
    maps = rng.random(masks.shape)
    ignored = masks.copy()
    ignored[:, :5] = 255
    cut = maps.copy()
    cut[:, :5] = 0.0  # whatever the map says there must not matter
    a = PxAPAccumulator(normalize=False)
    a.update(maps, ignored)
    b = PxAPAccumulator(normalize=False)
    b.update(cut, ignored)
    assert a.compute() == b.compute()
    assert a.fg_hist.sum() + a.bg_hist.sum() == (ignored != 255).sum()


def test_streaming_equals_one_shot_and_merge(tmp_path):
    rng = np.random.default_rng(4)
    masks = _masks(rng, b=6)
    maps = torch.rand(masks.shape)  # torch input too
    one = pxap(maps, masks)
    acc = PxAPAccumulator()
    for i in range(0, 6, 2):
        acc.update(maps[i : i + 2], torch.from_numpy(masks[i : i + 2]))
    assert acc.compute() == pytest.approx(one, abs=1e-12)
    a, b = PxAPAccumulator(), PxAPAccumulator()
    a.update(maps[:3], masks[:3])
    b.update(maps[3:], masks[3:])
    assert a.merge(b).compute() == pytest.approx(one, abs=1e-12)


def test_histogram_is_bin_exact_with_numpy():
    rng = np.random.default_rng(5)
    scores = np.concatenate([rng.random(20000), BIN_EDGES[:1001], [1.0, 0.0, 0.5]])
    assert np.array_equal(score_histogram(scores), np.histogram(scores, bins=BIN_EDGES)[0])


def test_constant_and_nan_maps_become_zero_and_per_image():
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, :4] = 1
    maps = np.full((2, 8, 8), 0.7)
    maps[0, 0, 0] = np.nan
    scores = per_image_pxap(maps, masks)
    assert scores[0] == pytest.approx(50.0) and np.isnan(scores[1])  # no FG -> NaN


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        pxap(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
