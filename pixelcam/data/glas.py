"""GlaS (Warwick-QU, MICCAI 2015) colon histology: official splits and the paper's folds.

``root`` holds ``Warwick_QU_Dataset_(Released_2016_07_08)/`` or is that folder (or any
folder of ``train_N``/``testA_N``/``testB_N`` images, such as a small extract). Images are
``<name>.bmp`` (official) or ``<name>.png``; masks ``<name>_anno.bmp|png`` number each
gland (> 0 = foreground). Labels: ``Grade.csv`` (benign / malignant).

Two ways to split:

- ``fold=None``: the official splits ``train`` / ``testA`` / ``testB`` (``test`` = both),
  listed from ``Grade.csv`` when present, else from the files in the folder.
- ``fold=K``: the PixelCAM / "WSOL done right" fold files
  ``<folds_dir>/fold-K/<split>/{image_ids,class_labels,localization}.txt`` with ``split``
  in ``train`` / ``valcl`` / ``valpx`` / ``test``. Paths in them name ``.bmp`` files; the
  same name with ``.png`` is accepted when the ``.bmp`` is absent.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pixelcam.data.dataset import Record, WSOLDataset, handle_missing
from pixelcam.data.io import parse_label, read_encoding, read_split_dir
from pixelcam.errors import InputError

__all__ = ["GLAS_FOLDER", "GLAS_CLASSES", "load_glas", "read_glas_grades", "resolve_glas_root"]

GLAS_FOLDER = "Warwick_QU_Dataset_(Released_2016_07_08)"
GLAS_CLASSES: tuple[str, str] = ("benign", "malignant")
OFFICIAL_SPLITS = ("train", "testA", "testB", "test")
FOLD_SPLITS = ("train", "valcl", "valpx", "test")
_NAME = re.compile(r"^(train|testA|testB)_(\d+)$")
_EXTS = (".bmp", ".png")


def resolve_glas_root(root: str | Path) -> tuple[Path, Path]:
    """(data root, image folder) for a GlaS root given as the parent or the folder itself."""
    root = Path(root).expanduser()
    if not root.exists():
        raise InputError(f"GlaS root does not exist: {root}")
    if not root.is_dir():
        raise InputError(f"GlaS root is not a folder: {root}")
    if (root / GLAS_FOLDER).is_dir():
        return root, root / GLAS_FOLDER
    if root.name == GLAS_FOLDER:
        return root.parent, root
    if any(_NAME.match(p.stem) and p.suffix.lower() in _EXTS for p in root.iterdir()):
        return root, root  # a flat folder of GlaS-named images (e.g. an extract)
    raise InputError(
        f"no GlaS images in {root}: expected a {GLAS_FOLDER!r} folder or train_N.bmp/png files"
    )


def _find(image_dir: Path, stem: str) -> Path | None:
    for ext in _EXTS:
        candidate = image_dir / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _expected(image_dir: Path, stem: str, ext: str) -> Path:
    """The file for ``stem``: ``ext`` if present, else the other GlaS extension, else ``ext``."""
    first = image_dir / f"{stem}{ext}"
    if first.is_file():
        return first
    return _find(image_dir, stem) or first


def read_glas_grades(
    path: str | Path, class_names: tuple[str, ...] | list[str] = GLAS_CLASSES
) -> dict[str, int]:
    """``{name: label}`` from GlaS's ``Grade.csv`` (the GlaS grade column, benign/malignant).

    Tolerates spaces around headers and values and both header spellings
    (``grade (GlaS)`` / ``GlaS grade``).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [
                [c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)
            ]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if len(rows) < 2:
        raise InputError(f"{path} has no data rows")
    header = [h.lower() for h in rows[0]]
    name_col = next((i for i, h in enumerate(header) if "name" in h), 0)
    grade_col = next((i for i, h in enumerate(header) if "glas" in h), None)
    if grade_col is None:
        if len(header) < 3:
            raise InputError(f"{path}: no 'GlaS grade' column in header {rows[0]}")
        grade_col = 2
    grades: dict[str, int] = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) <= max(name_col, grade_col):
            raise InputError(f"{path} line {n}: too few columns: {row}")
        grades[row[name_col]] = parse_label(row[grade_col], class_names, f"{path} line {n}")
    return grades


def _labels_from(
    labels: str | Path | Mapping[str, int | str], class_names: tuple[str, ...]
) -> dict[str, int]:
    """``labels=``: a mapping name -> label, a ``class_labels.txt`` or a ``Grade.csv``."""
    if isinstance(labels, Mapping):
        return {
            Path(str(k)).stem: parse_label(str(v), class_names, f"labels[{k!r}]")
            for k, v in labels.items()
        }
    path = Path(labels)
    if not path.is_file():
        raise InputError(f"labels file does not exist: {path}")
    if path.suffix.lower() == ".csv":
        return read_glas_grades(path, class_names)
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        row = next(csv.reader([line]))
        if len(row) < 2:
            raise InputError(f"{path} line {n}: expected 'path,label', got {line!r}")
        out[Path(row[0].strip()).stem] = parse_label(row[1], class_names, f"{path} line {n}")
    return out


def _class_names(folds_dir: Path | None, fold_dir: Path | None) -> tuple[str, ...]:
    for candidate in (fold_dir, folds_dir):
        if candidate is not None and (candidate / "encoding.yaml").is_file():
            return tuple(read_encoding(candidate / "encoding.yaml"))
    return GLAS_CLASSES


def _default_folds_dir(root: str | Path, data_root: Path, fold: int) -> Path:
    """``root/folds`` or ``data_root/folds``, whichever exists."""
    for candidate in (Path(root) / "folds", data_root / "folds"):
        if candidate.is_dir():
            return candidate
    raise InputError(
        f"no fold files for GlaS fold {fold}: {Path(root) / 'folds'} does not exist; "
        "pass folds_dir= (the folder holding fold-0 ... fold-4), or fold=None for the "
        "official splits"
    )


def _fold_record(entry: Any, image_dir: Path, override: Any, labels: Any) -> Record:
    """One fold-file entry as a record (mask: a file, known-empty ``""``, or unknown)."""
    rel = Path(entry.path)
    image = _expected(image_dir, rel.stem, rel.suffix or ".bmp")
    if entry.mask is None:
        mask_path, known = None, False
    elif entry.mask == "":
        mask_path, known = None, True
    else:
        mrel = Path(entry.mask)
        mask_path, known = _expected(image_dir, mrel.stem, mrel.suffix or ".bmp"), True
    label = entry.label
    if override is not None:
        if rel.stem not in override:
            raise InputError(f"no label for {rel.stem} in labels={labels}")
        label = override[rel.stem]
    return Record(rel.stem, image, label, mask_path, known)


def load_glas(
    root: str | Path,
    split: str = "train",
    fold: int | None = 0,
    folds_dir: str | Path | None = None,
    missing: str = "error",
    labels: str | Path | Mapping[str, int | str] | None = None,
) -> WSOLDataset:
    """Load a GlaS split as a :class:`WSOLDataset` (ids are image names, e.g. ``train_71``).

    ``fold=None``: official split (train/testA/testB/test). ``fold=K``: fold files from
    ``folds_dir`` (default ``root/folds``), split train/valcl/valpx/test.
    ``missing``: "error" (InputError listing absent files) or "skip" (warn and drop them);
    a split left empty is an InputError. ``labels``: overrides the labels, as a mapping
    name -> label, a ``class_labels.txt`` (``path,label``) or a ``Grade.csv``; needed
    for official splits of a folder without ``Grade.csv``.
    """
    data_root, image_dir = resolve_glas_root(root)
    if missing not in ("error", "skip"):
        raise InputError(f"missing must be 'error' or 'skip', got {missing!r}")
    grade_csv = image_dir / "Grade.csv"
    if not grade_csv.is_file() and (data_root / "Grade.csv").is_file():
        grade_csv = data_root / "Grade.csv"

    if fold is None:
        class_names = GLAS_CLASSES
        if folds_dir is not None:
            class_names = _class_names(Path(folds_dir), None)
        return _load_official(image_dir, grade_csv, split, class_names, missing, labels)

    if split not in FOLD_SPLITS:
        raise InputError(f"GlaS fold split must be one of {FOLD_SPLITS}, got {split!r}")
    if folds_dir is None:
        folds_dir = _default_folds_dir(root, data_root, fold)
    folds_dir = Path(folds_dir)
    fold_dir = folds_dir / f"fold-{int(fold)}"
    if not fold_dir.is_dir():
        raise InputError(f"fold folder does not exist: {fold_dir}")
    class_names = _class_names(folds_dir, fold_dir)
    split_dir = fold_dir / split
    entries = read_split_dir(split_dir, class_names)
    override = _labels_from(labels, class_names) if labels is not None else None

    records = [_fold_record(entry, image_dir, override, labels) for entry in entries]

    def absent(rec: Record) -> list[Path]:
        return [p for p in (rec.image_path, rec.mask_path) if p is not None and not p.is_file()]

    where = f"{split_dir} (GlaS fold {fold} {split}; looked in {image_dir}, .bmp or .png)"
    records = handle_missing(records, absent, missing, where, base=image_dir)
    return WSOLDataset(records, class_names)


def _load_official(
    image_dir: Path,
    grade_csv: Path,
    split: str,
    class_names: tuple[str, ...],
    missing: str,
    labels: str | Path | Mapping[str, int | str] | None,
) -> WSOLDataset:
    if split not in OFFICIAL_SPLITS:
        raise InputError(
            f"GlaS official split must be one of {OFFICIAL_SPLITS}, got {split!r} "
            "(valcl/valpx exist only in the fold files: pass fold=K)"
        )
    prefixes = ("testA", "testB") if split == "test" else (split,)
    grades = read_glas_grades(grade_csv, class_names) if grade_csv.is_file() else None
    override = _labels_from(labels, class_names) if labels is not None else None
    if grades is None and override is None:
        raise InputError(
            f"no labels for GlaS in {image_dir}: Grade.csv is absent; pass labels= (a "
            "Grade.csv, a fold's class_labels.txt, or a mapping name -> label)"
        )
    if grades is not None:
        names = [n for n in grades if _NAME.match(n) and _NAME.match(n).group(1) in prefixes]
    else:
        names = sorted(
            {
                p.stem
                for p in image_dir.iterdir()
                if p.suffix.lower() in _EXTS
                and _NAME.match(p.stem)
                and _NAME.match(p.stem).group(1) in prefixes
            }
        )
    names.sort(
        key=lambda n: (prefixes.index(_NAME.match(n).group(1)), int(_NAME.match(n).group(2)))
    )
    if not names:
        raise InputError(f"the split is empty: no GlaS {split} image listed in {image_dir}")
    source = override if override is not None else grades
    unlabelled = [n for n in names if n not in source]
    if unlabelled:
        raise InputError(
            f"{len(unlabelled)} GlaS image(s) have no label in "
            f"{labels if override is not None else grade_csv}: {', '.join(unlabelled[:10])}"
        )
    records = [
        Record(
            n,
            _expected(image_dir, n, ".bmp"),
            source[n],
            _expected(image_dir, f"{n}_anno", ".bmp"),
            True,
        )
        for n in names
    ]

    def absent(rec: Record) -> list[Path]:
        return [p for p in (rec.image_path, rec.mask_path) if p is not None and not p.is_file()]

    where = f"GlaS official split {split!r} (looked in {image_dir}, .bmp or .png)"
    records = handle_missing(records, absent, missing, where, base=image_dir)
    return WSOLDataset(records, class_names)
