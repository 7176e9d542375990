"""The review experience (issue 16): overlays a pathologist can read, a compare view that
explains itself, points that follow their labels, models that say what they are, docks
that fit the screen, and a reader that does not ask every time. Every action is driven
through the real window (no timing assertions: ``benchmarks/ui_stalls.py`` measures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_pixelcam import _common as common
from napari_pixelcam import _overlays as ov
from napari_pixelcam import _provenance as prov
from napari_pixelcam._common import SAMPLE_BASELINE, SAMPLE_PIXELCAM, SAMPLE_REFERENCES

PLUGIN = "napari-pixelcam"
GLAS = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "glas"
    / "Warwick_QU_Dataset_(Released_2016_07_08)"
)  # fmt: skip
GLAS_TILE = GLAS / "train_1.png"
needs_glas = pytest.mark.skipif(not GLAS_TILE.is_file(), reason="GlaS images are not here")


@pytest.fixture
def review(make_napari_viewer, plugin_errors, dock_panel):
    viewer = make_napari_viewer()
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "malignant")
    panel = dock_panel(viewer)
    panel.device.value = "cpu"
    return panel, viewer, plugin_errors


def _tile_png(tmp_path: Path, seed: int = 12, size: int = 256) -> Path:
    from PIL import Image

    from pixelcam.data.synthetic import generate_tile

    image, mask = generate_tile(1, size=size, seed=seed)
    path = tmp_path / f"tile{seed}.png"
    Image.fromarray(image).save(path)
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / f"tile{seed}_mask.png")
    return path


# ---------------------------------------------------------------------- overlays
@pytest.mark.parametrize("family", ["baseline", "pixelcam", "decoder", "difference"])
def test_every_style_is_transparent_where_the_map_says_nothing(family):
    style = ov.STYLES[family]
    lo, hi = style.limits
    zero = 0.0 if family == "difference" else lo
    rgba = ov.colorize(np.array([zero, hi]), style)
    assert rgba[0, 3] == 0.0 and rgba[1, 3] > 0.8  # tissue shows; a high value reads
    cmap = ov.colormap(style.name)  # the napari colormap: the same control points
    assert cmap.map(np.array([(zero - lo) / (hi - lo)]))[0, 3] == 0.0


def test_outline_draws_the_map_contour_and_the_mask_contour():
    values = np.zeros((60, 60), np.float32)
    values[10:30, 10:30] = 1.0
    mask = np.zeros((60, 60), np.uint8)
    mask[35:55, 35:55] = 1
    edges = ov.outline(values, 0.5, mask, width=2)
    assert (edges == ov.MAP_EDGE).sum() > 0 and (edges == ov.MASK_EDGE).sum() > 0
    assert not edges[15:25, 15:25].any() and not edges[40:50, 40:50].any()  # no fill
    assert set(np.unique(edges[10:30, 10:30])) <= {0, ov.MAP_EDGE}


def test_threshold_outline_and_mask_outline_over_the_tissue(review):
    panel, viewer, errors = review
    panel.methods.value = ["layercam", "pixelcam"]
    panel.run_button.native.click()
    panel.wait()
    assert not errors, errors
    outline = viewer.layers["outline [synthetic malignant]"]
    assert outline.visible and (np.asarray(outline.data) == ov.MAP_EDGE).any()
    before = int((np.asarray(outline.data) == ov.MAP_EDGE).sum())
    panel.threshold.value = 0.9  # the slider moves: the contour follows
    after = int((np.asarray(outline.data) == ov.MAP_EDGE).sum())
    assert after != before
    mask = viewer.layers["synthetic malignant mask"]
    assert mask.contour > 0 and mask.visible  # an outline, not a fill
    pix = viewer.layers["pixelcam [synthetic malignant]"]
    assert pix.colorbar.visible  # the colour bar of the visible map
    panel.opacity.value = 0.4
    assert pix.opacity == pytest.approx(0.4)


def test_keys_step_through_the_maps(review):
    panel, viewer, errors = review
    panel.methods.value = ["cam", "layercam", "pixelcam"]
    panel.run_maps(wait=True)
    bound = {str(key): func for key, func in viewer.keymap.items()}
    assert "." in bound and "," in bound
    shown = lambda: [  # noqa: E731
        ly.metadata["pixelcam_method"]
        for ly in viewer.layers
        if "pixelcam_method" in ly.metadata and ly.visible
    ]
    assert shown() == ["pixelcam"]
    bound["."](viewer)
    assert shown() == ["cam"] and panel.shown_map.value == "cam"  # wraps around
    # every map's colour bar was made when it was added; napari draws the shown map's only
    canvas = viewer.window._qt_viewer.canvas
    bars = {ly.metadata["pixelcam_method"]: canvas._layer_overlay_to_visual[ly][ly.colorbar]
            for ly in viewer.layers if "pixelcam_method" in ly.metadata}  # fmt: skip
    assert {m: bar.node.visible for m, bar in bars.items()} == {
        "cam": True, "layercam": False, "pixelcam": False}  # fmt: skip
    bound[","](viewer)
    assert shown() == ["pixelcam"]
    assert not errors


# ---------------------------------------------------------------------- the compare view
def test_grid_panes_are_titled_with_their_map_and_pxap(review):
    panel, viewer, errors = review
    panel.methods.value = ["cam", "gradcampp", "layercam", "pixelcam"]
    panel.run_maps(wait=True)
    panel.grid.native.click()  # through the window
    panel.wait()
    assert viewer.grid.enabled
    titles = panel.view.titles()
    pxap = panel.last_result["pxap"]
    for method, name in (("cam", "CAM"), ("gradcampp", "GradCAM++"), ("layercam", "LayerCAM"),
                         ("pixelcam", "PixelCAM")):  # fmt: skip
        layer = viewer.layers[titles[f"{method} [synthetic malignant]"]]
        assert layer.name == f"{name} · PxAP {pxap[method]:.1f}"
        assert layer.visible  # its title is drawn in the pane's band, above the tissue
    constant = panel.last_result["constant_pxap"]
    assert titles["synthetic malignant"] == f"synthetic malignant · constant map {constant:.1f}"
    panel.grid.native.click()
    panel.wait()
    maps = [ly for ly in viewer.layers if "pixelcam_method" in ly.metadata]
    assert [ly.name for ly in maps if ly.visible] == ["pixelcam [synthetic malignant]"]
    assert not viewer.grid.enabled and not errors


def test_the_grid_keeps_its_views_when_it_comes_back_and_the_difference_joins(review):
    """napari rebuilds every pane's view and cameras when its grid changes shape (hundreds
    of ms): shown again, or with the difference's pane added, the grid keeps its shape."""
    panel, viewer, errors = review
    panel.methods.value = ["gradcampp", "layercam", "pixelcam"]
    panel.run_maps(wait=True)
    canvas = viewer.window._qt_viewer.canvas
    panel.grid.value = True
    panel.wait()
    views, shape = canvas.grid, tuple(viewer.grid.shape)
    assert shape[0] * shape[1] >= 5  # image, 3 maps, room for the difference
    panel.grid.value = False
    panel.wait()
    assert not viewer.grid.enabled
    assert all(ly.colorbar.visible for ly in panel.view.maps())  # back, one per turn
    panel.grid.value = True
    panel.wait()
    assert canvas.grid is views
    panel.diff_button.native.click()
    panel.wait()
    assert "pixelcam - gradcampp [synthetic malignant]" in panel.view.titles()
    assert tuple(viewer.grid.shape) == shape and canvas.grid is views
    assert sum(ly.visible for ly in panel.view.panes()) == 5 and not errors


# ---------------------------------------------------------------------- points
def test_point_colours_follow_labels_toggle_and_undo(review, qtbot):
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_pixelcam._common import BG_COLOR, FG_COLOR

    panel, viewer, errors = review
    panel.methods.value = ["pixelcam"]
    panel.run_maps(wait=True)
    panel.points_source.value = viewer.layers["pixelcam [synthetic malignant]"]
    panel.sample_button.native.click()
    points = viewer.layers["seeds [synthetic malignant]"]
    fg, bg = transform_color(FG_COLOR)[0], transform_color(BG_COLOR)[0]

    def colour_of(i: int) -> np.ndarray:
        return np.asarray(points.face_color)[i]

    labels = np.asarray(points.features["label"])
    assert np.allclose(colour_of(int(np.argmax(labels == 1))), fg)
    # napari's features table edits the table in place, with no event: the colour follows
    i = int(np.argmax(labels == 1))
    points.features.loc[i, "label"] = 0
    qtbot.waitUntil(lambda: np.allclose(colour_of(i), bg), timeout=3000)
    # the toggle (the 'b' key on the layer) gives new points the background label
    panel.new_points.value = "BG (b)"
    n = len(points.data)
    points.add([[20.0, 30.0]])
    assert int(points.features["label"].iloc[-1]) == 0 and np.allclose(colour_of(n), bg)
    points.selected_data = set()  # with points selected, the keys would relabel them
    panel.points.set_label(1, points)  # what the 'f' key on the layer does
    points.add([[40.0, 50.0]])
    assert int(points.features["label"].iloc[-1]) == 1 and np.allclose(colour_of(n + 1), fg)
    assert panel.new_points.value == "FG (f)"
    # undo: the last point goes, then the one before, then the relabelling
    panel.undo_button.native.click()
    assert len(points.data) == n + 1
    panel.undo_button.native.click()
    assert len(points.data) == n
    panel.undo_button.native.click()
    assert int(points.features["label"].iloc[i]) == 1 and np.allclose(colour_of(i), fg)
    assert not errors


# ---------------------------------------------------------------------- models
def test_provenance_comes_from_the_checkpoint_json(tmp_path):
    doc = json.loads(SAMPLE_PIXELCAM.read_text())
    metrics = {"valpx_pxap": 61.25, "valcl_acc": 88.0}
    doc["meta"] = {"class_names": ["normal", "tumor"], "eval_size": 192, "epoch": 7,
                   "phase": "pixelcam", "metrics": metrics}  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "best_loc.json").write_text(json.dumps(doc))
    facts = prov.provenance(run / "best_loc.json")
    assert facts.dataset == "unknown" and not facts.demo  # not recorded: never guessed
    assert facts.classes == "normal, tumor" and facts.input_size == "192"
    assert facts.epoch == "7" and facts.val_pxap == "61.2" and facts.val_acc == "88.0%"
    assert facts.backbone.startswith("test_resnet")
    (run / "config.json").write_text(json.dumps({"dataset": "folder", "data_root": "/x",
                                                 "epochs": 20}))  # fmt: skip
    (run / "best_loc.json").write_text(json.dumps(doc) + " ")  # a new stamp: read again
    facts = prov.provenance(run / "best_loc.json")
    assert facts.dataset == "folder (/x)" and facts.epoch == "7 of 20"
    demo = prov.provenance(SAMPLE_PIXELCAM)
    assert demo.demo and demo.dataset.startswith("synthetic") and demo.val_pxap != "unknown"
    # a checkpoint copied away from its run says what it was trained on by itself
    doc["meta"].update(dataset="glas", data_root="/data/glas", epochs=30)
    alone = tmp_path / "copied"
    alone.mkdir()
    (alone / "model.json").write_text(json.dumps(doc))
    facts = prov.provenance(alone / "model.json")
    assert facts.dataset == "glas (/data/glas)" and facts.epoch == "7 of 30"


def test_bundled_models_say_they_are_demo_models():
    for path in (SAMPLE_PIXELCAM, SAMPLE_BASELINE, *SAMPLE_REFERENCES):
        meta = json.loads(path.read_text())["meta"]
        assert meta["demo"] is True and meta["dataset"] == "synthetic"


def test_the_panel_shows_each_models_provenance(review):
    panel, _, _ = review
    text = panel.model_info.value
    assert text.count("DEMO model") == 4 and "trained on synthetic" in text
    assert "its validation PxAP 95.8" in text  # sample_pixelcam.json's own record


def test_demo_check_passes_generated_tiles_of_any_size():
    from pixelcam.data.synthetic import generate_tile

    for label, size, seed in ((0, 96, 1), (1, 160, 2), (0, 256, 3), (1, 512, 4)):
        assert not prov.demo_mismatch(generate_tile(label, size=size, seed=seed)[0])


@needs_glas
def test_demo_check_flags_every_real_glas_tile():
    from PIL import Image

    tiles = sorted(p for p in GLAS.glob("*.png") if not p.stem.endswith("_anno"))
    assert tiles
    flagged = [prov.demo_mismatch(np.asarray(Image.open(p).convert("RGB"))) for p in tiles]
    assert all(flagged), [p.name for p, f in zip(tiles, flagged) if not f]


@needs_glas
def test_demo_notice_on_a_real_glas_tile_offers_training(make_napari_viewer, plugin_errors,
                                                        dock_panel):  # fmt: skip
    viewer = make_napari_viewer()
    viewer.open(str(GLAS_TILE), plugin=PLUGIN)
    panel = dock_panel(viewer)
    panel.device.value = "cpu"
    panel.methods.value = ["layercam", "pixelcam"]
    panel.run_button.native.click()
    panel.wait()
    assert not plugin_errors, plugin_errors
    assert panel.last_result["demo_mismatch"] and not panel.demo_notice.native.isHidden()
    assert "not meaningful here" in panel.result_label.value
    assert not panel.train_button.native.isHidden()
    panel.train_button.native.click()  # "Train on my images": the trainer, prefilled
    trainer = viewer.window.dock_widgets["PixelCAM trainer (napari-pixelcam)"]
    s = trainer.settings()
    assert Path(s["data_root"]) == GLAS and s["dataset"] == "glas"
    assert (s["resize"], s["eval_size"]) == (640, 640)  # the GlaS recipe (issue 19)
    assert "glas recipe" in trainer.status.text()


def test_no_demo_notice_on_a_generated_tile(make_napari_viewer, plugin_errors, dock_panel,
                                            tmp_path):  # fmt: skip
    viewer = make_napari_viewer()
    viewer.open(str(_tile_png(tmp_path)), plugin=PLUGIN)
    panel = dock_panel(viewer)
    panel.device.value = "cpu"
    panel.methods.value = ["pixelcam"]
    panel.run_maps(wait=True)
    assert not plugin_errors, plugin_errors
    assert not panel.last_result["demo_mismatch"] and panel.demo_notice.native.isHidden()
    assert panel.result_label.value.startswith("demo model: ")
    # a plain tile and a model without a pixel size: no scale line on every result
    assert "µm" not in panel.result_label.value and "unknown" not in panel.result_label.value


def test_a_loaded_baseline_run_predicts_alone(review):
    """'Load into panel' of a baseline run leaves no bundled model: the shown prediction
    and maps are the run's own (here the bundled baseline stands in for a run)."""
    panel, viewer, errors = review
    assert panel.session.use_trained(str(SAMPLE_BASELINE), "baseline") == "baseline"
    assert panel.session.pixelcam == "" and panel.session.references == ()
    assert panel.methods.value == ["layercam"]
    panel.run_maps(wait=True)
    assert not errors, errors
    assert "layercam [synthetic malignant]" in viewer.layers
    assert "pixelcam [synthetic malignant]" not in viewer.layers
    assert panel.last_result["pred"] in ("benign", "malignant")
    assert "PixelCAM</b>" not in panel.model_info.value and "baseline</b>" in panel.model_info.value


# ---------------------------------------------------------------------- layout
@pytest.mark.parametrize("size", [(1600, 1000), (1920, 1080)])
def test_three_docks_fit_the_screen(make_napari_viewer, qtbot, size):
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*size)
    viewer.open_sample(PLUGIN, "malignant")
    docks = [
        viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
        for name in ("PixelCAM", "PixelCAM trainer", "PixelCAM separability")
    ]
    qtbot.waitUntil(lambda: docks[0].session.ready, timeout=60000)
    qtbot.wait(200)
    window = viewer.window._qt_window
    assert (window.width(), window.height()) == size  # nothing grew the window
    for dock in docks:
        root = getattr(dock, "root_native_widget", dock)
        assert root.height() >= 150, root.height()  # usable, not a strip
        for area in [root, *root.findChildren(QScrollArea)]:
            if isinstance(area, QScrollArea) and area.widget() is not None:
                need = area.widget().minimumSizeHint().width()
                assert need <= area.viewport().width() + 1, (type(dock).__name__, need)


# ---------------------------------------------------------------------- the reader
def test_the_plugin_reader_is_preferred_and_the_builtins_stay(make_napari_viewer, dock_panel,
                                                              tmp_path):  # fmt: skip
    from napari.settings import get_settings

    from napari_pixelcam._reader import PREFERRED_PATTERNS

    settings = get_settings()
    settings.plugins.extension2reader = {"*.tif": "napari"}  # the user's own choice
    viewer = make_napari_viewer()
    dock_panel(viewer)
    prefs = settings.plugins.extension2reader
    assert prefs["*.tif"] == "napari"  # never overridden
    assert all(prefs[p] == PLUGIN for p in PREFERRED_PATTERNS if p != "*.tif")
    png = _tile_png(tmp_path)
    layers = viewer.open(str(png), plugin=None)  # as File > Open: no reader to choose
    assert [ly.name for ly in layers] == ["tile12", "tile12 mask"]  # with its mask
    builtin = viewer.open(str(png), plugin="napari")  # napari's own reader still there
    assert len(builtin) == 1 and builtin[0].data.shape[:2] == (256, 256)


# ---------------------------------------------------------------------- the whole review
def test_every_review_step_runs_in_the_real_window(make_napari_viewer, plugin_errors,
                                                   tmp_path, monkeypatch):  # fmt: skip
    """The steps ``benchmarks/ui_stalls.py`` times, driven the same way through the window
    (buttons, the reader, the docks), checked for their results, not their timings."""
    import importlib.util

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "ui_stalls.py"
    spec = importlib.util.spec_from_file_location("ui_stalls", path)
    ui_stalls = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ui_stalls)
    viewer = make_napari_viewer(show=True)
    bench = ui_stalls.Bench(tmp_path, viewer=viewer, big_side=2500)
    bench.run_pass(1)
    assert not plugin_errors, plugin_errors
    steps = [row["step"] for row in bench.rows]
    assert steps[0] == "dock PixelCAM" and steps[-1] == "2500 px image maps"
    assert all(row["max_block_ms"] >= 0 for row in bench.rows)
    layers = viewer.layers
    for method in ("cam", "gradcampp", "layercam", "pixelcam", "negev", "unet"):
        assert f"{method} [tile0]" in layers
    assert "pixelcam - cam [tile0]" in layers and "seeds [tile0]" in layers
    assert set(bench.sep.last_result) == {"baseline", "pixelcam"}
    assert bench.trainer.history and bench.trainer.done_event is not None
    big = layers["pixelcam [big]"]  # the 2500 px image: computed on a 1250 px copy
    assert big.data.shape == (1250, 1250) and tuple(big.scale) == (2.0, 2.0)


# ---------------------------------------------------------------------- stalls
def test_imports_are_frozen_out_of_collections_and_closed_layers_are_freed(review, qtbot):
    """napari collects garbage on every layer removal; after the warm-up the imported
    objects are frozen (gc.freeze) so that costs ~0 ms, yet a layer that was open at
    freeze time is still freed when closed, and closing the viewer unfreezes."""
    import gc
    import weakref

    panel, viewer, _ = review
    qtbot.waitUntil(lambda: panel.session.is_warm() and gc.get_freeze_count() > 0, timeout=120_000)
    tissue = common.unwrap(viewer.layers[0])
    gone = weakref.ref(tissue)
    del tissue
    viewer.layers.pop(0)
    qtbot.waitUntil(lambda: gone() is None and gc.get_freeze_count() > 0, timeout=10_000)
    viewer.close()  # the docks go with the window: nothing stays frozen
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0, timeout=10_000)
