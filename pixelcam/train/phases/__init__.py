"""Training phases: one module per method, each a :class:`Phase` registered by name.

A phase says how its model is built, what its training set yields, what the loss of a
batch is, which map B-LOC selection scores, and whether the accuracy guard applies. The
training loop (:mod:`pixelcam.train.loop`) never names a phase. Importing this package
imports no torch (views list the phases cheaply); a phase's work imports what it needs.

Adding a phase is one new module here with a :func:`register_phase` class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pixelcam.registry import Registry

if TYPE_CHECKING:
    import torch

    from pixelcam.data.dataset import WSOLDataset
    from pixelcam.models.model import ModelOutput, WSOLModel
    from pixelcam.train.config import TrainConfig
    from pixelcam.train.runtime import Run


#: the checkpoints a run folder holds, by selection rule (also the teacher choices)
RUN_CHECKPOINTS = ("best_loc", "best_cl", "last")


@dataclass
class StepLoss:
    """The loss of one batch and its parts (for the events and the history)."""

    loss: torch.Tensor
    cls_loss: torch.Tensor
    pixel_loss: torch.Tensor


class Phase:
    """One training method. Subclasses set the class facts and override what differs.

    ``needs_teacher``: learns from a teacher run's CAM seeds (``config.teacher`` required).
    ``trains_classifier``: the image classifier is trained, so B-LOC's accuracy guard
    applies (NEGEV freezes it, the U-Net has none). ``trains_pixel_head``: the model has
    PixelCAM's pixel head (its options: lambda, pixel head, positive only).
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    trains_classifier: ClassVar[bool] = True
    trains_pixel_head: ClassVar[bool] = False
    #: the phase's own map, scored for B-LOC (None: the config's baseline map)
    own_map: ClassVar[str | None] = None

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def check_config(self) -> None:
        """Phase-specific configuration checks (raise :class:`InputError`)."""
        if self.needs_teacher and not self.config.teacher:
            from pixelcam.errors import InputError

            raise InputError(
                f"invalid training configuration: phase {self.name!r} needs a teacher "
                "(a baseline run folder or checkpoint)"
            )

    def map_method(self) -> str:
        """The map B-LOC selection scores (``config.eval_method`` overrides)."""
        cfg = self.config
        if cfg.eval_method:
            return cfg.eval_method
        if self.own_map:
            return self.own_map
        return {"deepmil": "deepmil", "sat": "sat"}.get(cfg.head, cfg.teacher_method)

    def build_model(self, num_classes: int) -> WSOLModel:
        raise NotImplementedError

    def prepare(self, run: Run, train_ds: WSOLDataset) -> None:
        """Checks and caches before epoch 1 (teacher CAMs, dataset requirements)."""

    def training_set(self, run: Run, train_ds: WSOLDataset, transform: Any) -> Any:
        """What the loader iterates: by default images, labels and the user's points."""
        from pixelcam.train.datasets import TrainingView

        return TrainingView(train_ds, transform, None, run.annotations, self.config.resize)

    def loss(
        self, output: ModelOutput, batch: dict[str, Any], images: torch.Tensor, run: Run
    ) -> StepLoss:
        raise NotImplementedError


def stride_option(config: TrainConfig) -> dict[str, Any]:
    """``build_model`` keywords for the configured output stride (none when unset)."""
    return {} if config.output_stride is None else {"output_stride": int(config.output_stride)}


#: every training phase by name; the modules of this package register on first listing
PHASES: Registry[type[Phase]] = Registry("phase", package=__name__)


def register_phase(cls: type[Phase]) -> type[Phase]:
    """Class decorator: make ``cls`` a training phase under ``cls.name``."""
    doc = (cls.__doc__ or "").strip().splitlines()
    return PHASES.register(
        cls.name,
        order=cls.__dict__.get("order"),
        help=doc[0] if doc else "",
        needs_teacher=cls.needs_teacher,
        pixel_head=cls.trains_pixel_head,
    )(cls)


def get_phase(config: TrainConfig) -> Phase:
    """The phase object of ``config.phase``."""
    return PHASES.get(config.phase)(config)
