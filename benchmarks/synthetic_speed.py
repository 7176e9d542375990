"""Milliseconds per synthetic tile (``pixelcam.data.synthetic.generate_tile``).

Usage: ``python benchmarks/synthetic_speed.py [--size 512] [--n 20] [--stain he]``.
Prints the median and the best time per tile for each class (single thread, numpy/scipy).
"""

from __future__ import annotations

import argparse
import statistics
import time

from pixelcam.data.synthetic import generate_tile


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n", type=int, default=20, help="tiles per class")
    parser.add_argument("--stain", default="he")
    args = parser.parse_args(argv)
    generate_tile(0, args.size, 0, args.stain)  # warm-up (imports, caches)
    for label, name in enumerate(("benign", "malignant")):
        times = []
        for seed in range(args.n):
            t0 = time.perf_counter()
            generate_tile(label, args.size, seed, args.stain)
            times.append((time.perf_counter() - t0) * 1000.0)
        print(
            f"{name:9s} {args.size}x{args.size}: median {statistics.median(times):6.1f} ms, "
            f"best {min(times):6.1f} ms per tile (n={args.n})"
        )


if __name__ == "__main__":
    main()
