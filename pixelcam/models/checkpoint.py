"""Checkpoints: ``<stem>.safetensors`` (weights) + ``<stem>.json`` (config, meta, versions).

Both files are written atomically (temporary file in the same folder + ``os.replace``), the
json last, and the json records the SHA-256 of the weights file, so a reader never pairs a
json with weights from another save. Loading never unpickles anything.

json layout::

    {"format": "pixelcam-checkpoint", "format_version": 1,
     "config": {...build_model arguments...},
     "meta": {...caller's meta: class names, metrics, "mpp": training pixel size in
              micrometres or null (absent before it was recorded: unknown; read with
              pixelcam.slide.mpp.model_mpp, which imports no torch)...},
     "versions": {"pixelcam": ..., "torch": ..., "timm": ...},
     "weights": {"file": "<stem>.safetensors", "sha256": ..., "num_tensors": N}}
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from pixelcam.errors import CheckpointError
from pixelcam.fileio import OutputError, atomic_write
from pixelcam.models.model import WSOLModel, build_model

FORMAT = "pixelcam-checkpoint"
FORMAT_VERSION = 1
#: config keys that define the architecture; all must agree to load weights into a model
#: (``timm_kwargs`` such as ``drop_path_rate`` may differ: tensor shapes are checked anyway)
ARCH_KEYS = (
    "backbone", "num_classes", "head", "pixel_head", "wsol_stride", "head_kwargs", "decoder",
    "decoder_channels",
)  # fmt: skip


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)`` for a stem or either file's path."""
    p = Path(path)
    name = p.name
    for suffix in (".safetensors", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not name:
        raise CheckpointError(f"not a checkpoint path: {p}")
    return p.with_name(name + ".safetensors"), p.with_name(name + ".json")


def _versions() -> dict[str, str]:
    import timm

    import pixelcam

    return {
        "pixelcam": getattr(pixelcam, "__version__", "unknown"),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (checkpoints and their provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    model: WSOLModel, path: str | os.PathLike[str], meta: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` then ``<stem>.json``; returns both paths.

    ``meta`` must be JSON-serialisable (class names, metrics, epoch...). A file-system
    refusal (disk full, read-only folder) raises :class:`~pixelcam.fileio.OutputError`.
    """
    weights_path, json_path = checkpoint_paths(path)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config,
        "meta": dict(meta or {}),
        "versions": _versions(),
    }
    try:
        json.dumps(doc, indent=2, sort_keys=True)  # fail before writing anything
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {json_path}: meta/config not JSON-able: {exc}") from exc
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        _write_pair(tensors, doc, weights_path, json_path)
    except OSError as exc:  # full disk, read-only folder...: one line naming the checkpoint
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OutputError(
            f"cannot write checkpoint {weights_path}: {reason}", exc.errno, str(weights_path)
        ) from exc
    return weights_path, json_path


def _write_pair(
    tensors: dict[str, torch.Tensor], doc: dict[str, Any], weights_path: Path, json_path: Path
) -> None:
    from safetensors.torch import save_file

    weights_path.parent.mkdir(parents=True, exist_ok=True)
    # Overwriting a pair: the old weights stay (as <prev>) until the new json is in place, so
    # a kill between the two files leaves the old json next to weights that match it.
    staged = weights_path.with_name(f".{weights_path.name}.new")
    atomic_write(staged, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    doc["weights"] = {
        "file": weights_path.name,
        "sha256": file_sha256(staged),
        "num_tensors": len(tensors),
    }
    prev = _previous(weights_path)
    if weights_path.exists():
        os.replace(weights_path, prev)
    os.replace(staged, weights_path)
    text = json.dumps(doc, indent=2, sort_keys=True)

    def write_json(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")

    atomic_write(json_path, write_json)
    prev.unlink(missing_ok=True)


def _previous(weights_path: Path) -> Path:
    """Where :func:`save_checkpoint` keeps the old weights while it replaces a pair."""
    return weights_path.with_name(f".{weights_path.name}.prev")


def read_checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's json document, validated (no weights read)."""
    _, json_path = checkpoint_paths(path)
    if not json_path.is_file():
        raise CheckpointError(f"checkpoint json not found: {json_path}")
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # a 5000-digit
        # number is a ValueError, nesting too deep a RecursionError: both are bad JSON here
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise CheckpointError(f"checkpoint json {json_path} is not valid JSON: {reason}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a pixelcam checkpoint (no format {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path}: checkpoint format version {doc.get('format_version')!r} is not "
            f"supported (expected {FORMAT_VERSION})"
        )
    config = doc.get("config")
    if not isinstance(config, dict) or any(k not in config for k in ARCH_KEYS[:5]):
        raise CheckpointError(f"{json_path}: missing or incomplete 'config'")
    _check_config_values(config, json_path)
    if not isinstance(doc.get("meta", {}), dict) or not isinstance(doc.get("weights"), dict):
        raise CheckpointError(f"{json_path}: 'meta' or 'weights' entry is malformed")
    return doc


#: The most classes a checkpoint may declare (a larger count is a broken file, and would
#: allocate its classifier before the weights are read).
MAX_CLASSES = 100_000


def _check_config_values(config: dict[str, Any], json_path: Path) -> None:
    """Types and ranges of the architecture keys, checked before a model is built."""
    n = config.get("num_classes")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CLASSES:
        raise CheckpointError(
            f"{json_path}: 'num_classes' must be an integer in 1..{MAX_CLASSES}, got {n!r}"
        )
    for key in ("backbone", "head"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise CheckpointError(f"{json_path}: {key!r} must be a name, got {config.get(key)!r}")
    if not isinstance(config.get("pixel_head"), (str, type(None))):
        raise CheckpointError(
            f"{json_path}: 'pixel_head' must be a name or null, got {config.get('pixel_head')!r}"
        )
    for key, limit in (("decoder_channels", 4096), ("head_kwargs", 65536), ("timm_kwargs", 65536)):
        if not _ints_within(config.get(key), limit):  # a layer that size: a broken file
            raise CheckpointError(
                f"{json_path}: {key!r} holds a number out of range (above {limit}): "
                f"{str(config.get(key))[:80]}"
            )


def _ints_within(value: Any, limit: int) -> bool:
    if isinstance(value, dict):
        return all(_ints_within(v, limit) for v in value.values())
    if isinstance(value, list):
        return len(value) <= 64 and all(_ints_within(v, limit) for v in value)
    return isinstance(value, bool) or not isinstance(value, int) or abs(value) <= limit


def _read_weights(path: str | os.PathLike[str], doc: dict[str, Any]) -> dict[str, torch.Tensor]:
    weights_path, json_path = checkpoint_paths(path)
    expected = doc["weights"].get("sha256")
    prev = _previous(weights_path)
    if expected and prev.is_file() and file_sha256(prev) == expected:
        weights_path = prev  # a save was killed before its json: the old pair is complete
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights_path}")
    if expected and file_sha256(weights_path) != expected:
        raise CheckpointError(
            f"checkpoint weights {weights_path} do not match {json_path.name} (SHA-256 differs: "
            "corrupt, truncated, or from another save)"
        )
    from safetensors.torch import load_file

    try:
        return load_file(str(weights_path))
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint weights {weights_path}: {exc}") from exc


def _check_expect(config: dict[str, Any], expect: dict[str, Any] | None, where: Path) -> None:
    for key, want in (expect or {}).items():
        found = config.get(key, "<absent>")
        if found != want:
            raise CheckpointError(
                f"checkpoint {where} was made for {key}={found!r}, expected {key}={want!r}"
            )


def _load_tensors(model: WSOLModel, state: dict[str, torch.Tensor], where: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"checkpoint weights {where} do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatches {bad[:5]}"
        )
    check_finite(state, f"checkpoint weights {where}")
    model.load_state_dict(state, strict=True)


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or infinity (a diverged run): their maps would be NaN,
    shown as zeros, and their predictions meaningless."""
    broken = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if broken:
        raise CheckpointError(
            f"{what} hold non-finite values (NaN or infinity) in {len(broken)} of "
            f"{len(state)} tensors (e.g. {broken[0]}): the run that saved them diverged; use "
            "an earlier checkpoint (best_cl, best_loc) or train again with a lower lr"
        )


def _meta(doc: dict[str, Any]) -> dict[str, Any]:
    meta = dict(doc.get("meta", {}))
    meta.setdefault("versions", doc.get("versions", {}))
    return meta


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    expect: dict[str, Any] | None = None,
) -> tuple[WSOLModel, dict[str, Any]]:
    """Rebuild the model from ``<stem>.json`` and load ``<stem>.safetensors``.

    ``path``: the stem or either file. ``expect``: config values the checkpoint must have
    (e.g. ``{"num_classes": 3, "backbone": "resnet50"}``), else :class:`CheckpointError`.
    Returns ``(model in eval mode on device, meta)`` where ``meta`` is the saved meta plus
    ``versions`` (pixelcam/torch/timm at save time).
    """
    weights_path, json_path = checkpoint_paths(path)
    doc = read_checkpoint_info(path)
    config = doc["config"]
    _check_expect(config, expect, json_path)
    try:
        model = build_model(**config)
    except Exception as exc:
        raise CheckpointError(f"cannot rebuild the model of {json_path}: {exc}") from exc
    _load_tensors(model, _read_weights(path, doc), weights_path)
    model.to(device).eval()
    return model, _meta(doc)


def checkpoint_eval_size(meta: dict[str, Any], default: int = 224) -> int:
    """The input side a checkpoint was validated at (its meta ``eval_size``): the scale its
    maps are meant to be computed at; ``default`` for older checkpoints without one."""
    size = meta.get("eval_size")
    valid = isinstance(size, int) and not isinstance(size, bool) and size > 0
    return int(size) if valid else default


def load_state_into(model: WSOLModel, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint's weights into an existing model of the same architecture.

    Raises :class:`CheckpointError` naming the expected (the model's) and found (the
    checkpoint's) values when any architecture key differs. Returns the meta.
    """
    weights_path, json_path = checkpoint_paths(path)
    doc = read_checkpoint_info(path)
    found = doc["config"]
    mine = model.config
    diffs = [
        f"{k}: expected {mine.get(k)!r}, found {found.get(k)!r}"
        for k in ARCH_KEYS
        if _norm(k, mine.get(k)) != _norm(k, found.get(k))
    ]
    if diffs:
        raise CheckpointError(f"checkpoint {json_path} is for another model: " + "; ".join(diffs))
    state = _read_weights(path, doc)
    device = next(model.parameters()).device
    _load_tensors(model, {k: v.to(device) for k, v in state.items()}, weights_path)
    return _meta(doc)


def _norm(key: str, value: Any) -> Any:
    if value is None and key == "head_kwargs":
        return {}
    return json.loads(json.dumps(value))
