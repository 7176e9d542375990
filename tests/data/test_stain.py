"""HED re-staining: identity at 0, determinism, graded approach to the target."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelcam.data.stain import (
    StainProfile,
    hed_to_rgb,
    profile_distance,
    restain,
    rgb_to_hed,
    stain_profile,
    stain_shift_series,
)
from pixelcam.errors import InputError


def _he_image(seed: int, h_amount: float, e_amount: float, size: int = 48) -> np.ndarray:
    """An H&E-like image made in HED space: smooth blobs of haematoxylin over eosin."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    hed = np.zeros((size, size, 3))
    hed[..., 0] = h_amount * (0.5 + 0.5 * np.sin(9 * x + rng.uniform(0, 6)) * np.cos(7 * y))
    hed[..., 1] = e_amount * (0.6 + 0.4 * np.cos(5 * x * y + rng.uniform(0, 6)))
    hed[..., 2] = 0.005 * rng.random((size, size))
    hed += rng.normal(0, 0.003, hed.shape)
    return hed_to_rgb(hed)


SOURCE = _he_image(0, 0.08, 0.05)
TARGET = stain_profile([_he_image(1, 0.03, 0.10), _he_image(2, 0.035, 0.09)])


def test_hed_round_trip_is_exact():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(hed_to_rgb(rgb_to_hed(img)), img)


def test_strength_zero_is_identity():
    out = restain(SOURCE, TARGET, 0.0)
    np.testing.assert_array_equal(out, SOURCE)
    assert out is not SOURCE
    nearly = restain(SOURCE, TARGET, 1e-9)  # the full HED path, not the shortcut
    assert np.abs(nearly.astype(int) - SOURCE).max() <= 1


def test_deterministic():
    a = stain_shift_series(SOURCE, TARGET)
    b = stain_shift_series(SOURCE.copy(), StainProfile(TARGET.mean.copy(), TARGET.std.copy()))
    assert len(a) == 10
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
        assert x.dtype == np.uint8 and x.shape == SOURCE.shape
    np.testing.assert_array_equal(a[4], restain(SOURCE, TARGET, 0.5))
    np.testing.assert_array_equal(a[-1], restain(SOURCE, TARGET, 1.0))
    assert len(stain_shift_series(SOURCE, TARGET, steps=4)) == 4


def test_distance_to_target_decreases_with_strength():
    series = stain_shift_series(SOURCE, TARGET)
    dists = [profile_distance(stain_profile(SOURCE), TARGET)]
    dists += [profile_distance(stain_profile(img), TARGET) for img in series]
    assert all(b < a for a, b in zip(dists, dists[1:])), dists
    assert dists[-1] < 0.1 * dists[0]
    # and the images themselves move further from the original, step by step
    moved = [np.abs(img.astype(int) - SOURCE).mean() for img in series]
    assert all(b > a for a, b in zip(moved, moved[1:]))


def test_target_as_array_and_profile_helpers():
    arr = TARGET.as_array()
    assert arr.shape == (2, 3)
    np.testing.assert_array_equal(restain(SOURCE, arr, 0.7), restain(SOURCE, TARGET, 0.7))
    np.testing.assert_array_equal(restain(SOURCE, arr.ravel(), 0.7), restain(SOURCE, TARGET, 0.7))
    assert profile_distance(TARGET, arr) == 0.0
    pooled = stain_profile([SOURCE, SOURCE[:24]])
    joined = stain_profile(np.concatenate([SOURCE, SOURCE[:24]], axis=0))
    np.testing.assert_allclose(pooled.mean, joined.mean)
    np.testing.assert_allclose(pooled.std, joined.std)


def test_errors():
    with pytest.raises(InputError, match="strength"):
        restain(SOURCE, TARGET, 1.5)
    with pytest.raises(InputError, match="uint8"):
        restain(SOURCE.astype(np.float32), TARGET, 0.5)
    with pytest.raises(InputError, match="HED stats"):
        restain(SOURCE, np.zeros(5), 0.5)
    with pytest.raises(InputError, match="steps"):
        stain_shift_series(SOURCE, TARGET, steps=0)
    with pytest.raises(InputError, match="at least one"):
        stain_profile([])
    with pytest.raises(InputError, match="invalid"):
        StainProfile([0, 0, 0], [-1, 0, 0])


def test_real_glas_restain(shared_data):
    mini = shared_data / "glas-mini"
    src = np.asarray(Image.open(mini / "train_20.bmp").convert("RGB"))
    ref = np.asarray(Image.open(mini / "train_22.bmp").convert("RGB"))
    target = StainProfile.from_array(
        stain_profile(ref).as_array() * [[1.6, 0.7, 1.0], [1.3, 1.0, 1.0]]
    )
    series = stain_shift_series(src, target)
    dists = [profile_distance(stain_profile(img), target) for img in series]
    assert all(b < a for a, b in zip(dists, dists[1:])), dists
