"""Open napari with the PixelCAM panel docked on a sample tile (README command 1).

``python -m napari_pixelcam [--sample malignant] [--image PATH] [--screenshot out.png]``

With ``--screenshot``, or when there is no display, the window is rendered on a virtual
display (Xvfb, through ``xvfb-run``) and written as a PNG instead of failing or hanging.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN = "napari-pixelcam"
_UNDER_XVFB = "PIXELCAM_UNDER_XVFB"
DEFAULT_SCREENSHOT = "pixelcam-screenshot.png"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m napari_pixelcam",
        description="Open napari with the PixelCAM panel docked on a histology image.",
    )
    p.add_argument(
        "--sample",
        default="malignant",
        choices=["malignant", "benign", "ihc"],
        help="sample image to open when no --image is given (default: malignant)",
    )
    p.add_argument("--image", type=Path, help="an image file to open instead of a sample")
    p.add_argument(
        "--screenshot",
        type=Path,
        help="render the window to this PNG and exit (uses Xvfb when there is no display)",
    )
    p.add_argument(
        "--grid", action="store_true", help="show the maps side by side, each over the image"
    )
    p.add_argument(
        "--methods",
        help="comma-separated maps to compute, e.g. layercam,pixelcam,negev,unet "
        "(default: the panel's selection, layercam and pixelcam)",
    )
    p.add_argument(
        "--no-run", action="store_true", help="do not compute maps on start (just dock the panel)"
    )
    p.add_argument("--difference", action="store_true", help="show PixelCAM minus the baseline map")
    p.add_argument("--show", metavar="MAP", help="the map drawn over the image (default: PixelCAM)")
    p.add_argument(
        "--threshold", type=float, help="draw the map's outline at this value (default 0.5)"
    )
    p.add_argument(
        "--docks", action="store_true", help="also dock the trainer and the separability docks"
    )
    p.add_argument(
        "--regions",
        action="store_true",
        help="turn the shown map at the outline threshold into editable shapes (QuPath regions)",
    )
    p.add_argument("--pixelcam", type=Path, help="PixelCAM checkpoint (default: the demo one)")
    p.add_argument("--baseline", type=Path, help="baseline checkpoint (default: the demo one)")
    p.add_argument(
        "--window", default="1600x1000", help="window size WxH for --screenshot (1600x1000)"
    )
    return p


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _reexec_under_xvfb(argv: list[str], screenshot: Path) -> int:
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        print(
            "error: no display, and xvfb-run is not installed. Install it (Debian/Ubuntu: "
            "apt-get install xvfb) or run on a machine with a screen.",
            file=sys.stderr,
        )
        return 1
    has_shot = any(a == "--screenshot" or a.startswith("--screenshot=") for a in argv)
    args = list(argv) if has_shot else [*argv, "--screenshot", str(screenshot)]
    env = dict(os.environ, **{_UNDER_XVFB: "1"})
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", "napari_pixelcam"]
    return subprocess.call(cmd + args, env=env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if not _has_display() and not os.environ.get(_UNDER_XVFB):
        shot = args.screenshot or Path(DEFAULT_SCREENSHOT)
        print(f"no display: rendering under Xvfb to {shot}", file=sys.stderr)
        return _reexec_under_xvfb(argv, shot)

    import napari

    viewer = napari.Viewer(title="napari-pixelcam")
    if args.image is not None:
        viewer.open(str(args.image), plugin=PLUGIN)
    else:
        viewer.open_sample(PLUGIN, args.sample)
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "PixelCAM")
    if args.docks:
        viewer.window.add_plugin_dock_widget(PLUGIN, "PixelCAM trainer")
        viewer.window.add_plugin_dock_widget(PLUGIN, "PixelCAM separability")
    code = _choose(panel, args)
    if code:
        viewer.close()
        return code
    if not args.no_run:
        _compute(panel, args)
    if args.screenshot is not None:
        return _screenshot(viewer, panel, args)
    napari.run()
    return 0


def _choose(panel, args) -> int:
    """Models and maps from the arguments; 2 on an unknown map."""
    session = panel.session
    if args.pixelcam is not None:
        session.pixelcam = args.pixelcam
    if args.baseline is not None:
        session.baseline = args.baseline
    if args.methods:
        maps = session.catalogue_now().maps  # the registered map methods
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in names if m not in maps]
        if unknown:
            print(
                f"error: unknown map(s) {unknown}; choose from {list(maps.names)}", file=sys.stderr
            )
            return 2
        session.maps = names
    return 0


def _compute(panel, args) -> None:
    panel.run_maps(wait=args.screenshot is not None or args.grid or args.difference)
    if args.threshold is not None:
        panel.threshold.value = args.threshold
    if args.difference:
        panel.difference_map()
    elif args.show:
        panel.view.show(args.show)
    if args.grid:
        panel.grid.value = True
    if args.regions:
        panel.map_regions(wait=True)
    if args.screenshot is not None:
        panel.wait()  # grid panes and the difference come in the next event-loop turns


def _screenshot(viewer, panel, args) -> int:
    import time

    from napari.qt.threading import WorkerBase
    from qtpy.QtWidgets import QApplication

    session, t0 = panel.session, time.monotonic()
    while not (session.ready and session.is_warm()) and time.monotonic() - t0 < 300:
        QApplication.processEvents()  # the docks start their workers once drawn
        time.sleep(0.02)
    WorkerBase.await_workers(300_000)  # e.g. the session's catalogue, read in a worker
    width, height = (int(v) for v in args.window.lower().split("x"))
    viewer.window.resize(width, height)
    for _ in range(20):
        QApplication.processEvents()
    if not viewer.grid.enabled:
        viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.screenshot), canvas_only=False)
    viewer.close()
    print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
