"""Regions from maps (pixelcam.regions) and QuPath GeoJSON both ways (pixelcam.geojson)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from pixelcam.errors import InputError
from pixelcam.geojson import (
    AREA_PX,
    AREA_UM2,
    GeoJSONWarning,
    class_label,
    rasterize,
    read_geojson,
    to_annotations,
    write_geojson,
    write_mask,
)
from pixelcam.regions import regions_from_map, trace_bands


def _smooth_map(side: int, seed: int = 0, cell: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = ndi.gaussian_filter(rng.random((side // cell + 2, side // cell + 2)), 1.2)
    m = ndi.zoom(small, cell, order=1)[:side, :side]
    return ((m - m.min()) / (m.max() - m.min())).astype(np.float32)


def _ring_with_island() -> np.ndarray:
    """A 40x40 square ring (hole 20x20) with a 6x6 island inside the hole."""
    m = np.zeros((60, 60), np.float32)
    m[10:50, 10:50] = 0.9
    m[20:40, 20:40] = 0.0
    m[27:33, 27:33] = 0.7
    return m


def _union(regions) -> shapely.Geometry:
    return shapely.union_all([r.geometry for r in regions])


# ----------------------------------------------------------------------------------------
# Tracing


def test_polygons_follow_pixel_edges_with_holes_and_islands():
    m = _ring_with_island()
    regions = regions_from_map(m, 0.5, method="pixelcam", simplify=0)
    assert len(regions) == 2
    ring, island = sorted(regions, key=lambda r: -r.geometry.area)
    assert ring.geometry.equals(shapely.box(10, 10, 50, 50).difference(shapely.box(20, 20, 40, 40)))
    assert len(ring.geometry.interiors) == 1
    assert island.geometry.equals(shapely.box(27, 27, 33, 33))
    assert ring.area_px == 40 * 40 - 20 * 20 and island.area_px == 36
    assert ring.method == "pixelcam" and ring.threshold == 0.5
    assert ring.mean == pytest.approx(0.9) and island.max == pytest.approx(0.7)
    assert ring.area_um2 is None and ring.classification == "Foreground"


def test_scale_and_mpp_give_level0_coordinates_and_areas():
    m = _ring_with_island()
    regions = regions_from_map(m, 0.5, scale=4.0, mpp=0.25, simplify=0)
    island = min(regions, key=lambda r: r.geometry.area)
    assert island.geometry.equals(shapely.box(108, 108, 132, 132))
    assert island.area_px == 36 * 16 and island.area_um2 == pytest.approx(36 * 16 / 16)


def test_total_area_matches_the_pixel_count_within_one_percent_on_a_large_map():
    m = _smooth_map(2048, seed=3)
    count = int((m >= 0.5).sum())
    regions = regions_from_map(m, 0.5)  # default simplification
    area = sum(r.geometry.area for r in regions)
    assert abs(area - count) / count < 0.01
    assert sum(r.area_px for r in regions) == count  # the measurement is the exact count
    # marching squares alone cuts every corner: pixel edges are what makes it exact
    exact = regions_from_map(m, 0.5, simplify=0)
    assert sum(r.geometry.area for r in exact) == count


def test_every_polygon_is_valid_on_checkerboards_and_speckle():
    rng = np.random.default_rng(1)
    for m in (np.indices((16, 16)).sum(0) % 2, rng.random((80, 80))):
        regions = regions_from_map(m.astype(np.float32), 0.5)
        assert all(r.geometry.is_valid and r.geometry.geom_type == "Polygon" for r in regions)
        exact = regions_from_map(m.astype(np.float32), 0.5, simplify=0)
        assert sum(r.geometry.area for r in exact) == int((m >= 0.5).sum())
    # diagonal neighbours are two regions (4-connectivity)
    assert len(regions_from_map(np.eye(5, dtype=np.float32), 0.5)) == 5


def test_nan_is_below_every_threshold_and_bad_arguments_are_refused():
    m = np.full((10, 10), np.nan, np.float32)
    m[2:4, 2:4] = 1.0
    assert [r.area_px for r in regions_from_map(m, 0.5)] == [4]
    with pytest.raises(InputError, match="threshold"):
        regions_from_map(m, 1.5)
    with pytest.raises(InputError, match="2-D"):
        regions_from_map(np.zeros((2, 3, 4)), 0.5)
    with pytest.raises(InputError, match="mpp"):
        regions_from_map(m, 0.5, mpp=-1.0)
    with pytest.raises(InputError, match="scale"):
        regions_from_map(m, 0.5, scale=0)


def test_bands_give_the_whole_map_regions_and_join_seams():
    m = _smooth_map(600, seed=7, cell=40)
    whole = regions_from_map(m, 0.5)
    for rows in (1, 64, 100, 599):
        banded = list(trace_bands(m, 0.5, band_rows=rows))
        assert len(banded) == len(whole)
        a, b = sum(r.geometry.area for r in whole), sum(r.geometry.area for r in banded)
        assert abs(a - b) / a < 0.01
        assert sorted(r.area_px for r in banded) == sorted(r.area_px for r in whole)
    # a U shape and a ring crossing every seam: one polygon each, the ring's hole kept
    u = np.zeros((50, 30), np.float32)
    u[5:45, 5:10] = u[5:45, 20:25] = u[40:45, 5:25] = 1.0
    ring = _ring_with_island()
    for mask in (u, ring):
        whole = regions_from_map(mask, 0.5, simplify=0)
        banded = list(trace_bands(mask, 0.5, band_rows=7, simplify=0))
        assert len(banded) == len(whole)
        assert _union(banded).symmetric_difference(_union(whole)).area == 0
    big = max(banded, key=lambda r: r.geometry.area)
    assert big.geometry.geom_type == "Polygon" and len(big.geometry.interiors) == 1


@settings(max_examples=40)
@given(
    st.integers(4, 40),
    st.integers(4, 40),
    st.integers(1, 12),
    st.integers(0, 2**31 - 1),
    st.floats(0.2, 0.8),
)
def test_banded_tracing_equals_whole_tracing(h, w, rows, seed, fill):
    mask = (np.random.default_rng(seed).random((h, w)) < fill).astype(np.float32)
    whole = regions_from_map(mask, 0.5, simplify=0)
    banded = list(trace_bands(mask, 0.5, band_rows=rows, simplify=0))
    assert len(banded) == len(whole) == ndi.label(mask)[1]
    assert sorted(r.area_px for r in banded) == sorted(r.area_px for r in whole)
    assert all(r.geometry.is_valid for r in banded)
    assert _union(banded).symmetric_difference(_union(whole)).area == 0
    assert _union(banded).area == mask.sum()


def test_trace_bands_reads_rows_lazily():
    class Rows:
        shape = (300, 50)
        reads: list[tuple[int, int]] = []

        def __getitem__(self, key):
            self.reads.append((key.start, key.stop))
            return _smooth_map(300, seed=2)[:, :50][key]

    rows = Rows()
    regions = list(trace_bands(rows, 0.5, band_rows=100))
    assert rows.reads == [(0, 100), (100, 200), (200, 300)] and regions


# ----------------------------------------------------------------------------------------
# GeoJSON out and back


def test_round_trip_keeps_polygons_holes_and_properties(tmp_path):
    m = _ring_with_island()
    m[0:3, 55:60] = 0.6
    regions = regions_from_map(m, 0.5, method="pixelcam", scale=2.0, mpp=0.5)
    path = write_geojson(tmp_path / "slide.pixelcam.geojson", regions)
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    props = doc["features"][0]["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"] == {"name": "Foreground", "color": [124, 255, 79]}
    assert set(props["measurements"]) >= {AREA_PX, AREA_UM2, "Threshold", "Map mean", "Map max"}
    back = read_geojson(path)
    assert len(back) == len(regions)
    for a, b in zip(regions, back):
        assert b.geometry.is_valid and shapely.get_type_id(b.geometry) == 3  # Polygon
        assert shapely.hausdorff_distance(a.geometry, b.geometry) <= 1.0
        assert len(a.geometry.interiors) == len(b.geometry.interiors)
        assert a.measurements == pytest.approx(b.measurements)
        assert (a.method, a.classification, a.color, a.id, a.name) == (
            b.method, b.classification, b.color, b.id, b.name,
        )  # fmt: skip


QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "0f1e2d3c-0000-4000-8000-000000000001",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [
                        [[10, 10], [90, 10], [90, 90], [10, 90], [10, 10]],
                        [[30, 30], [30, 70], [70, 70], [70, 30], [30, 30]],
                    ],
                    [[[120, 10], [150, 10], [150, 40], [120, 40], [120, 10]]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "name": "tumour bed",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "isLocked": False,
                "measurements": {"Area µm^2": 1234.5},
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "MultiPoint", "coordinates": [[50, 50], [20.5, 15.5]]},
            "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [130, 20]},
            "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
        },
        {
            "type": "Feature",
            "id": "PathCellObject",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[5, 100], [15, 100], [15, 110], [5, 110], [5, 100]]],
            },
            "nucleusGeometry": {
                "type": "Polygon",
                "coordinates": [[[8, 103], [12, 103], [12, 107], [8, 103]]],
            },
            "properties": {
                "classification": {"name": "Positive", "colorRGB": -3670016},
                "measurements": [{"name": "DAB mean", "value": 0.4}],
            },
        },  # fmt: skip
    ],
}


def test_a_qupath_export_imports_with_classes_holes_points_and_cells(tmp_path):
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(QUPATH))
    regions = read_geojson(path, image_shape=(200, 200))
    tumour, stroma, point, cell = regions
    assert tumour.geometry.geom_type == "MultiPolygon" and tumour.classification == "Tumor"
    assert tumour.geometry.area == 80 * 80 - 40 * 40 + 30 * 30 and tumour.color == (200, 0, 0)
    assert tumour.id.startswith("0f1e2d3c") and tumour.name == "tumour bed"
    assert stroma.is_points and len(stroma.geometry.geoms) == 2 and point.is_points
    assert cell.object_type == "cell" and cell.geometry.area == 100  # not the nucleus
    assert cell.color == (200, 0, 0) and cell.measurements == {"DAB mean": 0.4}
    mask = rasterize(regions, (200, 200))
    assert mask[50, 50] == 0 and mask[20, 20] == 1 and mask[25, 130] == 1  # hole kept
    assert mask.sum() == 80 * 80 - 40 * 40 + 30 * 30 + 100
    half = rasterize(regions, (100, 100), downsample=2.0)
    assert abs(int(half.sum()) - int(mask.sum()) / 4) <= 10  # the cell's edges: half pixels
    ann = to_annotations(regions, "slide", (200, 200))
    assert ann.labels().tolist() == [0, 0, 1]
    assert ann.coords()[1].tolist() == [15.0, 20.0]  # QuPath corners -> pixel centres
    ann = to_annotations(regions, "slide", (200, 200), labels={"stroma": 1})
    assert ann.labels().tolist() == [1, 1, 1]
    out = write_mask(tmp_path / "masks" / "tumor" / "slide.png", mask)
    from pixelcam.data.io import read_mask

    assert np.array_equal(read_mask(out), mask)


def test_class_names_map_to_fg_and_bg():
    assert class_label("Tumor") == class_label("positive") == class_label(None) == 1
    assert class_label("Stroma") == class_label("Ignore*") == class_label("Negative") == 0
    assert class_label("Tumor: Positive") == 1 and class_label("Other") == 0
    assert class_label("Gland") == 1 and class_label("Gland", {"gland": 0}) == 0


def test_bare_feature_geometry_and_feature_list_are_read(tmp_path):
    geometry = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]}
    for doc in (geometry, {"type": "Feature", "geometry": geometry}, [{"geometry": geometry}]):
        (tmp_path / "a.geojson").write_text(json.dumps(doc))
        (region,) = read_geojson(tmp_path / "a.geojson")
        assert region.geometry.area == 8 and region.object_type == "annotation"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"type": "FeatureCollection", "features": [', "not valid JSON"),
        ('{"type": "FeatureCollection", "features": []}', "no features"),
        ('{"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0]]}}',
         "'LineString' is not supported"),
        ('{"type": "Point", "coordinates": [NaN, 1]}', "non-finite"),
        ('{"type": "Point", "coordinates": [1e999, 1]}', "non-finite"),
        ('{"type": "Point", "coordinates": ["a", 1]}', "numbers"),
        ('{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}', "3 distinct"),
        ('{"type": "Topology"}', "expected a GeoJSON"),
        ('{"type": "Point", "coordinates": [500, 500]}', "outside the image"),
    ],
)  # fmt: skip
def test_bad_inputs_give_one_clear_message(tmp_path, text, match):
    path = tmp_path / "bad.geojson"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        read_geojson(path, image_shape=(100, 100))
    assert str(path) in str(info.value)


def test_self_intersections_are_repaired_and_outside_parts_clipped_with_warnings(tmp_path):
    bowtie = [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]
    wide = [[[50, 50], [150, 50], [150, 80], [50, 80], [50, 50]]]
    far = [[[500, 500], [510, 500], [510, 510], [500, 500]]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": c}}
        for c in (bowtie, bowtie, wide, far)
    ]}  # fmt: skip
    path = tmp_path / "messy.geojson"
    path.write_text(json.dumps(doc))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        regions = read_geojson(path, image_shape=(100, 100))
    messages = [str(w.message) for w in caught if issubclass(w.category, GeoJSONWarning)]
    assert any("repaired 2 self-intersecting" in m for m in messages), messages
    assert any("1 feature(s) clipped" in m and "1 left out" in m for m in messages), messages
    assert len(regions) == 3 and all(r.geometry.is_valid for r in regions)
    assert regions[2].geometry.bounds == (50.0, 50.0, 100.0, 80.0)


def test_huge_and_missing_files_are_refused(tmp_path, monkeypatch):
    import pixelcam.geojson as gj

    path = tmp_path / "big.geojson"
    path.write_text(json.dumps(QUPATH))
    monkeypatch.setattr(gj, "MAX_FILE_BYTES", 100)
    with pytest.raises(InputError, match="more than the limit"):
        read_geojson(path)
    with pytest.raises(InputError, match="does not exist"):
        read_geojson(tmp_path / "nope.geojson")


def test_exported_file_is_written_atomically(tmp_path):
    from pixelcam.fileio import OutputError

    (tmp_path / "file").write_text("not a folder")
    target = tmp_path / "file" / "a.geojson"  # a path through a file: refused, even to root
    with pytest.raises(OutputError, match="a.geojson"):
        write_geojson(target, regions_from_map(_ring_with_island(), 0.5))
    good = write_geojson(tmp_path / "a.geojson", regions_from_map(_ring_with_island(), 0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.geojson", "file"] and good


# ----------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from pixelcam.models import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("test_resnet", pixel_head="linear").eval()
    with torch.no_grad():  # a random pixel head gives maps near 0.5: spread them
        model.pixel_head.conv.weight.mul_(60.0)
        model.pixel_head.conv.bias.zero_()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model")[1]


def test_cli_predict_writes_regions_beside_each_map(checkpoint, tmp_path, capsys):
    from PIL import Image

    from pixelcam.cli import main
    from pixelcam.data.synthetic import generate_tile

    image, _ = generate_tile(1, (96, 80), seed=1)
    Image.fromarray(image).save(tmp_path / "tile.png")
    out = tmp_path / "out"
    args = ["predict", str(checkpoint), str(tmp_path / "tile.png"), "--out", str(out),
            "--device", "cpu", "--size", "64", "--methods", "pixelcam,cam",
            "--regions", "geojson", "--regions-threshold", "0.4"]  # fmt: skip
    assert main(args) == 0
    assert "tile_pixelcam.geojson" in capsys.readouterr().out
    import tifffile

    for method in ("pixelcam", "cam"):
        values = tifffile.imread(out / f"tile_{method}.tif")
        regions = read_geojson(out / f"tile_{method}.geojson", image_shape=values.shape)
        assert sum(r.area_px for r in regions) == int((values >= 0.4).sum())
        assert all(r.geometry.is_valid and r.method == method for r in regions)
        assert all(r.threshold == 0.4 for r in regions)


def test_cli_predict_regions_of_a_slide_are_in_level0_pixels(checkpoint, tmp_path, capsys):
    from pixelcam.cli import main
    from pixelcam.data.synthetic import generate_tile
    from pixelcam.slide import write_pyramid

    tissue, _ = generate_tile(1, (512, 512), seed=2)
    image = np.full((512, 512, 3), 240, np.uint8)
    image[64:448, 64:448] = tissue[:384, :384]
    write_pyramid(tmp_path / "slide.tif", image, tile=128)
    out = tmp_path / "out"
    args = ["predict", str(checkpoint), str(tmp_path / "slide.tif"), "--out", str(out),
            "--device", "cpu", "--size", "32", "--tile", "128", "--overlap", "16",
            "--level", "1", "--min-tissue", "0", "--regions", "geojson"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    regions = read_geojson(out / "slide_pixelcam.geojson", image_shape=(512, 512))
    from pixelcam.slide import open_pyramid

    values = np.asarray(open_pyramid(out / "slide_pixelcam.tif")[0])
    assert values.shape == (256, 256)
    assert sum(r.area_px for r in regions) == 4 * int((values >= 0.5).sum())
    assert max(r.geometry.bounds[2] for r in regions) > 256  # level-0 coordinates


def test_cli_regions_writes_a_mask_and_points(tmp_path, capsys):
    from PIL import Image

    from pixelcam.annotations import load_annotations
    from pixelcam.cli import main
    from pixelcam.data.io import read_mask

    Image.new("RGB", (200, 200)).save(tmp_path / "slide.png")
    (tmp_path / "slide.geojson").write_text(json.dumps(QUPATH))
    mask, points = tmp_path / "masks" / "slide.png", tmp_path / "slide.points.csv"
    args = ["regions", str(tmp_path / "slide.geojson"), "--image", str(tmp_path / "slide.png"),
            "--mask", str(mask), "--points", str(points), "--labels", "Stroma=fg"]  # fmt: skip
    assert main(args) == 0
    assert "3 foreground, 0 background" in capsys.readouterr().out
    assert read_mask(mask).sum() == 80 * 80 - 40 * 40 + 30 * 30 + 100
    assert load_annotations(points).labels().tolist() == [1, 1, 1]
    assert main([*args[:-2], "--labels", "Stroma=maybe"]) == 2
    assert "class=fg" in capsys.readouterr().err
    assert main(["regions", str(tmp_path / "slide.geojson"), "--image", "nope.png",
                 "--mask", str(mask)]) == 2  # fmt: skip
