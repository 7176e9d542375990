"""Microns in the viewer: layer pixel sizes, the scale bar's unit, and the live mode's
level and tile side at the model's training scale.

An Image layer opened from a file that says its pixel size (:func:`pixelcam.slide.read_mpp`)
gets ``scale = (mpp_y, mpp_x)`` and ``metadata["mpp"] = (mpp_x, mpp_y)`` (µm per pixel of
its level 0, x first as in OpenSlide); maps computed from it copy its scale (times the
level's downsampling), so they stay aligned, and record their own ``metadata["mpp"]``.
An image without a pixel size stays in pixels (scale 1). Layers in microns get napari's
``units = ("um", "um")`` (the reader's, and :func:`watch`'s for the layers computed from
them), so the scale bar reads µm: napari >= 0.6 takes the unit from the layers and ignores
``viewer.scale_bar.unit`` (deprecated).

Qt-free and torch-free: a checkpoint's training pixel size is read from its ``.json``
(:func:`checkpoint_mpp`), cheap enough for the GUI thread.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

from napari_pixelcam._provenance import provenance

MPP_KEY = "mpp"
_WATCHED: weakref.WeakSet = weakref.WeakSet()


def layer_mpp(layer: Any) -> tuple[float, float] | None:
    """``(x, y)`` µm per pixel of a layer's (level-0) data, from ``metadata["mpp"]``."""
    value = (getattr(layer, "metadata", None) or {}).get(MPP_KEY)
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def derived_mpp(layer: Any, level_scale: Any) -> tuple[float, float] | None:
    """The pixel size of data computed from ``layer`` at ``level_scale`` ``(sy, sx)``
    (level-0 pixels per pixel), or None when the layer has none."""
    mpp = layer_mpp(layer)
    if mpp is None:
        return None
    sy, sx = (float(v) for v in np.asarray(level_scale, float)[-2:])
    return (mpp[0] * sx, mpp[1] * sy)


def is_microns(layer: Any) -> bool:
    """Whether ``layer``'s world units are micrometres (napari's ``Layer.units``)."""
    units = getattr(layer, "units", None) or ()
    return bool(units) and all(str(u) == "micrometer" for u in units[-2:])


def use_microns(layer: Any) -> None:
    """Set ``layer``'s units to µm: napari's scale bar reads the layers' units (napari >=
    0.6 ignores ``viewer.scale_bar.unit``), in µm when every layer is in µm."""
    if not is_microns(layer):
        layer.units = ("um",) * int(layer.ndim)


def _derived_from_microns(layer: Any, layers: Any) -> bool:
    """A layer computed from a layer in microns: its metadata names that layer (maps:
    ``source``; outlines, grid panes, refined maps, points: the image's or map's name)."""
    names = {ly.name: ly for ly in layers}
    for value in (getattr(layer, "metadata", None) or {}).values():
        source = names.get(value) if isinstance(value, str) else None
        if source is not None and source is not layer and is_microns(source):
            return True
    return False


def watch(viewer: Any) -> None:
    """Give µm units to every layer added to ``viewer`` that is in microns: one with
    ``metadata["mpp"]``, or one computed from such a layer (they copy its scale)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # napari's plugin proxy
    try:
        events = viewer.layers.events.inserted
        if viewer in _WATCHED:
            return  # once per viewer, however many docks ask
        _WATCHED.add(viewer)
    except (AttributeError, TypeError):  # a stand-in viewer (Qt-free tests)
        return

    def on_inserted(event: Any) -> None:
        layer = event.value
        try:
            if layer_mpp(layer) is not None or _derived_from_microns(layer, viewer.layers):
                use_microns(layer)
        except Exception:  # noqa: BLE001 - cosmetic: the layer stays in pixels
            pass

    events.connect(on_inserted)


def checkpoint_mpp(path: str | Path | None) -> float | None:
    """The training pixel size a checkpoint records (meta ``"mpp"``), or None (unknown,
    absent in older checkpoints, or no checkpoint): read with its provenance, re-read only
    when its json changes."""
    return provenance(path).mpp if path else None


def live_plan(
    level_mpps: list[float], screen_level: int, model: float | None, tile: int
) -> tuple[int, int, str]:
    """The live mode's ``(level, tile side in its pixels, note)``.

    With both pixel sizes known and the view at or finer than the model's level
    (:func:`pixelcam.slide.mpp.choose_level`), tiles are read from that level, ``tile``
    model-scale pixels a side (``tile / factor`` level pixels). Zoomed out past it, or with a
    pixel size unknown, the level on screen and ``tile`` level pixels (the old behaviour;
    the note says which)."""
    from pixelcam.slide.mpp import choose_level, format_mpp, scale_note

    image = level_mpps[0] if level_mpps else None
    unknown = scale_note(image, model, "tiles at the scale on screen")
    if unknown is not None:
        return screen_level, tile, unknown
    choice = choose_level(level_mpps, model)
    if screen_level > choice.level:
        note = f"zoomed out past the model's {format_mpp(model)}: tiles at the scale on screen"
        return screen_level, tile, note
    side = max(64, round(tile / choice.factor))
    return choice.level, side, f"tiles at the model's {format_mpp(model)} ({choice.describe()})"


def whole_image_info(layer: Any, level_scale: Any, meta: dict | None) -> dict[str, Any]:
    """What the panel's "Compute maps" says of the scale, and its maps' pixel size:
    ``{"scale": note, "mpp": (x, y) or None}``. The whole image (or level) is resized to
    the model's input in one forward, as training resized whole images: the pixel sizes
    are reported, and the live mode is the one that reads tiles at the model's scale."""
    from pixelcam.slide.mpp import format_mpp, model_mpp

    mpp = derived_mpp(layer, level_scale)
    model = model_mpp(meta)
    if mpp is None and model is None:  # a plain tile and a model without a size: nothing
        return {"scale": "", "mpp": None}  # to match, and no line of noise on every result
    sizes = [f"image {format_mpp(mpp) if mpp else 'size unknown'}",
             f"model {format_mpp(model) if model else 'size unknown'}"]  # fmt: skip
    return {"scale": ", ".join(sizes) + " (whole image in one forward)", "mpp": mpp}
