"""The PixelCAM dock panel: maps as layers, comparison, pseudo-label points, annotations.

A view over the viewer's session (:mod:`napari_pixelcam._session`): its checkpoint, device,
map and image fields read and write the session, which the live mode
(:mod:`napari_pixelcam._viewport`, owned by this panel) and the other docks share; the
session's rule says which checkpoint gives which map. Thin on purpose: every computation
is a :mod:`pixelcam` call (``predict_maps``, ``sample_points``, ``per_image_pxap``,
``save_annotations``); this module only turns results into layers. Heavy imports (torch,
timm) happen in the session's worker, model work runs in a ``thread_worker`` so the viewer
never freezes, and a failure becomes a napari notification.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)

from napari_pixelcam import _common as common
from napari_pixelcam._session import Selection, devices, session_for
from napari_pixelcam._viewport import LiveMaps

if TYPE_CHECKING:
    import napari

CHECKPOINT_FILTER = "*.json *.safetensors"
#: the seed sampler shown before the catalogue is read (the library's default)
DEFAULT_SAMPLER = "probability"


class PixelCAMPanel(Container):
    """Dock panel over :mod:`pixelcam`: heavy imports happen on first use, not on docking."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session_for(viewer)
        self._worker = None
        self._syncing = False
        self._known_maps: list[str] = []  # listed before the catalogue is read
        self.last_result: dict[str, Any] = {}
        self._build_widgets()
        self._connect()
        self._refresh()
        # "visible region only (live)": maps of the view of a large image, as it moves
        self.live = LiveMaps(viewer, self.session)
        at = self.index(self.run_button) + 1
        for i, widget in enumerate(self.live.widgets):
            self.insert(at + i, widget)
        self.session.load_catalogue(common.in_worker)

    def _build_widgets(self) -> None:
        s = self.session
        self.image_combo = ComboBox(label="image", choices=self._image_layers)
        self.mask_combo = ComboBox(label="mask", choices=self._label_layers, nullable=True)
        self.checkpoint = FileEdit(
            label="PixelCAM model", filter=CHECKPOINT_FILTER, value=s.pixelcam
        )
        self.baseline = FileEdit(label="baseline model", filter=CHECKPOINT_FILTER, value=s.baseline)
        self.references = FileEdit(
            label="NEGEV / U-Net models", mode="rm", filter=CHECKPOINT_FILTER,
            value=list(s.references),
        )  # fmt: skip
        self.references.native.setToolTip(
            "optional reference models for the compare view: NEGEV (a decoder over a frozen "
            "baseline) and the fully supervised U-Net; their maps are 'negev' and 'unet'"
        )
        self.device = ComboBox(label="device", choices=devices().names, value=s.device)
        self.methods = Select(label="maps", choices=self._map_choices, value=list(s.maps))
        self.methods.native.setMaximumHeight(110)
        self.run_button = PushButton(text="Compute maps")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0, visible=False)
        self.result_label = Label(label="result", value="")
        self.result_label.native.setWordWrap(True)  # a long PxAP line must not widen the dock

        self.grid = CheckBox(text="side by side (grid)", value=False)
        self.diff_button = PushButton(text="Difference: PixelCAM - baseline")

        self.points_source = ComboBox(label="points from", choices=self._map_layers)
        self.n_points = SpinBox(label="n per class", value=5, min=1, max=500)
        self.sampler = ComboBox(
            label="sampling", choices=self._sampler_choices, value=DEFAULT_SAMPLER
        )
        self.sample_button = PushButton(text="Sample FG/BG points")
        self.save_button = PushButton(text="Save annotations")
        self.extend(
            [
                self.image_combo, self.mask_combo, self.checkpoint, self.baseline,
                self.references, self.device,
                self.methods, self.run_button, self.progress, self.result_label, self.grid,
                self.diff_button, self.points_source, self.n_points, self.sampler,
                self.sample_button, self.save_button,
            ]
        )  # fmt: skip

    def _connect(self) -> None:
        self.run_button.changed.connect(lambda: self.run_maps())
        self.grid.changed.connect(self._toggle_grid)
        self.diff_button.changed.connect(lambda: self.difference_map())
        self.sample_button.changed.connect(lambda: self.sample_points())
        self.save_button.changed.connect(lambda: self.save_annotations())
        for name, widget in self._bound().items():
            widget.changed.connect(lambda value, name=name: self._to_session(name, value))
        self.session.events.connect(self._from_session)  # held weakly by the session
        self.session.events.catalogue.connect(self._on_catalogue)
        self.session.events.catalogue_failed.connect(self._on_catalogue_failed)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)

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
        self._show(info.signal.name, info.args[0])

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
            widget.value = value
        except (RuntimeError, ValueError):  # the dock is closing, or a layer left already
            pass
        finally:
            self._syncing = False

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

    def _on_catalogue_failed(self, exc: BaseException) -> None:
        common.notify("error", f"PixelCAM: cannot read the available maps: {exc}")

    # ------------------------------------------------------------------ layer lists
    def _layers_of(self, kind: str) -> list:
        import napari.layers as nl

        cls = getattr(nl, kind)
        return [layer for layer in self.viewer.layers if isinstance(layer, cls)]

    def _image_layers(self, _w=None) -> list:
        return common.source_images(self.viewer)

    def _label_layers(self, _w=None) -> list:
        return self._layers_of("Labels")

    def _map_layers(self, _w=None) -> list:
        return [ly for ly in self._layers_of("Image") if common.MAP_KEY in ly.metadata]

    def _refresh(self, _event=None) -> None:
        for combo in (self.image_combo, self.mask_combo, self.points_source):
            combo.reset_choices()
        if self.mask_combo.value is None:
            masks = self._label_layers()
            if masks:
                self.mask_combo.value = masks[0]
        self.session.image = self.image_combo.value

    # ------------------------------------------------------------------ maps
    def run_maps(self, wait: bool = False) -> None:
        """Compute the selected maps of the selected image, in a worker thread."""
        layer = self.image_combo.value
        if layer is None:
            common.notify("error", "PixelCAM: open an image first (File > Open, or a sample)")
            return
        if layer.multiscale:
            data, level_scale = common.level_of(layer.data, True)
            data = np.asarray(data)
        else:
            data, level_scale = np.asarray(layer.data), np.ones(2)
        self.session.image = layer
        selection = self.session.selection()
        try:
            self.session.catalogue_now()  # torch is imported (in the session's worker) first
        except Exception as exc:
            common.notify("error", f"PixelCAM: {exc}")
            return
        self._start(self._maps_job(layer, data, level_scale, selection), wait)

    def _maps_job(self, layer, data, level_scale, selection: Selection):
        """Worker-thread part: plain data in, plain data out (no widget access). Each map
        comes from the checkpoint the session's rule names (the PixelCAM model's prediction
        is the class the class-specific maps of the other models explain)."""
        from pixelcam.inference import predict_maps

        session = self.session
        yield ("progress", 0, 3, "loading model")
        model, meta = session.load(selection.pixelcam, selection.device)
        names = meta.get("class_names")
        size = int(meta.get("eval_size", 224))
        by_model: dict[str, list[str]] = {}
        for method, path in session.map_sources(selection).items():
            by_model.setdefault(path, []).append(method)
        yield ("progress", 1, 3, "computing maps")
        own = by_model.pop(selection.pixelcam, [])
        result = predict_maps(model, data, own, size=size, class_names=names)
        maps = dict(result.maps)
        for path, wanted in by_model.items():
            other, other_meta = session.load(path, selection.device)
            side = int(other_meta.get("eval_size", size))
            maps.update(predict_maps(other, data, wanted, size=side, target=result.pred).maps)
        yield ("progress", 2, 3, "adding layers")
        return ("maps", layer, level_scale, {m: maps[m] for m in selection.maps}, result)

    def _show_maps(self, layer, level_scale, maps, result) -> None:
        scale = np.asarray(layer.scale[-2:]) * level_scale
        translate = np.asarray(layer.translate[-2:])
        # one map shown at a time over the tissue (PixelCAM when computed): additive maps
        # stacked on an H&E image saturate to white; the others are one click away
        shown = "pixelcam" if "pixelcam" in maps else list(maps)[-1]
        for method, m in maps.items():
            name = f"{method} [{layer.name}]"
            meta = {common.MAP_KEY: method, "source": layer.name}
            if name in self.viewer.layers:
                self.viewer.layers[name].data = m
                continue
            self.viewer.add_image(
                m, name=name, colormap=common.COLORMAPS.get(method, common.DEFAULT_COLORMAP),
                blending="additive", opacity=0.5, contrast_limits=(0.0, 1.0), scale=scale,
                translate=translate, metadata=meta, visible=method == shown,
            )  # fmt: skip
        text = f"{result.pred_name} ({100 * float(result.probs[result.pred]):.1f}%)"
        scores = self._pxap(layer, maps)
        if scores:
            text += " | PxAP " + ", ".join(f"{k} {v:.1f}" for k, v in scores.items())
        self.result_label.value = text
        self.last_result = {"pred": result.pred_name, "probs": result.probs, "pxap": scores}

    def _pxap(self, layer, maps: dict[str, np.ndarray]) -> dict[str, float]:
        mask_layer = self.mask_combo.value
        if mask_layer is None:
            return {}
        from pixelcam.metrics import per_image_pxap

        mask = (np.asarray(mask_layer.data) > 0).astype(np.uint8)
        out = {}
        for method, m in maps.items():
            if m.shape != mask.shape:
                from skimage.transform import resize

                m = resize(m, mask.shape, order=1, preserve_range=True).astype(np.float32)
            score = float(per_image_pxap(m[None], mask[None])[0])
            if np.isfinite(score):
                out[method] = score
        return out

    # ------------------------------------------------------------------ compare
    def _toggle_grid(self, on: bool) -> None:
        """Side by side: each map over its own view of the image, in a grid of panes."""
        layers = self.viewer.layers
        for backdrop in [ly for ly in layers if common.BACKDROP_KEY in ly.metadata]:
            layers.remove(backdrop)
        if not on:
            self.viewer.grid.enabled = False
            self.viewer.reset_view()
            return
        for map_layer in self._map_layers():
            source = self._source_image(map_layer)
            if source is None:
                continue
            backdrop = self.viewer.add_image(
                source.data, name=f"{source.name} under {map_layer.name}", rgb=source.rgb,
                scale=source.scale, translate=source.translate,
                metadata={common.BACKDROP_KEY: map_layer.name},
            )  # fmt: skip
            layers.move(layers.index(backdrop), layers.index(map_layer))
            map_layer.visible = True
        self.viewer.grid.stride = 2
        # one row (image | baseline | PixelCAM); two rows when references join them
        self.viewer.grid.shape = (1, -1) if len(self._map_layers()) <= 3 else (2, -1)
        self.viewer.grid.enabled = True
        self.viewer.reset_view()

    def difference_map(self) -> None:
        """PixelCAM minus a baseline map of the same image, as a diverging layer."""
        maps = {ly.metadata[common.MAP_KEY]: ly for ly in self._map_layers()}
        baselines = self.session.catalogue_now().baseline_maps if maps else ()
        base = next((maps[m] for m in baselines if m in maps), None)
        if "pixelcam" not in maps or base is None:
            common.notify("error", "PixelCAM: compute a PixelCAM map and a baseline map first")
            return
        pix = maps["pixelcam"]
        diff = np.asarray(pix.data, np.float32) - np.asarray(base.data, np.float32)
        name = f"pixelcam - {base.metadata[common.MAP_KEY]} [{pix.metadata['source']}]"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = diff
            return
        self.viewer.add_image(
            diff, name=name, colormap="bwr", contrast_limits=(-1.0, 1.0), opacity=0.8,
            scale=pix.scale, translate=pix.translate,
            metadata={common.MAP_KEY: "difference", "source": pix.metadata["source"]},
        )  # fmt: skip

    # ------------------------------------------------------------------ points
    def sample_points(self) -> Any:
        """Sample n FG/BG pseudo-label pixels from the chosen map into a Points layer."""
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
        return self.viewer.add_points(
            coords, name=name, features=features, metadata=meta, size=max(6, cam.shape[0] // 60),
            face_color="label", face_color_cycle=[common.BG_COLOR, common.FG_COLOR],
            border_color="white", scale=src.scale, translate=src.translate,
            feature_defaults={"label": 1, "source": "user"},
        )  # fmt: skip

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

    def wait(self, timeout: float = 300.0) -> None:
        """Block (processing Qt events) until the running job ends; for scripts and tests."""
        import time

        from qtpy.QtWidgets import QApplication

        t0 = time.monotonic()
        while self._worker is not None and time.monotonic() - t0 < timeout:
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
        common.notify("error", f"PixelCAM: {exc}")

    def _on_finished(self) -> None:
        self.run_button.enabled = True
        self.progress.visible = False
        self._worker = None
