"""Regions in napari: QuPath GeoJSON in and out through the manifest, map regions as shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from pixelcam.geojson import read_geojson, write_geojson
from pixelcam.regions import regions_from_map

PLUGIN = "napari-pixelcam"

QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
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
                "measurements": {"Area µm^2": 1234.5},
            },
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[100, 100], [140, 100], [140, 140], [100, 100]]],
            },
            "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}},
        },  # fmt: skip
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
    ],
}


def _ring_map() -> np.ndarray:
    m = np.zeros((60, 60), np.float32)
    m[10:50, 10:50] = 0.9
    m[20:40, 20:40] = 0.0
    m[27:33, 27:33] = 0.7
    return m


def test_a_qupath_file_opens_as_shapes_and_points(make_napari_viewer, tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 160)).save(tmp_path / "slide.png")
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps(QUPATH))
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    shapes, points = layers
    assert shapes.name == "slide regions" and type(shapes).__name__ == "Shapes"
    assert len(shapes.data) == 4  # tumour shell + its hole, second tumour polygon, stroma
    assert shapes.features["ring"].tolist() == ["shell", "hole", "shell", "shell"]
    assert shapes.features["classification"].tolist() == ["Tumor"] * 3 + ["Stroma"]
    assert shapes.features["Area µm^2"].iloc[0] == 1234.5
    assert np.allclose(shapes.edge_color[0][:3], np.array([200, 0, 0]) / 255, atol=0.01)
    assert np.allclose(shapes.face_color[:, 3], 0)  # outlines only: holes show
    assert np.allclose(shapes.data[0].min(0), [9.5, 9.5])  # pixel corners -> centres
    assert shapes.metadata["image_shape"] == (160, 200)
    assert type(points).__name__ == "Points" and points.name == "slide points"
    assert points.features["label"].tolist() == [0, 0, 1]
    assert np.allclose(points.data[1], [15.0, 20.0])


def test_shapes_round_trip_keeps_polygons_holes_and_properties(make_napari_viewer, tmp_path):
    regions = regions_from_map(_ring_map(), 0.5, method="pixelcam", scale=2.0)
    path = write_geojson(tmp_path / "tile.pixelcam.geojson", regions)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    out = tmp_path / "saved.geojson"
    viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    back = read_geojson(out)
    assert len(back) == len(regions)
    for a, b in zip(regions, back):
        assert b.geometry.is_valid
        assert shapely.hausdorff_distance(a.geometry, b.geometry) <= 1.0
        assert len(a.geometry.interiors) == len(b.geometry.interiors)
        assert a.measurements == pytest.approx(b.measurements)
        assert (a.classification, a.method, a.name, a.id) == (
            b.classification, b.method, b.name, b.id,
        )  # fmt: skip
    # a hand-drawn shape is an unclassified annotation; its colour stays unset
    layer.add_polygons([np.array([[100.0, 100.0], [100.0, 110.0], [110.0, 110.0]])])
    viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert len(read_geojson(out)) == len(regions) + 1


def test_panel_turns_the_shown_map_into_editable_shapes(
    make_napari_viewer, plugin_errors, dock_panel, tmp_path, qtbot
):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "malignant")
    panel = dock_panel(viewer)
    panel.device.value = "cpu"
    panel.methods.value = ["pixelcam"]
    panel.run_maps(wait=True)
    panel.threshold.value = 0.5
    panel.map_regions(wait=True)
    assert not plugin_errors, plugin_errors
    layer = viewer.layers["pixelcam regions [synthetic malignant]"]
    values = np.asarray(viewer.layers["pixelcam [synthetic malignant]"].data)
    shells = layer.features["ring"] == "shell"
    area = layer.features.loc[shells, "Area px^2"].sum()
    assert area == int((values >= 0.5).sum()) > 0
    assert layer.editable and np.allclose(layer.face_color[:, 3], 0)
    out = tmp_path / "regions.geojson"
    viewer.layers.selection = {layer}
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert {r.method for r in read_geojson(out)} == {"pixelcam"}
    # without a map: one notification, no crash
    panel.view.shown = None
    assert panel.map_regions() is None and plugin_errors
    # the session's warm-up workers end before the viewer closes (else Qt aborts)
    from napari.qt.threading import WorkerBase

    qtbot.waitUntil(panel.session.is_warm, timeout=120000)
    WorkerBase.await_workers(120000)
