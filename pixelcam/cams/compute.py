"""All maps of a batch from one backbone forward."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from pixelcam.cams.base import CAMMethod, get_method
from pixelcam.errors import InputError
from pixelcam.models.model import ModelOutput, WSOLModel


@dataclass
class MapResult:
    """What :func:`compute_maps` returns (ordinary tensors on the model's device, no grad).

    - ``maps``: method name -> ``[B, H, W]`` float32 maps in [0, 1].
    - ``logits`` ``[B, K]``, ``probs`` ``[B, K]`` (softmax), ``pred`` ``[B]`` (argmax).
    - ``target`` ``[B]``: the class the class-specific maps explain (``pred`` by default).
    - ``features`` ``[B, C, h, w]``: the last feature map (e.g. for separability/t-SNE).
    - ``pixel_probs`` ``[B, h, w]`` or None: PixelCAM FG probability at feature resolution.
    """

    maps: dict[str, torch.Tensor]
    logits: torch.Tensor
    probs: torch.Tensor
    pred: torch.Tensor
    target: torch.Tensor
    features: torch.Tensor
    pixel_probs: torch.Tensor | None = None


def _resolve_target(
    target: torch.Tensor | Sequence[int] | int | None, logits: torch.Tensor
) -> torch.Tensor:
    b, k = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, int) and not isinstance(target, bool):
        t = torch.full((b,), target, dtype=torch.long)
    else:
        t = torch.as_tensor(target).reshape(-1)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise InputError(f"target must hold integer class indices, got dtype {t.dtype}")
        t = t.long()
        if t.numel() == 1 and b != 1:
            t = t.expand(b)
    if t.numel() != b:
        raise InputError(f"target has {t.numel()} labels for a batch of {b} images")
    if bool(((t < 0) | (t >= k)).any()):
        raise InputError(f"target classes {t.tolist()} out of range for {k} classes")
    return t.to(logits.device)


def _resolve_size(size: int | tuple[int, int] | None, images: torch.Tensor) -> tuple[int, int]:
    if size is None:
        return int(images.shape[-2]), int(images.shape[-1])
    if isinstance(size, int):
        return size, size
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise InputError(f"size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


@contextlib.contextmanager
def _eval_mode(model: WSOLModel) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def resolve_methods(
    model: WSOLModel, methods: Sequence[str | CAMMethod], gradient: str = "auto"
) -> list[CAMMethod]:
    if isinstance(methods, (str, CAMMethod)):
        methods = [methods]
    out = []
    for m in methods:
        inst = get_method(m, gradient=gradient) if isinstance(m, str) else m
        if not inst.applies(model):
            raise InputError(
                f"map method {inst.name!r} (gradient={getattr(inst, 'gradient', None)!r}) does "
                f"not apply to a model with head {model.head.kind!r} and pixel head "
                f"{model.config.get('pixel_head')!r}"
            )
        out.append(inst)
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise InputError(f"map methods listed twice: {names}")
    return out


def compute_maps(
    model: WSOLModel,
    images: torch.Tensor,
    methods: Sequence[str | CAMMethod],
    target: torch.Tensor | Sequence[int] | int | None = None,
    size: int | tuple[int, int] | None = None,
    gradient: str = "auto",
) -> MapResult:
    """Maps of several methods for a batch, from ONE backbone forward.

    ``images`` ``[B, 3, H, W]`` (already normalised for the backbone); ``methods``: names
    (see :func:`available_methods`) or :class:`CAMMethod` instances; ``target``: class per
    image for class-specific maps (default: the predicted class); ``size``: output size
    (default: the image size); ``gradient``: ``"auto"``/``"closed_form"``/``"autograd"`` for
    GradCAM++ and LayerCAM.

    The model runs in eval mode (its mode is restored afterwards). When no method needs
    autograd everything runs under ``torch.inference_mode``; otherwise the backbone runs
    under ``no_grad`` and only the heads are differentiated (the gradient of a class score on
    the last feature map needs nothing below it).
    """
    if not torch.is_tensor(images) or images.ndim != 4:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise InputError(f"images must be a [B, C, H, W] tensor, got {shape}")
    insts = resolve_methods(model, methods, gradient)
    out_size = _resolve_size(size, images)
    need_grad = any(m.needs_autograd(model) for m in insts)
    with _eval_mode(model):
        if need_grad:
            with torch.no_grad():
                feats, extras = model.forward_features(images)
            with torch.enable_grad():
                feats = feats.detach().requires_grad_(True)
                output = model.forward_heads(feats, extras)
                result = _run(model, output, insts, target, out_size)
        else:
            with torch.inference_mode():
                output = model(images)
                result = _run(model, output, insts, target, out_size)
            result = _clone(result)
    return result


def _run(
    model: WSOLModel,
    output: ModelOutput,
    insts: list[CAMMethod],
    target: torch.Tensor | Sequence[int] | int | None,
    size: tuple[int, int],
) -> MapResult:
    logits = output.logits.detach().float()
    tgt = _resolve_target(target, logits)
    maps = {m.name: m.finalize(m.raw(model, output, tgt), size) for m in insts}
    pixel = None
    if output.pixel_logits is not None:
        pixel = torch.softmax(output.pixel_logits.detach().float(), dim=1)[:, 1]
    output.cache.clear()
    return MapResult(
        maps=maps,
        logits=logits,
        probs=torch.softmax(logits, dim=1),
        pred=logits.argmax(dim=1),
        target=tgt,
        features=output.features.detach(),
        pixel_probs=pixel,
    )


def _clone(r: MapResult) -> MapResult:
    """Inference tensors -> ordinary tensors (usable in place and in autograd later)."""
    return MapResult(
        maps={k: v.clone() for k, v in r.maps.items()},
        logits=r.logits.clone(),
        probs=r.probs.clone(),
        pred=r.pred.clone(),
        target=r.target.clone(),
        features=r.features.clone(),
        pixel_probs=None if r.pixel_probs is None else r.pixel_probs.clone(),
    )
