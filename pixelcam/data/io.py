"""Reading images, masks and split files, with errors that name the file.

Every reader turns whatever a decoder raises (a truncated file, text named ``.png``, a
zero-byte file, a 4-D TIFF stack) into an :class:`~pixelcam.errors.InputError` whose
message names the file, so the CLI and the napari plugin can show one actionable line.

Images come back as ``uint8`` RGB ``(H, W, 3)``: 16-bit data is scaled with ``>> 8``,
other integer and float data are rescaled (see :func:`to_rgb_uint8`), grayscale is
replicated, and an alpha channel is composited on WHITE (the background of a histology
slide), which leaves fully opaque images unchanged; CMYK (JPEG, or TIFF with photometric
SEPARATED) is converted to RGB by Pillow. TIFFs are read with ``tifffile``,
everything else with Pillow.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelcam.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "SplitEntry",
    "image_shape",
    "read_image",
    "read_mask",
    "read_encoding",
    "parse_label",
    "read_split_dir",
    "to_rgb_uint8",
]

#: File extensions treated as images by the folder readers (lower case, with the dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
_TIFF_EXTENSIONS = (".tif", ".tiff")


def _check_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file does not exist: {path}")
    if not path.is_file():
        raise InputError(f"{what} path is not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{what} file is empty (0 bytes): {path}")
    return path


def _read_tiff(path: Path) -> np.ndarray:
    """One 2-D image (grayscale or with samples) from a TIFF; stacks are refused."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError("no image series in the file")
        series = tif.series[0]
        axes = series.axes
        data = series.asarray()
        cmyk = getattr(series.keyframe, "photometric", None) == tifffile.PHOTOMETRIC.SEPARATED
    # Drop length-1 axes other than the spatial ones (a single page stored as a stack).
    keep = [i for i, ax in enumerate(axes) if ax in "YX" or data.shape[i] != 1]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if set(axes) - set("YXSC") or axes.count("S") + axes.count("C") > 1:
        raise ValueError(f"a stack of shape {data.shape} (axes {axes!r}); expected one 2-D image")
    channel_axis = next((i for i, ax in enumerate(axes) if ax in "SC"), None)
    if channel_axis is not None and channel_axis != data.ndim - 1:
        data = np.moveaxis(data, channel_axis, -1)
    if cmyk and data.ndim == 3 and data.shape[-1] == 4:  # inks, not RGBA: convert as Pillow does
        from PIL import Image

        ink = np.ascontiguousarray(_scale_to_uint8(data))
        h, w = ink.shape[:2]
        data = np.asarray(Image.frombytes("CMYK", (w, h), ink.tobytes()).convert("RGB"))
    return data


def _read_pil(path: Path, raw_indices: bool) -> np.ndarray:
    """Decode with Pillow. ``raw_indices``: keep palette indices (masks) instead of colours."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decode now: truncated files fail here, not later
        if getattr(im, "n_frames", 1) > 1:
            raise ValueError(f"{im.n_frames} frames; expected a single image")
        mode = im.mode
        if mode == "1":
            im = im.convert("L")
        elif mode in ("P", "PA"):
            if raw_indices:
                return np.asarray(im if mode == "P" else im.getchannel(0))
            im = im.convert("RGBA")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "La":
            im = im.convert("LA")
        elif mode == "RGBa":
            im = im.convert("RGBA")
        return np.array(im)


def _decode(path: Path, what: str, raw_indices: bool = False) -> np.ndarray:
    try:
        if path.suffix.lower() in _TIFF_EXTENSIONS:
            data = _read_tiff(path)
        else:
            data = _read_pil(path, raw_indices)
    except InputError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # any decoder failure is a bad file for the user
        raise InputError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}") from exc
    data = np.asarray(data)
    if data.size == 0 or data.ndim < 2 or min(data.shape[:2]) == 0:
        raise InputError(f"{what} {path} is empty (shape {data.shape})")
    return data


def _scale_to_uint8(data: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8 (same shape). See :func:`to_rgb_uint8` for the rules."""
    if data.dtype == np.uint8:
        return data
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255
    if data.dtype == np.uint16:
        return (data >> 8).astype(np.uint8)
    if np.issubdtype(data.dtype, np.integer):
        data = np.clip(data, 0, None)
        top = int(data.max()) if data.size else 0
        if top <= 255:
            return data.astype(np.uint8)
        if top <= 65535:
            return (data >> 8).astype(np.uint8)
        return np.round(data.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).any():
            raise ValueError("no finite pixel values (every pixel is NaN or infinite)")
        data = np.nan_to_num(data.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(data.min()), float(data.max())
        if lo >= 0.0 and hi <= 1.0:
            scaled = data * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = data
        elif hi > lo:
            top = max(abs(lo), abs(hi))  # divide first: hi - lo may overflow (-1e308..1e308)
            data, lo, hi = data / top, lo / top, hi / top
            scaled = (data - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(data)
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {data.dtype}")


def to_rgb_uint8(data: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a decoded array to ``uint8`` RGB ``(H, W, 3)``.

    Rules: ``uint16`` ``>> 8``; other integers clipped at 0 and kept if <= 255, ``>> 8`` if
    <= 65535, else rescaled by the maximum; floats in [0, 1] times 255, floats in [0, 255]
    kept, anything else min-max rescaled (NaN -> 0; an image with no finite pixel at all
    is refused); 1 channel replicated; 2 channels (gray + alpha) and 4 channels (RGBA)
    composited on white. ``name`` is used in errors.
    """
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[-1] > 4 and data.shape[0] in (1, 3, 4):
        data = np.moveaxis(data, 0, -1)  # planar (C, H, W)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{name} has shape {data.shape}; expected (H, W) or (H, W, 1-4)")
    if data.size == 0:
        raise InputError(f"{name} is empty (shape {data.shape})")
    try:
        pixels = _scale_to_uint8(data)
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from exc
    channels = pixels.shape[-1]
    if channels in (2, 4):
        color = pixels[..., : channels - 1].astype(np.float32)
        alpha = pixels[..., channels - 1 :].astype(np.float32) / 255.0
        pixels = np.round(color * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    pixels = np.ascontiguousarray(pixels)
    return pixels if pixels.flags.writeable else pixels.copy()  # torch.from_numpy warns


def image_shape(path: str | Path) -> tuple[int, int] | None:
    """``(H, W)`` of an image file from its header alone (no pixels decoded), or None when
    the header cannot be read (:func:`read_image` then says why)."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF_EXTENSIONS + (".svs",):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                sides = dict(zip(series.axes, series.shape))
            return int(sides["Y"]), int(sides["X"])
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        return int(h), int(w)
    except Exception:  # any unreadable header: the full read reports it, naming the file
        return None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8`` RGB ``(H, W, 3)``; :class:`InputError` if unreadable."""
    path = _check_file(path, "image")
    return to_rgb_uint8(_decode(path, "image"), name=f"image {path}")


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask as ``uint8`` ``(H, W)``: 1 where the file is > 0, else 0.

    Works for 0/255 masks, instance-numbered masks (GlaS) and palette masks (the palette
    index is used, not its colour). A colour mask is foreground where any channel is > 0.
    ``shape`` (H, W): the size the mask must have (the image's), checked here.
    """
    path = _check_file(path, "mask")
    data = _decode(path, "mask", raw_indices=True)
    if data.ndim == 3 and data.shape[-1] > 4 and data.shape[0] in (1, 3, 4):
        data = np.moveaxis(data, 0, -1)
    if data.ndim == 3:
        if data.shape[-1] in (2, 4):
            data = data[..., :-1]  # drop alpha
        data = data.max(axis=-1) if data.shape[-1] > 1 else data[..., 0]
    if data.ndim != 2:
        raise InputError(f"mask {path} has shape {data.shape}; expected a 2-D mask")
    data = np.nan_to_num(data) if np.issubdtype(data.dtype, np.floating) else data
    mask = (data > 0).astype(np.uint8)
    if shape is not None and tuple(mask.shape) != tuple(shape[:2]):
        raise InputError(
            f"mask {path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image is "
            f"{shape[0]}x{shape[1]} (HxW)"
        )
    return mask


# --------------------------------------------------------------------------------------
# Split files of the "WSOL done right" protocol (Choe et al. 2020), used for GlaS and
# CAMELYON16 by the PixelCAM authors: fold-K/<split>/{image_ids,class_labels,localization}.txt


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split: ``path`` relative to the data root, its label, its mask.

    ``mask`` is the mask path relative to the data root, ``""`` when localization.txt lists
    the image with an empty mask field (no foreground), ``None`` when not listed there.
    """

    path: str
    label: int
    mask: str | None


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_encoding(path: str | Path) -> list[str]:
    """Class names in index order from an ``encoding.yaml``, e.g. ``{benign: 0, malignant: 1}``."""
    import yaml

    path = Path(path)
    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the class encoding {path}: {exc}") from exc
    if not isinstance(mapping, Mapping) or not mapping:
        raise InputError(f"{path} must map class names to indices, e.g. {{benign: 0}}")
    try:
        by_index = {int(v): str(k) for k, v in mapping.items()}
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: class indices must be integers ({mapping})") from exc
    if sorted(by_index) != list(range(len(mapping))):
        raise InputError(f"{path}: class indices must be 0..{len(mapping) - 1} ({mapping})")
    return [by_index[i] for i in range(len(mapping))]


def parse_label(value: str, class_names: list[str] | tuple[str, ...], where: str) -> int:
    """A label given as an index (``"1"``) or a class name (``"malignant"``, any case)."""
    text = value.strip()
    lowered = [c.lower() for c in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    try:
        label = int(text)
    except ValueError:
        label = -1
    if 0 <= label < len(class_names):
        return label
    raise InputError(
        f"unknown label {value!r} in {where}; expected 0..{len(class_names) - 1} or one of "
        f"{list(class_names)}"
    )


def read_split_dir(
    split_dir: str | Path, class_names: list[str] | tuple[str, ...]
) -> list[SplitEntry]:
    """Read ``image_ids.txt``, ``class_labels.txt`` and (if present) ``localization.txt``."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise InputError(f"split folder does not exist: {split_dir}")
    ids_file = split_dir / "image_ids.txt"
    labels_file = split_dir / "class_labels.txt"
    for needed in (ids_file, labels_file):
        if not needed.is_file():
            raise InputError(f"split file missing: {needed}")
    ids = _read_lines(ids_file)
    if not ids:
        raise InputError(f"the split is empty: {ids_file} lists no image")
    labels: dict[str, int] = {}
    for n, row in enumerate(csv.reader(_read_lines(labels_file)), start=1):
        if len(row) < 2:
            raise InputError(f"{labels_file} line {n}: expected 'path,label', got {row}")
        labels[row[0].strip()] = parse_label(row[1], class_names, f"{labels_file} line {n}")
    masks: dict[str, str] = {}
    loc_file = split_dir / "localization.txt"
    if loc_file.is_file():
        for row in csv.reader(_read_lines(loc_file)):
            if row:
                masks[row[0].strip()] = row[1].strip() if len(row) > 1 else ""
    unlabelled = [p for p in ids if p not in labels]
    if unlabelled:
        raise InputError(
            f"{len(unlabelled)} image(s) of {ids_file} have no label in {labels_file}: "
            + ", ".join(unlabelled[:10])
        )
    return [SplitEntry(p, labels[p], masks.get(p)) for p in ids]
