"""The refine dock: points in, refined map out, undo, save, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pixelcam import _common as common

TIMEOUT = 120_000


@pytest.fixture
def tile():
    from pixelcam.data.synthetic import generate_tile

    return generate_tile(label=1, size=128, seed=0)


@pytest.fixture
def original(tile):
    """The checkpoint's own PixelCAM map of the tile."""
    from pixelcam.inference import predict_maps
    from pixelcam.models import load_checkpoint

    model, meta = load_checkpoint(common.SAMPLE_PIXELCAM, device="cpu")
    maps = predict_maps(model, tile[0], ["pixelcam"], size=meta.get("eval_size", 224))
    return np.asarray(maps.maps["pixelcam"], dtype=np.float32)


@pytest.fixture
def dock(make_napari_viewer, tile, qtbot):
    from napari_pixelcam._refine import RefineWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(tile[0], name="tile", rgb=True)
    viewer.add_labels(tile[1].astype(np.int32), name="tile mask")
    widget = RefineWidget(viewer)
    widget.session.pixelcam = str(common.SAMPLE_PIXELCAM)
    widget.session.device = "cpu"
    qtbot.addWidget(widget)
    return widget


def _wait(qtbot, dock) -> None:
    qtbot.waitUntil(lambda: not dock.busy, timeout=TIMEOUT)


def _corrections(original: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FG points on the lowest map values, BG points on the highest (3 each, spread)."""
    order = np.argsort(original, axis=None)
    low = np.column_stack(np.unravel_index(order[:200:70], original.shape))
    high = np.column_stack(np.unravel_index(order[::-1][:200:70], original.shape))
    return low, high


def _add_points(dock, coords: np.ndarray, label: int) -> None:
    layer = dock.points
    dock.set_label(label)
    layer.add(coords.astype(float))


def test_refit_follows_points_and_undo_restores(dock, original, qtbot, plugin_errors):
    layer = dock.new_points_layer()
    assert layer is dock.points and layer.name == "refine points [tile]"
    low, high = _corrections(original)
    _add_points(dock, low, 1)
    _add_points(dock, high, 0)
    assert list(dock.points.features["label"]) == [1, 1, 1, 0, 0, 0]
    assert np.allclose(layer.face_color[0], (1.0, 45 / 255, 85 / 255, 1.0))  # FG red
    _wait(qtbot, dock)
    refined = dock.refined_layer("tile")
    assert refined is not None and refined.name == "PixelCAM (refined) [tile]"
    assert refined.data.shape == original.shape
    np.testing.assert_allclose(refined.scale, dock.image.scale)
    first = np.array(refined.data)
    assert (first[tuple(low.T)] > original[tuple(low.T)]).all()
    assert (first[tuple(high.T)] < original[tuple(high.T)]).all()
    assert dock.last_result["n_fg"] == 3 and dock.last_result["n_bg"] == 3
    assert dock.last_result["pxap"] is not None and "PxAP" in dock.status.text()
    assert dock.last_result["base_pxap"] is not None and "was" in dock.status.text()

    # a second correction, then undo: the first refit's map, exactly, in the same layer
    layer.mode = "select"
    layer.selected_data = {0}
    dock.set_label(0)  # relabel the first FG point as BG
    assert list(layer.features["label"])[0] == 0
    _wait(qtbot, dock)
    assert dock.refined_layer("tile") is refined
    assert not np.array_equal(refined.data, first)
    assert dock.can_undo
    dock.undo()
    _wait(qtbot, dock)
    np.testing.assert_array_equal(refined.data, first)
    assert plugin_errors == []


def test_save_writes_a_checkpoint_with_its_parent(dock, original, qtbot, tmp_path, plugin_errors):
    from pixelcam.models import load_checkpoint

    dock.new_points_layer()
    low, high = _corrections(original)
    _add_points(dock, low, 1)
    _add_points(dock, high, 0)
    _wait(qtbot, dock)
    dock.save_refined(tmp_path / "refined")
    qtbot.waitUntil(lambda: dock.last_saved is not None, timeout=TIMEOUT)
    weights, json_path = dock.last_saved
    model, meta = load_checkpoint(json_path, device="cpu")
    assert model.pixel_head is not None
    doc = json.loads(json_path.read_text())["meta"]
    assert doc["refine"]["parent"]["checkpoint"].endswith("sample_pixelcam.json")
    assert doc["refine"]["points"]["tile"] == {"fg": 3, "bg": 3}
    assert doc["refine_points"]["tile"]["labels"] == [1, 1, 1, 0, 0, 0]
    assert plugin_errors == []


def test_points_of_two_images_accumulate(dock, qtbot, plugin_errors):
    from pixelcam.data.synthetic import generate_tile

    dock.new_points_layer()
    _add_points(dock, np.array([[20.0, 20.0]]), 1)
    _wait(qtbot, dock)
    other = generate_tile(label=0, size=96, seed=1)[0]
    dock.viewer.add_image(other, name="other", rgb=True)
    dock.image_combo.setCurrentIndex(dock.image_combo.findData("other"))
    dock.new_points_layer()
    _add_points(dock, np.array([[50.0, 50.0]]), 0)
    _wait(qtbot, dock)
    assert len(dock.refiners) == 1
    refiner = next(iter(dock.refiners.values()))
    assert refiner.image_ids == ["tile", "other"]
    assert dock.last_result["n_fg"] == 1 and dock.last_result["n_bg"] == 1
    assert dock.refined_layer("tile") is not None and dock.refined_layer("other") is not None
    assert plugin_errors == []


def test_point_outside_the_image_is_one_notification(dock, qtbot, plugin_errors):
    dock.new_points_layer()
    _add_points(dock, np.array([[20.0, 20.0], [500.0, 10.0]]), 1)
    qtbot.waitUntil(lambda: len(plugin_errors) > 0, timeout=TIMEOUT)
    _wait(qtbot, dock)
    assert len(plugin_errors) == 1 and "outside the image" in plugin_errors[0]
    assert dock.refined_layer("tile") is None


def test_bad_checkpoint_is_a_notification(dock, qtbot, tmp_path, plugin_errors):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    dock.session.pixelcam = str(bad)
    dock.new_points_layer()
    _add_points(dock, np.array([[20.0, 20.0]]), 1)
    qtbot.waitUntil(lambda: len(plugin_errors) > 0, timeout=TIMEOUT)
    _wait(qtbot, dock)
    assert len(plugin_errors) == 1 and "PixelCAM refine" in plugin_errors[0]
    assert dock.refined_layer("tile") is None
