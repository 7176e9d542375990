"""Phase ``baseline``: a WSOL classifier trained on image labels only (CAM, GradCAM++,
LayerCAM, DeepMIL or SAT, by its head)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixelcam.train.phases import Phase, StepLoss, register_phase, stride_option

if TYPE_CHECKING:
    import torch

    from pixelcam.models.model import ModelOutput, WSOLModel
    from pixelcam.train.runtime import Run


def image_loss(output: ModelOutput, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image classifier's loss: cross-entropy (plus SAT's regulariser for a SAT head);
    returns ``(loss, cross_entropy)``."""
    import torch.nn.functional as F

    cls_loss = F.cross_entropy(output.logits, labels)
    if output.sat_mean_activation is None:
        return cls_loss, cls_loss
    from pixelcam.models.heads import sat_regularization

    return cls_loss + sat_regularization(output), cls_loss


@register_phase
class Baseline(Phase):
    """WSOL classifier on image labels only."""

    name = "baseline"
    order = 0

    def build_model(self, num_classes: int) -> WSOLModel:
        from pixelcam.models import build_model

        cfg = self.config
        return build_model(
            cfg.backbone, num_classes=num_classes, head=cfg.head, pixel_head=None,
            weights=cfg.weights, **stride_option(cfg),
        )  # fmt: skip

    def loss(
        self, output: ModelOutput, batch: dict[str, Any], images: torch.Tensor, run: Run
    ) -> StepLoss:
        loss, cls_loss = image_loss(output, batch["label"].to(run.device))
        return StepLoss(loss, cls_loss, loss.new_zeros(()))
