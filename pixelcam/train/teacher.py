"""The teacher-CAM cache: the true-class CAM of every training image, computed ONCE from
the baseline checkpoint and stored on disk (``teacher_cams.safetensors`` + ``.json``).

Each CAM is computed on the image resized to ``size`` (no augmentation) and stored at that
resolution as float16; the dataset resizes it back to the image size and sends it through
the same random crop/flips as the image every epoch, so no teacher forward (or backward,
for GradCAM++/LayerCAM with autograd) runs during PixelCAM training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pixelcam.data.dataset import WSOLDataset, collate_samples
from pixelcam.data.transforms import EvalTransform
from pixelcam.errors import InputError
from pixelcam.fileio import atomic_write_text

CACHE_NAME = "teacher_cams"


def _fingerprint(
    checkpoint: Path, method: str, size: int, ids: list[str], views: str = "single"
) -> str:
    info = json.loads(Path(checkpoint).with_suffix(".json").read_text(encoding="utf-8"))
    sha = info.get("weights", {}).get("sha256", "")
    # "single" keeps the key of caches written before views existed
    key = json.dumps([sha, method, size, sorted(ids)] + ([] if views == "single" else [views]))
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def compute_teacher_cams(
    model: torch.nn.Module,
    dataset: WSOLDataset,
    method: str,
    device: torch.device | str = "cpu",
    size: int = 224,
    batch_size: int = 16,
    views: str = "single",
) -> dict[str, np.ndarray]:
    """True-class ``method`` CAMs of every image of ``dataset``, as float32 ``size x size``,
    averaged over ``views`` (:data:`pixelcam.cams.views.VIEWS`)."""
    from pixelcam.cams import get_method
    from pixelcam.cams.views import viewed_maps

    if not get_method(method).applies(model):
        raise InputError(f"teacher method {method!r} does not apply to this checkpoint's head")
    loader = DataLoader(
        dataset.with_transform(EvalTransform(size=size)),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_samples,
    )
    model.eval()
    out: dict[str, np.ndarray] = {}
    for batch in loader:
        images = batch["image"].to(device)
        maps = viewed_maps(model, images, method, batch["label"].to(device), views)
        for i, cam in zip(batch["id"], maps.detach().float().cpu().numpy()):
            out[i] = cam.astype(np.float32)
    return out


def cached_teacher_cams(
    checkpoint: Path,
    dataset: WSOLDataset,
    method: str,
    out: Path,
    device: torch.device | str = "cpu",
    size: int = 224,
    log: Any = None,
    views: str = "single",
) -> dict[str, np.ndarray]:
    """Load the cache in ``out`` when it matches (checkpoint hash, method, size, views, ids);
    otherwise compute it with :func:`compute_teacher_cams` and write it atomically."""
    from safetensors.numpy import load_file, save_file

    from pixelcam.models import load_checkpoint

    fp = _fingerprint(checkpoint, method, size, list(dataset.ids), views)
    weights, meta = out / f"{CACHE_NAME}.safetensors", out / f"{CACHE_NAME}.json"
    if weights.exists() and meta.exists():
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("fingerprint") == fp:
                cams = {k: v.astype(np.float32) for k, v in load_file(str(weights)).items()}
                if log is not None:
                    log.emit("log", message=f"teacher CAMs from cache {weights} ({len(cams)})")
                return cams
        except (OSError, ValueError, json.JSONDecodeError):
            pass  # a stale or broken cache is recomputed
    teacher, _ = load_checkpoint(checkpoint, device=device)
    if log is not None:
        seen = "" if views == "single" else f" ({views} views)"
        log.emit("log", message=f"computing {method} teacher CAMs{seen} of {len(dataset)} images")
    computed = compute_teacher_cams(teacher, dataset, method, device=device, size=size,
                                    views=views)  # fmt: skip
    del teacher
    # stored as float16: use the stored values from the start, so a resumed run sees the same
    cams = {k: v.astype(np.float16).astype(np.float32) for k, v in computed.items()}
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_file({k: v.astype(np.float16) for k, v in cams.items()}, str(tmp))
    tmp.replace(weights)
    atomic_write_text(
        meta,
        json.dumps(
            {
                "fingerprint": fp,
                "checkpoint": str(checkpoint),
                "method": method,
                "size": size,
                "views": views,
                "count": len(cams),
            }
        ),
    )
    return cams
