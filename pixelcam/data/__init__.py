"""Datasets, readers, joint transforms and stain shift for weakly supervised localization.

``open_dataset(kind, root, split, fold)`` opens any supported dataset: GlaS, CAMELYON16
patches, the generic folder format, or a synthetic set generated on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixelcam.data.camelyon import load_camelyon16
from pixelcam.data.dataset import IGNORE_INDEX, Record, Sample, WSOLDataset, collate_samples
from pixelcam.data.folder import list_splits, load_folder
from pixelcam.data.glas import load_glas
from pixelcam.data.io import read_image, read_mask
from pixelcam.data.stain import StainProfile, restain, stain_profile, stain_shift_series
from pixelcam.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    denormalize,
)
from pixelcam.errors import InputError
from pixelcam.registry import Registry

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "Record",
    "Sample",
    "StainProfile",
    "TrainTransform",
    "WSOLDataset",
    "collate_samples",
    "denormalize",
    "generate_tile",
    "list_splits",
    "load_camelyon16",
    "load_folder",
    "load_glas",
    "open_dataset",
    "read_image",
    "read_mask",
    "restain",
    "stain_profile",
    "stain_shift_series",
    "write_synthetic_dataset",
]

#: dataset readers by name: ``(root, split, fold, **options) -> WSOLDataset``
DATASETS: Registry[Callable[..., WSOLDataset]] = Registry("dataset")
_LAZY = {"generate_tile", "write_synthetic_dataset"}


def __getattr__(name: str) -> Any:
    # The synthetic generator lives in its own module; import it on first use only.
    if name in _LAZY:
        from pixelcam.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def split_options(
    kind: str, fold: int | None, folds_dir: str | Path | None = None, missing: str = "error"
) -> tuple[int | None, dict[str, Any]]:
    """The ``fold`` and loader options :func:`open_dataset` takes for ``kind``: only the
    readers registered with ``folds=True`` (GlaS, CAMELYON16) have folds, fold folders and
    missing-file handling."""
    key = str(kind).lower()
    if key not in DATASETS or not DATASETS.entry(key).meta.get("folds"):
        return None, {}
    kw: dict[str, Any] = {"missing": missing}
    if folds_dir:
        kw["folds_dir"] = folds_dir
    return fold, kw


def open_dataset(
    kind: str,
    root: str | Path,
    split: str | None = None,
    fold: int | None = None,
    **kw: Any,
) -> WSOLDataset:
    """Open a dataset by kind: "glas", "camelyon16", "folder" or "synthetic".

    ``fold`` is passed as given: for GlaS, None means the official splits (split defaults
    to "train") and K the paper's fold files; for CAMELYON16, None reads every patch.
    "synthetic": ``root`` is a folder; when absent or empty a synthetic set is written
    there first (``write_synthetic_dataset(root, n_per_class=kw.get("n_per_class", 8),
    ...)``, remaining ``kw`` passed on), then it is read with :func:`load_folder`.
    Other ``kw`` go to the loader (e.g. ``folds_dir``, ``missing``, ``labels``).
    """
    key = str(kind).lower().replace("-", "").replace("_", "")
    return DATASETS.get(key if key in DATASETS else str(kind))(root, split, fold, **kw)


@DATASETS.register(
    "glas", folds=True, help="GlaS (Sirinukunwattana et al. 2017), official or paper folds"
)
def _glas(root: str | Path, split: str | None, fold: int | None, **kw: Any) -> WSOLDataset:
    return load_glas(root, split=split or "train", fold=fold, **kw)


@DATASETS.register(
    "camelyon16", aliases=("camelyon",), folds=True, help="CAMELYON16 patches (Rony et al.)"
)
def _camelyon(root: str | Path, split: str | None, fold: int | None, **kw: Any) -> WSOLDataset:
    return load_camelyon16(root, split=split, fold=fold, **kw)


@DATASETS.register("folder", help="generic folder: <split>/<class>/<image> (+ masks)")
def _folder(root: str | Path, split: str | None, fold: int | None, **kw: Any) -> WSOLDataset:
    if fold is not None or kw:
        raise InputError(f"the folder format takes no fold or options, got fold={fold} {kw}")
    return load_folder(root, split=split)


@DATASETS.register("synthetic", help="generated H&E-like tiles, written on first use")
def _synthetic(root: str | Path, split: str | None, fold: int | None, **kw: Any) -> WSOLDataset:
    if fold is not None:
        raise InputError(f"synthetic datasets have no folds, got fold={fold}")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise InputError(f"synthetic dataset path is not a folder: {root}")
    if not root.exists() or not any(root.iterdir()):
        from pixelcam.data.synthetic import write_synthetic_dataset

        kw.setdefault("n_per_class", 8)
        write_synthetic_dataset(root, **kw)
    elif kw:
        raise InputError(
            f"{root} already holds a dataset; generation options {sorted(kw)} would be "
            "ignored (use an empty folder)"
        )
    return load_folder(root, split=split)
