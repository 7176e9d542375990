"""The data a training run reads: its splits, and the training set as the loss sees it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelcam.data.dataset import WSOLDataset

if TYPE_CHECKING:
    from pixelcam.train.config import TrainConfig


def open_split(config: TrainConfig, split: str) -> WSOLDataset:
    from pixelcam.data import open_dataset, split_options

    if config.dataset == "synthetic":
        root = config.data_root or str(Path(config.out) / "synthetic-data")
        root_path = Path(root)
        kw: dict[str, Any] = {}
        if not root_path.exists() or not any(root_path.iterdir()):
            kw = {
                "n_per_class": config.synthetic_n_per_class,
                "size": config.synthetic_size,
                "seed": config.seed,
            }
        return open_dataset("synthetic", root, split=split, **kw)
    fold, kw = split_options(config.dataset, config.fold, config.folds_dir, config.missing)
    return open_dataset(config.dataset, config.data_root, split=split, fold=fold, **kw)


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
