"""Phase ``unet`` (the fully supervised reference): backbone + U-Net decoder trained on the
training MASKS with cross-entropy + Dice. Its image head is never trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixelcam.errors import InputError
from pixelcam.train.phases import Phase, StepLoss, register_phase, stride_option
from pixelcam.train.phases.baseline import image_loss
from pixelcam.train.phases.negev import with_sat_regularization

if TYPE_CHECKING:
    import torch

    from pixelcam.data.dataset import WSOLDataset
    from pixelcam.models.model import ModelOutput, WSOLModel
    from pixelcam.train.runtime import Run


@register_phase
class UNet(Phase):
    """Fully supervised U-Net on the masks (the upper bound)."""

    name = "unet"
    order = 3
    own_map = "unet"
    trains_classifier = False  # no classifier: no accuracy guard in B-LOC

    def build_model(self, num_classes: int) -> WSOLModel:
        from pixelcam.models import build_model

        cfg = self.config
        return build_model(
            cfg.backbone, num_classes=num_classes, head="gap", pixel_head=None,
            weights=cfg.weights, decoder="unet", decoder_channels=cfg.decoder_width,
            **stride_option(cfg),
        )  # fmt: skip

    def prepare(self, run: Run, train_ds: WSOLDataset) -> None:
        unknown = [r.id for r in train_ds.records if not r.mask_known]
        if unknown:
            raise InputError(
                f"phase 'unet' trains on masks, but {len(unknown)} of {len(train_ds)} training "
                f"images have none (e.g. {unknown[0]!r})"
            )

    def training_set(self, run: Run, train_ds: WSOLDataset, transform: Any) -> Any:
        return train_ds.with_transform(transform)  # the mask slot holds the ground truth

    def loss(
        self, output: ModelOutput, batch: dict[str, Any], images: torch.Tensor, run: Run
    ) -> StepLoss:
        from pixelcam.train.losses import segmentation_loss

        _, cls_loss = image_loss(output, batch["label"].to(run.device))
        loss = segmentation_loss(output.seg_logits, batch["mask"].to(run.device))
        loss = with_sat_regularization(loss, output)
        return StepLoss(loss, cls_loss.detach(), loss)
