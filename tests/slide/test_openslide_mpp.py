"""Scanner formats through OpenSlide, pixel sizes in microns, and the model's training scale.

The slide is an SVS written by tifffile (the ``write_aperio_svs`` fixture): a tiled
(zlib) pyramid whose first ImageDescription starts with ``Aperio`` (what OpenSlide's Aperio
detection needs: a TIFF, a tiled first image, that prefix), a stripped thumbnail as the
second page (where tifffile's SVS series expects it), and ``MPP = 0.25`` in the
description.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixelcam.errors import InputError
from pixelcam.slide import choose_level, open_pyramid, open_slide, predict_slide, read_mpp, scanner
from pixelcam.slide import mpp as mpp_mod
from pixelcam.slide.writer import PyramidWriter, stored_metadata, write_pyramid

pytest.importorskip("openslide")

SIZE = 1024


def _tissue(size: int) -> np.ndarray:
    """Pink 'tissue' on white glass, with detail in every tile."""
    y, x = np.indices((size, size), dtype=np.uint32)
    rgb = np.stack([(y * 7 + x) % 251, (x * 5 + y // 3) % 253, (x ^ y) % 256], axis=-1)
    image = (rgb // 3 + np.array([150, 60, 120])).astype(np.uint8)
    image[:, : size // 4] = 245  # glass
    return image


@pytest.fixture(scope="module")
def svs(tmp_path_factory, write_aperio_svs) -> tuple[Path, list]:
    path = tmp_path_factory.mktemp("svs") / "slide.svs"
    return path, write_aperio_svs(path, _tissue(SIZE))


def test_openslide_and_tifffile_give_the_same_pixels_and_pixel_size(svs):
    path, written = svs
    by_tiff = open_slide(path)
    by_openslide = open_slide(path, backend="openslide")
    assert (by_tiff.backend, by_openslide.backend) == ("tifffile", "openslide")
    assert by_openslide.properties["openslide.vendor"] == "aperio"
    assert by_tiff.mpp == by_openslide.mpp == (0.25, 0.25)
    assert by_tiff.downsamples == by_openslide.downsamples == (1.0, 2.0, 4.0)
    for k, level in enumerate(written):
        assert (
            by_openslide.levels[k].shape == level.shape and by_openslide.levels[k].dtype == np.uint8
        )
        crop = (slice(37, 301), slice(5, 290))
        np.testing.assert_array_equal(np.asarray(by_openslide.levels[k][crop]), level[crop])
        np.testing.assert_array_equal(np.asarray(by_tiff.levels[k][crop]), level[crop])
    assert by_openslide.level_mpp(2) == (1.0, 1.0)
    assert read_mpp(path) == (0.25, 0.25)


def test_openslide_chunks_read_in_threads_share_a_bounded_pool(svs):
    path, written = svs
    slide = open_slide(path, backend="openslide")
    level = slide.levels[0]
    assert level.chunksize[:2] == (256, 256)  # the file's tiles
    results = {}

    def read(i: int) -> None:
        results[i] = level[i * 100 : i * 100 + 400].compute(scheduler="threads")

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in results.items():
        np.testing.assert_array_equal(got, written[0][i * 100 : i * 100 + 400])
    assert scanner.POOL.open_count() <= scanner.MAX_IDLE_HANDLES


def test_transparent_pixels_are_composited_onto_the_background():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)
    rgba[0, 1] = (200, 0, 0, 128)
    out = scanner.composite(rgba, np.array([255.0, 255.0, 255.0], np.float32))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (227, 127, 127)


def test_a_tiff_that_tifffile_cannot_read_goes_to_openslide(svs, monkeypatch):
    import pixelcam.slide.reader as reader

    path, written = svs

    def refuse(p):
        raise InputError(f"cannot decode level 0 of {p}: no codec (pip install imagecodecs)")

    monkeypatch.setattr(reader, "open_pyramid", refuse)
    slide = open_slide(path)
    assert slide.backend == "openslide" and slide.mpp == (0.25, 0.25)
    np.testing.assert_array_equal(np.asarray(slide.levels[1][:64, :64]), written[1][:64, :64])


def test_a_slide_openslide_cannot_open_gives_one_clear_message(tmp_path):
    bad = tmp_path / "broken.mrxs"
    bad.write_bytes(b"[GENERAL]\nnot really a MIRAX slide\n")
    with pytest.raises(InputError, match="broken.mrxs") as info:
        open_slide(bad)
    assert "\n" not in str(info.value) and "OpenSlide" in str(info.value)
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(InputError, match="junk.svs") as info:
        open_slide(junk)
    assert "OpenSlide" in str(info.value)  # both readers' reasons, on one line
    assert "\n" not in str(info.value)


def test_missing_openslide_is_one_clear_message(tmp_path, monkeypatch):
    path = tmp_path / "x.ndpi"
    path.write_bytes(b"II*\x00" + b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "openslide", None)
    with pytest.raises(InputError, match="pip install openslide-python openslide-bin"):
        open_slide(path)


# ------------------------------------------------------------------ reading pixel sizes
def test_tiff_resolution_rule(tmp_path):
    image = np.zeros((32, 32), np.uint8)
    cases = {
        "cm.tif": ({"resolution": (40000, 40000), "resolutionunit": "CENTIMETER"}, (0.25, 0.25)),
        "dpi72.tif": ({"resolution": (72, 72), "resolutionunit": "INCH"}, None),
        "dpi300.tif": ({"resolution": (300, 300), "resolutionunit": "INCH"}, None),
        "scan.tif": ({"resolution": (2540, 2540), "resolutionunit": "INCH"}, (10.0, 10.0)),
        "none.tif": ({"resolution": (4, 4), "resolutionunit": "NONE"}, None),
        "default.tif": ({}, None),
    }
    for name, (kwargs, expected) in cases.items():
        tifffile.imwrite(tmp_path / name, image, **kwargs)
        got = read_mpp(tmp_path / name)
        assert got == pytest.approx(expected) if expected else got is None, name


def test_ome_physical_size_with_units_and_png_phys(tmp_path):
    image = np.zeros((32, 48), np.uint8)
    tifffile.imwrite(tmp_path / "a.ome.tif", image, ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "µm",
    })  # fmt: skip
    assert read_mpp(tmp_path / "a.ome.tif") == pytest.approx((0.5, 0.5))
    Image.fromarray(image).save(tmp_path / "a.png", dpi=(25400 / 0.5, 25400 / 0.5))
    assert read_mpp(tmp_path / "a.png") == pytest.approx((0.5, 0.5), rel=1e-3)
    Image.fromarray(image).save(tmp_path / "b.png", dpi=(72, 72))
    assert read_mpp(tmp_path / "b.png") is None
    Image.fromarray(image).save(tmp_path / "c.png")
    assert read_mpp(tmp_path / "c.png") is None
    assert read_mpp(tmp_path / "missing.png") is None


def test_choose_level_reads_at_or_finer_than_the_model_then_downscales():
    mpps = [0.25, 0.5, 1.0]
    assert choose_level(mpps, 0.5).level == 1 and choose_level(mpps, 0.5).factor == 1.0
    assert choose_level(mpps, 0.505).factor == 1.0  # within the 2 % tolerance
    six = choose_level(mpps, 0.6)
    assert six.level == 1 and six.factor == pytest.approx(0.5 / 0.6)
    fine = choose_level(mpps, 0.2)  # the model is finer than the slide: upscale level 0
    assert fine.level == 0 and fine.factor == pytest.approx(1.25)
    coarse = choose_level(mpps, 2.0)
    assert coarse.level == 2 and coarse.factor == pytest.approx(0.5)
    with pytest.raises(InputError, match="model mpp"):
        choose_level(mpps, -1)
    assert "unknown" in mpp_mod.scale_note(None, 0.5)
    assert mpp_mod.scale_note((0.25, 0.25), 0.5) is None


# ------------------------------------------------------------------ the model's scale
@pytest.fixture(scope="module")
def model():
    import torch

    from pixelcam.models import build_model

    torch.manual_seed(0)
    return build_model("test_resnet", pixel_head="linear").eval()


def test_a_model_trained_at_half_a_micron_reads_level_one(svs, model, tmp_path):
    path, written = svs
    summary = predict_slide(
        model, path, tmp_path / "m.tif", tile=128, overlap=16, model_input=64,
        min_tissue=0.0, model_mpp=0.5,
    )  # fmt: skip
    scale = summary["scale"]
    assert summary["level"] == 1 and scale["factor"] == 1.0 and scale["tile_read"] == 128
    assert summary["shape"] == written[1].shape[:2] and scale["note"] is None
    out = Path(summary["outputs"]["pixelcam"])
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and 'PhysicalSizeX="0.5"' in tif.ome_metadata
        assert stored_metadata(tif)["level"] == 1
    assert read_mpp(out) == (0.5, 0.5)
    assert open_pyramid(out)[0].shape == written[1].shape[:2]


def test_between_levels_the_finer_level_is_read_and_downscaled(svs, model, tmp_path):
    path, written = svs
    summary = predict_slide(
        model, path, tmp_path / "m.tif", tile=128, overlap=16, model_input=64,
        min_tissue=0.0, model_mpp=0.4, level=None,
    )  # fmt: skip
    scale = summary["scale"]
    assert summary["level"] == 0 and scale["factor"] == pytest.approx(0.625)
    assert scale["tile_read"] == round(128 / 0.625)  # 205 level-0 pixels -> model input
    assert summary["shape"] == (SIZE, SIZE)


def test_unknown_pixel_size_says_so_and_keeps_the_old_behaviour(model, tmp_path):
    path = tmp_path / "plain.tif"
    write_pyramid(path, _tissue(512), tile=128)
    assert read_mpp(path) is None
    summary = predict_slide(
        model, path, tmp_path / "m.tif", tile=128, overlap=16, model_input=64,
        min_tissue=0.0, model_mpp=0.5,
    )  # fmt: skip
    assert summary["level"] == 0 and summary["scale"]["tile_read"] == 128
    assert "pixel size of the image unknown" in summary["scale"]["note"]
    with tifffile.TiffFile(summary["outputs"]["pixelcam"]) as tif:
        assert not tif.is_ome  # no size to record: the plain pyramid as before
    given = predict_slide(
        model, path, tmp_path / "g.tif", tile=128, overlap=16, model_input=64,
        min_tissue=0.0, model_mpp=0.5, mpp=0.25,
    )  # fmt: skip
    assert given["level"] == 1 and given["scale"]["note"] is None


def test_pyramid_writer_records_the_pixel_size_at_every_level(tmp_path):
    with PyramidWriter(tmp_path / "w.tif", (300, 200), tile=128, mpp=(0.5, 0.5),
                       metadata={"method": "x"}) as writer:  # fmt: skip
        writer.write_rows(np.zeros((300, 200), np.float32))
    with tifffile.TiffFile(tmp_path / "w.tif") as tif:
        assert stored_metadata(tif) == {"method": "x"}
        levels = tif.series[0].levels
        assert len(levels) == 3  # 300x200, 150x100, 75x50
        for k, mpp in ((1, 1.0), (2, 2.0)):
            page = levels[k].keyframe
            assert page.get_resolution("CENTIMETER")[0] == pytest.approx(1e4 / mpp, rel=0.01)


# ------------------------------------------------------------------ training records it
def _tiny_config(out: Path, data: Path, **kw):
    from pixelcam.train import TrainConfig

    return TrainConfig(
        out=str(out), data_root=str(data), dataset="synthetic", backbone="test_resnet",
        synthetic_n_per_class=6, synthetic_size=32, resize=32, crop=32, eval_size=32,
        batch_size=12, device="cpu", **kw,
    )  # fmt: skip


def test_train_records_the_pixel_size_and_resume_keeps_it(tmp_path, svs, capsys):
    from pixelcam.cli import main
    from pixelcam.slide.mpp import model_mpp
    from pixelcam.train import TrainConfig, train

    run = tmp_path / "run"
    train(_tiny_config(run, tmp_path / "data", epochs=1, mpp=0.5))
    meta = json.loads((run / "last.json").read_text())["meta"]
    assert meta["mpp"] == 0.5 and json.loads((run / "config.json").read_text())["mpp"] == 0.5
    train(_tiny_config(run, tmp_path / "data", epochs=2), resume=True)
    assert json.loads((run / "last.json").read_text())["meta"]["epoch"] == 2
    assert model_mpp(json.loads((run / "last.json").read_text())["meta"]) == 0.5
    # old checkpoints and configs (no "mpp") load as unknown
    assert TrainConfig.from_dict({"out": "x"}).mpp is None and model_mpp({"eval_size": 224}) is None
    with pytest.raises(InputError, match="mpp"):
        _tiny_config(run, tmp_path / "data", mpp=-1.0).validate()
    # predict with that checkpoint on the 0.25 um/px slide: level 1, said on the line
    path, _ = svs
    out = tmp_path / "maps"
    args = ["predict", str(run / "last.json"), str(path), "--out", str(out), "--device", "cpu",
            "--tile", "128", "--overlap", "16", "--size", "32", "--min-tissue", "0",
            "--methods", "layercam"]  # fmt: skip
    assert main(args) == 0
    line = capsys.readouterr().out
    assert "level 1 (0.5 µm/px)" in line, line
    assert read_mpp(out / "slide_layercam.tif") == (0.5, 0.5)


def test_cli_train_and_predict_take_mpp(tmp_path):
    from pixelcam.cli import _train_config, build_parser
    from pixelcam.train import TrainConfig

    parser = build_parser()
    args = parser.parse_args(["train", "--out", str(tmp_path), "--mpp", "0.5"])
    assert _train_config(args, TrainConfig).mpp == 0.5
    assert _train_config(parser.parse_args(["train", "--out", "x"]), TrainConfig).mpp is None
    args = parser.parse_args(["predict", "c.json", "a.png", "--out", "o", "--mpp", "0.25"])
    assert args.mpp == 0.25 and args.level is None
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "c.json", "a.png", "--out", "o", "--mpp", "0"])


def test_predict_regions_take_the_level0_size_of_an_openslide_slide(svs, tmp_path, monkeypatch):
    """Regions of a map read at level 1 are scaled to level 0 whichever reader opens the
    slide (here one only OpenSlide reads: tifffile refuses it)."""
    import shutil

    import pixelcam.slide.reader as reader
    from pixelcam.cli import _level0_shape

    path, _ = svs
    scanner_file = tmp_path / "slide.scn"  # an Aperio TIFF under a scanner extension
    shutil.copy(path, scanner_file)

    def refuse(p):
        raise InputError(f"cannot decode level 0 of {p}: no codec (pip install imagecodecs)")

    monkeypatch.setattr(reader, "open_pyramid", refuse)
    # a real MIRAX/NDPI file is no image PIL or tifffile reads a size from
    monkeypatch.setattr("pixelcam.data.io.image_shape", lambda p: None)
    assert open_slide(scanner_file).backend == "openslide"
    assert _level0_shape(scanner_file) == (SIZE, SIZE)
