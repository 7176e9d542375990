"""Fixtures for the data tests: the shared real data, generated dataset trees, a PNG writer."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
GLAS_FOLDER = "Warwick_QU_Dataset_(Released_2016_07_08)"


def write_png(path: Path, array: np.ndarray) -> Path:
    """Minimal PNG encoder for 8/16-bit gray, gray+alpha, RGB, RGBA (Pillow cannot write
    16-bit RGB)."""
    array = np.asarray(array)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    depth = 16 if array.dtype == np.uint16 else 8
    raw = array.astype(">u2" if depth == 16 else "u1").reshape(height, -1).tobytes()
    row = len(raw) // height
    data = b"".join(b"\x00" + raw[i * row : (i + 1) * row] for i in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def png_writer():
    return write_png


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not available at {SHARED_DATA}")
    return SHARED_DATA.resolve()


def _tile(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def make_camelyon_tree(root: Path, write_folds, size: int = 32) -> Path:
    """A tiny CAMELYON16 patch tree in the Rony et al. layout, with fold-0 files.

    normal/n0..n3.png; tumor/t0..t3.png with mask_file_t*.png beside (t3's mask is empty).
    fold-0: train = n0, n1, t0, t1 (t1 listed with an empty mask field);
    valpx = n2, t2, t3; test = n3 and a missing tumour patch.
    """
    rng = np.random.default_rng(0)
    (root / "normal").mkdir(parents=True)
    (root / "tumor").mkdir()
    for i in range(4):
        Image.fromarray(_tile(rng, size)).save(root / "normal" / f"n{i}.png")
        Image.fromarray(_tile(rng, size)).save(root / "tumor" / f"t{i}.png")
        mask = np.zeros((size, size), np.uint8)
        if i != 3:
            mask[4 : 4 + 8 * (i + 1), 8:20] = 255
        Image.fromarray(mask).save(root / "tumor" / f"mask_file_t{i}.png")
    splits = {
        "train": [("normal/n0.png", 0, ""), ("normal/n1.png", 0, ""),
                  ("tumor/t0.png", 1, "tumor/mask_file_t0.png"), ("tumor/t1.png", 1, "")],
        "valpx": [("normal/n2.png", 0, ""), ("tumor/t2.png", 1, "tumor/mask_file_t2.png"),
                  ("tumor/t3.png", 1, "tumor/mask_file_t3.png")],
        "test": [("normal/n3.png", 0, ""), ("tumor/absent.png", 1, "tumor/mask_file_absent.png")],
    }  # fmt: skip
    return write_folds(root, splits)


@pytest.fixture
def camelyon_tree(tmp_path: Path, write_camelyon_folds) -> Path:
    return make_camelyon_tree(tmp_path / "camelyon16", write_camelyon_folds)


def make_glas_tree(root: Path, ext: str = ".bmp") -> Path:
    """A tiny official-layout GlaS tree: 3 train, 2 testA, 1 testB images (16x24),
    instance-numbered masks, a Grade.csv with spaces, and fold-0 files naming .bmp."""
    rng = np.random.default_rng(1)
    folder = root / GLAS_FOLDER
    folder.mkdir(parents=True)
    rows = [("train_1", 1), ("train_2", 0), ("train_3", 1), ("testA_1", 0), ("testA_2", 1),
            ("testB_1", 1)]  # fmt: skip
    for name, _ in rows:
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(
            folder / f"{name}{ext}"
        )
        mask = np.zeros((16, 24), np.uint8)
        mask[2:6, 3:9] = 1
        mask[9:14, 12:20] = 2
        Image.fromarray(mask).save(folder / f"{name}_anno{ext}")
    grades = ["Name, Patient ID, GlaS grade, Sirinukunwattana grade"]
    grades += [
        f"{n},{i}, {'malignant' if y else 'benign'}, whatever" for i, (n, y) in enumerate(rows)
    ]
    (folder / "Grade.csv").write_text("\n".join(grades) + "\n")
    folds = root / "folds"
    (folds / "fold-0").mkdir(parents=True)
    (folds / "encoding.yaml").write_text("{benign: 0, malignant: 1}\n")
    splits = {"train": ["train_1", "train_2"], "valpx": ["train_3"], "test": ["testA_1", "testB_9"]}
    labels = dict(rows)
    for split, names in splits.items():
        d = folds / "fold-0" / split
        d.mkdir()
        paths = [f"{GLAS_FOLDER}/{n}.bmp" for n in names]
        (d / "image_ids.txt").write_text("".join(f"{p}\n" for p in paths))
        (d / "class_labels.txt").write_text(
            "".join(f"{p},{labels.get(n, 0)}\n" for p, n in zip(paths, names))
        )
        (d / "localization.txt").write_text(
            "".join(f"{p},{GLAS_FOLDER}/{n}_anno.bmp,\n" for p, n in zip(paths, names))
        )
    return root


@pytest.fixture
def glas_tree_factory():
    return make_glas_tree


@pytest.fixture
def glas_tree(tmp_path: Path) -> Path:
    return make_glas_tree(tmp_path / "glas")
