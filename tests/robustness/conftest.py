"""Generated bad (and odd but valid) input files for the robustness tests.

:func:`make_input_matrix` writes every case of issue 8's matrix into a folder and returns
them by name. A case either must read (``ok``: the reader gives ``uint8`` RGB of
``shape``) or must be refused with an :class:`~pixelcam.errors.InputError` naming the
file (``ok`` False). The napari tests import this module by path to reuse the generator.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

#: A folder name with spaces and non-ASCII characters: every path in the matrix is inside.
ODD_DIR = "dossier à ü 雪 (1)"
#: Tiny training settings shared by the CLI runs of these tests.
TINY_TRAIN = [
    "--dataset", "synthetic", "--backbone", "test_resnet", "--synthetic-n-per-class", "8",
    "--synthetic-size", "64", "--resize", "64", "--crop", "56", "--eval-size", "64",
    "--batch-size", "4", "--device", "cpu", "--num-workers", "0",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One generated file: ``ok`` must read as ``shape`` (H, W); else must be refused."""

    name: str
    path: Path
    ok: bool
    shape: tuple[int, int] | None = None


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encoded(fmt: str, array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buf, array, photometric="rgb")
    else:
        Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def make_input_matrix(root: Path) -> dict[str, Case]:
    """Write the matrix of issue 8 under ``root / ODD_DIR`` and return it by case name."""
    folder = root / ODD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}

    def add(name: str, filename: str, data: bytes, ok: bool, shape=None) -> None:
        path = folder / filename
        path.write_bytes(data)
        cases[name] = Case(name, path, ok, shape)

    def add_array(name: str, filename: str, array: np.ndarray, **kw) -> None:
        path = folder / filename
        if path.suffix == ".tif":
            tifffile.imwrite(path, array, **kw)
        else:
            Image.fromarray(array, **kw).save(path)
        cases[name] = Case(name, path, True, tuple(array.shape[:2]))

    # -- refused: truncated, corrupt, empty, not an image, a stack ------------------------
    for fmt, ext in (("PNG", ".png"), ("BMP", ".bmp"), ("JPEG", ".jpg"), ("TIFF", ".tif")):
        data = _encoded(fmt, _rgb(48, 40))
        add(f"truncated_{ext[1:]}", f"truncated image{ext}", data[: len(data) // 2], False)
        # a valid header followed by noise
        noise = np.random.default_rng(1).integers(0, 256, len(data), dtype=np.uint8).tobytes()
        add(f"corrupt_{ext[1:]}", f"corrupt image{ext}", data[:20] + noise, False)
    add("zero_byte", "empty é.png", b"", False)
    add("text_as_png", "notes ü.png", b"not an image, just text\n", False)
    stack = folder / "stack 4d.tif"
    tifffile.imwrite(stack, np.zeros((2, 3, 16, 16), np.uint8))
    cases["stack_4d"] = Case("stack_4d", stack, False)

    # -- accepted: odd sizes, bit depths, channels, colour spaces -----------------------
    add_array("one_pixel", "one px.png", _rgb(1, 1))
    add_array("tall_100000x3", "tall 100000x3.png", _rgb(100_000, 3))
    add_array("wide_3x100000", "wide 3x100000.png", _rgb(3, 100_000))
    add_array("gray8", "gray ñ.png", _rgb(20, 24)[..., 0])
    add_array(
        "gray16", "gray16.tif", np.linspace(0, 65535, 20 * 24).astype(np.uint16).reshape(20, 24)
    )
    rgba = np.dstack([_rgb(20, 24), np.full((20, 24), 200, np.uint8)])
    add_array("rgba", "rgba.png", rgba, mode="RGBA")
    add_array("rgb16", "rgb16.tif", _rgb(20, 24).astype(np.uint16) * 257, photometric="rgb")
    add_array("float", "float.tif", np.linspace(-3, 7, 20 * 24, dtype=np.float32).reshape(20, 24))
    nonfinite = np.random.default_rng(2).random((20, 24), dtype=np.float32)
    nonfinite[0, :5], nonfinite[1, :5], nonfinite[2, :5] = np.nan, np.inf, -np.inf
    add_array("float_nan_inf", "float nan inf.tif", nonfinite)
    cmyk = np.random.default_rng(3).integers(0, 256, (20, 24, 4), dtype=np.uint8)
    add_array("cmyk_jpeg", "cmyk.jpg", cmyk, mode="CMYK")
    add_array("cmyk_tiff", "cmyk.tif", cmyk, photometric="separated")
    return cases


@pytest.fixture(scope="session")
def odd_name() -> str:
    """:data:`ODD_DIR`: a name with spaces and non-ASCII characters, for folders."""
    return ODD_DIR


@pytest.fixture(scope="session")
def tiny_train() -> list[str]:
    """:data:`TINY_TRAIN`: CLI options of a tiny CPU training run."""
    return list(TINY_TRAIN)


@pytest.fixture(scope="session")
def input_matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return make_input_matrix(tmp_path_factory.mktemp("matrix"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-class ``test_resnet`` PixelCAM checkpoint (stem path)."""
    from pixelcam.models import build_model, save_checkpoint

    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head="linear")
    stem = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(model, stem, {"class_names": ["benign", "malignant"], "eval_size": 32})
    return stem


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic dataset of :data:`TINY_TRAIN` (8 images a class, 64 px)."""
    from pixelcam.data import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic") / "data", n_per_class=8, size=64, seed=0
    )
