"""Evaluate a model the paper's way over a dataset: classification accuracy, PxAP per map
method (one PR curve over every pixel of the split), pixel confusion rates, per-image PxAP
(for paired t-tests) and the mean class separability J of the pixel features.

Maps are computed at the evaluation size (images resized to ``size``, as the paper
evaluates at 224x224) and compared with the masks resized the same way (nearest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pixelcam.data.dataset import WSOLDataset, collate_samples
from pixelcam.data.transforms import EvalTransform
from pixelcam.validation import MAX_WORKERS, check_count, check_input_size, check_threshold


@dataclass
class EvalResult:
    """Everything :func:`evaluate_model` measured (JSON-able through :meth:`to_dict`)."""

    n_images: int
    #: None for a model without a trained classifier (the fully supervised U-Net)
    accuracy: float | None
    pxap: dict[str, float] = field(default_factory=dict)
    pixel_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    separability: float | None = None
    predictions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def has_classifier(model: torch.nn.Module) -> bool:
    """False for the fully supervised U-Net, whose image head is never trained."""
    return getattr(model, "config", {}).get("decoder") != "unet"


def evaluate_model(
    model: torch.nn.Module,
    dataset: WSOLDataset,
    methods: Sequence[str] = ("pixelcam",),
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    size: int | None = 224,
    threshold: float = 0.5,
    separability: bool = False,
    per_image: bool = False,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset``; maps are scored only on images with a known mask.

    The CAM target is the TRUE class (the WSOL protocol of Choe et al.; PixelCAM's map is
    class-agnostic anyway). ``size``, ``threshold`` (in [0, 1]), ``batch_size`` and
    ``num_workers`` are checked (:mod:`pixelcam.validation`): InputError when out of range.
    """
    from pixelcam.cams import compute_maps
    from pixelcam.metrics import (
        ClassificationAccumulator,
        PixelRatesAccumulator,
        PxAPAccumulator,
        feature_map_separability,
        per_image_pxap,
    )

    size = check_input_size(size, "size", allow_none=True)
    threshold = check_threshold(threshold)
    batch_size = check_count(batch_size, "batch_size")
    num_workers = check_count(num_workers, "num_workers", 0, MAX_WORKERS)
    device = torch.device(device)
    ds = dataset.with_transform(EvalTransform(size=size))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_samples,
        num_workers=num_workers,
    )
    cls_acc = ClassificationAccumulator(dataset.num_classes)
    pxaps = {m: PxAPAccumulator() for m in methods}
    rates = {m: PixelRatesAccumulator(threshold=threshold) for m in methods}
    image_scores: dict[str, dict[str, float]] = {}
    js: list[float] = []
    predictions: dict[str, int] = {}
    model.eval()
    done = 0
    for batch in loader:
        images = batch["image"].to(device)
        labels = batch["label"].to(device)
        has_mask = batch["has_mask"]
        result = compute_maps(model, images, methods=list(methods), target=labels)
        cls_acc.update(result.logits.detach().cpu(), labels.cpu())
        for i, pred in zip(batch["id"], result.logits.argmax(1).tolist()):
            predictions[i] = int(pred)
        if has_mask.any():
            sel = has_mask.nonzero().flatten()
            masks = batch["mask"][sel]
            for m in methods:
                maps = result.maps[m].detach().float().cpu()[sel]
                pxaps[m].update(maps, masks)
                rates[m].update(maps, masks)
                if per_image:
                    for i, score in zip(
                        [batch["id"][j] for j in sel.tolist()], per_image_pxap(maps, masks)
                    ):
                        image_scores.setdefault(i, {})[m] = float(score)
            if separability:
                feats = result.features.detach().float().cpu()[sel]
                for f, mk in zip(feats, masks):
                    j = feature_map_separability(f, mk)
                    if np.isfinite(j):
                        js.append(float(j))
        done += len(batch["id"])
        if progress is not None:
            progress(done, len(ds))
    has_any = any(a.has_data() for a in pxaps.values()) if pxaps else False
    return EvalResult(
        n_images=len(ds),
        accuracy=float(cls_acc.accuracy()) if has_classifier(model) else None,
        pxap={m: float(a.compute()) for m, a in pxaps.items()} if has_any else {},
        pixel_rates={m: r.compute() for m, r in rates.items()} if has_any else {},
        per_image=image_scores,
        separability=float(np.mean(js)) if js else None,
        predictions=predictions,
    )
