"""GlaS loader: official splits, fold files, .bmp/.png, missing files; real data when present."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelcam.data.glas import GLAS_FOLDER, load_glas, read_glas_grades
from pixelcam.errors import InputError

# ---- generated tree --------------------------------------------------------------------


def test_official_splits_from_grade_csv(glas_tree):
    train = load_glas(glas_tree, "train", fold=None)
    assert train.ids == ["train_1", "train_2", "train_3"] and train.labels == [1, 0, 1]
    assert train.class_names == ("benign", "malignant")
    assert load_glas(glas_tree, "testA", fold=None).ids == ["testA_1", "testA_2"]
    assert load_glas(glas_tree, "testB", fold=None).labels == [1]
    assert load_glas(glas_tree, "test", fold=None).ids == ["testA_1", "testA_2", "testB_1"]
    s = train[0]
    assert s.image.shape == (16, 24, 3) and set(np.unique(s.mask)) == {0, 1}
    assert s.mask.sum() == 4 * 6 + 5 * 8  # both instances are foreground


def test_root_may_be_the_warwick_folder(glas_tree):
    ds = load_glas(glas_tree / GLAS_FOLDER, "train", fold=0, folds_dir=glas_tree / "folds")
    assert ds.ids == ["train_1", "train_2"]


def test_fold_files_default_folds_dir(glas_tree):
    ds = load_glas(glas_tree, "train", fold=0)
    assert ds.ids == ["train_1", "train_2"] and ds.labels == [1, 0]
    assert all(r.mask_known and r.mask_path.is_file() for r in ds.records)
    assert load_glas(glas_tree, "valpx", fold=0).ids == ["train_3"]


def test_png_accepted_for_bmp_names(tmp_path, glas_tree_factory):
    root = glas_tree_factory(tmp_path / "g", ext=".png")
    ds = load_glas(root, "train", fold=0)
    assert [r.image_path.suffix for r in ds.records] == [".png", ".png"]
    assert ds.records[0].mask_path.name == "train_1_anno.png"
    assert ds[0].mask.max() == 1
    assert len(load_glas(root, "train", fold=None)) == 3


def test_missing_files_error_and_skip(glas_tree):
    with pytest.raises(InputError) as exc:
        load_glas(glas_tree, "test", fold=0)
    msg = str(exc.value)
    assert "testB_9.bmp" in msg and "testB_9_anno.bmp" in msg and "1 of 2 image(s)" in msg
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_glas(glas_tree, "test", fold=0, missing="skip")
    assert ds.ids == ["testA_1"]
    assert any("testB_9" in str(w.message) for w in caught)
    with pytest.raises(InputError, match="missing must be"):
        load_glas(glas_tree, "test", fold=0, missing="ignore")


def test_missing_mask_in_official_split(glas_tree):
    (glas_tree / GLAS_FOLDER / "train_2_anno.bmp").unlink()
    with pytest.raises(InputError, match="train_2_anno"):
        load_glas(glas_tree, "train", fold=None)


def test_folds_dir_required_message(glas_tree):
    shutil.rmtree(glas_tree / "folds")
    with pytest.raises(InputError, match="folds_dir"):
        load_glas(glas_tree, "train", fold=0)
    with pytest.raises(InputError, match="fold folder"):
        load_glas(glas_tree, "train", fold=3, folds_dir=glas_tree)


def test_unknown_label_in_class_labels(glas_tree):
    labels = glas_tree / "folds" / "fold-0" / "train" / "class_labels.txt"
    labels.write_text(labels.read_text().replace(",0", ",7"))
    with pytest.raises(InputError, match="unknown label") as exc:
        load_glas(glas_tree, "train", fold=0)
    assert str(labels) in str(exc.value)


def test_labels_by_name_and_encoding(glas_tree):
    (glas_tree / "folds" / "encoding.yaml").write_text("{healthy: 0, cancer: 1}\n")
    labels = glas_tree / "folds" / "fold-0" / "train" / "class_labels.txt"
    labels.write_text(labels.read_text().replace(",1", ",CANCER"))
    ds = load_glas(glas_tree, "train", fold=0)
    assert ds.class_names == ("healthy", "cancer") and ds.labels == [1, 0]


def test_unknown_grade_in_grade_csv(glas_tree):
    grade = glas_tree / GLAS_FOLDER / "Grade.csv"
    grade.write_text(grade.read_text().replace(" benign,", " benevolent,", 1))
    with pytest.raises(InputError, match="benevolent") as exc:
        load_glas(glas_tree, "train", fold=None)
    assert str(grade) in str(exc.value)


def test_empty_split_file(glas_tree):
    (glas_tree / "folds" / "fold-0" / "valpx" / "image_ids.txt").write_text("\n")
    with pytest.raises(InputError, match="split is empty"):
        load_glas(glas_tree, "valpx", fold=0)


def test_bad_roots_and_splits(tmp_path, glas_tree):
    with pytest.raises(InputError, match="does not exist"):
        load_glas(tmp_path / "absent")
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="no GlaS images"):
        load_glas(tmp_path / "other")
    with pytest.raises(InputError, match="valcl"):
        load_glas(glas_tree, "valcl", fold=None)
    with pytest.raises(InputError, match="fold split"):
        load_glas(glas_tree, "testA", fold=0)


def test_labels_argument_without_grade_csv(glas_tree):
    (glas_tree / GLAS_FOLDER / "Grade.csv").unlink()
    with pytest.raises(InputError, match="labels="):
        load_glas(glas_tree, "train", fold=None)
    ds = load_glas(
        glas_tree,
        "train",
        fold=None,
        labels={"train_1": 0, "train_2.bmp": "malignant", "train_3": 1},
    )
    assert ds.ids == ["train_1", "train_2", "train_3"] and ds.labels == [0, 1, 1]
    with pytest.raises(InputError, match="no label"):
        load_glas(glas_tree, "train", fold=None, labels={"train_1": 0})


def test_read_glas_grades_header_variants(tmp_path):
    p = tmp_path / "Grade.csv"
    p.write_text("name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)\n"
                 "testA_1,4, benign, adenomatous\ntestA_12,11, malignant , poorly\n")  # fmt: skip
    assert read_glas_grades(p) == {"testA_1": 0, "testA_12": 1}


# ---- real data (skipped when ../shared/data is absent) ---------------------------------


def _grades(csv_path: Path) -> dict[str, int]:
    """Independent parse of Grade.csv for cross-checking the loader."""
    out = {}
    for line in csv_path.read_text().splitlines()[1:]:
        cols = [c.strip() for c in line.split(",")]
        out[cols[0]] = {"benign": 0, "malignant": 1}[cols[2]]
    return out


def test_real_glas_fold0_counts_and_labels(shared_data):
    root, folds = shared_data / "glas", shared_data / "glas-folds"
    grades = _grades(root / GLAS_FOLDER / "Grade.csv")
    counts = {}
    for split in ("train", "valcl", "valpx"):
        ds = load_glas(root, split, fold=0, folds_dir=folds)
        counts[split] = len(ds)
        assert ds.labels == [grades[i] for i in ds.ids]
        assert all(r.image_path.suffix == ".png" and r.mask_known for r in ds.records)
    assert counts == {"train": 67, "valcl": 18, "valpx": 6}
    assert ds.class_names == ("benign", "malignant")
    s = ds[0]  # read just one real sample
    assert s.image.shape == (522, 775, 3) and set(np.unique(s.mask)) <= {0, 1} and s.mask.any()


def test_real_glas_test_split_is_missing(shared_data):
    root, folds = shared_data / "glas", shared_data / "glas-folds"
    with pytest.raises(InputError) as exc:
        load_glas(root, "test", fold=0, folds_dir=folds)
    assert "80 of 80 image(s)" in str(exc.value) and "testA_1.bmp" in str(exc.value)
    with warnings.catch_warnings(record=True), pytest.raises(InputError, match="split is empty"):
        warnings.simplefilter("always")
        load_glas(root, "test", fold=0, folds_dir=folds, missing="skip")


def test_real_glas_official_train(shared_data):
    root = shared_data / "glas"
    ds = load_glas(root, "train", fold=None)
    assert len(ds) == 85 and ds.ids[:2] == ["train_1", "train_2"]
    assert ds.labels == [_grades(root / GLAS_FOLDER / "Grade.csv")[i] for i in ds.ids]


def test_real_glas_mini(shared_data):
    mini, folds = shared_data / "glas-mini", shared_data / "glas-folds"
    labels = folds / "fold-0" / "train" / "class_labels.txt"
    ds = load_glas(mini, "train", fold=None, labels=labels)
    assert ds.ids == ["train_20", "train_22", "train_71"] and ds.labels == [0, 0, 1]
    raw = np.asarray(Image.open(mini / "train_22_anno.bmp"))
    assert len(np.unique(raw)) > 2  # instance-numbered in the file ...
    for i in range(2):  # ... binary after reading (the 128x86 pair; skip the large one)
        s = ds[i]
        assert s.image.shape == (86, 128, 3) and set(np.unique(s.mask)) == {0, 1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        by_fold = load_glas(mini, "train", fold=0, folds_dir=folds, missing="skip")
    assert sorted(by_fold.ids) == ["train_20", "train_22", "train_71"] and caught
    assert dict(zip(by_fold.ids, by_fold.labels)) == {"train_20": 0, "train_22": 0, "train_71": 1}
