"""The plugin's model, apart from its views (napari-animation keeps ``Animation`` apart from
its ``_qt`` views the same way): one :class:`Session` per viewer, shared by every dock.

A session holds what the docks share: the chosen checkpoints (the PixelCAM model, the
baseline model, the NEGEV / U-Net reference models), the device, the selected maps and the
image they are computed for; ONE model cache; THE rule that says which checkpoint supplies
which map (:func:`map_sources`); and the catalogue of choices read from the library's
registries (:class:`Catalogue`). Each change is a :mod:`psygnal` signal of
:attr:`Session.events`, named like the attribute.

Qt-free: no qtpy, no magicgui, no napari widget; torch is imported only by the catalogue
(:func:`build_catalogue`, run in a worker thread by the views) and by model loading (worker
threads). The docks are views that read and write a session; they never call each other.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal, SignalGroup

from napari_pixelcam._common import SAMPLE_BASELINE, SAMPLE_PIXELCAM, SAMPLE_REFERENCES, unwrap
from pixelcam.errors import InputError

if TYPE_CHECKING:
    from pixelcam.registry import Registry

#: the maps selected in a new session
DEFAULT_MAPS = ("layercam", "pixelcam")
#: how many loaded models the cache keeps (least recently used dropped first)
MAX_MODELS = 8
#: the panel's name for the reference checkpoints (named by the rule's error message)
REFERENCES_FIELD = "NEGEV / U-Net models"


# ---------------------------------------------------------------------- choices
@dataclass(frozen=True, eq=False)
class Choices:
    """The entries of one registry: names in listing order, aliases, helps and metadata."""

    kind: str
    names: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, registry: Registry[Any]) -> Choices:
        entries = registry.entries()
        return cls(
            kind=registry.kind,
            names=tuple(e.name for e in entries),
            aliases={a: e.name for e in entries for a in e.aliases},
            help={
                e.name: e.help.strip().splitlines()[0] if e.help.strip() else "" for e in entries
            },
            meta={e.name: dict(e.meta) for e in entries},
        )

    def canonical(self, value: str) -> str | None:
        """The entry name of ``value`` (a name or an alias), None when unknown."""
        value = str(value).strip()
        return value if value in self.names else self.aliases.get(value)

    def subset(self, names: tuple[str, ...] | list[str]) -> Choices:
        """These choices restricted to ``names`` (listing order kept)."""
        keep = tuple(n for n in self.names if n in names)
        return Choices(
            self.kind,
            keep,
            {a: n for a, n in self.aliases.items() if n in keep},
            {n: h for n, h in self.help.items() if n in keep},
            {n: m for n, m in self.meta.items() if n in keep},
        )

    def where(self, **meta: Any) -> tuple[str, ...]:
        """The names whose metadata has every ``key=value`` given."""
        return tuple(
            n for n in self.names if all(self.meta.get(n, {}).get(k) == v for k, v in meta.items())
        )

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self.canonical(value) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def devices() -> Choices:
    """The registered devices (torch-free)."""
    from pixelcam.device import DEVICES

    return Choices.of(DEVICES)


def phases() -> Choices:
    """The registered training phases; ``meta["needs_teacher"]`` says which need a teacher
    run (torch-free)."""
    from pixelcam.train.phases import PHASES

    return Choices.of(PHASES)


def phase_map(phase: str) -> str | None:
    """The map a model trained by ``phase`` is made for (``"pixelcam"``, ``"negev"``...);
    None for a baseline (its maps are the baseline maps) or an unknown phase (torch-free)."""
    from pixelcam.train.phases import PHASES

    return PHASES.get(phase).own_map if phase in PHASES else None


@dataclass(frozen=True, eq=False)
class Catalogue:
    """The choices read from registries whose modules import torch (so it is built in a
    worker thread, :func:`build_catalogue`).

    The map methods are split by who supplies them (see :func:`map_sources`): ``pixel_maps``
    (the PixelCAM model's pixel head), ``reference_maps`` (decoders: the NEGEV / U-Net
    checkpoints) and ``baseline_maps`` (every other map: the baseline model, else the
    PixelCAM model's own image head).
    """

    maps: Choices
    pixel_maps: tuple[str, ...]
    reference_maps: tuple[str, ...]
    baseline_maps: tuple[str, ...]
    datasets: Choices
    samplers: Choices
    teacher_views: Choices
    image_heads: Choices
    pixel_heads: Choices
    backbones: Choices


def build_catalogue() -> Catalogue:
    """Read the registries that import torch (and warm torch, timm and the inference code,
    so that a view's first computation starts at once)."""
    import pixelcam.inference  # noqa: F401 - warm-up
    from pixelcam.cams.base import MAP_METHODS
    from pixelcam.cams.decoder import DecoderMap
    from pixelcam.cams.pixelcam import PixelCAM
    from pixelcam.cams.views import VIEWS
    from pixelcam.data import DATASETS
    from pixelcam.models.backbones import BACKBONES
    from pixelcam.models.heads import IMAGE_HEADS, PIXEL_HEADS
    from pixelcam.pseudo_labels import SAMPLERS

    maps = Choices.of(MAP_METHODS)
    pixel = tuple(n for n in maps.names if issubclass(MAP_METHODS.get(n), PixelCAM))
    refs = tuple(n for n in maps.names if issubclass(MAP_METHODS.get(n), DecoderMap))
    return Catalogue(
        maps=maps,
        pixel_maps=pixel,
        reference_maps=refs,
        baseline_maps=tuple(n for n in maps.names if n not in pixel + refs),
        datasets=Choices.of(DATASETS),
        samplers=Choices.of(SAMPLERS),
        teacher_views=Choices.of(VIEWS),
        image_heads=Choices.of(IMAGE_HEADS),
        pixel_heads=Choices.of(PIXEL_HEADS),
        backbones=Choices.of(BACKBONES),
    )


#: what :meth:`Session.warm_up` imports and first-uses in a worker, after the catalogue
#: (torch, timm): the seed sampler, the metrics, t-SNE, pandas and matplotlib (with a first
#: Agg draw, which builds its font cache), so no view imports them on the GUI thread
WARM_UP: tuple[str, ...] = (
    "pixelcam.pseudo_labels", "pixelcam.metrics", "pixelcam.embedding", "pandas",
    "skimage.transform", "sklearn.manifold", "matplotlib.figure", "matplotlib.ticker",
    "matplotlib.widgets", "matplotlib.backends.backend_agg", "first matplotlib draw",
    "first t-SNE",
)  # fmt: skip


def preload_torch_libraries() -> bool:
    """Load torch's shared libraries (``libtorch_python`` and what it links: about 0.3-0.5 s
    of ``dlopen`` and static initialisers here) without holding Python's lock, before
    ``import torch`` in the same worker, which then finds them loaded. Python's own
    loading of an extension module, and ``ctypes.CDLL``, hold the lock for the whole
    ``dlopen``: the GUI thread froze for it (230-240 ms per import, measured with a 5 ms
    heartbeat thread; 65-68 ms with this). A foreign call through ``ctypes`` releases the
    lock. Linux only; once torch is imported, or if anything fails, it does nothing and
    ``import torch`` loads them as usual (and reports any error). Returns whether it
    loaded them."""
    import sys

    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import importlib.util
        import os

        spec = importlib.util.find_spec("torch")  # finds torch's folder, imports nothing
        if spec is None or spec.origin is None:
            return False
        library = Path(spec.origin).parent / "lib" / "libtorch_python.so"
        if not library.is_file():
            return False
        dlopen = ctypes.CDLL(None).dlopen
        dlopen.argtypes, dlopen.restype = [ctypes.c_char_p, ctypes.c_int], ctypes.c_void_p
        return bool(dlopen(os.fsencode(library), os.RTLD_NOW | os.RTLD_LOCAL))
    except (OSError, AttributeError, ValueError):
        return False


def warm(name: str | Callable[[], Any]) -> None:
    """Import a module by name, or run a callable; two names are first uses: ``"first
    matplotlib draw"`` (an Agg figure with text) and ``"first t-SNE"`` (30 points)."""
    import importlib

    if callable(name):
        name()
    elif name == "first matplotlib draw":
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(2, 2), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], "o-", label="a")
        ax.scatter([0.5], [0.5], s=4)
        ax.set_title("t")
        ax.legend(fontsize=7)
        fig.canvas.draw()
    elif name == "first t-SNE":
        import numpy as np
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            x = np.random.default_rng(0).random((30, 4))
            TSNE(perplexity=5.0, init="random", max_iter=250).fit_transform(x)
    else:
        importlib.import_module(name)


# ---------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class Selection:
    """A snapshot of a session's choices, taken on the main thread for a worker."""

    pixelcam: str
    baseline: str
    references: tuple[str, ...]
    device: str
    maps: tuple[str, ...]

    @property
    def classifier(self) -> str:
        """The checkpoint whose prediction the panel shows (and whose class the
        class-specific maps explain): the PixelCAM model, else the baseline model, else the
        first reference model (NEGEV keeps its baseline's classifier); ``""``: none."""
        for path in (self.pixelcam, self.baseline, *self.references):
            if path:
                return path
        return ""


def map_candidates(name: str, selection: Selection, catalogue: Catalogue) -> list[str]:
    """The checkpoints that may supply map ``name``, first choice first.

    - the PixelCAM map: the PixelCAM model only;
    - a baseline map (CAM, GradCAM++, LayerCAM, DeepMIL, SAT...): the baseline model when
      one is given (an existing file), else the PixelCAM model's own image head;
    - a decoder map (NEGEV, U-Net): as a baseline map, then the reference checkpoints.
    """
    if name in catalogue.pixel_maps:
        out = [selection.pixelcam]
    else:
        base = selection.baseline
        out = [base] if base and Path(base).is_file() else []
        out.append(selection.pixelcam)
        if name in catalogue.reference_maps:
            out += list(selection.references)
    return [p for p in dict.fromkeys(out) if p]


def map_sources(
    selection: Selection, catalogue: Catalogue, applies: Callable[[str, str], bool]
) -> dict[str, str]:
    """THE rule: map name -> the checkpoint that supplies it, for every selected map (the
    first of :func:`map_candidates` for which ``applies(map, checkpoint)``). Raises
    :class:`InputError` naming the maps no chosen checkpoint gives."""
    sources: dict[str, str] = {}
    for name in selection.maps:
        for path in map_candidates(name, selection, catalogue):
            if applies(name, path):
                sources[name] = path
                break
    missing = [m for m in selection.maps if m not in sources]
    if missing:
        hint = ""
        if set(missing) & set(catalogue.reference_maps):
            refs = " and ".join(catalogue.reference_maps)
            hint = f" ({refs} maps come from the '{REFERENCES_FIELD}' files)"
        raise InputError(f"maps {missing} do not apply to the chosen model(s){hint}")
    return sources


# ---------------------------------------------------------------------- the session
class SessionEvents(SignalGroup):
    """One signal per attribute of :class:`Session` (the new value), and ``catalogue``
    (the :class:`Catalogue`, once read) or ``catalogue_failed`` (the exception)."""

    pixelcam = Signal(str)
    baseline = Signal(str)
    references = Signal(tuple)
    device = Signal(str)
    maps = Signal(tuple)
    image = Signal(object)
    catalogue = Signal(object)
    catalogue_failed = Signal(object)
    warmed = Signal()
    training_request = Signal(object)


def _path_text(value: Any) -> str:
    """A checkpoint path as text; empty, None and ``"."`` (an empty file field) are ``""``."""
    text = "" if value is None else str(value).strip()
    return "" if text in ("", ".") else text


def checkpoint_identity(path: str | Path) -> tuple[tuple[int, int], ...]:
    """``(mtime_ns, size)`` of a checkpoint's files (the path, its ``.json`` and its
    ``.safetensors``): a file rewritten in place (a retrained run) gets a new identity."""
    path = Path(path)
    out = []
    for p in dict.fromkeys((path, path.with_suffix(".json"), path.with_suffix(".safetensors"))):
        try:
            st = p.stat()
        except OSError:
            out.append((0, 0))
        else:
            out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


class Session:
    """What the docks of one viewer share (module docstring). Set attributes on the main
    thread; :meth:`load`, :meth:`map_sources` and :meth:`models_for` run in workers.

    ``loader(path, device=...) -> (model, meta)`` loads a checkpoint (default:
    :func:`pixelcam.models.load_checkpoint`, looked up at each load).
    """

    def __init__(
        self,
        *,
        pixelcam: str | Path = SAMPLE_PIXELCAM,
        baseline: str | Path | None = None,
        references: tuple[str | Path, ...] | None = None,
        device: str = "auto",
        maps: tuple[str, ...] = DEFAULT_MAPS,
        loader: Callable[..., tuple[Any, dict]] | None = None,
    ) -> None:
        if baseline is None:
            baseline = SAMPLE_BASELINE if SAMPLE_BASELINE.exists() else ""
        if references is None:
            references = tuple(p for p in SAMPLE_REFERENCES if p.exists())
        self.events = SessionEvents()
        self._pixelcam = _path_text(pixelcam)
        self._baseline = _path_text(baseline)
        self._references = tuple(p for p in map(_path_text, references) if p)
        self._device = self._check_device(device)
        self._maps = tuple(maps)
        self._image: Callable[[], Any] = lambda: None
        self._loader = loader
        self._models: OrderedDict[tuple, tuple[Any, dict]] = OrderedDict()
        self._lock = threading.RLock()
        self._catalogue: Catalogue | None = None
        self._catalogue_error: BaseException | None = None
        self._catalogue_started = False
        self._catalogue_done = threading.Event()
        self._ready = False
        self._warm_seen: set[Any] = set()
        self._warm_done: set[Any] = set()
        self._warm_jobs = 0
        #: the last "Train on my images" request (``{"data_root", "dataset"}``), or None
        self.training_request: dict[str, str] | None = None

    # ------------------------------------------------------------------ choices
    def _set(self, name: str, value: Any) -> None:
        if getattr(self, f"_{name}") != value:
            setattr(self, f"_{name}", value)
            getattr(self.events, name).emit(value)

    @property
    def pixelcam(self) -> str:
        """The PixelCAM model's checkpoint path (``""``: none)."""
        return self._pixelcam

    @pixelcam.setter
    def pixelcam(self, value: str | Path | None) -> None:
        self._set("pixelcam", _path_text(value))

    @property
    def baseline(self) -> str:
        """The baseline model's checkpoint path (``""``: none; the PixelCAM model's own
        image head then gives the baseline maps)."""
        return self._baseline

    @baseline.setter
    def baseline(self, value: str | Path | None) -> None:
        self._set("baseline", _path_text(value))

    @property
    def references(self) -> tuple[str, ...]:
        """The NEGEV / U-Net checkpoints (each gives the decoder map it was trained for)."""
        return self._references

    @references.setter
    def references(self, value: Any) -> None:
        items = [value] if isinstance(value, (str, Path)) else list(value or ())
        self._set("references", tuple(p for p in map(_path_text, items) if p))

    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        self._set("device", self._check_device(value))

    @staticmethod
    def _check_device(value: str) -> str:
        value = str(value).strip()
        if value.split(":", 1)[0] not in devices():
            raise InputError(f"unknown device {value!r}; available: {', '.join(devices())}")
        return value

    @property
    def maps(self) -> tuple[str, ...]:
        """The selected map methods, in the user's order."""
        return self._maps

    @maps.setter
    def maps(self, value: Any) -> None:
        self._set("maps", tuple(str(m) for m in (value or ())))

    @property
    def image(self) -> Any:
        """The image layer the maps are computed for (held weakly; None when gone)."""
        return self._image()

    @image.setter
    def image(self, layer: Any) -> None:
        layer = unwrap(layer)  # napari's plugin proxies come and go: hold the layer
        if layer is self.image:
            return
        self._image = (lambda: None) if layer is None else weakref.ref(layer)
        self.events.image.emit(layer)

    def use_trained(self, path: str | Path, phase: str, teacher: str | Path | None = None) -> str:
        """Make the panel show a trained run: EVERY model field is set from the run, so the
        prediction and the maps shown are the trained model's, never a bundled one's.

        - a PixelCAM run -> the PixelCAM model; its ``teacher`` checkpoint (else none) the
          baseline model; no reference models -> ``"pixelcam"``;
        - a NEGEV or U-Net run -> the only reference model, its ``teacher`` (NEGEV's frozen
          baseline; a U-Net has none) the baseline model, no PixelCAM model, its map
          selected -> ``"references"``;
        - a baseline run -> the baseline model, no PixelCAM and no reference models ->
          ``"baseline"``.

        The selected maps keep those the new models give (the run's own map added; a
        baseline run keeps the baseline maps, LayerCAM when none was selected)."""
        own = phase_map(phase)
        catalogue = self.catalogue_now()
        learns_from_teacher = phase in phases().where(needs_teacher=True)
        base = _path_text(teacher) if teacher is not None and learns_from_teacher else ""
        if own is not None and own in catalogue.reference_maps:
            self.pixelcam, self.baseline, self.references = "", base, [path]
            keep = [m for m in self.maps if m in catalogue.baseline_maps] if base else []
            self.maps = tuple(dict.fromkeys([*keep, own]))
            return "references"
        if own is not None and own in catalogue.pixel_maps:
            self.pixelcam, self.baseline, self.references = path, base, []
            keep = [m for m in self.maps if m in catalogue.baseline_maps or m == own]
            self.maps = tuple(dict.fromkeys([*keep, own]))
            return "pixelcam"
        self.pixelcam, self.baseline, self.references = "", path, []
        keep = [m for m in self.maps if m in catalogue.baseline_maps]
        self.maps = tuple(keep or ("layercam",))
        return "baseline"

    def request_training(self, folder: str | Path, dataset: str = "folder") -> None:
        """Ask for a training on the user's images (the trainer dock prefills its form from
        :attr:`training_request` and listens to ``events.training_request``)."""
        self.training_request = {"data_root": str(folder), "dataset": dataset}
        self.events.training_request.emit(self.training_request)

    def selection(self) -> Selection:
        """A snapshot of the choices, for a worker (main thread)."""
        maps = self.maps or DEFAULT_MAPS[-1:]
        return Selection(self.pixelcam, self.baseline, self.references, self.device, maps)

    # ------------------------------------------------------------------ catalogue
    @property
    def catalogue(self) -> Catalogue | None:
        """The catalogue once read (None before: views then show their current values)."""
        return self._catalogue

    @property
    def ready(self) -> bool:
        """Whether the catalogue was read and announced (``events.catalogue``) to views."""
        return self._ready

    def load_catalogue(
        self,
        run_in_background: Callable[[Callable[[], Any], Callable, Callable], Any] | None = None,
    ) -> None:
        """Start reading the catalogue, once per session: ``run_in_background(job, on_done,
        on_error)`` runs ``job`` in a worker and calls back on the main thread (the views
        pass :func:`napari_pixelcam._common.in_worker`); without it, read it now."""
        if self._catalogue_started:
            return
        self._catalogue_started = True
        if run_in_background is None:
            try:
                self._build_catalogue()
            except Exception as exc:  # noqa: BLE001 - reported through the signal
                self._catalogue_failed(exc)
                raise
            self._catalogue_ready(self._catalogue)
            return
        run_in_background(self._build_catalogue, self._catalogue_ready, self._catalogue_failed)

    def _build_catalogue(self) -> Catalogue:
        try:
            preload_torch_libraries()
            self._catalogue = build_catalogue()
        except BaseException as exc:
            self._catalogue_error = exc
            raise
        finally:
            self._catalogue_done.set()
        return self._catalogue

    def _catalogue_ready(self, catalogue: Catalogue | None) -> None:
        try:
            self.events.catalogue.emit(catalogue)
        finally:
            self._ready = True

    def _catalogue_failed(self, exc: BaseException) -> None:
        self._catalogue_error = exc
        self.events.catalogue_failed.emit(exc)

    def warm_up(
        self,
        run_in_background: Callable[[Callable[[], Any], Callable, Callable], Any],
        *extra: str | Callable[[], Any],
    ) -> None:
        """Import and first-use, in a worker, what the views will need (:data:`WARM_UP`,
        then ``extra``: module names or callables), each once per session, after the
        catalogue (torch). ``events.warmed`` fires when every started warm-up is done."""
        todo = [w for w in (*WARM_UP, *extra) if w not in self._warm_seen]
        if not todo:
            return
        self._warm_seen.update(todo)
        self._warm_jobs += 1

        def job() -> None:
            self.catalogue_now()
            for item in todo:
                warm(item)
                self._warm_done.add(item)

        run_in_background(job, self._warmed, self._warm_failed)

    def is_warm(self, *items: str | Callable[[], Any]) -> bool:
        """Whether these warm-ups (default: all of :data:`WARM_UP`) are done."""
        return all(i in self._warm_done for i in (items or WARM_UP))

    def _warmed(self, _result: Any = None) -> None:
        self._warm_jobs -= 1
        if self._warm_jobs == 0:
            self.events.warmed.emit()

    def _warm_failed(self, exc: BaseException) -> None:
        # nothing is lost: the view imports what it needs when it needs it
        self._warm_done.update(self._warm_seen)
        self._warmed()

    def catalogue_now(self, timeout: float | None = 600.0) -> Catalogue:
        """The catalogue, waiting for the worker reading it (or reading it here when no
        view started it). Any thread; torch is imported once this returns."""
        if self._catalogue is None and not self._catalogue_started:
            self.load_catalogue()
        if not self._catalogue_done.wait(timeout):
            raise TimeoutError("PixelCAM: reading the choices (importing torch) takes too long")
        if self._catalogue is None:
            raise RuntimeError(f"PixelCAM: cannot read the choices: {self._catalogue_error}")
        return self._catalogue

    # ------------------------------------------------------------------ models
    def load(self, path: str | Path, device: str | None = None) -> tuple[Any, dict]:
        """``(model, meta)`` of a checkpoint, loaded once per (file, file identity, device)
        and then served from the cache (worker threads; thread-safe)."""
        from pixelcam.device import resolve_device

        torch_device = resolve_device(device or self.device)
        resolved = str(Path(path).resolve())
        key = (resolved, checkpoint_identity(path), str(torch_device))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = self._load_file(path, torch_device)
            for old in [k for k in self._models if k[0] == key[0] and k[2] == key[2]]:
                del self._models[old]  # the same file, rewritten since
            self._models[key] = loaded
            while len(self._models) > MAX_MODELS:
                self._models.popitem(last=False)
            return loaded

    def _load_file(self, path: str | Path, device: Any) -> tuple[Any, dict]:
        if self._loader is not None:
            return self._loader(path, device=device)
        import pixelcam.models

        return pixelcam.models.load_checkpoint(path, device=device)

    def cached_models(self) -> list[tuple]:
        """The cache's keys ``(resolved path, file identity, device)``, oldest first."""
        with self._lock:
            return list(self._models)

    def clear_models(self) -> None:
        with self._lock:
            self._models.clear()

    def applies(self, method: str, path: str, device: str | None = None) -> bool:
        """Whether map ``method`` can be computed by the checkpoint at ``path`` (loads it)."""
        from pixelcam.cams import get_method

        model, _ = self.load(path, device)
        return bool(get_method(method).applies(model))

    def map_sources(self, selection: Selection | None = None) -> dict[str, str]:
        """:func:`map_sources` for ``selection`` (default: the current choices), loading
        the checkpoints it needs through the cache (worker threads)."""
        selection = selection or self.selection()
        return map_sources(
            selection,
            self.catalogue_now(),
            lambda method, path: self.applies(method, path, selection.device),
        )

    def models_for(self, selection: Selection | None = None) -> dict[str, tuple[Any, dict]]:
        """Map name -> ``(model, meta)`` of the checkpoint that supplies it (by the rule)."""
        selection = selection or self.selection()
        sources = self.map_sources(selection)
        return {m: self.load(path, selection.device) for m, path in sources.items()}


# ---------------------------------------------------------------------- one per viewer
_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The session of ``viewer`` (made on first use; it goes away with the viewer)."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session()
    return session
