"""The streaming pyramidal TIFF writer."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from pixelcam.errors import InputError, PixelCAMError
from pixelcam.slide import (
    PyramidWriter,
    downsample2,
    is_pyramidal,
    open_pyramid,
    pyramid_shapes,
    write_pyramid,
)


def test_pyramid_shapes_halve_until_one_tile():
    assert pyramid_shapes((600, 1100), 256) == [(600, 1100), (300, 550), (150, 275), (75, 138)]
    assert pyramid_shapes((256, 100), 256) == [(256, 100)]


def test_downsample2_means_and_odd_edges():
    a = np.arange(15, dtype=np.float32).reshape(3, 5)
    d = downsample2(a)
    assert d.shape == (2, 3) and d.dtype == np.float32
    assert d[0, 0] == pytest.approx((0 + 1 + 5 + 6) / 4)
    assert d[1, 2] == pytest.approx(14.0)  # the corner averaged with itself
    u = downsample2(np.array([[0, 1], [1, 1]], np.uint8)[..., None].repeat(3, -1))
    assert u.dtype == np.uint8 and u.shape == (1, 1, 3) and u[0, 0, 0] == 1  # 0.75 rounded


def test_rows_in_uneven_chunks_give_every_level(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((600, 700)).astype(np.float32)
    path = tmp_path / "map.tif"
    with PyramidWriter(path, image.shape, np.float32, metadata={"method": "x"}) as writer:
        y = 0
        for n in (1, 99, 300, 7, 193):
            writer.write_rows(image[y : y + n])
            y += n
        assert writer.rows_written == 600
    assert is_pyramidal(path)
    levels = open_pyramid(path)
    assert [lv.shape for lv in levels] == [(600, 700), (300, 350), (150, 175)]
    assert levels[0].chunksize == (256, 256)
    np.testing.assert_array_equal(levels[0].compute(), image)
    expected = image
    for level in levels[1:]:
        expected = downsample2(expected)
        np.testing.assert_allclose(level.compute(), expected, rtol=1e-6)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tif.shaped_metadata[0]["method"] == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]  # temporaries gone


def test_write_pyramid_of_a_dask_rgb_image(tmp_path):
    import dask.array as da

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (520, 300, 3), dtype=np.uint8)
    path = write_pyramid(tmp_path / "rgb.tif", da.from_array(image, chunks=100), strip_rows=97)
    levels = open_pyramid(path)
    assert [lv.shape for lv in levels] == [(520, 300, 3), (260, 150, 3), (130, 75, 3)]
    np.testing.assert_array_equal(levels[0].compute(), image)
    np.testing.assert_array_equal(levels[1].compute(), downsample2(image))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB


def test_missing_rows_or_too_many_rows_leave_no_file(tmp_path):
    path = tmp_path / "short.tif"
    writer = PyramidWriter(path, (300, 40))
    writer.write_rows(np.zeros((100, 40), np.float32))
    with pytest.raises(InputError, match="100 of 300 rows"):
        writer.close()
    assert list(tmp_path.iterdir()) == []
    with (
        pytest.raises(InputError, match="11 rows"),
        PyramidWriter(tmp_path / "l.tif", (10, 40)) as w,
    ):
        w.write_rows(np.zeros((11, 40), np.float32))
    with (
        pytest.raises(InputError, match="do not fit"),
        PyramidWriter(tmp_path / "w.tif", (10, 40)) as w,
    ):
        w.write_rows(np.zeros((2, 41)))
    assert list(tmp_path.iterdir()) == []


def test_an_error_in_the_caller_aborts_and_removes_the_partial_file(tmp_path):
    path = tmp_path / "map.tif"
    with pytest.raises(RuntimeError, match="boom"), PyramidWriter(path, (2000, 600)) as writer:
        for _ in range(10):  # more than the queue holds: the thread is writing
            writer.write_rows(np.ones((128, 600), np.float32))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PixelCAMError, match="closed"):
        writer.write_rows(np.ones((1, 600), np.float32))


def test_constant_tiles_are_compressed_and_others_at_the_level_asked(tmp_path):
    rng = np.random.default_rng(2)
    image = np.zeros((512, 1024), np.float32)
    image[:256, :256] = rng.random((256, 256))  # one tile of data, 7 of constants
    image[256:, 512:] = 0.25
    sizes = {}
    for level in (0, 6):
        path = tmp_path / f"l{level}.tif"
        with PyramidWriter(path, image.shape, compression_level=level) as writer:
            writer.write_rows(image)
        with tifffile.TiffFile(path) as tif:
            counts = tif.pages[0].databytecounts
        sizes[level] = counts[0]
        assert max(counts[1:]) < 2000  # constant tiles: a few hundred bytes
        np.testing.assert_array_equal(open_pyramid(path)[0].compute(), image)
    assert sizes[0] > 256 * 256 * 4 > sizes[6]  # stored vs deflated random floats


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        PyramidWriter(tmp_path / "no" / "x.tif", (10, 10))
    with pytest.raises(InputError, match="multiple of 16"):
        PyramidWriter(tmp_path / "x.tif", (10, 10), tile=100)
    with pytest.raises(InputError, match="shape"):
        PyramidWriter(tmp_path / "x.tif", (10,))
    with pytest.raises(InputError, match="0..9"):
        PyramidWriter(tmp_path / "x.tif", (10, 10), compression_level=10)
