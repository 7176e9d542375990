"""GUI-thread stalls of the napari plugin, step by step, in the real window.

    .venv/bin/python benchmarks/ui_stalls.py [--out runs/ui-stalls.json] [--passes 2]

Drives napari (Qt, under Xvfb at 1600x1000 when there is no display: the command re-runs
itself through ``xvfb-run``) through a review session: dock the three PixelCAM docks, open
an H&E tile (a PNG through the plugin's reader), compute maps, show the compare grid, the
difference, sample FG/BG points, compute the t-SNE, start a training run and wait for its
first curve, then compute the maps of a 6000 px image. A ``QTimer`` beats every 10 ms on
the GUI thread; the longest gap between two beats during a step (from the action until the
step's result is on screen, plus a 300 ms settle) is the longest time the event loop was
blocked: what a user feels as a freeze. Pass 1 runs in a fresh process (cold: nothing
imported yet, every first draw); pass 2 repeats every step in the same process (warm).
Prints a Markdown table (and writes JSON with ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-pixelcam"
_UNDER_XVFB = "PIXELCAM_UNDER_XVFB"
SETTLE_S = 0.3
TINY_TRAINING = {
    "dataset": "synthetic", "backbone": "test_resnet", "synthetic_n_per_class": 6,
    "synthetic_size": 64, "resize": 64, "crop": 56, "eval_size": 64, "batch_size": 4,
    "device": "cpu", "epochs": 2,
}  # fmt: skip


MAKE_DATA = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from pixelcam.data.synthetic import generate_tile
out = Path(sys.argv[1])
for i, seed in enumerate((12, 21)):
    image, mask = generate_tile(1, size=512, seed=seed)
    Image.fromarray(image).save(out / f"tile{i}.png")
    Image.fromarray((mask * 255).astype("uint8")).save(out / f"tile{i}_mask.png")
side = int(sys.argv[2])
np.save(out / "big.npy", generate_tile(1, size=(side, side), seed=5)[0])
"""


class Heartbeat:
    """A 10 ms QTimer on the GUI thread; :meth:`max_gap_ms` is the longest interval between
    two beats since :meth:`reset` (the longest event-loop block).

    With ``blame``, :meth:`_profile` times the Python entry points of the GUI thread
    (slower: for finding what blocks, not for the table)."""

    def __init__(self, blame: bool = False) -> None:

        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._beat)
        self.last = time.perf_counter()
        self.gap = 0.0
        self.samples: dict[str, int] = {}
        self.entered: list[tuple[Any, float]] = []
        self.timer.start()
        self.blame = blame

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        """``sys.setprofile`` hook on the GUI thread: times every Python call made by Qt's
        event loop (a slot, a timer, a paint, an event handler: a frame called from C or
        from this script's event pumps) and keeps the slowest of each over 50 ms."""
        if event == "call":
            caller = frame.f_back
            if caller is None or caller.f_code in DRIVERS:
                self.entered.append((frame, time.perf_counter()))
        elif event == "return" and self.entered and self.entered[-1][0] is frame:
            _, t0 = self.entered.pop()
            took = int(1000 * (time.perf_counter() - t0))
            if took > 50:
                code = frame.f_code
                where = f"{Path(code.co_filename).parent.name}/{Path(code.co_filename).name}"
                key = f"{where}:{code.co_firstlineno} {code.co_qualname}"
                self.samples[key] = max(self.samples.get(key, 0), took)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gap = max(self.gap, now - self.last)
        self.last = now

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.gap = 0.0
        self.samples = {}

    def max_gap_ms(self) -> float:
        self._beat()  # a block still running at the end counts too
        return 1000.0 * self.gap


def pump(seconds: float) -> None:
    """Run the event loop for ``seconds`` (short sleeps between event batches)."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)


def call(action: Callable[[], Any]) -> Any:
    """Run a step's action (a driver frame, for ``--blame``)."""
    return action()


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        QApplication.processEvents()
        time.sleep(0.002)


class Bench:
    def __init__(
        self, workdir: Path, blame: bool = False, viewer: Any = None, big_side: int = 6000
    ) -> None:
        import napari
        import numpy as np

        self.workdir = workdir
        # the data is made in a child process: this one must import nothing of the library
        # before the first (cold) pass
        subprocess.run([sys.executable, "-c", MAKE_DATA, str(workdir), str(big_side)], check=True)
        self.images = [workdir / f"tile{i}.png" for i in range(2)]
        self.big = np.load(workdir / "big.npy")
        self.big_side = big_side
        self.viewer = viewer if viewer is not None else napari.Viewer(title="ui stalls")
        self.viewer.window.resize(1600, 1000)
        pump(1.0)
        self.beat = Heartbeat(blame)
        self.panel = self.sep = self.trainer = None
        self.rows: list[dict[str, Any]] = []
        self.plain_names: list[str] = []

    def step(self, name: str, pass_no: int, action: Callable[[], Any],
             done: Callable[[], bool] | None = None, timeout: float = 300.0) -> None:  # fmt: skip
        pump(0.3)
        self.beat.reset()
        if self.beat.blame:
            sys.setprofile(self.beat._profile)
        t0 = time.perf_counter()
        call(action)
        if done is not None:
            wait_until(done, timeout, name)
        wall = time.perf_counter() - t0
        pump(SETTLE_S)
        gap = self.beat.max_gap_ms()
        sys.setprofile(None)
        self.rows.append({"step": name, "pass": pass_no, "max_block_ms": round(gap, 1),
                          "wall_s": round(wall, 2)})  # fmt: skip
        print(f"pass {pass_no} {name:<22} longest block {gap:7.1f} ms  ({wall:.2f} s)",
              flush=True)  # fmt: skip
        for key, ms in sorted(self.beat.samples.items(), key=lambda kv: -kv[1])[:6]:
            print(f"      {ms:5d} ms  {key}")

    # ------------------------------------------------------------------ actions
    def dock(self, attr: str, name: str) -> None:
        _, widget = self.viewer.window.add_plugin_dock_widget(PLUGIN, name)
        setattr(self, attr, widget)

    def close_layers(self) -> None:
        self.viewer.layers.clear()

    def open_image(self, i: int) -> None:
        # as File > Open: the preferred reader (the plugin's, set when a dock opened)
        self.viewer.open(str(self.images[i]), plugin=None)

    def maps_done(self) -> bool:
        return not self.panel.busy

    def compute(self) -> None:
        self.panel.device.value = "cpu"
        self.panel.methods.value = ["cam", "gradcampp", "layercam", "pixelcam", "negev", "unet"]
        self.panel.run_button.native.click()

    def grid(self, on: bool) -> None:
        self.panel.grid.value = on

    def open_big(self) -> None:
        self.viewer.add_image(self.big, name="big", rgb=True)

    def big_maps(self) -> None:
        self.panel.image_combo.value = self.viewer.layers["big"]
        self.panel.live.checkbox.value = False  # the whole-image compute, not live mode
        self.panel.methods.value = ["layercam", "pixelcam"]
        self.panel.run_button.native.click()

    def pan(self) -> None:
        """A reference: one redraw of the canvas, nothing of the plugin involved."""
        camera = self.viewer.camera
        camera.center = (camera.center[0] + 10.0, camera.center[1] + 10.0)

    def add_layer(self) -> None:
        """A reference: napari adds one 512-px map-like layer, no plugin code involved
        (the floor of any step that adds a layer)."""
        import numpy as np

        data = np.random.default_rng(0).random((512, 512), dtype=np.float32)
        self.viewer.add_image(data, name="reference", colormap="magma", blending="additive")

    @contextlib.contextmanager
    def napari_alone(self) -> Iterator[None]:
        """A reference step: napari without the plugin's hold on the paint of layer changes
        (the panel paints every layer change in a turn of its own)."""
        from napari_pixelcam import _common

        events = self.viewer.layers.events
        events.inserted.disconnect(_common._hold_paint)
        events.removed.disconnect(_common._hold_paint)
        try:
            yield
        finally:
            _common.paint_layer_changes_apart(self.viewer.layers)

    def open_plain(self, i: int) -> None:
        """A reference: File > Open of the tile and its mask with napari's own reader (two
        layers, as the plugin's reader gives: the floor of "open image")."""
        image = self.images[i]
        mask = image.with_name(f"{image.stem}_mask.png")
        layers = self.viewer.open([str(image), str(mask)], plugin="napari", stack=False)
        self.plain_names = [layer.name for layer in layers]

    def add_big_layer(self) -> None:
        """A reference: napari adds a 2048 px map-like layer over the big image (the floor
        of its maps: they are computed on a copy of at most 2048 px)."""
        import numpy as np

        data = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
        self.viewer.add_image(data, name="reference", colormap="magma", blending="additive",
                              scale=(self.big_side / 2048,) * 2)  # fmt: skip

    def remove(self, names: list[str]) -> None:
        for name in names:  # one per turn
            self.viewer.layers.remove(name)
            pump(0.1)

    def tsne(self) -> None:
        self.sep._refresh()
        combo = self.sep.label_combo
        combo.setCurrentIndex(next(i for i in range(combo.count()) if "mask" in combo.itemText(i)))
        self.sep.compute_button.click()

    def train(self, pass_no: int) -> None:
        out = self.workdir / f"run{pass_no}"
        shutil.rmtree(out, ignore_errors=True)
        self.trainer.set_settings(out=str(out), **TINY_TRAINING)
        self.trainer.start_button.click()

    def trained(self) -> bool:
        return bool(self.trainer.history) and self.trainer.canvas is not None

    def run_pass(self, p: int) -> None:
        for attr, name in (("panel", "PixelCAM"), ("trainer", "PixelCAM trainer"),
                           ("sep", "PixelCAM separability")):  # fmt: skip
            self.step(f"dock {name}", p, lambda a=attr, n=name: self.dock(a, n))
        ready = lambda: self.panel.session.ready and self.panel.session.is_warm()  # noqa: E731
        self.step("(the libraries load in workers)", p, lambda: None, ready, 300)
        self.step("close all layers", p, self.close_layers)
        self.step("open image", p, lambda: self.open_image(p - 1))
        self.step("compute 6 maps", p, self.compute, self.maps_done)
        self.step("grid on", p, lambda: self.grid(True), self.maps_done)
        self.step("grid off", p, lambda: self.grid(False), self.maps_done)
        self.step("difference", p, lambda: self.panel.diff_button.native.click(), self.maps_done)
        self.step("sample points", p, lambda: self.panel.sample_button.native.click(),
                  self.maps_done)  # fmt: skip
        self.step("t-SNE", p, self.tsne, lambda: not self.sep.busy)
        self.step("training start", p, lambda: self.train(p), self.trained, 600)
        with self.napari_alone():
            self.step("pan the view (napari alone)", p, self.pan)
        with self.napari_alone():
            self.step("add a 512 px layer (napari alone)", p, self.add_layer)
        self.viewer.layers.remove("reference")
        with self.napari_alone():
            name = "open the tile and its mask (napari's reader)"
            self.step(name, p, lambda: self.open_plain(p - 1))
        self.remove(self.plain_names)
        self.trainer.wait(300)
        with self.napari_alone():
            self.step(f"open a {self.big_side} px image", p, self.open_big)
        with self.napari_alone():
            self.step("add a 2048 px layer over it (napari alone)", p, self.add_big_layer)
        self.remove(["reference"])
        self.step(f"{self.big_side} px image maps", p, self.big_maps, self.maps_done)
        self.viewer.layers.remove("big")


#: the script's own event pumps: a frame they call is an event-loop entry point
DRIVERS = {pump.__code__, wait_until.__code__, call.__code__}


def table(rows: list[dict[str, Any]]) -> str:
    steps = list(dict.fromkeys(r["step"] for r in rows))
    by = {(r["step"], r["pass"]): r for r in rows}
    lines = ["| step | cold: longest block (ms) | warm: longest block (ms) |", "|---|---|---|"]
    for s in steps:
        cells = []
        for p in (1, 2):
            r = by.get((s, p))
            cells.append("-" if r is None else f"{r['max_block_ms']:.0f}")
        lines.append(f"| {s} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write the measurements as JSON here")
    p.add_argument("--passes", type=int, default=2, help="1 = cold only")
    p.add_argument(
        "--blame", action="store_true", help="sample the GUI thread's stack during blocks"
    )
    args = p.parse_args(argv)
    if not (os.environ.get("DISPLAY") or os.environ.get(_UNDER_XVFB)):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("error: no display and no xvfb-run", file=sys.stderr)
            return 1
        env = dict(os.environ, **{_UNDER_XVFB: "1"})
        cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, __file__]
        return subprocess.call(cmd + list(sys.argv[1:] if argv is None else argv), env=env)
    os.environ.setdefault("QT_API", "pyqt6")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the training child, on a shared machine
    with tempfile.TemporaryDirectory(prefix="ui-stalls-") as tmp:
        bench = Bench(Path(tmp), args.blame)
        for pass_no in range(1, args.passes + 1):
            bench.run_pass(pass_no)
        bench.viewer.close()
    print()
    print(table(bench.rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(bench.rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
