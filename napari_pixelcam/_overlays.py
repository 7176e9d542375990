"""How maps are drawn over tissue: one style per map family, threshold outlines, titles.

A map is read over H&E or IHC, so its colormap must leave the tissue visible where the map
is low: every style is a napari ``Colormap`` with RGBA control points whose alpha ramps up
from 0 (an alpha ramp), drawn with translucent blending (additive blending of a bright map
over a bright H&E image saturates to white). The hues avoid the stains' own colours
(eosin pink, hematoxylin purple, DAB brown): amber for the baseline CAMs, green for
PixelCAM, cyan for the decoders (NEGEV, U-Net), and a diverging amber - transparent - green
for the difference (PixelCAM minus a baseline: green where PixelCAM says more, amber where
the baseline does; differences under 0.16 stay transparent).

The family of a map comes from the session's catalogue (the registries' split of the map
methods, :class:`napari_pixelcam._session.Catalogue`); :data:`STYLES` is the one place
that gives each family its colormap, opacity, value range and outline colour.

:func:`outline` draws a map's foreground region (map >= threshold) and a ground-truth mask
as outlines: a ``uint8`` label image with :data:`MAP_EDGE` on the map's contour and
:data:`MASK_EDGE` on the mask's, shown as a Labels layer over the map.

Qt-free; napari is imported only when a colormap is built.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

#: label values of an outline image: the map's contour, the mask's, and the mask's dark rim
MAP_EDGE, MASK_EDGE, MASK_RIM = 1, 2, 3
#: the ground-truth mask's outline: white on a dark rim, which reads on pale stroma, white
#: lumen, dark nuclei and every map style alike
MASK_COLOR = "#ffffff"
MASK_RIM_COLOR = "#101418"
#: what a map is called in titles and the result line (others: the method's name)
DISPLAY_NAMES = {
    "cam": "CAM", "gradcampp": "GradCAM++", "layercam": "LayerCAM", "deepmil": "DeepMIL",
    "sat": "SAT", "pixelcam": "PixelCAM", "negev": "NEGEV", "unet": "U-Net",
    "difference": "Difference",
}  # fmt: skip
#: metadata key of a ground-truth mask to draw as an outline (set by the reader and the
#: sample data; the panel draws every such mask with ``contour``)
OUTLINE_MASK_KEY = "pixelcam_mask"
#: the default threshold of the outline (maps are in [0, 1])
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Style:
    """How one family of maps is drawn.

    ``stops``: ``(value in [0, 1], (r, g, b, a))`` control points of the colormap, over
    ``limits``; ``opacity``: the layer's default opacity; ``outline``: the colour of its
    threshold contour."""

    name: str
    stops: tuple[tuple[float, tuple[float, float, float, float]], ...]
    opacity: float
    outline: str
    limits: tuple[float, float] = (0.0, 1.0)


def _ramp(low: tuple[int, int, int], high: tuple[int, int, int]) -> tuple:
    """Transparent below 0.15, then ``low`` at half alpha, ``high`` nearly opaque at 1."""
    lo, hi = np.asarray(low) / 255.0, np.asarray(high) / 255.0
    return (
        (0.0, (*lo, 0.0)),
        (0.15, (*lo, 0.0)),
        (0.5, (*lo, 0.5)),
        (1.0, (*hi, 0.9)),
    )


#: one style per map family (see the module docstring)
STYLES: dict[str, Style] = {
    "baseline": Style("pixelcam-amber", _ramp((255, 120, 0), (255, 220, 40)), 0.85, "#ffb300"),
    "pixelcam": Style("pixelcam-green", _ramp((0, 170, 80), (150, 255, 60)), 0.85, "#7cff4f"),
    "decoder": Style("pixelcam-cyan", _ramp((0, 170, 210), (150, 255, 255)), 0.85, "#5ff3ff"),
    "difference": Style(
        "pixelcam-diverging",
        (
            (0.0, (1.0, 0.6, 0.0, 0.95)),
            (0.3, (1.0, 0.5, 0.0, 0.65)),
            (0.42, (1.0, 0.5, 0.0, 0.0)),
            (0.58, (0.2, 0.85, 0.3, 0.0)),
            (0.7, (0.2, 0.85, 0.3, 0.65)),
            (1.0, (0.55, 1.0, 0.35, 0.95)),
        ),
        0.9,
        "#ffffff",
        (-1.0, 1.0),
    ),
}


def family(method: str, catalogue: Any = None) -> str:
    """The style family of a map method: ``"pixelcam"`` (pixel-head maps), ``"decoder"``
    (NEGEV, U-Net), ``"difference"``, else ``"baseline"``. Read from the catalogue's
    split when given (else by name, for layers made before it was read)."""
    if method == "difference":
        return "difference"
    if catalogue is not None:
        if method in catalogue.pixel_maps:
            return "pixelcam"
        if method in catalogue.reference_maps:
            return "decoder"
        return "baseline"
    return {"pixelcam": "pixelcam", "negev": "decoder", "unet": "decoder"}.get(method, "baseline")


def style_of(method: str, catalogue: Any = None) -> Style:
    return STYLES[family(method, catalogue)]


@functools.cache
def colormap(name: str) -> Any:
    """The napari ``Colormap`` of a style (built once)."""
    from napari.utils.colormaps import Colormap

    style = next(s for s in STYLES.values() if s.name == name)
    controls = [v for v, _ in style.stops]
    colors = [c for _, c in style.stops]
    return Colormap(colors=colors, controls=controls, name=style.name, interpolation="linear")


def layer_kwargs(method: str, catalogue: Any = None) -> dict[str, Any]:
    """``add_image`` keyword arguments that draw map ``method`` in its family's style."""
    style = style_of(method, catalogue)
    return {
        "colormap": colormap(style.name),
        "blending": "translucent",
        "opacity": style.opacity,
        "contrast_limits": style.limits,
    }


def display_name(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


def title(method: str, pxap: float | None = None) -> str:
    """A grid pane's title: the map's name and, with a mask, its PxAP."""
    text = display_name(method)
    return text if pxap is None else f"{text} · PxAP {pxap:.1f}"


def image_title(name: str, constant: float | None = None) -> str:
    """The image pane's title: the image and the constant map's PxAP (the reference a map
    must beat: the mask's foreground fraction)."""
    return name if constant is None else f"{name} · constant map {constant:.1f}"


# ---------------------------------------------------------------------- outlines
def edge_width(shape: tuple[int, ...], overview: bool = False) -> int:
    """Outline thickness in image pixels: about 1/300 of the longer side, at least 2
    (``overview``: 1/150, for grid panes, seen zoomed out)."""
    return max(2, round(max(shape[:2]) / (150 if overview else 300)))


def _edges(region: np.ndarray, width: int) -> np.ndarray:
    """The inner boundary of a boolean region, ``width`` pixels thick."""
    from scipy import ndimage as ndi

    if not region.any():
        return np.zeros_like(region)
    inner = region.copy()
    inner[1:, :] &= region[:-1, :]
    inner[:-1, :] &= region[1:, :]
    inner[:, 1:] &= region[:, :-1]
    inner[:, :-1] &= region[:, 1:]
    edge = region & ~inner
    if width > 1:
        edge = ndi.maximum_filter(edge, size=width) & region
    return edge


def ndi_dilate(edge: np.ndarray) -> np.ndarray:
    """``edge`` grown by one pixel (3x3)."""
    from scipy import ndimage as ndi

    return ndi.maximum_filter(edge, size=3)


def outline(
    values: np.ndarray | None,
    threshold: float,
    mask: np.ndarray | None = None,
    width: int | None = None,
    overview: bool = False,
) -> np.ndarray:
    """A label image (``uint8``, the shape of ``values`` or ``mask``): :data:`MAP_EDGE` on
    the contour of ``values >= threshold``, :data:`MASK_EDGE` on the contour of
    ``mask > 0`` with :data:`MASK_RIM` one pixel around it (the map's contour on top where
    they meet). A mask of another shape is resampled to the map's (nearest)."""
    ref = values if values is not None else mask
    if ref is None:
        raise ValueError("outline needs a map or a mask")
    shape = np.asarray(ref).shape[:2]
    width = width or edge_width(shape, overview)
    out = np.zeros(shape, np.uint8)
    if mask is not None:
        m = np.asarray(mask) > 0
        if m.shape != shape:
            rows = (np.arange(shape[0]) * m.shape[0] // shape[0]).clip(0, m.shape[0] - 1)
            cols = (np.arange(shape[1]) * m.shape[1] // shape[1]).clip(0, m.shape[1] - 1)
            m = m[np.ix_(rows, cols)]
        edge = _edges(m, width)
        if width > 1:  # a 1-pixel rim would look dotted once the view is zoomed out
            out[ndi_dilate(edge) & ~edge] = MASK_RIM
        out[edge] = MASK_EDGE
    if values is not None:
        v = np.nan_to_num(np.asarray(values, np.float32), nan=-np.inf)
        out[_edges(v >= threshold, width)] = MAP_EDGE
    return out


def outline_colormap(map_color: str) -> Any:
    """The Labels colormap of an outline: the map's contour in ``map_color``, the mask's in
    :data:`MASK_COLOR`, everything else transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(
        color_dict={
            None: "transparent",
            0: "transparent",
            MAP_EDGE: map_color,
            MASK_EDGE: MASK_COLOR,
            MASK_RIM: MASK_RIM_COLOR,
        }  # fmt: skip
    )


def mask_colormap() -> Any:
    """A ground-truth mask drawn as an outline: every gland label in :data:`MASK_COLOR`."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: MASK_COLOR, 0: "transparent"})


def show_mask_as_outline(layer: Any) -> None:
    """A ground-truth Labels layer drawn as a white outline (``contour``), not a fill."""
    shape = layer.data[0].shape if layer.multiscale else layer.data.shape
    layer.contour = edge_width(tuple(shape))
    layer.colormap = mask_colormap()
    layer.opacity = 1.0
    layer.blending = "translucent"


def best_grid(n: int, canvas: tuple[float, float], image: tuple[float, float]) -> tuple[int, int]:
    """``(rows, columns)`` of a grid of ``n`` panes that shows an image of ``image`` =
    ``(height, width)`` largest on a canvas of ``canvas`` = ``(height, width)``."""
    best, best_scale = (1, n), -1.0
    for rows in range(1, n + 1):
        cols = -(-n // rows)
        scale = min(canvas[1] / cols / max(image[1], 1), canvas[0] / rows / max(image[0], 1))
        if scale > best_scale + 1e-9:
            best, best_scale = (rows, cols), scale
    return best


# ---------------------------------------------------------------------- grid panes
def colorize(values: np.ndarray, style: Style) -> np.ndarray:
    """``float32 [..., 4]`` RGBA of map values in a style (its colormap, linear between
    its control points, over its value range)."""
    lo, hi = style.limits
    t = (np.nan_to_num(np.asarray(values, np.float32), nan=lo) - lo) / (hi - lo)
    lut_x = np.linspace(0.0, 1.0, 256)
    stops = np.array([v for v, _ in style.stops])
    colors = np.array([c for _, c in style.stops])
    lut = np.stack([np.interp(lut_x, stops, colors[:, k]) for k in range(4)], -1)
    index = np.clip(np.rint(t * 255), 0, 255).astype(np.intp)
    return lut[index].astype(np.float32)


def _rgb(hex_color: str) -> np.ndarray:
    h = hex_color.lstrip("#")
    return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], np.float32)


def compose(
    tissue: np.ndarray,
    values: np.ndarray | None,
    style: Style | None,
    opacity: float,
    edges: np.ndarray,
    map_color: str,
) -> np.ndarray:
    """One grid pane as an RGB image (``uint8``): the map in its style over the tissue
    (translucent: ``tissue * (1 - a) + color * a``), then the outlines of ``edges`` (an
    :func:`outline` label image) on top. ``tissue`` is ``uint8 [H, W, 3]`` on the map's
    grid."""
    out = tissue.astype(np.float32)
    if values is not None and style is not None:
        rgba = colorize(values, style)
        alpha = rgba[..., 3:] * float(opacity)
        out = out * (1.0 - alpha) + 255.0 * rgba[..., :3] * alpha
    for label, color in (
        (MASK_RIM, MASK_RIM_COLOR),
        (MASK_EDGE, MASK_COLOR),
        (MAP_EDGE, map_color),
    ):
        out[edges == label] = _rgb(color)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def header(
    pane: np.ndarray, title: str, color: str, legend: Style | None = None
) -> tuple[np.ndarray, int]:
    """A grid pane with its title on a dark band above the tissue (the tissue is never
    covered), and, for a map, its colour scale at the band's right end (the style's ramp
    over a dark ground, with its range). Drawn into the picture with Pillow: napari's
    per-layer text overlays cost a text visual each, re-made whenever a pane is shown.
    Returns the picture and the band's height in pixels."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = pane.shape[:2]
    band = max(18, round(min(h, w) / 11))
    font = ImageFont.load_default(size=max(10, round(band * 0.62)))
    canvas = Image.new("RGB", (w, h + band), (20, 23, 28))
    canvas.paste(Image.fromarray(pane), (0, band))
    draw = ImageDraw.Draw(canvas)
    pad = max(2, band // 5)
    text_right = w - pad
    if legend is not None:
        text_right = _legend(draw, legend, w, band, pad, font)
    text = title
    while text and draw.textlength(text, font=font) > text_right - 2 * pad:
        text = text[:-2] + "…"
    draw.text((pad, band / 2), text, fill=color, font=font, anchor="lm")
    return np.asarray(canvas), band


def _legend(draw: Any, style: Style, w: int, band: int, pad: int, font: Any) -> float:
    """The style's colour ramp (on the band's dark ground) with its range, at the right of
    a pane's band; returns where the title must stop."""
    lo, hi = style.limits
    labels = (f"{lo:g}", f"{hi:g}")
    bar_w, bar_h = max(30, w // 6), max(6, band // 3)
    right = w - pad - draw.textlength(labels[1], font=font) - pad
    left = right - bar_w
    ramp = colorize(np.linspace(lo, hi, bar_w), style)
    ground = np.array([20, 23, 28], np.float32)
    rgb = ground * (1 - ramp[:, 3:]) + 255.0 * ramp[:, :3] * ramp[:, 3:]
    top = (band - bar_h) / 2
    for x, c in enumerate(np.clip(rgb, 0, 255).astype(int)):
        draw.line([(left + x, top), (left + x, top + bar_h)], fill=tuple(int(v) for v in c))
    draw.rectangle([left - 1, top - 1, right, top + bar_h], outline=(150, 150, 150))
    draw.text((right + pad, band / 2), labels[1], fill=(220, 220, 220), font=font, anchor="lm")
    lo_w = draw.textlength(labels[0], font=font)
    draw.text((left - pad - lo_w, band / 2), labels[0], fill=(220, 220, 220), font=font,
              anchor="lm")  # fmt: skip
    return left - 2 * pad - lo_w
