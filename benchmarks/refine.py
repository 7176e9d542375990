"""The simulated pathologist: live refinement of a PixelCAM (or baseline) checkpoint.

Usage::

    .venv/bin/python benchmarks/refine.py                     # generated tiles, bundled model
    .venv/bin/python benchmarks/refine.py --dataset glas --data-root ../shared/data/glas \\
        --folds-dir ../shared/data/glas-folds --checkpoint runs/glas-pix/best_loc.json \\
        --seed 0 1

Trains nothing. Opens the images of ``--splits`` (GlaS: fold-0 ``valcl`` + ``valpx``, the
24 images outside ``train``; generated data: a fresh generated set, ``--synthetic-n`` per
class, never seen by the bundled model), and for each ``--seed`` splits them at random into
``annotated`` and ``held out`` halves. Then, round after round, every annotated image gets
one more point where the CURRENT map is most wrong against its mask (alternating: odd
rounds a foreground point on the lowest-scoring foreground pixel, even rounds a background
point on the highest-scoring background pixel, both at least one feature cell inside their
region when possible; never within ``--spacing`` feature cells of an earlier point), and
the head is refitted (:class:`pixelcam.refine.Refiner`) after each round. At k = 0, 1, 2,
5, 10, 20 points per annotated image it records the PxAP of both sets
(:class:`pixelcam.metrics.PxAPAccumulator`: maps at the model's input size against the
masks resized as :class:`pixelcam.data.EvalTransform` does, min-max normalised, one PR
curve over every pixel of a set: exactly as :func:`pixelcam.evaluation.evaluate_model`)
and the refit time.

A timing section follows: refits on 20 images x 10 points, without and with 5 CAM seeds per
class and image (cold: the first after the images or settings change; warm: after a click),
and the map refresh of one image from cached features (medians of ``--repeats``).

Prints Markdown tables; ``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "napari_pixelcam" / "models" / "sample_pixelcam.json"
KS = (0, 1, 2, 5, 10, 20)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic", help="synthetic (default) or glas/...")
    p.add_argument("--data-root", default=None, help="dataset folder (synthetic: a temp one)")
    p.add_argument("--folds-dir", default=None)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--splits", default=None, help="comma-separated (GlaS: valcl,valpx)")
    p.add_argument(
        "--also", default=None, help="a split never annotated, reported too (GlaS: train)"
    )
    p.add_argument("--checkpoint", default=str(SAMPLE), help="PixelCAM or baseline checkpoint")
    p.add_argument("--teacher", default=None, help="baseline checkpoint giving the CAM seeds")
    p.add_argument("--seed", type=int, nargs="+", default=[0, 1], help="split seeds")
    p.add_argument("--ks", default=",".join(map(str, KS)), help="points per annotated image")
    p.add_argument("--annotated", type=float, default=0.5, help="fraction annotated")
    p.add_argument("--prior", type=float, default=None)
    p.add_argument("--bias-prior", type=float, default=None)
    p.add_argument("--point-weight", type=float, default=None)
    p.add_argument("--anchor", type=float, default=None, help="map anchor weight per image")
    p.add_argument("--anchor-cells", type=int, default=None)
    p.add_argument("--cam-seeds", type=int, default=None, help="CAM seeds per class and image")
    p.add_argument("--seed-weight", type=float, default=None)
    p.add_argument(
        "--pick",
        choices=["worst", "wrong"],
        default="worst",
        help="where a click goes: the most wrong pixel (default) or a random wrong one",
    )
    p.add_argument("--spacing", type=float, default=0.5, help="min point distance (cells)")
    p.add_argument("--synthetic-n", type=int, default=12, help="generated images per class")
    p.add_argument("--synthetic-size", type=int, default=160)
    p.add_argument("--synthetic-seed", type=int, default=123)
    p.add_argument("--timing-images", type=int, default=20)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Any:
    from pixelcam.refine import RefitSettings

    given = {
        "prior": args.prior, "bias_prior": args.bias_prior, "point_weight": args.point_weight,
        "seeds": args.cam_seeds, "seed_weight": args.seed_weight, "anchor": args.anchor,
        "anchor_cells": args.anchor_cells,
    }  # fmt: skip
    return RefitSettings(**{k: v for k, v in given.items() if v is not None}).validated()


def open_images(args: argparse.Namespace) -> tuple[Any, str]:
    """The evaluation dataset (images with masks) and a description of it."""
    from pixelcam.data import open_dataset, write_synthetic_dataset

    if args.dataset == "synthetic":
        root = Path(args.data_root or tempfile.mkdtemp(prefix="pixelcam-refine-"))
        write_synthetic_dataset(
            root, n_per_class=args.synthetic_n, size=args.synthetic_size,
            seed=args.synthetic_seed,
        )  # fmt: skip
        ds = open_dataset("folder", root)
        return (
            ds,
            f"generated ({len(ds)} tiles of {args.synthetic_size} px, seed {args.synthetic_seed})",
        )
    splits = (args.splits or "valcl,valpx").split(",")
    ds = _masked(args, splits)
    return ds, f"{args.dataset} fold {args.fold} {'+'.join(splits)} ({len(ds)} images)"


def _masked(args: argparse.Namespace, splits: list[str]) -> Any:
    """The images with a mask of ``splits`` (each once)."""
    from pixelcam.data import open_dataset
    from pixelcam.data.dataset import WSOLDataset

    kw: dict[str, Any] = {"folds_dir": args.folds_dir} if args.folds_dir else {}
    parts = [
        open_dataset(args.dataset, args.data_root, split=s, fold=args.fold, **kw) for s in splits
    ]
    records, seen = [], set()
    for part in parts:
        for rec in part.records:
            if rec.id not in seen and rec.mask_known:
                seen.add(rec.id)
                records.append(rec)
    return WSOLDataset(records, parts[0].class_names)


def load_all(ds: Any, size: int) -> dict[str, dict[str, Any]]:
    """Per image: the RGB, its label, the mask at full size and at the model input size."""
    from pixelcam.data import EvalTransform

    out = {}
    evalset = ds.with_transform(EvalTransform(size=size, normalize=False))
    for i in range(len(ds)):
        raw = ds[i]
        small = evalset[i]
        out[raw.id] = {
            "rgb": raw.image, "label": raw.label, "mask": raw.mask,
            "mask_eval": np.asarray(small.mask, dtype=np.uint8),
        }  # fmt: skip
    return out


def pxap(maps: dict[str, np.ndarray], data: dict[str, dict[str, Any]], ids: list[str]) -> float:
    from pixelcam.metrics import PxAPAccumulator

    acc = PxAPAccumulator()
    for i in ids:
        acc.update(maps[i][None], data[i]["mask_eval"][None])
    return float(acc.compute())


def next_point(
    current: np.ndarray, interior: list[list[np.ndarray]], mask: np.ndarray, label: int,
    taken: list[tuple[float, float]], radius: float, rng: np.random.Generator | None = None,
) -> tuple[int, int, int]:  # fmt: skip
    """The most wrong pixel ``(row, col, label)`` of the map at input size: among the
    pixels of class ``label`` at least one feature cell inside their region (a pathologist
    clicks inside a gland or the stroma, not on an edge the feature grid cannot resolve;
    then half a cell, then anywhere) and away from earlier points; the other class when
    this one has no pixel. With ``rng`` (``--pick wrong``): a random pixel among those the
    map puts on the wrong side of 0.5 (the most wrong one when there is none)."""
    h, w = mask.shape
    rr, cc = np.mgrid[0:h, 0:w]
    free = np.ones((h, w), dtype=bool)
    for r, c in taken:
        free &= (rr - r) ** 2 + (cc - c) ** 2 > radius**2
    for lab in (label, 1 - label):
        for cand in (*(m & free for m in interior[lab]), (mask == lab) & free, mask == lab):
            if not cand.any():
                continue
            wrong = cand & ((current >= 0.5) if lab == 0 else (current < 0.5))
            if rng is not None and wrong.any():
                r, c = np.argwhere(wrong)[rng.integers(int(wrong.sum()))]
                return int(r), int(c), lab
            score = np.where(cand, current if lab == 0 else -current, -np.inf)
            r, c = np.unravel_index(int(np.argmax(score)), score.shape)
            return int(r), int(c), lab
    raise ValueError("empty mask")


def interiors(mask: np.ndarray, cell: float) -> list[list[np.ndarray]]:
    """Per class: its pixels at least one, then half a ``cell`` from the other class."""
    from scipy import ndimage as ndi

    dist = [ndi.distance_transform_edt(mask == lab) for lab in (0, 1)]
    return [[d > cell, d > 0.5 * cell] for d in dist]


def to_image(r: int, c: int, size: int, shape: tuple[int, int]) -> tuple[float, float]:
    """A pixel of the input-size map -> (row, col) in the full image (pixel centres)."""
    return (r + 0.5) * shape[0] / size - 0.5, (c + 0.5) * shape[1] / size - 0.5


def simulate(
    args: argparse.Namespace, data: dict, seed: int, ks: list[int], extra: dict | None = None
) -> dict[str, Any]:
    """One split seed: PxAP of both sets (and of ``extra``) and refit times at every k."""
    from pixelcam.refine import Refiner

    rng = np.random.default_rng(seed)
    ids = sorted(data)
    order = [ids[i] for i in rng.permutation(len(ids))]
    pick_rng = rng if args.pick == "wrong" else None
    n_ann = max(1, int(round(args.annotated * len(ids))))
    annotated, held = sorted(order[:n_ann]), sorted(order[n_ann:])
    refiner = Refiner.from_checkpoint(
        args.checkpoint, teacher=args.teacher, settings=settings_from(args), seed=seed
    )
    size = refiner.size
    for i in ids:
        refiner.add_image(i, data[i]["rgb"], label=data[i]["label"], train=i in annotated)
    extra = extra or {}
    for i, item in extra.items():
        refiner.add_image(i, item["rgb"], label=item["label"], train=False)
    data = {**data, **extra}
    other = sorted(extra)
    ids = ids + other
    maps = refiner.maps(size=size)
    feat_side = refiner._features(ids[0]).shape[-1]
    radius = args.spacing * size / feat_side
    inner = {i: interiors(data[i]["mask_eval"], size / feat_side) for i in annotated}
    taken: dict[str, list[tuple[float, float]]] = {i: [] for i in annotated}
    coords: dict[str, list[tuple[float, float]]] = {i: [] for i in annotated}
    labels: dict[str, list[int]] = {i: [] for i in annotated}
    rows = [{"k": 0, "annotated": pxap(maps, data, annotated),
             "held_out": pxap(maps, data, held) if held else None,
             "other": pxap(maps, data, other) if other else None, "refit_ms": 0.0}]  # fmt: skip
    for k in range(1, max(ks) + 1):
        want = 1 if k % 2 == 1 else 0
        for i in annotated:
            r, c, lab = next_point(
                maps[i], inner[i], data[i]["mask_eval"], want, taken[i], radius, pick_rng
            )
            taken[i].append((r, c))
            coords[i].append(to_image(r, c, size, data[i]["rgb"].shape[:2]))
            labels[i].append(lab)
            refiner.set_points(i, np.array(coords[i]), labels[i])
        res = refiner.refit(maps=ids, map_size=size)
        maps = res.maps
        if k in ks:
            rows.append({
                "k": k, "annotated": pxap(maps, data, annotated),
                "held_out": pxap(maps, data, held) if held else None,
                "other": pxap(maps, data, other) if other else None,
                "refit_ms": 1000 * res.seconds, "iterations": res.iterations,
                "points": res.n_fg + res.n_bg, "seeds": res.n_seeds,
            })  # fmt: skip
    return {"seed": seed, "annotated": annotated, "held_out": held, "rows": rows,
            "settings": refiner.settings.to_dict(), "seed_method": refiner.seed_method,
            "init": refiner.init_info}  # fmt: skip


def _random_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> tuple[list, list]:
    """``n`` points alternating foreground and background, uniformly in each class."""
    pts, labs = [], []
    for j in range(n):
        lab = j % 2 if (mask == j % 2).any() else 1 - j % 2
        cand = np.argwhere(mask == lab)
        pts.append(cand[rng.integers(len(cand))].astype(float))
        labs.append(lab)
    return pts, labs


def _time_refits(refiner: Any, ids: list[str], data: dict, seeds: int, repeats: int) -> dict:
    """Medians of a cold refit (first after the images or the settings change: the fixed
    rows' Gram matrix is rebuilt) and of a warm one (one point of one image moved, as a
    click does)."""
    rng = np.random.default_rng(1)
    cold, warm = [], []
    for _ in range(repeats):
        refiner._fixed_cache = None  # as after add_image
        cold.append(refiner.refit(maps=[], seeds=seeds).seconds)
    for r in range(repeats):
        i = ids[r % len(ids)]
        pts = [p.tolist() for p in refiner.points(i).coords()]
        labs = refiner.points(i).labels().tolist()
        new, lab = _random_points(data[i]["mask"], 1, rng)
        refiner.set_points(i, np.array(pts[1:] + [new[0].tolist()]), labs[1:] + lab)
        warm.append(refiner.refit(maps=[], seeds=seeds).seconds)
    return {"cold": 1000 * statistics.median(cold), "warm": 1000 * statistics.median(warm)}


def timing(args: argparse.Namespace, data: dict) -> dict[str, Any]:
    """Refits of ``--timing-images`` images x 10 points, without and with 5 CAM seeds per
    class and image; map refresh of one image from cached features (at the input size and
    at the image's size)."""
    from pixelcam.refine import Refiner

    ids = sorted(data)[: args.timing_images]
    refiner = Refiner.from_checkpoint(
        args.checkpoint, teacher=args.teacher, settings=settings_from(args)
    )
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in ids:
        refiner.add_image(i, data[i]["rgb"], label=data[i]["label"])
    add_s = (time.perf_counter() - t0) / len(ids)
    for i in ids:
        pts, labs = _random_points(data[i]["mask"], 10, rng)
        refiner.set_points(i, np.array(pts), labs)
    first = refiner.refit(maps=[], seeds=5).seconds  # also draws the seeds, makes the anchors
    plain = _time_refits(refiner, ids, data, 0, args.repeats)
    seeded = _time_refits(refiner, ids, data, 5, args.repeats)
    refresh, refresh_full = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        refiner.maps([ids[0]], size=refiner.size)
        refresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        refiner.maps([ids[0]])
        refresh_full.append(time.perf_counter() - t)
    shape = data[ids[0]]["rgb"].shape
    return {
        "images": len(ids), "points_per_image": 10, "input_size": refiner.size,
        "add_image_ms": 1000 * add_s, "first_refit_ms": 1000 * first,
        "refit_cold_ms": plain["cold"], "refit_warm_ms": plain["warm"],
        "refit_seeds_cold_ms": seeded["cold"], "refit_seeds_warm_ms": seeded["warm"],
        "map_refresh_ms": 1000 * statistics.median(refresh),
        "map_refresh_full_ms": 1000 * statistics.median(refresh_full),
        "full_size": f"{shape[1]}x{shape[0]}", "cache_mb": refiner.cache_bytes / 2**20,
        "threads": __import__("torch").get_num_threads(),
    }  # fmt: skip


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.mean(kept) if kept else None


def print_tables(title: str, runs: list[dict[str, Any]], times: dict | None, also: str) -> None:
    """The mean curve over the seeds (and its range), then every seed's curve."""
    sets = [("annotated", "annotated"), ("held_out", "held out")]
    if runs[0]["rows"][0].get("other") is not None:
        sets.append(("other", also))
    print(f"\n### {title}\n")
    seeds = ", ".join(str(r["seed"]) for r in runs)
    print(f"Mean PxAP over split seeds {seeds} (min-max in brackets):\n")
    print("| k |" + "".join(f" {name} |" for _, name in sets) + " refit ms (mean) |")
    print("|" + "---|" * (len(sets) + 2))
    for j, row in enumerate(runs[0]["rows"]):
        cells = []
        for key, _ in sets:
            vals = [r["rows"][j][key] for r in runs if r["rows"][j][key] is not None]
            cells.append(
                f"{fmt(_mean(vals))} [{fmt(min(vals))}-{fmt(max(vals))}]" if vals else "n/a"
            )
        ms = statistics.mean(r["rows"][j]["refit_ms"] for r in runs)
        print(f"| {row['k']} | " + " | ".join(cells) + f" | {ms:.0f} |")
    names = " / ".join(name for _, name in sets)
    print(f"\nPer split seed ({names}):\n")
    print("| seed |" + "".join(f" k={row['k']} |" for row in runs[0]["rows"]))
    print("|" + "---|" * (len(runs[0]["rows"]) + 1))
    for r in runs:
        cells = [" / ".join(fmt(row[key]) for key, _ in sets) for row in r["rows"]]
        print(f"| {r['seed']} | " + " | ".join(cells) + " |")
    if times:
        print(
            f"\nTiming ({times['images']} images x {times['points_per_image']} points, "
            f"{times['input_size']} px input, {times['threads']} torch thread(s); medians; "
            "cold: first refit after images or settings change, warm: after a click):\n"
        )
        print(
            "| refit cold | refit warm | + 5 CAM seeds/class/image cold | warm | "
            f"map refresh (input size) | map refresh ({times['full_size']}) | add_image |"
        )
        print("|---|---|---|---|---|---|---|")
        print(f"| {times['refit_cold_ms']:.0f} ms | {times['refit_warm_ms']:.0f} ms | "
              f"{times['refit_seeds_cold_ms']:.0f} ms | {times['refit_seeds_warm_ms']:.0f} ms | "
              f"{times['map_refresh_ms']:.1f} ms | {times['map_refresh_full_ms']:.1f} ms | "
              f"{times['add_image_ms']:.0f} ms |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; torch's thread count is restored afterwards (``--threads``
    would otherwise leak into a caller's process, e.g. the test suite)."""
    import torch

    threads = torch.get_num_threads()
    try:
        return _main(argv)
    finally:
        torch.set_num_threads(threads)


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from pixelcam.errors import InputError

    if args.threads:
        torch.set_num_threads(args.threads)
    ks = sorted({int(k) for k in args.ks.split(",")} | {0})
    try:
        ds, what = open_images(args)
        from pixelcam.models.checkpoint import read_checkpoint_info

        info = read_checkpoint_info(args.checkpoint)
        size = int(info["meta"].get("eval_size", 224))
        data = load_all(ds, size)
        extra = load_all(_masked(args, [args.also]), size) if args.also else None
        if extra:
            extra = {i: v for i, v in extra.items() if i not in data}
        runs = [simulate(args, data, s, ks, extra) for s in args.seed]
        times = None if args.no_timing else timing(args, {**(extra or {}), **data})
    except InputError as exc:
        print(f"refine benchmark: error: {exc}", file=sys.stderr)
        return 2
    kind = "PixelCAM" if info["config"].get("pixel_head") else "baseline (head from CAM seeds)"
    s = runs[0]["settings"]
    also = f"{args.also} ({len(extra)}, never annotated)" if extra else ""
    title = (f"{what}; {Path(args.checkpoint).name} ({kind}); PxAP; settings: "
             + ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("max_iter", "tol"))
             + f"; seed CAM {runs[0]['seed_method']}")  # fmt: skip
    print_tables(title, runs, times, also)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        doc = {"dataset": what, "checkpoint": args.checkpoint, "runs": runs, "timing": times}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
