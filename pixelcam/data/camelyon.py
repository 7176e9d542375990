"""CAMELYON16 patches in the protocol of Rony et al. 2023 (as used by PixelCAM).

Layout under ``root``: ``normal/*.png`` (label 0, no mask: all background) and
``tumor/*.png`` or ``metastatic/*.png`` (label 1), each tumour patch with its mask
``mask_file_<patch name>.png`` beside it (> 0 = metastasis). Splits come from fold files
``<folds_dir>/fold-K/<split>/{image_ids,class_labels,localization}.txt`` (paths relative to
``root``; in localization.txt an empty mask field means "no foreground": the mask is known
and all background). Class names from ``encoding.yaml`` (default ``{normal: 0,
metastatic: 1}``).

``fold=None`` reads every patch found in the folders instead (split must be None or
"all"); there a tumour patch without a mask file has an UNKNOWN mask (mask_known False),
because in this protocol every metastatic patch has one, so its absence is more likely a
missing file than an empty annotation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixelcam.data.dataset import Record, WSOLDataset, handle_missing
from pixelcam.data.io import IMAGE_EXTENSIONS, read_encoding, read_split_dir
from pixelcam.errors import InputError

__all__ = ["CAMELYON_CLASSES", "MASK_PREFIX", "load_camelyon16"]

CAMELYON_CLASSES: tuple[str, str] = ("normal", "metastatic")
MASK_PREFIX = "mask_file_"
SPLITS = ("train", "valcl", "valpx", "test")
_TUMOUR_DIRS = ("tumor", "metastatic")


def _record_id(rel: Path) -> str:
    return rel.with_suffix("").as_posix()


def _mask_beside(image: Path) -> Path:
    return image.with_name(f"{MASK_PREFIX}{image.stem}.png")


def _discover(root: Path, class_names: tuple[str, ...]) -> list[Record]:
    records: list[Record] = []
    normal_dir = root / "normal"
    tumour_dirs = [root / d for d in _TUMOUR_DIRS if (root / d).is_dir()]
    if not normal_dir.is_dir() and not tumour_dirs:
        raise InputError(
            f"no CAMELYON16 patches in {root}: expected normal/ and tumor/ (or metastatic/)"
        )
    for folder, label in [(normal_dir, 0)] + [(d, 1) for d in tumour_dirs]:
        if not folder.is_dir():
            continue
        patches = sorted(
            p
            for p in folder.iterdir()
            if p.is_file()
            and p.suffix.lower() in IMAGE_EXTENSIONS
            and not p.name.startswith(MASK_PREFIX)
        )
        if not patches:
            raise InputError(f"empty class folder (no patch images): {folder}")
        for p in patches:
            rid = _record_id(p.relative_to(root))
            if label == 0:
                records.append(Record(rid, p, 0, None, True))
            else:
                mask = _mask_beside(p)
                known = mask.is_file()
                records.append(Record(rid, p, 1, mask if known else None, known))
    return records


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise InputError(f"CAMELYON16 root does not exist: {root}")
    if not root.is_dir():
        raise InputError(f"CAMELYON16 root is not a folder: {root}")
    return root


def _fold_record(entry: Any, root: Path) -> Record:
    """One fold-file entry as a record: its mask, none (listed without one, or a normal
    patch), a ``*_mask.png`` beside the image, or unknown."""
    rel = Path(entry.path)
    image = root / rel
    if entry.mask:
        mask_path, known = root / entry.mask, True
    elif entry.mask == "" or entry.label == 0:
        mask_path, known = None, True
    else:
        beside = _mask_beside(image)
        mask_path, known = (beside, True) if beside.is_file() else (None, False)
    return Record(_record_id(rel), image, entry.label, mask_path, known)


def load_camelyon16(
    root: str | Path,
    split: str | None = "train",
    fold: int | None = 0,
    folds_dir: str | Path | None = None,
    missing: str = "error",
) -> WSOLDataset:
    """Load CAMELYON16 patches (ids: path relative to root without extension).

    ``fold=K``: the fold files in ``folds_dir`` (default ``root/folds``), ``split`` in
    train/valcl/valpx/test. ``missing``: "error" (InputError listing absent files) or
    "skip" (warn and drop); an empty split is an InputError.
    """
    root = _check_root(root)
    if missing not in ("error", "skip"):
        raise InputError(f"missing must be 'error' or 'skip', got {missing!r}")

    if folds_dir is None and (root / "folds").is_dir():
        folds_dir = root / "folds"
    class_names = CAMELYON_CLASSES
    if folds_dir is not None and (Path(folds_dir) / "encoding.yaml").is_file():
        class_names = tuple(read_encoding(Path(folds_dir) / "encoding.yaml"))

    if fold is None:
        if split not in (None, "all"):
            raise InputError(
                f"CAMELYON16 split {split!r} needs fold files (pass fold=K); fold=None reads "
                "all patches (split=None or 'all')"
            )
        return WSOLDataset(_discover(root, class_names), class_names)

    if split not in SPLITS:
        raise InputError(f"CAMELYON16 split must be one of {SPLITS}, got {split!r}")
    if folds_dir is None:
        raise InputError(
            f"no fold files for CAMELYON16 fold {fold}: {root / 'folds'} does not exist; "
            "pass folds_dir= (the folder holding fold-0, fold-1, ...) or fold=None"
        )
    fold_dir = Path(folds_dir) / f"fold-{int(fold)}"
    if not fold_dir.is_dir():
        raise InputError(f"fold folder does not exist: {fold_dir}")
    if (fold_dir / "encoding.yaml").is_file():
        class_names = tuple(read_encoding(fold_dir / "encoding.yaml"))
    split_dir = fold_dir / split
    entries = read_split_dir(split_dir, class_names)

    records = [_fold_record(entry, root) for entry in entries]

    def absent(rec: Record) -> list[Path]:
        return [p for p in (rec.image_path, rec.mask_path) if p is not None and not p.is_file()]

    where = f"{split_dir} (CAMELYON16 fold {fold} {split}, patches under {root})"
    records = handle_missing(records, absent, missing, where, base=root)
    return WSOLDataset(records, class_names)
