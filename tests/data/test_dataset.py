"""Record, WSOLDataset and collate_samples."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pixelcam.data.dataset import Record, Sample, WSOLDataset, collate_samples, handle_missing
from pixelcam.data.transforms import EvalTransform, TrainTransform
from pixelcam.errors import InputError


@pytest.fixture
def small_set(tmp_path: Path) -> WSOLDataset:
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        img = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(img)
        mask_path, known = None, False
        if i == 1:
            mask_path, known = tmp_path / "m1.png", True
            m = np.zeros((12, 16), np.uint8)
            m[2:6, 3:9] = 255
            Image.fromarray(m).save(mask_path)
        elif i == 2:
            known = True  # known, all background
        records.append(Record(f"id{i}", img, i % 2, mask_path, known))
    return WSOLDataset(records, ["neg", "pos"])


def test_metadata(small_set):
    assert len(small_set) == 4
    assert small_set.ids == ["id0", "id1", "id2", "id3"]
    assert small_set.labels == [0, 1, 0, 1]
    assert small_set.class_names == ("neg", "pos") and small_set.num_classes == 2
    assert isinstance(small_set.records[0], Record)
    assert "neg: 2" in repr(small_set)


def test_getitem_without_transform(small_set):
    s = small_set[1]
    assert isinstance(s, Sample)
    assert s.image.dtype == np.uint8 and s.image.shape == (12, 16, 3)
    assert s.mask.dtype == np.uint8 and s.mask.sum() == 4 * 6 and s.mask.max() == 1
    assert s.id == "id1" and s.label == 1 and s.cam is None
    assert small_set[0].mask is None  # unknown
    assert small_set[2].mask is not None and small_set[2].mask.sum() == 0  # known background


def test_cams_resized_to_image_and_transformed(small_set):
    cam = np.zeros((3, 4), np.float32)
    cam[:, 2:] = 1
    ds = small_set.with_cams({"id1": cam, "id3": torch.ones(1, 6, 8)})
    s = ds[1]
    assert s.cam.shape == (12, 16) and s.cam.dtype == np.float32
    assert s.cam[:, :6].max() < 0.5 and s.cam[:, 10:].min() > 0.5
    assert ds[3].cam.shape == (12, 16) and ds[0].cam is None
    t = ds.with_transform(EvalTransform(size=8))
    s = t[1]
    assert s.image.shape == (3, 8, 8) and s.mask.shape == (8, 8) and s.cam.shape == (8, 8)
    assert small_set.transform is None  # copies, not mutation
    with pytest.raises(InputError, match="CAM"):
        small_set.with_cams({"id0": np.zeros((2, 3, 4))})[0]


def test_subset_order_and_unknown(small_set):
    sub = small_set.subset(["id3", "id0"])
    assert sub.ids == ["id3", "id0"] and sub.labels == [1, 0]
    with pytest.raises(InputError, match="nope"):
        small_set.subset(["nope"])


def test_mask_size_mismatch_raises_on_read(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(img)
    mask = tmp_path / "a_mask.png"
    Image.fromarray(np.zeros((5, 10), np.uint8)).save(mask)
    ds = WSOLDataset([Record("a", img, 0, mask, True)], ["x"])  # building is lazy
    with pytest.raises(InputError) as exc:
        ds[0]
    assert str(mask) in str(exc.value) and "5x10" in str(exc.value) and "10x10" in str(exc.value)


def test_validation_errors(tmp_path):
    with pytest.raises(InputError, match="duplicate"):
        WSOLDataset([Record("a", tmp_path / "a.png", 0), Record("a", tmp_path / "b.png", 0)], ["x"])
    with pytest.raises(InputError, match="outside"):
        WSOLDataset([Record("a", tmp_path / "a.png", 2)], ["x", "y"])
    with pytest.raises(InputError, match="mask_known"):
        Record("a", tmp_path / "a.png", 0, tmp_path / "m.png", False)
    with pytest.raises(InputError, match="int"):
        Record("a", tmp_path / "a.png", "1")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="class name"):
        WSOLDataset([], [])
    assert Record("a", str(tmp_path / "a.png"), np.int64(1)).image_path == tmp_path / "a.png"


def test_collate_with_dataloader(small_set):
    ds = small_set.with_cams({"id1": np.ones((12, 16), np.float32)}).with_transform(
        TrainTransform(resize=12, crop=8)
    )
    torch.manual_seed(0)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_samples)))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == [0, 1, 0, 1] and batch["label"].dtype == torch.long
    assert batch["mask"].shape == (4, 8, 8) and batch["mask"].dtype == torch.uint8
    assert batch["has_mask"].tolist() == [False, True, True, False]
    assert (batch["mask"][0] == 255).all() and (batch["mask"][3] == 255).all()
    assert (batch["mask"][2] == 0).all() and set(batch["mask"][1].unique().tolist()) <= {0, 1}
    assert batch["id"] == ["id0", "id1", "id2", "id3"]
    assert batch["cam"].shape == (4, 8, 8) and batch["has_cam"].tolist() == [
        False,
        True,
        False,
        False,
    ]
    assert (batch["cam"][1] == 1).all() and (batch["cam"][0] == 0).all()


def test_collate_numpy_samples_and_errors(small_set):
    batch = collate_samples([small_set[0], small_set[2]])
    assert batch["image"].shape == (2, 3, 12, 16)
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
    assert batch["cam"] is None
    odd = Sample(np.zeros((5, 5, 3), np.uint8), 0, None, "odd", None)
    with pytest.raises(InputError, match="different sizes"):
        collate_samples([small_set[0], odd])
    with pytest.raises(InputError, match="empty"):
        collate_samples([])


def test_handle_missing_policies(tmp_path):
    items = [tmp_path / f"f{i}.png" for i in range(15)]
    items[0].write_bytes(b"x")

    def absent(p):
        return [] if p.is_file() else [p]

    with pytest.raises(InputError) as exc:
        handle_missing(items, absent, "error", "split X", base=tmp_path)
    msg = str(exc.value)
    assert "14 of 15" in msg and "f1.png" in msg and "(and 4 more)" in msg and "split X" in msg
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = handle_missing(items, absent, "skip", "split X")
    assert kept == [items[0]] and len(caught) == 1 and "skipping" in str(caught[0].message)
    with pytest.raises(InputError, match="split is empty"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle_missing(items[1:], absent, "skip", "split X")
    with pytest.raises(InputError, match="missing must be"):
        handle_missing(items, absent, "ignore", "split X")
