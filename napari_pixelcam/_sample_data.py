"""napari sample data: generated H&E-like tiles with their gland masks, and skimage's IHC.

The synthetic tiles are produced by :func:`pixelcam.data.synthetic.generate_tile` with
fixed seeds (the same tiles ``sample_data/make_samples.py`` writes as PNG files), so the
samples work from an installed wheel without any data file.
"""

from __future__ import annotations

from typing import Any

SAMPLE_SIZE = 384
SAMPLE_SEEDS = {"benign": 11, "malignant": 12}
CLASS_LABELS = {"benign": 0, "malignant": 1}

LayerData = tuple[Any, dict, str]


def _tile(class_name: str) -> list[LayerData]:
    from napari_pixelcam._common import data_module
    from napari_pixelcam._reader import mask_style

    generate_tile = data_module("pixelcam.data.synthetic").generate_tile  # no torch
    image, mask = generate_tile(
        CLASS_LABELS[class_name], size=SAMPLE_SIZE, seed=SAMPLE_SEEDS[class_name]
    )
    name = f"synthetic {class_name}"
    return [
        (image, {"name": name, "rgb": True, "metadata": {"pixelcam_label": class_name}}, "image"),
        (
            mask.astype("uint8"),
            {"name": f"{name} mask", **mask_style(mask.shape)},
            "labels",
        ),
    ]


def benign_tile() -> list[LayerData]:
    """A synthetic benign tile (regular glands) and its ground-truth gland mask."""
    return _tile("benign")


def malignant_tile() -> list[LayerData]:
    """A synthetic malignant tile (crowded, fused glands) and its ground-truth gland mask."""
    return _tile("malignant")


def ihc_image() -> list[LayerData]:
    """scikit-image's bundled immunohistochemistry image (loads offline)."""
    from skimage import data

    return [(data.immunohistochemistry(), {"name": "immunohistochemistry", "rgb": True}, "image")]
