"""Phase ``negev`` (the two-step reference, Belharbi et al. 2022): a U-Net decoder over the
FROZEN teacher, trained on the same CAM seeds plus negative evidence and a colour-weighted
smoothness term (:mod:`pixelcam.train.losses`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelcam.errors import InputError
from pixelcam.train.phases import StepLoss, register_phase
from pixelcam.train.phases._seeded import SeededPhase
from pixelcam.train.phases.baseline import image_loss

if TYPE_CHECKING:
    import torch

    from pixelcam.data.dataset import WSOLDataset
    from pixelcam.models.model import ModelOutput, WSOLModel
    from pixelcam.train.runtime import Run


@register_phase
class NEGEV(SeededPhase):
    """NEGEV: a decoder over the frozen teacher, from its CAM seeds."""

    name = "negev"
    order = 2
    own_map = "negev"
    trains_classifier = False  # frozen: no accuracy guard in B-LOC
    new_module = "decoder"
    misfit_message = "cannot build NEGEV over {init}: weights do not fit"
    negative: int | None = None

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        if not (cfg.smooth_weight >= 0 and cfg.smooth_sigma > 0):
            raise InputError(
                "invalid training configuration: smooth_weight must be >= 0 and smooth_sigma "
                f"> 0 (got {cfg.smooth_weight}, {cfg.smooth_sigma})"
            )

    def check_teacher(self, teacher: WSOLModel, init: Path) -> None:
        if teacher.decoder is not None:
            raise InputError(f"{init} already has a decoder: NEGEV starts from a WSOL baseline")

    def build_model(self, num_classes: int) -> WSOLModel:
        width = self.config.decoder_width
        return self.from_teacher(
            num_classes, decoder="negev", decoder_channels=width, freeze_encoder=True
        )

    def prepare(self, run: Run, train_ds: WSOLDataset) -> None:
        self.negative = negative_class(self.config, train_ds.class_names)
        if self.negative is not None:
            name = train_ds.class_names[self.negative]
            run.log.emit(
                "log", message=f"negative evidence: every pixel of class {name!r} images "
                "is background",
            )  # fmt: skip
        super().prepare(run, train_ds)

    def loss(
        self, output: ModelOutput, batch: dict[str, Any], images: torch.Tensor, run: Run
    ) -> StepLoss:
        from pixelcam.train import losses

        _, cls_loss = image_loss(output, batch["label"].to(run.device))
        logits = output.seg_logits
        loss = losses.seed_ce(logits, self.seeds(batch, run))
        if self.negative is not None:
            is_negative = batch["label"].to(run.device) == self.negative
            loss = loss + losses.negative_evidence_ce(logits, is_negative)
        cfg = self.config
        if cfg.smooth_weight > 0:
            import torch

            fg = torch.softmax(logits.float(), dim=1)[:, 1]
            rgb = losses.denormalize_batch(images)
            loss = loss + cfg.smooth_weight * losses.potts_smoothness(fg, rgb, cfg.smooth_sigma)
        loss = with_sat_regularization(loss, output)
        return StepLoss(loss, cls_loss.detach(), loss)


def with_sat_regularization(loss: torch.Tensor, output: ModelOutput) -> torch.Tensor:
    """``loss`` plus SAT's regulariser when the model has a SAT head."""
    if output.sat_mean_activation is None:
        return loss
    from pixelcam.models.heads import sat_regularization

    return loss + sat_regularization(output)


def negative_class(config: Any, class_names: Any) -> int | None:
    """Index of the class whose images hold no foreground (NEGEV's negative evidence):
    ``auto`` = CAMELYON16's ``normal``, none elsewhere (GlaS benign images have glands)."""
    name = config.negative_class
    if name == "none" or (name == "auto" and config.dataset != "camelyon16"):
        return None
    if name == "auto":
        name = "normal"
    if name not in class_names:
        raise InputError(
            f"negative class {name!r} is not a class of the dataset ({', '.join(class_names)})"
        )
    return list(class_names).index(name)
