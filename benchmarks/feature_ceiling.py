"""How well can a linear pixel head separate glands at all, and how clean are a teacher's seeds?

    .venv/bin/python benchmarks/feature_ceiling.py --data-root ../shared/data/glas \\
        --folds-dir ../shared/data/glas-folds --sizes 224 448 640 [--teacher RUN/best_loc]

PixelCAM's map is a linear (1x1 conv) foreground/background classifier on the encoder's
pixel features. Two numbers bound what it can reach on a dataset:

- the **ceiling**: a linear probe fitted on the TRUE masks of the training split, on frozen
  features (ImageNet weights, or a teacher's), scored by PxAP on ``--split`` (default
  valcl). If even the true masks cannot be separated linearly at an input size, no seed
  sampler will get there;
- with ``--teacher``: the **precision of its seeds** on the training split, the fraction of
  the top-q / bottom-q CAM pixels (q = 2 ... 30 %) that are gland / not gland, beside the
  gland fraction (what a random seed gets), over all images and per image class, of the
  CAM as PixelCAM's seeds see it (``--teacher-views``, as ``pixelcam train``'s). A
  diagnostic only: it reads the training masks, which a WSOL recipe may not use.

Prints a Markdown table; RESULTS section 8 holds the measured one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
import torch.nn.functional as F


def collect(model: Any, split: str, size: int, args: argparse.Namespace, method: str | None):
    """Features [N, C, h, w], mask fractions [N, h, w], full masks, CAMs [N, h, w] or None,
    image labels [N]."""
    from pixelcam.cams.compute import compute_maps
    from pixelcam.cams.views import viewed_maps
    from pixelcam.data.glas import load_glas
    from pixelcam.data.transforms import EvalTransform

    ds = load_glas(args.data_root, split=split, fold=args.fold, folds_dir=args.folds_dir)
    ds = ds.with_transform(EvalTransform(size))
    feats, fractions, masks, cams, labels = [], [], [], [], []
    # one pass gives the features (and the CAM when it is one view); more views: viewed_maps
    one_pass = [method] if method and args.teacher_views == "single" else []
    for i in range(len(ds)):
        s = ds[i]
        r = compute_maps(model, s.image[None], one_pass, target=[s.label])
        h, w = r.features.shape[-2:]
        feats.append(r.features[0])
        mask = s.mask.float()
        fractions.append(F.interpolate(mask[None, None], size=(h, w), mode="area")[0, 0])
        masks.append(mask)
        labels.append(int(s.label))
        if method:
            cam = (
                r.maps[method]
                if one_pass
                else viewed_maps(model, s.image[None], method, [s.label], args.teacher_views)
            )
            cams.append(F.interpolate(cam[None], size=(h, w), mode="area")[0, 0])
    return (torch.stack(feats), torch.stack(fractions), torch.stack(masks),
            torch.stack(cams) if cams else None, torch.tensor(labels))  # fmt: skip


def fit_probe(x: torch.Tensor, y: torch.Tensor) -> Any:
    """L2-regularised logistic regression (L-BFGS) on standardised features."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    lin = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=300, line_search_fn="strong_wolfe")
    xn = (x - mu) / sd

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (
            F.binary_cross_entropy_with_logits(lin(xn)[:, 0], y) + 1e-3 * lin.weight.square().sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: torch.sigmoid(lin((z - mu) / sd)[:, 0])


def pixels(f: torch.Tensor) -> torch.Tensor:
    return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])


def ceiling(model: Any, size: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """(probe PxAP, the teacher-free constant-map PxAP, feature side) on the eval split."""
    from pixelcam.metrics.pxap import pxap

    f_tr, m_tr, _, _, _ = collect(model, "train", size, args, None)
    f_ev, _, masks, _, _ = collect(model, args.split, size, args, None)
    probe = fit_probe(pixels(f_tr), (m_tr.flatten() > 0.5).float())
    with torch.no_grad():
        low = probe(pixels(f_ev)).reshape(f_ev.shape[0], *f_ev.shape[-2:])
    up = F.interpolate(low[:, None], size=masks.shape[-2:], mode="bilinear", align_corners=False)
    return pxap(up[:, 0].numpy(), masks.numpy()), 100 * float(masks.mean()), f_ev.shape[-1]


def seed_precision(model: Any, size: int, method: str, args: argparse.Namespace) -> list[str]:
    _, m_tr, _, cams, labels = collect(model, "train", size, args, method)
    return precision_rows(cams, m_tr, labels)


def precision_rows(cams: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """Table rows: for each q, the share of gland in each image's top-q CAM pixels and of
    non-gland in its bottom-q (pixels of all images pooled), with the gland fraction (what a
    random seed gets); then the same per image class (class index: its images only)."""
    c, m = cams.flatten(1), masks.flatten(1)
    groups = [("all", torch.ones_like(labels, dtype=torch.bool))]
    groups += [(f"class {k}", labels == k) for k in sorted(set(labels.tolist()))]
    rows = []
    for name, keep in groups:
        ck, mk = c[keep], m[keep]
        for q in (0.02, 0.05, 0.1, 0.2, 0.3):
            hi = ck >= torch.quantile(ck, 1 - q, dim=1, keepdim=True)
            lo = ck <= torch.quantile(ck, q, dim=1, keepdim=True)
            fg = float((mk * hi).sum() / hi.sum())
            bg = float(((1 - mk) * lo).sum() / lo.sum())
            rows.append(
                f"| {name} | {100 * q:.0f} % | {fg:.2f} | {bg:.2f} | {float(mk.mean()):.2f} |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--data-root", required=True)
    p.add_argument("--folds-dir", default=None)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--split", default="valcl")
    p.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[224, 448, 640],
        help="input sides of the linear probe (none: only the teacher's seeds)",
    )
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--output-stride", type=int, default=None)
    p.add_argument("--teacher", default=None, help="a baseline checkpoint: its seeds' precision")
    p.add_argument("--teacher-method", default="layercam")
    p.add_argument("--teacher-size", type=int, default=640, help="the teacher's eval size")
    p.add_argument(
        "--teacher-views",
        default="single",
        help="views the teacher's CAM is averaged over (pixelcam.cams.views)",
    )
    args = p.parse_args(argv)
    from pixelcam.models.checkpoint import load_checkpoint
    from pixelcam.models.model import build_model

    model = build_model(backbone=args.backbone, weights="imagenet",
                        output_stride=args.output_stride).eval()  # fmt: skip
    if args.sizes:
        print(f"| input side | features | linear probe PxAP ({args.split}, true masks) | "
              "constant |\n|---|---|---|---|")  # fmt: skip
    for size in args.sizes:
        probe, constant, side = ceiling(model, size, args)
        print(f"| {size} | {side}x{side} | {probe:.1f} | {constant:.1f} |", flush=True)
    if args.teacher:
        teacher, _ = load_checkpoint(args.teacher)
        size = args.teacher_size
        print(
            f"\nseeds of {args.teacher} ({args.teacher_method}, {size} px, "
            f"{args.teacher_views} views), train split:"
        )
        print("| images | q | top-q pixels in glands | bottom-q pixels outside | gland fraction |")
        print("|---|---|---|---|---|")
        print("\n".join(seed_precision(teacher, size, args.teacher_method, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
