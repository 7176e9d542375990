"""Joint transforms keep image, mask and CAM aligned; jitter touches the image only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelcam.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    denormalize,
    resize_map,
)
from pixelcam.errors import InputError


def _block_mask(h: int, w: int, rng: np.random.Generator, step: int) -> np.ndarray:
    """Random axis-aligned blocks whose edges fall on multiples of ``step``."""
    m = np.zeros((h, w), np.uint8)
    for _ in range(3):
        y0, x0 = rng.integers(0, h // step) * step, rng.integers(0, w // step) * step
        y1 = min(h, y0 + int(rng.integers(1, 4)) * step)
        x1 = min(w, x0 + int(rng.integers(1, 4)) * step)
        m[y0:y1, x0:x1] = 1
    return m


def _image_from(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image that encodes position, so misaligned geometry would show."""
    h, w = mask.shape
    img = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
    img[..., 0] = np.where(mask > 0, 255, 0)
    return img


@pytest.mark.parametrize(
    "resize,crop",
    [(None, None), (None, (24, 20)), ((64, 48), None), ((16, 12), None), ((64, 48), (40, 24))],
)
def test_train_geometry_keeps_cam_equal_to_mask(resize, crop):
    """cam = mask before; after any geometry, cam > 0.5 equals the transformed mask.

    Blocks lie on a grid of 4 pixels and resizes are by 2 or 1/2, so bilinear-then-
    threshold and nearest agree exactly (no boundary ambiguity).
    """
    rng = np.random.default_rng(0)
    t = TrainTransform(resize=resize, crop=crop, color_jitter=None, normalize=False)
    for seed in range(30):
        mask = _block_mask(32, 24, rng, step=4)
        image = _image_from(mask, rng)
        torch.manual_seed(seed)
        img, m, cam = t(image, mask=mask, cam=mask.astype(np.float32))
        expected_hw = crop or resize or (32, 24)
        assert img.shape == (3, *expected_hw) and img.dtype == torch.float32
        assert m.shape == tuple(expected_hw) and m.dtype == torch.uint8
        assert cam.shape == tuple(expected_hw) and cam.dtype == torch.float32
        np.testing.assert_array_equal((cam > 0.5).numpy().astype(np.uint8), m.numpy())
        # the image's red channel carries the mask: it moved the same way
        np.testing.assert_array_equal((img[0] > 0.5).numpy().astype(np.uint8), m.numpy())
        if resize is None and crop is None:
            assert int(m.sum()) == int(mask.sum())  # flips only: no pixel gained or lost


def test_flips_and_crops_are_exact_permutations():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (20, 30), dtype=np.uint8)
    cam = rng.random((20, 30)).astype(np.float32)
    t = TrainTransform(resize=None, crop=(12, 16), color_jitter=None, normalize=False)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        img, m, c = t(image, mask=mask, cam=cam)
        img_u8 = np.round(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        # find the source window: undo flips by trying all four
        found = False
        for fy in (False, True):
            for fx in (False, True):
                sl = [slice(None, None, -1 if fy else 1), slice(None, None, -1 if fx else 1)]
                img_s, m_s, c_s = img_u8[tuple(sl)], m.numpy()[tuple(sl)], c.numpy()[tuple(sl)]
                for top in range(20 - 12 + 1):
                    for left in range(30 - 16 + 1):
                        window = (slice(top, top + 12), slice(left, left + 16))
                        if np.array_equal(image[window], img_s):
                            assert np.array_equal(mask[window], m_s)
                            np.testing.assert_allclose(cam[window], c_s, rtol=0, atol=0)
                            found = True
                            seen.add((fy, fx))
        assert found
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_upsampling_resize_agrees_with_nearest_mask():
    rng = np.random.default_rng(2)
    mask = _block_mask(16, 12, rng, step=1)
    t = EvalTransform(size=(32, 24), normalize=False)
    _, m, cam = t(_image_from(mask, rng), mask=mask, cam=mask.astype(np.float32))
    np.testing.assert_array_equal((cam > 0.5).numpy().astype(np.uint8), m.numpy())
    np.testing.assert_array_equal(m.numpy(), np.kron(mask, np.ones((2, 2), np.uint8)))


def test_odd_resize_disagrees_only_on_boundaries():
    rng = np.random.default_rng(3)
    for _ in range(10):
        mask = _block_mask(37, 29, rng, step=1)
        t = EvalTransform(size=(23, 41), normalize=False)
        _, m, cam = t(_image_from(mask, rng), mask=mask, cam=mask.astype(np.float32))
        diff = (cam > 0.5).numpy() != m.numpy().astype(bool)
        m_np = m.numpy().astype(int)
        padded = np.pad(m_np, 1, mode="edge")
        boundary = np.zeros_like(diff)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                boundary |= padded[1 + dy : 1 + dy + 23, 1 + dx : 1 + dx + 41] != m_np
        assert not (diff & ~boundary).any()


def test_colour_jitter_changes_image_not_mask_or_cam():
    rng = np.random.default_rng(4)
    image = rng.integers(30, 220, (24, 24, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (24, 24), dtype=np.uint8)
    cam = rng.random((24, 24)).astype(np.float32)
    plain = TrainTransform(resize=None, crop=None, color_jitter=None, normalize=False)
    jitter = TrainTransform(resize=None, crop=None, normalize=False)
    changed = 0
    for seed in range(5):
        torch.manual_seed(seed)
        i0, m0, c0 = plain(image, mask=mask, cam=cam)
        torch.manual_seed(seed)
        i1, m1, c1 = jitter(image, mask=mask, cam=cam)
        assert torch.equal(m0, m1) and torch.equal(c0, c1)
        changed += int(not torch.allclose(i0, i1))
    assert changed == 5


def test_draws_do_not_depend_on_mask_or_cam():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    t = TrainTransform(resize=32, crop=24)
    torch.manual_seed(7)
    a, _, _ = t(image)
    torch.manual_seed(7)
    b, m, c = t(image, mask=np.zeros((40, 40), np.uint8), cam=np.zeros((40, 40), np.float32))
    assert torch.equal(a, b) and m is not None and c is not None
    torch.manual_seed(8)
    d, _, _ = t(image)
    assert not torch.equal(a, d)


def test_cam_of_other_resolution_is_resized_first():
    image = np.zeros((32, 32, 3), np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[:, 4:] = 1.0  # right half
    _, _, c = EvalTransform(size=None, normalize=False)(image, cam=cam)
    assert c.shape == (32, 32)
    assert c[:, :14].max() < 0.5 and c[:, 18:].min() > 0.5


def test_normalize_and_denormalize_round_trip():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    img, m, c = EvalTransform(size=None)(image)
    assert m is None and c is None
    expected = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(img.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(denormalize(img), image)
    batch = denormalize(torch.stack([img, img]))
    assert batch.shape == (2, 10, 12, 3)


def test_default_train_transform_sizes():
    image = np.zeros((52, 77, 3), np.uint8)
    torch.manual_seed(0)
    img, m, c = TrainTransform()(image, mask=np.zeros((52, 77), np.uint8))
    assert img.shape == (3, 224, 224) and m.shape == (224, 224) and c is None
    img, _, _ = EvalTransform()(image)
    assert img.shape == (3, 224, 224)


def test_resize_map_and_errors():
    out = resize_map(np.ones((4, 4), np.float32), (8, 6))
    assert out.shape == (8, 6) and out.dtype == np.float32 and np.allclose(out, 1)
    with pytest.raises(InputError, match="larger"):
        TrainTransform(resize=100, crop=200)
    with pytest.raises(InputError, match="color_jitter"):
        TrainTransform(color_jitter=(0.5, 0.5))
    with pytest.raises(InputError, match="larger than the image"):
        TrainTransform(resize=None, crop=50)(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InputError, match="mask"):
        EvalTransform()(np.zeros((20, 20, 3), np.uint8), mask=np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="RGB"):
        EvalTransform()(np.zeros((20, 20), np.uint8))
