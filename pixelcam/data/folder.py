"""The generic folder format: one sub-folder of images per class, optional masks and splits.

::

    root/images/<class_name>/<file>          images (png, bmp, jpg, tif, ...)
    root/masks/<class_name>/<stem>.png       optional, mirroring the image paths (> 0 = FG)
    root/splits/<split>.txt                  optional, image paths relative to images/
    root/classes.txt                         optional, class names in index order

Class index = position of the class folder in sorted order unless ``classes.txt`` lists
the names in order. An image without a mask file has an unknown mask (mask_known False).
Ids are image paths relative to ``images/`` without extension, e.g. ``benign/img_0001``.
"""

from __future__ import annotations

from pathlib import Path

from pixelcam.data.dataset import Record, WSOLDataset
from pixelcam.data.io import IMAGE_EXTENSIONS
from pixelcam.errors import InputError

__all__ = ["load_folder", "list_splits"]

# Preferred mask extension first (the format's default is .png).
_MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _class_names(root: Path, images: Path) -> list[str]:
    folders = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes_file = root / "classes.txt"
    if classes_file.is_file():
        names = [
            line.strip()
            for line in classes_file.read_text(encoding="utf-8-sig").splitlines()
            if line.strip()
        ]
        if not names:
            raise InputError(f"{classes_file} lists no class")
        if len(set(names)) != len(names):
            raise InputError(f"{classes_file} lists a class twice: {names}")
        unknown = [f for f in folders if f not in names]
        if unknown:
            raise InputError(
                f"class folder(s) {unknown} under {images} are not listed in {classes_file} "
                f"({names})"
            )
        for name in names:
            if not (images / name).is_dir():
                raise InputError(f"class {name!r} of {classes_file} has no folder {images / name}")
        return names
    if not folders:
        raise InputError(f"no class folders under {images} (expected images/<class>/<file>)")
    return folders


def _mask_for(root: Path, rel: Path) -> Path | None:
    base = root / "masks" / rel.parent
    for ext in _MASK_EXTENSIONS:
        candidate = base / f"{rel.stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def list_splits(root: str | Path) -> list[str]:
    """Names of the split files in ``root/splits`` (without ``.txt``)."""
    splits = Path(root) / "splits"
    return sorted(p.stem for p in splits.glob("*.txt")) if splits.is_dir() else []


def load_folder(root: str | Path, split: str | None = None) -> WSOLDataset:
    """Load the generic folder format (see the module docstring); ``split=None``: all images."""
    root = Path(root).expanduser()
    if not root.exists():
        raise InputError(f"dataset folder does not exist: {root}")
    if not root.is_dir():
        raise InputError(f"dataset path is not a folder: {root}")
    images = root / "images"
    if not images.is_dir():
        raise InputError(f"no images/ folder in {root} (expected images/<class>/<file>)")
    class_names = _class_names(root, images)

    all_images: dict[str, Path] = {}
    for name in class_names:
        found = sorted(p for p in (images / name).rglob("*") if _is_image(p))
        if not found:
            raise InputError(f"empty class folder (no images): {images / name}")
        for p in found:
            rel = p.relative_to(images)
            rid = rel.with_suffix("").as_posix()
            if rid in all_images:
                raise InputError(f"two images share the id {rid!r}: {all_images[rid]} and {p}")
            all_images[rid] = p
    if not all_images:
        raise InputError(f"no images under {images}")

    if split is None:
        chosen = list(all_images.values())
    else:
        split_file = root / "splits" / f"{split}.txt"
        if not split_file.is_file():
            available = list_splits(root)
            raise InputError(
                f"split file does not exist: {split_file} (available splits: {available or 'none'})"
            )
        lines = [
            line.strip().replace("\\", "/")
            for line in split_file.read_text(encoding="utf-8-sig").splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        if not lines:
            raise InputError(f"the split is empty: {split_file} lists no image")
        absent = [line for line in lines if not (images / line).is_file()]
        if absent:
            more = f" (and {len(absent) - 10} more)" if len(absent) > 10 else ""
            raise InputError(
                f"{len(absent)} image(s) listed in {split_file} are missing under {images}: "
                f"{', '.join(absent[:10])}{more}"
            )
        chosen = [images / line for line in lines]

    records = []
    for p in chosen:
        rel = p.relative_to(images)
        class_name = rel.parts[0]
        if len(rel.parts) < 2 or class_name not in class_names:
            raise InputError(f"{p} is not inside a class folder of {images} ({class_names})")
        mask = _mask_for(root, rel)
        records.append(
            Record(
                rel.with_suffix("").as_posix(),
                p,
                class_names.index(class_name),
                mask,
                mask is not None,
            )
        )
    return WSOLDataset(records, class_names)
