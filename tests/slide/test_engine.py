"""The public slide engine: reading tiles, running them, the shared preprocessing, the local
runner, and the layering of :mod:`pixelcam.slide` (no cycle, no private cross-import)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelcam.data.synthetic import generate_tile
from pixelcam.data.transforms import IMAGENET_STD, EvalTransform, preprocess_batch
from pixelcam.errors import InputError
from pixelcam.inference import predict_maps
from pixelcam.models import build_model
from pixelcam.slide import LocalRunner, TileRunner, read_tiles, run_batch

SLIDE = Path(__file__).resolve().parents[2] / "pixelcam" / "slide"
METHODS = ["pixelcam", "cam"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model("test_resnet", pixel_head="linear").eval()
    with torch.no_grad():  # spread the pixel maps over [0, 1]: differences would show
        model.pixel_head.conv.weight.mul_(60.0)
        model.pixel_head.conv.bias.zero_()
    return model


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return generate_tile(1, (200, 260), seed=4)[0]


@pytest.mark.parametrize("shape, size", [((180, 150), 224), ((96, 128), 64), ((70, 90), None)])
def test_preprocess_batch_is_eval_transform_exactly(shape, size):
    rgb = generate_tile(0, shape, seed=1)[0]
    ref = EvalTransform(size=size)(rgb)[0]
    one = preprocess_batch(rgb, size)
    batch = preprocess_batch(np.stack([rgb, rgb[::-1].copy()]), size)
    assert one.shape == (1, *ref.shape) and one.dtype == torch.float32 and one.is_contiguous()
    assert torch.equal(one[0], ref) and torch.equal(batch[0], ref)
    assert torch.equal(batch[1], EvalTransform(size=size)(rgb[::-1].copy())[0])


def test_the_uint8_resize_is_within_a_grey_level_of_the_float_one(image):
    fast = preprocess_batch(image, 64, uint8_resize=True)
    exact = preprocess_batch(image, 64)
    grey = 1.0 / 255.0 / min(IMAGENET_STD)
    assert 0 < (fast - exact).abs().max() <= 1.01 * grey
    with pytest.raises(InputError, match="uint8 RGB"):
        preprocess_batch(image.astype(np.float32), 64)


def test_run_batch_is_predict_maps_on_the_same_pixels(model, image):
    # Tiles at the model's input size (no resize) and at their own size (None): the same
    # preprocessing and forward as predict_maps, so the same maps.
    tile = np.ascontiguousarray(image[:128, :128])
    maps = run_batch(model, tile[None], METHODS, 128)
    ref = predict_maps(model, tile, METHODS, size=128).maps
    for m in METHODS:
        assert maps[m].shape == (1, 128, 128) and maps[m].dtype == np.float32
        np.testing.assert_array_equal(maps[m][0], ref[m])
    whole = run_batch(model, image[None], METHODS, None)
    ref = predict_maps(model, image, METHODS, size=None).maps
    for m in METHODS:
        np.testing.assert_array_equal(whole[m][0], ref[m])
    assert ref["pixelcam"].std() > 0.05  # there was something to get wrong


def test_run_batch_resizes_tiles_to_the_model_input_and_maps_back(model, image):
    tiles = np.stack([image[:96, :96], image[100:196, 150:246]])
    maps = run_batch(model, tiles, ["pixelcam"], 64)["pixelcam"]
    assert maps.shape == (2, 96, 96)
    for k in range(2):  # the uint8 resize: within a grey level of predict_maps' float one
        ref = predict_maps(model, tiles[k], ["pixelcam"], size=64).maps["pixelcam"]
        assert np.abs(maps[k] - ref).max() < 0.03 < 0.5 * np.ptp(ref)  # a sharp model


def test_read_tiles_converts_any_level_to_rgb_uint8(image):
    import dask.array as da

    boxes = [(0, 32, 0, 48), (50, 82, 100, 148)]
    tiles = read_tiles(image, boxes)
    assert tiles.shape == (2, 32, 48, 3) and tiles.dtype == np.uint8
    np.testing.assert_array_equal(tiles[1], image[50:82, 100:148])
    lazy = read_tiles(da.from_array(image, chunks=64), boxes, "threads")
    np.testing.assert_array_equal(lazy, tiles)
    gray = read_tiles(image[..., 0], boxes)
    assert gray.shape == (2, 32, 48, 3)
    np.testing.assert_array_equal(gray[0, ..., 2], image[:32, :48, 0])


def test_the_local_runner_is_a_tile_runner_and_yields_batches_in_order(model, image):
    runner = LocalRunner(model, image, METHODS, model_input=64, device="cpu", scheduler="sync")
    assert isinstance(runner, TileRunner)
    batches = [[(0, 64, 0, 64), (0, 64, 64, 128)], [(100, 164, 150, 214)]]
    results = list(runner.run(batches))
    assert [r["pixelcam"].shape for r in results] == [(2, 64, 64), (1, 64, 64)]
    for batch, maps in zip(batches, results):
        ref = run_batch(model, read_tiles(image, batch), METHODS, 64)
        for m in METHODS:
            np.testing.assert_array_equal(maps[m], ref[m])
    assert runner.stats["scheduler"] == "sync" and runner.stats["model_seconds"] > 0
    assert set(runner.stats) >= {"model_seconds", "read_wait_seconds", "scheduler"}
    early = runner.run(batches)
    next(early)
    early.close()  # stopping early is clean
    assert list(runner.run([])) == []
    runner.close()


def test_a_device_is_resolved_by_pixelcam_device(model, image):
    with pytest.raises(InputError, match="unknown device"):
        LocalRunner(model, image, METHODS, device="nowhere")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_slide_layers_have_no_cycle_and_no_training_import():
    # Function-level imports count too: the engine is the bottom of the slide modules,
    # cluster sits on it, predict on both; nothing imports predict back.
    imports = {p.stem: _imports(p) for p in SLIDE.glob("*.py")}
    slide = {m for deps in imports.values() for m in deps if m.startswith("pixelcam.slide.")}
    assert "pixelcam.slide.engine" in slide
    assert not {m for m in imports["engine"] if m.startswith("pixelcam.slide")}
    for name in ("engine", "cluster", "region", "reader", "tiling", "tissue", "writer"):
        assert "pixelcam.slide.predict" not in imports[name], name
    assert "pixelcam.slide.cluster" not in imports["region"] | imports["engine"]
    for name, deps in imports.items():
        assert not [m for m in deps if m.startswith("pixelcam.train")], name
