from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from pixelcam.metrics import (
    BIN_EDGES,
    THRESHOLDS,
    PxAPAccumulator,
    normalize_map,
    per_image_pxap,
    pxap,
    score_histogram,
)

# -- an independent transcription of the reference (wsolevaluation ``normalize_scoremap``
# -- and ``MaskEvaluator.accumulate`` / ``compute``), used as the oracle below


def _ref_normalize(cam):
    cam = cam.copy()
    if np.isnan(cam).any():
        return np.zeros_like(cam)
    if cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def _ref_histograms(maps, masks, normalize=True):
    edges = np.append(np.arange(0, 1, 0.001), [1.0, 2.0, 3.0])
    fg = np.zeros(len(edges) - 1, dtype=float)
    bg = np.zeros(len(edges) - 1, dtype=float)
    for cam, mask in zip(maps, masks):
        cam = _ref_normalize(cam) if normalize else cam
        fg += np.histogram(cam[mask == 1], bins=edges)[0].astype(float)
        bg += np.histogram(cam[mask == 0], bins=edges)[0].astype(float)
    return fg, bg


def _ref_pxap(maps, masks, normalize=True):
    fg_hist, bg_hist = _ref_histograms(maps, masks, normalize)
    num_gt_true = fg_hist.sum()
    tp = fg_hist[::-1].cumsum()
    fn = num_gt_true - tp
    fp = bg_hist[::-1].cumsum()
    non_zero_indices = (tp + fp) != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return 100 * (precision[1:] * np.diff(recall))[non_zero_indices[1:]].sum()


def _masks(rng, b=4, h=24, w=24, p=0.3):
    return (rng.random((b, h, w)) < p).astype(np.uint8)


def _signal_maps(rng, masks, dtype=np.float32):
    return (rng.normal(0.0, 1.0, masks.shape) + 1.2 * masks).astype(dtype)


def test_reference_edges():
    assert len(THRESHOLDS) == 1000 and THRESHOLDS[0] == 0 and THRESHOLDS[-1] == 0.999
    assert len(BIN_EDGES) == 1003 and BIN_EDGES[-3:].tolist() == [1.0, 2.0, 3.0]


def test_perfect_map_gives_100():
    rng = np.random.default_rng(0)
    masks = _masks(rng)
    assert pxap(masks.astype(float), masks) == pytest.approx(100.0, abs=1e-9)
    assert pxap(3.0 + 5.0 * masks, masks) == pytest.approx(100.0, abs=1e-9)  # normalised


@pytest.mark.parametrize("value", [0.0, 0.3, 1.0, -7.5])
def test_constant_map_gives_foreground_fraction(value):
    rng = np.random.default_rng(1)
    masks = _masks(rng, p=0.37)
    frac = masks.mean()
    assert pxap(np.full(masks.shape, value), masks) == pytest.approx(100 * frac, abs=1e-6)


def test_constant_map_unnormalised_gives_foreground_fraction():
    rng = np.random.default_rng(2)
    masks = _masks(rng, p=0.2)
    got = pxap(np.full(masks.shape, 0.42), masks, normalize=False)
    assert got == pytest.approx(100 * masks.mean(), abs=1e-6)


def test_hand_computed_4x4():
    # Map: 0.1 everywhere except the first row (0.9, 0.8, 0.3, 0.8); mask: the first three
    # pixels of the first row are FG (3 FG), the other 13 are BG.
    # Min-max (min 0.1, max 0.9): FG scores 1.0, 0.875, 0.25; BG scores 0.875 (one) and
    # 0.0 (twelve). Going down the thresholds (reversed cumulative sums):
    #   score >= 2:      tp 0, fp 0  -> precision undefined, recall 0 (term dropped)
    #   score >= 1.0:    tp 1, fp 0  -> P 1,    R 1/3   (dR 1/3)
    #   score >= 0.875:  tp 2, fp 1  -> P 2/3,  R 2/3   (dR 1/3)
    #   score >= 0.25:   tp 3, fp 1  -> P 3/4,  R 1     (dR 1/3)
    #   score >= 0:      tp 3, fp 13 -> P 3/16, R 1     (dR 0)
    # Every other threshold repeats the previous point (dR 0).
    # PxAP = 100 * (1 * 1/3 + 2/3 * 1/3 + 3/4 * 1/3) = 100 * (1/3 + 2/9 + 1/4) = 80.5556
    cam = np.full((4, 4), 0.1)
    mask = np.zeros((4, 4), np.uint8)
    cam[0] = [0.9, 0.8, 0.3, 0.8]
    mask[0, :3] = 1
    assert pxap(cam, mask) == pytest.approx(100 * (1 / 3 + 2 / 9 + 1 / 4), abs=1e-9)
    # the same pixels with the scores given directly (no normalisation)
    raw = np.zeros((4, 4))
    raw[0] = [1.0, 0.875, 0.25, 0.875]
    assert pxap(raw, mask, normalize=False) == pytest.approx(80.5555555556, abs=1e-9)


def test_equals_reference_transcription_exactly():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        masks = _masks(rng, b=3, h=32, w=40, p=0.15 + 0.2 * seed)
        masks[:, :3, :3] = 255
        for dtype in (np.float32, np.float64):
            maps = _signal_maps(rng, masks, dtype)
            maps[1] = 2.5  # a constant map
            maps[2, 5, 5] = np.nan  # a NaN map (zeros, as in the reference)
            acc = PxAPAccumulator()
            acc.update(maps, masks)
            fg, bg = _ref_histograms(maps, masks)
            assert np.array_equal(acc.fg_hist, fg) and np.array_equal(acc.bg_hist, bg)
            assert acc.compute() == _ref_pxap(maps, masks)


def test_histograms_are_bin_exact_at_bin_edges():
    # Scores exactly on every edge and one ulp either side of it, unnormalised, float64 and
    # float32: the accumulator's histograms must be np.histogram's with the reference edges.
    e = BIN_EDGES[:1001]  # the edges inside [0, 1]
    scores = np.concatenate([e, np.nextafter(e[:-1], 2.0), np.nextafter(e[1:], -1.0)])
    rng = np.random.default_rng(5)
    scores = np.concatenate([scores, rng.random(4000)])
    labels = (rng.random(scores.size) < 0.5).astype(np.uint8)
    for dtype in (np.float64, np.float32):
        s = scores.astype(dtype)
        acc = PxAPAccumulator(normalize=False)
        acc.update(s[None, None, :], labels[None, None, :])
        ref_fg = np.histogram(s[labels == 1], bins=BIN_EDGES)[0]
        ref_bg = np.histogram(s[labels == 0], bins=BIN_EDGES)[0]
        assert np.array_equal(acc.fg_hist, ref_fg) and np.array_equal(acc.bg_hist, ref_bg)
        assert np.array_equal(score_histogram(s), np.histogram(s, bins=BIN_EDGES)[0])
    assert score_histogram([1.0, 2.0, 3.0, 3.5, -0.1, np.nan])[-2:].tolist() == [1, 2]


def test_random_maps_agree_with_sklearn_average_precision():
    # sklearn's AP uses every distinct score as a threshold, PxAP 1000 bins: the two differ
    # only by ties inside a bin. Measured largest difference over these 10 seeds: 0.030
    # points (float64 maps of 3 x 48 x 48 pixels); 0.11 points over 20 seeds of 8 x 224 x 224
    # normalised float32 maps (not run here, to keep the test fast).
    worst = 0.0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        masks = _masks(rng, b=3, h=48, w=48, p=0.1 + 0.08 * seed)
        maps = np.clip(rng.normal(0.5, 0.2, masks.shape) + 0.15 * masks, 0, 1)
        ours = pxap(maps, masks, normalize=False)
        ref = 100 * average_precision_score(masks.ravel(), maps.ravel())
        worst = max(worst, abs(ours - ref))
    assert worst < 0.5, worst
    assert worst < 0.05, worst  # the measured bound, with some margin


def test_scores_at_bin_centres_match_sklearn_to_rounding():
    # Scores at bin centres: every distinct score has its own bin, so the PR points are
    # sklearn's and the two APs are equal up to float rounding.
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        masks = _masks(rng, b=2, h=30, w=30, p=0.3)
        k = np.clip(np.round(rng.normal(500, 150, masks.shape) + 120 * masks), 0, 999)
        maps = (k + 0.5) / 1000
        got = pxap(maps, masks, normalize=False)
        assert got == pytest.approx(100 * average_precision_score(masks.ravel(), maps.ravel()))


def test_ignore_value_is_excluded():
    rng = np.random.default_rng(3)
    masks = _masks(rng)
    maps = rng.random(masks.shape)
    ignored = masks.copy()
    ignored[:, :5] = 255
    valid = ignored != 255
    expected = pxap(maps[valid][None, None], ignored[valid][None, None], normalize=False)
    assert pxap(maps, ignored, normalize=False) == expected
    assert pxap(maps, masks, normalize=False) != expected  # the ignored pixels did matter
    cut = maps.copy()
    cut[:, :5] = 0.5  # whatever the map says there must not matter
    assert pxap(cut, ignored, normalize=False) == expected
    acc = PxAPAccumulator(normalize=False)
    acc.update(maps, ignored)
    assert acc.num_foreground == (ignored == 1).sum()
    assert acc.num_background == (ignored == 0).sum()


def test_streaming_equals_one_shot_and_merge():
    rng = np.random.default_rng(4)
    masks = _masks(rng, b=6)
    maps = torch.rand(masks.shape)  # torch input too
    one = pxap(maps, masks)
    acc = PxAPAccumulator()
    for i in range(0, 6, 2):
        acc.update(maps[i : i + 2], torch.from_numpy(masks[i : i + 2]))
    assert acc.compute() == one
    single = PxAPAccumulator()
    for i in range(6):
        single.update(maps[i], masks[i])  # one [H, W] map at a time
    assert single.compute() == one
    a, b = PxAPAccumulator(), PxAPAccumulator()
    a.update(maps[:3], masks[:3])
    b.update(maps[3:], masks[3:])
    assert a.merge(b) is a
    assert np.array_equal(a.fg_hist, acc.fg_hist) and np.array_equal(a.bg_hist, acc.bg_hist)
    assert a.compute() == one
    with pytest.raises(ValueError, match="normalize"):
        a.merge(PxAPAccumulator(normalize=False))


def test_reset_and_memory_independent_of_images():
    rng = np.random.default_rng(6)
    acc = PxAPAccumulator()
    for _ in range(5):
        masks = _masks(rng, b=4)
        acc.update(rng.random(masks.shape), masks)
    state = [v for v in vars(acc).values() if isinstance(v, np.ndarray)]
    assert sum(v.nbytes for v in state) == 2 * 1002 * 8  # two int64 histograms, nothing else
    assert acc.has_data()
    acc.reset()
    assert not acc.has_data() and np.isnan(acc.compute())
    assert acc.fg_hist.sum() == 0 and acc.bg_hist.sum() == 0


def test_curve():
    rng = np.random.default_rng(7)
    masks = _masks(rng, b=2, p=0.4)
    maps = _signal_maps(rng, masks)
    acc = PxAPAccumulator()
    acc.update(maps, masks)
    precision, recall, thresholds = acc.curve()
    assert precision.shape == recall.shape == thresholds.shape == (1002,)
    assert thresholds[0] == 2.0 and thresholds[1] == 1.0 and thresholds[-1] == 0.0
    assert np.all(np.diff(thresholds) < 0) and np.all(np.diff(recall) >= 0)
    assert np.isnan(precision[0]) and recall[0] == 0 and recall[-1] == 1
    assert precision[-1] == pytest.approx(masks.mean())
    # the curve's points are "score >= threshold" counts
    cams = np.stack([normalize_map(m) for m in maps])
    i = 500
    tp = ((cams >= thresholds[i]) & (masks == 1)).sum()
    assert recall[i] == pytest.approx(tp / (masks == 1).sum())
    ok = ~np.isnan(precision)
    assert 100 * np.sum((precision[1:] * np.diff(recall))[ok[1:]]) == pytest.approx(acc.compute())


def test_per_image_pxap():
    rng = np.random.default_rng(8)
    masks = _masks(rng, b=4, p=0.3)
    masks[2] = 0  # no foreground
    masks[3] = 1  # no background
    masks[0, :2] = 255
    maps = _signal_maps(rng, masks)
    scores = per_image_pxap(maps, masks)
    assert scores.shape == (4,)
    assert scores[0] == pytest.approx(pxap(maps[0], masks[0]))
    assert scores[1] == pytest.approx(pxap(maps[1], masks[1]))
    assert 0 < scores[0] < 100 and scores[0] != scores[1]
    assert np.isnan(scores[2]) and np.isnan(scores[3])
    assert np.isnan(pxap(maps[2], masks[2]))  # no FG at all: undefined


def test_normalize_map_follows_reference():
    rng = np.random.default_rng(9)
    for dtype in (np.float32, np.float64):
        cam = rng.normal(size=(16, 16)).astype(dtype)
        out = normalize_map(cam)
        assert out.dtype == dtype
        assert np.array_equal(out, _ref_normalize(cam))  # bit-identical
        assert out.min() == 0 and out.max() == 1
    assert not normalize_map(np.full((3, 3), 4.0)).any()
    nan = np.ones((3, 3))
    nan[1, 1] = np.nan
    inf = np.ones((3, 3))
    inf[0, 0] = np.inf
    assert not normalize_map(nan).any() and not normalize_map(inf).any()
    assert normalize_map(np.arange(4).reshape(2, 2)).tolist() == [[0, 1 / 3], [2 / 3, 1]]


def test_torch_inputs_and_half_precision():
    rng = np.random.default_rng(11)
    masks = _masks(rng, b=2)
    maps = _signal_maps(rng, masks)
    expected = pxap(maps, masks)
    assert pxap(torch.from_numpy(maps), torch.from_numpy(masks)) == expected
    assert pxap(torch.from_numpy(maps), torch.from_numpy(masks).bool()) == expected
    half = torch.from_numpy(maps).half()
    assert pxap(half, masks) == pxap(half.float().numpy(), masks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors():
    rng = np.random.default_rng(12)
    masks = _masks(rng, b=2)
    maps = _signal_maps(rng, masks)
    got = pxap(torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda())
    assert got == pxap(maps, masks)
    assert per_image_pxap(torch.from_numpy(maps).cuda(), masks).tolist() == pytest.approx(
        per_image_pxap(maps, masks).tolist()
    )


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        pxap(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="same shape"):
        pxap(np.zeros((4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="same shape"):
        pxap(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="found \\[2\\]"):
        pxap(np.zeros((4, 4)), np.full((4, 4), 2, np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pxap(np.full((4, 4), 1.5), np.ones((4, 4), np.uint8), normalize=False)
    nan = np.zeros((4, 4))
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pxap(nan, np.ones((4, 4), np.uint8), normalize=False)
