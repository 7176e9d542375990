"""Train the small sample models bundled with the plugin, so the panel works out of the box.

    .venv/bin/python sample_data/train_sample_model.py [--epochs-baseline 30] [--epochs-pixelcam 15]

A baseline (GAP head, LayerCAM teacher) and PixelCAM on top of it, on a generated
synthetic H&E dataset (the generator behind the sample tiles), with timm's tiny
``test_resnet`` backbone (0.37 M parameters, WSOL stride: 16x16 maps at its 128 px input)
so the two checkpoints stay small enough for git (~1.5 MB each). The B-LOC checkpoints are copied to
``napari_pixelcam/models/sample_{baseline,pixelcam}.{json,safetensors}``. Deterministic on
CPU for a given seed; takes about 7 minutes on a 2-core CPU. Measured on
the generated valpx split: baseline LayerCAM 86.0 PxAP, PixelCAM 95.8.

The paper's two references for the panel's compare view are trained on the same data:
NEGEV over the frozen sample baseline (LayerCAM seeds) and the fully supervised U-Net,
both with a small decoder (first width 32), copied to ``sample_{negev,unet}.*``.
``--references-only`` trains just these two over the bundled sample baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "napari_pixelcam" / "models"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs-baseline", type=int, default=25)
    p.add_argument("--epochs-pixelcam", type=int, default=12)
    p.add_argument("--n-per-class", type=int, default=60)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs-references", type=int, default=12)
    p.add_argument("--decoder-width", type=int, default=32)
    p.add_argument(
        "--references-only",
        action="store_true",
        help="train only NEGEV and U-Net, over the bundled sample baseline",
    )
    p.add_argument("--work", type=Path, default=None, help="keep the runs here")
    args = p.parse_args(argv)

    from pixelcam.train import TrainConfig, train
    from pixelcam.train.events import human_progress

    work = args.work or Path(tempfile.mkdtemp(prefix="pixelcam-sample-"))
    common = dict(
        dataset="synthetic", data_root=str(work / "data"), backbone="test_resnet",
        synthetic_n_per_class=args.n_per_class, synthetic_size=args.size, resize=144, crop=128,
        eval_size=128, batch_size=16, lr=0.01, device="cpu", seed=args.seed,
        teacher_method="layercam",
    )  # fmt: skip
    cb = [human_progress(sys.stderr)]
    runs = []
    if not args.references_only:
        runs += _wsol(args, work, common, cb, train, TrainConfig)
        teacher, init = str(work / "baseline"), str(work / "baseline" / "best_cl")
    else:  # only the baseline's B-LOC checkpoint is bundled: seeds and weights from it
        teacher = init = str(DEST / "sample_baseline.json")
    refs = dict(epochs=args.epochs_references, decoder_width=args.decoder_width, **common)
    negev = train(
        TrainConfig(out=str(work / "negev"), phase="negev", teacher=teacher, init=init, **refs),
        callbacks=cb,
    )
    unet = train(TrainConfig(out=str(work / "unet"), phase="unet", **refs), callbacks=cb)
    runs += [(negev, "sample_negev"), (unet, "sample_unet")]
    DEST.mkdir(parents=True, exist_ok=True)
    for run, name in runs:
        shutil.copyfile(run.out / "best_loc.safetensors", DEST / f"{name}.safetensors")
        doc = json.loads((run.out / "best_loc.json").read_text())
        # the panel labels these DEMO models and warns when an image is not like their tiles
        doc["meta"].update(demo=True, dataset="synthetic", data="generated H&E tiles")
        (DEST / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
        best = doc["meta"]["metrics"]
        acc = "n/a" if best["valcl_acc"] is None else f"{best['valcl_acc']:.1f}"
        print(f"{name}: epoch {best['epoch']}, valcl acc {acc}, "
              f"valpx PxAP {best['valpx_pxap']:.1f}")  # fmt: skip
    return 0


def _wsol(args, work, common, cb, train, TrainConfig):  # noqa: ANN001, ANN202, N803
    """The baseline and PixelCAM sample runs."""
    base = train(
        TrainConfig(out=str(work / "baseline"), epochs=args.epochs_baseline, **common),
        callbacks=cb,
    )
    pix = train(
        TrainConfig(
            out=str(work / "pixelcam"), phase="pixelcam", teacher=str(base.out),
            epochs=args.epochs_pixelcam, **common,
        ),
        callbacks=cb,
    )  # fmt: skip
    return [(base, "sample_baseline"), (pix, "sample_pixelcam")]


if __name__ == "__main__":
    raise SystemExit(main())
