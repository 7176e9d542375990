"""The GlaS recipe over seeds: does PixelCAM beat its teacher on real tissue?

    .venv/bin/python benchmarks/glas_recipe.py --data-root ../shared/data/glas \\
        --folds-dir ../shared/data/glas-folds --runs runs/recipe --seeds 0 1 2 \\
        [--teachers layercam,gradcampp] [--train] [--out runs/recipe/table.json] \\
        [--student "--lr-step 6"] [--against runs/other-variant]

For each seed: a baseline run ``RUNS/base-s<seed>`` and, for each teacher map, a PixelCAM
run ``RUNS/pix-<map>-s<seed>`` learning from that map, all with ``pixelcam train
--dataset glas`` and nothing else but the seed (the GlaS recipe of
:mod:`pixelcam.train.recipes` fills the rest). ``--train`` trains the runs that are not
there yet. Every B-LOC checkpoint is evaluated at its own eval size on the held-out images
(valcl and valpx together, each image once: every GlaS image has a mask): the split's PxAP
(one PR curve over all pixels, as the reference), valcl accuracy (CL), and a paired t-test
of the per-image PxAP of PixelCAM against its teacher's map, per seed and over the
images of all seeds pooled. Prints a Markdown table (RESULTS section 8). With
``--against OTHER`` (another variant's runs, students of the same teachers), also a paired
test of each PixelCAM run against the same seed's run there: which variant is better.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any


def held_out(args: argparse.Namespace) -> tuple[Any, set[str]]:
    """The valcl and valpx images together (each once), and the valcl ids."""
    from pixelcam.data.dataset import WSOLDataset
    from pixelcam.data.glas import load_glas

    kw = {"fold": args.fold, "folds_dir": args.folds_dir}
    valcl = load_glas(args.data_root, split="valcl", **kw)
    valpx = load_glas(args.data_root, split="valpx", **kw)
    records = {r.id: r for r in (*valcl.records, *valpx.records)}
    return WSOLDataset(list(records.values()), valcl.class_names), set(valcl.ids)


def train_run(out: Path, seed: int, args: argparse.Namespace, teacher: Path | None,
              method: str | None) -> float:  # fmt: skip
    """Train ``out`` unless it has its B-LOC checkpoint; the run's seconds (its events)."""
    from pixelcam.cli import main as cli

    if not (out / "best_loc.json").exists():
        if not args.train:
            raise SystemExit(f"{out} has no best_loc checkpoint (run with --train)")
        argv = ["train", "--out", str(out), "--dataset", "glas", "--data-root", args.data_root,
                "--seed", str(seed), "--device", args.device]  # fmt: skip
        if args.folds_dir:
            argv += ["--folds-dir", args.folds_dir]
        if teacher is not None:
            argv += ["--phase", "pixelcam", "--teacher", str(teacher), "--teacher-method", method]
            argv += shlex.split(args.student)
        if cli(argv) != 0:
            raise SystemExit(f"training {out} failed")
    from pixelcam.train.events import read_events

    return max(float(e.get("time", 0.0)) for e in read_events(out / "events.jsonl"))


def score(ckpt: Path, methods: list[str], data: Any, valcl_ids: set[str], device: str):
    """Split PxAP per map, per-image PxAP per map, valcl accuracy."""
    from pixelcam.evaluation import evaluate_model
    from pixelcam.models import checkpoint_eval_size, load_checkpoint

    model, meta = load_checkpoint(ckpt, device=device)
    res = evaluate_model(model, data, methods, device=device, size=checkpoint_eval_size(meta),
                         per_image=True)  # fmt: skip
    correct = [res.predictions[i] == r.label for i, r in zip(data.ids, data.records)
               if i in valcl_ids]  # fmt: skip
    per = {m: {i: s[m] for i, s in res.per_image.items()} for m in methods}
    return res.pxap, per, 100.0 * sum(correct) / len(correct)


Pooled = dict[str, tuple[list[float], list[float]]]


def seed_row(seed: int, runs: Path, teachers: list[str], data: Any, valcl_ids: set[str],
             args: argparse.Namespace, pooled: Pooled) -> dict[str, Any]:  # fmt: skip
    """One seed: its baseline and one PixelCAM run per teacher map, trained if asked, scored."""
    base = runs / f"base-s{seed}"
    row: dict[str, Any] = {"seed": seed, "baseline_s": train_run(base, seed, args, None, None)}
    pxap, per_t, row["cl_teacher"] = score(base / "best_loc", teachers, data, valcl_ids,
                                           args.device)  # fmt: skip
    for t in teachers:
        run = runs / f"pix-{t}-s{seed}"
        row[f"{t}_s"] = train_run(run, seed, args, base, t)
        s_pxap, per_s, cl = score(run / "best_loc", ["pixelcam"], data, valcl_ids, args.device)
        ids = sorted(per_s["pixelcam"])
        a, b = [per_s["pixelcam"][i] for i in ids], [per_t[t][i] for i in ids]
        delta, tt, pp, n = paired(a, b)
        pooled[t][0].extend(a)
        pooled[t][1].extend(b)
        row[t] = {"teacher": pxap[t], "pixelcam": s_pxap["pixelcam"], "cl": cl,
                  "teacher_per_image": sum(b) / n, "pixelcam_per_image": sum(a) / n,
                  "delta": delta, "t": tt, "p": pp, "n": n,
                  "images": {i: [x, y] for i, x, y in zip(ids, a, b)}}  # fmt: skip
        if args.against:
            other = Path(args.against) / f"pix-{t}-s{seed}" / "best_loc"
            _, per_o, _ = score(other, ["pixelcam"], data, valcl_ids, args.device)
            pooled[f"{t} against"][0].extend(a)
            pooled[f"{t} against"][1].extend(per_o["pixelcam"][i] for i in ids)
    row["constant"] = constant_pxap(data)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--data-root", required=True)
    p.add_argument("--folds-dir", default=None)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--runs", default="runs/recipe")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teachers", default="layercam,gradcampp")
    p.add_argument("--device", default="cpu")
    p.add_argument("--train", action="store_true", help="train the runs that are missing")
    variant = "extra `pixelcam train` options of the PixelCAM runs (a recipe variant)"
    p.add_argument("--student", default="", help=variant)
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    against = ("another variant's runs folder (the same teachers): pair each PixelCAM run's "
               "per-image PxAP with the same seed's run there")  # fmt: skip
    p.add_argument("--against", default=None, help=against)
    args = p.parse_args(argv)
    data, valcl_ids = held_out(args)
    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()]
    runs = Path(args.runs)
    rows: list[dict[str, Any]] = []
    pooled: Pooled = {k: ([], []) for t in teachers for k in (t, f"{t} against")}
    for seed in args.seeds:
        rows.append(seed_row(seed, runs, teachers, data, valcl_ids, args, pooled))
        print_rows(rows[-1:], teachers, header=seed == args.seeds[0])
    print()
    for t in teachers:
        print(f"pooled over seeds, PixelCAM vs {t}: {paired_text(*pooled[t])}")
        if args.against:
            print(f"pooled over seeds, PixelCAM ({t} seeds) vs {args.against}: "
                  f"{paired_text(*pooled[f'{t} against'])}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


def paired(a: list[float], b: list[float]) -> tuple[float, float, float, int]:
    """Mean difference a - b, and the paired t-test's t, p and n."""
    from pixelcam.metrics import paired_ttest

    tt, pp, n = paired_ttest(a, b)
    return sum(x - y for x, y in zip(a, b)) / n, tt, pp, n


def paired_text(a: list[float], b: list[float]) -> str:
    delta, tt, pp, n = paired(a, b)
    return f"per-image delta {delta:+.1f} PxAP, t = {tt:.2f}, p = {pp:.2g}, n = {n}"


def constant_pxap(data: Any) -> tuple[float, float]:
    """A constant map's PxAP, the floor: the foreground share of all pixels (split) and the
    mean of each image's foreground share (per image)."""
    from pixelcam.data.io import read_mask

    masks = [read_mask(r.mask_path) > 0 for r in data.records]
    split = 100.0 * sum(int(m.sum()) for m in masks) / sum(m.size for m in masks)
    return split, 100.0 * sum(float(m.mean()) for m in masks) / len(masks)


def print_rows(rows: list[dict[str, Any]], teachers: list[str], header: bool) -> None:
    if header:
        cols = ["seed", "constant"]
        for t in teachers:
            cols += [f"{t} PxAP", f"PixelCAM ({t} seeds) PxAP", "CL teacher / PixelCAM",
                     "per-image delta (t, p)"]  # fmt: skip
        print("PxAP cells: the split's PxAP (one PR curve over all pixels) / the mean "
              "per-image PxAP (what the paired test compares)\n")  # fmt: skip
        cols += ["time baseline / PixelCAM"]
        print("| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|")
    for r in rows:
        cells = [str(r["seed"]), "{:.1f} / {:.1f}".format(*r["constant"])]
        for t in teachers:
            x = r[t]
            cells += [f"{x['teacher']:.1f} / {x['teacher_per_image']:.1f}",
                      f"{x['pixelcam']:.1f} / {x['pixelcam_per_image']:.1f}",
                      f"{r['cl_teacher']:.1f} / {x['cl']:.1f}",
                      f"{x['delta']:+.1f} ({x['t']:.2f}, {x['p']:.2g})"]  # fmt: skip
        times = " + ".join(f"{r[f'{t}_s'] / 60:.0f}" for t in teachers)
        cells.append(f"{r['baseline_s'] / 60:.0f} min / {times} min")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
