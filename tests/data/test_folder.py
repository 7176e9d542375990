"""Generic folder format and open_dataset dispatch."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelcam.data import DATASETS, open_dataset
from pixelcam.data.folder import list_splits, load_folder
from pixelcam.errors import InputError


def _write_folder(root: Path, with_classes: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in (("normal", 2), ("cancer", 3)):
        (root / "images" / cls).mkdir(parents=True)
        (root / "masks" / cls).mkdir(parents=True)
        for i in range(n):
            ext = ".jpg" if (cls, i) == ("cancer", 2) else ".png"
            Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(
                root / "images" / cls / f"img_{i}{ext}"
            )
            if i == 0:  # only the first image of each class has a mask
                m = np.zeros((10, 14), np.uint8)
                m[2:5, 3:7] = 255
                Image.fromarray(m).save(root / "masks" / cls / f"img_{i}.png")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("cancer/img_1.png\nnormal/img_0.png\n\n")
    (root / "splits" / "test.txt").write_text("cancer/img_2.jpg\n")
    if with_classes:
        (root / "classes.txt").write_text("normal\ncancer\n")
    return root


def test_all_images_sorted_classes(tmp_path):
    ds = load_folder(_write_folder(tmp_path / "d"))
    assert ds.class_names == ("cancer", "normal")  # sorted folder order
    assert ds.ids == [
        "cancer/img_0",
        "cancer/img_1",
        "cancer/img_2",
        "normal/img_0",
        "normal/img_1",
    ]
    assert ds.labels == [0, 0, 0, 1, 1]
    assert [r.mask_known for r in ds.records] == [True, False, False, True, False]
    s = ds[0]
    assert s.image.shape == (10, 14, 3) and s.mask.sum() == 12 and s.mask.max() == 1
    assert ds[1].mask is None


def test_classes_txt_order_and_splits(tmp_path):
    root = _write_folder(tmp_path / "d", with_classes=True)
    ds = load_folder(root, "train")
    assert ds.class_names == ("normal", "cancer")
    assert ds.ids == ["cancer/img_1", "normal/img_0"] and ds.labels == [1, 0]
    assert load_folder(root, "test").ids == ["cancer/img_2"]
    assert list_splits(root) == ["test", "train"]


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_folder(tmp_path / "absent")
    (tmp_path / "noimg").mkdir()
    with pytest.raises(InputError, match="no images/ folder"):
        load_folder(tmp_path / "noimg")
    (tmp_path / "noclass" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="no class folders"):
        load_folder(tmp_path / "noclass")
    root = _write_folder(tmp_path / "d")
    with pytest.raises(InputError, match="available splits") as exc:
        load_folder(root, "valpx")
    assert "train" in str(exc.value)
    (root / "splits" / "empty.txt").write_text("\n")
    with pytest.raises(InputError, match="split is empty"):
        load_folder(root, "empty")
    (root / "splits" / "bad.txt").write_text("cancer/ghost.png\n")
    with pytest.raises(InputError, match="ghost.png"):
        load_folder(root, "bad")
    (root / "images" / "extra").mkdir()
    with pytest.raises(InputError, match="empty class folder") as exc:
        load_folder(root)
    assert "extra" in str(exc.value)


def test_classes_txt_mismatches(tmp_path):
    root = _write_folder(tmp_path / "d", with_classes=True)
    (root / "classes.txt").write_text("normal\n")
    with pytest.raises(InputError, match="not listed"):
        load_folder(root)
    (root / "classes.txt").write_text("normal\ncancer\nother\n")
    with pytest.raises(InputError, match="has no folder"):
        load_folder(root)


def test_open_dataset_dispatch(tmp_path, glas_tree, camelyon_tree):
    root = _write_folder(tmp_path / "d")
    assert len(open_dataset("folder", root)) == 5
    assert open_dataset("folder", root, "test").ids == ["cancer/img_2"]
    assert open_dataset("glas", glas_tree, fold=None).ids == ["train_1", "train_2", "train_3"]
    assert len(open_dataset("glas", glas_tree, "train", fold=0)) == 2
    assert len(open_dataset("camelyon16", camelyon_tree, "valpx", fold=0)) == 3
    assert len(open_dataset("CAMELYON16", camelyon_tree)) == 8
    with pytest.raises(InputError, match="unknown dataset"):
        open_dataset("imagenet", root)
    with pytest.raises(InputError, match="no fold"):
        open_dataset("folder", root, fold=1)
    assert DATASETS.names() == ["glas", "camelyon16", "folder", "synthetic"]


def test_open_dataset_synthetic_generates_once(tmp_path, monkeypatch):
    calls = []

    def fake_write(root, n_per_class, **kw):
        calls.append((n_per_class, kw))
        return _write_folder(Path(root))

    fake = types.ModuleType("pixelcam.data.synthetic")
    fake.write_synthetic_dataset = fake_write
    monkeypatch.setitem(sys.modules, "pixelcam.data.synthetic", fake)
    target = tmp_path / "syn"
    ds = open_dataset("synthetic", target, "train", size=32)
    assert ds.ids == ["cancer/img_1", "normal/img_0"] and calls == [(8, {"size": 32})]
    assert len(open_dataset("synthetic", target)) == 5 and len(calls) == 1  # reused
    with pytest.raises(InputError, match="already holds"):
        open_dataset("synthetic", target, size=64)


def test_open_dataset_real_synthetic(tmp_path):
    pytest.importorskip("pixelcam.data.synthetic")
    ds = open_dataset("synthetic", tmp_path / "syn", "train", n_per_class=4, size=32)
    assert ds.class_names == ("benign", "malignant") and len(ds) > 0
    s = ds[0]
    assert s.image.shape == (32, 32, 3) and s.mask is not None and s.mask.max() <= 1


def test_lazy_synthetic_reexports():
    import pixelcam.data as data

    synthetic = pytest.importorskip("pixelcam.data.synthetic")
    assert data.write_synthetic_dataset is synthetic.write_synthetic_dataset
    assert data.generate_tile is synthetic.generate_tile
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018
