"""Map and training-step speed: PixelCAM versus CAM / GradCAM++ / LayerCAM / DeepMIL / NEGEV /
U-Net / SAT, and parameter counts of every model of the paper's Table 11.

Usage::

    .venv/bin/python benchmarks/speed.py --quick              # CPU, several minutes
    .venv/bin/python benchmarks/speed.py --device cuda --json runs/speed-gpu.json

For each configuration (backbone, batch size; random ``size`` x ``size`` images) it times,
after a warm-up, the median over repeated runs (cases interleaved round by round, so drifting
machine load hits all of them alike) of:

- ``forward``: one plain model forward (backbone + GAP head + PixelCAM pixel head);
- our maps through :func:`pixelcam.cams.compute_maps` (all include the forward):
  ``cam``, ``gradcampp_closed``/``layercam_closed`` (GAP closed-form gradient, no backward),
  ``gradcampp_autograd``/``layercam_autograd`` (backward through the heads only),
  ``pixelcam``, ``all_four`` (cam + gradcampp + layercam + pixelcam from one forward),
  ``deepmil`` (on a DeepMIL-head model of the same backbone; ``deepmil_forward`` is that
  model's plain forward), ``negev`` (U-Net decoder over the frozen GAP classifier) and
  ``unet`` (the fully supervised U-Net), each through its own model's forward;
- ``gradcam_lib_gradcampp`` / ``gradcam_lib_layercam``: ``pytorch_grad_cam`` (full backward
  through the backbone, min-max + resize to the image size), the usual way these maps are made;
- ``forward_grad`` / ``forward_backward``: a forward with autograd on, and that plus the
  backward of the predicted logits through the whole network: the least any full-backward
  gradient CAM pays. ``forward_backward/forward`` bounds what GradCAM++/PixelCAM can reach
  when PixelCAM costs one forward (about 3 on a CPU, where a backward costs two forwards).

Training steps (unless ``--no-train``; the same configurations): one optimizer step (forward,
loss, backward, SGD step as the trainer builds it: nesterov momentum, the two parameter
groups, autocast + GradScaler on CUDA unless ``--no-amp``) of

- ``baseline``: GAP classifier, cross-entropy only;
- ``pixelcam_cached``: + pixel head, CE + lam * partial CE on seeds sampled (trainer's
  ``_seeds``, i.e. :func:`pixelcam.pseudo_labels.sample_seeds`) from teacher CAMs computed
  once beforehand (the trainer's cache; like the trainer, each batch's CAMs come from the
  CPU, are copied to the device and the seeds are drawn there with the device's generator);
  ``pixelcam_cached_on_device``: the same CAMs already on the device (the copy left out;
  not timed on the CPU, where it is the same step);
- ``pixelcam_teacher_per_step``: the same, but the teacher's LayerCAM is computed in every
  step (teacher forward + backward through its heads: ``compute_maps(teacher, x,
  ["layercam"], gradient="autograd")``), as the authors' code does;
  ``pixelcam_teacher_per_step_closed``: the same with the closed-form gradient (no backward);
- ``negev``: decoder-only step over the frozen encoder (seed CE + smoothness, the trainer's
  ``_decoder_loss``); ``unet``: encoder + decoder step on masks (CE + Dice).

A DeiT SAT model (``--sat``, batch 1) is timed too: ``sat`` map, ``pixelcam`` map of
SAT + PixelCAM, plain forward.

Ratios against aims: GradCAM++/PixelCAM and LayerCAM/PixelCAM through grad-cam (>= 4),
PixelCAM/forward (<= 1.05), closed-form GradCAM++/forward (<= 1.10), all-four/forward
(<= 1.20), PixelCAM step with cached CAMs / baseline step (<= 1.10). Prints tables (with the
paper's Table 11 times and parameter counts beside ours) and writes JSON (``--json``, default
``runs/speed.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixelcam.cams import compute_maps
from pixelcam.models import build_model

#: ratio -> (comparison, bound) the targets
AIMS: dict[str, tuple[str, float]] = {
    "gradcam_lib_gradcampp/pixelcam": (">=", 4.0),
    "gradcam_lib_layercam/pixelcam": (">=", 4.0),
    "pixelcam/forward": ("<=", 1.05),
    "gradcampp_closed/forward": ("<=", 1.10),
    "all_four/forward": ("<=", 1.20),
    "pixelcam_cached/baseline": ("<=", 1.10),
}

#: paper Table 11 (RTX A6000, one 224x224 image, ResNet-50 / DeiT-Tiny): ms of our timing key
PAPER_MS = {
    "pixelcam": "8.8 (GradCAM++ w/ PixelCAM), 8.4 (LayerCAM w/)",
    "deepmil": "9.1 (9.2 w/ PixelCAM)",
    "negev": "10.3 (GradCAM++ w/), 10.4 (LayerCAM w/)",
    "unet": "10.1",
    "gradcam_lib_gradcampp": "40.9",
    "gradcam_lib_layercam": "37.9",
}
PAPER_SAT_MS = {"sat": "10.5", "pixelcam": "11.5"}
PAPER_RATIOS = {
    "gradcam_lib_gradcampp/pixelcam": 40.9 / 8.8,
    "gradcam_lib_layercam/pixelcam": 37.9 / 8.4,
    "negev/pixelcam": 10.3 / 8.8,
    "unet/pixelcam": 10.1 / 8.8,
    "deepmil/pixelcam": 9.1 / 8.8,
}

#: Table 11 models: key -> (label, which backbone, build_model options, paper's count)
TABLE11: dict[str, tuple[str, str, dict, int]] = {
    "gap": ("GradCAM++ / LayerCAM (GAP)", "cnn", {"head": "gap", "pixel_head": None}, 23514179),
    "gap_pixelcam": (
        "GradCAM++ / LayerCAM w/ PixelCAM",
        "cnn",
        {"head": "gap", "pixel_head": "linear"},
        23518277,
    ),
    "gap_negev": (
        "GradCAM++ / LayerCAM w/ NEGEV",
        "cnn",
        {"head": "gap", "pixel_head": None, "decoder": "negev", "freeze_encoder": True},
        32527397,
    ),
    "deepmil": ("DeepMIL", "cnn", {"head": "deepmil", "pixel_head": None}, 24036932),
    "deepmil_pixelcam": (
        "DeepMIL w/ PixelCAM",
        "cnn",
        {"head": "deepmil", "pixel_head": "linear"},
        24041030,
    ),
    "deepmil_negev": (
        "DeepMIL w/ NEGEV",
        "cnn",
        {"head": "deepmil", "pixel_head": None, "decoder": "negev", "freeze_encoder": True},
        33050150,
    ),
    "unet": ("U-Net", "cnn", {"head": "gap", "pixel_head": None, "decoder": "unet"}, 32521250),
    "sat": ("SAT", "vit", {"head": "sat", "pixel_head": None}, 5528267),
    "sat_pixelcam": ("SAT w/ PixelCAM", "vit", {"head": "sat", "pixel_head": "linear"}, 5528651),
}
#: the backbones the paper's counts are for
PAPER_BACKBONES = {"cnn": "resnet50", "vit": "deit_tiny_patch16_224"}
#: counts the paper states in words (Appendix G) or that follow from Table 11's differences
PAPER_PARTS = {
    "pixel_head_cnn": 4098,
    "pixel_head_vit": 386,
    "decoder": 33050150 - 24036932,  # = 32527397 - 23514179 = 9,013,218
}


class _Logits(nn.Module):
    """grad-cam wants a module returning logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _target_layer(model: nn.Module) -> nn.Module:
    net = model.backbone.model
    if hasattr(net, "layer4"):
        return net.layer4[-1]
    raise SystemExit("grad-cam timing needs a ResNet backbone in this script")


def time_cases(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Milliseconds per call of every case, ``repeats`` rounds after ``warmup`` rounds; the
    cases run one after the other within a round (interleaved), synchronised on CUDA."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for round_idx in range(warmup + repeats):
        for name, fn in cases.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if round_idx >= warmup:
                times[name].append((time.perf_counter() - t0) * 1000.0)
    return times


def _summary(times: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    return (
        {k: statistics.median(v) for k, v in times.items()},
        {k: min(v) for k, v in times.items()},
    )


def bench_maps(
    backbone: str, batch: int, size: int, repeats: int, warmup: int, device: torch.device
) -> dict:
    """Map timings of one (backbone, batch) configuration."""
    from pytorch_grad_cam import GradCAMPlusPlus, LayerCAM

    torch.manual_seed(0)

    def make(**kw: object) -> nn.Module:
        return build_model(backbone, num_classes=2, **kw).to(device).eval()

    gap = make(head="gap", pixel_head="linear")
    mil = make(head="deepmil", pixel_head="linear")
    negev = make(head="gap", pixel_head=None, decoder="negev", freeze_encoder=True)
    unet = make(head="gap", pixel_head=None, decoder="unet")
    x = torch.randn(batch, 3, size, size, device=device)
    # grad-cam hooks its target layer for good and copies every activation it sees to the
    # CPU: give each instance its own copy of the model, or every other case pays for it
    gc_models = [copy.deepcopy(gap) for _ in range(2)]
    gc_pp = GradCAMPlusPlus(
        model=_Logits(gc_models[0]), target_layers=[_target_layer(gc_models[0])]
    )
    gc_layer = LayerCAM(model=_Logits(gc_models[1]), target_layers=[_target_layer(gc_models[1])])

    def forward(model: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return model(x)

        return run

    def maps(model: nn.Module, methods: list[str], gradient: str = "auto") -> Callable:
        return lambda: compute_maps(model, x, methods, gradient=gradient)

    # what any full-backward gradient CAM must pay at least, without hooks or
    # post-processing: a forward with autograd on, and that plus the backward of the
    # predicted logits through the whole network (weights require grad, as in grad-cam)
    grad_model = copy.deepcopy(gap)

    def forward_grad() -> object:
        return grad_model(x).logits

    def forward_backward() -> object:
        grad_model.zero_grad(set_to_none=True)
        logits = grad_model(x).logits
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        return logits

    cases: dict[str, Callable[[], object]] = {
        "forward": forward(gap),
        "cam": maps(gap, ["cam"]),
        "gradcampp_closed": maps(gap, ["gradcampp"], "closed_form"),
        "gradcampp_autograd": maps(gap, ["gradcampp"], "autograd"),
        "layercam_closed": maps(gap, ["layercam"], "closed_form"),
        "layercam_autograd": maps(gap, ["layercam"], "autograd"),
        "pixelcam": maps(gap, ["pixelcam"]),
        "all_four": maps(gap, ["cam", "gradcampp", "layercam", "pixelcam"]),
        "deepmil_forward": forward(mil),
        "deepmil": maps(mil, ["deepmil"]),
        "negev": maps(negev, ["negev"]),
        "unet": maps(unet, ["unet"]),
        "gradcam_lib_gradcampp": lambda: gc_pp(input_tensor=x, targets=None),
        "gradcam_lib_layercam": lambda: gc_layer(input_tensor=x, targets=None),
        "forward_grad": forward_grad,
        "forward_backward": forward_backward,
    }
    med, best = _summary(time_cases(cases, repeats, warmup, device))
    ratios = {
        "gradcam_lib_gradcampp/pixelcam": med["gradcam_lib_gradcampp"] / med["pixelcam"],
        "gradcam_lib_layercam/pixelcam": med["gradcam_lib_layercam"] / med["pixelcam"],
        "gradcampp_autograd/pixelcam": med["gradcampp_autograd"] / med["pixelcam"],
        "layercam_autograd/pixelcam": med["layercam_autograd"] / med["pixelcam"],
        "gradcampp_closed/pixelcam": med["gradcampp_closed"] / med["pixelcam"],
        "pixelcam/forward": med["pixelcam"] / med["forward"],
        # the most GradCAM++/PixelCAM can reach when PixelCAM costs one forward
        "forward_backward/forward": med["forward_backward"] / med["forward"],
        "forward_grad/forward": med["forward_grad"] / med["forward"],
        "gradcam_lib_gradcampp/forward_backward": med["gradcam_lib_gradcampp"]
        / med["forward_backward"],
        "gradcampp_closed/forward": med["gradcampp_closed"] / med["forward"],
        "layercam_closed/forward": med["layercam_closed"] / med["forward"],
        "all_four/forward": med["all_four"] / med["forward"],
        "deepmil/deepmil_forward": med["deepmil"] / med["deepmil_forward"],
        "deepmil/pixelcam": med["deepmil"] / med["pixelcam"],
        "negev/pixelcam": med["negev"] / med["pixelcam"],
        "unet/pixelcam": med["unet"] / med["pixelcam"],
    }
    params = {
        "backbone": gap.num_parameters("backbone"),
        "gap_head": gap.num_parameters("head"),
        "deepmil_head": mil.num_parameters("head"),
        "pixel_head": gap.num_parameters("pixel_head"),
        "decoder": negev.num_parameters("decoder"),
        "total_gap_pixelcam": gap.num_parameters(),
        "total_negev": negev.num_parameters(),
        "total_unet": unet.num_parameters(),
    }
    with torch.inference_mode():
        feature_map = list(gap(x[:1]).features.shape[1:])
    for cam in (gc_pp, gc_layer):
        cam.activations_and_grads.release()
    return {
        "median_ms": med,
        "min_ms": best,
        "ms_per_image": {k: v / batch for k, v in med.items()},
        "ratios": ratios,
        "params": params,
        "feature_map": feature_map,
    }


def bench_train(
    backbone: str,
    batch: int,
    size: int,
    repeats: int,
    warmup: int,
    device: torch.device,
    amp: bool = True,
) -> dict:
    """Timings of one training step of the baseline, PixelCAM (cached / per-step teacher),
    NEGEV and U-Net, built and run the way :mod:`pixelcam.train.loop` does."""
    from types import SimpleNamespace

    from pixelcam.pseudo_labels import IGNORE
    from pixelcam.train import losses
    from pixelcam.train.config import TrainConfig
    from pixelcam.train.loop import make_optimizer
    from pixelcam.train.phases import PHASES
    from pixelcam.train.phases._seeded import draw_seeds as _seeds
    from pixelcam.train.runtime import device_generator

    torch.manual_seed(0)
    cfg_pix = TrainConfig(out="unused", phase="pixelcam", teacher="unused")
    cfg_negev = TrainConfig(out="unused", phase="negev", teacher="unused")
    cfg_unet = TrainConfig(out="unused", phase="unet")
    use_amp = amp and device.type == "cuda"

    def make(**kw: object) -> nn.Module:
        return build_model(backbone, num_classes=2, head="gap", **kw).to(device)

    teacher = make(pixel_head=None).eval()
    models = {
        "baseline": make(pixel_head=None),
        "pixelcam_cached": make(pixel_head="linear"),
        "pixelcam_teacher_per_step": make(pixel_head="linear"),
        "pixelcam_teacher_per_step_closed": make(pixel_head="linear"),
        "negev": make(pixel_head=None, decoder="negev", freeze_encoder=True),
        "unet": make(pixel_head=None, decoder="unet"),
    }
    if device.type != "cpu":  # on the CPU it is the same as pixelcam_cached
        models["pixelcam_cached_on_device"] = make(pixel_head="linear")
    x = torch.randn(batch, 3, size, size, device=device)
    labels_cpu = torch.arange(batch) % 2
    labels = labels_cpu.to(device)
    # the trainer's batches: CAMs (from the float16 cache) and user points on the CPU
    cams_cpu = compute_maps(teacher, x, ["layercam"], target=labels).maps["layercam"]
    cams_cpu = cams_cpu.half().float().cpu()
    no_points_cpu = torch.full((batch, size, size), IGNORE, dtype=torch.long)
    no_points = no_points_cpu.to(device)
    masks_cpu = (torch.rand(batch, size, size) > 0.5).long()  # U-Net ground truth
    cached_batch = {"cam": cams_cpu, "label": labels_cpu, "mask": no_points_cpu}
    # the same cached CAMs already on the device (the trainer moves each batch's CAMs to
    # the device and draws the seeds there): the cost of that copy, left out
    device_batch = {"cam": cams_cpu.to(device), "label": labels, "mask": no_points}
    gen = torch.Generator().manual_seed(0)
    seed_gen = device_generator(device, 0, gen)  # the trainer's: the device's own generator
    # per-step CAMs live on the device: seeds are drawn there (a CPU generator cannot)
    gen_dev = torch.Generator(device=device).manual_seed(0)

    # the trainer's phase objects (a run as the loop holds it: device and seed generator)
    negev, negev_run = (
        PHASES.get("negev")(cfg_negev),
        SimpleNamespace(device=device, seed_gen=seed_gen),
    )
    unet, unet_run = PHASES.get("unet")(cfg_unet), SimpleNamespace(device=device, seed_gen=gen)

    def pixel_loss(outp, seeds: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        """What phase pixelcam adds to the image loss."""
        return cfg_pix.lam * losses.pixel_seed_loss(outp.pixel_logits, seeds)

    def per_step_teacher(gradient: str) -> Callable:
        def loss(outp) -> torch.Tensor:  # noqa: ANN001
            res = compute_maps(teacher, x, ["layercam"], target=labels, gradient=gradient)
            b = {"cam": res.maps["layercam"], "label": labels, "mask": no_points}
            seeds = _seeds(b, cfg_pix, gen_dev, device)
            return F.cross_entropy(outp.logits, labels) + pixel_loss(outp, seeds)

        return loss

    loss_fns: dict[str, Callable] = {
        "baseline": lambda o: F.cross_entropy(o.logits, labels),
        "pixelcam_cached": lambda o: (
            F.cross_entropy(o.logits, labels)
            + pixel_loss(o, _seeds(cached_batch, cfg_pix, seed_gen, device))
        ),
        "pixelcam_cached_on_device": lambda o: (
            F.cross_entropy(o.logits, labels)
            + pixel_loss(o, _seeds(device_batch, cfg_pix, gen_dev, device))
        ),
        "pixelcam_teacher_per_step": per_step_teacher("autograd"),
        "pixelcam_teacher_per_step_closed": per_step_teacher("closed_form"),
        "negev": lambda o: negev.loss(o, cached_batch, x, negev_run).loss,
        "unet": lambda o: unet.loss(o, {"mask": masks_cpu, "label": labels_cpu}, x, unet_run).loss,
    }

    def step(name: str) -> Callable[[], float]:
        model = models[name]
        model.train()
        cfg = {"negev": cfg_negev, "unet": cfg_unet}.get(name, cfg_pix)
        opt = make_optimizer(model, cfg)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        loss_fn = loss_fns[name]

        def run() -> float:
            with torch.autocast(device.type, enabled=use_amp):
                outp = model(x)
                if name in ("negev", "unet"):  # the trainer computes it, then detaches it
                    F.cross_entropy(outp.logits, labels).detach()
                loss = loss_fn(outp)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return loss.item()

        return run

    cases = {name: step(name) for name in loss_fns if name in models}
    med, best = _summary(time_cases(cases, repeats, warmup, device))
    base = med["baseline"]
    ratios = {
        "pixelcam_cached/baseline": med["pixelcam_cached"] / base,
        "pixelcam_teacher_per_step/baseline": med["pixelcam_teacher_per_step"] / base,
        "pixelcam_teacher_per_step_closed/baseline": (
            med["pixelcam_teacher_per_step_closed"] / base
        ),
        "pixelcam_teacher_per_step/pixelcam_cached": (
            med["pixelcam_teacher_per_step"] / med["pixelcam_cached"]
        ),
        "negev/baseline": med["negev"] / base,
        "unet/baseline": med["unet"] / base,
    }
    if "pixelcam_cached_on_device" in med:
        ratios["pixelcam_cached_on_device/baseline"] = med["pixelcam_cached_on_device"] / base
    return {
        "amp": use_amp,
        "teacher": "layercam of a GAP baseline of the same backbone",
        "repeats": repeats,
        "median_ms": med,
        "min_ms": best,
        "ratios": ratios,
    }


def bench_sat(
    backbone: str, size: int, repeats: int, warmup: int, device: torch.device, batch: int = 1
) -> dict:
    """SAT (DeiT) map, SAT + PixelCAM map, plain forward (paper Table 11's SAT rows)."""
    torch.manual_seed(0)
    sat = build_model(backbone, num_classes=2, head="sat", pixel_head=None).to(device).eval()
    sat_pix = build_model(backbone, num_classes=2, head="sat", pixel_head="linear")
    sat_pix = sat_pix.to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)

    def forward() -> object:
        with torch.inference_mode():
            return sat_pix(x)

    cases: dict[str, Callable[[], object]] = {
        "forward": forward,
        "sat": lambda: compute_maps(sat, x, ["sat"]),
        "pixelcam": lambda: compute_maps(sat_pix, x, ["pixelcam"]),
        "sat_and_pixelcam": lambda: compute_maps(sat_pix, x, ["sat", "pixelcam"]),
    }
    med, best = _summary(time_cases(cases, repeats, warmup, device))
    return {
        "backbone": backbone,
        "batch": batch,
        "size": size,
        "repeats": repeats,
        "median_ms": med,
        "min_ms": best,
        "ratios": {
            "pixelcam/sat": med["pixelcam"] / med["sat"],
            "pixelcam/forward": med["pixelcam"] / med["forward"],
        },
    }


def table11_params(cnn: str, vit: str | None) -> dict:
    """Parameter counts (total and parts) of every Table 11 model, paper's count beside."""
    rows = {}
    for key, (label, kind, kw, paper) in TABLE11.items():
        backbone = cnn if kind == "cnn" else vit
        if backbone is None:
            continue
        with torch.device("meta"):  # counting needs no weights: skip the initialisation
            model = build_model(backbone, num_classes=2, **kw)
        parts = {p: model.num_parameters(p) for p in ("backbone", "head", "pixel_head", "decoder")}
        rows[key] = {
            "label": label,
            "backbone": backbone,
            "total": model.num_parameters(),
            "parts": parts,
            "paper": paper if backbone == PAPER_BACKBONES[kind] else None,
        }
        del model
    derived = {}
    if "gap_pixelcam" in rows:
        derived["pixel_head_cnn"] = rows["gap_pixelcam"]["total"] - rows["gap"]["total"]
        derived["decoder"] = rows["gap_negev"]["total"] - rows["gap"]["total"]
        # the paper's U-Net has no classification head; ours carries the (unused) GAP head
        derived["unet_without_classifier"] = rows["unet"]["total"] - rows["unet"]["parts"]["head"]
    if "sat_pixelcam" in rows:
        derived["pixel_head_vit"] = rows["sat_pixelcam"]["total"] - rows["sat"]["total"]
    paper_derived = {
        "pixel_head_cnn": PAPER_PARTS["pixel_head_cnn"] if cnn == "resnet50" else None,
        "decoder": PAPER_PARTS["decoder"] if cnn == "resnet50" else None,
        "unet_without_classifier": TABLE11["unet"][3] if cnn == "resnet50" else None,
        "pixel_head_vit": (
            PAPER_PARTS["pixel_head_vit"] if vit == PAPER_BACKBONES["vit"] else None
        ),
    }
    return {
        "models": rows,
        "derived": derived,
        "paper_derived": {k: paper_derived[k] for k in derived},
    }


def _aim_mark(key: str, value: float) -> str:
    aim = AIMS.get(key)
    if aim is None:
        return ""
    op, bound = aim
    ok = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:.2f} {'ok' if ok else 'MISSED'}"


def _ratio_lines(ratios: dict[str, float], width: int = 44) -> list[str]:
    lines = [f"  {'ratio':{width}s} {'ours':>8s} {'paper':>7s}  aim"]
    for k, v in ratios.items():
        paper = PAPER_RATIOS.get(k)
        ptxt = f"{paper:7.2f}" if paper is not None else f"{'-':>7s}"
        lines.append(f"  {k:{width}s} {v:8.3f} {ptxt}  {_aim_mark(k, v)}".rstrip())
    return lines


def _table(results: list[dict], sat: dict | None, params: dict) -> str:
    lines = []
    for r in results:
        paper_cfg = r["backbone"] == "resnet50" and r["batch"] == 1 and r["size"] == 224
        lines.append(
            f"\n{r['backbone']} (WSOL stride, features {r['feature_map']}), batch {r['batch']}, "
            f"{r['size']}x{r['size']}, median of {r['repeats']}"
        )
        lines.append(
            f"  {'map timing':24s} {'ms/batch':>10s} {'ms/image':>10s}"
            + ("  paper GPU ms (Table 11)" if paper_cfg else "")
        )
        for k, v in r["median_ms"].items():
            extra = f"  {PAPER_MS[k]}" if paper_cfg and k in PAPER_MS else ""
            lines.append(f"  {k:24s} {v:10.1f} {v / r['batch']:10.1f}{extra}")
        lines += _ratio_lines(r["ratios"])
        lines.append("  params: " + ", ".join(f"{k} {v:,}" for k, v in r["params"].items()))
        t = r.get("train")
        if t:
            lines.append(
                f"  training step, batch {r['batch']} (amp {t['amp']}), median of {t['repeats']}"
            )
            lines.append(f"  {'step':36s} {'ms':>10s}")
            for k, v in t["median_ms"].items():
                lines.append(f"  {k:36s} {v:10.1f}")
            lines += _ratio_lines(t["ratios"])
    if sat:
        paper_cfg = sat["backbone"] == PAPER_BACKBONES["vit"] and sat["batch"] == 1
        lines.append(
            f"\n{sat['backbone']} SAT head, batch {sat['batch']}, {sat['size']}x{sat['size']}, "
            f"median of {sat['repeats']}"
        )
        for k, v in sat["median_ms"].items():
            extra = f"  paper {PAPER_SAT_MS[k]}" if paper_cfg and k in PAPER_SAT_MS else ""
            lines.append(f"  {k:24s} {v:10.1f}{extra}")
        lines += _ratio_lines(sat["ratios"])
    lines.append("\nparameters (paper Table 11 / Appendix G beside ours)")
    lines.append(f"  {'model':36s} {'backbone':24s} {'ours':>12s} {'paper':>12s} {'diff':>8s}")
    for row in params["models"].values():
        paper = row["paper"]
        ptxt = f"{paper:12,d}" if paper is not None else f"{'-':>12s}"
        dtxt = f"{row['total'] - paper:+8,d}" if paper is not None else ""
        lines.append(
            f"  {row['label']:36s} {row['backbone']:24s} {row['total']:12,d} {ptxt} {dtxt}".rstrip()
        )
    for k, v in params["derived"].items():
        paper = params["paper_derived"].get(k)
        ptxt = f"{paper:12,d}" if paper is not None else f"{'-':>12s}"
        dtxt = f"{v - paper:+8,d}" if paper is not None else ""
        lines.append(f"  {k:36s} {'':24s} {v:12,d} {ptxt} {dtxt}".rstrip())
    return "\n".join(lines)


def _parse_config(text: str) -> tuple[str, int]:
    name, sep, batch = text.rpartition(":")
    if not sep or not name or not batch.isdigit() or int(batch) < 1:
        raise SystemExit(f"--config wants BACKBONE:BATCH (e.g. resnet18:16), got {text!r}")
    return name, int(batch)


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="fewer repeats; batch 16 only for the small backbone"
    )
    p.add_argument("--large", default="resnet50")
    p.add_argument("--small", default="resnet18")
    p.add_argument(
        "--sat", default="deit_tiny_patch16_224", help="ViT for the SAT rows ('none': skip)"
    )
    p.add_argument(
        "--config",
        action="append",
        default=None,
        metavar="BACKBONE:BATCH",
        help="time these configurations instead of the default ones (repeatable)",
    )
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=None, help="map rounds (5 quick, 20 full)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-train", action="store_true", help="skip the training-step timings")
    p.add_argument("--train-repeats", type=int, default=None, help="(3 quick, 10 full)")
    p.add_argument("--train-warmup", type=int, default=1)
    p.add_argument("--no-amp", action="store_true", help="training steps in fp32 on CUDA too")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (script only)")
    p.add_argument("--json", default="runs/speed.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    repeats = args.repeats or (5 if args.quick else 20)
    train_repeats = args.train_repeats or (3 if args.quick else 10)
    sat_backbone = None if args.sat == "none" else args.sat
    configs = [(args.large, 1), (args.small, 1), (args.small, 16)]
    if not args.quick:
        configs.insert(1, (args.large, 16))
    if args.config:
        configs = [_parse_config(c) for c in args.config]
    load_before = _load()
    started = time.perf_counter()
    results = []
    for backbone, batch in configs:
        print(f"timing maps of {backbone} batch {batch} ...", file=sys.stderr, flush=True)
        res = {"backbone": backbone, "wsol_stride": True, "batch": batch, "size": args.size}
        res["repeats"] = repeats
        res.update(bench_maps(backbone, batch, args.size, repeats, args.warmup, device))
        if not args.no_train:
            print(f"timing training steps of {backbone} batch {batch} ...", file=sys.stderr)
            res["train"] = bench_train(
                backbone,
                batch,
                args.size,
                train_repeats,
                args.train_warmup,
                device,
                amp=not args.no_amp,
            )
        results.append(res)
    sat = None
    if sat_backbone:
        print(f"timing SAT maps of {sat_backbone} ...", file=sys.stderr, flush=True)
        sat = bench_sat(sat_backbone, args.size, repeats, args.warmup, device)
    params = table11_params(args.large, sat_backbone)
    import timm

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": _load(),
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "quick": args.quick,
        "results": results,
        "sat": sat,
        "table11_params": params,
    }
    print(_table(results, sat, params))
    print(
        f"\nload average before {load_before}, after {report['load_average_after']}; "
        f"{report['seconds']} s"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
