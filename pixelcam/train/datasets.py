"""The data a training run reads: its splits, and the training set as the loss sees it."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelcam.data.dataset import WSOLDataset
from pixelcam.errors import InputError

if TYPE_CHECKING:
    from pixelcam.train.config import TrainConfig


#: Training splits of at most this many images are decoded once before epoch 0 (a few
#: seconds), so that a bad file stops the run before anything is trained or written.
CHECK_LIMIT = 2000


def open_split(config: TrainConfig, split: str) -> WSOLDataset:
    from pixelcam.data import open_dataset, split_options

    if config.dataset == "synthetic":
        if not config.data_root:  # the run's own set: (re)written until complete
            from pixelcam.data.synthetic import write_synthetic_dataset

            root = Path(config.out).expanduser() / "synthetic-data"
            write_synthetic_dataset(  # idempotent; completes a set a killed run left half-made
                root, n_per_class=config.synthetic_n_per_class, size=config.synthetic_size,
                seed=config.seed,
            )  # fmt: skip
            return open_dataset("synthetic", root, split=split)
        root_path = Path(config.data_root)
        kw: dict[str, Any] = {}
        if not root_path.exists() or not any(root_path.iterdir()):
            kw = {
                "n_per_class": config.synthetic_n_per_class,
                "size": config.synthetic_size,
                "seed": config.seed,
            }
        return open_dataset("synthetic", config.data_root, split=split, **kw)
    fold, kw = split_options(config.dataset, config.fold, config.folds_dir, config.missing)
    return open_dataset(config.dataset, config.data_root, split=split, fold=fold, **kw)


def readable_training_set(
    dataset: WSOLDataset, skip: bool, warn: Callable[[str], None], limit: int = CHECK_LIMIT
) -> WSOLDataset:
    """``dataset`` once every image of it decodes (checked when it has at most ``limit``
    images): an unreadable one raises :class:`InputError` naming it, or with ``skip`` is
    left out, ``warn`` saying how many and which."""
    if len(dataset) > limit:
        return dataset
    from concurrent.futures import ThreadPoolExecutor

    from pixelcam.data.io import read_image

    def problem(rec: Any) -> InputError | None:
        try:
            read_image(rec.image_path)
        except InputError as exc:
            return exc
        return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(problem, dataset.records))
    bad = [(rec, exc) for rec, exc in zip(dataset.records, problems) if exc is not None]
    if not bad:
        return dataset
    more = f" (and {len(bad) - 1} more unreadable training image(s))" if len(bad) > 1 else ""
    if not skip:
        raise InputError(
            f"{bad[0][1]}{more}; fix or remove it, or skip unreadable training images "
            "(--skip-unreadable, skip_unreadable=True)"
        )
    keep = [rec.id for rec, exc in zip(dataset.records, problems) if exc is None]
    if not keep:
        raise InputError(f"none of the {len(dataset)} training images is readable: {bad[0][1]}")
    names = ", ".join(str(rec.image_path) for rec, _ in bad[:5])
    warn(
        f"warning: skipped {len(bad)} unreadable training image(s) of {len(dataset)}: "
        + names
        + (", ..." if len(bad) > 5 else "")
    )
    return dataset.subset(keep)


class TrainingView(WSOLDataset):
    """The training set as the loss sees it: image, label, teacher CAM, and in the mask
    slot the user's saved point annotations (1 FG, 0 BG, 255 elsewhere), which go through
    the same geometric transform as the image. Ground-truth masks are never read here:
    training stays weakly supervised.

    Points are drawn as small disks (radius ~ image size / ``resize``) so that the
    nearest-neighbour resize to the training size keeps them.
    """

    def __init__(self, base: WSOLDataset, transform, cams, annotations, resize: int) -> None:
        super().__init__(base.records, base.class_names, transform=transform, cams=cams)
        self.annotations = annotations
        self.resize = resize

    def __getitem__(self, index: int):
        from pixelcam.annotations import seed_map
        from pixelcam.data.dataset import Sample
        from pixelcam.data.io import read_image

        rec = self.records[index]
        image = read_image(rec.image_path)
        size = (int(image.shape[0]), int(image.shape[1]))
        cam = self._cam_for(rec, size)
        ann = self.annotations.get(rec.id)
        points = None
        if ann is not None:
            radius = max(1, math.ceil(max(size) / self.resize))
            points = seed_map(ann, size, radius=radius)
        image, points, cam = self.transform(image, mask=points, cam=cam)
        return Sample(image, rec.label, points, rec.id, cam)
