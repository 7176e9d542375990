"""The PixelCAM panel end to end on the sample tile, with the bundled sample models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pixelcam._common import SAMPLE_BASELINE, SAMPLE_PIXELCAM
from pixelcam.annotations import load_annotations

PLUGIN = "napari-pixelcam"


@pytest.fixture
def panel_and_viewer(make_napari_viewer, plugin_errors, dock_panel):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "malignant")
    panel = dock_panel(viewer)
    panel.device.value = "cpu"
    return panel, viewer, plugin_errors


def test_maps_become_aligned_layers_with_pxap(panel_and_viewer):
    panel, viewer, errors = panel_and_viewer
    image = viewer.layers["synthetic malignant"]
    image.scale = (0.5, 0.5)
    image.translate = (10.0, 20.0)
    panel.methods.value = ["cam", "gradcampp", "layercam", "pixelcam"]
    panel.run_maps(wait=True)
    assert not errors, errors
    for method in ("cam", "gradcampp", "layercam", "pixelcam"):
        layer = viewer.layers[f"{method} [synthetic malignant]"]
        assert layer.data.shape == image.data.shape[:2]
        assert 0.0 <= layer.data.min() <= layer.data.max() <= 1.0
        assert np.allclose(layer.scale, (0.5, 0.5)) and np.allclose(layer.translate, (10, 20))
        # translucent, with a colormap whose low end is transparent (the tissue shows)
        assert layer.blending == "translucent" and layer.metadata["pixelcam_method"] == method
        assert layer.colormap.map(np.array([0.0]))[0, 3] == 0.0
        assert layer.colormap.map(np.array([1.0]))[0, 3] > 0.8
    # one map over the image (PixelCAM), its colour bar and outline with it
    shown = [m for m in ("cam", "gradcampp", "layercam", "pixelcam")
             if viewer.layers[f"{m} [synthetic malignant]"].visible]  # fmt: skip
    assert shown == ["pixelcam"]
    assert viewer.layers["pixelcam [synthetic malignant]"].colorbar.visible
    assert viewer.layers["outline [synthetic malignant]"].visible
    assert viewer.layers["synthetic malignant mask"].contour > 0  # the mask as an outline
    text = panel.result_label.value
    assert text.startswith("demo model: ") and "PxAP (constant map " in text
    assert set(panel.last_result["pxap"]) == {"cam", "gradcampp", "layercam", "pixelcam"}
    mask = viewer.layers["synthetic malignant mask"].data > 0
    assert panel.last_result["constant_pxap"] == pytest.approx(100 * mask.mean(), abs=0.2)
    assert not panel.last_result["demo_mismatch"]  # a generated tile: no demo notice
    assert panel.demo_notice.native.isHidden()
    # the bundled PixelCAM model localizes the glands of the sample tile better than LayerCAM
    assert panel.last_result["pxap"]["pixelcam"] > panel.last_result["pxap"]["layercam"]


def test_the_result_line_is_scrolled_into_view(make_napari_viewer, plugin_errors, dock_panel,
                                               qtbot):  # fmt: skip
    """Three docks leave the panel ~250 px: its result line is below the fold until maps
    are computed, then the panel scrolls to it."""
    from qtpy.QtCore import QPoint

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "malignant")
    panel, errors = dock_panel(viewer), plugin_errors
    panel.device.value = "cpu"
    panel.native.setFixedHeight(250)
    qtbot.wait(50)
    viewport = panel.native.viewport()

    def top() -> int:
        return panel.result_label.native.mapTo(viewport, QPoint(0, 0)).y()

    assert top() > viewport.height()  # below the fold before
    panel.methods.value = ["layercam"]
    panel.run_maps(wait=True)
    assert not errors, errors
    label = panel.result_label.native
    qtbot.waitUntil(lambda: top() >= 0 and top() + label.height() <= viewport.height())
    assert "PxAP" in panel.result_label.value


def test_negev_and_unet_maps_join_the_compare_view(panel_and_viewer):
    """The bundled references (NEGEV over the sample baseline, a fully supervised U-Net)
    give their maps beside PixelCAM's, each in its own grid pane."""
    panel, viewer, errors = panel_and_viewer
    assert [p.name for p in panel.references.value] == ["sample_negev.json", "sample_unet.json"]
    panel.methods.value = ["layercam", "pixelcam", "negev", "unet"]
    panel.run_maps(wait=True)
    assert not errors, errors
    image = viewer.layers["synthetic malignant"]
    for method in ("negev", "unet"):
        layer = viewer.layers[f"{method} [synthetic malignant]"]
        assert layer.data.shape == image.data.shape[:2] and layer.data.dtype == np.float32
        assert 0.0 <= layer.data.min() <= layer.data.max() <= 1.0
    pxap = panel.last_result["pxap"]
    assert set(pxap) == {"layercam", "pixelcam", "negev", "unet"}
    assert pxap["unet"] > pxap["layercam"]  # full supervision beats the weak baseline here
    panel.grid.value = True
    panel.wait()  # the panes are composed in a worker, shown one per event-loop turn
    assert viewer.grid.enabled
    titles = panel.view.titles()  # map layer -> its pane's title (and the image pane's)
    assert len(titles) == 5 and titles["unet [synthetic malignant]"].startswith("U-Net · PxAP")
    # without reference files, asking for their maps is a clear error, not a crash
    panel.references.value = []
    panel.methods.value = ["pixelcam", "unet"]
    panel.run_maps(wait=True)
    assert errors and "NEGEV / U-Net models" in errors[-1]


def test_compare_grid_and_difference(panel_and_viewer):
    panel, viewer, errors = panel_and_viewer
    panel.methods.value = ["layercam", "pixelcam"]
    panel.run_maps(wait=True)
    panel.grid.value = True
    panel.wait()  # the panes are composed in a worker, then shown one per event-loop turn
    assert viewer.grid.enabled and viewer.grid.stride == 1
    # one titled pane per map (and the image's, with the mask), the only visible layers,
    # at the bottom of the list in pane order
    titles = panel.view.titles()
    assert titles == {
        "synthetic malignant": titles["synthetic malignant"],
        "layercam [synthetic malignant]": titles["layercam [synthetic malignant]"],
        "pixelcam [synthetic malignant]": titles["pixelcam [synthetic malignant]"],
    }
    assert titles["layercam [synthetic malignant]"].startswith("LayerCAM · PxAP ")
    assert titles["synthetic malignant"].startswith("synthetic malignant · constant map ")
    visible = [ly.name for ly in viewer.layers if ly.visible]
    assert visible == [ly.name for ly in viewer.layers][:3] == list(titles.values())
    assert panel.image_combo.choices == (viewer.layers["synthetic malignant"],)
    panel.grid.value = False
    panel.wait()
    assert not viewer.grid.enabled
    maps = [viewer.layers[f"{m} [synthetic malignant]"] for m in ("layercam", "pixelcam")]
    assert [m.visible for m in maps] == [False, True]  # ONE map over the image
    assert viewer.layers["synthetic malignant"].visible
    assert not any(ly.visible for ly in panel.view.panes())
    assert panel.difference_map() == "pixelcam - layercam [synthetic malignant]"
    panel.wait()  # added, then shown, in the next event-loop turns
    diff = viewer.layers["pixelcam - layercam [synthetic malignant]"]
    expected = maps[1].data - maps[0].data
    assert np.allclose(diff.data, expected) and diff.data.min() >= -1 and diff.data.max() <= 1
    # drawn over the tissue (the image visible under it), transparent at zero
    assert diff.visible and viewer.layers["synthetic malignant"].visible
    assert diff.colormap.map(np.array([0.5]))[0, 3] == 0.0  # 0.5 of [-1, 1] = zero
    assert not maps[1].visible
    panel.grid.value = True  # the difference gets its pane, with the tissue under it
    panel.wait()
    assert panel.view.titles()["pixelcam - layercam [synthetic malignant]"] == "Difference"
    assert not errors


def test_sample_points_edit_save_and_reload(panel_and_viewer, tmp_path):
    panel, viewer, errors = panel_and_viewer
    panel.methods.value = ["pixelcam"]
    panel.run_maps(wait=True)
    panel.points_source.value = viewer.layers["pixelcam [synthetic malignant]"]
    panel.n_points.value = 7
    points = panel.sample_points()
    labels = np.asarray(points.features["label"])
    assert (labels == 1).sum() + (labels == 0).sum() == len(points.data) and len(labels) >= 12
    assert set(points.features["source"]) == {"pixelcam"}
    # foreground seeds sit where the map is high
    pmap = viewer.layers["pixelcam [synthetic malignant]"].data
    rc = points.data.astype(int)
    assert (
        pmap[rc[labels == 1, 0], rc[labels == 1, 1]].mean()
        > pmap[rc[labels == 0, 0], rc[labels == 0, 1]].mean()
    )
    # the user adds a background point with napari's own tools (the panel's toggle gives
    # new points their label), then saves
    panel.new_points.value = "BG (b)"
    points.add([[5.0, 6.0]])
    assert int(points.features["label"].iloc[-1]) == 0
    out = panel.save_annotations(tmp_path / "tile.points.csv")
    ann = load_annotations(out)
    assert len(ann.points) == len(points.data)
    assert ann.image_shape == pmap.shape
    assert any(p.row == 5.0 and p.col == 6.0 and p.label == 0 for p in ann.points)
    assert not errors


def test_bad_checkpoint_notifies_and_viewer_stays_usable(panel_and_viewer, tmp_path):
    panel, viewer, errors = panel_and_viewer
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    panel.checkpoint.value = bad
    n_layers = len(viewer.layers)
    panel.run_maps(wait=True)
    assert errors and "broken.json" in errors[-1]
    assert len(viewer.layers) == n_layers and panel.run_button.enabled
    viewer.add_image(np.zeros((8, 8)))  # still usable


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(0).integers(0, 65535, (96, 120), dtype=np.uint16),
        np.random.default_rng(1).random((96, 120, 4)).astype(np.float32),
    ],
    ids=["gray16", "rgba-float"],
)
def test_grayscale_16bit_and_rgba_images_work(panel_and_viewer, data):
    panel, viewer, errors = panel_and_viewer
    layer = viewer.add_image(data, name="odd", rgb=data.ndim == 3)
    panel.image_combo.value = layer
    panel.methods.value = ["pixelcam"]
    panel.run_maps(wait=True)
    assert not errors, errors
    assert viewer.layers["pixelcam [odd]"].data.shape == (96, 120)


def test_nan_and_stack_images_give_a_notification(panel_and_viewer):
    panel, viewer, errors = panel_and_viewer
    stack = viewer.add_image(np.zeros((5, 64, 64), np.float32), name="stack")
    panel.image_combo.value = stack
    panel.run_maps(wait=True)
    assert errors and "stack" in errors[-1].lower()
    nan = np.full((64, 64), np.nan, np.float32)
    layer = viewer.add_image(nan, name="nan")
    panel.image_combo.value = layer
    panel.methods.value = ["pixelcam"]
    panel.run_maps(wait=True)  # nothing to map: one message, no layer, no crash
    assert "no finite pixel" in errors[-1] and "pixelcam [nan]" not in viewer.layers
    assert panel.run_button.enabled


def test_panel_lists_come_from_the_registries(panel_and_viewer):
    from pixelcam.cams.base import MAP_METHODS
    from pixelcam.device import DEVICES
    from pixelcam.pseudo_labels import SAMPLERS

    panel, _, _ = panel_and_viewer
    assert list(panel.methods.choices) == MAP_METHODS.names()
    assert list(panel.sampler.choices) == SAMPLERS.names()
    assert list(panel.device.choices) == DEVICES.names()


def test_docks_share_the_session_and_live_mode_uses_the_panels_rule(
    panel_and_viewer, qtbot, monkeypatch, tmp_path
):
    """The panel, its live mode and the separability dock are views of one session: a
    choice made in one shows in the others, and the panel and the live mode ask the same
    rule which checkpoint gives which map."""
    from napari_pixelcam._session import session_for

    panel, viewer, errors = panel_and_viewer
    session = session_for(viewer)
    assert panel.session is session
    _, sep = viewer.window.add_plugin_dock_widget(PLUGIN, "PixelCAM separability")
    assert sep.session is session and sep.baseline_edit.text() == session.baseline
    other = tmp_path / "other.json"
    panel.baseline.value = other
    assert session.baseline == str(other) and sep.baseline_edit.text() == str(other)
    sep.pixelcam_edit.setText(str(other))
    sep.pixelcam_edit.editingFinished.emit()
    assert session.pixelcam == str(other) and str(panel.checkpoint.value) == str(other)
    session.pixelcam, session.baseline = str(SAMPLE_PIXELCAM), str(SAMPLE_BASELINE)
    assert Path(panel.checkpoint.value) == SAMPLE_PIXELCAM
    assert Path(panel.baseline.value) == SAMPLE_BASELINE
    assert sep.pixelcam_edit.text() == str(SAMPLE_PIXELCAM)

    asked = []
    real = session.map_sources
    monkeypatch.setattr(session, "map_sources", lambda sel=None: asked.append(sel) or real(sel))
    panel.methods.value = ["cam", "pixelcam"]
    panel.run_maps(wait=True)
    assert not errors, errors
    live = panel.live
    live.tile_box.value = 384
    live.checkbox.value = True
    qtbot.waitUntil(lambda: len(live.runs) == 1 and not live.busy, timeout=30000)
    assert not errors, errors
    assert len(asked) == 2 and asked[0] == asked[1]
    assert real(asked[0]) == {"cam": session.baseline, "pixelcam": session.pixelcam}
    assert "cam live [synthetic malignant]" in viewer.layers
