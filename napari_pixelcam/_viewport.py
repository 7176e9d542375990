"""Live maps of the visible region of a large image, refined as the user pans and zooms.

With "visible region only (live)" checked (the default for a multiscale image or one with a
side above :data:`LIVE_SIDE` pixels), every camera or canvas change restarts a
:data:`DEBOUNCE_MS` timer; when it fires, :class:`LiveMaps`:

1. finds the view: the canvas corners in world coordinates -> the image's data coordinates
   (``layer.world_to_data``) -> the level napari draws for that view (napari's own
   ``compute_multiscale_level``, so the maps come at the resolution on screen) -> the
   visible box in that level's pixels. An image without a pyramid gets one by striding
   (:func:`pixelcam.slide.region.virtual_levels`), so zooming out never computes more
   tiles than the screen holds.
2. keeps the tiles of that level's fixed grid (:func:`pixelcam.slide.region.region_keys`)
   already computed (a :class:`~pixelcam.slide.region.TileCache` keyed by
   ``(level, row, col)``, cleared when the image, models, maps or device change), pastes
   them into a :class:`~pixelcam.slide.region.RegionCanvas`, and
3. quits the running worker if its view is stale (``worker.quit()``: the tile generator
   stops after the tile in progress) and, once it has stopped, starts one that computes
   only the missing tiles, nearest to the view's centre first; each finished tile is
   cached, blended into the canvas and shown (``layer.refresh()``, at most every
   :data:`REDRAW_MS`).

**Layers.** One layer per map, ``"<map> live [<image>]"``, holds the canvas: the blended
maps of the visible tiles of the current level, placed with ``scale = image scale x level
downsample`` and ``translate = image translate + that scale x box origin`` (napari's own
placement of a pyramid level), so it lies exactly over the image at any zoom. When the
view moves the layer gets a new canvas (cached tiles pasted at once). One level-sized layer
per map would cost the level's memory (gigabytes at a slide's full resolution) and one
layer per level would leave coarse maps showing under the fine ones; the canvas costs about
the screen's size. Rotated, sheared or affine-transformed image layers are refused with a
notification (the box is axis-aligned).

**Tile side.** "live tile (px)" (default 512, overlap 1/8 of it) is the side of the tiles in
pixels of the level on screen; each tile is resized to its model's input size (the
checkpoint's ``eval_size``), so the side sets the scale the model sees: glands should look
as large as in the training images (about 160 px for the bundled sample models).

**Microns.** When the image says its pixel size (``metadata["mpp"]``, set by the reader) and
the PixelCAM checkpoint records its training pixel size (``pixelcam train --mpp``), the tile
side is in pixels at the model's scale: tiles are read from the level
:func:`pixelcam.slide.mpp.choose_level` picks (the coarsest not coarser than the model),
``tile / factor`` level pixels a side, whenever the view is at or finer than that level
(:func:`napari_pixelcam._microns.live_plan`). Zoomed out past it, or with a pixel size
unknown, tiles are read at the level on screen as before; the checkbox's text says which.

**Models.** The maps, checkpoints and device are the viewer's session's
(:mod:`napari_pixelcam._session`): each map comes from the checkpoint the session's rule
(:func:`~napari_pixelcam._session.map_sources`) names, the one the panel uses too, loaded
through the session's model cache. Class-specific maps (CAM, GradCAM++, LayerCAM...)
explain each tile's own prediction (as ``pixelcam predict`` does on slides); PixelCAM's map
is a probability, comparable across tiles. Errors become napari notifications.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, SpinBox

from napari_pixelcam import _common as common
from napari_pixelcam import _microns as microns
from napari_pixelcam._session import Selection, checkpoint_identity

if TYPE_CHECKING:
    import napari

    from napari_pixelcam._session import Session

#: Live mode is on by default for a multiscale image or one with a side above this.
LIVE_SIDE = 4096
#: Camera changes closer together than this (milliseconds) make one update.
DEBOUNCE_MS = 250
#: The map layers are redrawn at most this often (milliseconds) while tiles arrive: each
#: redraw uploads the canvas to the GPU, and on a software renderer that costs more than a
#: tile of a small model.
REDRAW_MS = 200
LIVE_TEXT = "visible region only (live)"
#: the session's choices that change the maps (a change recomputes the view)
MODEL_CHOICES = ("pixelcam", "baseline", "references", "device", "maps")


def _levels(layer: Any) -> tuple[list[Any], np.ndarray]:
    """The image's levels and their downsample factors ``[n, 2]`` (level-0 pixels per
    pixel), a pyramid by striding for a single-scale image."""
    from pixelcam.slide.region import virtual_levels

    if layer.multiscale:
        levels = list(layer.data)
        factors = np.asarray(layer.downsample_factors, float)[:, :2]
        return levels, factors
    levels = virtual_levels(layer.data)
    return levels, np.array([[2.0**i, 2.0**i] for i in range(len(levels))])


def is_large(layer: Any) -> bool:
    """Multiscale, or a 2-D image with a side above :data:`LIVE_SIDE`."""
    if layer is None:
        return False
    if layer.multiscale:
        return True
    return layer.ndim == 2 and max(layer.data.shape[:2]) > LIVE_SIDE


class LiveMaps:
    """Live mode over a viewer's session (module docstring): a checkbox and a tile-side box
    (:attr:`widgets`, placed by the dock that owns this), a debounce timer, a tile cache and
    at most one worker. It reads the session's image, maps, checkpoints and device, and
    recomputes when they change. ``runs`` records each worker: ``level``, ``box``,
    ``region`` (tiles in the view), ``todo`` (not cached), ``computed`` (tiles it
    delivered), ``quit`` and ``first_tile_s`` (seconds from the start to its first tile)."""

    min_tissue = 0.05
    cache_bytes = 512 * 2**20

    def __init__(self, viewer: napari.viewer.Viewer, session: Session) -> None:
        from pixelcam.slide.region import TileCache

        self.viewer = viewer
        self.session = session
        self.checkbox = CheckBox(text=LIVE_TEXT, value=False)
        self.checkbox.native.setToolTip(
            "compute the maps of the visible tiles only, at the resolution on screen, and "
            "refine them as you pan and zoom (for large and multiscale images)"
        )
        self.tile_box = SpinBox(label="live tile (px)", value=512, min=64, max=4096, step=16)
        self.tile_box.native.setToolTip(
            "side of the live mode's tiles, in pixels of the level on screen (overlap: 1/8 of "
            "it); each tile is resized to the model's input size, so this sets the scale the "
            "model sees: pick it so that glands look as large as in the training images "
            "(about 160 for the bundled sample models)"
        )
        self.cache = TileCache(self.cache_bytes)
        self.runs: list[dict[str, Any]] = []
        self._signature: tuple | None = None
        self._canvas: Any = None
        self._view: tuple | None = None  # (level, canvas box) shown now
        self._keys: set[tuple[int, int]] = set()  # tiles of the visible box
        self._worker: Any = None
        self._working_on: tuple | None = None  # (signature, level, box) of the worker
        self._again = False  # a view changed while the worker was stopping
        self._dirty = False  # tiles blended in since the layers were last redrawn
        self._timer = _single_shot(DEBOUNCE_MS, self.update_view)
        self._repaint = _single_shot(REDRAW_MS, self._redraw)
        self._closed = False
        self._scale_note = ""  # the scale the tiles are read at (live_plan's note)
        self._connect()
        self._on_image(session.image)

    @property
    def widgets(self) -> tuple[CheckBox, SpinBox]:
        """The live mode's controls, for the owning dock to place."""
        return self.checkbox, self.tile_box

    def _connect(self) -> None:
        camera = self.viewer.scene.camera
        camera.events.center.connect(self.schedule)
        camera.events.zoom.connect(self.schedule)
        self.viewer.canvas.events.size.connect(self.schedule)
        self.viewer.dims.events.current_step.connect(self.schedule)
        self.session.events.connect(self._on_session)  # held weakly by the session
        self.tile_box.changed.connect(self.schedule)
        self.checkbox.changed.connect(self._on_toggle)
        self.checkbox.native.destroyed.connect(lambda *_: self.close())

    def _on_session(self, info: Any) -> None:
        name = info.signal.name
        if name == "image":
            self._on_image(info.args[0])
        elif name in MODEL_CHOICES:
            self.schedule()

    def close(self) -> None:
        """Stop listening and quit the worker (the owning dock is going away)."""
        if self._closed:
            return
        self._closed = True
        self._again = False
        self.session.events.disconnect(self._on_session)
        camera = self.viewer.scene.camera
        for emitter in (camera.events.center, camera.events.zoom, self.viewer.canvas.events.size,
                        self.viewer.dims.events.current_step):  # fmt: skip
            emitter.disconnect(self.schedule)
        try:  # at exit, Qt may have deleted these already
            self._timer.stop()
            self._repaint.stop()
            if self._worker is not None:
                self._worker.quit()
        except RuntimeError:
            pass

    @property
    def tile(self) -> int:
        return int(self.tile_box.value)

    @property
    def overlap(self) -> int:
        return self.tile // 8

    # ------------------------------------------------------------------ triggers
    def schedule(self, _event: Any = None) -> None:
        """(Re)start the debounce timer: the view is updated once the camera rests."""
        if self._live():
            self._timer.start()

    def _live(self) -> bool:
        """Whether the live mode is on (False once its widgets are gone)."""
        if self._closed:
            return False
        try:
            return bool(self.checkbox.value)
        except RuntimeError:  # the Qt checkbox was deleted with its dock
            self.close()
            return False

    def _on_image(self, layer: Any = None) -> None:
        self.checkbox.value = is_large(layer)
        self.schedule()

    def _on_toggle(self, on: bool) -> None:
        if on:
            self.schedule()
            return
        self._timer.stop()
        self._again = False
        if self._worker is not None:
            self._quit()
        self.checkbox.text = LIVE_TEXT

    # ------------------------------------------------------------------ the view
    def visible_view(self, layer: Any) -> tuple[int, tuple[int, int, int, int]] | None:
        """``(level, (y0, y1, x0, x1))``: the level napari draws now and the visible box in
        its pixels (None when the image is out of view)."""
        from napari.layers.utils.layer_utils import compute_multiscale_level

        levels, factors = _levels(layer)
        camera = self.viewer.scene.camera
        size = np.asarray(self.viewer.canvas.viewbox_size(self.viewer.layers), float)
        center = np.asarray(camera.center, float)[-2:]
        half = size / 2.0 / float(camera.zoom)
        displayed = list(self.viewer.dims.displayed)[-2:]
        point = np.asarray(self.viewer.dims.point, float)
        corners = []
        for dy in (-1, 1):
            for dx in (-1, 1):
                world = point.copy()
                world[displayed] = center + half * (dy, dx)
                corners.append(np.asarray(layer.world_to_data(world), float)[-2:])
        lo, hi = np.floor(np.min(corners, 0)), np.ceil(np.max(corners, 0))
        locked = getattr(layer, "locked_data_level", None) if layer.multiscale else None
        if locked is not None:
            level = int(locked)
        else:
            level = compute_multiscale_level(hi - lo, size, factors)
        f = factors[level]
        shape = np.asarray(levels[level].shape[:2])
        y0, x0 = np.maximum(np.floor(lo / f), 0).astype(int)
        y1, x1 = np.minimum(np.ceil(hi / f) + 1, shape).astype(int)
        if y1 <= y0 or x1 <= x0:
            return None
        return level, (int(y0), int(y1), int(x0), int(x1))

    def _signature_of(self, layer: Any, selection: Selection) -> tuple:
        """What the cached tiles depend on: the image, the choices, the checkpoint files
        (a retrained model in place recomputes) and the tile grid."""
        paths = (selection.pixelcam, selection.baseline, *selection.references)
        stamps = tuple(checkpoint_identity(p) for p in paths if p)
        return (id(layer), id(layer.data), selection, stamps, self.tile, self.overlap)

    def update_view(self) -> None:
        """Show the maps of the current view: cached tiles now, the missing ones from a
        worker (after the stale one, if any, has stopped)."""
        if not self._live():
            return
        layer = self.session.image
        if layer is None:
            return
        try:
            self._update(layer)
        except Exception as exc:  # a Qt callback: never let it crash the viewer
            common.notify("error", f"PixelCAM live maps: {exc}")

    def _update(self, layer: Any) -> None:
        from pixelcam.slide.region import region_keys
        from pixelcam.slide.tiling import TileGrid

        _check_layer(layer, self.viewer.dims.ndisplay)
        selection = self.session.selection()
        signature = self._signature_of(layer, selection)
        if signature != self._signature:
            self.cache.clear()
            self._signature, self._canvas, self._view = signature, None, None
        view = self.visible_view(layer)
        if view is None:
            return
        levels, factors = _levels(layer)
        level, box, tile, overlap = self._at_model_scale(layer, levels, factors, view, selection)
        grid = TileGrid.from_shape(levels[level].shape, tile, overlap)
        keys = region_keys(grid, box)
        self._keys = set(keys)
        self._show_canvas(layer, grid, level, keys, factors[level], selection.maps)
        todo = [k for k in keys if (level, *k) not in self.cache]
        self._show_count(len(keys) - len(todo), len(keys))
        if self._worker is not None:
            if self._working_on == (signature, level, box):
                return  # this very view is being computed
            self._quit()
            self._again = True  # started again when the stale worker has stopped
            return
        if todo:
            self._start(levels[level], level, box, selection, signature, len(keys), len(todo),
                        sides=(tile, overlap))  # fmt: skip

    def _at_model_scale(self, layer, levels, factors, view, selection) -> tuple:
        """``(level, box, tile, overlap)`` to compute: the view's, or the model's level and
        tile side in its pixels (:func:`napari_pixelcam._microns.live_plan`)."""
        level, box = view
        mpp = microns.layer_mpp(layer)
        level_mpps = [] if mpp is None else [float(np.mean(mpp) * np.mean(f)) for f in factors]
        model = microns.checkpoint_mpp(selection.classifier)
        chosen, side, self._scale_note = microns.live_plan(level_mpps, level, model, self.tile)
        if chosen != level:  # the box in the chosen level's pixels
            ratio = np.asarray(factors[level], float) / np.asarray(factors[chosen], float)
            shape = levels[chosen].shape
            y0, y1, x0, x1 = box
            y0, x0 = int(np.floor(y0 * ratio[0])), int(np.floor(x0 * ratio[1]))
            y1 = min(int(np.ceil(y1 * ratio[0])), shape[0])
            box = (y0, y1, x0, min(int(np.ceil(x1 * ratio[1])), shape[1]))
        return chosen, box, side, side // 8

    def _show_canvas(self, layer, grid, level, keys, factor, maps) -> None:
        """A new canvas when the view moved to other tiles: cached tiles pasted at once."""
        from pixelcam.slide.region import RegionCanvas, region_keys

        boxes = np.array([grid.box(r, c) for r, c in keys])
        canvas_box = (int(boxes[:, 0].min()), int(boxes[:, 1].max()),
                      int(boxes[:, 2].min()), int(boxes[:, 3].max()))  # fmt: skip
        if (level, canvas_box) == self._view:
            return
        canvas = RegionCanvas(grid, canvas_box, list(maps))
        for r, c in region_keys(grid, canvas_box):  # with neighbours over its margin
            cached = self.cache.get((level, r, c))
            if cached is not None:
                canvas.add(cached)
        self._canvas, self._view = canvas, (level, canvas_box)
        with common.paint_apart():
            self._place_layers(layer, factor, canvas)

    def _place_layers(self, layer: Any, factor: np.ndarray, canvas: Any) -> None:
        scale = np.asarray(layer.scale[-2:], float) * factor
        origin = np.array([canvas.box[0], canvas.box[2]], float)
        translate = np.asarray(layer.translate[-2:], float) + scale * origin
        names = canvas.names
        shown = "pixelcam" if "pixelcam" in names else names[-1]
        for method in names:
            name = f"{method} live [{layer.name}]"
            meta = {"pixelcam_method": method, "source": layer.name, "pixelcam_live": True,
                    "level": self._view[0], "box": canvas.box}  # fmt: skip
            if name in self.viewer.layers:
                target = self.viewer.layers[name]
                target.metadata = meta
                target.scale = scale
                target.translate = translate
                target.data = canvas.maps[method]
                continue
            self.viewer.add_image(
                canvas.maps[method], name=name,
                colormap=common.COLORMAPS.get(method, common.DEFAULT_COLORMAP),
                blending="additive", opacity=0.5, contrast_limits=(0.0, 1.0), scale=scale,
                translate=translate, metadata=meta, visible=method == shown,
            )  # fmt: skip

    def _show_count(self, done: int, total: int) -> None:
        unknown = " (pixel size unknown)" if "unknown" in self._scale_note else ""
        self.checkbox.text = f"{LIVE_TEXT}: {done}/{total} tiles{unknown}"
        self.checkbox.native.setToolTip(self._scale_note or LIVE_TEXT)

    # ------------------------------------------------------------------ the worker
    def _start(self, level_data, level, box, selection, signature, n_region, n_todo,
               sides) -> None:  # fmt: skip
        from napari.qt.threading import create_worker

        self.session.catalogue_now()  # torch imported (by the catalogue's worker) first
        skip = frozenset((r, c) for lv, r, c in self.cache if lv == level)
        run = {"level": level, "box": box, "region": n_region, "todo": n_todo, "computed": 0,
               "quit": False, "started": time.perf_counter(), "first_tile_s": None,
               "tile": sides[0], "scale": self._scale_note}  # fmt: skip
        self.runs.append(run)
        job = self._job(level_data, level, box, selection, signature, skip, len(self.runs) - 1,
                        sides)  # fmt: skip
        worker = create_worker(lambda: (yield from job), _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_tile)
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda w=worker: self._on_finished(w))
        self._worker = worker
        self._working_on = (signature, level, box)
        worker.start()

    def _job(self, level_data, level, box, selection, signature, skip, index, sides):
        """Worker-thread part: models, then the missing tiles of the view, one at a time."""
        from pixelcam.models import checkpoint_eval_size
        from pixelcam.slide.region import iter_region_tiles

        tile, overlap = sides  # read on the main thread: no widget access here
        found = self.session.models_for(selection)  # the session's rule and cache
        models = {m: model for m, (model, _) in found.items()}
        inputs = {m: checkpoint_eval_size(meta) for m, (_, meta) in found.items()}
        tiles = iter_region_tiles(
            models, level_data, box, list(selection.maps), tile=tile, overlap=overlap,
            model_input=inputs, min_tissue=self.min_tissue if _is_rgb(level_data) else 0.0,
            skip=skip,
        )  # fmt: skip
        for tile in tiles:
            yield signature, level, index, tile

    def _on_tile(self, message) -> None:
        signature, level, index, tile = message
        if self._closed or signature != self._signature:
            return  # a tile of models or an image that have changed since
        run = self.runs[index]
        run["computed"] += 1
        if run["first_tile_s"] is None:
            run["first_tile_s"] = time.perf_counter() - run["started"]
        self.cache.put((level, *tile.key), tile)
        canvas = self._canvas
        if canvas is None or self._view[0] != level:
            return
        done = sum(1 for k in self._keys if (level, *k) in self.cache)
        self._show_count(done, len(self._keys))
        if canvas.add(tile) is None:
            return  # background, or outside the view shown now
        self._dirty = True
        if not self._repaint.isActive():  # at once, then at most every REDRAW_MS
            self._redraw()

    def _redraw(self) -> None:
        """Show the tiles blended in since the last redraw (one texture upload per map)."""
        if not self._dirty or self._closed or self._canvas is None:
            return
        self._dirty = False
        layer = self.session.image
        for method in self._canvas.names:
            name = f"{method} live [{layer.name}]" if layer is not None else None
            if name in self.viewer.layers:
                self.viewer.layers[name].refresh(thumbnail=False, extent=False)
        self._repaint.start()

    def _on_error(self, exc: BaseException) -> None:
        self._again = False
        common.notify("error", f"PixelCAM live maps: {exc}")

    def _quit(self) -> None:
        self.runs[-1]["quit"] = True
        self._worker.quit()

    def _on_finished(self, worker: Any) -> None:
        if worker is not self._worker:
            return
        self._worker = None
        self._redraw()
        if self._again and not self._closed:
            self._again = False
            self.update_view()

    @property
    def busy(self) -> bool:
        """Whether a worker is running (or a view update is due)."""
        return self._worker is not None or self._timer.isActive() or self._again


def _is_rgb(data: Any) -> bool:
    return len(data.shape) == 3 and data.shape[-1] in (3, 4)


def _check_layer(layer: Any, ndisplay: int) -> None:
    """The live mode needs a 2-D image, shown in 2-D, only scaled and translated."""
    if layer.ndim != 2 or ndisplay != 2:
        raise ValueError(
            f"the live mode needs a 2-D image shown in 2-D; {layer.name!r} has "
            f"{layer.ndim} dimensions"
        )
    if not (
        np.allclose(np.asarray(layer.rotate), np.eye(2))
        and np.allclose(np.asarray(layer.shear), 0.0)
        and np.allclose(layer.affine.affine_matrix, np.eye(3))
    ):
        raise ValueError(
            f"the live mode needs an image that is only scaled and translated; "
            f"{layer.name!r} is rotated, sheared or has an affine transform"
        )


def _single_shot(interval_ms: int, slot: Any) -> Any:
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.setSingleShot(True)
    timer.setInterval(interval_ms)
    timer.timeout.connect(slot)
    return timer
