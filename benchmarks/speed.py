"""Map speed: PixelCAM versus CAM / GradCAM++ / LayerCAM / DeepMIL (cf. paper Table 11).

Usage::

    .venv/bin/python benchmarks/speed.py --quick              # CPU, a few minutes
    .venv/bin/python benchmarks/speed.py --device cuda --json runs/speed-gpu.json

For each configuration (backbone, batch size; 224x224 random images) it times, after a
warm-up, the median over repeated runs (methods interleaved round by round, so drifting
machine load hits all of them alike) of:

- ``forward``: one plain model forward (backbone + GAP head + PixelCAM pixel head);
- our maps through :func:`pixelcam.cams.compute_maps` (all include the forward):
  ``cam``, ``gradcampp_closed``/``layercam_closed`` (GAP closed-form gradient, no backward),
  ``gradcampp_autograd``/``layercam_autograd`` (backward through the heads only),
  ``pixelcam``, ``all_four`` (cam + gradcampp + layercam + pixelcam from one forward),
  ``deepmil`` (on a DeepMIL-head model of the same backbone; ``deepmil_forward`` is that
  model's plain forward);
- ``gradcam_lib_gradcampp`` / ``gradcam_lib_layercam``: ``pytorch_grad_cam`` (full backward
  through the backbone, min-max + resize to the image size), the usual way these maps are made.

Ratios: GradCAM++/PixelCAM and LayerCAM/PixelCAM (grad-cam's and ours), PixelCAM/forward
(aim <= 1.05), closed-form GradCAM++/forward (aim <= 1.10), all-four/forward (aim <= 1.20).
Prints a table and writes JSON (``--json``, default ``runs/speed.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pixelcam.cams import compute_maps
from pixelcam.models import build_model

AIMS = {"pixelcam/forward": 1.05, "gradcampp_closed/forward": 1.10, "all_four/forward": 1.20}


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


def bench_config(
    backbone: str, batch: int, size: int, repeats: int, warmup: int, device: torch.device
) -> dict:
    from pytorch_grad_cam import GradCAMPlusPlus, LayerCAM

    torch.manual_seed(0)
    gap = build_model(backbone, num_classes=2, head="gap", pixel_head="linear").to(device).eval()
    mil = build_model(backbone, num_classes=2, head="deepmil", pixel_head="linear")
    mil = mil.to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    gc_pp = GradCAMPlusPlus(model=_Logits(gap), target_layers=[_target_layer(gap)])
    gc_layer = LayerCAM(model=_Logits(gap), target_layers=[_target_layer(gap)])

    def forward(model: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return model(x)

        return run

    def maps(model: nn.Module, methods: list[str], gradient: str = "auto") -> Callable:
        return lambda: compute_maps(model, x, methods, gradient=gradient)

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
        "gradcam_lib_gradcampp": lambda: gc_pp(input_tensor=x, targets=None),
        "gradcam_lib_layercam": lambda: gc_layer(input_tensor=x, targets=None),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for round_idx in range(warmup + repeats):
        for name, fn in cases.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if round_idx >= warmup:
                times[name].append((time.perf_counter() - t0) * 1000.0)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    ratios = {
        "gradcam_lib_gradcampp/pixelcam": med["gradcam_lib_gradcampp"] / med["pixelcam"],
        "gradcam_lib_layercam/pixelcam": med["gradcam_lib_layercam"] / med["pixelcam"],
        "gradcampp_autograd/pixelcam": med["gradcampp_autograd"] / med["pixelcam"],
        "layercam_autograd/pixelcam": med["layercam_autograd"] / med["pixelcam"],
        "gradcampp_closed/pixelcam": med["gradcampp_closed"] / med["pixelcam"],
        "pixelcam/forward": med["pixelcam"] / med["forward"],
        "gradcampp_closed/forward": med["gradcampp_closed"] / med["forward"],
        "layercam_closed/forward": med["layercam_closed"] / med["forward"],
        "all_four/forward": med["all_four"] / med["forward"],
        "deepmil/deepmil_forward": med["deepmil"] / med["deepmil_forward"],
    }
    params = {
        "backbone": gap.num_parameters("backbone"),
        "gap_head": gap.num_parameters("head"),
        "deepmil_head": mil.num_parameters("head"),
        "pixel_head": gap.num_parameters("pixel_head"),
        "total_gap_pixelcam": gap.num_parameters(),
    }
    for cam in (gc_pp, gc_layer):
        cam.activations_and_grads.release()
    return {
        "backbone": backbone,
        "wsol_stride": True,
        "batch": batch,
        "size": size,
        "feature_map": list(gap(x[:1]).features.shape[1:]),
        "repeats": repeats,
        "median_ms": med,
        "min_ms": best,
        "ms_per_image": {k: v / batch for k, v in med.items()},
        "ratios": ratios,
        "params": params,
    }


def _table(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"\n{r['backbone']} (WSOL stride, features {r['feature_map']}), batch {r['batch']}, "
            f"{r['size']}x{r['size']}, median of {r['repeats']}"
        )
        lines.append(f"  {'timing':28s} {'ms/batch':>10s} {'ms/image':>10s}")
        for k, v in r["median_ms"].items():
            lines.append(f"  {k:28s} {v:10.1f} {v / r['batch']:10.1f}")
        lines.append(f"  {'ratio':28s} {'value':>10s} {'aim':>10s}")
        for k, v in r["ratios"].items():
            aim = AIMS.get(k)
            mark = "" if aim is None else f"<= {aim:.2f} {'ok' if v <= aim else 'MISSED'}"
            lines.append(f"  {k:28s} {v:10.3f}  {mark}")
        lines.append("  params: " + ", ".join(f"{k} {v:,}" for k, v in r["params"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="fewer repeats; batch 16 only for the small backbone"
    )
    p.add_argument("--large", default="resnet50")
    p.add_argument("--small", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (script only)")
    p.add_argument("--json", default="runs/speed.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (5 if args.quick else 20)
    configs = [(args.large, 1), (args.small, 1), (args.small, 16)]
    if not args.quick:
        configs.insert(1, (args.large, 16))
    results = []
    for backbone, batch in configs:
        print(f"timing {backbone} batch {batch} ...", file=sys.stderr, flush=True)
        results.append(bench_config(backbone, batch, args.size, repeats, args.warmup, device))
    import timm

    report = {
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "quick": args.quick,
        "results": results,
    }
    print(_table(results))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
