"""Training configuration: one flat, JSON-able dataclass shared by the CLI, the trainer
dock and the Python API, validated before anything expensive starts."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pixelcam.errors import InputError
from pixelcam.train.phases import PHASES, RUN_CHECKPOINTS, get_phase
from pixelcam.validation import MAX_WORKERS, check_count, check_input_size, is_random_init


@dataclass
class TrainConfig:
    """Everything a run needs. ``out`` is the run folder (checkpoints, events, caches).

    Phase ``baseline`` trains a WSOL classifier on image labels only. Phase ``pixelcam``
    needs ``teacher`` (a baseline run folder or checkpoint): its ``teacher_method`` CAMs
    are cached once and sampled into FG/BG seeds every step; the network starts from the
    teacher's B-CL weights (``init``) as in the authors' code.

    Phase ``negev`` (the two-step reference) adds a U-Net decoder over the FROZEN teacher
    (its B-CL weights by default): only the decoder learns, from the same seeds plus
    negative evidence (every pixel of a ``negative_class`` image is background) and a
    colour-weighted smoothness term (``smooth_weight``, ``smooth_sigma``; see
    :mod:`pixelcam.train.losses`). Phase ``unet`` (the fully supervised reference) trains
    ``backbone`` + decoder on the training MASKS (cross-entropy + Dice). ``decoder_width``:
    the first decoder block's width (halved per block; 256 is the paper-sized decoder).

    ``weights``: None, ``""`` or ``"none"`` (random init), ``"imagenet"`` or a file.
    Before epoch 0 every training image is decoded once (splits of at most
    :data:`~pixelcam.train.datasets.CHECK_LIMIT` images): an unreadable one stops the run
    there, naming it, or with ``skip_unreadable`` is left out with a warning and a count.
    Sizes, counts and thresholds follow :mod:`pixelcam.validation`.

    ``mpp``: the pixel size of the training images in micrometres per pixel (None: unknown).
    Every checkpoint records it (meta ``"mpp"``), so that inference on slides can read them
    at the scale the model was trained at (:mod:`pixelcam.slide.mpp`).
    """

    out: str
    dataset: str = "synthetic"
    data_root: str = ""
    fold: int | None = 0
    folds_dir: str | None = None
    train_split: str = "train"
    valcl_split: str = "valcl"
    valpx_split: str = "valpx"
    missing: str = "error"
    phase: str = "baseline"
    backbone: str = "resnet18"
    #: timm output stride (8, 16, 32) of a CNN backbone: finer maps; None: the backbone's
    output_stride: int | None = None
    weights: str | None = None
    head: str = "gap"
    pixel_head: str = "linear"
    teacher: str | None = None
    teacher_method: str = "layercam"
    teacher_checkpoint: str = "best_loc"
    #: views the teacher CAMs are averaged over (:data:`pixelcam.cams.views.VIEWS`)
    teacher_views: str = "single"
    init: str | None = None
    eval_method: str | None = None
    lam: float = 1.0
    n: int = 5
    sampler: str = "probability"
    bg_fraction: float = 0.2
    positive_only: bool = False
    annotations: str | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    head_lr_mult: float = 10.0
    lr_step: int | None = None
    lr_gamma: float = 0.1
    resize: int = 256
    crop: int = 224
    eval_size: int = 224
    color_jitter: bool = True
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    num_workers: int = 0
    select_margin: float = 10.0
    synthetic_n_per_class: int = 40
    synthetic_size: int = 256
    negative_class: str = "auto"
    smooth_weight: float = 1.0
    smooth_sigma: float = 0.06
    decoder_width: int = 256
    skip_unreadable: bool = False
    mpp: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        def bad(msg: str) -> InputError:
            return InputError(f"invalid training configuration: {msg}")

        if not self.out:
            raise bad("an output folder (out) is required")
        self._check_choices(bad)
        if self.dataset != "synthetic" and not self.data_root:
            raise bad(f"dataset {self.dataset!r} needs data_root")
        if is_random_init(self.weights):
            self.weights = None  # "" and "none" mean random init, as None
        self._check_numbers(bad)
        if not 0 < self.bg_fraction <= 1:
            raise bad(f"bg_fraction must be in (0, 1], got {self.bg_fraction}")
        if self.crop > self.resize:
            raise bad(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        if self.teacher_checkpoint not in RUN_CHECKPOINTS:
            raise bad(f"teacher_checkpoint must be one of {', '.join(RUN_CHECKPOINTS)}")
        get_phase(self).check_config()
        return self

    def _check_numbers(self, bad: Callable[[str], InputError]) -> None:
        """Counts, sizes and rates in their ranges (:mod:`pixelcam.validation`)."""
        if not 8 <= int(self.decoder_width) <= 4096:
            raise bad(f"decoder_width must be in 8..4096, got {self.decoder_width}")
        limits = {"epochs": (1, 100000), "batch_size": (1, None), "n": (1, None),
                  "num_workers": (0, MAX_WORKERS), "seed": (0, 2**32 - 1),
                  "synthetic_n_per_class": (1, None)}  # fmt: skip
        if self.lr_step is not None:
            limits["lr_step"] = (1, None)
        try:
            for name, (low, high) in limits.items():
                check_count(getattr(self, name), name, low, high)
            for name in ("resize", "crop", "eval_size"):
                check_input_size(getattr(self, name), name)
            check_input_size(self.synthetic_size, "synthetic_size")
        except InputError as exc:
            raise bad(str(exc)) from None
        if self.mpp is not None and not (math.isfinite(self.mpp) and 0 < self.mpp <= 1000):
            raise bad(f"mpp must be a positive number of micrometres per pixel, got {self.mpp}")
        if not (self.lam >= 0 and self.lr > 0):
            raise bad(f"lam must be >= 0 and lr > 0 (got lam={self.lam}, lr={self.lr})")
        rates = {"momentum": self.momentum, "weight_decay": self.weight_decay,
                 "head_lr_mult": self.head_lr_mult, "lr_gamma": self.lr_gamma,
                 "select_margin": self.select_margin}  # fmt: skip
        for name, value in rates.items():
            if not (math.isfinite(value) and value >= 0):
                raise bad(f"{name} must be a finite number >= 0, got {value}")

    def _check_choices(self, bad: Callable[[str], InputError]) -> None:
        """Every named choice is registered; aliases become names (``pb`` -> probability)."""
        from pixelcam.cams.views import VIEWS
        from pixelcam.data import DATASETS
        from pixelcam.device import DEVICES
        from pixelcam.pseudo_labels import SAMPLERS

        for key, registry in (("phase", PHASES), ("dataset", DATASETS), ("device", DEVICES),
                              ("sampler", SAMPLERS), ("teacher_views", VIEWS)):  # fmt: skip
            value = getattr(self, key)
            if value not in registry:
                raise bad(f"{key} must be one of {tuple(registry.names())}, got {value!r}")
            setattr(self, key, registry.canonical(value))

    @property
    def map_method(self) -> str:
        """The map evaluated for B-LOC selection: the phase's own, or the baseline's."""
        return get_phase(self).map_method()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from (untrusted) JSON data: unknown keys and wrong types are refused;
        ranges are checked by :meth:`validate`."""
        if not isinstance(data, dict):
            raise InputError(
                f"a training configuration is a JSON object, got {type(data).__name__}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise InputError(f"unknown training configuration keys: {', '.join(unknown)}")
        for key, value in data.items():
            annotation = str(fields[key].type)
            if not _type_ok(value, annotation):
                raise InputError(
                    f"training configuration key {key!r} must be {annotation}, got {value!r}"
                )
        return cls(**data)


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "None": (type(None),),
    "dict[str, Any]": (dict,),
}


def _type_ok(value: Any, annotation: str) -> bool:
    for part in (p.strip() for p in annotation.split("|")):
        kinds = _TYPES.get(part)
        if kinds is None:
            return True  # a type not listed here is not checked
        if isinstance(value, bool) and part in ("int", "float"):
            continue
        if isinstance(value, kinds):
            return True
    return False
