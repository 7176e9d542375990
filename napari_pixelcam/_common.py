"""Helpers shared by the plugin's views: notifications, the guarded-slot decorator, colours,
the pyramid level a view computes on, the bundled sample models, and running a job in a
napari worker thread.

Nothing here imports Qt, napari or torch at import time (the session imports this module,
and it must stay Qt-free): each helper imports what it needs when it is called.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from pixelcam.train.phases import RUN_CHECKPOINTS  # torch-free

PLUGIN = "napari-pixelcam"
#: the panel's display name in ``napari.yaml`` (the trainer docks it by this name)
PANEL_NAME = "PixelCAM"
#: the trainer's display name in ``napari.yaml`` (the panel docks it by this name)
TRAINER_NAME = "PixelCAM trainer"

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: The bundled sample models (trained by ``sample_data/train_sample_model.py``).
SAMPLE_PIXELCAM = MODELS_DIR / "sample_pixelcam.json"
SAMPLE_BASELINE = MODELS_DIR / "sample_baseline.json"
#: The bundled references: NEGEV over the sample baseline, and a fully supervised U-Net.
SAMPLE_REFERENCES = (MODELS_DIR / "sample_negev.json", MODELS_DIR / "sample_unet.json")

#: The checkpoints a training run folder holds (``<name>.json`` + ``.safetensors``): best
#: localization, best classification, last epoch. A teacher run is read from one of them.
BEST_LOC, BEST_CL, LAST = RUN_CHECKPOINTS
#: Short labels of the selected checkpoints (the paper's B-LOC / B-CL).
RUN_CHECKPOINT_LABELS = {BEST_LOC: "B-LOC", BEST_CL: "B-CL"}

#: Colormap of each map layer (others: :data:`DEFAULT_COLORMAP`).
COLORMAPS = {"pixelcam": "inferno", "negev": "magma", "unet": "viridis"}
DEFAULT_COLORMAP = "turbo"
#: Foreground / background colours of seed points and t-SNE points.
FG_COLOR = "#ff2d55"
BG_COLOR = "#00c7ff"
POINT_COLORS = {1: FG_COLOR, 0: BG_COLOR}

#: A view computes on the largest pyramid level whose longer side fits this (the model
#: sees at most its input size anyway).
MAX_SIDE = 2048

#: Layer metadata keys: a map layer (``pixelcam_method``), a grid pane (its map's or
#: image's name), and an outline Labels layer (not a mask: no dock offers it as one).
MAP_KEY = "pixelcam_method"
BACKDROP_KEY = "pixelcam_backdrop"
OUTLINE_KEY = "pixelcam_outline"

F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------------- notifications
def notify(kind: str, message: str) -> None:
    """A napari notification; ``kind``: ``"info"``, ``"warning"`` or ``"error"``.

    napari's ``show_*`` functions are looked up at each call (tests replace them)."""
    from napari.utils import notifications

    show = {"info": notifications.show_info, "warning": notifications.show_warning}
    show.get(kind, notifications.show_error)(message)


def guarded(prefix: str) -> Callable[[F], F]:
    """Decorator for Qt slots and callbacks: an unexpected exception becomes an error
    notification ``"<prefix>: <Type>: <message>"`` and the slot returns None; nothing
    escapes into Qt's event loop."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - nothing may escape into Qt
                notify("error", f"{prefix}: {type(exc).__name__}: {exc}")
                return None

        return wrapper  # type: ignore[return-value]

    return decorate


# ---------------------------------------------------------------------- colours
class ThemeColors(NamedTuple):
    """Colours of the viewer's napari theme, as hex strings."""

    background: str
    text: str
    foreground: str


#: napari's dark theme, used when the viewer's theme cannot be read
DARK = ThemeColors("#262930", "#f0f1f2", "#414851")


def theme_colors(viewer: Any) -> ThemeColors:
    """The background, text and foreground colours of the viewer's theme (for plots)."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return ThemeColors(
            theme.background.as_hex(), theme.text.as_hex(), theme.foreground.as_hex()
        )
    except Exception:  # noqa: BLE001 - cosmetic only
        return DARK


# ---------------------------------------------------------------------- layers
def pick_level(levels: Sequence[Any], max_side: int = MAX_SIDE) -> int:
    """The largest pyramid level whose longer side fits ``max_side`` (else the coarsest)."""
    for i, level in enumerate(levels):
        if max(level.shape[:2]) <= max_side:
            return i
    return len(levels) - 1


def level_of(data: Any, multiscale: bool, max_side: int = MAX_SIDE) -> tuple[Any, np.ndarray]:
    """The level a view computes on (:func:`pick_level`) and its downsampling factor per
    axis (level-0 pixels per level pixel); a single-scale image is its own level."""
    if not multiscale:
        return data, np.ones(2)
    levels = list(data)
    level = levels[pick_level(levels, max_side)]
    full = np.asarray(levels[0].shape[:2], dtype=np.float64)
    return level, full / np.asarray(level.shape[:2], dtype=np.float64)


def unwrap(obj: Any) -> Any:
    """The object behind napari's plugin proxy (napari hands plugins a viewer whose layers
    are public-only proxies: a new proxy at each access, so compare and key layers by the
    object behind them)."""
    return getattr(obj, "__wrapped__", obj)


def source_images(viewer: Any) -> list:
    """The viewer's image layers that are not maps or grid backdrops of this plugin."""
    from napari.layers import Image

    return [
        ly
        for ly in viewer.layers
        if isinstance(ly, Image) and MAP_KEY not in ly.metadata and BACKDROP_KEY not in ly.metadata
    ]


# ---------------------------------------------------------------------- the library
#: modules of ``pixelcam.data`` that import nothing of torch themselves, while their
#: package's ``__init__`` does (its dataset classes): the reader and the sample data use
#: them on the GUI thread, where importing torch would freeze napari for seconds
TORCH_FREE_DATA_MODULES = ("pixelcam.data.io", "pixelcam.data.synthetic")


def data_module(name: str) -> Any:
    """A torch-free module of ``pixelcam.data`` (:data:`TORCH_FREE_DATA_MODULES`) without
    importing its package: the module itself when it is loaded already (torch is then
    loaded too), else the same source file loaded once on its own, under a private name.
    Its functions and errors are the library's (``pixelcam.errors`` is shared)."""
    import importlib.util
    import sys

    if name not in TORCH_FREE_DATA_MODULES:
        raise ValueError(f"{name} is not a torch-free module of pixelcam.data")
    if name in sys.modules:
        return sys.modules[name]
    private = f"napari_pixelcam._lib_{name.rsplit('.', 1)[-1]}"
    if private in sys.modules:
        return sys.modules[private]
    import pixelcam

    path = Path(pixelcam.__file__).parent / "data" / f"{name.rsplit('.', 1)[-1]}.py"
    spec = importlib.util.spec_from_file_location(private, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[private] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[private]
        raise
    return module


# ---------------------------------------------------------------------- dock layout
#: share of the dock area's height of each PixelCAM dock when several are open together
DOCK_SHARES = {"PixelCAM (": 0.30, "PixelCAM trainer": 0.38, "PixelCAM separability": 0.32}


def balance_docks(widget: Any) -> None:
    """Share the dock area's height between the PixelCAM docks open in it (Qt gives a new
    dock a strip of what is left: a 60 px trainer under the panel). Called when a dock is
    first shown; Qt's own API on the dock widgets (the user's splitter moves stay theirs
    until a dock is opened again)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = widget
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    main = dock.parentWidget() if dock is not None else None
    if not isinstance(main, QMainWindow):
        return
    area = main.dockWidgetArea(dock)
    ours = []
    for other in main.findChildren(QDockWidget):
        share = next((v for k, v in DOCK_SHARES.items() if other.windowTitle().startswith(k)), 0)
        beside = other.isVisible() and not other.isFloating()
        if share and beside and main.dockWidgetArea(other) == area:
            ours.append((other, share))
    if len(ours) < 2:
        return
    height = sum(d.height() for d, _ in ours)
    total = sum(share for _, share in ours)
    sizes = [int(height * share / total) for _, share in ours]
    main.resizeDocks([d for d, _ in ours], sizes, Qt.Orientation.Vertical)


# ---------------------------------------------------------------------- workers
def in_turns(steps: Sequence[Callable[[], Any]], prefix: str = "PixelCAM") -> None:
    """Run ``steps`` one per turn of the Qt event loop (a 1 ms single-shot timer each):
    the loop paints and handles input between two steps, so a long series of layer
    changes never freezes the viewer. A step that raises becomes an error notification;
    the next ones still run. (Not 0 ms: Qt runs a 0 ms timer queued by a 0 ms timer in
    the same pass, before input, paint and other timers: two steps as one block.)

    The windows do not paint during a step: what the step changed is painted in a turn of
    its own (:func:`paint_apart`), and the next step starts after it. A napari layer change
    and the window's repaint that follows are each about 100 ms on software OpenGL; in the
    same turn they blocked the loop for their sum (measured: ``benchmarks/ui_stalls.py``)."""
    from qtpy.QtCore import QTimer

    todo = list(steps)

    def run() -> None:
        if not todo:
            return
        step = todo.pop(0)
        with paint_apart(then=lambda: QTimer.singleShot(TURN_MS, run) if todo else None):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - nothing may escape into Qt
                notify("error", f"{prefix}: {type(exc).__name__}: {exc}")

    QTimer.singleShot(TURN_MS, run)


@contextlib.contextmanager
def paint_apart(then: Callable[[], Any] | None = None) -> Iterator[None]:
    """Hold the painting of the shown main windows during the ``with`` block; repaint them
    in the next turn of the event loop (input that came meanwhile is handled first), then
    call ``then``. Windows closed meanwhile are skipped; nesting is harmless (only the
    outermost block holds and repaints)."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QMainWindow

    held = [
        w
        for w in QApplication.topLevelWidgets()
        if isinstance(w, QMainWindow) and w.isVisible() and w.updatesEnabled()
    ]
    for window in held:
        window.setUpdatesEnabled(False)
    refs = [weakref.ref(w) for w in held]  # a window closed meanwhile may go
    del held

    def repaint() -> None:
        for ref in refs:
            window = ref()
            try:
                if window is not None:
                    window.setUpdatesEnabled(True)
                    window.repaint()
            except RuntimeError:  # its C++ object is gone: the window was closed
                pass
        if then is not None:
            then()

    try:
        yield
    finally:
        QTimer.singleShot(TURN_MS, repaint)


def paint_layer_changes_apart(layers: Any) -> None:
    """Paint every layer added to or removed from ``layers`` (a viewer's layer list) in a
    turn of its own (:func:`paint_apart`), also those napari adds itself (File > Open of an
    image and its mask: two layers and their repaint were one block). Once per list."""
    layers.events.inserted.connect(_hold_paint)  # napari connects a callback only once
    layers.events.removed.connect(_hold_paint)


def _hold_paint(_event: Any = None) -> None:
    with paint_apart():
        pass


#: the delay between two of :func:`in_turns`'s steps
TURN_MS = 1


#: the docks start their workers (torch's import holds Python's lock for long stretches)
#: this long after the last dock was built, so that docks opened together are each drawn
#: and usable first
WORKERS_AFTER_MS = 400

_PENDING_STARTS: list[Any] = []  # the QTimers of load_libraries that have not fired yet


def load_libraries(owner: Any, session: Any, *extra: Any, viewer: Any = None) -> None:
    """Read the session's catalogue and warm the libraries up, in workers, started
    :data:`WORKERS_AFTER_MS` after the last dock asked (each dock's call postpones the
    starts still pending: docks opened together, e.g. the panel opening the trainer, are
    not built while torch is imported) unless ``owner`` (the dock's Qt widget) is gone by
    then. Each item runs once per session (see the session). With ``viewer``, what the
    warm-up imported is then frozen out of garbage collection (:func:`freeze_after_warm_up`)."""
    from qtpy.QtCore import QTimer

    def start() -> None:
        _forget(timer)
        session.load_catalogue(in_worker)
        session.events.warmed.connect(install_built_unit_registry, unique=True)
        session.warm_up(in_worker, *extra, build_unit_registry)
        if viewer is not None:
            freeze_after_warm_up(viewer, session, owner)

    for pending in list(_PENDING_STARTS):
        try:
            pending.start(WORKERS_AFTER_MS)  # restarts it: from now
        except RuntimeError:  # its dock was closed (the timer went with it)
            _forget(pending)
    timer = QTimer(owner)
    timer.setSingleShot(True)
    timer.timeout.connect(start)
    timer.destroyed.connect(lambda *_: _forget(timer))
    _PENDING_STARTS.append(timer)
    timer.start(WORKERS_AFTER_MS)


def _forget(timer: Any) -> None:
    if timer in _PENDING_STARTS:
        _PENDING_STARTS.remove(timer)


_BUILT_UNIT_REGISTRY: list[Any] = []  # the registry build_unit_registry made, if any


def build_unit_registry() -> None:
    """Build pint's unit registry (a warm-up item: it runs in the warm-up worker, after
    torch's import, not beside it), unless napari has initialised its own already; once
    per process. :func:`install_built_unit_registry` installs it on the GUI thread.

    Why: the first napari layer of a process initialises pint's lazy application registry
    (it parses pint's unit definitions: 0.2-0.5 s frozen on 2 cores, the largest part of
    the first "open image"). Initialising that shared lazy object in a worker could race a
    layer made on the GUI thread; a separate registry built in the worker is private
    until the GUI thread installs it, and it is installed only while napari has not used
    the lazy one (quantities of two registries do not mix)."""
    import pint

    if _BUILT_UNIT_REGISTRY or not _pint_registry_untouched():
        return
    _BUILT_UNIT_REGISTRY.append(pint.UnitRegistry(on_redefinition="raise"))  # as the lazy one


def install_built_unit_registry() -> None:
    """Install :func:`build_unit_registry`'s registry (GUI thread; once the warm-up is done)."""
    if _BUILT_UNIT_REGISTRY:
        install_unit_registry(_BUILT_UNIT_REGISTRY[0])


def install_unit_registry(registry: Any) -> bool:
    """Make ``registry`` pint's application registry if napari has not initialised the
    lazy default yet (GUI thread); whether it was installed."""
    import pint

    if not _pint_registry_untouched():
        return False
    pint.set_application_registry(registry)
    return True


def _pint_registry_untouched() -> bool:
    """Whether pint's application registry is still the lazy default nobody has used."""
    import pint
    from pint.registry import LazyRegistry

    return type(pint.get_application_registry().get()) is LazyRegistry


def in_worker(
    job: Callable[[], Any],
    on_done: Callable[[Any], None],
    on_error: Callable[[BaseException], None],
) -> Any:
    """Run ``job()`` in a napari worker thread; ``on_done(result)`` or ``on_error(exc)``
    are then called on the main thread. Returns the started worker."""
    from napari.qt.threading import create_worker

    worker = create_worker(job, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(on_done)
    worker.errored.connect(on_error)
    worker.start()
    return worker


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when it is missing, unreadable or not an object
    (run folders are read while a child process may still be writing them)."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_FROZEN_LAYERS: dict[int, set[int]] = {}  # id(viewer) -> ids of its layers when frozen


def freeze_after_warm_up(viewer: Any, session: Any, owner: Any) -> None:
    """Once the warm-up is done, move every object alive into the permanent generation
    (``gc.freeze``, CPython's tool for long-lived objects), until ``owner`` (a dock) goes.

    Why: napari runs ``gc.collect()`` each time a layer is removed (its vispy canvas), and
    with torch, timm, napari and Qt loaded a full collection walks ~700 000 objects: about
    0.5 s frozen per closed layer on 2 cores. Frozen objects are skipped: 0-5 ms. A layer
    open at freeze time would keep its memory once closed (its reference cycles are never
    collected), so closing one unfreezes, collects once (the old cost, that once) and
    freezes again; closing the dock (or the viewer) unfreezes for good."""
    import gc

    from qtpy.QtCore import QTimer

    viewer = unwrap(viewer)  # the plugin proxy hands out new proxies at each access
    key = id(viewer)
    if key in _FROZEN_LAYERS:
        return
    _FROZEN_LAYERS[key] = set()

    def freeze() -> None:
        if key in _FROZEN_LAYERS:
            _FROZEN_LAYERS[key] = {id(unwrap(layer)) for layer in viewer.layers}
            gc.freeze()

    def full_collections() -> int:
        return gc.get_stats()[2]["collections"]

    def on_removed(event: Any) -> None:
        if id(unwrap(event.value)) in _FROZEN_LAYERS.get(key, ()):
            gc.unfreeze()  # before napari's own collection of this removal: it frees it
            _FROZEN_LAYERS[key] = set()
            before = full_collections()
            QTimer.singleShot(0, lambda: refreeze(before))

    def refreeze(before: int) -> None:
        if full_collections() == before:  # napari did not collect (a batched removal)
            gc.collect()
        freeze()

    def release() -> None:
        if _FROZEN_LAYERS.pop(key, None) is not None:
            gc.unfreeze()
            viewer.layers.events.removed.disconnect(on_removed)

    session.events.warmed.connect(freeze)
    viewer.layers.events.removed.connect(on_removed)
    owner.destroyed.connect(release)
    if session.is_warm():
        freeze()
