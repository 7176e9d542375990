"""Refine dock: a pathologist corrects a few pixels and the PixelCAM map follows.

A view over the viewer's session (:mod:`napari_pixelcam._session`): it refines the session's
PixelCAM checkpoint (``session.pixelcam``; a baseline checkpoint works too: the library
fits a pixel head from its CAM seeds first) on the chosen image layer. The user's
corrections live in a "refine points [<image>]" Points layer with a ``label`` feature
(1 foreground, red; 0 background, blue). Every change of those points (added, moved,
deleted, relabelled) starts a refit after a short debounce (:data:`DEBOUNCE_MS`), in a
worker thread, through :class:`pixelcam.refine.Refiner`: one refiner per (checkpoint,
device), each image added once under its layer name, so the corrections of every image
refined in this viewer accumulate. The "PixelCAM (refined) [<image>]" layer is created
once and then updated in place, aligned with its image.

Undo restores the previous head (and its maps) exactly; "Save refined model..." writes a
normal checkpoint (:meth:`Refiner.save`) that records its parent and the points. Torch and
:mod:`pixelcam.refine` are imported in the worker only; every failure is a notification.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from napari_pixelcam import _common as common
from napari_pixelcam._session import session_for

if TYPE_CHECKING:
    import napari

#: milliseconds between the last point edit and the refit it starts
DEBOUNCE_MS = 300
#: metadata keys of this dock's layers: a refined map (its image's name) and the points
#: layer made for an image (the image's name)
REFINED_KEY = "pixelcam_refined"
POINTS_KEY = "pixelcam_refine_points"
PREFIX = "PixelCAM refine"
FG, BG = 1, 0
#: the Points events that say the points changed (napari emits ``data`` before and after)
AFTER = ("added", "removed", "changed")


def refined_name(image: str) -> str:
    return f"PixelCAM (refined) [{image}]"


def points_name(image: str) -> str:
    return f"refine points [{image}]"


def map_colormap() -> Any:
    """Inferno whose low end is transparent (the tissue shows through low values)."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    base = ensure_colormap("inferno")
    colors = np.array(base.colors, dtype=np.float32)
    colors[:, 3] = np.clip(np.linspace(-0.35, 1.3, len(colors)), 0.0, 1.0)
    return Colormap(colors, name="pixelcam_refined", controls=base.controls)


def point_colors(labels: np.ndarray) -> list[str]:
    return [common.POINT_COLORS[int(v == FG)] for v in labels]


def layer_labels(layer: Any) -> np.ndarray:
    """The ``label`` feature of a Points layer (missing: foreground)."""
    n = len(layer.data)
    if "label" not in layer.features.columns:
        return np.ones(n, dtype=np.int64)
    values = np.asarray(layer.features["label"], dtype=np.float64)
    return (np.nan_to_num(values, nan=1.0) > 0.5).astype(np.int64)


def image_pixels(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """The pixels a refit reads (the level :func:`common.level_of` picks) and its scale
    (world units per pixel)."""
    data, factor = common.level_of(layer.data, layer.multiscale)
    scale = np.asarray(layer.scale[-2:], dtype=np.float64) * factor
    return np.asarray(data), scale


def to_pixels(points: Any, image: Any, scale: np.ndarray) -> np.ndarray:
    """``(N, 2)`` ``(row, col)`` positions of a Points layer's points in the image's pixels."""
    data = np.asarray(points.data, dtype=np.float64).reshape(-1, points.ndim)[:, -2:]
    world = data * np.asarray(points.scale[-2:]) + np.asarray(points.translate[-2:])
    return (world - np.asarray(image.translate[-2:])) / scale


def pxap(refined: np.ndarray, mask: np.ndarray | None) -> float | None:
    """PxAP of a map against a mask (:func:`pixelcam.metrics.per_image_pxap`, as the panel
    scores its maps); None without a mask of the map's size."""
    if mask is None or mask.shape != refined.shape:
        return None
    from pixelcam.metrics import per_image_pxap

    score = float(per_image_pxap(refined[None], (mask > 0).astype(np.uint8)[None])[0])
    return score if np.isfinite(score) else None


class RefineWidget(QWidget):
    """The refine dock (module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        #: (checkpoint, device) -> Refiner; (checkpoint, device) -> {image id: data id}
        self.refiners: dict[tuple[str, str], Any] = {}
        self._added: dict[tuple[str, str], dict[str, int]] = {}
        #: ((checkpoint, device), image) -> PxAP of the map before any refit (with a mask)
        self.base_pxap: dict[tuple[tuple[str, str], str], float | None] = {}
        self._queue: list[Callable[[], Any]] = []
        self._busy = False
        self._refit_queued = False
        self._watched: set[int] = set()
        self.can_undo = False
        self.last_result: dict[str, Any] | None = None
        self.last_saved: tuple[Path, Path] | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.refit)
        self._build()
        self._connect()
        self._refresh_layers()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        self.image_combo = QComboBox()
        self.points_combo = QComboBox()
        self.new_points = QPushButton("New refine points layer")
        self.fg = QRadioButton("foreground (1)")
        self.bg = QRadioButton("background (0)")
        self.fg.setChecked(True)
        self._labels = QButtonGroup(self)
        self._labels.addButton(self.fg, FG)
        self._labels.addButton(self.bg, BG)
        self.auto = QCheckBox("refit automatically")
        self.auto.setChecked(True)
        self.refit_button = QPushButton("Refit")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setEnabled(False)
        self.save_button = QPushButton("Save refined model…")
        self.checkpoint = QLabel()
        self.checkpoint.setWordWrap(True)
        self.status = QLabel("add points: red = foreground, blue = background")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("checkpoint", self.checkpoint)
        form.addRow("image", self.image_combo)
        form.addRow("points", self.points_combo)
        labels = QHBoxLayout()
        labels.addWidget(self.fg)
        labels.addWidget(self.bg)
        buttons = QHBoxLayout()
        for button in (self.refit_button, self.undo_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.new_points)
        layout.addLayout(labels)
        layout.addWidget(self.auto)
        layout.addLayout(buttons)
        layout.addWidget(self.save_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._show_checkpoint(self.session.pixelcam)

    def _connect(self) -> None:
        self.new_points.clicked.connect(self._new_points_clicked)
        self._labels.idClicked.connect(self._label_clicked)
        self.refit_button.clicked.connect(self.refit)
        self.undo_button.clicked.connect(self.undo)
        self.save_button.clicked.connect(self._save_clicked)
        self.image_combo.currentIndexChanged.connect(self._image_changed)
        self.points_combo.currentIndexChanged.connect(self._points_changed)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._refresh_layers)
        self.session.events.image.connect(self._session_image)
        self.session.events.pixelcam.connect(self._show_checkpoint)

    def _show_checkpoint(self, path: str) -> None:
        text = Path(path).name if path else "none: choose one in the PixelCAM panel"
        self.checkpoint.setText(text)
        self.checkpoint.setToolTip(str(path))

    # ------------------------------------------------------------------ layers
    def source_images(self) -> list[Any]:
        return [ly for ly in common.source_images(self.viewer) if REFINED_KEY not in ly.metadata]

    def point_layers(self) -> list[Any]:
        from napari.layers import Points

        return [ly for ly in self.viewer.layers if isinstance(ly, Points)]

    @property
    def image(self) -> Any:
        return self._combo_layer(self.image_combo)

    @property
    def points(self) -> Any:
        return self._combo_layer(self.points_combo)

    def _combo_layer(self, combo: QComboBox) -> Any:
        name = combo.currentData()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _fill(self, combo: QComboBox, layers: list[Any], keep: str | None, empty: str) -> None:
        combo.blockSignals(True)
        try:
            combo.clear()
            combo.addItem(empty, None)
            for ly in layers:
                combo.addItem(ly.name, ly.name)
            index = combo.findData(keep) if keep else -1
            combo.setCurrentIndex(index if index >= 0 else min(1, combo.count() - 1))
        finally:
            combo.blockSignals(False)

    @common.guarded(PREFIX)
    def _refresh_layers(self, _event: Any = None) -> None:
        image, points = self.image_combo.currentData(), self.points_combo.currentData()
        if image is None and self.session.image is not None:
            image = self.session.image.name
        self._fill(self.image_combo, self.source_images(), image, "(no image)")
        self._fill_points(points)

    def _fill_points(self, keep: str | None = None) -> None:
        image = self.image
        mine = [
            ly for ly in self.point_layers() if image is None or ly.metadata.get(POINTS_KEY) in
            (None, image.name)
        ]  # fmt: skip
        if image is not None and keep is None:
            keep = next((ly.name for ly in mine if ly.metadata.get(POINTS_KEY) == image.name), None)
        self._fill(self.points_combo, mine, keep, "(none)")
        if keep is None:
            self.points_combo.setCurrentIndex(0)
        self._watch(self.points)

    @common.guarded(PREFIX)
    def _session_image(self, layer: Any) -> None:
        if layer is not None and REFINED_KEY not in layer.metadata:
            index = self.image_combo.findData(layer.name)
            if index >= 0:
                self.image_combo.setCurrentIndex(index)

    @common.guarded(PREFIX)
    def _image_changed(self, _index: int = 0) -> None:
        self._fill_points()

    @common.guarded(PREFIX)
    def _points_changed(self, _index: int = 0) -> None:
        self._watch(self.points)

    @common.guarded(PREFIX)
    def _new_points_clicked(self, _checked: bool = False) -> Any:
        with common.paint_apart():
            return self.new_points_layer()

    def new_points_layer(self) -> Any:
        """The image's refine points layer (made once, aligned with the image), chosen."""
        image = self.image
        if image is None:
            common.notify("warning", f"{PREFIX}: open an image first")
            return None
        name = points_name(image.name)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
        else:
            size = max(4.0, max(image.data.shape[:2] if not image.multiscale else (64,)) / 40)
            layer = self.viewer.add_points(
                np.empty((0, 2)), name=name, ndim=2, size=size, border_color="white",
                features={"label": np.empty(0, dtype=np.int64)}, scale=image.scale[-2:],
                translate=image.translate[-2:], metadata={POINTS_KEY: image.name},
                feature_defaults={"label": self.label},
            )  # fmt: skip
            layer.current_face_color = common.POINT_COLORS[self.label]
            layer.mode = "add"
        self._fill_points(layer.name)
        return layer

    def _watch(self, layer: Any) -> None:
        if layer is None or id(layer) in self._watched:
            return
        self._watched.add(id(layer))
        layer.events.data.connect(self._points_edited)
        layer.events.features.connect(self._points_edited)
        self._apply_label(layer)

    # ------------------------------------------------------------------ labels
    @property
    def label(self) -> int:
        return BG if self.bg.isChecked() else FG

    @common.guarded(PREFIX)
    def _label_clicked(self, label: int) -> None:
        self.set_label(label)

    def set_label(self, label: int) -> None:
        """New points get ``label``; in select mode, the selected points of the points
        layer are relabelled (in add mode the last point added is selected: it keeps its
        label)."""
        (self.fg if label == FG else self.bg).setChecked(True)
        layer = self.points
        if layer is None:
            return
        selected = sorted(layer.selected_data)
        if selected and str(layer.mode) != "add":
            labels = layer_labels(layer)
            labels[selected] = int(label)
            layer.features = layer.features.assign(label=labels)
            self.recolor(layer)
            self.schedule()
        self._apply_label(layer)

    def _apply_label(self, layer: Any) -> None:
        if "label" in layer.features.columns:
            columns = layer.feature_defaults.columns
            defaults = {c: layer.feature_defaults[c].iloc[0] for c in columns}
            defaults["label"] = self.label
            layer.feature_defaults = defaults
        selected = set(layer.selected_data)
        layer.selected_data = set()  # the current colour must not recolour a selection
        layer.current_face_color = common.POINT_COLORS[self.label]
        if str(layer.mode) != "add":  # (a selection sets the defaults from its points)
            layer.selected_data = selected

    def recolor(self, layer: Any) -> None:
        """Every point in the colour of its label."""
        if layer is not None and len(layer.data):
            from napari.utils.colormaps.standardize_color import transform_color

            colors = transform_color(point_colors(layer_labels(layer)))
            if not np.allclose(np.asarray(layer.face_color), colors):
                layer.face_color = colors

    @common.guarded(PREFIX)
    def _points_edited(self, event: Any = None) -> None:
        action = str(getattr(event, "action", "changed"))
        if event is not None and event.type == "data" and action not in AFTER:
            return  # the "before" half of an edit
        self.recolor(getattr(event, "source", None) or self.points)
        self.schedule()

    def schedule(self) -> None:
        """Refit after the debounce, when refitting automatically."""
        if self.auto.isChecked():
            self._timer.start()

    # ------------------------------------------------------------------ jobs
    def _submit(self, start: Callable[[], Any]) -> None:
        """Run ``start`` (which starts a worker, or returns None) now or after the
        running job: a :class:`Refiner` takes one call at a time."""
        self._queue.append(start)
        if not self._busy:
            self._next()

    def _next(self) -> None:
        while self._queue and not self._busy:
            start = self._queue.pop(0)
            try:
                self._busy = start() is not None
            except Exception as exc:  # noqa: BLE001 - nothing may escape into Qt
                common.notify("error", f"{PREFIX}: {type(exc).__name__}: {exc}")

    def _run(self, job: Callable[[], Any], done: Callable[[Any], None]) -> Any:
        def on_done(result: Any) -> None:
            try:
                done(result)
            except Exception as exc:  # noqa: BLE001
                common.notify("error", f"{PREFIX}: {type(exc).__name__}: {exc}")
            self._finished()

        def on_error(exc: BaseException) -> None:
            common.notify("error", f"{PREFIX}: {type(exc).__name__}: {exc}")
            self._finished()

        return common.in_worker(job, on_done, on_error)

    def _finished(self) -> None:
        self._busy = False
        self._next()

    @property
    def busy(self) -> bool:
        return self._busy or bool(self._queue) or self._timer.isActive()

    def _key(self) -> tuple[str, str] | None:
        path = self.session.pixelcam
        if not path:
            common.notify("error", f"{PREFIX}: choose a PixelCAM checkpoint in the panel")
            return None
        return str(Path(path).resolve()), self.session.device

    def _refiner(self, key: tuple[str, str]) -> Any:
        """The refiner of a (checkpoint, device), made once from the session's model cache
        (worker thread)."""
        if key not in self.refiners:
            from pixelcam.device import resolve_device
            from pixelcam.refine import Refiner

            model, meta = self.session.load(key[0], key[1])
            self.refiners[key] = Refiner(
                model, resolve_device(key[1]), parent=key[0], parent_meta=meta
            )
            self._added[key] = {}
        return self.refiners[key]

    def _ensure_image(
        self, key: tuple[str, str], refiner: Any, name: str, rgb: Any, token: int
    ) -> bool:
        """Add the image once (the encoder runs once per image), again when its data is
        replaced; True when it was added now."""
        if self._added[key].get(name) != token:
            refiner.add_image(name, rgb)
            self._added[key][name] = token
            return True
        return False

    # ------------------------------------------------------------------ refit
    @common.guarded(PREFIX)
    def refit(self, _checked: bool = False) -> None:
        """Refit from every image's points (in a worker, after any running job)."""
        self._timer.stop()
        if not self._refit_queued:
            self._refit_queued = True
            self._submit(self._start_refit)

    def _inputs(self) -> dict[str, Any] | None:
        """What a refit reads from the viewer (main thread); None (notified) when it
        cannot run."""
        image, points, key = self.image, self.points, self._key()
        if key is None or image is None:
            if image is None:
                common.notify("error", f"{PREFIX}: choose an image layer")
            return None
        rgb, scale = image_pixels(image)
        coords = np.empty((0, 2)) if points is None else to_pixels(points, image, scale)
        labels = np.empty(0, dtype=np.int64) if points is None else layer_labels(points)
        h, w = rgb.shape[:2]
        outside = ~((coords >= -0.5) & (coords < np.array([h, w]) - 0.5)).all(axis=1)
        if outside.any():
            common.notify(
                "error", f"{PREFIX}: {int(outside.sum())} point(s) outside the image "
                f"'{image.name}' ({h}x{w}); move or delete them to refit",
            )  # fmt: skip
            return None
        shown = [ly.metadata[REFINED_KEY] for ly in self.viewer.layers
                 if REFINED_KEY in ly.metadata]  # fmt: skip
        return {
            "key": key, "name": image.name, "rgb": rgb, "token": id(image.data),
            "coords": coords, "labels": labels,
            "mask": self._mask(rgb.shape[:2]), "maps": list(dict.fromkeys([*shown, image.name])),
        }  # fmt: skip

    def _mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The first Labels layer of the image's size (the ground truth), if any."""
        from napari.layers import Labels

        for ly in self.viewer.layers:
            if isinstance(ly, Labels) and common.OUTLINE_KEY not in ly.metadata:
                data = np.asarray(ly.data[0] if ly.multiscale else ly.data)
                if data.shape == tuple(shape):
                    return data
        return None

    def _start_refit(self) -> Any:
        self._refit_queued = False
        inputs = self._inputs()
        if inputs is None:
            return None
        key, name = inputs["key"], inputs["name"]

        def job() -> dict[str, Any]:
            refiner = self._refiner(key)
            if self._ensure_image(key, refiner, name, inputs["rgb"], inputs["token"]):
                before = refiner.maps([name])[name]  # the map the refits start from
                self.base_pxap[(key, name)] = pxap(before, inputs["mask"])
            ids = [i for i in inputs["maps"] if i in refiner.image_ids]
            refiner.set_points(name, inputs["coords"], inputs["labels"])
            result = refiner.refit(maps=ids)
            return {
                "maps": result.maps, "ms": 1000 * result.seconds, "n_fg": result.n_fg,
                "n_bg": result.n_bg, "pxap": pxap(result.maps[name], inputs["mask"]),
                "name": name, "can_undo": refiner.can_undo,
                "base_pxap": self.base_pxap.get((key, name)),
            }  # fmt: skip

        return self._run(job, self._refitted)

    def _refitted(self, out: dict[str, Any]) -> None:
        self.last_result = out
        self.can_undo = out["can_undo"]
        self.undo_button.setEnabled(self.can_undo)
        with common.paint_apart():
            self.show_maps(out["maps"])
        text = f"points FG {out['n_fg']} / BG {out['n_bg']} | refit {out['ms']:.0f} ms"
        if out.get("pxap") is not None:
            was = out.get("base_pxap")
            text += f" | PxAP {out['pxap']:.1f}" + ("" if was is None else f" (was {was:.1f})")
        self.status.setText(text)

    def show_maps(self, maps: dict[str, np.ndarray]) -> None:
        """Update each refined layer in place (made once, aligned with its image)."""
        for name, data in maps.items():
            layer = self.refined_layer(name)
            if layer is not None:
                layer.data = data
                continue
            if name not in self.viewer.layers:
                continue  # the image was closed
            image = self.viewer.layers[name]
            scale = image_pixels(image)[1]
            self.viewer.add_image(
                data, name=refined_name(name), colormap=map_colormap(), contrast_limits=(0, 1),
                scale=scale, translate=image.translate[-2:], metadata={REFINED_KEY: name},
                blending="translucent",
            )  # fmt: skip
            points = self.points
            if points is not None and points in self.viewer.layers:
                self.viewer.layers.move(self.viewer.layers.index(points), len(self.viewer.layers))
                self.viewer.layers.selection.active = points

    def refined_layer(self, name: str) -> Any:
        for ly in self.viewer.layers:
            if ly.metadata.get(REFINED_KEY) == name:
                return ly
        return None

    # ------------------------------------------------------------------ undo, save
    @common.guarded(PREFIX)
    def undo(self, _checked: bool = False) -> None:
        """Back to the previous head; the maps follow (the points stay)."""
        self._submit(self._start_undo)

    def _start_undo(self) -> Any:
        key = self._key()
        refiner = self.refiners.get(key) if key else None
        if refiner is None or not refiner.can_undo:
            common.notify("info", f"{PREFIX}: nothing to undo")
            return None
        ids = [ly.metadata[REFINED_KEY] for ly in self.viewer.layers if REFINED_KEY in ly.metadata]

        def job() -> dict[str, Any]:
            refiner.undo()
            return {"maps": refiner.maps([i for i in ids if i in refiner.image_ids]),
                    "can_undo": refiner.can_undo}  # fmt: skip

        def done(out: dict[str, Any]) -> None:
            self.can_undo = out["can_undo"]
            self.undo_button.setEnabled(self.can_undo)
            self.show_maps(out["maps"])
            self.status.setText("undone: the previous head")

        return self._run(job, done)

    @common.guarded(PREFIX)
    def _save_clicked(self, _checked: bool = False) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save refined model", "refined.json", "PixelCAM checkpoint (*.json)"
        )
        if path:
            self.save_refined(path)

    def save_refined(self, path: str | Path) -> None:
        """Save the refined model as a normal checkpoint (in a worker, after any running
        job); it records its parent and every image's points. ``last_saved`` then holds
        ``(weights, json)``."""
        self._submit(lambda: self._start_save(Path(path)))

    def _start_save(self, path: Path) -> Any:
        key = self._key()
        refiner = self.refiners.get(key) if key else None
        if refiner is None:
            common.notify("error", f"{PREFIX}: nothing refined yet: add points first")
            return None

        def job() -> tuple[Path, Path]:
            points = {}
            for image_id in refiner.image_ids:
                ann = refiner.points(image_id)
                if ann is not None and ann.points:
                    points[image_id] = {"coords": ann.coords().tolist(),
                                        "labels": ann.labels().tolist()}  # fmt: skip
            return refiner.save(path, meta={"refine_points": points})

        def done(paths: tuple[Path, Path]) -> None:
            self.last_saved = paths
            self.status.setText(f"saved {paths[1]}")
            common.notify("info", f"{PREFIX}: saved the refined model to {paths[1]}")

        return self._run(job, done)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self._timer.stop()
        super().closeEvent(event)
