"""The dataset every reader returns: records (image, label, mask), optional cached CAMs.

A :class:`WSOLDataset` holds :class:`Record` s and reads files lazily in ``__getitem__``,
so building one is cheap and reading errors (a corrupt image, a mask whose size differs
from its image) surface as :class:`~pixelcam.errors.InputError` naming the file when the
sample is read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelcam.data.io import read_image, read_mask
from pixelcam.data.transforms import resize_map
from pixelcam.errors import InputError

__all__ = ["IGNORE_INDEX", "Record", "Sample", "WSOLDataset", "collate_samples"]

#: Mask value of pixels to ignore (samples whose mask is unknown), as in Choe et al.'s PxAP.
IGNORE_INDEX = 255


@dataclass(frozen=True)
class Record:
    """One image of a dataset.

    ``mask_known`` True with ``mask_path`` None means the mask is all background (e.g. a
    CAMELYON16 normal patch); ``mask_known`` False means no localization ground truth.
    """

    id: str
    image_path: Path
    label: int
    mask_path: Path | None = None
    mask_known: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_path", Path(self.image_path))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))
            if not self.mask_known:
                raise InputError(f"record {self.id!r}: a mask_path requires mask_known=True")
        if isinstance(self.label, bool) or not isinstance(self.label, (int, np.integer)):
            raise InputError(f"record {self.id!r}: label must be an int, got {self.label!r}")
        object.__setattr__(self, "label", int(self.label))


class Sample(NamedTuple):
    """What ``dataset[i]`` returns (types depend on the transform, see WSOLDataset)."""

    image: Any
    label: int
    mask: Any
    id: str
    cam: Any


Transform = Callable[..., tuple[Any, Any, Any]]


class WSOLDataset(Dataset):
    """Images with image-level labels, optional masks and optional per-image CAMs.

    Without a transform ``dataset[i]`` gives the image as ``uint8`` (H, W, 3), the mask as
    ``uint8`` (H, W) (1 = foreground) or None, the CAM as ``float32`` (H, W) resized to the
    image or None. With a transform ``t`` the three are ``t(image, mask=mask, cam=cam)``.
    ``cams`` maps record ids to maps of any resolution (e.g. cached teacher CAMs).
    """

    def __init__(
        self,
        records: Sequence[Record],
        class_names: Sequence[str],
        transform: Transform | None = None,
        cams: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self._records = tuple(records)
        self._class_names = tuple(str(c) for c in class_names)
        if not self._class_names:
            raise InputError("a dataset needs at least one class name")
        seen: set[str] = set()
        for rec in self._records:
            if not isinstance(rec, Record):
                raise InputError(f"records must be Record objects, got {type(rec).__name__}")
            if rec.id in seen:
                raise InputError(f"duplicate image id {rec.id!r} ({rec.image_path})")
            seen.add(rec.id)
            if not 0 <= rec.label < len(self._class_names):
                raise InputError(
                    f"label {rec.label} of {rec.image_path} is outside the "
                    f"{len(self._class_names)} classes {list(self._class_names)}"
                )
        self.transform = transform
        self.cams = cams

    # -- metadata ---------------------------------------------------------------------
    @property
    def records(self) -> tuple[Record, ...]:
        return self._records

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self._records]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self._records]

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        counts = np.bincount(self.labels, minlength=self.num_classes) if self._records else []
        per_class = ", ".join(f"{c}: {int(n)}" for c, n in zip(self._class_names, counts))
        return f"WSOLDataset({len(self)} images; {per_class})"

    # -- copies -----------------------------------------------------------------------
    def with_transform(self, transform: Transform | None) -> WSOLDataset:
        """A copy of this dataset with another transform (records and CAMs shared)."""
        return WSOLDataset(self._records, self._class_names, transform, self.cams)

    def with_cams(self, cams: Mapping[str, np.ndarray] | None) -> WSOLDataset:
        """A copy of this dataset with other per-image CAMs."""
        return WSOLDataset(self._records, self._class_names, self.transform, cams)

    def subset(self, ids: Iterable[str]) -> WSOLDataset:
        """The records with these ids, in the order given; unknown ids raise InputError."""
        by_id = {r.id: r for r in self._records}
        ids = list(ids)
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InputError(f"unknown image id(s): {', '.join(map(repr, unknown[:10]))}")
        return WSOLDataset([by_id[i] for i in ids], self._class_names, self.transform, self.cams)

    # -- reading ----------------------------------------------------------------------
    def _cam_for(self, rec: Record, size: tuple[int, int]) -> np.ndarray | None:
        if self.cams is None or rec.id not in self.cams:
            return None
        cam = self.cams[rec.id]
        cam = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
        cam = np.squeeze(cam.astype(np.float32, copy=False))
        if cam.ndim != 2:
            raise InputError(f"the CAM of {rec.id!r} has shape {cam.shape}; expected (H, W)")
        if cam.shape != size:
            cam = resize_map(cam, size)
        return cam

    def __getitem__(self, index: int) -> Sample:
        rec = self._records[index]
        image = read_image(rec.image_path)
        size = (int(image.shape[0]), int(image.shape[1]))
        if not rec.mask_known:
            mask = None
        elif rec.mask_path is None:
            mask = np.zeros(size, dtype=np.uint8)
        else:
            mask = read_mask(rec.mask_path, shape=size)
        cam = self._cam_for(rec, size)
        if self.transform is not None:
            image, mask, cam = self.transform(image, mask=mask, cam=cam)
        return Sample(image, rec.label, mask, rec.id, cam)


def _image_tensor(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image.float()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise InputError(
            f"collate: expected images (H, W, 3) or tensors [3, H, W], got {array.shape}"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return tensor.float() / 255.0 if array.dtype == np.uint8 else tensor.float()


def collate_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """Batch samples for a DataLoader.

    Returns ``image`` float [B, 3, H, W] (uint8 numpy images are scaled to [0, 1]),
    ``label`` long [B], ``mask`` uint8 [B, H, W] with 255 (ignore) where the mask is
    unknown, ``has_mask`` bool [B], ``id`` list[str], ``cam`` float [B, H, W] or None, and
    ``has_cam`` bool [B] (a sample without a CAM gets zeros when others have one).
    """
    if not samples:
        raise InputError("cannot collate an empty batch")
    images = [_image_tensor(s.image) for s in samples]
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise InputError(
            f"images of different sizes in one batch {sorted(shapes)}; use a transform "
            "with a fixed output size (EvalTransform(size=...), TrainTransform(crop=...))"
        )
    height, width = images[0].shape[-2:]
    masks, has_mask = [], []
    for s in samples:
        if s.mask is None:
            masks.append(torch.full((height, width), IGNORE_INDEX, dtype=torch.uint8))
            has_mask.append(False)
        else:
            m = s.mask if isinstance(s.mask, torch.Tensor) else torch.from_numpy(np.asarray(s.mask))
            masks.append(m.to(torch.uint8).reshape(height, width))
            has_mask.append(True)
    has_cam = [s.cam is not None for s in samples]
    cam = None
    if any(has_cam):
        cams = []
        for s in samples:
            if s.cam is None:
                cams.append(torch.zeros(height, width))
            else:
                c = (
                    s.cam
                    if isinstance(s.cam, torch.Tensor)
                    else torch.from_numpy(np.asarray(s.cam))
                )
                cams.append(c.float().reshape(height, width))
        cam = torch.stack(cams)
    return {
        "image": torch.stack(images),
        "label": torch.tensor([int(s.label) for s in samples], dtype=torch.long),
        "mask": torch.stack(masks),
        "has_mask": torch.tensor(has_mask, dtype=torch.bool),
        "id": [s.id for s in samples],
        "cam": cam,
        "has_cam": torch.tensor(has_cam, dtype=torch.bool),
    }


def handle_missing(
    items: Sequence[Any],
    missing_of: Callable[[Any], list[Path]],
    missing: str,
    where: str,
    base: Path | None = None,
) -> list[Any]:
    """Apply the ``missing="error"|"skip"`` policy of the split readers.

    ``missing_of(item)`` lists the absent files of one item (shown relative to ``base``
    when given). "error": one InputError listing the first 10 absent files and the counts;
    "skip": drop those items with a warning. An empty result is an InputError either way:
    an empty split is useless for training or evaluation, and an empty DataLoader would
    fail later with a less clear message.
    """
    if missing not in ("error", "skip"):
        raise InputError(f"missing must be 'error' or 'skip', got {missing!r}")
    kept: list[Any] = []
    absent: list[Path] = []
    for item in items:
        files = missing_of(item)
        if files:
            absent.extend(files)
        else:
            kept.append(item)

    def show(p: Path) -> str:
        if base is not None:
            try:
                return p.relative_to(base).as_posix()
            except ValueError:
                pass
        return str(p)

    if absent:
        n_images = len(items) - len(kept)
        listing = ", ".join(show(p) for p in absent[:10])
        more = f" (and {len(absent) - 10} more)" if len(absent) > 10 else ""
        summary = (
            f"{n_images} of {len(items)} image(s) of {where} have missing files "
            f"({len(absent)} file(s)): {listing}{more}"
        )
        if missing == "error":
            raise InputError(f"{summary}. Pass missing='skip' to drop those images.")
        warnings.warn(f"skipping {summary}", stacklevel=3)
    if not kept:
        raise InputError(
            f"the split is empty: no image of {where} is available"
            + (f" ({len(items)} listed, all skipped as missing)" if items else "")
        )
    return kept
