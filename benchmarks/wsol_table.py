"""Baseline vs PixelCAM on one dataset: valcl accuracy and valpx PxAP,
with the paper's two references beside them.

Trains ONE baseline (GAP head), then PixelCAM from each teacher CAM method (LayerCAM,
GradCAM++ by default; they are maps of the same GAP-head baseline), for each seed, and
prints a markdown table of the B-LOC checkpoints (valcl accuracy and valpx PxAP of the
method's own map: the teacher CAM for the baseline rows, the PixelCAM map for the others).
``--negev`` adds NEGEV over the same frozen baseline from each teacher's CAMs, ``--unet``
the fully supervised U-Net (same backbone and weights, trained on the train masks; its
accuracy is n/a).

    .venv/bin/python benchmarks/wsol_table.py --dataset glas \
        --data-root ../shared/data/glas --folds-dir ../shared/data/glas-folds \
        --backbone tf_efficientnet_lite0 --weights imagenet --out runs/glas-fold0

Without --dataset it runs on a generated synthetic dataset.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data-root", default="")
    p.add_argument("--folds-dir", default=None)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--teachers", default="layercam,gradcampp")
    p.add_argument("--epochs-baseline", type=int, default=30)
    p.add_argument("--epochs-pixelcam", type=int, default=15)
    p.add_argument("--negev", action="store_true", help="add NEGEV rows (one per teacher)")
    p.add_argument("--unet", action="store_true", help="add the fully supervised U-Net row")
    p.add_argument("--epochs-negev", type=int, default=20)
    p.add_argument("--epochs-unet", type=int, default=30)
    p.add_argument("--decoder-width", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0")
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--eval-size", type=int, default=224)
    p.add_argument("--synthetic-n-per-class", type=int, default=150)
    p.add_argument("--synthetic-size", type=int, default=256)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    from pixelcam.train import TrainConfig, train
    from pixelcam.train.events import human_progress

    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()]
    rows: dict[str, list[tuple[float, float]]] = {}
    t0 = time.time()
    for seed in [int(s) for s in args.seeds.split(",")]:
        common = dict(
            dataset=args.dataset, data_root=args.data_root or str(args.out / "data"),
            fold=args.fold if args.dataset in ("glas", "camelyon16") else None,
            folds_dir=args.folds_dir, backbone=args.backbone, weights=args.weights or None,
            batch_size=args.batch_size, lr=args.lr, seed=seed, device="auto",
            resize=args.resize, crop=args.crop, eval_size=args.eval_size,
            synthetic_n_per_class=args.synthetic_n_per_class,
            synthetic_size=args.synthetic_size,
        )  # fmt: skip
        cb = [human_progress(sys.stderr)]
        base_dir = args.out / f"seed{seed}" / "baseline"
        runs = {}
        for teacher in teachers:
            base = _train_or_resume(
                train, TrainConfig(out=str(base_dir), epochs=args.epochs_baseline,
                                   eval_method=teacher, **common), cb,
            ) if not runs else runs["base"]  # fmt: skip
            runs["base"] = base
            pix = _train_or_resume(
                train,
                TrainConfig(out=str(args.out / f"seed{seed}" / f"pixelcam-{teacher}"),
                            phase="pixelcam", teacher=str(base_dir), teacher_method=teacher,
                            epochs=args.epochs_pixelcam, **common),
                cb,
            )  # fmt: skip
            runs[teacher] = pix
            if args.negev:
                runs[f"negev-{teacher}"] = _train_or_resume(
                    train,
                    TrainConfig(out=str(args.out / f"seed{seed}" / f"negev-{teacher}"),
                                phase="negev", teacher=str(base_dir), teacher_method=teacher,
                                epochs=args.epochs_negev, decoder_width=args.decoder_width,
                                **common),
                    cb,
                )  # fmt: skip
        if args.unet:
            runs["unet"] = _train_or_resume(
                train,
                TrainConfig(out=str(args.out / f"seed{seed}" / "unet"), phase="unet",
                            epochs=args.epochs_unet, decoder_width=args.decoder_width,
                            **common),
                cb,
            )  # fmt: skip
        for teacher in teachers:
            # baseline rows: the baseline's B-LOC for that teacher's own map
            rows.setdefault(teacher, []).append(_best_loc(runs["base"].out, teacher))
            rows.setdefault(f"{teacher} + PixelCAM", []).append(
                _best_loc(runs[teacher].out, "pixelcam")
            )
            if args.negev:
                rows.setdefault(f"{teacher} + NEGEV", []).append(
                    _best_loc(runs[f"negev-{teacher}"].out, "negev")
                )
        if args.unet:
            rows.setdefault("U-Net (full supervision)", []).append(
                _best_loc(runs["unet"].out, "unet")
            )
    lines = ["| method | valcl accuracy (%) | valpx PxAP |", "|---|---|---|"]
    for name, vals in rows.items():
        acc = [v[0] for v in vals]
        loc = [v[1] for v in vals]
        acc_text = "n/a" if None in acc else _fmt(acc)
        lines.append(f"| {name} | {acc_text} | {_fmt(loc)} |")
    table = "\n".join(lines)
    print(table)
    print(f"(seeds {args.seeds}; {time.time() - t0:.0f} s)")
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "table.json").write_text(json.dumps(rows, indent=1))
    return 0


def _train_or_resume(train, config, callbacks):
    from pixelcam.train.loop import RunResult

    out = Path(config.out)
    if (out / "history.json").exists() and (out / "events.jsonl").exists():
        events = (out / "events.jsonl").read_text().splitlines()
        if events and '"event": "done"' in events[-1]:
            history = json.loads((out / "history.json").read_text())
            return RunResult(out, config.epochs, history, out / "best_cl", out / "best_loc",
                             out / "last")  # fmt: skip
        return train(config, resume=True, callbacks=callbacks)
    return train(config, callbacks=callbacks)


def _best_loc(run: Path, method: str) -> tuple[float, float]:
    """(accuracy, PxAP) of ``method``'s map at its B-LOC epoch over the run's history, by
    the one selection rule (:mod:`pixelcam.train.selection`)."""
    from pixelcam.train.config import TrainConfig
    from pixelcam.train.phases import PHASES
    from pixelcam.train.selection import best_loc_epoch

    history = json.loads((run / "history.json").read_text())
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    guard = PHASES.get(config.phase).trains_classifier
    key = f"valpx_pxap_{method}"
    epoch = best_loc_epoch(history, key, config.select_margin, guard=guard)
    row = history[-1] if epoch is None else history[epoch]
    return row["valcl_acc"], row.get(key, row["valpx_pxap"])


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


if __name__ == "__main__":
    from pixelcam.errors import PixelCAMError

    try:
        raise SystemExit(main())
    except PixelCAMError as exc:  # a bad dataset or checkpoint: one line, no traceback
        print(f"wsol_table.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
