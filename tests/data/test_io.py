"""Image and mask reading: formats, bit depths, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixelcam.data.io import read_image, read_mask, to_rgb_uint8
from pixelcam.errors import InputError

RNG = np.random.default_rng(42)
RGB8 = RNG.integers(0, 256, (9, 13, 3), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (9, 13, 3), dtype=np.uint16)
GRAY8 = RNG.integers(0, 256, (9, 13), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (9, 13), dtype=np.uint16)


def _smooth(h: int = 32, w: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)


def _check_rgb(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)


# ---- formats that must read ------------------------------------------------------------


def test_png_8bit_rgb_exact(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(RGB8).save(p)
    out = read_image(p)
    _check_rgb(out, (9, 13))
    np.testing.assert_array_equal(out, RGB8)


def test_png_16bit_rgb_is_shifted(tmp_path, png_writer):
    p = png_writer(tmp_path / "a16.png", RGB16)
    np.testing.assert_array_equal(read_image(p), (RGB16 >> 8).astype(np.uint8))


def test_png_16bit_gray_is_shifted_and_replicated(tmp_path, png_writer):
    p = png_writer(tmp_path / "g16.png", GRAY16)
    out = read_image(p)
    _check_rgb(out, (9, 13))
    expected = (GRAY16 >> 8).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)


def test_png_grayscale_replicated(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(GRAY8).save(p)
    out = read_image(p)
    np.testing.assert_array_equal(out, np.repeat(GRAY8[..., None], 3, axis=-1))


def test_png_one_bit(tmp_path):
    p = tmp_path / "bits.png"
    Image.fromarray(GRAY8 > 128).convert("1").save(p)
    out = read_image(p)
    np.testing.assert_array_equal(out[..., 0], np.where(GRAY8 > 128, 255, 0))


def test_png_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = 40
    rgba[0, :, 3] = 255  # opaque row keeps its colour
    rgba[1, :, 3] = 0  # transparent row becomes white
    rgba[2, :, 3] = 128
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    out = read_image(p)
    _check_rgb(out, (4, 5))
    assert (out[0] == 40).all()
    assert (out[1] == 255).all()
    assert np.all(np.abs(out[2].astype(int) - round(40 * 128 / 255 + 255 * 127 / 255)) <= 1)


def test_png_gray_alpha(tmp_path, png_writer):
    la = np.zeros((3, 4, 2), np.uint8)
    la[..., 0] = 10
    la[..., 1] = 255
    la[0, :, 1] = 0
    out = read_image(png_writer(tmp_path / "la.png", la))
    assert (out[0] == 255).all() and (out[1:] == 10).all()


def test_png_palette_gives_palette_colours(tmp_path):
    p = tmp_path / "pal.png"
    im = Image.fromarray(_smooth()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.save(p)
    assert Image.open(p).mode == "P"
    np.testing.assert_array_equal(read_image(p), np.asarray(im.convert("RGB")))


def test_bmp_exact(tmp_path):
    p = tmp_path / "a.bmp"
    Image.fromarray(RGB8).save(p)
    np.testing.assert_array_equal(read_image(p), RGB8)


def test_jpeg_close(tmp_path):
    img = _smooth()
    p = tmp_path / "a.jpg"
    Image.fromarray(img).save(p, quality=95)
    out = read_image(p)
    _check_rgb(out, img.shape[:2])
    assert np.abs(out.astype(int) - img).mean() < 4


def test_tiff_8bit_rgb(tmp_path):
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, RGB8, photometric="rgb")
    np.testing.assert_array_equal(read_image(p), RGB8)


def test_tiff_16bit_rgb_and_gray(tmp_path):
    p = tmp_path / "a16.tiff"
    tifffile.imwrite(p, RGB16, photometric="rgb")
    np.testing.assert_array_equal(read_image(p), (RGB16 >> 8).astype(np.uint8))
    g = tmp_path / "g16.tif"
    tifffile.imwrite(g, GRAY16)
    np.testing.assert_array_equal(read_image(g)[..., 1], (GRAY16 >> 8).astype(np.uint8))


def test_tiff_planar_rgb(tmp_path):
    p = tmp_path / "planar.tif"
    tifffile.imwrite(p, np.moveaxis(RGB8, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(p), RGB8)


def test_tiff_float_unit_range_scaled(tmp_path):
    data = np.linspace(0, 1, 9 * 13, dtype=np.float32).reshape(9, 13)
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, data)
    out = read_image(p)
    np.testing.assert_array_equal(out[..., 0], np.round(data.astype(np.float64) * 255))


def test_tiff_float_wide_range_rescaled(tmp_path):
    data = np.linspace(-500, 3000, 9 * 13, dtype=np.float32).reshape(9, 13)
    data[0, 0] = np.nan
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, data)
    out = read_image(p)[..., 0]
    assert out.max() == 255 and out.min() == 0
    assert np.all(np.diff(out.ravel()[1:].astype(int)) >= 0)  # order kept


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_tiff_with_no_finite_pixel_is_refused(tmp_path, fill):
    p = tmp_path / "blank.tif"
    tifffile.imwrite(p, np.full((9, 13, 3), fill, np.float32))
    with pytest.raises(InputError, match="no finite pixel"):
        read_image(p)


def test_tiff_single_page_stack_accepted(tmp_path):
    p = tmp_path / "one.tif"
    tifffile.imwrite(p, GRAY8[None])
    np.testing.assert_array_equal(read_image(p)[..., 2], GRAY8)


def test_one_pixel_image(tmp_path):
    p = tmp_path / "px.png"
    Image.fromarray(np.array([[[1, 2, 3]]], np.uint8)).save(p)
    np.testing.assert_array_equal(read_image(p), [[[1, 2, 3]]])


def test_non_ascii_path_with_spaces(tmp_path):
    folder = tmp_path / "dossier ü ñ"
    folder.mkdir()
    p = folder / "image (été) 1.png"
    Image.fromarray(RGB8).save(p)
    np.testing.assert_array_equal(read_image(p), RGB8)
    np.testing.assert_array_equal(read_image(str(p)), RGB8)


# ---- errors that name the file ---------------------------------------------------------


def _assert_names(exc: pytest.ExceptionInfo, path: Path) -> None:
    assert str(path) in str(exc.value)


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_truncated_files_raise(tmp_path, ext):
    p = tmp_path / f"cut{ext}"
    if ext == ".tif":
        tifffile.imwrite(p, RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    else:
        Image.fromarray(RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(p)
    _truncate(p)
    with pytest.raises(InputError) as exc:
        read_image(p)
    _assert_names(exc, p)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="0 bytes") as exc:
        read_image(p)
    _assert_names(exc, p)


def test_text_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n")
    with pytest.raises(InputError) as exc:
        read_image(p)
    _assert_names(exc, p)


def test_missing_file_and_directory(tmp_path):
    p = tmp_path / "nope.png"
    with pytest.raises(InputError, match="does not exist") as exc:
        read_image(p)
    _assert_names(exc, p)
    with pytest.raises(InputError, match="not a file"):
        read_image(tmp_path)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8, 3), (5, 8, 9), (2, 4, 8, 9)])
def test_tiff_stacks_raise(tmp_path, shape):
    p = tmp_path / "stack.tif"
    kwargs = {"photometric": "rgb"} if shape[-1] == 3 else {}
    tifffile.imwrite(p, np.zeros(shape, np.uint8), **kwargs)
    with pytest.raises(InputError, match="stack") as exc:
        read_image(p)
    _assert_names(exc, p)


def test_multiframe_gif_raises(tmp_path):
    p = tmp_path / "anim.gif"
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 200)]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    p2 = tmp_path / "anim.png"
    p2.write_bytes(p.read_bytes())  # a GIF named .png: still decoded by content
    with pytest.raises(InputError, match="frames") as exc:
        read_image(p2)
    _assert_names(exc, p2)


def test_to_rgb_uint8_rejects_bad_shapes():
    with pytest.raises(InputError, match="shape"):
        to_rgb_uint8(np.zeros((2, 3, 4, 5)), name="x.tif")
    with pytest.raises(InputError, match="empty"):
        to_rgb_uint8(np.zeros((0, 3)), name="x.tif")


def test_to_rgb_uint8_integer_rules():
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[0, 255]], np.int32))[..., 0], [[0, 255]])
    np.testing.assert_array_equal(
        to_rgb_uint8(np.array([[0, 65535]], np.int32))[..., 0], [[0, 255]]
    )
    np.testing.assert_array_equal(
        to_rgb_uint8(np.array([[-5, 2**20]], np.int64))[..., 0], [[0, 255]]
    )


# ---- masks -----------------------------------------------------------------------------


def test_mask_0_255_and_instances(tmp_path):
    m = np.zeros((6, 7), np.uint8)
    m[1:3, 1:3] = 255
    m[4:6, 4:7] = 3
    p = tmp_path / "m.png"
    Image.fromarray(m).save(p)
    out = read_mask(p, shape=(6, 7))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (m > 0).astype(np.uint8))


def test_mask_palette_uses_indices(tmp_path):
    idx = np.zeros((5, 5), np.uint8)
    idx[2:, 2:] = 1
    im = Image.fromarray(idx, mode="P")
    im.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 is WHITE
    p = tmp_path / "pal.png"
    im.save(p)
    np.testing.assert_array_equal(read_mask(p), idx)


def test_mask_rgb_and_16bit(tmp_path, png_writer):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0, 2] = 9
    p = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(p)
    assert read_mask(p).sum() == 1 and read_mask(p)[0, 0] == 1
    m16 = np.zeros((4, 4), np.uint16)
    m16[1, 1] = 1  # would vanish with >> 8: masks keep raw values
    assert read_mask(png_writer(tmp_path / "m16.png", m16))[1, 1] == 1
    t = tmp_path / "m.tif"
    tifffile.imwrite(t, m16)
    assert read_mask(t)[1, 1] == 1


def test_mask_bmp_instances(tmp_path):
    m = np.arange(12, dtype=np.uint8).reshape(3, 4)
    p = tmp_path / "m_anno.bmp"
    Image.fromarray(m).save(p)
    np.testing.assert_array_equal(read_mask(p), (m > 0).astype(np.uint8))


def test_mask_shape_mismatch_names_both_sizes(tmp_path):
    p = tmp_path / "mask file.png"
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(p)
    with pytest.raises(InputError) as exc:
        read_mask(p, shape=(8, 9))
    msg = str(exc.value)
    assert str(p) in msg and "6x7" in msg and "8x9" in msg


def test_mask_unreadable_names_file(tmp_path):
    p = tmp_path / "m.png"
    p.write_text("garbage")
    with pytest.raises(InputError) as exc:
        read_mask(p)
    _assert_names(exc, p)
