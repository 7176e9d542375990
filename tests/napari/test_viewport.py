"""Live mode of the panel: maps of the visible tiles of a multiscale image, refined as the
user pans, cached tiles reused, stale workers quit."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_pixelcam._session import session_for

PLUGIN = "napari-pixelcam"
SCALE, TRANSLATE = np.array([0.5, 0.5]), np.array([10.0, 20.0])


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models on a busy shared machine, where threads only wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pyramid() -> list[np.ndarray]:
    """A 3-level RGB pyramid, 2048 px at level 0: 4 x 4 generated H&E tiles."""
    from pixelcam.data.synthetic import generate_tile
    from pixelcam.slide.writer import downsample2

    rows = [
        np.concatenate([generate_tile(1, 512, seed=4 * r + c)[0] for c in range(4)], axis=1)
        for r in range(4)
    ]
    level0 = np.concatenate(rows, axis=0)
    level1 = downsample2(level0)
    return [level0, level1, downsample2(level1)]


@pytest.fixture
def live_setup(make_napari_viewer, monkeypatch, pyramid, plugin_errors, dock_panel):
    import pixelcam.slide.region as region

    errors = plugin_errors
    calls: list[float] = []  # one entry per model call (one tile each in the live mode)
    slow = {"s": 0.0}
    real = region._run_model

    def counting(*args):
        calls.append(time.perf_counter())
        time.sleep(slow["s"])
        return real(*args)

    monkeypatch.setattr(region, "_run_model", counting)
    viewer = make_napari_viewer()
    image = viewer.add_image(
        pyramid, multiscale=True, rgb=True, name="slide", scale=SCALE, translate=TRANSLATE
    )
    session = session_for(viewer)  # chosen before docking: the first live view uses them
    session.device = "cpu"
    session.maps = ["pixelcam"]
    panel = dock_panel(viewer)
    assert panel.device.value == "cpu" and panel.methods.value == ["pixelcam"]
    return panel, viewer, image, calls, slow, errors


def _look_at(viewer, image, center0, zoom: float | None = None) -> None:
    """Centre the camera on level-0 pixel ``center0`` of the image."""
    if zoom is not None:
        viewer.scene.camera.zoom = zoom
    viewer.scene.camera.center = tuple(TRANSLATE + SCALE * np.asarray(center0, float))


def _idle(qtbot, live, n_runs: int) -> None:
    qtbot.waitUntil(lambda: len(live.runs) >= n_runs and not live.busy, timeout=30000)


def _check_layer_matches_view(viewer, image, live) -> np.ndarray:
    """The map layer holds the canvas of the last view, placed exactly over the image."""
    run = live.runs[-1]
    level, (y0, y1, x0, x1) = live.visible_view(image)
    assert (level, (y0, y1, x0, x1)) == (run["level"], run["box"])
    layer = viewer.layers["pixelcam live [slide]"]
    assert layer.metadata["pixelcam_method"] == "pixelcam" and layer.metadata["level"] == level
    cy0, cy1, cx0, cx1 = layer.metadata["box"]
    assert layer.data.shape == (cy1 - cy0, cx1 - cx0)
    assert cy0 <= y0 < y1 <= cy1 and cx0 <= x0 < x1 <= cx1  # covers the view...
    assert cy1 - cy0 < y1 - y0 + 2 * 512 and cx1 - cx0 < x1 - x0 + 2 * 512  # ...and not more
    f = 2.0**level
    # map pixel (i, j) sits on the image's level-0 pixel f * (cy0 + i, cx0 + j)
    for i, j in ((0, 0), (17, 250)):
        expected = image.data_to_world((f * (cy0 + i), f * (cx0 + j)))
        assert np.allclose(layer.data_to_world((i, j)), expected)
    data = np.asarray(layer.data)
    assert data.min() >= 0.0 and data.max() <= 1.0 and np.ptp(data) > 0.2
    return data


def test_live_maps_follow_pans_reuse_tiles_and_quit_stale_work(live_setup, qtbot):
    panel, viewer, image, calls, slow, errors = live_setup
    live = panel.live
    assert live.checkbox.value  # multiscale: on by default
    _idle(qtbot, live, 1)  # the whole image, at a coarse level
    assert live.runs[0]["level"] > 0 and not errors, errors

    # zoom into the top-left corner: level 0, only the few tiles in view
    side = float(min(viewer.canvas.viewbox_size(viewer.layers)))
    zoom = side / (SCALE[0] * 700)  # about 700 level-0 pixels across the shorter side
    _look_at(viewer, image, (350, 350), zoom)
    _idle(qtbot, live, 2)
    assert not errors, errors
    first = live.runs[-1]
    assert first["level"] == 0 and 1 <= first["region"] <= 9 and first["region"] < 25
    assert first["computed"] == first["todo"] == first["region"]
    _check_layer_matches_view(viewer, image, live)
    n_calls = len(calls)

    # pan right by 600 level-0 pixels: the new tiles only, the shared column is reused
    _look_at(viewer, image, (350, 950))
    _idle(qtbot, live, 3)
    pan = live.runs[-1]
    assert pan["level"] == 0 and pan["box"][2] > first["box"][2]
    assert 0 < pan["todo"] < pan["region"]  # some tiles of the view were cached
    assert len(calls) - n_calls == pan["computed"] == pan["todo"]
    data = _check_layer_matches_view(viewer, image, live)
    # the cached tiles were pasted: the left part of the new view has values already
    assert data[:, :64].max() > 0.0

    # a fast second pan: the first is quit after a tile, the second computed in full
    slow["s"] = 0.3
    _look_at(viewer, image, (1700, 1700))
    qtbot.waitUntil(lambda: len(live.runs) == 4 and live.runs[-1]["computed"] >= 1, timeout=20000)
    _look_at(viewer, image, (1700, 350))
    live.update_view()  # no need to wait for the debounce timer
    _idle(qtbot, live, 5)
    stale, final = live.runs[3], live.runs[-1]
    assert stale["quit"] and 1 <= stale["computed"] < stale["todo"]
    assert not final["quit"] and final["computed"] == final["todo"] > 0
    _check_layer_matches_view(viewer, image, live)
    assert not errors, errors


def test_live_mode_defaults_and_errors(
    make_napari_viewer, qtbot, tmp_path, plugin_errors, dock_panel
):
    errors = plugin_errors
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "malignant")  # 384 px: whole-image maps, live mode off
    panel = dock_panel(viewer)
    live = panel.live
    assert not live.checkbox.value
    assert panel.index(live.checkbox) == panel.index(panel.run_button) + 1
    viewer.scene.camera.zoom = 3.0
    qtbot.wait(DEBOUNCE_WAIT_MS)
    assert not live.runs  # off: panning computes nothing
    # on for a single-scale image: its level 0, tiles of the chosen side
    panel.device.value = "cpu"
    panel.methods.value = ["pixelcam"]
    viewer.reset_view()
    live.tile_box.value = 160
    live.checkbox.value = True
    qtbot.waitUntil(lambda: len(live.runs) == 1 and not live.busy, timeout=20000)
    run = live.runs[0]
    assert run["level"] == 0 and run["box"] == (0, 384, 0, 384)
    assert run["region"] == run["computed"] == 9  # tiles of 160 px every 140 px
    layer = viewer.layers["pixelcam live [synthetic malignant]"]
    assert layer.data.shape == (384, 384) and np.ptp(layer.data) > 0.2
    live.tile_box.value = 256  # another grid: the cache is dropped, the view recomputed
    qtbot.waitUntil(lambda: len(live.runs) == 2 and not live.busy, timeout=20000)
    assert live.runs[1]["todo"] == live.runs[1]["computed"] == 4
    assert not errors, errors
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    panel.checkpoint.value = bad  # a model that does not load: a notification, no crash
    qtbot.waitUntil(lambda: bool(errors) and not live.busy, timeout=10000)
    assert "broken.json" in errors[-1] and "live" in errors[-1]
    errors.clear()
    stack = viewer.add_image(np.zeros((3, 64, 64), np.float32), name="stack")
    panel.image_combo.value = stack
    live.checkbox.value = True  # forced on for a 3-D stack: a notification, no crash
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert "2-D image" in errors[-1] and len(live.runs) == 3
    big = viewer.add_image(np.zeros((4100, 64), np.uint8), name="tall")
    panel.image_combo.value = big
    assert live.checkbox.value  # a side above 4096 px: on by default
    live.checkbox.value = False
    assert live.checkbox.text == "visible region only (live)"


DEBOUNCE_WAIT_MS = 400
