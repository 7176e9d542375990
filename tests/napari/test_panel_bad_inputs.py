"""The PixelCAM panel and reader on bad or odd input (issue 8): a map or a notification,
never an exception, and the viewer stays usable (a layer can be added, maps computed)."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from pixelcam.errors import InputError

PLUGIN = "napari-pixelcam"
_RNG = np.random.default_rng(0)


def _with(*values: tuple, shape=(64, 64)) -> np.ndarray:
    """Random float32 data with ``(index, value)`` pairs written in."""
    data = _RNG.random(shape).astype(np.float32)
    for index, value in values:
        data[index] = value
    return data


#: name -> (layer data, rgb, None for "a map", else a text the notification must contain)
CASES = {
    "nan": (_with((np.s_[:10], np.nan)), False, None),
    "inf": (_with((np.s_[:10], np.inf), (np.s_[20:30], -np.inf)), False, None),
    "all-nan": (np.full((64, 64), np.nan, np.float32), False, "no finite pixel"),
    "nan-rgb": (_with((np.s_[5:9, :, 1], np.nan), shape=(64, 64, 3)), True, None),
    "cmyk-like-uint8": (_RNG.integers(0, 256, (64, 64, 4), dtype=np.uint8), True, None),
    "4-d": (np.zeros((2, 3, 64, 64), np.float32), False, "expected a 2-D"),
    "1x1": (np.ones((1, 1), np.float32), False, "too small"),
    "100000x3": (_RNG.integers(0, 256, (100_000, 3), dtype=np.uint8), False, "too small"),
    "3x100000-rgb": (_RNG.integers(0, 256, (3, 100_000, 3), dtype=np.uint8), True, "too small"),
}


_LOADED: dict[tuple, tuple] = {}


@pytest.fixture
def panel_and_viewer(make_napari_viewer, monkeypatch, plugin_errors, dock_panel):
    """The panel on the bundled PixelCAM model alone (no baseline), loaded once per module:
    what is tested here is the image handling, not the loading."""
    import pixelcam.models

    errors = plugin_errors
    real = pixelcam.models.load_checkpoint

    def load_once(path, device="cpu", **kw):
        key = (str(path), str(device), Path(path).stat().st_mtime_ns)
        if key not in _LOADED:
            _LOADED[key] = real(path, device=device, **kw)
        return _LOADED[key]

    monkeypatch.setattr(pixelcam.models, "load_checkpoint", load_once)
    viewer = make_napari_viewer()
    panel = dock_panel(viewer)
    panel.device.value = "cpu"
    panel.baseline.value = ""
    panel.methods.value = ["pixelcam"]
    return panel, viewer, errors


def _still_usable(panel, viewer, errors) -> None:
    """The panel is idle, a layer can be added and a good image still gives a map."""
    assert panel.run_button.enabled and panel._worker is None
    assert viewer.add_image(np.zeros((8, 8), np.float32), name="after").data.shape == (8, 8)
    n_errors = len(errors)
    good = viewer.add_image(_RNG.integers(0, 256, (48, 56, 3), dtype=np.uint8), name="good")
    panel.image_combo.value = good
    panel.run_maps(wait=True)
    assert len(errors) == n_errors, errors
    assert viewer.layers["pixelcam [good]"].data.shape == (48, 56)


@pytest.mark.parametrize("name", list(CASES))
def test_odd_images_give_a_map_or_a_notification(panel_and_viewer, name):
    panel, viewer, errors = panel_and_viewer
    data, rgb, message = CASES[name]
    layer = viewer.add_image(data, name=name, rgb=rgb)
    panel.image_combo.value = layer
    n_layers = len(viewer.layers)
    panel.run_maps(wait=True)
    if message is None:
        assert not errors, errors
        result = viewer.layers[f"pixelcam [{name}]"].data
        assert result.shape == data.shape[:2] and np.isfinite(result).all()
        assert 0.0 <= result.min() <= result.max() <= 1.0
        assert panel.run_button.enabled and panel._worker is None
        assert viewer.add_image(np.zeros((8, 8), np.float32), name="after").data.shape == (8, 8)
    else:
        assert len(errors) == 1 and message in errors[0], errors
        assert errors[0].startswith("PixelCAM: ") and "\n" not in errors[0]
        assert len(viewer.layers) == n_layers  # nothing half-added
        _still_usable(panel, viewer, errors)


def test_a_pickle_bomb_as_the_model_is_refused_without_running(panel_and_viewer, tmp_path):
    panel, viewer, errors = panel_and_viewer
    marker = tmp_path / "PWNED"
    bomb = tmp_path / "model.pt"
    bomb.write_bytes(pickle.dumps(_Bomb(marker), protocol=2))
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="tile")
    good_model = panel.checkpoint.value
    for path in (bomb, bomb.with_suffix(".safetensors")):
        path.write_bytes(bomb.read_bytes())
        panel.checkpoint.value = path
        panel.run_maps(wait=True)
        assert errors and path.stem in errors[-1], errors
    assert not marker.exists()
    panel.checkpoint.value = good_model
    _still_usable(panel, viewer, errors)


class _Bomb:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


# ---- the napari reader on the generated file matrix of tests/robustness ------------------


def _matrix_module():
    path = Path(__file__).resolve().parents[1] / "robustness" / "conftest.py"
    spec = importlib.util.spec_from_file_location("robustness_matrix", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    return _matrix_module().make_input_matrix(tmp_path_factory.mktemp("matrix"))


def test_reader_on_every_file_of_the_matrix(matrix):
    from napari_pixelcam._reader import get_reader

    assert len(matrix) > 20
    for case in matrix.values():
        reader = get_reader(str(case.path))
        assert reader is not None, case.name
        if case.ok:
            data, _, kind = reader(str(case.path))[0]
            assert kind == "image" and np.asarray(data).shape[:2] == case.shape, case.name
        else:
            with pytest.raises(InputError) as exc:
                reader(str(case.path))
            assert str(case.path) in str(exc.value), case.name


def test_viewer_open_of_a_bad_file_leaves_the_viewer_usable(make_napari_viewer, matrix):
    viewer = make_napari_viewer()
    for name in ("truncated_tif", "text_as_png", "stack_4d"):
        with pytest.raises(Exception, match="truncated|cannot read|stack"):
            viewer.open(str(matrix[name].path), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    viewer.open(str(matrix["gray8"].path), plugin=PLUGIN)
    assert viewer.layers[-1].data.shape == (20, 24, 3)
