"""Lazy pyramidal reading: levels, exact crops, and tiles read only when needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tifffile

import pixelcam.slide.reader as slide_reader
from pixelcam.errors import InputError
from pixelcam.slide import is_pyramidal, open_pyramid

SIZE, TILE = 2048, 256


def _pattern(size: int) -> np.ndarray:
    """A compressible RGB image where every pixel differs from its neighbours' tiles."""
    y, x = np.indices((size, size), dtype=np.uint32)
    rgb = np.stack([(y * 7 + x) % 251, (x * 5 + y // 3) % 253, (x ^ y) % 256], axis=-1)
    return rgb.astype(np.uint8)


def _levels(image: np.ndarray, n: int = 3) -> list[np.ndarray]:
    return [np.ascontiguousarray(image[:: 2**k, :: 2**k]) for k in range(n)]


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A 2048x2048 RGB OME-TIFF, 3 levels in SubIFDs, 256x256 zlib tiles."""
    levels = _levels(_pattern(SIZE))
    path = tmp_path_factory.mktemp("slide") / "slide.ome.tif"
    options = {"tile": (TILE, TILE), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, metadata={"axes": "YXS"}, **options)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **options)
    return path, levels


def test_levels_shapes_and_chunks(pyramid):
    path, written = pyramid
    levels = open_pyramid(path)
    assert [lv.shape for lv in levels] == [(2048, 2048, 3), (1024, 1024, 3), (512, 512, 3)]
    assert all(lv.dtype == np.uint8 for lv in levels)
    assert levels[0].chunksize == (TILE, TILE, 3)
    assert levels[0].npartitions == (SIZE // TILE) ** 2 == 64
    assert levels[2].npartitions == 4
    np.testing.assert_array_equal(levels[2].compute(), written[2])


@pytest.mark.parametrize(
    ("k", "rows", "cols"),
    [(0, (300, 310), (300, 310)), (0, (250, 530), (1790, 2048)), (1, (0, 1024), (511, 513))],
)
def test_crop_equals_written_data(pyramid, k, rows, cols):
    path, written = pyramid
    level = open_pyramid(path)[k]
    crop = level[rows[0] : rows[1], cols[0] : cols[1]].compute()
    np.testing.assert_array_equal(crop, written[k][rows[0] : rows[1], cols[0] : cols[1]])


def test_opening_reads_no_tile_and_a_crop_reads_only_its_tiles(pyramid, monkeypatch):
    path, _ = pyramid
    reads: list[tuple[int, int]] = []
    real = slide_reader._read_bytes

    def counting(p, offset, count):
        reads.append((offset, count))
        return real(p, offset, count)

    monkeypatch.setattr(slide_reader, "_read_bytes", counting)
    levels = open_pyramid(path)
    assert reads == []
    levels[0][300:310, 300:310].compute(scheduler="sync")
    assert len(reads) == 1
    reads.clear()
    levels[0][250:260, 250:260].compute(scheduler="sync")  # a corner of 4 tiles
    assert len(reads) == 4
    total = sum(n for _, n in reads)
    assert total < path.stat().st_size / 10


def test_is_pyramidal(pyramid, tmp_path):
    path, written = pyramid
    assert is_pyramidal(path)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, written[2], tile=(128, 128), photometric="rgb")
    assert not is_pyramidal(flat)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    assert not is_pyramidal(tmp_path / "junk.tif")
    assert not is_pyramidal(tmp_path / "missing.tif")
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG")
    assert not is_pyramidal(png)


def test_flat_strip_tiff_is_one_lazy_level(tmp_path):
    image = _pattern(300)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, image, rowsperstrip=64, photometric="rgb", compression="zlib")
    (level,) = open_pyramid(path)
    assert level.shape == (300, 300, 3) and level.chunks[0] == (64, 64, 64, 64, 44)
    np.testing.assert_array_equal(level[60:290, 5:7].compute(), image[60:290, 5:7])


def test_planar_samples_come_last(tmp_path):
    image = _pattern(300)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(
        path, image.transpose(2, 0, 1).copy(), tile=(128, 128), planarconfig="separate",
        photometric="rgb",
    )  # fmt: skip
    (level,) = open_pyramid(path)
    assert level.shape == (300, 300, 3)
    np.testing.assert_array_equal(level[100:290, 120:140].compute(), image[100:290, 120:140])


def test_svs_levels_skip_the_thumbnail(tmp_path):
    levels = _levels(_pattern(1024))
    path = tmp_path / "fake.svs"
    desc = "Aperio Image Library Fake\r\n1024x1024 [0,0 1024x1024] (256x256) ZLIB|MPP = 0.5"
    options = {"compression": "zlib", "photometric": "rgb", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels[0], tile=(256, 256), description=desc, **options)
        tif.write(levels[0][::16, ::16], description="Aperio thumbnail", **options)
        for level in levels[1:]:
            tif.write(level, tile=(256, 256), description="Aperio level", **options)
    assert is_pyramidal(path)
    opened = open_pyramid(path)
    assert [lv.shape for lv in opened] == [(1024, 1024, 3), (512, 512, 3), (256, 256, 3)]
    np.testing.assert_array_equal(opened[1][200:300, 0:400].compute(), levels[1][200:300, :400])


def test_multi_page_levels_are_stacked(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, (2, 300, 320), dtype=np.uint16)
    path = tmp_path / "channels.ome.tif"
    options = {"tile": (128, 128), "photometric": "minisblack"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(data, subifds=1, metadata={"axes": "CYX"}, **options)
        tif.write(np.ascontiguousarray(data[:, ::2, ::2]), subfiletype=1, **options)
    levels = open_pyramid(path)
    assert [lv.shape for lv in levels] == [(2, 300, 320), (2, 150, 160)]
    np.testing.assert_array_equal(levels[0][1, 130:260].compute(), data[1, 130:260])
    np.testing.assert_array_equal(levels[1].compute(), data[:, ::2, ::2])


@pytest.mark.parametrize("content", [b"", b"II*\x00garbage-garbage", b"hello"])
def test_unreadable_file_raises_input_error_naming_it(tmp_path, content):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad.tif"):
        open_pyramid(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nothere.svs"):
        open_pyramid(tmp_path / "nothere.svs")


def test_corrupt_tile_fails_at_compute_naming_file_and_tile(tmp_path):
    image = _pattern(512)
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[3]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 64] = b"\xff" * 64  # destroy the zlib stream of the last tile
    path.write_bytes(bytes(raw))
    level = open_pyramid(path)[0]
    np.testing.assert_array_equal(level[:256, :256].compute(), image[:256, :256])
    with pytest.raises(InputError, match=r"tile 3 of level 0 of .*tiles\.tif"):
        level[300:310, 300:310].compute()


def test_missing_codec_is_reported_when_opening(tmp_path):
    if importlib.util.find_spec("imagecodecs") is not None:
        pytest.skip("imagecodecs is installed: JPEG tiles decode")
    path = tmp_path / "jpeg.tif"
    tifffile.imwrite(path, _pattern(256), tile=(128, 128), photometric="rgb")
    raw = path.read_bytes()
    entry = b"\x03\x01\x03\x00\x01\x00\x00\x00\x01\x00"  # Compression=1 (none)
    assert raw.count(entry) == 1
    path.write_bytes(raw.replace(entry, entry[:-2] + b"\x07\x00"))  # claim JPEG
    with pytest.raises(InputError, match=r"jpeg\.tif.*imagecodecs"):
        open_pyramid(path)
