"""Microns in napari: layers opened in µm, the scale bar in µm, maps aligned and written with
their pixel size, the panel's and the live mode's scale, and images with no size in pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_pixelcam import _microns as microns
from napari_pixelcam._common import SAMPLE_PIXELCAM
from napari_pixelcam._reader import get_reader
from napari_pixelcam._writer import write_map
from pixelcam.slide import read_mpp

PLUGIN = "napari-pixelcam"


def _tile(size: int) -> np.ndarray:
    from pixelcam.data.synthetic import generate_tile

    return generate_tile(1, size, seed=3)[0]


def _model_at(tmp_path: Path, mpp: float | None) -> Path:
    """A copy of the bundled sample PixelCAM checkpoint recording ``mpp`` (the weights'
    SHA-256 is in the json, so editing the meta keeps the pair valid)."""
    src = Path(SAMPLE_PIXELCAM)
    dst = tmp_path / "model" / "at.json"
    dst.parent.mkdir(exist_ok=True)
    shutil.copy(src.with_suffix(".safetensors"), dst.with_suffix(".safetensors"))
    doc = json.loads(src.read_text())
    doc["meta"]["mpp"] = mpp
    doc["weights"]["file"] = "at.safetensors"
    dst.write_text(json.dumps(doc))
    return dst


def test_a_slide_opens_in_microns_and_the_scale_bar_reads_um(
    make_napari_viewer, tmp_path, write_aperio_svs
):
    path = tmp_path / "slide.svs"
    write_aperio_svs(path, _tile(512), tile=128)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.multiscale and tuple(layer.scale) == (0.25, 0.25)
    assert microns.layer_mpp(layer) == (0.25, 0.25)
    assert layer.metadata["backend"] == "tifffile"
    # napari's scale bar takes its unit from the layers (scale_bar.unit is deprecated)
    assert [str(u) for u in viewer.layers.units] == ["micrometer", "micrometer"]


def test_an_openslide_slide_opens_in_microns(
    make_napari_viewer, tmp_path, monkeypatch, write_aperio_svs
):
    pytest.importorskip("openslide")
    import pixelcam.slide.reader as reader
    from pixelcam.errors import InputError

    path = tmp_path / "slide.svs"
    write_aperio_svs(path, _tile(512), tile=128)

    def refuse(p):
        raise InputError(f"cannot decode level 0 of {p} (pip install imagecodecs)")

    monkeypatch.setattr(reader, "open_pyramid", refuse)  # as for JPEG tiles w/o imagecodecs
    ((data, meta, kind),) = get_reader(str(path))(str(path))
    assert kind == "image" and meta["metadata"]["backend"] == "openslide"
    assert meta["scale"] == (0.25, 0.25) and len(data) == 3 and data[0].dtype == np.uint8


def test_png_with_a_pixel_size_and_its_mask_share_the_micron_scale(tmp_path):
    Image.fromarray(_tile(64)).save(tmp_path / "t.png", dpi=(25400 / 0.5, 25400 / 0.5))
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 2).astype(np.uint8)).save(
        tmp_path / "t_mask.png"
    )
    (image, image_meta, _), (_, mask_meta, kind) = get_reader(str(tmp_path / "t.png"))(
        str(tmp_path / "t.png")
    )
    assert kind == "labels"
    assert image_meta["scale"] == pytest.approx((0.5, 0.5), rel=1e-3)
    assert mask_meta["scale"] == image_meta["scale"]
    assert image_meta["units"] == mask_meta["units"] == ("um", "um")


def test_an_image_with_no_pixel_size_stays_in_pixels(make_napari_viewer, tmp_path):
    Image.fromarray(_tile(64)).save(tmp_path / "plain.png")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "plain.png"), plugin=PLUGIN)
    assert tuple(layer.scale) == (1.0, 1.0) and microns.layer_mpp(layer) is None
    assert [str(u) for u in viewer.layers.units] == ["pixel", "pixel"]


def test_maps_copy_the_micron_scale_are_written_with_it_and_say_the_scale(
    make_napari_viewer, dock_panel, tmp_path, qtbot
):
    Image.fromarray(_tile(160)).save(tmp_path / "tile.png", dpi=(25400 / 0.5, 25400 / 0.5))
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tmp_path / "tile.png"), plugin=PLUGIN)
    panel = dock_panel(viewer)
    panel.session.device = "cpu"
    panel.session.maps = ["pixelcam"]
    panel.image_combo.value = image
    panel.run_maps(wait=True)
    qtbot.waitUntil(lambda: "pixelcam [tile]" in viewer.layers, timeout=60000)
    layer = viewer.layers["pixelcam [tile]"]
    assert np.allclose(layer.scale, image.scale) and microns.layer_mpp(layer) is not None
    assert microns.is_microns(layer) and microns.is_microns(image)
    # the bundled sample model records no pixel size: the panel says so
    assert "image 0.5 µm/px, model size unknown" in panel.result_label.value
    (written,) = write_map(str(tmp_path / "map.tif"), layer.data, {
        "name": layer.name, "scale": tuple(layer.scale), "metadata": layer.metadata,
    })  # fmt: skip
    with tifffile.TiffFile(written) as tif:
        assert tif.is_ome and 'PhysicalSizeX="0.5"' in tif.ome_metadata
    assert read_mpp(written) == pytest.approx((0.5, 0.5))
    ((_, meta, _),) = get_reader(written)(written)
    assert meta["scale"] == pytest.approx((0.5, 0.5)) and meta["name"] == "pixelcam [tile]"


def test_a_map_without_microns_is_written_as_before(tmp_path):
    (written,) = write_map(str(tmp_path / "m.tif"), np.zeros((8, 9), np.float32), {"name": "m"})
    with tifffile.TiffFile(written) as tif:
        assert not tif.is_ome and tif.shaped_metadata[0]["name"] == "m"


def test_live_plan():
    mpps = [0.25, 0.5, 1.0]
    assert microns.live_plan(mpps, 0, 0.5, 512)[:2] == (1, 512)
    level, side, note = microns.live_plan(mpps, 0, 0.4, 512)
    assert (level, side) == (0, round(512 / 0.625)) and "model's 0.4" in note
    level, side, note = microns.live_plan(mpps, 2, 0.5, 512)
    assert (level, side) == (2, 512) and "zoomed out" in note
    level, side, note = microns.live_plan([], 1, 0.5, 512)
    assert (level, side) == (1, 512) and "unknown" in note
    assert "unknown" in microns.live_plan(mpps, 0, None, 512)[2]
    assert microns.checkpoint_mpp(SAMPLE_PIXELCAM) is None  # made before mpp was recorded


def test_checkpoint_mpp_is_read_from_its_json_and_reread_when_it_changes(tmp_path):
    import json

    doc = json.loads(SAMPLE_PIXELCAM.read_text())
    doc["meta"]["mpp"] = 0.5
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc))
    assert microns.checkpoint_mpp(path) == 0.5
    assert microns.checkpoint_mpp(tmp_path / "model.safetensors") == 0.5
    doc["meta"]["mpp"] = 0.25
    path.write_text(json.dumps(doc) + "  ")  # a new stamp (size)
    assert microns.checkpoint_mpp(path) == 0.25
    assert microns.checkpoint_mpp(None) is None


def test_live_mode_reads_tiles_at_the_model_scale(make_napari_viewer, dock_panel, tmp_path, qtbot):
    import torch

    torch.set_num_threads(1)
    viewer = make_napari_viewer()
    base = _tile(1024)
    pyramid = [base, base[::2, ::2], base[::4, ::4]]
    image = viewer.add_image(pyramid, multiscale=True, rgb=True, name="slide", units="um",
                             scale=(0.25, 0.25), metadata={"mpp": (0.25, 0.25)})  # fmt: skip
    panel = dock_panel(viewer)
    session = panel.session
    session.device = "cpu"
    session.maps = ["pixelcam"]
    session.pixelcam = str(_model_at(tmp_path, 0.5))
    session.image = image
    live = panel.live
    live.tile_box.value = 256
    side = float(min(viewer.canvas.viewbox_size(viewer.layers)))
    viewer.scene.camera.zoom = side / (0.25 * 300)  # level 0 on screen
    viewer.scene.camera.center = (0.25 * 200, 0.25 * 200)
    live.checkbox.value = True
    live.update_view()
    qtbot.waitUntil(lambda: live.runs and not live.busy, timeout=60000)
    run = live.runs[-1]
    assert live.visible_view(image)[0] == 0  # napari shows level 0...
    assert run["level"] == 1 and run["tile"] == 256  # ...the model's 0.5 um/px is level 1
    assert "model's 0.5" in run["scale"]
    layer = viewer.layers["pixelcam live [slide]"]
    assert np.allclose(layer.scale, (0.5, 0.5))  # level 1 placed in microns
    assert microns.is_microns(layer)
