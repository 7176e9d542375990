"""Regions of whole-slide maps: ``pixelcam predict --regions geojson`` on generated slides.

Usage::

    .venv/bin/python benchmarks/regions.py                      # 8k and 16k slides
    .venv/bin/python benchmarks/regions.py --sizes 4096 8192 --json runs/regions.json

For each size it writes (once; kept in ``--work``) the synthetic pyramidal slide of
``benchmarks/slide.py`` (elliptic H&E tissue on glass, written strip by strip), then runs,
in a fresh subprocess per size (a clean peak RSS), ``pixelcam predict`` with the bundled
demo PixelCAM model (``test_resnet``, small and fast on a CPU) and ``--regions geojson``:
tiles, blending, the pyramidal map and the band-by-band tracing of the written map.

Reported per size: seconds (predict + regions, and the tracing alone, timed by re-tracing
the written map in bands), the number of regions, the total region area against the
thresholded pixel count of the map (aim: within 1 %), and the peak RSS; then the ratio of
the peak RSS of the largest slide to the smallest (aim: <= 1.2, memory flat with size).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "napari_pixelcam" / "models" / "sample_pixelcam.json"


def _slide_module():
    spec = importlib.util.spec_from_file_location(
        "slide_bench", Path(__file__).with_name("slide.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pixel_count(path: Path, threshold: float, rows: int = 1024) -> int:
    from pixelcam.slide import open_pyramid

    level = open_pyramid(path)[0]
    return sum(
        int((np.asarray(level[y : y + rows]) >= threshold).sum())
        for y in range(0, level.shape[0], rows)
    )


def worker(args: argparse.Namespace) -> None:
    """One size, in its own process: predict with regions, then check and time them."""
    from pixelcam.cli import main
    from pixelcam.geojson import read_geojson
    from pixelcam.regions import trace_bands
    from pixelcam.slide import open_pyramid

    slide, out = Path(args.slide), Path(args.work) / f"maps-{args.size}"
    start = time.perf_counter()
    code = main(["predict", str(MODEL), str(slide), "--out", str(out), "--device", "cpu",
                 "--size", str(args.model_input), "--regions", "geojson",
                 "--regions-threshold", str(args.threshold)])  # fmt: skip
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tif = out / f"{slide.stem}_pixelcam.tif"
    t0 = time.perf_counter()
    n = sum(1 for _ in trace_bands(open_pyramid(tif)[0], args.threshold))
    trace_seconds = time.perf_counter() - t0
    regions = read_geojson(out / f"{slide.stem}_pixelcam.geojson")
    count = _pixel_count(tif, args.threshold)
    area = float(sum(r.geometry.area for r in regions))
    print(json.dumps({
        "size": args.size, "exit_code": code, "seconds": round(seconds, 1),
        "trace_seconds": round(trace_seconds, 1), "regions": len(regions), "retraced": n,
        "pixel_count": count, "polygon_area": area,
        "area_error_pct": round(100 * (area - count) / max(count, 1), 4),
        "area_px_sum": float(sum(r.area_px for r in regions)),
        "geojson_mb": round((out / f"{slide.stem}_pixelcam.geojson").stat().st_size / 1e6, 2),
        "peak_rss_mb": round(peak_mb, 1),
    }))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    p.add_argument("--work", default="/tmp/pixelcam-regions-bench")
    p.add_argument("--model-input", type=int, default=64, help="--size of predict (default 64)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--slide", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes:
        slide = work / f"slide-{size}.tif"
        if not slide.exists():
            _slide_module().make_slide(slide, size)
        cmd = [sys.executable, __file__, "--worker", "--slide", str(slide), "--size", str(size),
               "--work", str(work), "--model-input", str(args.model_input),
               "--threshold", str(args.threshold)]  # fmt: skip
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(line.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if len(results) > 1:
        ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
        print(f"peak RSS {results[-1]['size']} / {results[0]['size']}: {ratio:.2f} (aim <= 1.2)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
