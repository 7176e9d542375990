"""CAMELYON16 patch loader on a generated tree in the Rony et al. layout."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from pixelcam.data.camelyon import load_camelyon16
from pixelcam.errors import InputError


def test_fold_train(camelyon_tree):
    ds = load_camelyon16(camelyon_tree, "train", fold=0)
    assert ds.ids == ["normal/n0", "normal/n1", "tumor/t0", "tumor/t1"]
    assert ds.labels == [0, 0, 1, 1] and ds.class_names == ("normal", "metastatic")
    assert all(r.mask_known for r in ds.records)
    normal, tumour, empty_field = ds[0], ds[2], ds[3]
    assert normal.image.shape == (32, 32, 3)
    assert normal.mask.shape == (32, 32) and normal.mask.sum() == 0
    assert tumour.mask.sum() == 8 * 12 and tumour.mask.max() == 1
    assert ds.records[3].mask_path is None and empty_field.mask.sum() == 0


def test_empty_mask_file_is_background(camelyon_tree):
    ds = load_camelyon16(camelyon_tree, "valpx", fold=0)
    assert ds.ids == ["normal/n2", "tumor/t2", "tumor/t3"]
    assert ds[1].mask.sum() == 24 * 12 and ds[2].mask.sum() == 0


def test_missing_patch_error_and_skip(camelyon_tree):
    with pytest.raises(InputError) as exc:
        load_camelyon16(camelyon_tree, "test", fold=0)
    assert "tumor/absent.png" in str(exc.value) and "1 of 2" in str(exc.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_camelyon16(camelyon_tree, "test", fold=0, missing="skip")
    assert ds.ids == ["normal/n3"] and caught


def test_listed_mask_absent_is_missing(camelyon_tree):
    (camelyon_tree / "tumor" / "mask_file_t0.png").unlink()
    with pytest.raises(InputError, match="mask_file_t0.png"):
        load_camelyon16(camelyon_tree, "train", fold=0)


def test_discovery_without_folds(camelyon_tree):
    ds = load_camelyon16(camelyon_tree, None, fold=None)
    assert len(ds) == 8 and not any("mask_file" in i for i in ds.ids)
    assert ds.labels.count(0) == 4 and ds.labels.count(1) == 4
    (camelyon_tree / "tumor" / "mask_file_t1.png").unlink()
    ds = load_camelyon16(camelyon_tree, "all", fold=None)
    rec = {r.id: r for r in ds.records}
    assert rec["tumor/t1"].mask_known is False and ds[ds.ids.index("tumor/t1")].mask is None
    assert rec["normal/n0"].mask_known and rec["normal/n0"].mask_path is None
    assert rec["tumor/t0"].mask_path.name == "mask_file_t0.png"
    with pytest.raises(InputError, match="fold files"):
        load_camelyon16(camelyon_tree, "train", fold=None)


def test_metastatic_folder_name(camelyon_tree):
    (camelyon_tree / "tumor").rename(camelyon_tree / "metastatic")
    ds = load_camelyon16(camelyon_tree, None, fold=None)
    assert "metastatic/t0" in ds.ids and ds.labels[ds.ids.index("metastatic/t0")] == 1


def test_label_and_structure_errors(tmp_path, camelyon_tree):
    labels = camelyon_tree / "folds" / "fold-0" / "train" / "class_labels.txt"
    labels.write_text(labels.read_text().replace("n1.png,0", "n1.png,tumour"))
    with pytest.raises(InputError, match="unknown label") as exc:
        load_camelyon16(camelyon_tree, "train", fold=0)
    assert str(labels) in str(exc.value)
    with pytest.raises(InputError, match="split must be"):
        load_camelyon16(camelyon_tree, "val", fold=0)
    with pytest.raises(InputError, match="does not exist"):
        load_camelyon16(tmp_path / "absent", "train")
    for p in (camelyon_tree / "normal").iterdir():
        p.unlink()
    with pytest.raises(InputError, match="empty class folder"):
        load_camelyon16(camelyon_tree, None, fold=None)
    shutil.rmtree(camelyon_tree / "folds")
    with pytest.raises(InputError, match="folds_dir"):
        load_camelyon16(camelyon_tree, "train", fold=0)
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="no CAMELYON16 patches"):
        load_camelyon16(tmp_path / "plain", None, fold=None)


def test_mask_size_mismatch_on_read(camelyon_tree):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(camelyon_tree / "tumor" / "mask_file_t0.png")
    ds = load_camelyon16(camelyon_tree, "train", fold=0)  # lazy: building succeeds
    with pytest.raises(InputError) as exc:
        ds[2]
    assert "mask_file_t0.png" in str(exc.value) and "16x16" in str(exc.value)
    assert "32x32" in str(exc.value)
