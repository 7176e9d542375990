"""Shared fixtures of the whole suite."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import settings as _hypothesis_settings

# Property tests explore a fixed sequence of examples (derandomized): the suite gives the
# same verdict on every run and machine; run with --hypothesis-profile=explore to search.
_hypothesis_settings.register_profile("repeatable", derandomize=True, deadline=None)
_hypothesis_settings.register_profile("explore", deadline=None)
_hypothesis_settings.load_profile("repeatable")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def load_benchmark() -> Iterator[Callable[[str], ModuleType]]:
    """Import a script of ``benchmarks/`` (not a package) by file name, e.g. ``"speed"``;
    the module is dropped from ``sys.modules`` after the test module."""
    names: list[str] = []

    def load(stem: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"{stem}_script", BENCHMARKS / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        names.append(spec.name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in names:
        sys.modules.pop(name, None)


CamelyonRows = dict[str, list[tuple[str, int, str]]]


def _write_camelyon_folds(root: Path, splits: CamelyonRows, fold: int = 0) -> Path:
    """The fold files of a CAMELYON16 patch tree in the Rony et al. layout:
    ``folds/encoding.yaml`` and ``folds/fold-K/<split>/{image_ids,class_labels,
    localization}.txt`` from ``(patch path, label, mask path or "")`` rows per split."""
    folds = root / "folds"
    folds.mkdir(parents=True, exist_ok=True)
    (folds / "encoding.yaml").write_text("{normal: 0, metastatic: 1}\n")
    for split, rows in splits.items():
        d = folds / f"fold-{fold}" / split
        d.mkdir(parents=True)
        (d / "image_ids.txt").write_text("".join(f"{p}\n" for p, _, _ in rows))
        (d / "class_labels.txt").write_text("".join(f"{p},{y}\n" for p, y, _ in rows))
        (d / "localization.txt").write_text("".join(f"{p},{m},\n" for p, _, m in rows))
    return root


@pytest.fixture
def write_camelyon_folds() -> Callable[..., Path]:
    """:func:`_write_camelyon_folds`, for the tests that build CAMELYON16 trees."""
    return _write_camelyon_folds


def _write_aperio_svs(path: Path, image: np.ndarray, mpp: float = 0.25, tile: int = 256) -> list:
    """A generated SVS as Aperio scanners write it (what OpenSlide's Aperio reader and
    tifffile both recognise): tiled level 0 with the ``Aperio Image Library`` description
    (``MPP``, ``AppMag``), a thumbnail, then two tiled levels each halving the last.
    Returns the three levels written."""
    import tifffile

    h, w = image.shape[:2]
    description = (f"Aperio Image Library v12.0.15\r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) "
                   f"RAW|AppMag = 40|MPP = {mpp}|Filename = fake")  # fmt: skip
    levels = [np.ascontiguousarray(image[:: 2**k, :: 2**k]) for k in range(3)]
    options = {"compression": "zlib", "photometric": "rgb", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels[0], tile=(tile, tile), description=description, **options)
        tif.write(levels[0][::16, ::16], description="Aperio thumbnail", **options)
        for level in levels[1:]:
            tif.write(level, tile=(tile, tile), description="Aperio level", **options)
    return levels


@pytest.fixture(scope="session")
def write_aperio_svs() -> Callable[..., list]:
    """:func:`_write_aperio_svs`, for the slide and microns tests."""
    return _write_aperio_svs
