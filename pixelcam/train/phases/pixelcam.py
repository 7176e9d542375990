"""Phase ``pixelcam``: the image classifier and a pixel FG/BG head trained jointly, the
pixel head on seeds sampled from the teacher's CAMs (loss = CE + lambda * partial CE).
The network starts from the teacher's B-CL weights, as in the authors' code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixelcam.train.phases import StepLoss, register_phase, stride_option
from pixelcam.train.phases._seeded import SeededPhase
from pixelcam.train.phases.baseline import image_loss

if TYPE_CHECKING:
    import torch

    from pixelcam.models.model import ModelOutput, WSOLModel
    from pixelcam.train.runtime import Run


@register_phase
class PixelCAM(SeededPhase):
    """PixelCAM: pixel head on the teacher's CAM seeds, trained with the classifier."""

    name = "pixelcam"
    order = 1
    own_map = "pixelcam"
    trains_pixel_head = True
    new_module = "pixel_head"
    misfit_message = "cannot initialise PixelCAM from {init}: weights do not fit"

    def build_model(self, num_classes: int) -> WSOLModel:
        # --output-stride, when given, refines the student's features below the teacher's
        # (dilation changes no weight shape, so the teacher's weights still fit)
        return self.from_teacher(
            num_classes, pixel_head=self.config.pixel_head, **stride_option(self.config)
        )

    def loss(
        self, output: ModelOutput, batch: dict[str, Any], images: torch.Tensor, run: Run
    ) -> StepLoss:
        from pixelcam.pseudo_labels import IGNORE
        from pixelcam.train.losses import pixel_seed_loss

        loss, cls_loss = image_loss(output, batch["label"].to(run.device))
        pix_loss = loss.new_zeros(())
        if self.config.lam > 0:
            seeds = self.seeds(batch, run)
            if (seeds != IGNORE).any():  # no seed: the pixel head gets no gradient
                pix_loss = pixel_seed_loss(output.pixel_logits, seeds)
                loss = loss + self.config.lam * pix_loss
        return StepLoss(loss, cls_loss, pix_loss)
