"""Resumable training state (optimizer, scheduler, epoch, history) as safetensors + JSON.

Optimizer state dicts nest tensors in dicts; they are flattened to ``state.<param>.<key>``
tensors (safetensors) and a JSON skeleton, so resuming never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pixelcam.errors import CheckpointError
from pixelcam.fileio import atomic_write, atomic_write_text


def save_training_state(path: Path, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    """``<path>.safetensors`` (optimizer tensors) then ``<path>.json`` (the rest), atomically."""
    from safetensors.torch import save_file

    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    skeleton: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        skeleton[str(pid)] = {}
        for key, value in st.items():
            if torch.is_tensor(value):
                name = f"state.{pid}.{key}"
                tensors[name] = value.detach().cpu().contiguous()
                skeleton[str(pid)][key] = {"tensor": name}
            else:
                skeleton[str(pid)][key] = {"value": value}
    atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(tensors, tmp))
    doc = {"optimizer": {"state": skeleton, "param_groups": opt["param_groups"]}, **info}
    atomic_write_text(path.with_suffix(".json"), json.dumps(doc, indent=1))


def load_training_state(path: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore ``optimizer`` from :func:`save_training_state` files; return the info dict."""
    from safetensors.torch import load_file

    try:
        doc = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        tensors = load_file(str(path.with_suffix(".safetensors")))
        state = {}
        for pid, entries in doc["optimizer"]["state"].items():
            state[int(pid)] = {
                k: tensors[v["tensor"]] if "tensor" in v else v["value"] for k, v in entries.items()
            }
        optimizer.load_state_dict(
            {"state": state, "param_groups": doc["optimizer"]["param_groups"]}
        )
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot resume from training state {path}: {exc}") from exc
    doc.pop("optimizer")
    return doc
