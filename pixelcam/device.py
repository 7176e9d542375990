"""Device choice: the registry of devices and :func:`resolve_device`. Imports no training
code (the plugin, the slide engine and the CLI all resolve devices) and torch only when a
device is resolved."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pixelcam.errors import InputError
from pixelcam.registry import Registry

if TYPE_CHECKING:
    import torch

#: name -> a function saying whether that device can be used here
DEVICES: Registry[Callable[[], bool]] = Registry("device")


@DEVICES.register("auto", help="CUDA, then Apple MPS, then the CPU")
def _auto() -> bool:
    return True


@DEVICES.register("cpu", help="the CPU")
def _cpu() -> bool:
    return True


@DEVICES.register("cuda", help="an NVIDIA GPU")
def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@DEVICES.register("mps", help="Apple silicon GPU")
def mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable choice is an error.

    Args:
        name: a registered device name, or a torch device string such as ``cuda:1``.
    """
    import torch

    if name == "auto":
        for candidate in ("cuda", "mps"):
            if DEVICES.get(candidate)():
                return torch.device(candidate)
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind in DEVICES and not DEVICES.get(kind)():
        hint = " (try --device auto)" if kind == "cuda" else ""
        label = "CUDA" if kind == "cuda" else "Apple MPS"
        raise InputError(f"device {name!r} requested but {label} is not available{hint}")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r}; available: {', '.join(DEVICES)}") from exc
