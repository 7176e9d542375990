"""The plugin as napari sees it: manifest, sample data, dock widget, launcher."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

PLUGIN = "napari-pixelcam"


def test_manifest_is_valid_and_discovered():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    assert {w.display_name for w in manifest.contributions.widgets} >= {
        "PixelCAM",
        "PixelCAM trainer",
        "PixelCAM separability",
        "PixelCAM refine",
    }
    assert {s.key for s in manifest.contributions.sample_data} >= {"malignant", "benign", "ihc"}


@pytest.mark.parametrize("key", ["malignant", "benign"])
def test_open_synthetic_sample_gives_image_and_mask(make_napari_viewer, key):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, key)
    image, mask = layers
    assert image.rgb and image.data.shape[2] == 3 and image.data.dtype == np.uint8
    assert mask.data.shape == image.data.shape[:2]
    assert set(np.unique(mask.data)) <= {0, 1} and 0.05 < mask.data.mean() < 0.8


def test_open_ihc_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample(PLUGIN, "ihc")
    assert layer.rgb and layer.data.shape == (512, 512, 3)


def test_panel_docks_through_manifest_and_lists_image_layers(make_napari_viewer):
    from napari_pixelcam._panel import PixelCAMPanel

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "malignant")
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "PixelCAM")
    assert isinstance(panel, PixelCAMPanel)
    assert [layer.name for layer in panel.image_combo.choices] == ["synthetic malignant"]
    viewer.open_sample(PLUGIN, "ihc")
    assert len(panel.image_combo.choices) == 2


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a (virtual) display")
def test_launcher_writes_a_screenshot(tmp_path):
    out = tmp_path / "shot.png"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_pixelcam", "--screenshot", str(out), "--no-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from skimage.io import imread

    shot = imread(out)
    assert shot.shape[0] > 400 and shot.shape[1] > 800
    assert shot[..., :3].std() > 10  # a real picture, not a blank window
