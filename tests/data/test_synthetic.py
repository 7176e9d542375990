"""Tests of the synthetic H&E-like tile generator and dataset writer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from scipy import stats

from pixelcam.data.synthetic import CLASS_NAMES, STAINS, generate_tile, write_synthetic_dataset
from pixelcam.errors import InputError

N_TILES = 20  # per class, for the statistical tests
SIZE = 128


@pytest.fixture(scope="module")
def tiles() -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """~20 tiles per class, with DIFFERENT seeds per class (benign 0.., malignant 1000..),
    so the stroma comparison does not rely on the shared stream of equal seeds."""
    return {
        label: [generate_tile(label, SIZE, seed=1000 * label + i) for i in range(N_TILES)]
        for label in (0, 1)
    }


# ------------------------------------------------------------------ generate_tile
def test_output_types_and_shapes() -> None:
    image, mask = generate_tile(0, 64, seed=3)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert mask.dtype == np.uint8 and mask.shape == (64, 64)


def test_same_seed_same_pixels() -> None:
    for label in (0, 1):
        a_img, a_mask = generate_tile(label, 96, seed=7)
        b_img, b_mask = generate_tile(label, 96, seed=7)
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_mask, b_mask)


def test_different_seed_differs() -> None:
    for label in (0, 1):
        a_img, a_mask = generate_tile(label, 96, seed=1)
        b_img, b_mask = generate_tile(label, 96, seed=2)
        assert np.mean(a_img != b_img) > 0.5
        assert not np.array_equal(a_mask, b_mask)


def test_labels_give_the_two_classes() -> None:
    """Label 0 and 1 give different gland layouts for the same seed; other labels fail."""
    b_img, b_mask = generate_tile(0, 96, seed=5)
    m_img, m_mask = generate_tile(1, 96, seed=5)
    assert not np.array_equal(b_mask, m_mask)
    for bad in (2, -1, True, 0.0, "1"):
        with pytest.raises(InputError, match="label"):
            generate_tile(bad, 64)


def test_mask_binary_and_coverage_in_range(tiles) -> None:
    cover = {}
    for label, items in tiles.items():
        cover[label] = []
        for _, mask in items:
            assert set(np.unique(mask)) <= {0, 1}
            cover[label].append(mask.mean())
        assert min(cover[label]) >= 0.15 and max(cover[label]) <= 0.55, (label, cover[label])
    # the two distributions overlap: area alone does not give the class away
    assert max(cover[0]) > min(cover[1]) and max(cover[1]) > min(cover[0])
    assert abs(np.median(cover[0]) - np.median(cover[1])) < 0.1


def test_mask_is_the_gland_objects(tiles) -> None:
    """Mask = whole gland objects: no speckle (tiny components) and no holes (the lumen is
    part of the object)."""
    for items in tiles.values():
        for _, mask in items:
            m = mask.astype(bool)
            lab, n = ndi.label(m)
            sizes = np.bincount(lab.ravel())[1:]
            assert n >= 1 and sizes.max() > 200
            filled = ndi.binary_fill_holes(m)
            assert (filled & ~m).sum() <= 0.01 * m.sum()


def _region_stats(items, fg: bool) -> np.ndarray:
    out = []
    for image, mask in items:
        px = image[(mask == 1) == fg].astype(np.float64)
        out.append(np.concatenate([px.mean(0), px.std(0)]))
    return np.array(out)


def test_stroma_statistics_equal_across_classes(tiles) -> None:
    """Mean and std of RGB over mask == 0, per tile: the class means must be statistically
    indistinguishable (Welch t-test) and close compared with the between-tile spread."""
    s0, s1 = _region_stats(tiles[0], False), _region_stats(tiles[1], False)
    p = stats.ttest_ind(s0, s1, equal_var=False).pvalue
    assert np.all(p > 0.01), p
    spread = np.sqrt((s0.var(0, ddof=1) + s1.var(0, ddof=1)) / 2)
    assert np.all(np.abs(s0.mean(0) - s1.mean(0)) < 0.6 * spread)


def test_stroma_is_pixel_identical_across_labels_away_from_glands() -> None:
    """The stroma comes from label-free RNG streams: with the same seed, benign and malignant
    tiles agree exactly wherever neither has a gland within the blur's reach."""
    b_img, b_mask = generate_tile(0, 160, seed=11)
    m_img, m_mask = generate_tile(1, 160, seed=11)
    near = ndi.binary_dilation((b_mask | m_mask).astype(bool), np.ones((3, 3)), iterations=3)
    far = ~near
    assert far.mean() > 0.1
    np.testing.assert_array_equal(b_img[far], m_img[far])


def test_gland_statistics_differ_across_classes(tiles) -> None:
    """The class IS in the masked region: malignant glands are darker (crowded dark nuclei)."""
    g0, g1 = _region_stats(tiles[0], True), _region_stats(tiles[1], True)
    p = stats.ttest_ind(g0[:, :3], g1[:, :3], equal_var=False).pvalue
    assert np.all(p < 1e-4), p
    assert np.all(g1[:, :3].mean(0) < g0[:, :3].mean(0) - 15)


def test_non_square_and_small_sizes() -> None:
    image, mask = generate_tile(1, (48, 100), seed=0)
    assert image.shape == (48, 100, 3) and mask.shape == (48, 100)
    assert 0.0 < mask.mean() < 0.7
    image, mask = generate_tile(0, [100, 40], seed=0)
    assert image.shape == (100, 40, 3) and mask.shape == (100, 40)
    image, _ = generate_tile(0, np.int64(16), seed=np.int64(1))
    assert image.shape == (16, 16, 3)


@pytest.mark.parametrize("size", [15, 0, (64,), (64, 64, 3), 64.0, "64", (64, 10)])
def test_bad_size_raises(size) -> None:
    with pytest.raises(InputError, match="size"):
        generate_tile(0, size)


def test_bad_seed_and_stain_raise() -> None:
    with pytest.raises(InputError, match="seed"):
        generate_tile(0, 32, seed=-1)
    with pytest.raises(InputError, match="seed"):
        generate_tile(0, 32, seed=1.5)
    with pytest.raises(InputError, match="stain.*he"):
        generate_tile(0, 32, stain="pap")


def test_stains_change_colours_not_layout() -> None:
    assert {"he", "he-dark", "ihc"} <= set(STAINS)
    ref_img, ref_mask = generate_tile(1, 96, seed=4, stain="he")
    means = {"he": ref_img.reshape(-1, 3).mean(0)}
    for stain in STAINS:
        if stain == "he":
            continue
        img, mask = generate_tile(1, 96, seed=4, stain=stain)
        np.testing.assert_array_equal(mask, ref_mask)
        means[stain] = img.reshape(-1, 3).mean(0)
        assert np.abs(means[stain] - means["he"]).max() > 10, stain
    he = means["he"]
    assert he[1] < he[0] and he[1] < he[2]  # H&E: pink-purple, green absorbed most
    assert means["he-dark"].mean() < he.mean()  # darker slide
    ihc = means["ihc"]
    assert ihc[0] > ihc[2]  # brownish DAB background instead of pink eosin


def test_h_and_e_colours_by_region() -> None:
    """Nuclei are hematoxylin blue-purple (blue > red), the stroma eosin pink (red > blue)."""
    image, mask = generate_tile(1, 128, seed=9)
    px = image.reshape(-1, 3).astype(int)
    dark = px.sum(1) < np.percentile(px.sum(1), 5)  # the darkest pixels: nuclei
    assert np.all(px[dark].mean(0)[2] > px[dark].mean(0)[0])
    stroma = image[mask == 0].astype(int).mean(0)
    assert stroma[0] > stroma[1] and stroma[0] > 180


# ------------------------------------------------------------------ write_synthetic_dataset
def _read_split(root: Path, name: str) -> list[str]:
    return (root / "splits" / f"{name}.txt").read_text().split()


def test_write_dataset_layout_and_splits(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", n_per_class=10, size=(40, 48), seed=1)
    assert root == tmp_path / "ds"
    assert (root / "classes.txt").read_text().split() == ["benign", "malignant"]
    for name in CLASS_NAMES:
        images = sorted((root / "images" / name).iterdir())
        assert [p.name for p in images] == [f"{name}_{i:04d}.png" for i in range(10)]
        for p in images:
            img = np.asarray(Image.open(p))
            msk = np.asarray(Image.open(root / "masks" / name / p.name))
            assert img.shape == (40, 48, 3) and img.dtype == np.uint8
            assert msk.shape == (40, 48) and set(np.unique(msk)) <= {0, 255}
        # the files are the generator's tiles (a seed per file, derived from the dataset seed)
        first = np.asarray(Image.open(images[0]))
        assert not np.array_equal(first, np.asarray(Image.open(images[1])))
    # the benign and malignant tile i do not share their stroma
    b0 = np.asarray(Image.open(root / "images" / "benign" / "benign_0000.png"))
    m0 = np.asarray(Image.open(root / "images" / "malignant" / "malignant_0000.png"))
    assert np.mean(b0 != m0) > 0.5

    splits = {s: _read_split(root, s) for s in ("train", "valcl", "valpx", "test")}
    all_images = {f"{n}/{n}_{i:04d}.png" for n in CLASS_NAMES for i in range(10)}
    disjoint = [splits["train"], splits["valcl"], splits["test"]]
    assert sum(len(s) for s in disjoint) == 20
    assert set().union(*map(set, disjoint)) == all_images
    assert set(splits["valpx"]) <= set(splits["valcl"]) and splits["valpx"]
    for name in CLASS_NAMES:  # stratified: 6/2/2 per class, valpx 1 per class
        count = {s: sum(p.startswith(name + "/") for p in v) for s, v in splits.items()}
        assert count == {"train": 6, "valcl": 2, "valpx": 1, "test": 2}, count
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["n_per_class"] == 10 and meta["size"] == [40, 48] and meta["complete"]


def test_write_dataset_deterministic_and_seeded(tmp_path: Path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", 5, size=32, seed=3)
    b = write_synthetic_dataset(tmp_path / "b", 5, size=32, seed=3)
    c = write_synthetic_dataset(tmp_path / "c", 5, size=32, seed=4)
    for rel in ("images/malignant/malignant_0003.png", "masks/benign/benign_0001.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / "images/benign/benign_0000.png").read_bytes() != (
        c / "images/benign/benign_0000.png"
    ).read_bytes()
    for s in ("train", "valcl", "valpx", "test"):
        assert _read_split(a, s) == _read_split(b, s)


def test_write_dataset_idempotent(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", 4, size=32, seed=0)
    stamp = (root / "images/benign/benign_0000.png").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert write_synthetic_dataset(root, 4, size=32, seed=0) == root
    assert time.perf_counter() - t0 < 0.5
    assert (root / "images/benign/benign_0000.png").stat().st_mtime_ns == stamp
    # a half-written dataset with the same parameters is completed
    (root / "images/malignant/malignant_0002.png").unlink()
    write_synthetic_dataset(root, 4, size=32, seed=0)
    assert (root / "images/malignant/malignant_0002.png").is_file()


def test_write_dataset_refuses_other_content(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", 3, size=32, seed=0)
    with pytest.raises(InputError, match="another synthetic dataset"):
        write_synthetic_dataset(root, 3, size=32, seed=1)
    with pytest.raises(InputError, match="another synthetic dataset"):
        write_synthetic_dataset(root, 3, size=32, seed=0, stain="ihc")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=re.escape(str(other))):
        write_synthetic_dataset(other, 3, size=32)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(InputError, match="file"):
        write_synthetic_dataset(a_file, 3, size=32)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_synthetic_dataset(empty, 1, size=32, splits=False) == empty
    assert not (empty / "splits").exists()
    assert (empty / "masks/malignant/malignant_0000.png").is_file()


@pytest.mark.parametrize("n", [0, -2, 2.0, True])
def test_write_dataset_bad_count(tmp_path: Path, n) -> None:
    with pytest.raises(InputError, match="n_per_class"):
        write_synthetic_dataset(tmp_path / "ds", n)
    assert not (tmp_path / "ds").exists()


def test_small_datasets_split_sensibly(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", 3, size=24)
    per = {s: _read_split(root, s) for s in ("train", "valcl", "valpx", "test")}
    assert {s: len(v) for s, v in per.items()} == {"train": 2, "valcl": 2, "valpx": 2, "test": 2}
