"""What the phases that learn from a teacher's CAM seeds share (PixelCAM and NEGEV): the
teacher checkpoint, the cached teacher CAMs, the per-step seed draw, and starting the
network from the teacher's weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelcam.errors import InputError
from pixelcam.train.phases import Phase

if TYPE_CHECKING:
    import torch

    from pixelcam.data.dataset import WSOLDataset
    from pixelcam.models.model import WSOLModel
    from pixelcam.train.config import TrainConfig
    from pixelcam.train.runtime import Run


def teacher_checkpoint(config: TrainConfig, which: str) -> Path:
    """A teacher given as a run folder resolves to its ``which`` checkpoint."""
    t = Path(config.teacher or "")
    if t.is_dir():
        cand = t / f"{which}.json"
        if not cand.exists():
            raise InputError(f"teacher run {t} has no {which} checkpoint ({cand} is missing)")
        return cand
    from pixelcam.models.checkpoint import checkpoint_paths

    json_path = checkpoint_paths(t)[1]
    if not json_path.is_file():
        raise InputError(
            f"teacher {t} is neither a run folder nor a checkpoint ({json_path} is missing)"
        )
    return t


def draw_seeds(
    batch: dict[str, Any], config: TrainConfig, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """FG/BG seeds sampled from the batch's teacher CAMs where ``gen`` lives, with the
    user's points on top, on ``device``."""
    import torch

    from pixelcam.errors import TrainingError
    from pixelcam.pseudo_labels import IGNORE, sample_seeds

    cams = batch["cam"]
    if cams is None:
        raise TrainingError(f"phase {config.phase} without teacher CAMs in the batch")
    cams = cams.to(gen.device, non_blocking=True)
    eligible = batch["label"].to(gen.device) > 0 if config.positive_only else None
    seeds = sample_seeds(
        cams, n=config.n, sampler=config.sampler, bg_fraction=config.bg_fraction,
        eligible=eligible, generator=gen,
    )  # fmt: skip
    points = batch["mask"].to(seeds.device)  # TrainingView: user points (255 elsewhere), never GT
    seeds = torch.where(points != IGNORE, points.long(), seeds)
    return seeds.to(device)


class SeededPhase(Phase):
    """A phase trained on seeds drawn every step from a teacher's cached CAMs."""

    needs_teacher = True
    cams: Any = None

    def from_teacher(self, num_classes: int, **changes: Any) -> WSOLModel:
        """A model with the teacher's (B-CL, or ``config.init``) architecture plus
        ``changes``, carrying the teacher's weights (only ``new_module`` starts fresh)."""
        from pixelcam.models import build_model, load_checkpoint

        cfg = self.config
        init = Path(cfg.init) if cfg.init else teacher_checkpoint(cfg, "best_cl")
        teacher, _ = load_checkpoint(init, expect={"num_classes": num_classes})
        self.check_teacher(teacher, init)
        model = build_model(**{**teacher.config, **changes})
        missing, unexpected = model.load_state_dict(teacher.state_dict(), strict=False)
        new = f"{self.new_module}."
        if unexpected or any(not k.startswith(new) for k in missing):
            raise InputError(self.misfit_message.format(init=init))
        return model

    #: the module a phase adds to the teacher (its weights are the only ones missing)
    new_module: str = ""
    misfit_message: str = "cannot start from {init}: weights do not fit"

    def check_teacher(self, teacher: WSOLModel, init: Path) -> None:
        """Refuse a teacher this phase cannot start from."""

    def prepare(self, run: Run, train_ds: WSOLDataset) -> None:
        from pixelcam.train.teacher import cached_teacher_cams

        cfg = self.config
        ckpt = teacher_checkpoint(cfg, cfg.teacher_checkpoint)
        self.cams = run.dist.main_first(  # rank 0 computes and writes the cache
            lambda: cached_teacher_cams(
                ckpt, train_ds, cfg.teacher_method, run.out, run.device,
                size=cfg.eval_size, views=cfg.teacher_views, log=run.log,
            )
        )  # fmt: skip

    def training_set(self, run: Run, train_ds: WSOLDataset, transform: Any) -> Any:
        from pixelcam.train.datasets import TrainingView

        return TrainingView(train_ds, transform, self.cams, run.annotations, self.config.resize)

    def seeds(self, batch: dict[str, Any], run: Run) -> torch.Tensor:
        return draw_seeds(batch, self.config, run.seed_gen, run.device)
