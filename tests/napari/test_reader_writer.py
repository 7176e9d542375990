"""The napari reader and writers: called directly (fast), and through a viewer where it matters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_pixelcam._reader import find_mask, get_reader
from napari_pixelcam._writer import write_map, write_points
from pixelcam.annotations import AnnotationSet, load_annotations, save_annotations
from pixelcam.errors import InputError

PLUGIN = "napari-pixelcam"
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
GLAS = SHARED_DATA / "glas" / "Warwick_QU_Dataset_(Released_2016_07_08)"


def _rgb(h: int = 40, w: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _read(path) -> list:
    reader = get_reader(str(path))
    assert callable(reader), path
    return reader(str(path))


def _pyramid(path: Path, image: np.ndarray, levels: int = 3) -> Path:
    options = {"tile": (64, 64), "compression": "zlib"}
    if image.ndim == 3:
        options["photometric"] = "rgb"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(image, subifds=levels - 1, **options)
        for k in range(1, levels):
            tif.write(np.ascontiguousarray(image[:: 2**k, :: 2**k]), subfiletype=1, **options)
    return path


# ------------------------------------------------------------------------ get_reader


def test_get_reader_accepts_our_files_only(tmp_path):
    for name in ("a.png", "a.BMP", "a.jpg", "a.jpeg", "a.tif", "a.tiff", "a.svs"):
        assert callable(get_reader(str(tmp_path / name))), name
    assert callable(get_reader([str(tmp_path / "a.png"), str(tmp_path / "b.tif")]))
    assert get_reader(str(tmp_path / "a.txt")) is None
    assert get_reader(str(tmp_path)) is None  # a folder
    assert get_reader([str(tmp_path / "a.png"), str(tmp_path / "b.txt")]) is None
    assert get_reader([]) is None
    other = tmp_path / "table.csv"
    other.write_text("x,y\n1,2\n")
    assert get_reader(str(other)) is None
    assert callable(get_reader(str(tmp_path / "a.points.csv")))


# ------------------------------------------------------------------------ images and masks


def test_plain_image_layer(tmp_path):
    image = _rgb()
    path = _png(tmp_path / "tile_7.png", image)
    ((data, meta, kind),) = _read(path)
    assert kind == "image" and meta["rgb"] and meta["name"] == "tile_7"
    assert meta["metadata"] == {"path": str(path), "image_id": "tile_7"}
    np.testing.assert_array_equal(data, image)


def test_16_bit_grayscale_tiff_becomes_rgb_uint8(tmp_path):
    gray = (np.arange(30 * 20, dtype=np.uint16) * 100).reshape(30, 20)
    path = tmp_path / "g16.tif"
    tifffile.imwrite(path, gray)
    ((data, meta, _),) = _read(path)
    assert data.shape == (30, 20, 3) and data.dtype == np.uint8 and meta["rgb"]
    np.testing.assert_array_equal(data[..., 1], (gray >> 8).astype(np.uint8))


def test_glas_style_mask_beside_the_image_becomes_labels(tmp_path):
    image = _rgb()
    path = _png(tmp_path / "train_3.bmp", image)
    instances = np.zeros((40, 50), np.uint8)
    instances[5:15, 5:15], instances[20:30, 30:45] = 1, 7  # GlaS numbers its glands
    _png(tmp_path / "train_3_anno.bmp", instances)
    (data, _, image_kind), (mask, meta, kind) = _read(path)
    assert image_kind == "image" and data.shape == (40, 50, 3)
    assert kind == "labels" and meta["name"] == "train_3 mask"
    assert meta["metadata"]["path"] == str(tmp_path / "train_3_anno.bmp")
    np.testing.assert_array_equal(mask, (instances > 0).astype(np.uint8))


def test_mask_png_beside_the_image_and_the_mask_file_alone(tmp_path):
    path = _png(tmp_path / "x.jpg", _rgb())
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20] = 255
    mask_path = _png(tmp_path / "x_mask.png", mask)
    assert find_mask(path) == mask_path
    layers = _read(path)
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    ((data, meta, kind),) = _read(mask_path)  # the mask file itself
    assert kind == "labels" and meta["name"] == "x mask"
    assert set(np.unique(data)) == {0, 1} and data.sum() == 500


def test_wrong_size_mask_warns_and_the_image_still_opens(tmp_path):
    path = _png(tmp_path / "y.png", _rgb())
    _png(tmp_path / "y_anno.png", np.ones((10, 10), np.uint8))
    with pytest.warns(UserWarning, match="mask not loaded.*y_anno.png"):
        layers = _read(path)
    assert [kind for _, _, kind in layers] == ["image"]


@pytest.mark.parametrize(
    ("name", "content"),
    [("broken.png", b"\x89PNG\r\n\x1a\nnot really"), ("empty.bmp", b""), ("text.tif", b"hi")],
)
def test_corrupt_file_raises_an_error_naming_it(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    reader = get_reader(str(path))
    with pytest.raises(InputError, match=name):
        reader(str(path))


def test_a_bad_file_in_a_dropped_list_loses_none_of_the_good_ones(tmp_path):
    good = _png(tmp_path / "a.png", _rgb())
    truncated = tmp_path / "b.png"
    truncated.write_bytes(good.read_bytes()[:60])
    nan_map = tmp_path / "m.tif"
    values = np.full((8, 9), np.nan, np.float32)
    values[2:4, 2:4] = 0.5
    tifffile.imwrite(nan_map, values)
    paths = [str(good), str(truncated), str(nan_map)]
    with pytest.warns(UserWarning, match=r"1 of 3 files skipped: .*b\.png"):
        layers = get_reader(paths)(paths)
    assert [meta["name"] for _, meta, _ in layers] == ["a", "m"]
    assert layers[1][1]["contrast_limits"] == (0.5, 1.5)  # NaN pixels do not poison limits
    with pytest.raises(InputError, match="none of the 2 files"):
        get_reader([str(truncated)] * 2)([str(truncated)] * 2)


def test_glas_real_image_with_its_mask():
    image = GLAS / "train_1.png"
    if not image.is_file():
        pytest.skip("shared GlaS data not available")
    (data, meta, _), (mask, mask_meta, kind) = _read(image)
    assert data.shape == (522, 775, 3) and meta["name"] == "train_1"
    assert kind == "labels" and mask.shape == (522, 775) and 0.1 < mask.mean() < 0.9


# ------------------------------------------------------------------------ pyramids and maps


def test_pyramidal_tiff_opens_as_lazy_multiscale(tmp_path):
    image = _rgb(256, 320)
    path = _pyramid(tmp_path / "slide.ome.tif", image)
    ((levels, meta, kind),) = _read(path)
    assert kind == "image" and meta["multiscale"] and meta["rgb"]
    assert meta["metadata"]["path"] == str(path) and meta["metadata"]["pyramid"]
    assert [lv.shape for lv in levels] == [(256, 320, 3), (128, 160, 3), (64, 80, 3)]
    assert levels[0].npartitions == 20  # 64x64 tiles, nothing read yet
    np.testing.assert_array_equal(
        np.asarray(levels[1][10:70, 5:100]), image[::2, ::2][10:70, 5:100]
    )


def test_svs_without_pyramid_is_still_read_lazily(tmp_path):
    image = _rgb(128, 192)
    path = tmp_path / "single.svs"
    tifffile.imwrite(
        path, image, tile=(64, 64), photometric="rgb", metadata=None,
        description="Aperio Image Library Fake\r\n192x128 (64x64) RAW|MPP = 0.5",
    )  # fmt: skip
    ((data, meta, kind),) = _read(path)
    assert kind == "image" and not meta["multiscale"] and meta["rgb"]
    assert data.npartitions == 6  # a dask array, one chunk a tile
    np.testing.assert_array_equal(np.asarray(data), image)


def test_uint16_pyramid_gets_contrast_limits(tmp_path):
    data = (np.arange(128 * 128, dtype=np.uint16) % 4000 + 100).reshape(128, 128)
    path = _pyramid(tmp_path / "gray.tif", data, levels=2)
    ((levels, meta, _),) = _read(path)
    assert not meta["rgb"] and meta["contrast_limits"][1] > 3000


def test_map_round_trip_keeps_values_scale_and_compression(tmp_path):
    cam = np.random.default_rng(1).random((30, 40)).astype(np.float32)
    meta = {"name": "CAM", "scale": (0.5, 0.25), "translate": (2.0, 3.0), "colormap": "viridis"}
    (written,) = write_map(str(tmp_path / "cam"), cam, meta)
    assert written.endswith("cam.tif")
    with tifffile.TiffFile(written) as tif:
        page = tif.pages[0]
        assert page.dtype == np.float32 and page.compression == 8  # zlib (deflate)
        assert page.tags["XResolution"].value == (4, 1)  # 1 / 0.25 pixels per unit
        assert page.tags["YResolution"].value == (2, 1)
    ((data, back, kind),) = _read(written)
    assert kind == "image" and back["name"] == "CAM" and back["colormap"] == "viridis"
    assert back["scale"] == (0.5, 0.25) and back["translate"] == (2.0, 3.0)
    np.testing.assert_array_equal(data, cam)


def test_map_writer_takes_level_zero_and_keeps_rgb_integers(tmp_path):
    base = np.linspace(0, 1, 64 * 64, dtype=np.float64).reshape(64, 64)
    (path,) = write_map(str(tmp_path / "ms.tiff"), [base, base[::2, ::2]], {"multiscale": True})
    assert path.endswith("ms.tiff")
    np.testing.assert_array_equal(tifffile.imread(path), base.astype(np.float32))
    rgb = _rgb()
    (path,) = write_map(str(tmp_path / "rgb.tif"), rgb, {"rgb": True})
    back = tifffile.imread(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, rgb)


# ------------------------------------------------------------------------ points


def _points_meta(**metadata) -> dict:
    return {
        "name": "clicks",
        "features": {"label": np.array([1, 0, 1]), "source": np.array(["user", "sampled", "user"])},
        "metadata": {"image_shape": (40, 50), "image_id": "tile_7", **metadata},
    }


POINTS = np.array([[1.0, 2.0], [39.0, 49.0], [20.5, 0.0]])


@pytest.mark.parametrize("name", ["tile_7.points.csv", "tile_7.points.json", "no_suffix"])
def test_points_round_trip(tmp_path, name):
    (path,) = write_points(str(tmp_path / name), POINTS, _points_meta(image_path="/d/tile_7.png"))
    ann = load_annotations(path)
    assert ann.image_id == "tile_7" and ann.image_shape == (40, 50)
    assert ann.image_path == "/d/tile_7.png" and ann.sources() == ["user", "sampled", "user"]
    np.testing.assert_array_equal(ann.coords(), POINTS)
    if name == "no_suffix":
        assert path.endswith("no_suffix.csv")
        return
    ((coords, meta, kind),) = _read(path)
    assert kind == "points" and meta["name"] == "tile_7 points"
    np.testing.assert_array_equal(coords, POINTS)
    np.testing.assert_array_equal(meta["features"]["label"], [1, 0, 1])
    assert meta["metadata"]["image_shape"] == (40, 50)
    assert meta["face_color"][0] != meta["face_color"][1]
    (again,) = write_points(str(tmp_path / "again.csv"), coords, meta)  # reader -> writer
    assert load_annotations(again) == ann


def test_points_writer_needs_image_shape_and_labels(tmp_path):
    meta = _points_meta()
    del meta["metadata"]["image_shape"]
    with pytest.raises(InputError, match="image_shape"):
        write_points(str(tmp_path / "a.csv"), POINTS, meta)
    meta = _points_meta()
    meta["features"] = {}
    with pytest.raises(InputError, match="'label' feature"):
        write_points(str(tmp_path / "a.csv"), POINTS, meta)
    meta = _points_meta()
    meta["features"]["label"] = np.array([1, 2, 0])
    with pytest.raises(InputError, match="label"):
        write_points(str(tmp_path / "a.csv"), POINTS, meta)
    assert not (tmp_path / "a.csv").exists()


def test_points_writer_handles_3d_points_on_one_plane_and_bool_labels(tmp_path):
    meta = _points_meta()
    meta["features"] = {"label": np.array([True, False, True])}
    flat = np.column_stack([np.full(3, 4.0), POINTS])
    (path,) = write_points(str(tmp_path / "p.csv"), flat, meta)
    ann = load_annotations(path)
    np.testing.assert_array_equal(ann.labels(), [1, 0, 1])
    assert ann.sources() == ["user"] * 3
    flat[0, 0] = 5.0
    with pytest.raises(InputError, match="several planes"):
        write_points(str(tmp_path / "q.csv"), flat, meta)


def test_reading_a_multi_image_json_gives_one_points_layer_each(tmp_path):
    sets = [
        AnnotationSet.from_arrays("a", (10, 10), [[1, 1]], [1]),
        AnnotationSet.from_arrays("b", (10, 10), np.empty((0, 2)), []),
    ]
    path = save_annotations(tmp_path / "all.points.json", sets)
    layers = _read(path)
    assert [meta["name"] for _, meta, _ in layers] == ["a points", "b points"]
    assert layers[1][0].shape == (0, 2)


# ------------------------------------------------------------------------ through a viewer


def test_viewer_opens_image_mask_and_pyramid(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    path = _png(tmp_path / "v.png", _rgb())
    _png(tmp_path / "v_mask.png", np.eye(40, 50, dtype=np.uint8))
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    assert layers[0].metadata["path"] == str(path) and layers[0].rgb
    slide = _pyramid(tmp_path / "s.ome.tif", _rgb(256, 256))
    (pyramid,) = viewer.open(str(slide), plugin=PLUGIN)
    assert pyramid.multiscale and len(pyramid.data) == 3


def test_viewer_survives_a_corrupt_file(make_napari_viewer, tmp_path, monkeypatch):
    import napari.components.viewer_model as viewer_model
    from napari.errors import ReaderPluginError

    viewer = make_napari_viewer()
    bad = tmp_path / "corrupt_slide.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InputError, match="corrupt_slide.png"):
        viewer.open(str(bad), plugin=PLUGIN)
    # File > Open goes through _open_or_raise_error: with our plugin the preferred reader of
    # .png files, napari wraps the error, and our message naming the file is what it shows.
    monkeypatch.setattr(viewer_model, "get_preferred_reader", lambda path: PLUGIN)
    with pytest.raises(ReaderPluginError, match=r"(?s)napari-pixelcam.*corrupt_slide\.png"):
        viewer._open_or_raise_error([str(bad)])
    assert len(viewer.layers) == 0
    good = _png(tmp_path / "fine.png", _rgb())
    viewer._open_or_raise_error([str(good)])
    assert [layer.name for layer in viewer.layers] == ["fine"]


def test_viewer_saves_points_and_maps_with_our_writers(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    points = viewer.add_points(
        POINTS,
        features={"label": [1, 0, 1]},
        metadata={"image_shape": (40, 50), "image_id": "tile_7"},
    )
    target = tmp_path / "tile_7.points.csv"
    points.save(str(target), plugin=PLUGIN)
    ann = load_annotations(target)
    np.testing.assert_array_equal(ann.labels(), [1, 0, 1])
    cam = viewer.add_image(np.random.default_rng(0).random((20, 30)), scale=(2.0, 2.0))
    out = tmp_path / "cam.tif"
    cam.save(str(out), plugin=PLUGIN)
    ((data, meta, _),) = _read(out)
    assert data.dtype == np.float32 and meta["scale"] == (2.0, 2.0)
    np.testing.assert_allclose(data, cam.data, rtol=1e-6)
