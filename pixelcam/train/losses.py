"""Losses of the two decoder references (the PixelCAM losses live in the loop).

NEGEV (Belharbi et al., MIDL 2022) trains a decoder over a frozen classifier with

- a partial cross-entropy on the FG/BG seed pixels sampled from the classifier's CAM (the
  same sampler as PixelCAM's, :func:`pixelcam.pseudo_labels.sample_seeds`);
- negative evidence: every pixel of an image of the "normal" class (CAMELYON16 normal
  patches) is background (:func:`negative_evidence_ce`);
- a smoothness term between neighbouring pixels of similar colour
  (:func:`potts_smoothness`).

What differs from the original: NEGEV's CRF term is Tang et al.'s relaxed DenseCRF loss
(a Gaussian kernel over position AND colour across the whole image, through a
permutohedral lattice) and it adds a log-barrier size constraint; here the kernel is
limited to the 4-neighbourhood (the colour part of the same bilateral kernel,
``exp(-|I_p - I_q|^2 / 2 sigma^2)``, on the de-normalised RGB in [0, 1]) and there is no
size constraint. The seed term and the negative evidence are the original's.

The fully supervised U-Net uses cross-entropy + soft Dice on the masks
(:func:`segmentation_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelcam.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pixelcam.pseudo_labels import IGNORE


def seed_ce(logits: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Partial cross-entropy: mean over the seed pixels (``IGNORE`` elsewhere); 0 when the
    batch has none. ``logits`` ``[B, 2, H, W]``, ``seeds`` ``[B, H, W]`` long."""
    if not bool((seeds != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), seeds, ignore_index=IGNORE)


def pixel_seed_loss(pixel_logits: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """PixelCAM's pixel loss: the pixel head's logits ``[B, 2, h, w]`` (feature resolution)
    upsampled bilinearly to the seeds' size, then :func:`seed_ce`."""
    pl = F.interpolate(
        pixel_logits.float(), size=seeds.shape[-2:], mode="bilinear", align_corners=False
    )
    return seed_ce(pl, seeds)


def negative_evidence_ce(logits: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy towards background over every pixel of the images flagged by
    ``negative`` ``[B]`` (bool); 0 when none is."""
    if not bool(negative.any()):
        return logits.sum() * 0.0
    sel = logits[negative].float()
    target = torch.zeros(sel.shape[0], *sel.shape[-2:], dtype=torch.long, device=sel.device)
    return F.cross_entropy(sel, target)


def denormalize_batch(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``[B, 3, H, W]`` back to RGB in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() * std + mean).clamp(0.0, 1.0)


def potts_smoothness(fg: torch.Tensor, rgb: torch.Tensor, sigma: float = 0.06) -> torch.Tensor:
    """Relaxed Potts energy over 4-neighbour pixel pairs, weighted by colour similarity.

    For neighbours p, q: ``w_pq * (s_p (1 - s_q) + s_q (1 - s_p))`` with
    ``w_pq = exp(-|I_p - I_q|^2 / (2 sigma^2))``: zero when both agree (0 or 1), largest
    when similar-coloured neighbours disagree; averaged over all pairs. ``fg`` ``[B, H, W]``
    foreground probabilities, ``rgb`` ``[B, 3, H, W]`` in [0, 1] (resized to ``fg``'s size
    when it differs).
    """
    if tuple(rgb.shape[-2:]) != tuple(fg.shape[-2:]):
        rgb = F.interpolate(rgb, size=fg.shape[-2:], mode="bilinear", align_corners=False)
    rgb = rgb.float()
    fg = fg.float()
    total = fg.new_zeros(())
    pairs = 0
    for dim in (-1, -2):
        n = fg.shape[dim]
        if n < 2:
            continue
        a, b = fg.narrow(dim, 0, n - 1), fg.narrow(dim, 1, n - 1)
        ca, cb = rgb.narrow(dim, 0, n - 1), rgb.narrow(dim, 1, n - 1)
        w = torch.exp(-((ca - cb) ** 2).sum(dim=1) / (2.0 * sigma * sigma))
        total = total + (w * (a * (1 - b) + b * (1 - a))).sum()
        pairs += a.numel()
    return total / max(pairs, 1)


def dice_loss(logits: torch.Tensor, mask: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss averaged over the two classes (FG, BG), over the known pixels of the
    whole batch (``mask`` 0/1, 255 = unknown). Averaging both classes keeps an all-BG batch
    meaningful."""
    prob = torch.softmax(logits.float(), dim=1)
    known = (mask != IGNORE).float()
    losses = []
    for cls in (0, 1):
        target = (mask == cls).float() * known
        p = prob[:, cls] * known
        inter = (p * target).sum()
        losses.append(1.0 - (2.0 * inter + eps) / (p.sum() + target.sum() + eps))
    return torch.stack(losses).mean()


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """U-Net loss: cross-entropy (unknown pixels ignored) + soft Dice."""
    ce = F.cross_entropy(logits.float(), mask.long(), ignore_index=IGNORE)
    return ce + dice_loss(logits, mask)
