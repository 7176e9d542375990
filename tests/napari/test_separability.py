"""The separability dock: docked through the manifest, computed on the sample tile with two
tiny random checkpoints, linked to Points layers, and robust to bad input."""

from __future__ import annotations

import numpy as np
import pytest

PLUGIN = "napari-pixelcam"
COLUMNS = {"tsne_x", "tsne_y", "label", "model", "row", "col"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny resnet18 checkpoints (random weights; input 96 -> a 12x12 feature grid)."""
    import torch

    from pixelcam.models import build_model, save_checkpoint

    out = tmp_path_factory.mktemp("ckpt")
    paths = []
    for i, name in enumerate(("baseline", "pixelcam")):
        torch.manual_seed(i)
        model = build_model("resnet18", num_classes=2, pixel_head="linear")
        meta = {"class_names": ["benign", "malignant"], "eval_size": 96}
        paths.append(str(save_checkpoint(model, out / name, meta=meta)[1]))
    return paths


@pytest.fixture
def notes(monkeypatch):
    """Errors and warnings the dock sends to napari's notifications."""
    import napari.utils.notifications as nt

    seen: dict[str, list[str]] = {"error": [], "warning": []}
    monkeypatch.setattr(nt, "show_error", seen["error"].append)
    monkeypatch.setattr(nt, "show_warning", seen["warning"].append)
    return seen


@pytest.fixture
def dock(make_napari_viewer, checkpoints, notes):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "malignant")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "PixelCAM separability")
    widget.baseline_edit.setText(checkpoints[0])
    widget.pixelcam_edit.setText(checkpoints[1])
    widget.points_spin.setValue(100)  # subsample: fewer t-SNE points, faster
    return widget, viewer


def _run(widget, qtbot) -> None:
    widget.compute()
    assert widget.busy
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)


def test_dock_computes_both_models_and_links_the_scatter(dock, qtbot, notes):
    from napari_pixelcam._separability import SeparabilityWidget

    widget, viewer = dock
    assert isinstance(widget, SeparabilityWidget)
    image, mask = viewer.layers["synthetic malignant"], viewer.layers["synthetic malignant mask"]
    assert widget.image_combo.currentData() is image
    assert widget.label_combo.currentData() is mask  # the Labels layer is picked by itself
    _run(widget, qtbot)
    assert notes["error"] == [], notes["error"]

    assert set(widget.last_result) == {"baseline", "pixelcam"}
    js = [widget.last_result[k]["embedding"].j for k in ("baseline", "pixelcam")]
    assert all(np.isfinite(j) and j > 0 for j in js)
    text = widget.result_label.text()
    assert f"J baseline = {js[0]:.3f}" in text and f"J PixelCAM = {js[1]:.3f}" in text
    titles = [ax.get_title() for ax in widget.figure.axes]
    assert titles == [f"baseline\nJ = {js[0]:.3f}", f"PixelCAM\nJ = {js[1]:.3f}"]

    mdata = np.asarray(mask.data)
    # the dock's J is the library metric's J of the same feature map and mask
    from pixelcam.inference import predict_maps
    from pixelcam.metrics import feature_map_separability
    from pixelcam.models import load_checkpoint

    model, _ = load_checkpoint(widget.pixelcam_edit.text())
    feats = predict_maps(model, image.data, [], size=96).features
    assert np.isclose(js[1], feature_map_separability(feats, mdata), rtol=1e-4)
    for key, name in (("baseline", "baseline"), ("pixelcam", "PixelCAM")):
        layer = viewer.layers[f"t-SNE pixels ({name})"]
        emb = widget.last_result[key]["embedding"]
        assert set(layer.features.columns) >= COLUMNS
        assert len(layer.data) == len(emb.xy) == 100 and emb.feature_hw == (12, 12)
        assert np.allclose(layer.features["tsne_x"], emb.xy[:, 0])
        assert set(layer.features["model"]) == {name}
        # a point sits at its cell's centre (12x12 cells of 32 px) on a pixel of its class
        assert np.allclose(layer.data, np.c_[emb.rows, emb.cols] * 32 + 15.5)
        on_mask = mdata[tuple(np.round(layer.data).astype(int).T)]
        assert (on_mask == layer.features["label"]).mean() > 0.85
        assert np.allclose(layer.scale, image.scale) and np.allclose(layer.translate, (0, 0))

    # a box in the PixelCAM scatter selects exactly those points in its layer
    emb = widget.last_result["pixelcam"]["embedding"]
    x0, y0 = np.median(emb.xy, axis=0)
    x1, y1 = emb.xy.max(axis=0) + 1
    idx = widget.select_box("pixelcam", x1, x0, y0, y1)  # corners in any order
    expected = np.flatnonzero((emb.xy[:, 0] >= x0) & (emb.xy[:, 1] >= y0))
    assert 0 < len(idx) < 100 and np.array_equal(idx, expected)
    layer = viewer.layers["t-SNE pixels (PixelCAM)"]
    assert layer.selected_data == set(expected.tolist())
    assert viewer.layers.selection.active is layer
    border = layer.border_color[:, 3]  # selected pixels get an opaque (white) border
    assert np.array_equal(np.flatnonzero(border > 0.5), expected)
    # one t-SNE layer is shown at a time; selecting in the baseline plot shows its layer
    base = viewer.layers["t-SNE pixels (baseline)"]
    assert not base.visible
    assert len(widget.select_box("baseline", -1e9, 1e9, -1e9, 1e9)) == 100
    assert base.visible and base.selected_data == set(range(100))
    assert viewer.layers.selection.active is base
    assert len(widget._highlights["pixelcam"].get_offsets()) == len(idx)
    assert "selected" in widget.result_label.text()


def test_mouse_drag_in_the_scatter_selects_points(dock, qtbot, notes):
    """The RectangleSelector is wired: a real drag on the canvas reaches the layer."""
    from matplotlib.backend_bases import MouseEvent

    widget, viewer = dock
    widget.baseline_edit.setText("")  # one model only: one scatter
    _run(widget, qtbot)
    assert notes["error"] == [] and len(widget.figure.axes) == 1
    assert "t-SNE pixels (baseline)" not in viewer.layers
    ax, canvas = widget.figure.axes[0], widget.canvas
    canvas.draw()
    emb = widget.last_result["pixelcam"]["embedding"]
    hi = np.median(emb.xy, axis=0)
    lo = np.array([ax.get_xlim()[0], ax.get_ylim()[0]])
    lo = lo + 0.02 * (hi - lo)  # just inside the lower-left corner of the axes
    (px0, py0), (px1, py1) = ax.transData.transform([lo, hi])
    for kind, (x, y) in (
        ("button_press_event", (px0, py0)),
        ("motion_notify_event", ((px0 + px1) / 2, (py0 + py1) / 2)),
        ("motion_notify_event", (px1, py1)),
        ("button_release_event", (px1, py1)),
    ):
        MouseEvent(kind, canvas, x, y, button=1)._process()
    expected = np.flatnonzero(((emb.xy >= lo) & (emb.xy <= hi + 1e-3)).all(axis=1))
    layer = viewer.layers["t-SNE pixels (PixelCAM)"]
    assert len(expected) > 0 and layer.selected_data == set(expected.tolist())


def test_points_with_labels_as_source_and_layer_transform(dock, qtbot, notes):
    widget, viewer = dock
    widget.baseline_edit.setText("")
    image = viewer.layers["synthetic malignant"]
    image.scale, image.translate = (0.5, 0.5), (10.0, 20.0)
    mask = np.asarray(viewer.layers["synthetic malignant mask"].data)
    viewer.layers.remove("synthetic malignant mask")
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 383, size=(300, 2))
    labels = mask[tuple(np.round(coords).astype(int).T)].astype(int)
    # points live in world coordinates through their own transform: same world place
    viewer.add_points(coords * 0.5 + (10, 20), features={"label": labels}, name="seeds")
    assert widget.label_combo.currentText() == "seeds (points)"
    # a Points layer without a 'label' feature is listed once it has one (on opening the list)
    other = viewer.add_points(coords[:20] * 0.5 + (10, 20), name="late")
    assert widget.label_combo.count() == 1
    other.features = {"label": labels[:20]}
    widget.label_combo.showPopup()
    widget.label_combo.hidePopup()
    assert widget.label_combo.count() == 2 and widget.label_combo.currentText() == "seeds (points)"
    viewer.layers.remove(other)
    _run(widget, qtbot)
    assert notes["error"] == [], notes["error"]
    layer = viewer.layers["t-SNE pixels (PixelCAM)"]
    assert np.allclose(layer.scale, (0.5, 0.5)) and np.allclose(layer.translate, (10, 20))
    emb = widget.last_result["pixelcam"]["embedding"]
    # every labelled cell holds seeds of that label: compare with the cells' seeds
    cells = np.floor((coords + 0.5) * 12 / 384).astype(int)
    for r, c, lab in zip(emb.rows, emb.cols, emb.labels):
        here = labels[(cells[:, 0] == r) & (cells[:, 1] == c)]
        assert 2 * (here == lab).sum() > len(here)
    # the t-SNE layers themselves are never offered as label sources
    assert [widget.label_combo.itemText(i) for i in range(widget.label_combo.count())] == [
        "seeds (points)"
    ]


def test_bad_input_becomes_a_notification_and_viewer_stays_usable(dock, qtbot, notes, tmp_path):
    widget, viewer = dock
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    widget.pixelcam_edit.setText(str(bad_json))
    widget.compute()  # fails before any work (after the import warm-up, if still running)
    qtbot.waitUntil(lambda: not widget.busy and bool(notes["error"]), timeout=30000)
    assert len(notes["error"]) == 1 and "bad.json" in notes["error"][0]

    # a json that reads but weights that do not: fails inside the worker
    import shutil

    good = widget.baseline_edit.text()
    stem = tmp_path / "corrupt"
    shutil.copy(good, f"{stem}.json")
    (tmp_path / "corrupt.safetensors").write_bytes(b"garbage")
    widget.pixelcam_edit.setText(f"{stem}.json")
    widget.baseline_edit.setText("")
    _run(widget, qtbot)
    assert len(notes["error"]) == 2 and "corrupt.safetensors" in notes["error"][1]
    assert widget.compute_button.isEnabled() and not widget.progress.isVisible()
    assert "error" in widget.result_label.text()
    assert not [ly for ly in viewer.layers if ly.name.startswith("t-SNE")]

    widget.pixelcam_edit.setText("")
    widget.compute()
    assert "at least one checkpoint" in notes["error"][-1]
    widget.pixelcam_edit.setText(good)
    mask = viewer.layers["synthetic malignant mask"]
    mask.scale = (2.0, 2.0)  # the mask no longer lies over the image
    widget.compute()
    assert "does not cover the same area" in notes["error"][-1] and not widget.busy
    viewer.layers.remove(mask)
    widget.compute()
    assert "no pixel labels" in notes["error"][-1] and not widget.busy
    assert len(widget.select_box("pixelcam", 0, 1, 0, 1)) == 0 and notes["warning"]
    viewer.add_image(np.zeros((8, 8)), name="still works")  # the viewer is still usable
    assert widget.image_combo.count() == 2
