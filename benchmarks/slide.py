"""Whole-slide inference: throughput and peak memory of :func:`pixelcam.slide.predict_slide`.

Usage::

    .venv/bin/python benchmarks/slide.py --quick          # 4k and 8k slides
    .venv/bin/python benchmarks/slide.py                  # 8k and 16k slides
    .venv/bin/python benchmarks/slide.py --sizes 8192 16384 --json runs/slide.json
    .venv/bin/python benchmarks/slide.py --sizes 8192 --scheduler threads local:2

For each size it writes (once; kept in ``--work``) a pyramidal RGB TIFF slide: near-white
glass with elliptic tissue regions (the same layout, scaled, at every size) filled with
:func:`pixelcam.data.synthetic.generate_tile` tissue, generated and written strip by strip
(:class:`pixelcam.slide.PyramidWriter`), never whole in memory. Then, in a fresh
subprocess per size (so that each peak RSS is clean), it

1. builds ``build_model("test_resnet", pixel_head="linear")`` (``--backbone``) and warms
   it up;
2. times a plain batched forward (:func:`pixelcam.cams.compute_maps` of ready-made,
   normalised ``model_input`` tensors, maps resized to the tile size and copied to numpy)
   over as many tiles as the slide has tissue tiles, before and after step 3 (the mean of
   the two throughputs is the reference, so drifting machine load hits both sides alike);
3. runs ``predict_slide`` on the slide (reading, tissue detection, resizing, blending,
   pyramidal TIFF writing included) and reads the peak RSS (``ru_maxrss``).

Reported: tiles/s of both, their ratio (aim >= 0.9), peak RSS and its growth over the RSS
after the warm-up, and the ratio of the peak RSS of the largest slide to the smallest
(aim: near 1, memory must not grow with the slide).

``--scheduler`` (several values: one measurement each, in the order given, same slide)
picks where the model runs: ``threads`` (default) or ``sync`` in the measuring process, or
a ``dask.distributed`` cluster: ``local:N`` starts a ``LocalCluster`` of N single-thread
worker processes in the measuring process (warmed up with a small prediction before the
clock starts), anything else is a scheduler address (``tcp://host:8786``). With a cluster
the peak RSS is the client's (the workers are other processes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Tissue regions as (centre y, centre x, radius y, radius x) in fractions of the side.
BLOBS = [
    (0.28, 0.30, 0.20, 0.16),
    (0.62, 0.58, 0.24, 0.20),
    (0.25, 0.78, 0.12, 0.14),
    (0.82, 0.20, 0.10, 0.12),
]
BLOCK = 512


def _tissue(y0: int, y1: int, x0: int, x1: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) / size
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for cy, cx, ry, rx in BLOBS:
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
    return mask


def make_slide(path: Path, size: int) -> dict:
    """Write the synthetic ``size`` x ``size`` slide strip by strip."""
    from pixelcam.data.synthetic import generate_tile
    from pixelcam.slide import PyramidWriter

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    tiles = 0
    with PyramidWriter(path, (size, size, 3), np.uint8, compression_level=1) as writer:
        for by, y0 in enumerate(range(0, size, BLOCK)):
            y1 = min(y0 + BLOCK, size)
            strip = rng.integers(236, 250, (y1 - y0, size, 3), dtype=np.uint8)
            for bx, x0 in enumerate(range(0, size, BLOCK)):
                x1 = min(x0 + BLOCK, size)
                mask = _tissue(y0, y1, x0, x1, size)
                if mask.any():
                    image, _ = generate_tile((by + bx) % 2, (y1 - y0, x1 - x0), seed=by * 997 + bx)
                    strip[:, x0:x1][mask] = image[mask]
                    tiles += 1
            writer.write_rows(strip)
    return {"seconds": time.perf_counter() - start, "tissue_blocks": tiles}


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")


def _cluster(scheduler: str):
    """``(scheduler for predict_slide, things to close)`` for ``--scheduler``."""
    if scheduler in ("threads", "sync"):
        return scheduler, []
    import distributed

    if scheduler.startswith("local:"):
        cluster = distributed.LocalCluster(
            n_workers=int(scheduler[6:]), threads_per_worker=1, processes=True,
            dashboard_address=":0",
        )  # fmt: skip
        client = distributed.Client(cluster, set_as_default=False)
        return client, [client, cluster]
    from pixelcam.slide.cluster import connect_scheduler

    client = connect_scheduler(scheduler)
    return client, [client]


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    from pixelcam.cams import compute_maps
    from pixelcam.models import build_model
    from pixelcam.slide import predict_slide

    torch.manual_seed(0)
    model = build_model(args.backbone, pixel_head="linear").eval()
    b, mi, tile = args.batch_size, args.model_input, args.tile
    x = torch.randn(b, 3, mi, mi)
    for _ in range(2):
        compute_maps(model, x, ["pixelcam"], size=(tile, tile))
    base_rss = _current_rss_mb()

    def plain(n_tiles: int) -> float:
        batches = max(1, math.ceil(n_tiles / b))
        start = time.perf_counter()
        for _ in range(batches):
            res = compute_maps(model, x, ["pixelcam"], size=(tile, tile))
            res.maps["pixelcam"].clamp(0, 1).cpu().numpy()
        return batches * b / (time.perf_counter() - start)

    out = Path(args.work) / f"map_{args.size}.tif"
    # The reference needs the tissue tile count: a dry count from the same rule.
    from pixelcam.slide import TileGrid, open_pyramid, read_thumbnail, tile_tissue_fractions
    from pixelcam.slide import tissue_mask as _mask

    levels = open_pyramid(args.slide)
    grid = TileGrid.from_shape(levels[0].shape, tile, args.overlap)
    thumb, scale = read_thumbnail(levels, 0, max(1.0, tile / 32))
    n_tiles = int((tile_tissue_fractions(_mask(thumb), grid, scale) >= args.min_tissue).sum())
    del thumb
    scheduler, opened = _cluster(args.scheduler)
    if opened:  # workers import torch and build the model: not part of the measurement
        warm = np.random.default_rng(0).integers(0, 255, (2 * tile, 2 * tile, 3), np.uint8)
        predict_slide(
            model, warm, Path(args.work) / "warm.tif", ("pixelcam",), tile=tile,
            model_input=mi, batch_size=b, min_tissue=0.0, scheduler=scheduler,
        )  # fmt: skip
        Path(args.work, "warm_pixelcam.tif").unlink()
    before = plain(n_tiles)
    summary = predict_slide(
        model, args.slide, out, ("pixelcam",), tile=tile, overlap=args.overlap,
        model_input=mi, batch_size=b, min_tissue=args.min_tissue, scheduler=scheduler,
    )  # fmt: skip
    peak = _peak_rss_mb()
    for thing in opened:
        thing.close()
    after = plain(n_tiles)
    reference = 0.5 * (before + after)
    summary.update(
        size=args.size,
        peak_rss_mb=peak,
        base_rss_mb=base_rss,
        plain_tiles_per_s=reference,
        plain_before=before,
        plain_after=after,
        throughput_ratio=summary["tiles_per_s"] / reference,
        output_mb=out.with_name(out.stem + "_pixelcam.tif").stat().st_size / 2**20,
    )
    if not args.keep:
        Path(summary["outputs"]["pixelcam"]).unlink()
    print("RESULT " + json.dumps(summary))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4k and 8k slides instead of 8k, 16k")
    p.add_argument("--sizes", type=int, nargs="+", default=None)
    p.add_argument("--work", default="/tmp/pixelcam-slide-bench", help="slides and maps")
    p.add_argument("--backbone", default="test_resnet", help="timm backbone (random init)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--model-input", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--min-tissue", type=float, default=0.05)
    p.add_argument(
        "--scheduler",
        nargs="+",
        default=["threads"],
        help="threads, sync, local:N (a LocalCluster of N worker processes) or a "
        "dask.distributed address; several: one measurement each (default: threads)",
    )
    p.add_argument("--keep", action="store_true", help="keep the maps written")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--slide", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.scheduler = args.scheduler[0]
        worker(args)
        return
    sizes = args.sizes or ([4096, 8192] if args.quick else [8192, 16384])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for size, scheduler in [(size, sch) for size in sizes for sch in args.scheduler]:
        slide = work / f"slide_{size}.tif"
        if not slide.is_file():
            made = make_slide(slide, size)
            print(f"wrote {slide} ({slide.stat().st_size / 2**20:.0f} MiB) in "
                  f"{made['seconds']:.1f} s", flush=True)  # fmt: skip
        cmd = [sys.executable, __file__, "--worker", "--slide", str(slide), "--size", str(size)]
        names = ("work", "backbone", "tile", "overlap", "model_input", "batch_size", "min_tissue")
        for name in names:
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        cmd += ["--scheduler", scheduler]
        if args.keep:
            cmd.append("--keep")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"worker failed for {size} ({scheduler}):\n{proc.stdout}\n{proc.stderr}")
        res = json.loads(lines[-1][7:])
        res["scheduler_arg"] = scheduler
        results.append(res)
        print(
            f"{size:>6} px, {scheduler}: {res['tiles_processed']}/{res['tiles_total']} tiles in "
            f"{res['seconds']:.1f} s = {res['tiles_per_s']:.1f} tiles/s (plain forward "
            f"{res['plain_tiles_per_s']:.1f}/s, ratio {res['throughput_ratio']:.2f}); model "
            f"{res['model_seconds']:.1f} s, waiting for tiles {res['read_wait_seconds']:.1f} s; "
            f"peak RSS {res['peak_rss_mb']:.0f} MiB (+{res['peak_rss_mb'] - res['base_rss_mb']:.0f}"
            f" over the warm model); map {res['output_mb']:.0f} MiB",
            flush=True,
        )
    report = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "backbone": args.backbone,
        "results": results,
    }
    if len(sizes) > 1:  # of the first --scheduler
        first = [r for r in results if r["scheduler_arg"] == args.scheduler[0]]
        report["peak_rss_ratio"] = first[-1]["peak_rss_mb"] / first[0]["peak_rss_mb"]
        print(f"peak RSS {sizes[-1]} / {sizes[0]}: {report['peak_rss_ratio']:.2f} (aim: near 1)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
