"""What a checkpoint is: its provenance read from its JSON, and whether an image looks like
the generated tiles the bundled demo models were trained on.

:func:`provenance` reads a checkpoint's ``.json`` (``pixelcam.models.checkpoint`` layout:
``config`` = the architecture, ``meta`` = class names, phase, input size, epoch and the
validation metrics of that epoch) and, for the facts the checkpoint does not record (the
dataset), the ``config.json`` of the training run beside it. A fact recorded nowhere is
shown as "unknown", never guessed.

The bundled models (``napari_pixelcam/models/sample_*``) are demo models, trained on tiles
made by :func:`pixelcam.data.synthetic.generate_tile`; their json says so
(``meta.demo``, ``meta.dataset = "synthetic"``). On a real slide they classify at chance
and their maps ignore the glands, so :func:`demo_mismatch` tells when an image does not
look like those tiles. The test is a colour one, cheap and stain-aware: the generator mixes
every pixel from two stains with the Beer-Lambert law, so in optical density
(``-log(I / 255)``) its tiles lie on one plane (two stain vectors plus the slide's density).
The plane is fitted once to generated tiles; an image whose tissue pixels lie off it (median
relative distance above :data:`DEMO_DISTANCE`) was stained, scanned or made otherwise.
Measured: generated H&E tiles of 96-512 px score 0.009-0.011; the 85 GlaS training images
0.030-0.079; scikit-image's IHC image 0.50.

Qt-free. Reading json is cheap (main thread); :func:`demo_mismatch` imports the generator
(and so torch, through ``pixelcam.data``): call it in a worker.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_pixelcam import _common as common
from napari_pixelcam._common import MODELS_DIR

UNKNOWN = "unknown"
#: median relative distance of an image's optical densities to the generator's stain plane
#: above which it does not look like the demo models' training tiles
DEMO_DISTANCE = 0.02
#: an image is checked on at most this many pixels a side (strided)
CHECK_SIDE = 384


@dataclass(frozen=True)
class Provenance:
    """The facts of one checkpoint (strings; :data:`UNKNOWN` when not recorded)."""

    path: str
    phase: str = UNKNOWN
    dataset: str = UNKNOWN
    classes: str = UNKNOWN
    backbone: str = UNKNOWN
    input_size: str = UNKNOWN
    epoch: str = UNKNOWN
    val_pxap: str = UNKNOWN
    val_acc: str = UNKNOWN
    demo: bool = False
    error: str = ""
    class_names: tuple[str, ...] = field(default=())
    #: the training pixel size (µm) its meta records, None when unknown
    mpp: float | None = None

    @property
    def synthetic(self) -> bool:
        """Trained on generated tiles (a demo model, or a run on the synthetic dataset)."""
        return self.demo or self.dataset.startswith("synthetic")

    def lines(self) -> list[str]:
        """What the panel shows, one fact a line."""
        if self.error:
            return [f"{Path(self.path).name}: {self.error}"]
        name = Path(self.path).name
        kind = "DEMO model for generated tiles" if self.demo else f"{self.phase} model"
        return [
            f"{name}: {kind}",
            f"trained on: {self.dataset}; classes: {self.classes}",
            f"backbone {self.backbone}, input {self.input_size} px, epoch {self.epoch}",
            f"its validation: PxAP {self.val_pxap}, accuracy {self.val_acc}",
        ]

    def text(self) -> str:
        return "\n".join(self.lines())

    def summary(self) -> str:
        """The same facts, compact (one paragraph)."""
        if self.error:
            return f"{Path(self.path).name}: {self.error}"
        kind = "DEMO model" if self.demo else f"{self.phase} model"
        return (
            f"{Path(self.path).name} ({kind}), trained on {self.dataset}, classes "
            f"{self.classes}; {self.backbone}, {self.input_size} px, epoch {self.epoch}; "
            f"its validation PxAP {self.val_pxap}, accuracy {self.val_acc}"
        )


def _number(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.format(value)
    return UNKNOWN


def _dataset(meta: dict[str, Any], run: dict[str, Any]) -> str:
    """The training data: the checkpoint's own record, else its run's ``config.json``."""
    name = meta.get("dataset") or run.get("dataset")
    if not name:
        return UNKNOWN
    text = str(name)
    if meta.get("data"):
        text += f" ({meta['data']})"
    elif name == "synthetic" and run:
        size = run.get("synthetic_size")
        n = run.get("synthetic_n_per_class")
        text += f" (generated tiles, {size} px, {n} per class)" if size and n else ""
    elif meta.get("data_root") or run.get("data_root"):
        text += f" ({meta.get('data_root') or run['data_root']})"
    return text


@functools.lru_cache(maxsize=64)
def _provenance(path: str, stamp: tuple[int, int]) -> Provenance:
    from pixelcam.slide.mpp import model_mpp

    json_path = Path(path).with_suffix(".json")
    doc = common.read_json(json_path)
    if not doc:
        return Provenance(path, error="no readable checkpoint json")
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    run = common.read_json(json_path.parent / "config.json")
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    names = meta.get("class_names")
    names = tuple(str(n) for n in names) if isinstance(names, list) else ()
    backbone = str(config.get("backbone") or UNKNOWN)
    head = [config.get("head"), config.get("pixel_head"), config.get("decoder")]
    if backbone != UNKNOWN and any(head):
        backbone += " + " + " + ".join(str(h) for h in head if h)
    epoch = meta.get("epoch")
    epochs = meta.get("epochs") or run.get("epochs")
    epoch_text = _number(epoch, "{}") + (f" of {epochs}" if epoch is not None and epochs else "")
    demo = bool(meta.get("demo")) or Path(path).resolve().parent == MODELS_DIR
    return Provenance(
        path=path,
        phase=str(meta.get("phase") or run.get("phase") or UNKNOWN),
        dataset=_dataset(meta, run),
        classes=", ".join(names) if names else UNKNOWN,
        backbone=backbone,
        input_size=_number(meta.get("eval_size"), "{}"),
        epoch=epoch_text,
        val_pxap=_number(metrics.get("valpx_pxap"), "{:.1f}") if metrics else UNKNOWN,
        val_acc=_number(metrics.get("valcl_acc"), "{:.1f}%") if metrics else UNKNOWN,
        demo=demo,
        class_names=names,
        mpp=model_mpp(meta),
    )


def provenance(path: str | Path) -> Provenance:
    """The facts of the checkpoint at ``path`` (``.json`` or ``.safetensors``), re-read
    when its json changes."""
    json_path = Path(path).with_suffix(".json")
    try:
        st = json_path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        return Provenance(str(path), error="checkpoint json not found")
    return _provenance(str(path), stamp)


# ---------------------------------------------------------------------- the demo check
def _optical_density(rgb: np.ndarray) -> np.ndarray:
    """Optical densities ``[N, 3]`` of the tissue pixels (total density above 0.3)."""
    od = -np.log((rgb[..., :3].reshape(-1, 3).astype(np.float64) + 0.5) / 255.5)
    return od[od.sum(1) > 0.3]


@functools.cache
def _demo_plane() -> tuple[np.ndarray, np.ndarray]:
    """The generator's stain plane in optical density: ``(mean, 3x3 projector)``, fitted
    to generated H&E tiles of both classes."""
    from pixelcam.data.synthetic import generate_tile

    od = np.concatenate(
        [
            _optical_density(generate_tile(label, size=192, seed=seed)[0])
            for label in (0, 1)
            for seed in (0, 1)
        ]  # fmt: skip
    )
    mean = od.mean(0)
    _, _, vt = np.linalg.svd(od - mean, full_matrices=False)
    basis = vt[:2]
    return mean, basis.T @ basis


def warm_demo_check() -> None:
    """Fit the stain plane once (in a worker, when the panel opens)."""
    _demo_plane()


def demo_distance(image: np.ndarray) -> float:
    """Median relative distance of the image's tissue optical densities to the demo
    tiles' stain plane (about 0.01 for a generated H&E tile; inf for a non-RGB image)."""
    data = np.asarray(image)
    if data.ndim != 3 or data.shape[-1] not in (3, 4):
        return float("inf")
    step = max(1, int(np.ceil(max(data.shape[:2]) / CHECK_SIDE)))
    rgb = data[::step, ::step, :3]
    if rgb.dtype != np.uint8:
        from pixelcam.data.io import to_rgb_uint8

        rgb = to_rgb_uint8(rgb)
    od = _optical_density(rgb)
    if len(od) < 100:
        return float("inf")
    mean, projector = _demo_plane()
    centred = od - mean
    residual = centred - centred @ projector
    rel = np.linalg.norm(residual, axis=1) / np.maximum(np.linalg.norm(od, axis=1), 1e-6)
    return float(np.median(rel))


def demo_mismatch(image: np.ndarray) -> bool:
    """Whether the image does NOT look like the generated tiles of the demo models."""
    return demo_distance(image) > DEMO_DISTANCE
