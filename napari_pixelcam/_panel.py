"""The PixelCAM dock panel: maps as layers, comparison, pseudo-label points, annotations.

Thin on purpose: every computation is a :mod:`pixelcam` call (``load_checkpoint``,
``predict_maps``, ``sample_points``, ``per_image_pxap``, ``save_annotations``); this module
only turns results into layers. Heavy imports (torch, timm) happen on first use, and model
work runs in a ``thread_worker`` so the viewer never freezes; a failure becomes a napari
notification.
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

from napari_pixelcam._viewport import LiveMaps

if TYPE_CHECKING:
    import napari

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: The bundled sample models (trained by ``sample_data/train_sample_model.py``).
SAMPLE_PIXELCAM = MODELS_DIR / "sample_pixelcam.json"
SAMPLE_BASELINE = MODELS_DIR / "sample_baseline.json"
#: The bundled references: NEGEV over the sample baseline, and a fully supervised U-Net.
SAMPLE_REFERENCES = (MODELS_DIR / "sample_negev.json", MODELS_DIR / "sample_unet.json")
ALL_METHODS = ("cam", "gradcampp", "layercam", "deepmil", "sat", "pixelcam", "negev", "unet")
BASELINE_METHODS = ("cam", "gradcampp", "layercam", "deepmil", "sat")
COLORMAPS = {"pixelcam": "inferno", "negev": "magma", "unet": "viridis"}
DEFAULT_COLORMAP = "turbo"
POINT_COLORS = {1: "#ff2d55", 0: "#00c7ff"}


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


class PixelCAMPanel(Container):
    """Dock panel over :mod:`pixelcam`: heavy imports happen on first use, not on docking."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self._models: dict[tuple[str, str, int], tuple[Any, dict]] = {}
        self._worker = None
        self.last_result: dict[str, Any] = {}

        self.image_combo = ComboBox(label="image", choices=self._image_layers)
        self.mask_combo = ComboBox(label="mask", choices=self._label_layers, nullable=True)
        self.checkpoint = FileEdit(
            label="PixelCAM model", filter="*.json *.safetensors", value=str(SAMPLE_PIXELCAM)
        )
        self.baseline = FileEdit(
            label="baseline model",
            filter="*.json *.safetensors",
            value=str(SAMPLE_BASELINE) if SAMPLE_BASELINE.exists() else "",
        )
        self.references = FileEdit(
            label="NEGEV / U-Net models",
            mode="rm",
            filter="*.json *.safetensors",
            value=[str(p) for p in SAMPLE_REFERENCES if p.exists()],
        )
        self.references.native.setToolTip(
            "optional reference models for the compare view: NEGEV (a decoder over a frozen "
            "baseline) and the fully supervised U-Net; their maps are 'negev' and 'unet'"
        )
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"])
        self.methods = Select(
            label="maps", choices=list(ALL_METHODS), value=["layercam", "pixelcam"]
        )
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
            label="sampling", choices=[("probability", "pb"), ("threshold", "th")], value="pb"
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
        self.run_button.changed.connect(lambda: self.run_maps())
        self.grid.changed.connect(self._toggle_grid)
        self.diff_button.changed.connect(lambda: self.difference_map())
        self.sample_button.changed.connect(lambda: self.sample_points())
        self.save_button.changed.connect(lambda: self.save_annotations())
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self._refresh()
        # "visible region only (live)": maps of the view of a large image, as it moves
        self.live = LiveMaps(self)

    # ------------------------------------------------------------------ layer lists
    def _layers_of(self, kind: str) -> list:
        import napari.layers as nl

        cls = getattr(nl, kind)
        return [layer for layer in self.viewer.layers if isinstance(layer, cls)]

    def _image_layers(self, _w=None) -> list:
        return [
            ly
            for ly in self._layers_of("Image")
            if "pixelcam_method" not in ly.metadata and "pixelcam_backdrop" not in ly.metadata
        ]

    def _label_layers(self, _w=None) -> list:
        return self._layers_of("Labels")

    def _map_layers(self, _w=None) -> list:
        return [ly for ly in self._layers_of("Image") if "pixelcam_method" in ly.metadata]

    def _refresh(self, _event=None) -> None:
        for combo in (self.image_combo, self.mask_combo, self.points_source):
            combo.reset_choices()
        if self.mask_combo.value is None:
            masks = self._label_layers()
            if masks:
                self.mask_combo.value = masks[0]

    # ------------------------------------------------------------------ models
    def _load(self, path: str | Path, device: str) -> tuple[Any, dict]:
        """Load (once, then from a cache) a checkpoint; runs in the worker thread, so it
        must not touch any widget."""
        from pixelcam.models import load_checkpoint
        from pixelcam.train import resolve_device

        device = resolve_device(device)
        path = Path(path)
        weights = path.with_suffix(".safetensors")
        stamp = weights.stat().st_mtime_ns if weights.exists() else 0
        # the file's time is in the key: a retrained run in the same folder reloads
        key = (str(path.resolve()), str(device), stamp)
        if key not in self._models:
            self._models[key] = load_checkpoint(path, device=device)
        return self._models[key]

    # ------------------------------------------------------------------ maps
    def run_maps(self, wait: bool = False) -> None:
        """Compute the selected maps of the selected image, in a worker thread."""
        layer = self.image_combo.value
        if layer is None:
            _notify_error("PixelCAM: open an image first (File > Open, or a sample)")
            return
        if layer.multiscale:
            data = np.asarray(layer.data[_pick_level(layer.data)])
            level_scale = np.array(layer.data[0].shape[:2]) / np.array(data.shape[:2])
        else:
            data, level_scale = np.asarray(layer.data), np.ones(2)
        methods = list(self.methods.value) or ["pixelcam"]
        ckpt, base = str(self.checkpoint.value), str(self.baseline.value or "")
        refs = [str(p) for p in (self.references.value or ()) if str(p) not in ("", ".")]
        device = self.device.value
        _import_heavy()
        job = self._maps_job(layer, data, level_scale, methods, ckpt, base, device, refs)
        self._start(job, wait)

    def _maps_job(self, layer, data, level_scale, methods, ckpt, base, device, refs=()):
        """Worker-thread part: plain data in, plain data out (no widget access)."""
        from pixelcam.cams import get_method
        from pixelcam.inference import predict_maps

        yield ("progress", 0, 3, "loading model")
        model, meta = self._load(ckpt, device)
        names = meta.get("class_names")
        size = int(meta.get("eval_size", 224))
        own = [m for m in methods if get_method(m).applies(model)]
        yield ("progress", 1, 3, "computing maps")
        result = predict_maps(model, data, own, size=size, class_names=names)
        maps = {m: v for m, v in result.maps.items()}
        if base and Path(base).is_file():
            bmodel, _ = self._load(base, device)
            wanted = [m for m in methods if m != "pixelcam" and get_method(m).applies(bmodel)]
            if wanted:
                bres = predict_maps(bmodel, data, wanted, size=size, target=result.pred)
                maps.update(bres.maps)  # baseline maps come from the baseline model
        for ref in refs:  # NEGEV / U-Net: each gives the decoder map it was trained for
            wanted = [m for m in methods if m not in maps and m in ("negev", "unet")]
            if not wanted:
                break
            rmodel, rmeta = self._load(ref, device)
            wanted = [m for m in wanted if get_method(m).applies(rmodel)]
            if wanted:
                rsize = int(rmeta.get("eval_size", size))
                rres = predict_maps(rmodel, data, wanted, size=rsize, target=result.pred)
                maps.update(rres.maps)
        missing = [m for m in methods if m not in maps]
        if missing:
            hint = ""
            if {"negev", "unet"} & set(missing):
                hint = " (NEGEV and U-Net maps come from the 'NEGEV / U-Net models' files)"
            raise ValueError(f"maps {missing} do not apply to the chosen model(s){hint}")
        yield ("progress", 2, 3, "adding layers")
        return ("maps", layer, level_scale, maps, result)

    def _show_maps(self, layer, level_scale, maps, result) -> None:
        scale = np.asarray(layer.scale[-2:]) * level_scale
        translate = np.asarray(layer.translate[-2:])
        # one map shown at a time over the tissue (PixelCAM when computed): additive maps
        # stacked on an H&E image saturate to white; the others are one click away
        shown = "pixelcam" if "pixelcam" in maps else list(maps)[-1]
        for method, m in maps.items():
            name = f"{method} [{layer.name}]"
            meta = {"pixelcam_method": method, "source": layer.name}
            if name in self.viewer.layers:
                self.viewer.layers[name].data = m
                continue
            self.viewer.add_image(
                m, name=name, colormap=COLORMAPS.get(method, DEFAULT_COLORMAP),
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
        for backdrop in [ly for ly in layers if "pixelcam_backdrop" in ly.metadata]:
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
                metadata={"pixelcam_backdrop": map_layer.name},
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
        maps = {ly.metadata["pixelcam_method"]: ly for ly in self._map_layers()}
        base = next((maps[m] for m in BASELINE_METHODS if m in maps), None)
        if "pixelcam" not in maps or base is None:
            _notify_error("PixelCAM: compute a PixelCAM map and a baseline map first")
            return
        pix = maps["pixelcam"]
        diff = np.asarray(pix.data, np.float32) - np.asarray(base.data, np.float32)
        name = f"pixelcam - {base.metadata['pixelcam_method']} [{pix.metadata['source']}]"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = diff
            return
        self.viewer.add_image(
            diff, name=name, colormap="bwr", contrast_limits=(-1.0, 1.0), opacity=0.8,
            scale=pix.scale, translate=pix.translate,
            metadata={"pixelcam_method": "difference", "source": pix.metadata["source"]},
        )  # fmt: skip

    # ------------------------------------------------------------------ points
    def sample_points(self) -> Any:
        """Sample n FG/BG pseudo-label pixels from the chosen map into a Points layer."""
        from pixelcam.pseudo_labels import sample_points

        src = self.points_source.value
        if src is None:
            _notify_error("PixelCAM: compute a map first, then sample points from it")
            return None
        cam = np.asarray(src.data, np.float32)
        coords, labels = sample_points(cam, n=self.n_points.value, sampler=self.sampler.value)
        coords, labels = coords.numpy().astype(float), labels.numpy().astype(int)
        image = self._source_image(src)
        name = f"seeds [{src.metadata['source']}]"
        features = {"label": labels, "source": [src.metadata["pixelcam_method"]] * len(labels)}
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
            face_color="label", face_color_cycle=[POINT_COLORS[0], POINT_COLORS[1]],
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
            _notify_error("PixelCAM: no seed points to save; sample points first")
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
            _notify_error(f"PixelCAM: could not save annotations: {exc}")
            return None
        from napari.utils.notifications import show_info

        show_info(f"PixelCAM: saved {len(labels)} points to {out}")
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
        _notify_error(f"PixelCAM: {exc}")

    def _on_finished(self) -> None:
        self.run_button.enabled = True
        self.progress.visible = False
        self._worker = None


def _import_heavy() -> None:
    """Import torch and timm on the main thread: importing them first inside a worker
    thread crashes some builds (seen here: a segfault in torch's import)."""
    import pixelcam.cams  # noqa: F401
    import pixelcam.inference  # noqa: F401
    import pixelcam.models  # noqa: F401


def _pick_level(levels, max_side: int = 2048) -> int:
    """The largest pyramid level whose longer side fits ``max_side`` (the whole view)."""
    for i, level in enumerate(levels):
        if max(level.shape[:2]) <= max_side:
            return i
    return len(levels) - 1
