"""What one canvas frame costs in napari alone, by number of layers, pane layout and size.

    .venv/bin/python benchmarks/frame_cost.py [--out runs/frame-cost.json]

Re-runs itself under ``xvfb-run`` at 1600x1000 when there is no display. For each case a
napari window (1600x1000) shows N RGB image layers (random pixels: nothing to compress),
stacked or in napari's grid, and the canvas is drawn 10 times (``SceneCanvas.on_draw`` +
``glFinish``: the frame's Python work and the renderer's); the median is reported. Nothing
of the plugin is loaded: this is the floor under every step of ``ui_stalls.py`` that adds,
shows or hides layers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

CASES = [  # (layers, grid, image side, kind)
    (1, False, 512, "rgb"), (6, False, 512, "rgb"), (6, False, 256, "rgb"),
    (6, False, 2048, "rgb"), (6, True, 512, "rgb"), (18, True, 512, "rgb"),
    (3, False, 512, "review"), (18, True, 512, "review"),
]  # fmt: skip
#: "review": per pane the tissue (RGB), a float map (inferno, translucent, as the panel
#: shows maps) and a mask outline (Labels contour), as the compare grid shows them


def add_layers(viewer, n: int, side: int, kind: str) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    rgb = (rng.random((side, side, 3)) * 255).astype("uint8")
    for i in range(n if kind == "rgb" else n // 3):
        viewer.add_image(rgb, name=f"tissue {i}")
        if kind == "review":
            viewer.add_image(rng.random((side, side)).astype("float32"), name=f"map {i}",
                             colormap="inferno", blending="translucent", opacity=0.6)  # fmt: skip
            outline = viewer.add_labels((rng.random((side, side)) > 0.5).astype("uint8"))
            outline.contour = 1


def measure(viewer, app, n: int, grid: bool, side: int, kind: str) -> float:
    import numpy as np
    from vispy.gloo import gl

    viewer.layers.clear()
    add_layers(viewer, n, side, kind)
    viewer.grid.enabled = grid
    viewer.grid.stride = 3 if kind == "review" else 1
    viewer.reset_view()
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    times = []
    for _ in range(10):
        t = time.perf_counter()
        canvas.on_draw(None)
        gl.glFinish()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
        return subprocess.call(cmd)
    import warnings

    import napari
    from qtpy.QtWidgets import QApplication

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # viewer.grid in 0.9

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    app = QApplication.instance()
    rows = []
    print("| layers | kind | grid | image side | frame (ms, median of 10) |")
    print("|---|---|---|---|---|")
    for n, grid, side, kind in CASES:
        ms = measure(viewer, app, n, grid, side, kind)
        rows.append({"layers": n, "kind": kind, "grid": grid, "side": side, "frame_ms": ms})
        print(f"| {n} | {kind} | {'yes' if grid else 'no'} | {side} | {ms:.0f} |", flush=True)
    viewer.close()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
