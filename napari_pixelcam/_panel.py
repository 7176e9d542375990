"""The PixelCAM dock panel: maps as layers, comparison, pseudo-label points, annotations.

A view over the viewer's session (:mod:`napari_pixelcam._session`): its checkpoint, device,
map and image fields read and write the session, which the live mode
(:mod:`napari_pixelcam._viewport`, owned by this panel) and the other docks share; the
session's rule says which checkpoint gives which map. Thin on purpose: every computation
is a :mod:`pixelcam` call (``predict_maps``, ``sample_points``, ``per_image_pxap``,
``save_annotations``); how maps are drawn is :mod:`napari_pixelcam._compare` (one map over
the tissue, the titled grid, the difference, threshold outlines); point editing is
:mod:`napari_pixelcam._points`; what a checkpoint is (its provenance, whether an image looks
like the demo models' generated tiles) is :mod:`napari_pixelcam._provenance`.

Nothing heavy runs on the GUI thread: torch, timm, scikit-learn and matplotlib are imported
by the session's workers when the dock opens (a "Compute maps" pressed before that waits
for them without blocking), model work, PxAP and the demo-image check run in a
``thread_worker``, and a single-scale image larger than
:data:`~napari_pixelcam._common.MAX_SIDE` is computed on a strided copy of at most that
side (the model sees its input size anyway; the live mode refines the view). A failure
becomes a napari notification.
"""

from __future__ import annotations

import contextlib
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    ProgressBar,
    PushButton,
    RadioButtons,
    Select,
    SpinBox,
)

from napari_pixelcam import _common as common
from napari_pixelcam import _microns as microns
from napari_pixelcam import _overlays as ov
from napari_pixelcam import _provenance as prov
from napari_pixelcam import _regions
from napari_pixelcam._compare import OUTLINE_KEY, MapView, colorbar_on
from napari_pixelcam._points import BG, FG, PointEditor, is_label_layer
from napari_pixelcam._reader import prefer_reader
from napari_pixelcam._session import Selection, devices, session_for
from napari_pixelcam._viewport import LiveMaps

if TYPE_CHECKING:
    import napari

CHECKPOINT_FILTER = "*.json *.safetensors"
#: the seed sampler shown before the catalogue is read (the library's default)
DEFAULT_SAMPLER = "probability"
#: keys of the viewer that step through the maps of the image
NEXT_MAP_KEY, PREVIOUS_MAP_KEY = ".", ","
POINT_LABELS = {"FG (f)": FG, "BG (b)": BG}
DEMO_NOTICE = (
    "The bundled DEMO models were trained on generated tiles, and this image does not look "
    "like them (its colours are off the generator's stain plane): their class and maps "
    "mean nothing here. Train a model on your images."
)


def _header(text: str) -> Label:
    label = Label(value=f"<b>{text}</b>")
    label.native.setStyleSheet("margin-top: 6px;")
    return label


class PixelCAMPanel(Container):
    """Dock panel over :mod:`pixelcam`: heavy imports happen on first use, not on docking."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._scroll = _scroll_area(Container.native.fget(self))
        self._scroll._magic_widget = self  # napari finds the panel from its docked widget
        self.viewer = viewer
        self.session = session_for(viewer)
        microns.watch(viewer)  # maps, outlines, panes of an image in µm are in µm too
        self.view = MapView(viewer, self.session.catalogue)
        self.view.on_change = self._set_view_image
        self.points = PointEditor(on_label=self._show_point_label)
        self._worker = None
        self._pending = False  # "Compute maps" pressed before the catalogue was read
        self._adding = False  # map layers being added, one per event-loop turn
        self._syncing = False
        self._known_maps: list[str] = []  # listed before the catalogue is read
        self.last_result: dict[str, Any] = {}
        self._build_widgets()
        self._connect()
        self._refresh()
        self._show_models()
        # "visible region only (live)": maps of the view of a large image, as it moves
        self.live = LiveMaps(viewer, self.session)
        at = self.index(self.run_button) + 1
        for i, widget in enumerate(self.live.widgets):
            self.insert(at + i, widget)
        common.load_libraries(self._scroll, self.session, prov.warm_demo_check, viewer=viewer)
        _narrow(self)
        self._bind_keys()
        self._scroll.setMinimumWidth(320)
        prefer_reader()  # File > Open of a PNG/TIFF no longer asks which reader

    @property
    def native(self) -> Any:
        """The scroll area around the panel: napari docks ``native``, so the panel scrolls
        instead of growing the window (three docks share a 1000 px screen)."""
        scroll = self.__dict__.get("_scroll")
        return scroll if scroll is not None else Container.native.fget(self)

    def reveal(self, widget: Any) -> None:
        """Scroll the panel so ``widget`` shows: with three docks open the panel is ~250 px
        tall and the result line of "Compute maps" sits below its fold."""
        from qtpy.QtCore import QTimer

        def scroll() -> None:
            with contextlib.suppress(RuntimeError):  # the dock was closed meanwhile
                self._scroll.ensureWidgetVisible(widget.native, 0, 12)

        # after the label's new text is laid out (its height may grow by a wrapped line)
        QTimer.singleShot(0, scroll)

    # ------------------------------------------------------------------ widgets
    def _build_widgets(self) -> None:
        s = self.session
        self.image_combo = ComboBox(label="image", choices=self._image_layers)
        self.mask_combo = ComboBox(label="mask", choices=self._label_layers, nullable=True)
        self.checkpoint = FileEdit(
            label="PixelCAM model", filter=CHECKPOINT_FILTER, value=s.pixelcam
        )
        self.baseline = FileEdit(label="baseline model", filter=CHECKPOINT_FILTER, value=s.baseline)
        self.references = FileEdit(
            label="NEGEV / U-Net", mode="rm", filter=CHECKPOINT_FILTER,
            value=list(s.references),
        )  # fmt: skip
        self.references.native.setToolTip(
            "optional reference models for the compare view: NEGEV (a decoder over a frozen "
            "baseline) and the fully supervised U-Net; their maps are 'negev' and 'unet'"
        )
        self.device = ComboBox(label="device", choices=devices().names, value=s.device)
        self.model_info = Label(value="")
        self.demo_notice = Label(value=DEMO_NOTICE, visible=False)
        self.train_button = PushButton(text="Train on my images", visible=False)
        self.methods = Select(label="maps", choices=self._map_choices, value=list(s.maps))
        self.methods.native.setMaximumHeight(110)
        self.run_button = PushButton(text="Compute maps")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0, visible=False)
        self.result_label = Label(label="result", value="")
        for edit, value in ((self.checkpoint, s.pixelcam), (self.baseline, s.baseline)):
            if not value:
                edit.line_edit.value = ""
        self._build_view_widgets()
        self._build_point_widgets()
        for label in (self.result_label, self.model_info, self.demo_notice):
            label.native.setWordWrap(True)  # a long line must not widen the dock
            label.native.setMinimumWidth(200)
        self.model_info.native.setStyleSheet("font-size: 10px;")
        self.demo_notice.native.setStyleSheet(
            "color: #ffcc66; border: 1px solid #ffcc66; padding: 4px;"
        )
        self.extend(
            [
                _header("Image"), self.image_combo, self.mask_combo,
                _header("Models"), self.checkpoint, self.baseline, self.references,
                self.device, self.model_info, self.demo_notice, self.train_button,
                _header("Maps"), self.methods, self.run_button, self.progress,
                self.result_label,
                _header("View"), self.shown_map, self.opacity, self.threshold, self.grid,
                self.diff_button, self.regions_button,
                _header("Points"), self.points_source, self.n_points, self.sampler,
                self.sample_button, self.new_points, self.undo_button, self.save_button,
            ]
        )  # fmt: skip

    def _build_view_widgets(self) -> None:
        self.shown_map = ComboBox(label="shown map", choices=self._shown_choices)
        self.shown_map.native.setToolTip(
            f"the map drawn over the image; keys '{NEXT_MAP_KEY}' and '{PREVIOUS_MAP_KEY}' "
            "step through the maps"
        )
        self.opacity = FloatSlider(label="map opacity", value=0.85, min=0.0, max=1.0, step=0.05)
        self.threshold = FloatSlider(
            label="outline at", value=ov.DEFAULT_THRESHOLD, min=0.05, max=0.95, step=0.05
        )
        self.threshold.native.setToolTip(
            "draw the contour of the map's foreground (map >= this value) over the tissue"
        )
        self.grid = CheckBox(text="side by side (grid, titled panes)", value=False)
        self.diff_button = PushButton(text="Difference: PixelCAM - baseline")
        self.regions_button = PushButton(text="Regions: shown map as editable shapes")

    def _build_point_widgets(self) -> None:
        self.points_source = ComboBox(label="points from", choices=self._map_layers)
        self.n_points = SpinBox(label="n per class", value=5, min=1, max=500)
        self.sampler = ComboBox(
            label="sampling", choices=self._sampler_choices, value=DEFAULT_SAMPLER
        )
        self.sample_button = PushButton(text="Sample FG/BG points")
        self.new_points = RadioButtons(
            label="new points", choices=list(POINT_LABELS), value="FG (f)",
            orientation="horizontal",
        )  # fmt: skip
        self.new_points.native.setToolTip(
            "label of the points you add with napari's add-points tool: foreground (key f "
            "on the layer) or background (key b; l flips); with points selected, the keys "
            "relabel them; Ctrl+Z on the layer undoes the last edit"
        )
        self.undo_button = PushButton(text="Undo last point edit")
        self.save_button = PushButton(text="Save annotations")

    def _connect(self) -> None:
        self.run_button.changed.connect(lambda: self.run_maps())
        self.grid.changed.connect(self._toggle_grid)
        self.diff_button.changed.connect(lambda: self.difference_map())
        self.regions_button.changed.connect(lambda: self.map_regions())
        self.sample_button.changed.connect(lambda: self.sample_points())
        self.save_button.changed.connect(lambda: self.save_annotations())
        self.undo_button.changed.connect(lambda: self.undo_point_edit())
        self.train_button.changed.connect(lambda: self.train_on_my_images())
        self.shown_map.changed.connect(self._on_shown_map)
        self.opacity.changed.connect(lambda v: self.view.set_opacity(v))
        self.threshold.changed.connect(lambda v: self.view.set_threshold(v))
        self.new_points.changed.connect(lambda v: self.points.set_label(POINT_LABELS[v]))
        self.mask_combo.changed.connect(lambda _=None: self._set_view_image())
        for name, widget in self._bound().items():
            widget.changed.connect(lambda value, name=name: self._to_session(name, value))
        self.session.events.connect(self._from_session)  # held weakly by the session
        self.session.events.catalogue.connect(self._on_catalogue)
        self.session.events.catalogue_failed.connect(self._on_catalogue_failed)
        self.viewer.layers.events.inserted.connect(self._refresh)
        common.paint_layer_changes_apart(self.viewer.layers)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._scroll.destroyed.connect(lambda *_: self.points.close())

    def _bind_keys(self) -> None:
        def step(delta: int):
            return lambda _viewer=None: self.step_map(delta)

        self.viewer.bind_key(NEXT_MAP_KEY, step(1), overwrite=True)
        self.viewer.bind_key(PREVIOUS_MAP_KEY, step(-1), overwrite=True)

    # ------------------------------------------------------------------ the session
    def _bound(self) -> dict[str, Any]:
        """Session attribute -> the widget showing it."""
        return {
            "pixelcam": self.checkpoint, "baseline": self.baseline,
            "references": self.references, "device": self.device, "maps": self.methods,
            "image": self.image_combo,
        }  # fmt: skip

    def _to_session(self, name: str, value: Any) -> None:
        if self._syncing:
            return
        try:
            setattr(self.session, name, value)
        except Exception as exc:  # a Qt callback: never let it escape
            common.notify("error", f"PixelCAM: {exc}")

    def _from_session(self, info: Any) -> None:
        name = info.signal.name
        if name not in self._bound() and name != "references":
            return
        self._show(name, info.args[0])
        if name in ("pixelcam", "baseline", "references"):
            self._show_models()

    def _show(self, name: str, value: Any) -> None:
        """Show a session attribute's new value in its widget."""
        widget = self._bound().get(name)
        if widget is None:
            return
        if name in ("pixelcam", "baseline"):
            value = value or ""
        elif name in ("references", "maps"):
            value = list(value)
        if name == "maps" and not set(value) <= set(self.methods.choices):
            self.methods.reset_choices()  # maps the list does not hold yet
        self._syncing = True
        try:
            if isinstance(widget, FileEdit) and not value:
                widget.line_edit.value = ""  # FileEdit shows "" as the working directory
            else:
                widget.value = value
        except (RuntimeError, ValueError):  # the dock is closing, or a layer left already
            pass
        finally:
            self._syncing = False

    def _show_models(self) -> None:
        """Each chosen checkpoint's provenance, from its json (cheap: no weights read)."""
        s = self.session
        roles = [("PixelCAM", s.pixelcam), ("baseline", s.baseline)]
        roles += [("reference", p) for p in s.references]
        parts = []
        for role, path in roles:
            if path:
                facts = prov.provenance(path)
                parts.append(f"<b>{role}</b>: {html.escape(facts.summary())}")
        try:
            self.model_info.value = "<br>".join(parts) or "no model chosen: choose checkpoints"
            self.model_info.native.setToolTip("facts read from each checkpoint's json")
        except RuntimeError:  # the dock is closing
            pass

    def _map_choices(self, _w: Any = None) -> list[str]:
        """Every map method; before the catalogue is read, the maps selected so far."""
        catalogue = self.session.catalogue
        if catalogue is not None:
            return list(catalogue.maps.names)
        self._known_maps = list(dict.fromkeys([*self._known_maps, *self.session.maps]))
        return self._known_maps

    def _sampler_choices(self, _w: Any = None) -> list[str]:
        catalogue = self.session.catalogue
        return list(catalogue.samplers.names) if catalogue else [DEFAULT_SAMPLER]

    def _on_catalogue(self, _catalogue: Any = None) -> None:
        """The registries are read: the full lists of maps and samplers."""
        self.view.catalogue = self.session.catalogue
        sampler = self.sampler.value
        self._syncing = True  # emptied first: magicgui appends new choices after the old
        try:
            for widget, choices in (
                (self.methods, self._map_choices),
                (self.sampler, self._sampler_choices),
            ):
                widget.choices = ()
                widget.choices = choices
            self.sampler.value = self.session.catalogue.samplers.canonical(sampler)
        except (RuntimeError, ValueError):  # the dock was closed meanwhile
            return
        finally:
            self._syncing = False
        self._show("maps", self.session.maps)
        if self._pending:
            self._pending = False
            self.run_maps()

    def _on_catalogue_failed(self, exc: BaseException) -> None:
        self._pending = False
        self._on_finished()
        common.notify("error", f"PixelCAM: cannot read the available maps: {exc}")

    # ------------------------------------------------------------------ layer lists
    def _layers_of(self, kind: str) -> list:
        import napari.layers as nl

        cls = getattr(nl, kind)
        return [layer for layer in self.viewer.layers if isinstance(layer, cls)]

    def _image_layers(self, _w=None) -> list:
        return common.source_images(self.viewer)

    def _label_layers(self, _w=None) -> list:
        return [ly for ly in self._layers_of("Labels") if OUTLINE_KEY not in ly.metadata]

    def _map_layers(self, _w=None) -> list:
        return [
            ly
            for ly in self._layers_of("Image")
            if common.MAP_KEY in ly.metadata and ly.metadata[common.MAP_KEY] != "difference"
        ]

    def _shown_choices(self, _w=None) -> list[str]:
        return self.view.methods()

    def _refresh(self, _event=None) -> None:
        if self.view.grid_on and getattr(_event, "type", "") == "inserted":
            return  # the grid's own panes
        try:
            for combo in (self.image_combo, self.mask_combo, self.points_source):
                combo.reset_choices()
        except RuntimeError:  # the dock was closed before the viewer
            return
        if self.mask_combo.value is None:
            masks = self._label_layers()
            if masks:
                self.mask_combo.value = masks[0]
        self.session.image = self.image_combo.value
        for layer in self.viewer.layers:
            if is_label_layer(layer):
                self.points.track(layer)
        self.view.outline_masks()
        self._set_view_image()

    def _set_view_image(self) -> None:
        image, mask = self.image_combo.value, self.mask_combo.value
        unwrap = common.unwrap
        if unwrap(image) is not unwrap(self.view.image) or unwrap(mask) is not unwrap(
            self.view.mask
        ):
            self.view.set_image(image, mask)
        self._syncing = True
        try:
            self.shown_map.reset_choices()
            if self.view.shown in self.shown_map.choices:
                self.shown_map.value = self.view.shown
        except RuntimeError:  # the dock was closed meanwhile
            pass
        finally:
            self._syncing = False

    # ------------------------------------------------------------------ maps
    def run_maps(self, wait: bool = False) -> None:
        """Compute the selected maps of the selected image, in a worker thread (after the
        session's worker has imported torch: until then the request waits, unblocking)."""
        layer = self.image_combo.value
        if layer is None:
            common.notify("error", "PixelCAM: open an image first (File > Open, or a sample)")
            return
        if self._worker is not None or self._pending or self._adding:
            common.notify("info", "PixelCAM: maps are being computed")
            return
        if self.session.catalogue is None:
            self._pending = True
            self._busy("loading PyTorch and the models (first use)")
            if wait:
                self.wait()
            return
        data, level_scale = self._level(layer)
        self.session.image = layer
        selection = self.session.selection()
        mask = self._mask_data()
        self._start(self._maps_job(layer, data, level_scale, selection, mask), wait)

    def _level(self, layer) -> tuple[Any, np.ndarray]:
        """The data the maps are computed on (not read yet: the worker reads it): a
        pyramid's level of at most MAX_SIDE pixels a side, a large single-scale image
        strided to that side."""
        if layer.multiscale:
            return common.level_of(layer.data, True)
        data = layer.data
        side = max(data.shape[:2]) if layer.rgb else max(data.shape[-2:])
        step = int(np.ceil(side / common.MAX_SIDE))
        if step > 1 and layer.ndim == 2:
            return data[::step, ::step], np.array([float(step), float(step)])
        return data, np.ones(2)

    def _mask_data(self) -> Any:
        mask = self.mask_combo.value
        if mask is None:
            return None
        return mask.data[0] if mask.multiscale else mask.data

    def _maps_job(self, layer, data, level_scale, selection: Selection, mask):
        """Worker-thread part: plain data in, plain data out (no widget access). Each map
        comes from the checkpoint the session's rule names; the class shown (and explained
        by the class-specific maps) is the classifier's (:attr:`Selection.classifier`)."""
        from pixelcam.inference import predict_maps
        from pixelcam.models import checkpoint_eval_size

        session = self.session
        yield ("progress", 0, 4, "loading models")
        data = np.asarray(data)
        classifier = selection.classifier
        model, meta = session.load(classifier, selection.device)
        names = meta.get("class_names")
        size = checkpoint_eval_size(meta)
        by_model: dict[str, list[str]] = {}
        for method, path in session.map_sources(selection).items():
            by_model.setdefault(path, []).append(method)
        yield ("progress", 1, 4, "computing maps")
        own = by_model.pop(classifier, [])
        result = predict_maps(model, data, own, size=size, class_names=names)
        maps = dict(result.maps)
        for path, wanted in by_model.items():
            other, other_meta = session.load(path, selection.device)
            side = checkpoint_eval_size(other_meta, default=size)
            maps.update(predict_maps(other, data, wanted, size=side, target=result.pred).maps)
        maps = {m: maps[m] for m in selection.maps}
        yield ("progress", 2, 4, "scoring")
        scores, constant = pxap_scores(maps, mask)
        facts = prov.provenance(classifier)
        mismatch = facts.synthetic and prov.demo_mismatch(data)
        yield ("progress", 3, 4, "adding layers")
        info = {"scores": scores, "constant": constant, "facts": facts, "mismatch": mismatch}
        info.update(microns.whole_image_info(layer, level_scale, meta))  # scale note, mpp
        return ("maps", layer, level_scale, maps, result, info)

    def _show_maps(self, layer, level_scale, maps, result, info) -> None:
        """The maps as layers: existing ones updated at once, new ones added one per
        event-loop turn (napari's per-layer cost adds up), then one of them shown."""
        scale = np.asarray(layer.scale[-2:]) * level_scale
        translate = np.asarray(layer.translate[-2:])
        catalogue = self.session.catalogue
        scores, constant = info["scores"], info["constant"]
        steps = []
        for method, m in maps.items():
            name = f"{method} [{layer.name}]"
            meta = {common.MAP_KEY: method, "source": layer.name, "pxap": scores.get(method),
                    "constant_pxap": constant}  # fmt: skip
            if info.get("mpp") is not None:
                meta[microns.MPP_KEY] = info["mpp"]
            if name in self.viewer.layers:
                old = self.viewer.layers[name]
                old.data, old.metadata = m, meta
                old.scale, old.translate = scale, translate
                continue
            args = (m, name, meta, scale, translate, method, catalogue)
            steps.append(lambda args=args: self._add_map_layer(args))
            steps.append(lambda name=name: self._colorbar_on(name))  # a turn of its own
        self._show_result(result, info)
        self._adding = True
        common.in_turns([*steps, self._maps_added])

    def _add_map_layer(self, args: tuple) -> None:
        self.viewer.add_layer(_map_layer(*args))

    def _colorbar_on(self, name: str) -> None:
        if name in self.viewer.layers:
            colorbar_on(self.viewer.layers[name])

    def _maps_added(self) -> None:
        """The maps are in: the outline layer next (one more layer), then one map shown,
        then its outline (each first drawn in a paint of its own: on software OpenGL the
        first paint of a 2048 px map and of its outline was 0.26 s in one)."""

        def show_map() -> None:
            self.view.show(outline=False)

        def finish() -> None:
            try:
                self.view.refresh_outline()
                self._set_view_image()
                if self.view.grid_on:
                    self.view.set_grid(True)
            finally:
                self._adding = False

        self._set_view_image()
        common.in_turns([self.view.ensure_outline, show_map, finish])

    def _show_result(self, result, info) -> None:
        facts, mismatch = info["facts"], info["mismatch"]
        text = f"{result.pred_name} ({100 * float(result.probs[result.pred]):.1f}%)"
        if facts.demo:
            text = f"demo model: {text}" + (" (not meaningful here)" if mismatch else "")
        scores, constant = info["scores"], info["constant"]
        if scores:
            ref = f"{constant:.1f}" if constant is not None else "n/a"
            text += f" | PxAP (constant map {ref}): " + ", ".join(
                f"{ov.display_name(k)} {v:.1f}" for k, v in scores.items()
            )
        if info.get("scale"):
            text += f" | {info['scale']}"
        self.result_label.value = text
        self.demo_notice.visible = self.train_button.visible = bool(mismatch)
        self.reveal(self.result_label)
        self.last_result = {
            "pred": result.pred_name, "probs": result.probs, "pxap": scores,
            "constant_pxap": constant, "demo_mismatch": bool(mismatch),
        }  # fmt: skip

    # ------------------------------------------------------------------ view
    def _on_shown_map(self, method: str | None) -> None:
        if self._syncing or not method:
            return
        with common.paint_apart():
            self.view.show(method)
        layer = self.view.layer(method)
        if layer is not None:
            self._syncing = True
            try:
                self.opacity.value = round(float(layer.opacity), 2)
            finally:
                self._syncing = False

    def step_map(self, delta: int = 1) -> str | None:
        """Show the next (``delta=1``) or previous map of the image."""
        with common.paint_apart():
            method = self.view.step(delta)
        if method is not None:
            self._syncing = True
            try:
                self.shown_map.value = method
            except ValueError:
                self.shown_map.reset_choices()
            finally:
                self._syncing = False
        return method

    def _toggle_grid(self, on: bool) -> None:
        """Side by side: each map over its own view of the image, in titled panes (built
        in a worker, shown when ready); off: one map over the image."""
        if on and not self.view.maps():
            common.notify("info", "PixelCAM: compute maps first, then show them side by side")
        self.view.set_grid(on)
        self._set_view_image()

    def difference_map(self) -> str | None:
        """PixelCAM minus a baseline map of the same image, drawn over the tissue (the
        layer is added in the next event-loop turns: :meth:`wait` for it in scripts);
        returns the layer's name."""
        catalogue = self.session.catalogue
        baselines = catalogue.baseline_maps if catalogue is not None else ("layercam", "cam")
        name = self.view.difference(tuple(baselines))
        if name is None:
            common.notify("error", "PixelCAM: compute a PixelCAM map and a baseline map first")
        return name

    def map_regions(self, wait: bool = False) -> Any:
        """The shown map at the outline threshold as an editable Shapes layer (QuPath
        GeoJSON by File > Save Selected Layers): :mod:`napari_pixelcam._regions`."""
        layer = self.view.layer(self.view.shown)
        return _regions.add_map_regions(self.viewer, layer, self.threshold.value, wait=wait)

    # ------------------------------------------------------------------ training
    def train_on_my_images(self) -> Any:
        """Open the trainer dock prefilled with the image's folder."""
        image = self.image_combo.value
        path = (image.metadata.get("path") if image is not None else None) or ""
        folder = Path(path).parent if path else Path.home()
        self.session.request_training(folder, guess_dataset(folder))
        _, widget = self.viewer.window.add_plugin_dock_widget(common.PLUGIN, common.TRAINER_NAME)
        return widget

    # ------------------------------------------------------------------ points
    def sample_points(self) -> Any:
        """Sample n FG/BG pseudo-label pixels from the chosen map into a Points layer (its
        paint in the next turn: the panel holds it on every layer change)."""
        from pixelcam.pseudo_labels import sample_points

        src = self.points_source.value
        if src is None:
            common.notify("error", "PixelCAM: compute a map first, then sample points from it")
            return None
        cam = np.asarray(src.data, np.float32)
        coords, labels = sample_points(cam, n=self.n_points.value, sampler=self.sampler.value)
        coords, labels = coords.numpy().astype(float), labels.numpy().astype(int)
        image = self._source_image(src)
        name = f"seeds [{src.metadata['source']}]"
        features = {"label": labels, "source": [src.metadata[common.MAP_KEY]] * len(labels)}
        meta = {
            "image_shape": tuple(int(s) for s in cam.shape),
            "image_id": (image.metadata.get("image_id") if image else None)
            or src.metadata["source"],
            "image_path": image.metadata.get("path") if image else None,
        }
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        defaults = {"label": self.points.label, "source": "user"}
        layer = self.viewer.add_points(
            coords, name=name, features=features, metadata=meta, size=max(6, cam.shape[0] // 60),
            face_color=_colors(labels), border_color="white", scale=src.scale,
            translate=src.translate, feature_defaults=defaults,
        )  # fmt: skip
        self.points.track(layer)
        return layer

    def points_layer(self) -> Any:
        """The points being edited: the active layer if it has labels, else the last one."""
        layers = [ly for ly in self.viewer.layers if is_label_layer(ly)]
        active = self.viewer.layers.selection.active
        return active if active in layers else (layers[-1] if layers else None)

    def undo_point_edit(self) -> bool:
        layer = self.points_layer()
        if not self.points.undo(layer):
            common.notify("info", "PixelCAM: no point edit to undo")
            return False
        return True

    def _show_point_label(self, label: int) -> None:
        value = next(k for k, v in POINT_LABELS.items() if v == label)
        if self.new_points.value != value:
            self.new_points.value = value

    def _source_image(self, map_layer):
        name = map_layer.metadata.get("source")
        return next((ly for ly in self.viewer.layers if ly.name == name), None)

    def save_annotations(self, path: str | Path | None = None) -> Path | None:
        """Write the seed points (as edited by the user) beside the image, or to ``path``."""
        from pixelcam.annotations import AnnotationSet, annotation_path_for, save_annotations

        layers = [ly for ly in self._layers_of("Points") if "image_shape" in ly.metadata]
        if not layers:
            common.notify("error", "PixelCAM: no seed points to save; sample points first")
            return None
        layer = self.viewer.layers.selection.active
        if layer not in layers:
            layer = layers[-1]
        meta = layer.metadata
        labels = np.asarray(layer.features["label"], int)
        sources = [str(s) for s in layer.features["source"]]
        ann = AnnotationSet.from_arrays(
            meta["image_id"], meta["image_shape"], np.asarray(layer.data, float), labels,
            sources, image_path=meta.get("image_path"),
        )  # fmt: skip
        if path is None:
            if meta.get("image_path"):
                path = annotation_path_for(meta["image_path"])
            else:
                path = Path.home() / f"{meta['image_id']}.points.csv"
        try:
            out = save_annotations(path, ann)
        except (OSError, ValueError) as exc:
            common.notify("error", f"PixelCAM: could not save annotations: {exc}")
            return None
        common.notify("info", f"PixelCAM: saved {len(labels)} points to {out}")
        return out

    # ------------------------------------------------------------------ worker
    def _busy(self, text: str) -> None:
        self.run_button.enabled = False
        self.progress.visible = True
        self.progress.max, self.progress.value = 0, 0  # a busy bar
        self.progress.label = text

    def _start(self, job, wait: bool) -> None:
        from napari.qt.threading import create_worker

        self.run_button.enabled = False
        self.progress.visible = True
        worker = create_worker(lambda: (yield from job), _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        if wait:
            self.wait()

    @property
    def busy(self) -> bool:
        """Whether maps are being computed or added, or the grid is being built."""
        return self._worker is not None or self._pending or self._adding or self.view.busy

    def wait(self, timeout: float = 300.0) -> None:
        """Block (processing Qt events) until the running job ends; for scripts and tests."""
        import time

        from qtpy.QtWidgets import QApplication

        t0 = time.monotonic()
        while self.busy and time.monotonic() - t0 < timeout:
            QApplication.processEvents()
            time.sleep(0.01)

    def _on_progress(self, msg) -> None:
        _, done, total, text = msg
        self.progress.max = total
        self.progress.value = done
        self.progress.label = text

    def _on_done(self, result) -> None:
        if result and result[0] == "maps":
            self._show_maps(*result[1:])

    def _on_error(self, exc: BaseException) -> None:
        self.result_label.value = f"error: {exc}"
        self.reveal(self.result_label)
        common.notify("error", f"PixelCAM: {exc}")

    def _on_finished(self) -> None:
        try:
            self.run_button.enabled = True
            self.progress.visible = False
        except RuntimeError:  # the dock was closed meanwhile
            pass
        self._worker = None


# ---------------------------------------------------------------------- helpers
def _scroll_area(inner: Any) -> Any:
    """A vertical scroll area around the panel, of modest preferred height: the trainer
    and the separability docks share the dock area with it (each its own scroll area)."""
    from qtpy.QtCore import QSize, Qt
    from qtpy.QtWidgets import QScrollArea

    class PanelScroll(QScrollArea):
        def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
            return QSize(380, 300)

        def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
            super().showEvent(event)
            common.balance_docks(self)

    scroll = PanelScroll()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    scroll.setMinimumHeight(200)
    return scroll


def _narrow(container: Container) -> None:
    """Choice boxes sized by a few characters, not by their longest entry (a long layer or
    file name must not widen the dock)."""
    from qtpy.QtWidgets import QComboBox

    for widget in container:
        box = widget.native
        if isinstance(box, QComboBox):
            box.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            box.setMinimumContentsLength(8)


def _colors(labels: np.ndarray) -> list[str]:
    return [common.POINT_COLORS[int(lab == FG)] for lab in labels]


def _map_layer(data, name, meta, scale, translate, method, catalogue) -> Any:
    """A map layer, built before it joins the viewer (hidden: the view shows one)."""
    from napari.layers import Image

    return Image(
        data, name=name, metadata=meta, scale=scale, translate=translate, visible=False,
        **ov.layer_kwargs(method, catalogue),
    )  # fmt: skip


def pxap_scores(maps: dict[str, np.ndarray], mask: Any) -> tuple[dict[str, float], float | None]:
    """Each map's PxAP against the mask, and the constant map's (the foreground fraction:
    what a map that knows nothing scores); ``({}, None)`` without a mask. A mask of
    another size is sampled on the map's grid (nearest)."""
    if mask is None or not maps:
        return {}, None
    from pixelcam.metrics import per_image_pxap

    full = (np.asarray(mask) > 0).astype(np.uint8)
    out: dict[str, float] = {}
    constant = None
    for method, m in maps.items():
        sampled = full
        if m.shape != full.shape:
            rows = np.arange(m.shape[0]) * full.shape[0] // m.shape[0]
            cols = np.arange(m.shape[1]) * full.shape[1] // m.shape[1]
            sampled = full[np.ix_(rows, cols)]
        score = float(per_image_pxap(m[None], sampled[None])[0])
        if np.isfinite(score):
            out[method] = score
        if constant is None:
            flat = float(per_image_pxap(np.zeros_like(m)[None], sampled[None])[0])
            constant = flat if np.isfinite(flat) else None
    return out, constant


def guess_dataset(folder: Path) -> str:
    """The trainer's dataset format for a folder of the user's images: GlaS when it holds
    ``Grade.csv``, else the generic folder format."""
    return "glas" if (folder / "Grade.csv").is_file() else "folder"
