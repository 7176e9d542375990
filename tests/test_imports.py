"""The library must stay free of Qt and napari: it runs on headless training servers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "pixelcam"
GUI_PREFIXES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")


def _library_modules() -> list[str]:
    mods = []
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__":
            continue
        mods.append(".".join(parts))
    return mods


def test_importing_every_library_module_loads_no_gui_module():
    code = (
        "import importlib, sys\n"
        f"for m in {_library_modules()!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_PREFIXES!r})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", sorted(LIB.rglob("*.py")), ids=lambda p: p.name)
def test_library_source_has_no_gui_import(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in GUI_PREFIXES, f"{path}: imports {name}"


def test_public_api_is_lazy_and_complete():
    code = (
        "import sys, pixelcam\n"
        "assert 'torch' not in sys.modules, 'import pixelcam must not import torch'\n"
        "missing = [n for n in pixelcam.__all__ if not callable(getattr(pixelcam, n))]\n"
        "assert not missing, missing\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
