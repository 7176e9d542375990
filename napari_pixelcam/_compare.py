"""The maps of one image as layers: one map over the tissue, or all of them side by side.

:class:`MapView` owns how the panel's map layers look (it holds no widget: the panel's
controls call it):

- **one map over the image** (the default): of the image's map layers exactly one is
  visible (:attr:`MapView.shown`; :meth:`step` goes to the next one, bound to ``.`` and
  ``,`` by the panel), in its family's style (:mod:`napari_pixelcam._overlays`), with its
  colour bar, and an ``outline [<image>]`` Labels layer draws the contour of the map's
  foreground region (map >= :attr:`threshold`) over the tissue. The ground-truth mask is a
  white outline (Labels ``contour``), not a fill.
- **side by side** (:meth:`set_grid`): napari's grid, one pane per map, plus the image pane
  (the tissue with the mask's outline and the shown map's contour) when a mask is chosen.
  A pane is ONE RGB layer composed in a worker (:func:`napari_pixelcam._overlays.compose`:
  the tissue, the map in its style at its opacity, the map's contour and the mask's; then
  :func:`~napari_pixelcam._overlays.header`: a dark band above the tissue with the pane's
  title, ``"PixelCAM · PxAP 72.3"`` in the family's colour, and the map's colour scale),
  and the layer is named by the title. One layer a pane, not three, and titles drawn into
  the picture rather than napari's name overlays, because napari's per-layer costs (a
  controls widget, a visual, a text visual re-made whenever a pane is shown) add up to
  seconds in a grid on a software renderer. The panes share napari's one camera (linked
  pan and zoom). Every other layer is hidden while the grid is on and comes back, in its
  place, when it goes off: then one map is shown again. Panes are added, shown and hidden
  one layer per event-loop turn, so the viewer never freezes; hidden panes are kept and
  updated by the next grid.
- **difference** (:meth:`difference`): PixelCAM minus a baseline map, a map layer like the
  others (diverging style, transparent at zero), so it is drawn over the tissue.

Layers are found by their metadata (:data:`~napari_pixelcam._common.MAP_KEY`,
:data:`~napari_pixelcam._common.BACKDROP_KEY`, :data:`OUTLINE_KEY`), never by position.
No Qt import here (the turns and workers come from :mod:`napari_pixelcam._common`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_pixelcam import _common as common
from napari_pixelcam import _overlays as ov

if TYPE_CHECKING:
    import napari

#: metadata key of an outline layer (value: the image's name)
OUTLINE_KEY = common.OUTLINE_KEY
#: an outline or a pane is computed on at most this many pixels a side (maps are smooth)
OUTLINE_SIDE = 1024
#: order of the panes: baseline maps, PixelCAM, decoders, the difference
FAMILY_ORDER = ("baseline", "pixelcam", "decoder", "difference")


class MapView:
    """How the map layers of the panel's image are shown (module docstring)."""

    def __init__(self, viewer: napari.viewer.Viewer, catalogue: Any = None) -> None:
        self.viewer = viewer
        self.catalogue = catalogue  # set by the panel once the session read it
        self.image: Any = None  # the source image layer
        self.mask: Any = None  # the ground-truth Labels layer, or None
        self.shown: str | None = None  # the method shown in single view
        self.threshold = ov.DEFAULT_THRESHOLD
        self.grid_on = False
        #: called when a series of changes is done (a grid shown, a difference added...)
        self.on_change: Callable[[], None] | None = None
        self._build = 0  # generation of the grid being built (a newer one wins)
        self._building = False
        self._pending = 0  # series of event-loop turns not done yet
        self._hidden: list[tuple[Any, bool]] = []  # (layer, was visible) while the grid is on
        self._order: list[Any] = []  # the layer order before the grid

    # ------------------------------------------------------------------ lookups
    def maps(self) -> list[Any]:
        """The image's map layers (whole-image ones, not live tiles), in pane order."""
        if self.image is None:
            return []
        name = self.image.name
        found = [
            ly
            for ly in self.viewer.layers
            if common.MAP_KEY in ly.metadata
            and ly.metadata.get("source") == name
            and not ly.metadata.get("pixelcam_live")
        ]
        rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
        return sorted(found, key=lambda ly: rank[self.family(ly)])

    def family(self, layer: Any) -> str:
        return ov.family(layer.metadata[common.MAP_KEY], self.catalogue)

    def methods(self) -> list[str]:
        return [ly.metadata[common.MAP_KEY] for ly in self.maps()]

    def layer(self, method: str | None) -> Any:
        return next((ly for ly in self.maps() if ly.metadata[common.MAP_KEY] == method), None)

    def panes(self) -> list[Any]:
        """The grid's pane layers, in pane order."""
        return [ly for ly in self.viewer.layers if ly.metadata.get("pixelcam_pane")]

    @property
    def busy(self) -> bool:
        """Whether a grid is being built (a worker, then one pane per event-loop turn) or
        other layer changes are under way."""
        return self._building or self._pending > 0

    # ------------------------------------------------------------------ outlines
    def _outline_layer(self, create: bool = True) -> Any:
        name = f"outline [{self.image.name}]"
        if name in self.viewer.layers:
            return self.viewer.layers[name]
        if not create:
            return None
        data, scale, translate = self._outline_data(None)
        return self.viewer.add_labels(
            data, name=name, scale=scale, translate=translate, opacity=1.0,
            metadata={OUTLINE_KEY: self.image.name}, blending="translucent_no_depth",
            colormap=ov.outline_colormap(ov.MASK_COLOR),
        )  # fmt: skip

    def ensure_outline(self) -> None:
        """The image's outline layer, made now (empty) if it is missing."""
        if self.image is not None and self.maps():
            self._outline_layer()

    def _outline_color(self, map_layer: Any) -> str:
        if map_layer is None:
            return ov.MASK_COLOR
        return ov.STYLES[self.family(map_layer)].outline

    def _grid_of(self, map_layer: Any) -> tuple[tuple[int, int], int, np.ndarray, np.ndarray]:
        """The grid an outline or a pane is computed on: ``(shape of the map or image,
        stride, scale, translate)``, at most :data:`OUTLINE_SIDE` pixels a side."""
        ref = map_layer if map_layer is not None else self.image
        shape = ref.data.shape[:2] if map_layer is not None else _hw(self.image)
        step = max(1, int(np.ceil(max(shape) / OUTLINE_SIDE)))
        scale = np.asarray(ref.scale[-2:], float) * step
        return tuple(int(s) for s in shape), step, scale, np.asarray(ref.translate[-2:], float)

    def _outline_data(self, map_layer: Any) -> tuple:
        """The contour of ``map_layer >= threshold`` on its outline grid (zeros for none,
        or a difference), its scale and translate."""
        shape, step, scale, translate = self._grid_of(map_layer)
        if map_layer is None or self.family(map_layer) == "difference":
            data = np.zeros(tuple(-(-np.asarray(shape) // step)), np.uint8)
        else:
            data = ov.outline(np.asarray(map_layer.data)[::step, ::step], self.threshold)
        return data, scale, translate

    def _mask_on(self, shape: tuple[int, int], step: int) -> np.ndarray | None:
        """The mask sampled on an outline grid (nearest), None without a mask."""
        if self.mask is None or self.mask not in self.viewer.layers:
            return None
        mask = np.asarray(self.mask.data[0] if self.mask.multiscale else self.mask.data)
        if mask.ndim != 2:
            return None
        rows = np.arange(0, shape[0], step) * mask.shape[0] // shape[0]
        cols = np.arange(0, shape[1], step) * mask.shape[1] // shape[1]
        return mask[np.ix_(rows, cols)]

    # ------------------------------------------------------------------ single view
    def set_image(self, image: Any, mask: Any) -> None:
        """The image whose maps are shown, and its ground-truth mask (drawn as an outline,
        once: the user may fill it again in napari's layer controls)."""
        self.image, self.mask = image, mask
        if mask is not None:
            outline_mask(mask)

    def outline_masks(self) -> None:
        """Every ground-truth mask the reader or the sample data made, as an outline."""
        for layer in self.viewer.layers:
            if layer.metadata.get(ov.OUTLINE_MASK_KEY):
                outline_mask(layer)

    def show(self, method: str | None = None, outline: bool = True) -> str | None:
        """Show one map over the image (``method``, else the one shown, else PixelCAM,
        else the last), the others hidden, with its colour bar and (unless ``outline`` is
        False: :meth:`refresh_outline` later, for a paint of its own) its outline. Returns
        it."""
        maps = self.maps()
        if not maps:
            return None
        methods = [ly.metadata[common.MAP_KEY] for ly in maps]
        method = method if method in methods else self.shown if self.shown in methods else None
        method = method or ("pixelcam" if "pixelcam" in methods else methods[-1])
        self.shown = method
        if self.grid_on:
            return method
        for ly in sorted(maps, key=lambda ly: not ly.visible):  # shown last: one redraw less
            visible = ly.metadata[common.MAP_KEY] == method
            if ly.visible != visible:
                ly.visible = visible
            if visible:
                colorbar_on(ly)
        if outline:
            self.refresh_outline()
        self._mask_on_top(maps)
        return method

    def _mask_on_top(self, maps: list[Any]) -> None:
        """The mask's outline above the maps (under them, a map would tint it away)."""
        layers = self.viewer.layers
        if self.mask is None or self.mask not in layers:
            return
        top = max(layers.index(ly) for ly in maps)
        here = layers.index(self.mask)
        if here < top:
            layers.move(here, len(layers))

    def step(self, delta: int = 1) -> str | None:
        """Show the next (``delta=1``) or previous map."""
        methods = self.methods()
        if not methods:
            return None
        i = methods.index(self.shown) if self.shown in methods else -1
        return self.show(methods[(i + delta) % len(methods)])

    def set_opacity(self, value: float) -> None:
        layer = self.layer(self.shown)
        if layer is not None:
            layer.opacity = float(value)
            if self.grid_on:
                self.refresh_panes()

    def set_threshold(self, value: float) -> None:
        self.threshold = float(value)
        if self.grid_on:
            self.refresh_panes()
        else:
            self.refresh_outline()

    def refresh_outline(self) -> None:
        """The outline of the shown map at the threshold (hidden with no map shown)."""
        if self.image is None:
            return
        layer = self._outline_layer(create=bool(self.maps()))
        if layer is None:
            return
        source = self.layer(self.shown)
        data, scale, translate = self._outline_data(source)
        if layer.data.shape != data.shape or not np.allclose(layer.scale[-2:], scale):
            layer.scale, layer.translate = scale, translate
        layer.data = data
        color = self._outline_color(source)
        if layer.metadata.get("color") != color:
            layer.colormap = ov.outline_colormap(color)
            layer.metadata["color"] = color
        layer.visible = source is not None and source.visible

    # ------------------------------------------------------------------ the grid
    def set_grid(self, on: bool) -> None:
        """Side by side (every map over its own copy of the image, titled), or back to one
        map over the image. Both happen over several event-loop turns (the panes composed
        in a worker, then one layer change a turn): :attr:`busy` until done,
        :attr:`on_change` called when done."""
        self._build += 1  # a grid being built for an older request is dropped
        build = self._build
        steps = self._off_steps(reset=not on) if self.grid_on else []
        if on and self.maps():
            steps.append(lambda: self._start_build(build))
        else:
            steps.append(lambda: self._finish(build))
        self._building = True
        common.in_turns(steps)

    def _start_build(self, build: int) -> None:
        if build == self._build:
            common.in_worker(self._pane_job(build), self._add_panes, self._failed)

    def _finish(self, build: int) -> None:
        if build == self._build:
            self._building = False
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def refresh_panes(self) -> None:
        """New threshold or opacity: the panes composed again (worker), then updated."""
        if self.grid_on:
            self._building = True
            common.in_worker(self._pane_job(self._build), self._update_panes, self._failed)

    def _pane_specs(self) -> list[dict[str, Any]]:
        """What each pane shows (plain data, read on the main thread)."""
        specs = []
        maps = self.maps()
        shown = self.layer(self.shown)
        if self.mask is not None and self.mask in self.viewer.layers:
            constant = maps[0].metadata.get("constant_pxap") if maps else None
            specs.append(self._spec(None, ov.image_title(self.image.name, constant), shown))
        for map_layer in maps:
            specs.append(self._spec(map_layer, self.pane_title(map_layer), map_layer))
        return specs

    def _spec(self, map_layer: Any, title: str, contour_of: Any) -> dict[str, Any]:
        ref = map_layer if map_layer is not None else contour_of
        shape, step, scale, translate = self._grid_of(ref)
        family = self.family(ref) if ref is not None else "baseline"
        contour = None
        if contour_of is not None and self.family(contour_of) != "difference":
            contour = contour_of.data
        return {
            "title": title, "key": map_layer.name if map_layer is not None else self.image.name,
            "values": map_layer.data if map_layer is not None else None, "contour": contour,
            "style": ov.STYLES[family] if map_layer is not None else None,
            "opacity": float(map_layer.opacity) if map_layer is not None else 0.0,
            "outline": ov.STYLES[family].outline, "shape": shape, "step": step,
            "scale": scale, "translate": translate, "mask": self._mask_on(shape, step),
        }  # fmt: skip

    def _pane_job(self, build: int) -> Callable[[], tuple[int, list]]:
        """The worker's job: every pane composed (no layer access)."""
        specs = self._pane_specs()
        image = self.image
        tissue, multiscale, rgb = image.data, image.multiscale, image.rgb
        threshold = self.threshold

        def job() -> tuple[int, list]:
            out = []
            for spec in specs:
                step = spec["step"]
                region = _tissue_on(tissue, multiscale, rgb, spec["shape"], step)
                contour = spec["contour"]
                contour = None if contour is None else np.asarray(contour)[::step, ::step]
                edges = ov.outline(contour, threshold, spec["mask"], overview=True)
                values = spec["values"]
                values = None if values is None else np.asarray(values)[::step, ::step]
                pane = ov.compose(region, values, spec["style"], spec["opacity"], edges,
                                  spec["outline"])  # fmt: skip
                color = spec["outline"] if spec["style"] is not None else ov.MASK_COLOR
                pane, band = ov.header(pane, spec["title"], color, spec["style"])
                translate = np.asarray(spec["translate"], float).copy()
                translate[0] -= band * spec["scale"][0]  # the band sits above the tissue
                out.append(({**spec, "translate": translate}, pane))
            return build, out

        return job

    def _failed(self, exc: BaseException) -> None:
        self._building = False
        common.notify("error", f"PixelCAM: cannot show the maps side by side: {exc}")

    def _add_panes(self, result: tuple[int, list]) -> None:
        """Add (or update, kept from an earlier grid) the panes one per event-loop turn,
        then switch the grid on."""
        build, panes = result
        if build != self._build:
            return
        kept = {ly.metadata[common.BACKDROP_KEY]: ly for ly in self.panes()}
        steps = []
        for spec, pane in panes:
            layer = kept.pop(spec["key"], None)
            if layer is None:
                steps.append(lambda s=spec, p=pane: self._add_pane(s, p, build))
            else:
                steps.append(lambda ly=layer, s=spec, p=pane: _update_pane(ly, s, p))
        stale = list(kept.values())  # panes of maps or images gone since
        steps += [lambda: self._show_grid(build, stale)]
        common.in_turns(steps)

    def _add_pane(self, spec: dict[str, Any], pane: np.ndarray, build: int) -> None:
        if build != self._build or self.image is None:
            return
        self.viewer.add_image(
            pane, name=spec["title"], rgb=True, scale=spec["scale"],
            translate=spec["translate"], visible=False,
            metadata={common.BACKDROP_KEY: spec["key"], "pixelcam_pane": True},
        )  # fmt: skip

    def _show_grid(self, build: int, stale: list[Any]) -> None:
        """Switch to the grid one layer change per event-loop turn (napari rebuilds its
        scene graph after each: a second for all of them in one go)."""
        if build != self._build:
            return
        layers = self.viewer.layers
        if stale:
            with layers.batched_update():  # one scene update (and collection) for all
                for layer in stale:
                    layers.remove(layer)
        by_key = {ly.metadata[common.BACKDROP_KEY]: ly for ly in self.panes()}
        panes = [by_key[k] for k in self._keys() if k in by_key]
        if not panes:
            self._building = False
            return
        self._order = [ly for ly in layers if ly not in panes]
        self._hidden = [(ly, ly.visible) for ly in self._order]
        _reorder(layers, panes + self._order)
        steps: list[Callable[[], Any]] = [
            lambda ly=ly: self._set_visible(ly, False) for ly in self._order if ly.visible
        ]
        # the first pane is shown before the grid goes on: with no layer visible napari's
        # grid collapses to 1x1 and rebuilds every pane's view (and cameras) once the
        # next layer is shown; this way a grid of the same shape as before is reused
        steps.append(lambda: self._set_visible(panes[0], True))
        steps.append(lambda: self._enable_grid(len(panes)))
        steps += [lambda ly=ly: self._set_visible(ly, True) for ly in panes[1:]]
        steps.append(lambda: self._grid_shown(build))
        common.in_turns(steps)

    def _set_visible(self, layer: Any, visible: bool) -> None:
        """One layer shown or hidden (a layer the user removed meanwhile is skipped)."""
        if layer.visible != visible and layer in self.viewer.layers:
            layer.visible = visible

    def _enable_grid(self, n: int) -> None:
        """napari's grid on, shaped for ``n`` panes and the difference's pane if it may
        still come (a new shape rebuilds every pane's view and cameras: the same shape is
        reused)."""
        grid = self.viewer.grid
        grid.stride = 1
        canvas = tuple(getattr(self.viewer.canvas, "size", (900, 1100)))
        shape = ov.best_grid(n + self._room_for_difference(), canvas, _hw(self.image))
        if tuple(grid.shape) != shape:
            grid.shape = shape
        if grid.spacing != 6:
            grid.spacing = 6
        grid.enabled = True
        self.grid_on = True

    def _room_for_difference(self) -> int:
        """1 when a difference pane may still be added to the grid (PixelCAM and a
        baseline map, no difference yet), else 0."""
        families = [self.family(ly) for ly in self.maps()]
        return int("difference" not in families and "pixelcam" in families
                   and "baseline" in families)  # fmt: skip

    def _grid_shown(self, build: int) -> None:
        if build == self._build:
            self._building = False
            self.viewer.reset_view()
            self._changed()

    def _keys(self) -> list[str]:
        """The pane keys of the current image, in pane order."""
        with_mask = self.mask is not None and self.mask in self.viewer.layers
        return ([self.image.name] if with_mask else []) + [ly.name for ly in self.maps()]

    def _update_panes(self, result: tuple[int, list]) -> None:
        build, panes = result
        if build != self._build or not self.grid_on:
            return
        by_key = {ly.metadata[common.BACKDROP_KEY]: ly for ly in self.panes()}
        steps = []
        for spec, pane in panes:
            layer = by_key.get(spec["key"])
            if layer is not None:
                steps.append(lambda ly=layer, p=pane: setattr(ly, "data", p))
        common.in_turns([*steps, lambda: setattr(self, "_building", False)])

    def pane_title(self, map_layer: Any) -> str:
        meta = map_layer.metadata
        return ov.title(meta[common.MAP_KEY], meta.get("pxap"))

    def titles(self) -> dict[str, str]:
        """Map layer (or image) name -> the title shown in its pane (grid on; for checks)."""
        return {ly.metadata[common.BACKDROP_KEY]: ly.name for ly in self.panes()}

    def _off_steps(self, reset: bool) -> list[Callable[[], Any]]:
        """Back to one map over the image, one layer change per turn: the panes hidden
        and the grid off together (the panes are not removed: napari collects garbage on
        every removal, a long freeze; the next grid updates them), the other layers shown
        again in their places, then one map."""
        steps: list[Callable[[], Any]] = [self._disable_grid]
        maps = self.maps()
        mine = {id(common.unwrap(ly)) for ly in maps}
        for ly, visible in self._hidden:
            if visible and id(common.unwrap(ly)) not in mine:  # show() picks the map
                steps.append(lambda ly=ly: self._set_visible(ly, True))
        steps.append(lambda: self._one_map(reset))
        # the other maps' colour bars back, one a turn (see _disable_grid)
        steps += [lambda ly=ly: self._colorbar_back(ly) for ly in maps]
        return steps

    def _colorbar_back(self, layer: Any) -> None:
        if layer in self.viewer.layers:
            colorbar_on(layer)

    def _disable_grid(self) -> None:
        """The panes hidden and the grid off in one scene update (napari's batch: one
        pane hidden at a time in the grid re-lays the grid out after each), the layer
        order from before the grid back."""
        layers = self.viewer.layers
        panes = self.panes()
        with layers.batched_update():
            for pane in panes:
                if pane.visible:
                    pane.visible = False
            # napari dropped the hidden maps' colour bars in the grid and would make them
            # all again now (tens of ms each): they come back one per turn instead
            for layer in self.maps():
                layer.colorbar.visible = False
            self.viewer.grid.enabled = False
        self.grid_on = False
        order = [ly for ly in self._order if ly in layers]
        order += [ly for ly in layers if ly not in order and ly not in panes]
        _reorder(layers, panes + order)  # the hidden panes at the bottom of the list

    def _one_map(self, reset: bool) -> None:
        self._hidden, self._order = [], []
        if self.image is not None and self.image in self.viewer.layers:
            self.image.visible = True
        self.show()
        if reset:
            self.viewer.reset_view()

    # ------------------------------------------------------------------ difference
    def difference(self, baselines: tuple[str, ...]) -> str | None:
        """PixelCAM minus the first baseline map computed, as a map layer (added, then
        shown, in the next event-loop turns); returns its name, None when either map is
        missing."""
        by_method = {ly.metadata[common.MAP_KEY]: ly for ly in self.maps()}
        base = next((by_method[m] for m in baselines if m in by_method), None)
        pix = by_method.get("pixelcam")
        if pix is None or base is None or pix.data.shape != base.data.shape:
            return None
        diff = np.asarray(pix.data, np.float32) - np.asarray(base.data, np.float32)
        source = pix.metadata["source"]
        name = f"pixelcam - {base.metadata[common.MAP_KEY]} [{source}]"
        meta = {common.MAP_KEY: "difference", "source": source,
                "minus": base.metadata[common.MAP_KEY]}  # fmt: skip
        if name in self.viewer.layers:
            self.viewer.layers[name].data = diff
            steps = []
        else:
            steps = [lambda: self.viewer.add_image(
                diff, name=name, scale=pix.scale, translate=pix.translate, visible=False,
                metadata=meta, **ov.layer_kwargs("difference"),
            ), lambda: colorbar_on(self.viewer.layers[name])]  # fmt: skip
        if self.grid_on:
            steps.append(lambda: self.set_grid(True))
        else:
            steps.append(lambda: self.show("difference"))
        self._turns(steps)
        return name

    def _turns(self, steps: list[Callable[[], Any]]) -> None:
        """Steps one per event-loop turn, :attr:`busy` until the last is done."""
        self._pending += 1

        def done() -> None:
            self._pending -= 1
            self._changed()

        common.in_turns([*steps, done])


def outline_mask(layer: Any) -> None:
    if not layer.metadata.get("pixelcam_outlined"):
        ov.show_mask_as_outline(layer)
        layer.metadata["pixelcam_outlined"] = True


def _update_pane(layer: Any, spec: dict[str, Any], pane: np.ndarray) -> None:
    """A kept pane, shown again with new content and title."""
    if layer.data.shape != pane.shape or not np.allclose(layer.translate[-2:], spec["translate"]):
        layer.scale, layer.translate = spec["scale"], spec["translate"]
    layer.data = pane
    if layer.name != spec["title"]:
        layer.name = spec["title"]


def _tissue_on(
    data: Any, multiscale: bool, rgb: bool, shape: tuple[int, int], step: int
) -> np.ndarray:
    """The image as ``uint8 RGB`` sampled (nearest) on a pane's grid: ``shape`` (the map's,
    which may lie on a coarser level of a large image) strided by ``step``."""
    level = common.level_of(data, True)[0] if multiscale else data
    hw = level.shape[:2] if rgb else level.shape[-2:]
    rows = np.arange(0, shape[0], step) * hw[0] // shape[0]
    cols = np.arange(0, shape[1], step) * hw[1] // shape[1]
    region = np.asarray(level[rows][:, cols])  # rows, then columns (dask takes one at a time)
    if rgb and region.dtype == np.uint8:
        return region[..., :3]
    io = common.data_module("pixelcam.data.io")
    return io.to_rgb_uint8(region)[..., :3]


def colorbar_on(layer: Any) -> None:
    """A map's colour bar (napari's layer colour bar overlay) on. It stays on: napari draws
    only the bars of visible layers, and making a bar costs 100-250 ms (its text visuals),
    so the panel makes each in its own event-loop turn once a map is added."""
    bar = layer.colorbar
    if not bar.visible:
        bar.size = (14, 130)
        bar.font_size = 9
        bar.visible = True


def _reorder(layers: Any, order: list[Any]) -> None:
    """Put the layer list in ``order`` (every layer once), one reorder event at the end,
    none when it already is (napari re-lays its scene out on each)."""
    moved = False
    with layers.events.reordered.blocker():
        for i, layer in enumerate(order):
            src = layers.index(layer)
            if src != i:
                layers.move(src, i)
                moved = True
    if moved:
        layers.events.reordered(value=layers)


def _hw(layer: Any) -> tuple[int, int]:
    data = layer.data[0] if layer.multiscale else layer.data
    shape = data.shape
    return (int(shape[0]), int(shape[1])) if layer.rgb else (int(shape[-2]), int(shape[-1]))
