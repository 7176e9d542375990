"""The plugin's session (its Qt-free model) without Qt or a viewer: choices and their
events, the model cache, THE rule of which checkpoint gives which map, the catalogue read
from the library's registries, one session per viewer; and the plugin's import graph."""

from __future__ import annotations

import ast
import gc
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from napari_pixelcam import _common
from napari_pixelcam._session import (
    Catalogue,
    Choices,
    Selection,
    Session,
    build_catalogue,
    devices,
    map_candidates,
    map_sources,
    phases,
    session_for,
)
from pixelcam.errors import InputError

PLUGIN_DIR = Path(_common.__file__).resolve().parent


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return build_catalogue()


def _recorder(session: Session) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []
    session.events.connect(lambda info: seen.append((info.signal.name, info.args[0])))
    return seen


def test_defaults_are_the_bundled_sample_models():
    s = Session()
    assert s.pixelcam == str(_common.SAMPLE_PIXELCAM)
    assert s.baseline == (str(_common.SAMPLE_BASELINE) if _common.SAMPLE_BASELINE.exists() else "")
    assert s.references == tuple(str(p) for p in _common.SAMPLE_REFERENCES if p.exists())
    assert s.device == "auto" and s.maps == ("layercam", "pixelcam") and s.image is None
    assert s.catalogue is None  # nothing heavy until asked


def test_setters_normalise_and_emit_once_per_change(tmp_path):
    s = Session()
    seen = _recorder(s)
    s.pixelcam = tmp_path / "a.json"
    s.pixelcam = str(tmp_path / "a.json")  # the same: no event
    s.baseline = "."  # an empty file field
    s.references = [tmp_path / "n.json", "", "."]
    s.device = "cpu"
    s.maps = ["cam", "pixelcam"]
    assert seen == [
        ("pixelcam", str(tmp_path / "a.json")),
        ("baseline", ""),
        ("references", (str(tmp_path / "n.json"),)),
        ("device", "cpu"),
        ("maps", ("cam", "pixelcam")),
    ]
    s.device = "cuda:1"  # a torch device string of a registered kind
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        s.device = "tpu"
    assert s.device == "cuda:1"
    assert s.selection() == Selection(
        str(tmp_path / "a.json"), "", (str(tmp_path / "n.json"),), "cuda:1", ("cam", "pixelcam")
    )
    s.maps = []
    assert s.selection().maps == ("pixelcam",)  # nothing selected: the PixelCAM map


def test_image_is_held_weakly_and_announced():
    class Layer:
        """Stands in for a napari layer: the session only holds it (weakly)."""

    s = Session()
    seen = _recorder(s)
    layer = Layer()
    s.image = layer
    s.image = layer
    assert s.image is layer and seen == [("image", layer)]
    seen.clear()
    del layer
    gc.collect()
    assert s.image is None  # the session does not keep a removed layer alive


def test_one_session_per_viewer_gone_with_the_viewer():
    class Viewer:
        """Stands in for a napari viewer: only its identity and lifetime matter here."""

    a, b = Viewer(), Viewer()
    assert session_for(a) is session_for(a) is not session_for(b)
    ref = session_for(a)
    import weakref

    gone = weakref.ref(ref)
    del a, ref
    gc.collect()
    assert gone() is None


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_model_cache_keys_on_file_identity_and_device(tmp_path):
    calls: list[tuple[str, str]] = []

    def loader(path, device):
        calls.append((Path(path).name, str(device)))
        return object(), {"eval_size": 64}

    s = Session(loader=loader)
    ckpt = _write(tmp_path / "m.json", "{}")
    first = s.load(ckpt, "cpu")
    assert s.load(str(ckpt), "cpu") is first  # the same file: from the cache
    assert s.load(tmp_path / "." / "m.json", "cpu") is first  # resolved path
    assert len(calls) == 1
    os.utime(ckpt, ns=(1, 1))  # rewritten in place (a retrained run): loaded again
    assert s.load(ckpt, "cpu") is not first and len(calls) == 2
    assert len(s.cached_models()) == 1  # the stale entry was dropped
    weights = _write(tmp_path / "m.safetensors", "x")  # the weights file counts too
    s.load(ckpt, "cpu")
    assert len(calls) == 3
    weights.write_text("xy")
    s.load(ckpt, "cpu")
    assert len(calls) == 4
    for i in range(12):  # a bounded cache: least recently used first out
        s.load(_write(tmp_path / f"o{i}.json", "{}"), "cpu")
    assert len(s.cached_models()) == 8
    s.clear_models()
    assert s.cached_models() == []


def test_the_rule_which_checkpoint_gives_which_map(tmp_path, catalogue):
    """Baseline maps from the baseline model when given, else from the PixelCAM model's
    image head; the PixelCAM map from the PixelCAM model only; decoder maps from the
    reference checkpoints; a map no checkpoint gives is an error naming it."""
    pix, base = str(tmp_path / "pix.json"), str(_write(tmp_path / "base.json", "{}"))
    negev, unet = str(tmp_path / "negev.json"), str(tmp_path / "unet.json")
    gives = {
        pix: set(catalogue.baseline_maps[:3]) | {"pixelcam"},
        base: set(catalogue.baseline_maps[:3]) | {"pixelcam"},  # even if it had a pixel head
        negev: {"cam", "negev"},
        unet: {"unet"},
    }

    def applies(method: str, path: str) -> bool:
        return method in gives[path]

    sel = Selection(pix, base, (negev, unet), "cpu", ("cam", "layercam", "pixelcam", "unet"))
    assert map_sources(sel, catalogue, applies) == {
        "cam": base, "layercam": base, "pixelcam": pix, "unet": unet,
    }  # fmt: skip
    no_base = Selection(pix, "", (negev, unet), "cpu", ("cam", "pixelcam", "negev"))
    assert map_sources(no_base, catalogue, applies) == {"cam": pix, "pixelcam": pix, "negev": negev}
    missing_base = Selection(pix, str(tmp_path / "gone.json"), (), "cpu", ("cam",))
    assert map_candidates("cam", missing_base, catalogue) == [pix]  # a missing file: skipped
    assert map_candidates("pixelcam", sel, catalogue) == [pix]
    assert map_candidates("negev", sel, catalogue) == [base, pix, negev, unet]
    with pytest.raises(InputError, match=r"\['unet'\].*'NEGEV / U-Net models'"):
        map_sources(Selection(pix, base, (), "cpu", ("pixelcam", "unet")), catalogue, applies)
    with pytest.raises(InputError, match=r"\['deepmil'\] do not apply"):
        map_sources(Selection(pix, base, (negev,), "cpu", ("deepmil",)), catalogue, applies)


def test_session_rule_loads_through_the_cache(tmp_path, catalogue):
    """Session.map_sources/models_for: the rule with the real map methods' ``applies`` on
    the bundled sample models, each model loaded once."""
    if not _common.SAMPLE_PIXELCAM.exists():
        pytest.skip("no bundled sample models")
    s = Session(device="cpu")
    s.maps = ["cam", "pixelcam", "negev", "unet"]
    sources = s.map_sources()
    assert sources == {
        "cam": s.baseline, "pixelcam": s.pixelcam, "negev": s.references[0],
        "unet": s.references[1],
    }  # fmt: skip
    models = s.models_for()
    assert models["cam"] is s.load(s.baseline)
    assert len(s.cached_models()) == 4  # each checkpoint loaded once


def test_catalogue_is_read_from_the_registries(catalogue):
    from pixelcam.cams.base import MAP_METHODS
    from pixelcam.cams.views import VIEWS
    from pixelcam.data import DATASETS
    from pixelcam.models.backbones import BACKBONES
    from pixelcam.models.heads import IMAGE_HEADS, PIXEL_HEADS
    from pixelcam.pseudo_labels import SAMPLERS

    for choices, registry in (
        (catalogue.maps, MAP_METHODS), (catalogue.datasets, DATASETS),
        (catalogue.samplers, SAMPLERS), (catalogue.image_heads, IMAGE_HEADS),
        (catalogue.pixel_heads, PIXEL_HEADS), (catalogue.backbones, BACKBONES),
        (catalogue.teacher_views, VIEWS),
    ):  # fmt: skip
        assert list(choices.names) == registry.names()
        assert sorted([*choices.names, *choices.aliases]) == sorted(registry.choices())
    assert catalogue.samplers.canonical("pb") == "probability" and "th" in catalogue.samplers
    assert catalogue.samplers.canonical("nope") is None
    assert list(devices()) == __import__("pixelcam.device").device.DEVICES.names()
    assert phases().where(needs_teacher=True) == ("pixelcam", "negev")


@pytest.mark.parametrize("name", __import__("pixelcam.cams.base").cams.base.MAP_METHODS.names())
def test_every_map_has_exactly_one_supplier_group(name, catalogue):
    groups = (catalogue.pixel_maps, catalogue.reference_maps, catalogue.baseline_maps)
    assert sum(name in g for g in groups) == 1


def test_catalogue_now_reads_it_once_and_announces_it():
    s = Session()
    seen = _recorder(s)
    first = s.catalogue_now()
    assert s.catalogue_now() is first is s.catalogue
    assert [name for name, _ in seen] == ["catalogue"]
    s.load_catalogue()  # already read: nothing happens
    assert len(seen) == 1


def test_catalogue_in_background_and_failure():
    s = Session()
    jobs = []
    s.load_catalogue(lambda job, done, error: jobs.append((job, done, error)))
    s.load_catalogue(lambda *a: pytest.fail("started twice"))
    assert s.catalogue is None and len(jobs) == 1
    job, done, error = jobs[0]
    done(job())  # what a worker does: the job in a thread, then ``done`` on the main thread
    assert isinstance(s.catalogue, Catalogue)
    broken = Session()
    seen = _recorder(broken)
    broken.load_catalogue(lambda job, done, error: error(RuntimeError("no torch")))
    assert seen and seen[-1][0] == "catalogue_failed"


def test_choices_from_a_registry():
    from pixelcam.registry import Registry

    reg = Registry("thing")
    reg.register("b", aliases=("bee",), help="second\nmore", flag=True)(object())
    reg.register("a", order=-1, help="first")(object())
    c = Choices.of(reg)
    assert c.names == ("a", "b") and c.help == {"a": "first", "b": "second"}
    assert c.canonical("bee") == "b" and "bee" in c and "c" not in c and len(c) == 2
    assert c.where(flag=True) == ("b",)


# ---------------------------------------------------------------------- imports
def _plugin_imports() -> dict[str, set[str]]:
    """Module -> the plugin modules it imports (any import statement, lazy ones too)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PLUGIN_DIR.glob("*.py")):
        name = f"napari_pixelcam.{path.stem}" if path.stem != "__init__" else "napari_pixelcam"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module
                if mod == "napari_pixelcam":
                    found |= {f"napari_pixelcam.{a.name}" for a in node.names}
                elif mod.startswith("napari_pixelcam."):
                    found.add(mod)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("napari_pixelcam.")}
        graph[name] = found - {name}
    return graph


def test_plugin_has_no_import_cycle_and_views_do_not_import_each_other():
    graph = _plugin_imports()
    assert "napari_pixelcam._session" in graph and "napari_pixelcam._common" in graph

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = [m for m in graph if m in reach(m)]
    assert not cycles, cycles
    views = {f"napari_pixelcam.{v}" for v in ("_panel", "_separability", "_trainer")}
    for view in views | {"napari_pixelcam._viewport"}:
        assert not (graph[view] & views), (view, graph[view] & views)
    assert graph["napari_pixelcam._session"] <= {"napari_pixelcam._common"}
    assert graph["napari_pixelcam._common"] == set()


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_session_imports_no_qt_and_no_torch():
    loaded = _modules_after("import napari_pixelcam._session; import napari_pixelcam._common")
    gui = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "torch")
    bad = {m for m in loaded if m.split(".")[0] in gui}
    bad |= {m for m in loaded if m.startswith(("napari.qt", "napari._qt", "napari.layers"))}
    assert not bad, sorted(bad)


def test_opening_the_docks_modules_imports_no_torch():
    """The views' modules import no torch (the catalogue is read in a worker)."""
    code = "; ".join(
        f"import napari_pixelcam.{m}"
        for m in ("_panel", "_viewport", "_separability", "_trainer", "__main__")
    )
    loaded = _modules_after(code)
    assert "torch" not in loaded and "timm" not in loaded


def test_use_trained_sets_every_model_field_from_the_run(tmp_path):
    """Loading a trained run sets EVERY model field: nothing of the bundled models stays,
    so the prediction and the maps shown are the trained model's."""
    if not all(p.exists() for p in _common.SAMPLE_REFERENCES):
        pytest.skip("no bundled reference models")
    negev, unet = (str(p) for p in _common.SAMPLE_REFERENCES)
    s = Session(references=(negev, unet), maps=("cam", "pixelcam", "negev"))
    run = str(tmp_path / "best_loc.json")
    assert s.use_trained(run, "baseline") == "baseline"
    assert (s.pixelcam, s.baseline, s.references) == ("", run, ())
    assert s.maps == ("cam",) and s.selection().classifier == run
    teacher = str(tmp_path / "teacher.json")
    assert s.use_trained(run, "pixelcam", teacher=teacher) == "pixelcam"
    assert (s.pixelcam, s.baseline, s.references) == (run, teacher, ())
    assert s.maps == ("cam", "pixelcam") and s.selection().classifier == run
    assert s.use_trained(run, "pixelcam") == "pixelcam" and s.baseline == ""  # no teacher
    new_unet = str(tmp_path / "unet" / "best_loc.json")
    assert s.use_trained(new_unet, "unet") == "references"
    assert (s.pixelcam, s.baseline, s.references) == ("", "", (new_unet,))
    assert s.maps == ("unet",) and s.selection().classifier == new_unet
    new_negev = str(tmp_path / "negev" / "best_loc.json")
    assert s.use_trained(new_negev, "negev", teacher=teacher) == "references"
    assert (s.pixelcam, s.baseline, s.references) == ("", teacher, (new_negev,))
    assert s.maps == ("negev",)


def test_warm_up_runs_each_item_once_after_the_catalogue():
    s = Session()
    ran: list[str] = []
    s.warm_up(lambda job, done, fail: done(job()), lambda: ran.append("x"))
    assert s.catalogue is not None and ran == ["x"] and s.is_warm()
    s.warm_up(lambda job, done, fail: done(job()))  # nothing left to do
    assert ran == ["x"]


def test_docks_opened_together_start_their_workers_after_the_last_one(qtbot, monkeypatch):
    """Each dock's load_libraries postpones the starts still pending: the warm-up (torch's
    import) begins WORKERS_AFTER_MS after the last dock, not while the next is built; a
    dock closed before its start starts nothing and does not stop the others."""
    import time

    from qtpy.QtWidgets import QWidget

    monkeypatch.setattr(_common, "WORKERS_AFTER_MS", 150)
    started: list[tuple[str, float]] = []
    calls: list[tuple[str, str]] = []

    class FakeSession:
        def __init__(self, name: str) -> None:
            self.name = name
            warmed = SimpleNamespace(connect=lambda slot, **kw: calls.append((name, "warmed")))
            self.events = SimpleNamespace(warmed=warmed)

        def load_catalogue(self, runner):
            started.append((self.name, time.perf_counter()))

        def warm_up(self, runner, *items):
            assert _common.build_unit_registry in items  # the registry comes last
            calls.append((self.name, "warm_up"))

    docks = [QWidget() for _ in range(3)]
    for dock in docks:
        qtbot.addWidget(dock)
    _common.load_libraries(docks[0], FakeSession("panel"))
    qtbot.wait(100)
    _common.load_libraries(docks[1], FakeSession("closed"))
    docks[1].deleteLater()
    qtbot.wait(100)
    last = time.perf_counter()
    _common.load_libraries(docks[2], FakeSession("trainer"))
    qtbot.waitUntil(lambda: len(started) == 2, timeout=5000)
    qtbot.wait(300)
    assert sorted(name for name, _ in started) == ["panel", "trainer"]
    assert all(t - last >= 0.14 for _, t in started)  # none before 150 ms after the last
    assert sorted(calls) == [("panel", "warm_up"), ("panel", "warmed"),
                             ("trainer", "warm_up"), ("trainer", "warmed")]  # fmt: skip


def test_in_turns_lets_the_event_loop_run_between_two_steps(qtbot):
    """A timer that came due during one step fires before the next step starts (input and
    paint get in between), and a failing step is a notification, not the end."""
    import time

    from qtpy.QtCore import QTimer

    beats, log = [], []
    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    heartbeat.start()

    def step(name: str) -> None:
        log.append((name, "start", len(beats)))
        time.sleep(0.06)
        log.append((name, "end", len(beats)))
        if name == "b":
            raise RuntimeError("b failed")

    _common.in_turns([lambda: step("a"), lambda: step("b"), lambda: step("c")])
    qtbot.waitUntil(lambda: len(log) == 6, timeout=5000)
    heartbeat.stop()
    assert [(n, e) for n, e, _ in log] == [(n, e) for n in "abc" for e in ("start", "end")]
    for (_, _, end), (_, _, start) in zip(log[1::2], log[2::2]):
        assert start > end  # a beat between the end of one step and the start of the next


def test_in_turns_paints_each_step_in_a_turn_of_its_own(qtbot):
    """A shown main window does not paint during a step (its updates are held), it is
    repainted after the step and before the next one, and it paints again after a step
    that raised (nothing is left held)."""
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QLabel, QMainWindow

    window = QMainWindow()
    window.setCentralWidget(QLabel("tissue"))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    paints: list[int] = []

    class CountPaints(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Paint:
                paints.append(1)
            return False

    counter = CountPaints()
    window.installEventFilter(counter)
    log: list[tuple[str, bool, int]] = []

    def step(name: str) -> None:
        log.append((name, window.updatesEnabled(), len(paints)))
        if name == "b":
            raise RuntimeError("b failed")

    _common.in_turns([lambda: step("a"), lambda: step("b"), lambda: step("c")])
    qtbot.waitUntil(lambda: len(log) == 3 and window.updatesEnabled(), timeout=5000)
    qtbot.waitUntil(lambda: len(paints) > log[-1][2], timeout=5000)
    assert [held for _, held, _ in log] == [False, False, False]  # held during each step
    counts = [n for _, _, n in log]
    assert counts[1] > counts[0] and counts[2] > counts[1]  # a repaint between two steps
    window.removeEventFilter(counter)


def test_paint_apart_skips_a_window_closed_meanwhile(qtbot):
    from qtpy.QtWidgets import QMainWindow

    window = QMainWindow()
    window.show()
    qtbot.waitExposed(window)
    after: list[int] = []
    with _common.paint_apart(then=lambda: after.append(1)):
        assert not window.updatesEnabled()
        window.deleteLater()
    qtbot.waitUntil(lambda: after == [1], timeout=5000)  # no error from the deleted window


def test_unit_registry_built_off_thread_is_installed_only_while_napari_has_none():
    """The registry built in the warm-up becomes pint's application registry (napari's
    first layer then parses no unit definitions, and its units come from it) only while
    napari has not initialised the lazy default; once it has, nothing is swapped (units
    of two registries do not mix). In a fresh process: pint's registry is process-wide."""
    code = """
import threading
import numpy as np, pint
import napari.layers
from napari_pixelcam import _common
worker = threading.Thread(target=_common.build_unit_registry)
worker.start(); worker.join()
mine = _common._BUILT_UNIT_REGISTRY[0]
assert type(pint.get_application_registry().get()).__name__ == "LazyRegistry"
_common.install_built_unit_registry()
layer = napari.layers.Image(np.zeros((8, 8), np.float32))
assert pint.get_application_registry().get() is mine
assert layer.units[0]._REGISTRY is mine
assert not _common.install_unit_registry(pint.UnitRegistry())
assert pint.get_application_registry().get() is mine
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_unit_registry_is_left_alone_once_napari_used_its_own():
    code = """
import numpy as np, pint
import napari.layers
from napari_pixelcam._common import install_unit_registry
napari.layers.Image(np.zeros((8, 8), np.float32))
own = pint.get_application_registry().get()
assert not install_unit_registry(pint.UnitRegistry())
from napari_pixelcam import _common
_common.build_unit_registry()  # nothing to build: napari has its registry
assert not _common._BUILT_UNIT_REGISTRY
assert pint.get_application_registry().get() is own
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux only")
def test_torch_libraries_preloaded_off_the_lock_then_torch_imports_and_works():
    """In a fresh process the preload maps libtorch into the process without importing
    torch; ``import torch`` then works (a tensor op, autograd); once torch is imported the
    preload does nothing."""
    code = """
import sys
from napari_pixelcam._session import preload_torch_libraries
assert preload_torch_libraries() is True
assert "torch" not in sys.modules
assert "libtorch_cpu.so" in open("/proc/self/maps").read()
import torch
x = torch.ones(3, requires_grad=True)
(x * 2).sum().backward()
assert x.grad.tolist() == [2.0, 2.0, 2.0]
assert preload_torch_libraries() is False
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_layer_changes_are_painted_in_a_turn_of_their_own(make_napari_viewer, qtbot):
    """With the panel's hold on a viewer's layer list, adding or removing a layer (napari's
    own File > Open included) leaves the window unpainted until the next turn, then
    repaints it: the change and its paint are two blocks of the event loop, not one."""
    import numpy as np

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    _common.paint_layer_changes_apart(viewer.layers)
    _common.paint_layer_changes_apart(viewer.layers)  # once per list: a second call adds none
    assert viewer.layers.events.inserted.callbacks.count(_common._hold_paint) == 1
    qtbot.waitUntil(window.updatesEnabled, timeout=5000)
    viewer.add_image(np.zeros((32, 32), np.float32), name="map")
    assert not window.updatesEnabled()  # held: painted in the next turn
    qtbot.waitUntil(window.updatesEnabled, timeout=5000)
    viewer.layers.remove("map")
    assert not window.updatesEnabled()
    qtbot.waitUntil(window.updatesEnabled, timeout=5000)
