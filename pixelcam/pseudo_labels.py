"""Foreground/background seed pixels sampled from a CAM: PixelCAM's pixel pseudo-labels.

Seeds are returned as a label map the size of the CAM: 1 = foreground, 0 = background,
:data:`IGNORE` elsewhere, ready for ``F.cross_entropy(..., ignore_index=IGNORE)``.

Samplers, the first two following the authors' code (see ``implementation-notes.md``):

- ``"probability"`` (alias ``"pb"``, the default): ``n`` foreground pixels drawn by
  multinomial sampling WITHOUT replacement with probability proportional to ``cam + 1e-6``; ``n``
  background pixels drawn uniformly among the lowest-CAM ``bg_fraction`` (20 %) of pixels.
- ``"threshold"`` (alias ``"th"``, the paper's Table 15 ablation): Otsu threshold on the
  CAM, ``n`` foreground pixels uniformly inside, ``n`` background pixels uniformly outside.
- ``"extremes"`` (not in the paper): ``n`` foreground pixels uniformly among the highest-CAM
  ``bg_fraction`` of pixels, ``n`` background pixels among the lowest ``bg_fraction``.

A pixel drawn as both foreground and background is ignored. Everything is batched on the
CAM's device: no Python loop over pixels, one small loop over images only for Otsu.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pixelcam.registry import Registry

IGNORE = 255
#: seed samplers by name: ``(flat_cams [B, N], n, bg_fraction) -> (fg_weights, bg_weights)``
SAMPLERS: Registry[Callable[[torch.Tensor, int, float], tuple[torch.Tensor, torch.Tensor]]] = (
    Registry("seed sampler")
)


@SAMPLERS.register("probability", aliases=("pb",), help="FG by CAM value, BG from the lowest 20%")
def _probability_weights(
    flat: torch.Tensor, n: int, bg_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    fg_w = flat.clamp(min=0.0) + 1e-6
    k_low = max(n, int(round(bg_fraction * flat.shape[1])))
    low_idx = torch.topk(flat, k=min(k_low, flat.shape[1]), dim=1, largest=False).indices
    return fg_w, torch.zeros_like(flat).scatter_(1, low_idx, 1.0)


@SAMPLERS.register("threshold", aliases=("th",), help="uniform inside / outside Otsu's threshold")
def _threshold_weights(
    flat: torch.Tensor, n: int, bg_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    inside = flat > otsu_thresholds(flat).unsqueeze(1)
    # A constant CAM has nothing above its threshold: fall back to uniform weights.
    empty_fg = ~inside.any(dim=1, keepdim=True)
    empty_bg = inside.all(dim=1, keepdim=True)
    fg_w = torch.where(empty_fg, torch.ones_like(flat), inside.float())
    return fg_w, torch.where(empty_bg, torch.ones_like(flat), (~inside).float())


@SAMPLERS.register("extremes", help="uniform among the highest / lowest bg_fraction of CAM pixels")
def _extreme_weights(
    flat: torch.Tensor, n: int, bg_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cleanest seeds a CAM offers: on real GlaS at 640 px its top 2-5 % of pixels are
    71-76 % gland against 65 % for the top 20 % (benchmarks/RESULTS.md section 8.1)."""
    k = min(flat.shape[1], max(n, int(round(bg_fraction * flat.shape[1]))))
    high = torch.topk(flat, k=k, dim=1).indices
    low = torch.topk(flat, k=k, dim=1, largest=False).indices
    zeros = torch.zeros_like(flat)
    return zeros.scatter(1, high, 1.0), zeros.scatter(1, low, 1.0)


def sample_seeds(
    cams: torch.Tensor,
    n: int = 5,
    sampler: str = "probability",
    bg_fraction: float = 0.2,
    eligible: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``n`` FG and ``n`` BG seeds per image from CAMs ``[B, H, W]`` in [0, 1].

    ``eligible`` (bool ``[B]``) restricts seeds to some images (e.g. CAMELYON16 tumour
    patches only); the others get no seed at all. Returns a long tensor ``[B, H, W]``.
    """
    if cams.ndim != 3:
        raise ValueError(f"cams must be [B, H, W], got shape {tuple(cams.shape)}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS.choices()}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 < bg_fraction <= 1.0:
        raise ValueError(f"bg_fraction must be in (0, 1], got {bg_fraction}")
    b, h, w = cams.shape
    flat = torch.nan_to_num(cams.detach().float(), nan=0.0).reshape(b, h * w)
    fg_w, bg_w = SAMPLERS.get(sampler)(flat, n, bg_fraction)
    fg_idx = _draw(fg_w, n, generator)
    bg_idx = _draw(bg_w, n, generator)

    fg_hit = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, fg_idx, True)
    bg_hit = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, bg_idx, True)
    seeds = torch.full_like(flat, IGNORE, dtype=torch.long)
    seeds[fg_hit & ~bg_hit] = 1
    seeds[bg_hit & ~fg_hit] = 0
    if eligible is not None:
        seeds[~eligible.to(seeds.device).bool()] = IGNORE
    return seeds.reshape(b, h, w)


def _draw(weights: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` indices per row without replacement (fewer non-zero weights: all of them)."""
    k = min(n, weights.shape[1])
    nonzero = (weights > 0).sum(dim=1).min().item()
    if nonzero < k:  # multinomial refuses rows with fewer non-zero entries than draws
        weights = weights + 1e-12
    return torch.multinomial(weights, k, replacement=False, generator=generator)


def otsu_thresholds(flat: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each row of ``flat`` ``[B, N]`` (values in [0, 1])."""
    b = flat.shape[0]
    q = (flat.clamp(0, 1) * (bins - 1)).round().long()
    hist = torch.zeros(b, bins, device=flat.device).scatter_add_(1, q, torch.ones_like(flat))
    p = hist / hist.sum(dim=1, keepdim=True)
    centers = torch.arange(bins, device=flat.device, dtype=torch.float32) / (bins - 1)
    w0 = p.cumsum(dim=1)
    mu = (p * centers).cumsum(dim=1)
    mu_t = mu[:, -1:]
    w1 = 1.0 - w0
    between = (mu_t * w0 - mu) ** 2 / (w0 * w1).clamp(min=1e-12)
    between[(w0 <= 0) | (w1 <= 1e-12)] = -1.0
    return centers[between.argmax(dim=1)]


def sample_points(
    cam: torch.Tensor,
    n: int = 5,
    sampler: str = "probability",
    bg_fraction: float = 0.2,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeds of ONE map ``[H, W]`` as point coordinates ``[N, 2]`` (row, col) and labels
    ``[N]`` (1 FG, 0 BG): the same draw as training, for showing and editing in a viewer."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    seeds = sample_seeds(
        torch.as_tensor(cam, dtype=torch.float32)[None],
        n=n,
        sampler=sampler,
        bg_fraction=bg_fraction,
        generator=gen,
    )[0]
    coords = (seeds != IGNORE).nonzero()
    return coords, seeds[coords[:, 0], coords[:, 1]]
