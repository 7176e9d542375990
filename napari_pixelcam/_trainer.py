"""The PixelCAM trainer dock: trains in a child process, shows progress and curves.

Training runs as ``python -m pixelcam.cli train --json ...`` in a :class:`QProcess`, so the
viewer stays responsive, a crash of the child (or of CUDA) cannot take napari down, and
all GPU memory goes back when the child exits. The dock reads the child's JSON-lines events
(see :mod:`pixelcam.train.events`) into progress bars, a log and live matplotlib curves;
Cancel sends SIGINT (the run stops between two atomic checkpoint writes, ``last`` stays
loadable), then kills after a grace period; Resume relaunches with ``--resume``.

The form's lists come from the library's registries, never written out here: devices and
phases at once (torch-free), datasets, backbones (suggestions: any timm name is accepted),
heads, teacher maps and samplers when the viewer's session has read its catalogue (in a
worker thread, :mod:`napari_pixelcam._session`); until then such a list shows its current
value. Nothing heavy is imported or drawn on the GUI thread: matplotlib is imported by the
session's warm-up worker and the curves are drawn with Agg in a worker, shown as a picture;
torch only in the session's worker and in the child. A finished run goes into the session
("Load B-LOC into panel"), which the PixelCAM panel shows. Every failure becomes a napari
notification.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import time
import weakref
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QProcess, QProcessEnvironment, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_pixelcam import _common as common
from napari_pixelcam._reader import prefer_reader
from napari_pixelcam._session import Catalogue, Choices, devices, phases, session_for
from pixelcam.errors import InputError
from pixelcam.fileio import pid_alive
from pixelcam.train.recipes import RECIPES, recipe_settings

if TYPE_CHECKING:
    import napari

#: the form's own choice for the backbone weights (random init, ImageNet, a file)
WEIGHTS = ("none", "imagenet", "file")
#: form fields whose choices the session's catalogue gives (torch-importing registries)
CATALOGUE_FIELDS: dict[str, Callable[[Catalogue], Choices]] = {
    "dataset": lambda c: c.datasets,
    "backbone": lambda c: c.backbones,
    "head": lambda c: c.image_heads,
    "teacher_method": lambda c: c.maps.subset(c.baseline_maps),
    "sampler": lambda c: c.samplers,
    "teacher_views": lambda c: c.teacher_views,
    "pixel_head": lambda c: c.pixel_heads,
}
#: Seconds between Cancel's SIGINT and a hard kill of a child that did not stop.
CANCEL_GRACE_S = 15.0

#: Every setting of the form, with its default (the CLI's defaults; 0 = unset where noted).
DEFAULTS: dict[str, Any] = {
    "dataset": "synthetic",
    "data_root": "",
    "fold": 0,  # None = 'none'
    "folds_dir": "",
    "backbone": "resnet18",
    "weights": "none",
    "weights_file": "",
    "head": "gap",
    "phase": "baseline",
    "teacher": "",
    "teacher_method": "layercam",
    "teacher_checkpoint": common.BEST_LOC,
    "teacher_views": "single",
    "lam": 1.0,
    "n": 5,
    "sampler": "probability",
    "bg_fraction": 0.2,
    "annotations": "",
    "pixel_head": "linear",
    "positive_only": False,
    "epochs": 10,
    "batch_size": 32,
    "lr": 1e-3,
    "lr_step": 0,  # 0 = constant lr
    "device": "auto",
    "out": "",
    "resize": 256,
    "crop": 224,
    "eval_size": 224,
    "synthetic_n_per_class": 40,
    "synthetic_size": 256,
    "seed": 0,
    "num_workers": 0,
    "amp": True,
}

# live runs of every trainer dock of this process, by resolved output folder
_ACTIVE: weakref.WeakValueDictionary[str, TrainerWidget] = weakref.WeakValueDictionary()


_guarded = common.guarded("PixelCAM trainer")


def teacher_phases() -> tuple[str, ...]:
    """The phases that learn from a teacher run's CAM seeds (registry metadata)."""
    return phases().where(needs_teacher=True)


def pixel_head_phases() -> tuple[str, ...]:
    """The phases whose model has PixelCAM's pixel head (registry metadata)."""
    return phases().where(pixel_head=True)


def fold_datasets(catalogue: Catalogue | None) -> tuple[str, ...]:
    """The dataset readers that take fold files (registry metadata; none known before the
    catalogue is read)."""
    return catalogue.datasets.where(folds=True) if catalogue is not None else ()


def static_choices(key: str) -> Choices | None:
    """The choices of a form field known without the catalogue (None: from the catalogue,
    or a free field)."""
    if key == "phase":
        return phases()
    if key == "device":
        return devices()
    if key == "weights":
        return Choices("weights", WEIGHTS)
    if key == "teacher_checkpoint":
        return Choices("teacher checkpoint", common.RUN_CHECKPOINTS)
    return None


# ---------------------------------------------------------------------- pure helpers
def _cli_has_option(option: str) -> bool:
    """Whether ``pixelcam train`` accepts ``option`` (cheap: argparse only, no torch)."""
    from pixelcam.cli import build_parser

    parser = build_parser()
    for action in parser._subparsers._group_actions:  # noqa: SLF001 - argparse has no API
        train = getattr(action, "choices", {}).get("train")
        if train is not None:
            return option in train._option_string_actions  # noqa: SLF001
    return False


def validate_settings(settings: Mapping[str, Any], catalogue: Catalogue | None = None) -> None:
    """Fast checks before launching (the child validates everything again); raises
    :class:`InputError` naming the field. The choices of the catalogue's registries are
    checked when a ``catalogue`` is given (reading one imports torch)."""
    s = {**DEFAULTS, **settings}
    _validate_choices(s, catalogue)
    if s["dataset"] != "synthetic" and not s["data_root"]:
        raise InputError(f"dataset format {s['dataset']!r} needs a dataset folder")
    if s["data_root"] and s["dataset"] != "synthetic" and not Path(s["data_root"]).is_dir():
        raise InputError(f"dataset folder {s['data_root']} does not exist")
    if s["phase"] in teacher_phases() and not s["teacher"]:
        raise InputError(f"phase {s['phase']!r} needs a teacher (a baseline run folder)")
    if s["phase"] in teacher_phases() and not Path(s["teacher"]).exists():
        raise InputError(f"teacher {s['teacher']} does not exist")
    _validate_files(s)
    if s["folds_dir"] and not _cli_has_option("--folds-dir"):
        raise InputError(
            "this pixelcam version's 'train' has no --folds-dir option: leave 'folds dir' "
            "empty (the dataset's own folds/ folder is used)"
        )


def _validate_choices(s: Mapping[str, Any], catalogue: Catalogue | None) -> None:
    fields = {"phase": "phase", "device": "device", "weights": "weights"}
    if catalogue is not None:
        fields.update(
            dataset="format",
            head="head",
            sampler="sampler",
            pixel_head="pixel head",
            teacher_views="teacher views",
        )
    for key, label in fields.items():
        choices = static_choices(key)
        if choices is None:
            choices = CATALOGUE_FIELDS[key](catalogue)  # type: ignore[arg-type]
        if str(s[key]) not in choices:
            raise InputError(f"{label} must be one of {list(choices.names)}, got {s[key]!r}")


def _validate_files(s: Mapping[str, Any]) -> None:
    if s["weights"] == "file" and not s["weights_file"]:
        raise InputError("weights 'file' needs a weights file (.safetensors or .pt)")
    if s["weights"] == "file" and not Path(s["weights_file"]).is_file():
        raise InputError(f"weights file {s['weights_file']} does not exist")
    if s["annotations"] and not Path(s["annotations"]).exists():
        raise InputError(f"annotations {s['annotations']} do not exist")
    if not (isinstance(s["lr"], (int, float)) and s["lr"] > 0):
        raise InputError(f"learning rate must be a number > 0, got {s['lr']!r}")
    if int(s["crop"]) > int(s["resize"]):
        raise InputError(f"crop ({s['crop']}) must not exceed resize ({s['resize']})")


def build_train_command(settings: Mapping[str, Any], resume: bool = False) -> list[str]:
    """The child's argv: ``[python, -m, pixelcam.cli, train, --json, ...]``.

    A resume passes only the folder and the (possibly extended) number of epochs: the run's
    own ``config.json`` holds everything else.
    """
    s = {**DEFAULTS, **settings}
    out = str(Path(s["out"]).expanduser().resolve())
    cmd = [sys.executable, "-m", "pixelcam.cli", "train", "--json", "--out", out]
    if resume:
        return cmd + ["--resume", "--epochs", str(int(s["epochs"]))]

    return cmd + _data_args(s) + _model_args(s) + _teacher_args(s) + _training_args(s)


def _path(s: Mapping[str, Any], key: str) -> str:
    return str(Path(s[key]).expanduser().resolve())


def _data_args(s: Mapping[str, Any]) -> list[str]:
    cmd = ["--dataset", s["dataset"]]
    if s["data_root"]:
        cmd += ["--data-root", _path(s, "data_root")]
    # readers without folds ignore --fold (pixelcam.data.split_options)
    cmd += ["--fold", "none" if s["fold"] is None else str(int(s["fold"]))]
    if s["folds_dir"]:
        cmd += ["--folds-dir", _path(s, "folds_dir")]
    if s["dataset"] == "synthetic":
        cmd += [
            "--synthetic-n-per-class", str(int(s["synthetic_n_per_class"])),
            "--synthetic-size", str(int(s["synthetic_size"])),
        ]  # fmt: skip
    return cmd


def _model_args(s: Mapping[str, Any]) -> list[str]:
    cmd = ["--phase", s["phase"], "--backbone", str(s["backbone"]).strip(), "--head", s["head"]]
    if s["weights"] == "imagenet":
        cmd += ["--weights", "imagenet"]
    elif s["weights"] == "file":
        cmd += ["--weights", _path(s, "weights_file")]
    return cmd


def _teacher_args(s: Mapping[str, Any]) -> list[str]:
    """The options of the phases that learn from a teacher's seeds (PixelCAM adds its
    pixel head's)."""
    if s["phase"] not in teacher_phases():
        return []
    cmd = [
        "--teacher", _path(s, "teacher"), "--teacher-method", s["teacher_method"],
        "--teacher-checkpoint", s["teacher_checkpoint"], "--teacher-views", s["teacher_views"],
        "--n", str(int(s["n"])),
        "--sampler", s["sampler"], "--bg-fraction", repr(float(s["bg_fraction"])),
    ]  # fmt: skip
    if s["annotations"]:
        cmd += ["--annotations", _path(s, "annotations")]
    if s["phase"] in pixel_head_phases():
        cmd += ["--lam", repr(float(s["lam"])), "--pixel-head", s["pixel_head"]]
        if s["positive_only"]:
            cmd.append("--positive-only")
    return cmd


def _training_args(s: Mapping[str, Any]) -> list[str]:
    cmd = [
        "--epochs", str(int(s["epochs"])), "--batch-size", str(int(s["batch_size"])),
        "--lr", repr(float(s["lr"])), "--device", s["device"], "--resize", str(int(s["resize"])),
        "--crop", str(int(s["crop"])), "--eval-size", str(int(s["eval_size"])),
        "--seed", str(int(s["seed"])), "--num-workers", str(int(s["num_workers"])),
    ]  # fmt: skip
    if int(s["lr_step"]) > 0:
        cmd += ["--lr-step", str(int(s["lr_step"]))]
    if not s["amp"]:
        cmd.append("--no-amp")
    return cmd


def lock_holder(out: str | Path) -> int | None:
    """The pid in ``out/.lock`` when that process is alive, else None (no or stale lock)."""
    lock = Path(out) / ".lock"
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and pid_alive(pid) else None


# ---------------------------------------------------------------------- small widgets
class PathEdit(QWidget):
    """A path line edit with a browse button (``mode``: dir, file, or any = menu of both).
    ``picked`` fires when the user commits a new path (Enter, focus out, the browse dialog)."""

    picked = Signal(str)

    def __init__(self, mode: str = "dir", filter: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.mode, self.filter = mode, filter
        self.line = QLineEdit()
        self.line.setPlaceholderText(placeholder)
        self.line.setClearButtonEnabled(True)
        self.button = QToolButton()
        self.button.setText("…")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.line, 1)
        layout.addWidget(self.button)
        if mode == "any":
            menu = QMenu(self.button)
            menu.addAction("File…", lambda: self._browse("file"))
            menu.addAction("Folder…", lambda: self._browse("dir"))
            self.button.setMenu(menu)
            self.button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        else:
            self.button.clicked.connect(lambda: self._browse(mode))
        self._committed = ""
        self.line.editingFinished.connect(self._commit)

    @property
    def value(self) -> str:
        return self.line.text().strip()

    @value.setter
    def value(self, text: str | os.PathLike | None) -> None:
        self.line.setText("" if text is None else str(text))

    def _browse(self, mode: str) -> None:
        start = self.value or str(Path.home())
        if mode == "dir":
            chosen = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, "Choose a file", start, self.filter)
        if chosen:
            self.value = chosen
            self._commit()

    def _commit(self) -> None:
        if self.value != self._committed:  # a focus change alone is no new choice
            self._committed = self.value
            self.picked.emit(self.value)


def _combo(choices: tuple[str, ...], editable: bool = False) -> QComboBox:
    box = QComboBox()
    box.addItems(list(choices))
    box.setEditable(editable)
    return box


def _fill(box: QComboBox, choices: Choices, default: str) -> None:
    """Refill a combo with registry entries (their helps as tooltips), keeping its value
    (an alias becomes its entry's name; an editable combo keeps any text; an unknown value
    of another combo becomes ``default``)."""
    current = box.currentText().strip()
    box.blockSignals(True)
    try:
        box.clear()
        for i, name in enumerate(choices.names):
            box.addItem(name)
            if choices.help.get(name):
                box.setItemData(i, choices.help[name], Qt.ItemDataRole.ToolTipRole)
        value = choices.canonical(current) or (current if box.isEditable() else default)
        index = box.findText(value)
        if index >= 0:
            box.setCurrentIndex(index)
        else:
            box.setEditText(value)
    finally:
        box.blockSignals(False)


def _spin(value: int, lo: int, hi: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    return box


#: model fields a phase that starts from its teacher takes from the teacher run
TEACHER_FIELDS = ("backbone", "weights", "weights_file", "head")
FIELD_TIPS = {
    "backbone": "a timm model name; the list holds the documented ones",
    "teacher_views": "the teacher CAMs the seeds come from, averaged over flips (and scales "
    "0.75, 1, 1.25 for multiscale); computed once per run",
}


def _set_row_visible(form: QFormLayout, field: QWidget, visible: bool) -> None:
    label = form.labelForField(field)
    field.setVisible(visible)
    if label is not None:
        label.setVisible(visible)


# ---------------------------------------------------------------------- the dock
class TrainerWidget(QWidget):
    """Dock for training baseline and PixelCAM models (``pixelcam train`` in a child)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.process: QProcess | None = None
        self.run_out: Path | None = None
        self.events: list[dict[str, Any]] = []  # this run's events, steps excluded
        self.last_step: dict[str, Any] | None = None
        self.history: dict[int, dict[str, Any]] = {}  # epoch -> metrics (curves)
        self.exit_code: int | None = None
        self.figure = None
        self.canvas = None
        self._drawing = self._draw_again = False  # a worker draws the curves
        self._stdout_buf = ""
        self._stderr_buf = ""
        self._cancelled = False
        self.done_event: dict[str, Any] | None = None  # the run's 'done' event
        self._last_error: str | None = None
        self._last_stderr: str | None = None
        self._grace_s = CANCEL_GRACE_S
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill_now)
        self._build_ui()
        self.set_settings(**DEFAULTS)
        self._update_visibility()
        self._update_buttons()
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._shutdown)
        self.session.events.catalogue.connect(self._on_catalogue)  # held weakly
        self.session.events.training_request.connect(self.prefill)
        if self.session.catalogue is not None:
            self._on_catalogue()
        # the registries read, matplotlib imported and a first figure drawn, in workers
        # (the session's warm-up): a curve is then built here and drawn in a worker
        common.load_libraries(self, self.session, viewer=self.viewer)
        prefer_reader()  # File > Open of a PNG/TIFF no longer asks which reader
        if self.session.training_request:
            self.prefill(self.session.training_request)

    # ------------------------------------------------------------------ layout
    def _build_ui(self) -> None:
        """Buttons on top (always in view), then two tabs: the form (its groups in a
        scroll area, advanced options folded) and the run (progress, live curves, log), so
        the curves are in view while a run trains, without scrolling past the form."""
        self.fields = self._build_fields()
        form = QWidget()
        form_layout = QVBoxLayout(form)
        form_layout.setContentsMargins(2, 2, 2, 2)
        for w in self._build_groups():
            form_layout.addWidget(w)
        form_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(form)
        run = QWidget()
        run_layout = QVBoxLayout(run)
        run_layout.setContentsMargins(2, 2, 2, 2)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self._build_actions(outer, run_layout)
        self.tabs = QTabWidget()
        self.tabs.addTab(scroll, "Settings")
        self.tabs.addTab(run, "Run")
        outer.addWidget(self.tabs, 1)
        self.setMinimumWidth(300)
        self.setMinimumHeight(260)  # three docks share a 1000 px screen: none a strip
        self._connect_ui()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        common.balance_docks(self)  # the docks share the dock area's height

    def sizeHint(self) -> Any:  # noqa: N802 (Qt's name)
        """Room for the buttons and the curves (the panel shares the dock area)."""
        from qtpy.QtCore import QSize

        return QSize(360, 460)

    def _choice_box(self, key: str) -> QComboBox:
        """A combo of a choice field: its registry's entries, or, for a catalogue field
        not read yet, its default alone (filled by :meth:`_on_catalogue`)."""
        choices = static_choices(key)
        if choices is None:
            return _combo((DEFAULTS[key],), editable=key == "backbone")
        box = _combo(())
        _fill(box, choices, DEFAULTS[key])
        return box

    def _build_fields(self) -> dict[str, QWidget]:
        f: dict[str, QWidget] = {}
        for key in (*CATALOGUE_FIELDS, "phase", "device", "weights", "teacher_checkpoint"):
            f[key] = self._choice_box(key)
        for key, tip in FIELD_TIPS.items():
            f[key].setToolTip(tip)
        f["data_root"] = PathEdit("dir", placeholder="synthetic: generated in the run folder")
        f["fold"] = _spin(0, -1, 99)
        f["fold"].setSpecialValueText("none")
        f["folds_dir"] = PathEdit("dir", placeholder="default: <dataset>/folds")
        f["weights_file"] = PathEdit("file", filter="Weights (*.safetensors *.pt *.pth)")
        f["teacher"] = PathEdit("dir", placeholder="baseline run folder")
        f["lam"] = QDoubleSpinBox()
        f["lam"].setRange(0.0, 1000.0)
        f["lam"].setDecimals(3)
        f["lam"].setSingleStep(0.1)
        f["n"] = _spin(5, 1, 10000)
        f["bg_fraction"] = QDoubleSpinBox()
        f["bg_fraction"].setRange(0.01, 1.0)
        f["bg_fraction"].setDecimals(2)
        f["bg_fraction"].setSingleStep(0.05)
        f["bg_fraction"].setToolTip(
            "share of lowest-CAM pixels background seeds come from (probability, extremes; "
            "extremes draws foreground seeds from the highest share)"
        )
        f["annotations"] = PathEdit(
            "any", filter="Point annotations (*.points.csv *.points.json *.csv *.json)",
            placeholder="optional: .points.csv/.json or a folder",
        )  # fmt: skip
        f["positive_only"] = QCheckBox("pixel loss on positive images only")
        f["epochs"] = _spin(10, 1, 100000)
        f["batch_size"] = _spin(32, 1, 4096)
        f["lr"] = QLineEdit()
        f["lr_step"] = _spin(0, 0, 100000)
        f["lr_step"].setSpecialValueText("constant")
        f["out"] = PathEdit("dir", placeholder="default: ~/pixelcam-runs/<phase>-<time>")
        f["resize"] = _spin(256, 8, 8192)
        f["crop"] = _spin(224, 8, 8192)
        f["eval_size"] = _spin(224, 8, 8192)
        f["synthetic_n_per_class"] = _spin(40, 1, 100000)
        f["synthetic_size"] = _spin(256, 16, 8192)
        f["seed"] = _spin(0, 0, 2**31 - 1)
        f["num_workers"] = _spin(0, 0, 64)
        f["amp"] = QCheckBox("mixed precision on CUDA")
        return f

    def _build_groups(self) -> list[QWidget]:
        f = self.fields

        def group(title: str, rows: list[tuple[str, str]]) -> tuple[QGroupBox, QFormLayout]:
            box = QGroupBox(title)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for label, key in rows:
                form.addRow(label, f[key])
            return box, form

        data_box, self._data_form = group(
            "Data",
            [("dataset folder", "data_root"), ("format", "dataset"), ("fold", "fold"),
             ("folds dir", "folds_dir")],
        )  # fmt: skip
        self.recipe_button = QPushButton("Use the recipe for this dataset")
        self._data_form.addRow("", self.recipe_button)
        model_box, self._model_form = group(
            "Model",
            [("backbone", "backbone"), ("weights", "weights"), ("weights file", "weights_file"),
             ("head", "head"), ("phase", "phase")],
        )  # fmt: skip
        self.pixelcam_box, self._pixelcam_form = group(
            "PixelCAM (phase 2)",
            [("teacher run", "teacher"), ("teacher method", "teacher_method"),
             ("teacher views", "teacher_views"), ("lambda", "lam"), ("n (seeds)", "n"),
             ("sampler", "sampler"), ("seed share", "bg_fraction"),
             ("annotations", "annotations")],
        )  # fmt: skip
        train_box, _ = group(
            "Training",
            [("epochs", "epochs"), ("batch size", "batch_size"), ("learning rate", "lr"),
             ("device", "device"), ("output folder", "out")],
        )  # fmt: skip
        self.advanced_box, self._advanced_form = group(
            "Advanced",
            [("resize", "resize"), ("crop", "crop"), ("eval size", "eval_size"),
             ("synthetic n/class", "synthetic_n_per_class"),
             ("synthetic size", "synthetic_size"), ("seed", "seed"), ("lr step", "lr_step"),
             ("teacher ckpt", "teacher_checkpoint"), ("pixel head", "pixel_head"),
             ("", "positive_only"), ("workers", "num_workers"), ("", "amp")],
        )  # fmt: skip
        self.show_advanced = QCheckBox("advanced options")
        self.show_advanced.setToolTip("input sizes, seed, lr schedule, workers, precision")
        return [data_box, model_box, self.pixelcam_box, train_box, self.show_advanced,
                self.advanced_box]  # fmt: skip

    def _build_actions(self, top: QVBoxLayout, run: QVBoxLayout) -> None:
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.resume_button = QPushButton("Resume")
        self.load_loc_button = QPushButton("Load B-LOC into panel")
        self.load_cl_button = QPushButton("Load B-CL into panel")
        self.start_button.setToolTip("train with these settings in a new output folder")
        self.cancel_button.setToolTip("stop the run; its last checkpoint stays usable")
        self.resume_button.setToolTip("continue the run in the output folder (up to 'epochs')")
        self.epoch_bar = QProgressBar()
        self.epoch_bar.setFormat("epoch %v / %m")
        self.step_bar = QProgressBar()
        self.step_bar.setFormat("step %v / %m")
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.log_box = QPlainTextEdit()
        self.log_box.setReadOnly(True)
        self.log_box.setMaximumBlockCount(5000)
        self.log_box.setMinimumHeight(40)
        self.curves_box = QWidget()
        self._curves_layout = QVBoxLayout(self.curves_box)
        self._curves_layout.setContentsMargins(0, 0, 0, 0)
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.resume_button):
            row1.addWidget(b)
        for b in (self.load_loc_button, self.load_cl_button):
            row2.addWidget(b)
        top.addLayout(row1)
        top.addLayout(row2)
        top.addWidget(self.status)
        bars = QHBoxLayout()
        bars.addWidget(self.epoch_bar)
        bars.addWidget(self.step_bar)
        run.addLayout(bars)
        run.addWidget(self.curves_box, 4)
        run.addWidget(self.log_box, 1)

    def _connect_ui(self) -> None:
        f = self.fields
        f["dataset"].currentIndexChanged.connect(lambda _=None: self._update_visibility())
        f["weights"].currentIndexChanged.connect(lambda _=None: self._update_visibility())
        f["phase"].currentIndexChanged.connect(lambda _=None: self._update_visibility())
        self.show_advanced.toggled.connect(lambda _=None: self._update_visibility())
        self.recipe_button.clicked.connect(lambda: self.use_recipe())
        f["out"].line.textChanged.connect(lambda _=None: self._update_buttons())
        f["out"].picked.connect(lambda _=None: self.load_run_settings())
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(lambda: self.cancel())
        self.resume_button.clicked.connect(lambda: self.resume())
        self.load_loc_button.clicked.connect(lambda: self.load_into_panel(common.BEST_LOC))
        self.load_cl_button.clicked.connect(lambda: self.load_into_panel(common.BEST_CL))

    def _update_visibility(self) -> None:
        f = self.fields
        dataset = f["dataset"].currentText()
        official = dataset in fold_datasets(self.session.catalogue)
        _set_row_visible(self._data_form, f["fold"], official)
        _set_row_visible(self._data_form, f["folds_dir"], official)
        _set_row_visible(self._model_form, f["weights_file"], f["weights"].currentText() == "file")
        phase = f["phase"].currentText()
        seeded = phase in teacher_phases()
        self.pixelcam_box.setVisible(seeded)
        self._from_teacher(seeded)
        pixel = phase in pixel_head_phases()
        self.pixelcam_box.setTitle("PixelCAM (phase 2)" if pixel else f"{phase.upper()} seeds")
        _set_row_visible(self._pixelcam_form, f["lam"], pixel)
        self.advanced_box.setVisible(self.show_advanced.isChecked())
        synthetic = dataset == "synthetic"
        _set_row_visible(self._advanced_form, f["synthetic_n_per_class"], synthetic)
        recipe = recipe_settings(dataset, phase)
        _set_row_visible(self._data_form, self.recipe_button, bool(recipe))
        if recipe:
            told = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in recipe.items())
            self.recipe_button.setText(f"Use the {dataset} recipe for {phase}")
            self.recipe_button.setToolTip(f"{RECIPES.entry(dataset).help}\n{told}")
        _set_row_visible(self._advanced_form, f["synthetic_size"], synthetic)

    def _from_teacher(self, seeded: bool) -> None:
        """A phase that starts from its teacher trains the teacher's backbone, weights and
        head whatever the form says: those fields are greyed out and say so."""
        for key in TEACHER_FIELDS:
            field = self.fields[key]
            field.setEnabled(not seeded)
            label = self._model_form.labelForField(field)
            if label is not None:
                label.setEnabled(not seeded)
            if seeded:
                field.setToolTip("taken from the teacher run in this phase")
            else:
                field.setToolTip(FIELD_TIPS.get(key, ""))

    # ------------------------------------------------------------------ settings
    def use_recipe(self) -> dict[str, Any]:
        """Fill the form with the recipe of the chosen dataset and phase
        (:mod:`pixelcam.train.recipes`, as ``pixelcam train`` uses by default)."""
        dataset, phase = self.fields["dataset"].currentText(), self.fields["phase"].currentText()
        values = {k: v for k, v in recipe_settings(dataset, phase).items() if k in self.fields}
        self.set_settings(**values)
        self._update_visibility()
        if values:
            self.status.setText(f"{dataset} recipe set for {phase}: {RECIPES.entry(dataset).help}")
        return values

    @_guarded
    def prefill(self, request: Mapping[str, Any] | None = None) -> None:
        """Fill the form for a training on the user's images ("Train on my images" in the
        panel): their folder and format, a fresh output folder, the Settings tab shown."""
        if not request or self.process is not None:
            return
        values = {k: v for k, v in request.items() if k in self.fields}
        values.setdefault("phase", "baseline")
        values["out"] = ""
        self.set_settings(**values)
        self._update_visibility()
        recipe = self.use_recipe()  # a dataset with a measured recipe starts from it
        self.tabs.setCurrentIndex(0)
        self.status.setText(
            f"set up for your images in {request.get('data_root')}"
            + (f" with the {values.get('dataset')} recipe" if recipe else "")
            + ": check the format and folds, then Start (a baseline first; a PixelCAM run "
            "learns from it)"
        )

    def settings(self) -> dict[str, Any]:
        """The form's values, typed (``fold`` None = 'none'; raises InputError on a bad lr)."""
        out: dict[str, Any] = {}
        for key, w in self.fields.items():
            if isinstance(w, PathEdit):
                out[key] = w.value
            elif isinstance(w, QComboBox):
                out[key] = w.currentText().strip()
            elif isinstance(w, QSpinBox):
                out[key] = w.value()
            elif isinstance(w, QDoubleSpinBox):
                out[key] = float(w.value())
            elif isinstance(w, QCheckBox):
                out[key] = w.isChecked()
            elif isinstance(w, QLineEdit):
                out[key] = w.text().strip()
        if out["fold"] < 0:
            out["fold"] = None
        try:
            out["lr"] = float(out["lr"])
        except ValueError:
            raise InputError(f"learning rate must be a number, got {out['lr']!r}") from None
        return out

    def set_settings(self, **values: Any) -> None:
        """Fill form fields by setting name (see :data:`DEFAULTS`)."""
        unknown = sorted(set(values) - set(self.fields))
        if unknown:
            raise TypeError(f"unknown trainer settings: {', '.join(unknown)}")
        for key, value in values.items():
            w = self.fields[key]
            if isinstance(w, PathEdit):
                w.value = value
            elif isinstance(w, QComboBox):
                self._set_choice(key, w, str(value))
            elif isinstance(w, QSpinBox):
                w.setValue(-1 if value is None else int(value))
            elif isinstance(w, QDoubleSpinBox):
                w.setValue(float(value))
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QLineEdit):
                w.setText(f"{value:g}" if isinstance(value, float) else str(value))

    def _choices(self, key: str) -> Choices | None:
        """A choice field's registry entries (None: the catalogue is not read yet)."""
        static = static_choices(key)
        if static is not None:
            return static
        catalogue = self.session.catalogue
        return CATALOGUE_FIELDS[key](catalogue) if catalogue is not None else None

    def _set_choice(self, key: str, box: QComboBox, value: str) -> None:
        choices = self._choices(key)
        if choices is not None:
            value = choices.canonical(value) or value  # an alias ('pb') -> its name
        index = box.findText(value)
        if index >= 0:
            box.setCurrentIndex(index)
        elif box.isEditable():
            box.setEditText(value)
        elif choices is None:  # kept until the catalogue is read, then checked
            box.clear()
            box.addItem(value)
        else:
            raise ValueError(f"{key} must be one of {list(choices.names)}")

    def _on_catalogue(self, _catalogue: Any = None) -> None:
        """The session read the registries: the catalogue fields get their lists."""
        try:
            for key in CATALOGUE_FIELDS:
                choices = self._choices(key)
                if choices is not None:
                    _fill(self.fields[key], choices, DEFAULTS[key])
            self._update_visibility()
        except RuntimeError:  # the dock was closed meanwhile
            return

    @_guarded
    def load_run_settings(self, out: str | Path | None = None) -> bool:
        """Fill the form from the ``config.json`` of an existing run folder (default: the
        output folder), so that Resume and a new run start from what that run used."""
        if self.process is not None:
            return False
        folder = Path(out).expanduser() if out is not None else self.output_folder()
        config = common.read_json(folder / "config.json") if folder is not None else {}
        if not config:
            return False
        values = {k: v for k, v in config.items() if k in self.fields and k != "out"}
        for key in ("data_root", "folds_dir", "teacher", "annotations"):
            values[key] = values.get(key) or ""
        values["lr_step"] = values.get("lr_step") or 0
        weights = config.get("weights")
        values["weights"] = (
            "none" if not weights else "imagenet" if weights == "imagenet" else "file"
        )
        values["weights_file"] = weights if values["weights"] == "file" else ""
        for key, value in values.items():
            with contextlib.suppress(ValueError, TypeError):  # unknown to the form: kept
                self.set_settings(**{key: value})
        self._update_visibility()
        self._log(f"settings of the run in {folder} loaded into the form")
        return True

    def output_folder(self) -> Path | None:
        text = self.fields["out"].value
        return Path(text).expanduser().resolve() if text else None

    # ------------------------------------------------------------------ runs
    @property
    def running(self) -> bool:
        return self.process is not None

    @_guarded
    def start(self, **overrides: Any) -> bool:
        """Start a new run with the form's settings (``overrides`` fill fields first).
        Returns whether a child was launched; refusals are notifications."""
        if overrides:
            self.set_settings(**overrides)
        try:
            s = self.settings()
            validate_settings(s, self.session.catalogue)
            if not s["out"]:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                s["out"] = str(Path.home() / "pixelcam-runs" / f"{s['phase']}-{stamp}")
                self.set_settings(out=s["out"])
            out = Path(s["out"]).expanduser().resolve()
            self._check_free(out)
            if (out / "resume" / "resume.json").exists():
                raise InputError(
                    f"{out} already holds a run: press Resume to continue it, or choose "
                    "another output folder"
                )
            cmd = build_train_command(s)
        except InputError as exc:
            common.notify("error", f"PixelCAM trainer: {exc}")
            return False
        self.history.clear()
        self._launch(cmd, out)
        self._redraw()
        self.tabs.setCurrentIndex(1)  # the run: progress and live curves
        return True

    @_guarded
    def resume(self, **overrides: Any) -> bool:
        """Continue the run in the output folder (``--resume``), up to 'epochs' epochs."""
        if overrides:
            self.set_settings(**overrides)
        try:
            s = self.settings()
            out = self.output_folder()
            if out is None:
                raise InputError("choose the output folder of the run to resume")
            if not (out / "config.json").is_file():
                raise InputError(f"nothing to resume in {out} (no config.json)")
            self._check_free(out)
            cmd = build_train_command({**s, "out": str(out)}, resume=True)
        except InputError as exc:
            common.notify("error", f"PixelCAM trainer: {exc}")
            return False
        seen = self.history if self.run_out == out else {}  # events of the first part
        self.history = {**seen, **{int(m["epoch"]): m for m in _read_history(out)}}
        self._launch(cmd, out)
        self.tabs.setCurrentIndex(1)
        if self.history:  # where the first part stopped, until the child reports
            self.epoch_bar.setRange(0, max(int(s["epochs"]), max(self.history)))
            self.epoch_bar.setValue(max(self.history))
        self._redraw()
        return True

    def _check_free(self, out: Path) -> None:
        if self.process is not None:
            raise InputError(
                f"a training is already running from this dock (in {self.run_out}); "
                "cancel it or wait for it to finish"
            )
        other = _ACTIVE.get(str(out))
        if other is not None and other.running:
            raise InputError(f"{out} is in use by a training started from another trainer dock")
        pid = lock_holder(out)
        if pid is not None:
            raise InputError(
                f"{out} is in use by a running training (pid {pid}); wait for it, cancel it, "
                "or choose another output folder"
            )

    def _launch(self, cmd: list[str], out: Path) -> None:
        self.events, self.last_step, self.exit_code = [], None, None
        self._stdout_buf = self._stderr_buf = ""
        self._cancelled, self.done_event, self._last_error = False, None, None
        self._last_stderr = None
        self.epoch_bar.setRange(0, 1)
        self.epoch_bar.setValue(0)
        self.step_bar.setRange(0, 1)
        self.step_bar.setValue(0)
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.setProgram(cmd[0])
        proc.setArguments(cmd[1:])
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_process_error)
        self.process, self.run_out = proc, out
        _ACTIVE[str(out)] = self
        self._log(f"$ {shlex.join(cmd)}")
        self.status.setText(f"starting in {out} …")
        proc.start()
        self._update_buttons()

    @_guarded
    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> bool:
        """Stop the run: SIGINT (the child finishes its current write and exits), then a
        hard kill after ``grace_s`` seconds."""
        proc = self.process
        if proc is None:
            common.notify("info", "PixelCAM trainer: no training is running")
            return False
        self._cancelled = True
        self.status.setText("cancelling …")
        self._log("cancelling (SIGINT); the last checkpoint is kept")
        pid = int(proc.processId())
        if os.name == "posix" and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        else:
            proc.terminate()
        self._grace_s = grace_s
        self._kill_timer.start(int(grace_s * 1000))
        return True

    def _kill_now(self) -> None:
        if self.process is not None:
            self._log(f"the child did not stop within {self._grace_s:g} s: killed")
            self.process.kill()

    def wait(self, timeout: float = 600.0) -> bool:
        """Block (processing Qt events) until the run ends; for scripts. True if it ended."""
        t0 = time.monotonic()
        while self.process is not None and time.monotonic() - t0 < timeout:
            QApplication.processEvents()
            time.sleep(0.01)
        return self.process is None

    def _shutdown(self) -> None:
        """napari quits: stop the child gracefully, kill it if it lingers."""
        proc = self.process
        if proc is None:
            return
        self._cancelled = True
        with contextlib.suppress(Exception):
            if os.name == "posix":
                os.kill(int(proc.processId()), signal.SIGINT)
            else:
                proc.terminate()
            if not proc.waitForFinished(5000):
                proc.kill()
                proc.waitForFinished(2000)

    # ------------------------------------------------------------------ child output
    @_guarded
    def _read_stdout(self) -> None:
        if self.process is None:
            return
        self._stdout_buf += bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        *lines, self._stdout_buf = self._stdout_buf.split("\n")
        for line in lines:
            self._handle_line(line)

    @_guarded
    def _read_stderr(self) -> None:
        if self.process is None:
            return
        self._stderr_buf += bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        *lines, self._stderr_buf = self._stderr_buf.split("\n")
        for line in lines:
            self._stderr_line(line)

    def _stderr_line(self, line: str) -> None:
        line = line.rstrip()
        if line:
            self._log(line)
            self._last_stderr = line

    def _handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self._log(line)
            return
        if isinstance(event, dict) and "event" in event:
            self.handle_event(event)
        else:
            self._log(line)

    def handle_event(self, ev: dict[str, Any]) -> None:
        """Show one training event (see :mod:`pixelcam.train.events`)."""
        kind = ev.get("event")
        if kind == "step":
            self.last_step = ev
            steps = max(int(ev.get("steps") or 1), 1)
            self.step_bar.setRange(0, steps)
            self.step_bar.setValue(min(int(ev.get("step") or 0), steps))
            loss = ev.get("loss")
            epochs = self.epoch_bar.maximum()
            self.status.setText(
                f"epoch {ev.get('epoch')}/{epochs} · step {ev.get('step')}/{steps}"
                + (f" · loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
            )
            return
        self.events.append(ev)
        if kind == "start":
            self.epoch_bar.setRange(0, max(int(ev.get("epochs") or 1), 1))
            self.step_bar.setRange(0, max(int(ev.get("steps") or 1), 1))
            self.step_bar.setValue(0)
            self._log(ev.get("message") or "started")
            self.status.setText("evaluating before training …")
        elif kind == "epoch":
            epoch, epochs = int(ev.get("epoch", 0)), max(int(ev.get("epochs") or 1), 1)
            self.epoch_bar.setRange(0, epochs)
            self.epoch_bar.setValue(min(epoch, epochs))
            metrics = dict(ev.get("metrics") or {})
            metrics["epoch"] = epoch
            self.history[epoch] = metrics
            self._log(f"epoch {epoch}/{epochs}: {_summary(metrics)}")
            self.status.setText(f"epoch {epoch}/{epochs} done: {_summary(metrics)}")
            self._redraw()
        elif kind == "checkpoint":
            self._log(f"saved {ev.get('name')} (epoch {ev.get('epoch')})")
        elif kind == "done":
            self.done_event = ev
            self.epoch_bar.setValue(self.epoch_bar.maximum())
            self._log(ev.get("message") or "done")
        elif kind == "error":
            self._last_error = ev.get("message") or ev.get("kind") or "error"
            self._log(f"error: {self._last_error}")
        elif kind == "log":
            self._log(ev.get("message") or "")

    @_guarded
    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.process is not None:
            msg = self.process.errorString()
            self._finish_run()
            self.status.setText("could not start")
            common.notify("error", f"PixelCAM trainer: could not start the training: {msg}")

    @_guarded
    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        if self.process is None:
            return
        self._read_stdout()
        self._read_stderr()
        if self._stdout_buf:
            self._handle_line(self._stdout_buf)
        if self._stderr_buf:
            self._stderr_line(self._stderr_buf)
        self._stdout_buf = self._stderr_buf = ""
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        self.exit_code = None if crashed else int(exit_code)
        out = self.run_out
        self._finish_run()
        if self.done_event is not None:
            self.status.setText(f"finished: {out}")
            common.notify(
                "info",
                f"PixelCAM trainer: training finished in {out}; "
                "'Load B-LOC into panel' uses its best localization model",
            )
        elif self._cancelled:
            done = max((e for e in self.history if e > 0), default=0)
            self.status.setText(f"cancelled after epoch {done}")
            self._log(f"cancelled after epoch {done}: Resume continues the run")
            common.notify(
                "info",
                f"PixelCAM trainer: cancelled after epoch {done}; checkpoints stay in {out} "
                "(Resume continues)",
            )
        else:
            why = self._last_error or self._last_stderr
            why = why or ("the child crashed" if crashed else f"exit code {exit_code}")
            self.status.setText(f"failed: {why}")
            common.notify("error", f"PixelCAM trainer: training failed: {why}")

    def _finish_run(self) -> None:
        self._kill_timer.stop()
        proc, self.process = self.process, None
        if self.run_out is not None and _ACTIVE.get(str(self.run_out)) is self:
            del _ACTIVE[str(self.run_out)]
        if proc is not None:
            proc.deleteLater()
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.process is not None
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        out = self.output_folder()
        for name, button in (
            (common.BEST_LOC, self.load_loc_button),
            (common.BEST_CL, self.load_cl_button),
        ):
            button.setEnabled(out is not None and (out / f"{name}.json").is_file())

    def _log(self, text: str) -> None:
        self.log_box.appendPlainText(text)

    # ------------------------------------------------------------------ curves
    def _ensure_canvas(self) -> None:
        """The curves' picture (a label): the figure is drawn in a worker, never on the
        GUI thread (a draw of two axes takes hundreds of milliseconds on a small CPU)."""
        if self.canvas is not None:
            return
        from qtpy.QtWidgets import QSizePolicy

        colors = common.theme_colors(self.viewer)
        self._fg, self._bg = colors.text, colors.foreground
        self.canvas = _Picture(self._redraw)
        self.canvas.setMinimumHeight(120)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.canvas.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._curves_layout.addWidget(self.canvas)

    def _redraw(self) -> None:
        """Build the curves' figure (cheap) and draw it in a worker (:func:`rasterize`)."""
        if not self.history:
            if self.canvas is not None:  # a new run: no stale curves
                self.canvas.clear()
                self.figure = None
            return
        self._ensure_canvas()
        self.figure = curves_figure(self.history, self._fg, self._bg)
        if self._drawing:
            self._draw_again = True  # the newest figure is drawn when this one is done
            return
        self._drawing, self._draw_again = True, False
        width = max(self.canvas.width(), 240)  # drawn at the size it is shown at
        height = max(self.canvas.height(), 120)
        job = partial(rasterize, self.figure, width, height)
        common.in_worker(job, self._show_picture, self._picture_failed)

    def _show_picture(self, picture: tuple[bytes, int, int]) -> None:
        from qtpy.QtGui import QImage, QPixmap

        self._drawing = False
        data, width, height = picture
        try:
            image = QImage(data, width, height, 4 * width, QImage.Format.Format_RGBA8888)
            self.canvas.setPixmap(QPixmap.fromImage(image.copy()))
        except RuntimeError:  # the dock was closed meanwhile
            return
        if self._draw_again:
            self._redraw()

    def _picture_failed(self, exc: BaseException) -> None:
        self._drawing = False
        self._log(f"could not draw the curves: {exc}")

    def curve_points(self) -> dict[str, list[tuple[float, float]]]:
        """The plotted points, by curve label (for checks and scripts)."""
        if self.figure is None:
            return {}
        out: dict[str, list[tuple[float, float]]] = {}
        for ax in self.figure.axes:
            for line in ax.lines:
                out[line.get_label()] = list(
                    zip(map(float, line.get_xdata()), map(float, line.get_ydata()))
                )
        return out

    # ------------------------------------------------------------------ results
    @_guarded
    def load_into_panel(self, which: str = common.BEST_LOC) -> Path | None:
        """Put the run's ``which`` checkpoint into the session, which the PixelCAM panel
        shows (docking the panel if needed).

        EVERY model field is set from the run, so the prediction and the maps the panel
        shows are the trained model's: a PixelCAM run becomes the 'PixelCAM model' (its
        teacher checkpoint, when it exists, the 'baseline model'; no reference models); a
        baseline run the 'baseline model' (no PixelCAM or reference model: its own head
        gives the prediction); a NEGEV or U-Net run the only reference model (NEGEV's
        teacher the baseline) and its map is selected
        (:meth:`~napari_pixelcam._session.Session.use_trained`).
        """
        out = self.output_folder()
        path = out / f"{which}.json" if out is not None else None
        if path is None or not path.is_file():
            common.notify(
                "error", f"PixelCAM trainer: no {which} checkpoint in {out or '(no folder)'}"
            )
            return None
        config = common.read_json(out / "config.json")
        phase = str(config.get("phase") or "baseline")
        label = common.RUN_CHECKPOINT_LABELS.get(which, which)
        where = self.session.use_trained(path, phase, teacher=_teacher_checkpoint(config))
        self.viewer.window.add_plugin_dock_widget(common.PLUGIN, common.PANEL_NAME)
        others = "the other model fields set from this run (or emptied)"
        if where == "references":
            message = f"{phase} {label} model {path} is the panel's only reference model; {others}"
        elif where == "pixelcam":
            message = f"{label} model {path} is the panel's PixelCAM model; {others}"
        else:
            message = f"baseline {label} model {path} is the panel's baseline model; {others}"
        common.notify("info", f"PixelCAM trainer: {message}")
        return path


# ---------------------------------------------------------------------- helpers


def _read_history(out: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((out / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return (
        [m for m in data if isinstance(m, dict) and "epoch" in m] if isinstance(data, list) else []
    )


def _teacher_checkpoint(config: Mapping[str, Any]) -> Path | None:
    teacher = config.get("teacher")
    if not teacher:
        return None
    t = Path(teacher)
    if t.is_dir():
        t = t / f"{config.get('teacher_checkpoint') or common.BEST_LOC}.json"
    return t if t.is_file() else None


class _Picture(QLabel):
    """The curves' picture: drawn again (in a worker) at its new size when resized."""

    def __init__(self, redraw: Callable[[], None]) -> None:
        super().__init__()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(redraw)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        if self.pixmap() is not None and not self.pixmap().isNull():
            self._timer.start()


def curves_figure(history: Mapping[int, Mapping[str, Any]], fg: str, bg: str) -> Any:
    """The run's curves as a matplotlib figure (train loss; validation PxAP and accuracy),
    not drawn yet."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(3.4, 2.8), dpi=80, facecolor=bg, layout="constrained")
    ax_loss, ax_val = fig.subplots(2, 1, sharex=True)
    epochs = sorted(history)

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(e, history[e].get(key)) for e in epochs]
        pts = [(e, float(v)) for e, v in pts if isinstance(v, (int, float))]
        return [e for e, _ in pts], [v for _, v in pts]

    ax_loss.plot(*series("train_loss"), "o-", color="#f5a623", ms=3, label="train loss")
    ax_val.plot(*series("valpx_pxap"), "o-", color="#4fc3f7", ms=3, label="valpx PxAP")
    ax_val.plot(*series("valcl_acc"), "s--", color="#9ccc65", ms=3, label="valcl accuracy")
    ax_loss.set_ylabel("train loss")
    ax_val.set_ylabel("validation %")
    ax_val.set_xlabel("epoch")
    ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend = ax_val.legend(
        loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=7, frameon=False
    )
    for text in legend.get_texts():
        text.set_color(fg)
    for ax in (ax_loss, ax_val):
        ax.set_facecolor(bg)
        ax.tick_params(colors=fg, labelsize=7)
        for label in (ax.yaxis.label, ax.xaxis.label):
            label.set_color(fg)
            label.set_fontsize(8)
        ax.grid(True, alpha=0.2, color=fg)
        for spine in ax.spines.values():
            spine.set_color(fg)
            spine.set_alpha(0.5)
    return fig


def rasterize(fig: Any, width: int, height: int) -> tuple[bytes, int, int]:
    """Draw a figure at ``width`` x ``height`` pixels with Agg (any thread: the figure is
    not touched elsewhere meanwhile); returns its RGBA bytes and size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_size_inches(width / fig.dpi, height / fig.dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    buffer = canvas.buffer_rgba()
    return bytes(buffer), int(buffer.shape[1]), int(buffer.shape[0])


def _summary(metrics: Mapping[str, Any]) -> str:
    parts = []
    for key, name, fmt in (
        ("train_loss", "loss", "{:.4f}"),
        ("valpx_pxap", "PxAP", "{:.1f}"),
        ("valcl_acc", "acc", "{:.1f}%"),
    ):
        value = metrics.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{name} {fmt.format(value)}")
    return ", ".join(parts) or "evaluated"
