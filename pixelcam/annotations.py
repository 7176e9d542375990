"""Point annotations: a pathologist's foreground/background clicks, saved and read back.

The napari panel saves them beside the image as ``<image stem>.points.csv`` (or ``.json``);
training reads them with :func:`annotations_for_dataset` and turns them into trusted pixel
labels with :func:`seed_map`. Files are untrusted input: :func:`load_annotations` checks
everything (format, version, labels, coordinates, sizes) before anything is used, and raises
an :class:`~pixelcam.errors.InputError` naming the file and the first bad line or field.

Coordinates are pixel coordinates of the full-resolution image, numpy/napari convention:
pixel ``(i, j)`` is centred at ``row = i, col = j`` and covers ``[i - 0.5, i + 0.5)``, so a
point is inside an ``H x W`` image when ``-0.5 <= row < H - 0.5`` and likewise for ``col``.

CSV (one image a file)::

    # pixelcam-annotations v1 shape=522,775
    # image_id: train_1
    # image_path: /data/glas/train_1.png        (optional)
    image_id,row,col,label,source
    train_1,120.5,88.0,1,user

JSON: ``{"format": "pixelcam-annotations", "version": 1, "image_id": ..., "image_shape":
[H, W], "image_path": ... | null, "points": [{"row", "col", "label", "source"}, ...]}``, or
several images as ``{"format": ..., "version": 1, "images": [<one image as above>, ...]}``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pixelcam.errors import InputError
from pixelcam.fileio import atomic_write_text, read_text_bounded

__all__ = [
    "ANNOTATION_SUFFIXES",
    "BACKGROUND",
    "FOREGROUND",
    "FORMAT",
    "IGNORE",
    "MAX_FILE_BYTES",
    "MAX_POINTS",
    "USER_SOURCE",
    "VERSION",
    "AnnotationSet",
    "PointAnnotation",
    "annotation_path_for",
    "annotations_for_dataset",
    "is_annotation_file",
    "load_annotations",
    "save_annotations",
    "seed_map",
]

FORMAT = "pixelcam-annotations"
VERSION = 1
FOREGROUND, BACKGROUND, IGNORE = 1, 0, 255
#: Points from this source (a person's corrections) override the others in :func:`seed_map`.
USER_SOURCE = "user"
#: Limits on what :func:`load_annotations` accepts (a guard against runaway files).
MAX_POINTS = 1_000_000
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_SIDE = 2**31 - 1
#: File name endings :func:`annotations_for_dataset` looks for.
ANNOTATION_SUFFIXES: tuple[str, ...] = (".points.csv", ".points.json")

_CSV_COLUMNS = ["image_id", "row", "col", "label", "source"]
_CSV_HEADER = re.compile(r"^# pixelcam-annotations v(\d{1,9}) shape=(\d{1,9}),(\d{1,9})\s*$")
_ANY_HEADER = re.compile(r"^# pixelcam-annotations\b")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".svs")


@dataclass(frozen=True)
class PointAnnotation:
    """One click: position in full-resolution pixels, label 1 (foreground) or 0 (background).

    ``source`` says where it came from: ``"user"`` (a person), ``"sampled"`` (pseudo-labels
    drawn from a CAM), or any other short name.
    """

    row: float
    col: float
    label: int
    source: str = USER_SOURCE


@dataclass
class AnnotationSet:
    """The points of one image; ``image_shape`` is its full-resolution ``(H, W)``."""

    image_id: str
    image_shape: tuple[int, int]
    points: list[PointAnnotation] = field(default_factory=list)
    image_path: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.image_shape, (list, np.ndarray)):
            self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        self.points = list(self.points)

    def coords(self) -> np.ndarray:
        """``(N, 2)`` float64 array of ``(row, col)``."""
        return np.array([(p.row, p.col) for p in self.points], dtype=np.float64).reshape(-1, 2)

    def labels(self) -> np.ndarray:
        """``(N,)`` uint8 array of labels (1 foreground, 0 background)."""
        return np.array([p.label for p in self.points], dtype=np.uint8)

    def sources(self) -> list[str]:
        return [p.source for p in self.points]

    @classmethod
    def from_arrays(
        cls,
        image_id: str,
        image_shape: tuple[int, int],
        coords: Any,
        labels: Any,
        sources: str | Sequence[str] = USER_SOURCE,
        image_path: str | None = None,
    ) -> AnnotationSet:
        """Build a set from ``(N, 2)`` coordinates and ``(N,)`` labels, and validate it."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(coords):
            raise InputError(f"{len(coords)} points but {len(labels)} labels for {image_id!r}")
        if isinstance(sources, str):
            sources = [sources] * len(coords)
        if len(sources) != len(coords):
            raise InputError(f"{len(coords)} points but {len(sources)} sources for {image_id!r}")
        where = f"annotations of {image_id!r}"
        _check_text(image_id, "image_id", where, 1024)
        shape = _check_shape(image_shape, where)
        points = [
            _check_point(r, c, lab.item(), s, shape, f"{where}, point {i}")
            for i, ((r, c), lab, s) in enumerate(zip(coords.tolist(), labels, sources))
        ]
        return _validate_set(cls(image_id, shape, points, image_path), where)


# ----------------------------------------------------------------------------------------
# Validation shared by saving and loading


def _check_text(value: Any, what: str, where: str, max_len: int) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: {what} must be a non-empty string, got {value!r}")
    if len(value) > max_len or _CONTROL.search(value):
        raise InputError(
            f"{where}: {what} must be at most {max_len} characters without control "
            f"characters, got {value[:80]!r}"
        )
    return value


def _check_shape(value: Any, where: str) -> tuple[int, int]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        and all(0 < int(v) <= MAX_SIDE for v in value)
    )
    if not ok:
        raise InputError(
            f"{where}: image_shape must be two positive integers [H, W], got {value!r}"
        )
    return int(value[0]), int(value[1])


def _check_point(
    row: Any, col: Any, label: Any, source: Any, shape: tuple[int, int], where: str
) -> PointAnnotation:
    for name, v in (("row", row), ("col", col)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise InputError(f"{where}: {name} must be a number, got {v!r}")
        try:
            finite = math.isfinite(v)
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            raise InputError(f"{where}: {name} is not a finite number ({v!r})")
    for name, v, size in (("row", row, shape[0]), ("col", col, shape[1])):
        if not -0.5 <= v < size - 0.5:
            dim = "height" if name == "row" else "width"
            raise InputError(
                f"{where}: {name} {v!r} is outside the image ({dim} {size}; "
                f"valid: -0.5 <= {name} < {size - 0.5})"
            )
    if isinstance(label, bool) or label not in (0, 1):
        raise InputError(f"{where}: label must be 0 (background) or 1 (foreground), got {label!r}")
    _check_text(source, "source", where, 64)
    return PointAnnotation(float(row), float(col), int(label), source)


def _validate_set(ann: Any, where: str) -> AnnotationSet:
    if not isinstance(ann, AnnotationSet):
        raise InputError(f"{where}: expected an AnnotationSet, got {type(ann).__name__}")
    _check_text(ann.image_id, "image_id", where, 1024)
    shape = _check_shape(ann.image_shape, where)
    if ann.image_path is not None:
        _check_text(ann.image_path, "image_path", where, 4096)
    if len(ann.points) > MAX_POINTS:
        raise InputError(f"{where}: {len(ann.points)} points, more than the limit {MAX_POINTS}")
    for i, p in enumerate(ann.points):
        if not isinstance(p, PointAnnotation):
            raise InputError(f"{where}: point {i} is a {type(p).__name__}, not a PointAnnotation")
        _check_point(p.row, p.col, p.label, p.source, shape, f"{where}, point {i}")
    return ann


# ----------------------------------------------------------------------------------------
# Writing


def _csv_text(ann: AnnotationSet) -> str:
    buf = io.StringIO()
    h, w = ann.image_shape
    buf.write(f"# {FORMAT} v{VERSION} shape={h},{w}\n")
    buf.write(f"# image_id: {ann.image_id}\n")
    if ann.image_path is not None:
        buf.write(f"# image_path: {ann.image_path}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for p in ann.points:
        writer.writerow([ann.image_id, repr(p.row), repr(p.col), p.label, p.source])
    return buf.getvalue()


def _json_set(ann: AnnotationSet) -> dict:
    return {
        "image_id": ann.image_id,
        "image_shape": list(ann.image_shape),
        "image_path": ann.image_path,
        "points": [
            {"row": p.row, "col": p.col, "label": p.label, "source": p.source} for p in ann.points
        ],
    }


def save_annotations(path: str | Path, ann: AnnotationSet | Sequence[AnnotationSet]) -> Path:
    """Write ``ann`` as CSV or JSON (by the suffix of ``path``), atomically; returns the path.

    Several sets can only go to a JSON file. The sets are validated first, so what is saved
    always loads back.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"annotation files end in .csv or .json, got {path}")
    sets = [ann] if isinstance(ann, AnnotationSet) else list(ann)
    for i, s in enumerate(sets):
        _validate_set(s, f"annotations {i} for {path}")
    if suffix == ".csv":
        if len(sets) != 1:
            raise InputError(f"a CSV holds the points of one image, got {len(sets)} sets: {path}")
        text = _csv_text(sets[0])
    else:
        doc: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if isinstance(ann, AnnotationSet):
            doc.update(_json_set(ann))
        else:
            doc["images"] = [_json_set(s) for s in sets]
        text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    return path


def annotation_path_for(image_path: str | Path, suffix: str = ".csv") -> Path:
    """Where the annotations of an image are saved: ``<image stem>.points.csv`` beside it."""
    image_path = Path(image_path)
    if suffix not in (".csv", ".json"):
        raise InputError(f"annotation files end in .csv or .json, got {suffix!r}")
    return image_path.with_name(f"{image_path.stem}.points{suffix}")


# ----------------------------------------------------------------------------------------
# Reading


def _read_text(path: Path) -> str:
    return read_text_bounded(path, "annotation file", MAX_FILE_BYTES)


def _number(text: str, name: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{where}: {name} must be a number, got {text!r}") from None


def _load_csv(path: Path, text: str) -> AnnotationSet:
    lines = text.splitlines()
    if not lines or not _ANY_HEADER.match(lines[0]):
        raise InputError(
            f"{path} line 1: expected the header '# {FORMAT} v{VERSION} shape=H,W', "
            f"got {lines[0][:80] if lines else ''!r}"
        )
    match = _CSV_HEADER.match(lines[0])
    if match is None:
        raise InputError(
            f"{path} line 1: malformed header {lines[0][:80]!r}; expected "
            f"'# {FORMAT} v{VERSION} shape=H,W'"
        )
    version = int(match.group(1))
    if version != VERSION:
        raise InputError(f"{path}: annotation format version {version} is not supported (v1)")
    shape = _check_shape([int(match.group(2)), int(match.group(3))], f"{path} line 1")
    meta: dict[str, str] = {}
    n = 1
    while n < len(lines) and lines[n].startswith("#"):
        key, sep, value = lines[n][1:].partition(":")
        if sep and key.strip() in ("image_id", "image_path"):
            meta[key.strip()] = value.strip()
        n += 1
    if n >= len(lines) or next(csv.reader([lines[n]]), []) != _CSV_COLUMNS:
        got = lines[n][:80] if n < len(lines) else "end of file"
        raise InputError(
            f"{path} line {n + 1}: expected the column names {','.join(_CSV_COLUMNS)}, got {got!r}"
        )
    image_id = meta.get("image_id")
    reader = csv.reader(lines[n + 1 :])
    points: list[PointAnnotation] = []
    for row in reader:
        where = f"{path} line {n + 1 + reader.line_num}"
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(points) >= MAX_POINTS:
            raise InputError(f"{where}: more than {MAX_POINTS} points")
        if len(row) != len(_CSV_COLUMNS):
            raise InputError(f"{where}: expected {len(_CSV_COLUMNS)} fields, got {len(row)}")
        rid, r, c, lab, src = row
        if image_id is None:
            image_id = _check_text(rid, "image_id", where, 1024)
        elif rid != image_id:
            raise InputError(f"{where}: image_id {rid!r} differs from {image_id!r}")
        label: Any = lab.strip()
        label = int(label) if label in ("0", "1") else label
        points.append(
            _check_point(
                _number(r, "row", where), _number(c, "col", where), label, src, shape, where
            )
        )
    if image_id is None:  # no point and no id comment: the file name tells
        image_id = path.name.removesuffix(".csv").removesuffix(".points")
    ann = AnnotationSet(image_id, shape, points, meta.get("image_path"))
    _check_text(ann.image_id, "image_id", str(path), 1024)
    if ann.image_path is not None:
        _check_text(ann.image_path, "image_path", str(path), 4096)
    return ann


def _json_set_from(obj: Any, where: str) -> AnnotationSet:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected an object, got {type(obj).__name__}")
    for key in ("image_id", "image_shape", "points"):
        if key not in obj:
            raise InputError(f"{where}: missing field {key!r}")
    image_id = _check_text(obj["image_id"], "image_id", where, 1024)
    shape = _check_shape(obj["image_shape"], where)
    image_path = obj.get("image_path")
    if image_path is not None:
        _check_text(image_path, "image_path", where, 4096)
    raw = obj["points"]
    if not isinstance(raw, list):
        raise InputError(f"{where}: points must be a list, got {type(raw).__name__}")
    if len(raw) > MAX_POINTS:
        raise InputError(f"{where}: {len(raw)} points, more than the limit {MAX_POINTS}")
    points = []
    for i, p in enumerate(raw):
        pw = f"{where}.points[{i}]"
        if not isinstance(p, dict):
            raise InputError(f"{pw}: expected an object, got {type(p).__name__}")
        for key in ("row", "col", "label", "source"):
            if key not in p:
                raise InputError(f"{pw}: missing field {key!r}")
        points.append(_check_point(p["row"], p["col"], p["label"], p["source"], shape, pw))
    return AnnotationSet(image_id, shape, points, image_path)


def _load_json(path: Path, text: str) -> AnnotationSet | list[AnnotationSet]:
    try:
        doc = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and numbers too long to convert
        raise InputError(f"{path} is not valid JSON (truncated or corrupt?): {exc}") from exc
    except RecursionError as exc:
        raise InputError(f"{path}: JSON nested too deeply") from exc
    where = str(path)
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise InputError(f"{where}: field 'format' must be {FORMAT!r}, got {doc.get('format')!r}")
    version = doc.get("version")
    if version != VERSION or isinstance(version, bool):
        raise InputError(f"{where}: annotation format version {version!r} is not supported (1)")
    if "images" not in doc:
        return _json_set_from(doc, where)
    images = doc["images"]
    if not isinstance(images, list):
        raise InputError(f"{where}: 'images' must be a list, got {type(images).__name__}")
    sets = [_json_set_from(obj, f"{where}: images[{i}]") for i, obj in enumerate(images)]
    total = sum(len(s.points) for s in sets)
    if total > MAX_POINTS:
        raise InputError(f"{where}: {total} points in all, more than the limit {MAX_POINTS}")
    return sets


def load_annotations(path: str | Path) -> AnnotationSet | list[AnnotationSet]:
    """Read and validate an annotation file (CSV or JSON, by suffix).

    Returns one set, or a list for a JSON file with several images (``"images": [...]``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"annotation files end in .csv or .json, got {path}")
    text = _read_text(path)
    return _load_csv(path, text) if suffix == ".csv" else _load_json(path, text)


def is_annotation_file(path: str | Path) -> bool:
    """Whether ``path`` looks like an annotation file (by name, or by its first bytes)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(ANNOTATION_SUFFIXES):
        return True
    if path.suffix.lower() not in (".csv", ".json") or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(256).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    return head.startswith(f"# {FORMAT}") or f'"{FORMAT}"' in head


# ----------------------------------------------------------------------------------------
# Datasets


def _annotation_files(item: str | Path) -> list[Path]:
    path = Path(item)
    if path.is_dir():
        found = [p for s in ANNOTATION_SUFFIXES for p in path.rglob(f"*{s}") if p.is_file()]
        return sorted(found)
    if not path.is_file():
        raise InputError(f"annotation file or folder does not exist: {path}")
    if path.suffix.lower() in (".csv", ".json"):
        return [path]
    if path.suffix.lower() in _IMAGE_SUFFIXES:  # an image: its annotations beside it
        candidates = [annotation_path_for(path, s) for s in (".csv", ".json")]
        return [p for p in candidates if p.is_file()]
    raise InputError(f"not an annotation file, an image or a folder: {path}")


def _image_name(text: str) -> str:
    name = PurePosixPath(text.replace("\\", "/")).name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def annotations_for_dataset(
    paths_or_folder: str | Path | Iterable[str | Path], ids: Iterable[str]
) -> dict[str, AnnotationSet]:
    """Collect the saved annotations of a dataset's images, keyed by the dataset's ids.

    ``paths_or_folder``: a folder (searched recursively for ``*.points.csv|json``), or a
    list of annotation files, image files (whose ``<stem>.points.csv|json`` beside them is
    used when present) and folders. A set matches a dataset id when its ``image_id`` equals
    the id, else when the base names agree (``train_1`` matches ``benign/train_1``; also via
    the set's ``image_path`` or the file name). Sets matching no id are skipped; two sets for
    the same id, or a base name shared by several ids, raise :class:`InputError`.
    """
    items = (
        [paths_or_folder] if isinstance(paths_or_folder, (str, os.PathLike)) else paths_or_folder
    )
    files: list[Path] = []
    for item in items:
        files.extend(p for p in _annotation_files(item) if p not in files)
    ids = list(ids)
    id_set = set(ids)
    by_name: dict[str, list[str]] = {}
    for i in ids:
        by_name.setdefault(_image_name(i), []).append(i)

    def match(ann: AnnotationSet, file: Path) -> str | None:
        if ann.image_id in id_set:
            return ann.image_id
        file_stem = file.name
        for suffix in (".json", ".csv", ".points"):
            file_stem = file_stem.removesuffix(suffix)
        names = [_image_name(ann.image_id), file_stem]
        if ann.image_path:
            names.insert(1, _image_name(ann.image_path))
        for name in names:
            hits = by_name.get(name, [])
            if len(hits) > 1:
                raise InputError(
                    f"annotations of {ann.image_id!r} in {file} match several images "
                    f"({', '.join(hits[:5])}); save them with the full image id"
                )
            if hits:
                return hits[0]
        return None

    found: dict[str, AnnotationSet] = {}
    origin: dict[str, Path] = {}
    for file in files:
        loaded = load_annotations(file)
        for ann in loaded if isinstance(loaded, list) else [loaded]:
            key = match(ann, file)
            if key is None:
                continue
            if key in found:
                raise InputError(f"two annotation sets for image {key!r}: {origin[key]} and {file}")
            found[key] = ann
            origin[key] = file
    return found


# ----------------------------------------------------------------------------------------
# Pixel labels for training


def seed_map(ann: AnnotationSet, shape_hw: tuple[int, int], radius: int = 0) -> np.ndarray:
    """Trusted pixel labels from points: ``uint8 (H, W)``, 255 = ignore, 0/1 at the points.

    Points are scaled from ``ann.image_shape`` to ``shape_hw`` (pixel-centre convention) and
    drawn as disks of ``radius`` pixels (of ``shape_hw``; 0 = the one pixel). Exact point
    pixels take precedence over disks, and ``"user"`` points over all other sources; where
    points of the same precedence disagree the pixel is 255 (ignore), never a guess.
    """
    _validate_set(ann, f"annotations of {getattr(ann, 'image_id', '?')!r}")
    h, w = _check_shape(list(shape_hw), "seed_map shape_hw")
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise InputError(f"seed_map radius must be an integer >= 0, got {radius!r}")
    out = np.full(h * w, IGNORE, dtype=np.uint8)
    if not ann.points:
        return out.reshape(h, w)
    h0, w0 = ann.image_shape
    coords = ann.coords()
    labels = ann.labels()
    user = np.array([s == USER_SOURCE for s in ann.sources()])
    iy = np.clip(np.floor((coords[:, 0] + 0.5) * (h / h0)), 0, h - 1).astype(np.int64)
    ix = np.clip(np.floor((coords[:, 1] + 0.5) * (w / w0)), 0, w - 1).astype(np.int64)
    r = int(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = dy**2 + dx**2 <= r * r
    disk = list(zip(dy[inside].tolist(), dx[inside].tolist()))
    # Later layers override earlier ones: other disks, other points, user disks, user points.
    for chosen in (~user, user):
        for offsets in (disk, [(0, 0)]):
            if not chosen.any() or (r == 0 and offsets is disk):
                continue
            fg = np.zeros(h * w, dtype=bool)
            bg = np.zeros(h * w, dtype=bool)
            ys, xs, labs = iy[chosen], ix[chosen], labels[chosen]
            for oy, ox in offsets:
                y, x = ys + oy, xs + ox
                ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
                flat = y[ok] * w + x[ok]
                lab = labs[ok]
                fg[flat[lab == FOREGROUND]] = True
                bg[flat[lab == BACKGROUND]] = True
            out[fg & ~bg] = FOREGROUND
            out[bg & ~fg] = BACKGROUND
            out[fg & bg] = IGNORE
    return out.reshape(h, w)
