"""Stain shift: re-stain H&E images in HED space towards another stain, in graded steps.

Used for the robustness experiment of the PixelCAM paper (Figures 4-5, 9-10): test images
re-stained with the stain of another dataset at 10 graded distances. Here each image's
per-channel HED statistics (mean, std over all pixels; Reinhard-style matching in the
colour-deconvolution space of Ruifrok & Johnston) are moved towards a target profile by a
``strength`` in [0, 1]: 0 = the original image, 1 = the target's statistics.

Only scikit-image is needed (its HED matrices ``hed_from_rgb`` and ``hed2rgb``); torchstain
is NOT used, as HED re-staining needs nothing from it. The forward RGB -> HED transform is
done here WITHOUT clipping negative stain amounts at 0 (``skimage.color.rgb2hed`` clips
them, which makes the round trip lossy: up to 80 grey levels on 11% of a GlaS image's
pixels), so a strength near 0 gives back the image exactly. Everything is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from skimage.color import hed2rgb, hed_from_rgb

from pixelcam.errors import InputError

__all__ = [
    "StainProfile",
    "profile_distance",
    "restain",
    "rgb_to_hed",
    "hed_to_rgb",
    "stain_profile",
    "stain_shift_series",
]

_LOG_ADJUST = np.log(1e-6)
_EPS = 1e-8


def _check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise InputError(
            f"{name} must be a uint8 RGB array (H, W, 3), got {image.dtype} {image.shape}"
        )
    return image


def rgb_to_hed(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> HED stain amounts float64 (H, W, 3), not clipped at 0."""
    rgb = np.maximum(_check_rgb(image).astype(np.float64) / 255.0, 1e-6)
    return (np.log(rgb) / _LOG_ADJUST) @ hed_from_rgb


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """HED stain amounts (H, W, 3) -> uint8 RGB (skimage's ``hed2rgb``, rounded)."""
    rgb = hed2rgb(np.asarray(hed, dtype=np.float64))
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class StainProfile:
    """Per-channel mean and standard deviation of the H, E and D stain amounts."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if mean.shape != (3,) or std.shape != (3,):
            raise InputError(f"a stain profile needs 3 means and 3 stds, got {mean}, {std}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))) or np.any(std < 0):
            raise InputError(f"invalid stain profile: mean {mean}, std {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def as_array(self) -> np.ndarray:
        """(2, 3) array: row 0 the means, row 1 the stds."""
        return np.stack([self.mean, self.std])

    @classmethod
    def from_array(cls, stats: np.ndarray) -> StainProfile:
        """From a (2, 3) array [means; stds] or the 6 values flattened."""
        stats = np.asarray(stats, dtype=np.float64)
        if stats.size != 6:
            raise InputError(f"HED stats must be (2, 3) [mean; std], got shape {stats.shape}")
        stats = stats.reshape(2, 3)
        return cls(stats[0], stats[1])


def stain_profile(images: np.ndarray | Iterable[np.ndarray]) -> StainProfile:
    """Pooled per-channel HED mean/std over all pixels of one or more reference images."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for i, image in enumerate(images):
        hed = rgb_to_hed(_check_rgb(image, f"reference image {i}")).reshape(-1, 3)
        total += hed.sum(axis=0)
        total_sq += np.square(hed).sum(axis=0)
        count += hed.shape[0]
    if count == 0:
        raise InputError("stain_profile needs at least one reference image")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return StainProfile(mean, std)


def _as_profile(target: StainProfile | np.ndarray) -> StainProfile:
    return target if isinstance(target, StainProfile) else StainProfile.from_array(target)


def profile_distance(a: StainProfile | np.ndarray, b: StainProfile | np.ndarray) -> float:
    """Euclidean distance between two profiles' (mean, std) vectors, in HED units."""
    return float(np.linalg.norm(_as_profile(a).as_array() - _as_profile(b).as_array()))


def restain(
    image: np.ndarray, target: StainProfile | np.ndarray, strength: float = 1.0
) -> np.ndarray:
    """Move ``image``'s HED statistics towards ``target`` by ``strength`` in [0, 1].

    Each stain channel is standardised with the image's own mean/std and rescaled to
    ``(1 - s) * own + s * target`` (mean and std alike). Returns uint8 RGB; strength 0
    returns a copy of the image.
    """
    image = _check_rgb(image)
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"strength must be in [0, 1], got {strength}")
    target = _as_profile(target)
    if strength == 0.0:
        return image.copy()
    hed = rgb_to_hed(image)
    flat = hed.reshape(-1, 3)
    src_mean, src_std = flat.mean(axis=0), flat.std(axis=0)
    new_mean = src_mean + strength * (target.mean - src_mean)
    new_std = src_std + strength * (target.std - src_std)
    scale = np.where(src_std > _EPS, new_std / np.maximum(src_std, _EPS), 1.0)
    shifted = (hed - src_mean) * scale + new_mean
    return hed_to_rgb(shifted)


def stain_shift_series(
    image: np.ndarray, target: StainProfile | np.ndarray, steps: int = 10
) -> list[np.ndarray]:
    """``steps`` re-stained copies at strengths 1/steps, 2/steps, ..., 1 (0.1 ... 1.0 for 10)."""
    if int(steps) < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    steps = int(steps)
    return [restain(image, target, k / steps) for k in range(1, steps + 1)]
