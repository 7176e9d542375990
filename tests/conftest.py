"""Shared fixtures of the whole suite."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

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
