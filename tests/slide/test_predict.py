"""Whole-slide prediction: tissue skipping, pyramidal outputs, seams, CLI and napari."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from pixelcam.data.synthetic import generate_tile
from pixelcam.errors import InputError
from pixelcam.models import build_model
from pixelcam.slide import (
    TileGrid,
    is_pyramidal,
    needs_tiling,
    open_pyramid,
    output_paths,
    predict_slide,
    write_pyramid,
)

SIZE, TILE, OVERLAP = 2048, 512, 64


def _tiny_model(sharp: bool = False):
    torch.manual_seed(0)
    model = build_model("test_resnet", pixel_head="linear").eval()
    if sharp:  # a random pixel head gives maps near 0.5: spread them over [0, 1]
        with torch.no_grad():
            model.pixel_head.conv.weight.mul_(60.0)
            model.pixel_head.conv.bias.zero_()
    return model


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 2048x2048 pyramidal RGB TIFF: white glass with one elliptic H&E tissue blob."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(243, 3, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.indices((SIZE, SIZE))
    blob = ((yy - 700) / 450.0) ** 2 + ((xx - 900) / 350.0) ** 2 < 1.0
    tissue, _ = generate_tile(1, (900, 700), seed=5)
    ys, xs = np.nonzero(blob)
    image[ys, xs] = tissue[ys - 250, xs - 550]
    path = tmp_path_factory.mktemp("wsi") / "slide.tif"
    write_pyramid(path, image, tile=256)
    return path, blob


@pytest.fixture(scope="module")
def predicted(slide, model, tmp_path_factory):
    path, _ = slide
    out = tmp_path_factory.mktemp("maps") / "slide.tif"
    calls = []
    summary = predict_slide(
        model, path, out, methods=("pixelcam", "cam"), tile=TILE, overlap=OVERLAP,
        batch_size=4, progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    return summary, calls


def test_outputs_are_pyramidal_maps_of_the_slide_size(predicted):
    summary, _ = predicted
    assert set(summary["outputs"]) == {"pixelcam", "cam"}
    for path in summary["outputs"].values():
        assert Path(path).name in ("slide_pixelcam.tif", "slide_cam.tif")
        assert is_pyramidal(path)
        levels = open_pyramid(path)
        assert [lv.shape for lv in levels] == [(2048, 2048), (1024, 1024), (512, 512), (256, 256)]
        assert levels[0].dtype == np.float32
        small = levels[-1].compute()
        assert small.min() >= 0.0 and small.max() <= 1.0
    assert summary["shape"] == (SIZE, SIZE)


def test_background_tiles_are_skipped_and_zero(predicted, slide):
    summary, calls = predicted
    _, blob = slide
    grid = TileGrid.from_shape((SIZE, SIZE), TILE, OVERLAP)
    fractions = np.zeros((grid.rows, grid.cols))
    for r, c in grid:
        y0, y1, x0, x1 = grid.box(r, c)
        fractions[r, c] = blob[y0:y1, x0:x1].mean()
    assert not np.any((fractions > 0.01) & (fractions < 0.15))  # no borderline tile
    expected = int((fractions >= 0.05).sum())
    assert 0 < expected < len(grid)
    assert summary["tiles_total"] == len(grid) == 25
    assert summary["tiles_processed"] == expected
    assert summary["tiles_skipped"] == len(grid) - expected
    assert calls[-1] == (expected, expected) and len(calls) == -(-expected // 4)
    full = open_pyramid(summary["outputs"]["pixelcam"])[0]
    covered = np.zeros((SIZE, SIZE), bool)
    for r, c in grid:
        if fractions[r, c] >= 0.05:
            y0, y1, x0, x1 = grid.box(r, c)
            covered[y0:y1, x0:x1] = True
    values = full.compute()
    assert np.all(values[~covered] == 0.0)
    assert values[covered].min() > 0.0 and values.max() <= 1.0


def test_the_band_in_memory_stays_one_tile_row_high(slide, model, tmp_path, monkeypatch):
    from pixelcam.slide.tiling import StripBlender

    path, _ = slide
    heights = []
    real_add = StripBlender.add

    def spy(self, r, c, maps):
        real_add(self, r, c, maps)
        heights.append(self.capacity)

    monkeypatch.setattr(StripBlender, "add", spy)
    # Tiles of 256 with 2-3 tissue tiles a row: a batch of 16 spans several tile rows.
    summary = predict_slide(model, path, tmp_path / "b.tif", tile=256, overlap=32, batch_size=16)
    assert summary["tiles_processed"] == len(heights) > 16
    assert max(heights) == 256


def test_every_tile_is_processed_with_min_tissue_zero(slide, model, tmp_path):
    path, _ = slide
    summary = predict_slide(
        model, path, tmp_path / "all.tif", level=2, tile=256, overlap=32, min_tissue=0.0
    )
    assert summary["tiles_processed"] == summary["tiles_total"] == 9
    assert summary["shape"] == (512, 512) and summary["level"] == 2
    levels = open_pyramid(tmp_path / "all_pixelcam.tif")
    assert levels[0].shape == (512, 512) and levels[0].compute().min() > 0.0


def test_tiles_are_resized_to_the_model_input_and_maps_back(model, tmp_path):
    from pixelcam.inference import predict_maps

    image, _ = generate_tile(0, (448, 480), seed=1)
    # A single tile covering the image: exactly what predict_maps does, but for the uint8
    # resize (within a grey level of the float one).
    summary = predict_slide(
        model, image, tmp_path / "one.tif", tile=512, model_input=224, min_tissue=0.0
    )
    assert summary["tiles_total"] == 1
    tiled = open_pyramid(summary["outputs"]["pixelcam"])[0].compute()
    untiled = predict_maps(model, image, ["pixelcam"], size=224).maps["pixelcam"]
    assert tiled.shape == untiled.shape == (448, 480)
    assert np.abs(tiled - untiled).max() < 0.01
    assert np.abs(tiled - untiled).max() < 0.2 * np.ptp(untiled)


def _seam_errors(model, image, tmp_path, **kw) -> tuple[np.ndarray, np.ndarray]:
    """The tiled map of ``image`` (192 px tiles at native size) and the untiled one."""
    from pixelcam.inference import predict_maps

    untiled = predict_maps(model, image, ["pixelcam"], size=None).maps["pixelcam"]
    summary = predict_slide(
        model, image, tmp_path / "m.tif", tile=192, model_input=None, min_tissue=0.0, **kw
    )
    tiled = open_pyramid(summary["outputs"]["pixelcam"])[0].compute()
    return tiled, untiled


def test_tiled_with_overlap_matches_untiled_and_has_no_seams(tmp_path):
    model = _tiny_model(sharp=True)
    image, _ = generate_tile(1, 384, seed=3)
    tiled, untiled = _seam_errors(model, image, tmp_path, overlap=48)
    assert untiled.std() > 0.15  # the map has contrast to lose
    error = np.abs(tiled - untiled)
    assert error.mean() < 0.002 and error.max() < 0.05
    no_overlap, _ = _seam_errors(model, image, tmp_path, overlap=0)
    flat, _ = _seam_errors(model, image, tmp_path, overlap=48, window="flat")
    assert np.abs(no_overlap - untiled).max() > 0.3  # what the blending removes
    assert np.abs(flat - untiled).max() > 0.2


def test_a_constant_region_gives_a_map_without_discontinuity(tmp_path):
    model = _tiny_model(sharp=True)
    image = np.zeros((384, 384, 3), np.uint8)
    image[:] = (190, 110, 170)
    tiled, untiled = _seam_errors(model, image, tmp_path, overlap=48)
    inner = (slice(48, -48), slice(48, -48))  # away from the image's own borders
    assert np.ptp(untiled[inner]) < 1e-3  # the untiled map is constant there
    assert np.abs(tiled - untiled)[inner].max() < 0.015
    assert np.abs(np.diff(tiled[inner], axis=0)).max() < 0.005
    assert np.abs(np.diff(tiled[inner], axis=1)).max() < 0.005
    seams, _ = _seam_errors(model, image, tmp_path, overlap=0)
    assert np.abs(np.diff(seams[inner], axis=1)).max() > 0.05  # tiles without blending


def test_napari_reader_opens_a_map_as_multiscale(predicted):
    from napari_pixelcam._reader import read_paths

    summary, _ = predicted
    ((data, meta, kind),) = read_paths(summary["outputs"]["pixelcam"])
    assert kind == "image" and meta["multiscale"] is True and meta["rgb"] is False
    assert [d.shape for d in data] == [(2048, 2048), (1024, 1024), (512, 512), (256, 256)]
    lo, hi = meta["contrast_limits"]
    assert 0.0 <= lo < hi <= 1.0


def test_output_paths_and_routing(tmp_path):
    paths = output_paths(tmp_path / "a.ome.tif", ["pixelcam", "cam"])
    assert paths == {"pixelcam": tmp_path / "a_pixelcam.tif", "cam": tmp_path / "a_cam.tif"}
    assert output_paths("x/b", ["cam"]) == {"cam": Path("x/b_cam.tif")}
    big = tmp_path / "big.tif"
    tifffile.imwrite(big, np.zeros((4100, 8), np.uint8))
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((4096, 8), np.uint8))
    from PIL import Image

    Image.new("RGB", (4097, 2)).save(tmp_path / "wide.png")
    (tmp_path / "junk.tif").write_bytes(b"junk")
    assert needs_tiling(big) and needs_tiling(tmp_path / "wide.png")
    assert not needs_tiling(small) and not needs_tiling(tmp_path / "junk.tif")
    assert needs_tiling(big, max_side=5000) is False


def test_cli_predict_routes_a_pyramid_to_the_tiled_path(slide, model, tmp_path, capsys):
    from pixelcam.cli import main
    from pixelcam.models import save_checkpoint

    path, _ = slide
    ckpt = save_checkpoint(model, tmp_path / "ckpt" / "model")[1]
    out = tmp_path / "out"
    args = ["predict", str(ckpt), str(path), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--level", "1", "--tile", "256", "--overlap", "32"]) == 0
    assert "background" in capsys.readouterr().out
    levels = open_pyramid(out / "slide_pixelcam.tif")
    assert levels[0].shape == (1024, 1024)
    assert main([*args, "--level", "9"]) == 2
    assert "level 9" in capsys.readouterr().err


def test_bad_arguments(slide, model, tmp_path):
    path, _ = slide
    with pytest.raises(InputError, match="level 7"):
        predict_slide(model, path, tmp_path / "x.tif", level=7)
    with pytest.raises(InputError, match="distributed"):
        predict_slide(model, path, tmp_path / "x.tif", scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(InputError, match="min_tissue"):
        predict_slide(model, path, tmp_path / "x.tif", min_tissue=2.0)
    with pytest.raises(InputError, match="shape"):
        predict_slide(model, np.zeros((3, 64, 64, 3), np.uint8), tmp_path / "x.tif")
    with pytest.raises(InputError):
        predict_slide(model, path, tmp_path / "x.tif", methods=("nope",))
    assert list(tmp_path.iterdir()) == []
