"""The training loop of both phases (baseline WSOL, then PixelCAM), with per-epoch
evaluation, B-CL/B-LOC checkpoint selection, resume and JSON-lines progress.

Run folder layout (``config.out``)::

    config.json             the validated TrainConfig
    events.jsonl            one JSON event a line (start, step, epoch, checkpoint, done, error)
    history.json            per-epoch metrics (epoch 0 = before training)
    last.{safetensors,json} model after the latest epoch      } pixelcam checkpoints
    best_cl.*  best_loc.*   B-CL (valcl accuracy) / B-LOC (valpx PxAP)
    resume/                 epoch-stamped model + optimizer state and resume.json (pointer)
    teacher_cams.*          cached teacher CAMs (phase pixelcam)
    .lock                   present while a run writes here

Reproducibility: every random draw of epoch ``e`` (shuffling, augmentation, seed pixels)
comes from generators seeded with ``(seed, e)``, so a resumed run replays exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pixelcam.data.dataset import WSOLDataset, collate_samples
from pixelcam.data.transforms import TrainTransform
from pixelcam.errors import InputError, PixelCAMError
from pixelcam.fileio import atomic_write_text, pid_alive
from pixelcam.pseudo_labels import IGNORE, sample_seeds
from pixelcam.train import losses
from pixelcam.train.config import TrainConfig
from pixelcam.train.events import EventCallback, EventLog
from pixelcam.train.state import load_training_state, save_training_state


class TrainingError(PixelCAMError):
    """The run stopped (non-finite loss, cancelled, ...); the last good checkpoint is kept."""


@dataclass
class RunResult:
    out: Path
    epochs_done: int
    history: list[dict[str, Any]]
    best_cl: Path
    best_loc: Path
    last: Path


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but CUDA is not available (try --device auto)")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise InputError("device 'mps' requested but Apple MPS is not available")
    return torch.device(name)


def open_split(config: TrainConfig, split: str) -> WSOLDataset:
    from pixelcam.data import open_dataset, split_options

    if config.dataset == "synthetic":
        root = config.data_root or str(Path(config.out) / "synthetic-data")
        root_path = Path(root)
        kw: dict[str, Any] = {}
        if not root_path.exists() or not any(root_path.iterdir()):
            kw = {
                "n_per_class": config.synthetic_n_per_class,
                "size": config.synthetic_size,
                "seed": config.seed,
            }
        return open_dataset("synthetic", root, split=split, **kw)
    fold, kw = split_options(config.dataset, config.fold, config.folds_dir, config.missing)
    return open_dataset(config.dataset, config.data_root, split=split, fold=fold, **kw)


class TrainingView(WSOLDataset):
    """The training set as the loss sees it: image, label, teacher CAM, and in the mask
    slot the user's saved point annotations (1 FG, 0 BG, 255 elsewhere), which go through
    the same geometric transform as the image. Ground-truth masks are never read here:
    training stays weakly supervised.

    Points are drawn as small disks (radius ~ image size / ``resize``) so that the
    nearest-neighbour resize to the training size keeps them.
    """

    def __init__(self, base: WSOLDataset, transform, cams, annotations, resize: int) -> None:
        super().__init__(base.records, base.class_names, transform=transform, cams=cams)
        self.annotations = annotations
        self.resize = resize

    def __getitem__(self, index: int):
        from pixelcam.annotations import seed_map
        from pixelcam.data.dataset import Sample
        from pixelcam.data.io import read_image

        rec = self.records[index]
        image = read_image(rec.image_path)
        size = (int(image.shape[0]), int(image.shape[1]))
        cam = self._cam_for(rec, size)
        ann = self.annotations.get(rec.id)
        points = None
        if ann is not None:
            radius = max(1, math.ceil(max(size) / self.resize))
            points = seed_map(ann, size, radius=radius)
        image, points, cam = self.transform(image, mask=points, cam=cam)
        return Sample(image, rec.label, points, rec.id, cam)


class RunLock:
    """A ``.lock`` file holding the pid: a second run on the same folder is refused."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"

    def __enter__(self) -> RunLock:
        if self.path.exists():
            try:
                pid = int(self.path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            # a stale lock of this very process (an earlier run here) does not count
            if pid and pid != os.getpid() and pid_alive(pid):
                raise InputError(
                    f"{self.path.parent} is in use by a running training (pid {pid}); "
                    "wait for it, cancel it, or choose another output folder"
                )
        self.path.write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _check_writable(out: Path, need_bytes: int = 50 << 20) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output folder {out} is not writable: {exc.strerror or exc}") from exc
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise InputError(
            f"not enough disk space in {out}: {free / 2**20:.0f} MiB free, "
            f"need at least {need_bytes / 2**20:.0f} MiB"
        )


def _teacher_checkpoint(config: TrainConfig, which: str) -> Path:
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


def _build_model(config: TrainConfig, num_classes: int) -> torch.nn.Module:
    from pixelcam.models import build_model, load_checkpoint

    pixel_head = config.pixel_head if config.phase == "pixelcam" else None
    if config.phase == "negev":
        init = Path(config.init) if config.init else _teacher_checkpoint(config, "best_cl")
        teacher, _ = load_checkpoint(init, expect={"num_classes": num_classes})
        if teacher.decoder is not None:
            raise InputError(f"{init} already has a decoder: NEGEV starts from a WSOL baseline")
        arch = dict(teacher.config)
        arch.update(decoder="negev", decoder_channels=config.decoder_width, freeze_encoder=True)
        model = build_model(**arch)
        missing, unexpected = model.load_state_dict(teacher.state_dict(), strict=False)
        if unexpected or any(not k.startswith("decoder.") for k in missing):
            raise InputError(f"cannot build NEGEV over {init}: weights do not fit")
        return model
    if config.phase == "unet":
        return build_model(
            config.backbone,
            num_classes=num_classes,
            head="gap",
            pixel_head=None,
            weights=config.weights,
            decoder="unet",
            decoder_channels=config.decoder_width,
        )
    if config.phase == "pixelcam":
        init = Path(config.init) if config.init else _teacher_checkpoint(config, "best_cl")
        teacher, _ = load_checkpoint(init, expect={"num_classes": num_classes})
        arch = dict(teacher.config)
        arch["pixel_head"] = pixel_head
        model = build_model(**arch)
        missing, unexpected = model.load_state_dict(teacher.state_dict(), strict=False)
        if unexpected or any(not k.startswith("pixel_head.") for k in missing):
            raise InputError(f"cannot initialise PixelCAM from {init}: weights do not fit")
        return model
    return build_model(
        config.backbone,
        num_classes=num_classes,
        head=config.head,
        pixel_head=None,
        weights=config.weights,
    )


def train(
    config: TrainConfig,
    resume: bool = False,
    stream: TextIO | None = None,
    callbacks: list[EventCallback] | None = None,
) -> RunResult:
    """Train as ``config`` says; ``resume=True`` continues an interrupted run in ``out``."""
    config.validate()
    out = Path(config.out).expanduser()
    _check_writable(out)
    cfg_path = out / "config.json"
    if resume:
        if not cfg_path.exists():
            raise InputError(f"nothing to resume in {out} (no config.json)")
        try:
            saved = TrainConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
            saved.epochs = config.epochs  # a resumed run may be extended
            config = saved.validate()
        except (OSError, ValueError, TypeError) as exc:  # InputError and JSON errors included
            raise InputError(f"cannot resume from {cfg_path}: {exc}") from exc
    elif (out / "resume" / "resume.json").exists():
        raise InputError(
            f"{out} already holds a run; use resume to continue it, or another output folder"
        )
    dist = Distributed.from_env(config.device)
    lock = RunLock(out) if dist.is_main else contextlib.nullcontext()
    try:
        with lock:
            if dist.is_main:
                log = EventLog(out / "events.jsonl", stream=stream, callbacks=callbacks)
            else:
                log = EventLog(None)  # other ranks: no file, no output
            try:
                return _train(config, out, resume, log, dist)
            except Exception as exc:
                log.emit("error", message=str(exc), kind=type(exc).__name__)
                raise
            finally:
                log.close()
    finally:
        dist.close()


@dataclass
class Distributed:
    """Data-parallel training through ``torch.distributed`` (DDP), set up from the
    environment ``torchrun`` provides (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``): NCCL on
    CUDA, gloo on the CPU. Every rank trains on its shard of each epoch
    (``DistributedSampler``) with the per-process batch size; every rank evaluates the
    (identical) model the same way, so model selection agrees without communication; only
    rank 0 writes files and events. A plain run is world size 1.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as tdist

        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_nccl = device in ("auto", "cuda") and torch.cuda.is_available()
        if use_nccl:
            torch.cuda.set_device(local)
        if not tdist.is_initialized():
            tdist.init_process_group(backend="nccl" if use_nccl else "gloo")
        return cls(rank, world, local, True)

    def device(self, name: str) -> torch.device:
        device = resolve_device(name)
        if device.type == "cuda" and self.world_size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        if self.initialised:
            import torch.distributed as tdist

            tdist.barrier()

    def main_first(self, fn):  # noqa: ANN001, ANN201
        """Run ``fn`` on rank 0, then on the others (e.g. a cache rank 0 writes)."""
        if self.is_main:
            result = fn()
            self.barrier()
            return result
        self.barrier()
        return fn()

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as tdist

            tdist.barrier()
            tdist.destroy_process_group()


def _train(
    config: TrainConfig, out: Path, resume: bool, log: EventLog, dist: Distributed
) -> RunResult:
    from pixelcam.evaluation import evaluate_model
    from pixelcam.models import save_checkpoint
    from pixelcam.models.checkpoint import load_state_into

    if dist.is_main:
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=1))
    device = dist.device(config.device)
    torch.manual_seed(config.seed)
    # rank 0 first: a synthetic dataset is written on first use
    train_ds = dist.main_first(lambda: open_split(config, config.train_split))
    valcl = open_split(config, config.valcl_split)
    valpx = open_split(config, config.valpx_split)
    if list(valcl.class_names) != list(train_ds.class_names):
        raise InputError(
            f"class names differ between splits: {train_ds.class_names} vs {valcl.class_names}"
        )
    if train_ds.num_classes < 2:
        raise InputError(
            f"the dataset {config.data_root or config.dataset} has {train_ds.num_classes} "
            f"class ({list(train_ds.class_names)}): "
            "training a classifier needs at least 2 classes"
        )
    model = _build_model(config, train_ds.num_classes).to(device)
    method = config.map_method
    from pixelcam.cams import get_method

    if not get_method(method).applies(model):
        raise InputError(f"map method {method!r} does not apply to head {model.config['head']!r}")

    n_train = len(train_ds)
    n_local = math.ceil(n_train / dist.world_size)
    drop_last = n_local > config.batch_size  # no 1-image batch for BatchNorm
    steps = n_local // config.batch_size if drop_last else 1
    log.emit(
        "start",
        message=f"{config.phase} on {config.dataset}: {n_train} train, "
        f"{len(valcl)} valcl, {len(valpx)} valpx images, device {device}",
        phase=config.phase,
        epochs=config.epochs,
        steps=steps,
        device=str(device),
        resume=resume,
        world_size=dist.world_size,
    )

    negative = _negative_class(config, train_ds.class_names)
    if negative is not None:
        log.emit("log", message=f"negative evidence: every pixel of class "
                 f"{train_ds.class_names[negative]!r} images is background")  # fmt: skip
    if config.phase == "unet":
        unknown = [r.id for r in train_ds.records if not r.mask_known]
        if unknown:
            raise InputError(
                f"phase 'unet' trains on masks, but {len(unknown)} of {len(train_ds)} training "
                f"images have none (e.g. {unknown[0]!r})"
            )
    cams = None
    if config.phase in ("pixelcam", "negev"):
        from pixelcam.train.teacher import cached_teacher_cams

        teacher_ckpt = _teacher_checkpoint(config, config.teacher_checkpoint)
        cams = dist.main_first(  # rank 0 computes and writes the cache, the others read it
            lambda: cached_teacher_cams(
                teacher_ckpt, train_ds, config.teacher_method, out, device,
                size=config.eval_size, log=log,
            )
        )  # fmt: skip
    transform = TrainTransform(
        resize=config.resize,
        crop=config.crop,
        color_jitter=(0.5, 0.5, 0.5, 0.05) if config.color_jitter else None,
    )
    annotations = {}
    if config.annotations:
        from pixelcam.annotations import annotations_for_dataset

        annotations = annotations_for_dataset(config.annotations, train_ds.ids)
        log.emit("log", message=f"{len(annotations)} images with saved point annotations")
    if config.phase == "unet":  # full supervision: the mask slot holds the ground truth
        train_ds = train_ds.with_transform(transform)
    else:
        train_ds = TrainingView(train_ds, transform, cams, annotations, config.resize)
    optimizer = make_optimizer(model, config)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    meta_base = {
        "class_names": list(train_ds.class_names),
        "phase": config.phase,
        "map_method": method,
        "eval_size": config.eval_size,
    }

    history: list[dict[str, Any]] = []
    best = {"cl": -math.inf, "loc": -math.inf, "acc_seen": -math.inf}
    start_epoch = 1
    resume_dir = out / "resume"
    if resume and (resume_dir / "resume.json").exists():
        pointer = json.loads((resume_dir / "resume.json").read_text(encoding="utf-8"))
        load_state_into(model, resume_dir / pointer["model"])
        info = load_training_state(resume_dir / pointer["state"], optimizer)
        history, best = info["history"], info["best"]
        start_epoch = int(info["epoch"]) + 1
        log.emit("log", message=f"resumed after epoch {info['epoch']}")

    from pixelcam.cams import available_methods

    # every map the model offers is scored on valpx (one forward for all of them); the
    # run's own map (``method``) drives B-LOC selection
    eval_methods = [method] + [m for m in available_methods(model) if m != method]

    def evaluate(epoch: int) -> dict[str, Any]:
        cl = evaluate_model(
            model, valcl, methods=[], device=device, batch_size=config.batch_size,
            size=config.eval_size,
        )  # fmt: skip
        px = evaluate_model(
            model, valpx, methods=eval_methods, device=device, batch_size=config.batch_size,
            size=config.eval_size,
        )  # fmt: skip
        metrics = {
            "epoch": epoch,
            "valcl_acc": cl.accuracy,
            "valpx_pxap": px.pxap.get(method),
            "valpx_acc": px.accuracy,
        }
        metrics.update({f"valpx_pxap_{m}": v for m, v in px.pxap.items()})
        return metrics

    def select(metrics: dict[str, Any]) -> list[str]:
        """B-CL: best valcl accuracy. B-LOC: best valpx PxAP among epochs whose valcl accuracy
        is within ``select_margin`` points of the best so far and after epoch 0 (guards
        against an untrained epoch winning on a 6-image valpx); ties go to the later epoch."""
        chosen = []
        acc, loc = metrics["valcl_acc"], metrics["valpx_pxap"]
        if acc is None:  # U-Net: no classifier; B-CL is simply the latest epoch
            acc = -math.inf
        best["acc_seen"] = max(best["acc_seen"], acc)
        if acc >= best["cl"]:
            best["cl"] = acc
            chosen.append("best_cl")
        eligible = metrics["epoch"] >= 1 or config.epochs == 0
        # NEGEV's classifier is frozen and the U-Net has none: no accuracy guard for them
        near_best_acc = config.phase in ("negev", "unet") or (
            acc >= best["acc_seen"] - config.select_margin
        )
        if loc is not None and eligible and near_best_acc and loc >= best["loc"]:
            best["loc"] = loc
            chosen.append("best_loc")
        return chosen

    if start_epoch == 1:
        metrics = evaluate(0)
        history.append(metrics)
        for name in select(metrics) + ["last"]:
            if dist.is_main:
                save_checkpoint(model, out / name, {**meta_base, "epoch": 0, "metrics": metrics})
        log.emit("epoch", epoch=0, epochs=config.epochs, metrics=_fmt(metrics))

    net: torch.nn.Module = model
    sampler = None
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler

        net = DistributedDataParallel(
            _TupleOutput(model),
            device_ids=[device.index] if device.type == "cuda" else None,
            # with positive-only seeds a batch may leave the pixel head without gradient
            find_unused_parameters=config.positive_only,
        )
        sampler = DistributedSampler(
            train_ds, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
            seed=config.seed, drop_last=True,
        )  # fmt: skip

    for epoch in range(start_epoch, config.epochs + 1):
        lr_scale = config.lr_gamma ** ((epoch - 1) // config.lr_step) if config.lr_step else 1.0
        for g, base in zip(optimizer.param_groups, (config.lr, config.lr * config.head_lr_mult)):
            g["lr"] = base * lr_scale
        epoch_seed = config.seed * 100003 + epoch + 7919 * dist.rank
        gen = torch.Generator().manual_seed(epoch_seed)
        seed_gen = _device_generator(device, epoch_seed, fallback=gen)
        torch.manual_seed(epoch_seed)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(
            train_ds,
            batch_size=config.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=gen,
            collate_fn=collate_samples,
            num_workers=config.num_workers,
            drop_last=drop_last,
        )
        model.train()
        totals = {"loss": 0.0, "cls": 0.0, "pix": 0.0, "n": 0}
        for step, batch in enumerate(loader, 1):
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device)
            with torch.autocast(device.type, enabled=use_amp):
                outp = net(images) if net is model else _TupleOutput.unpack(net(images))
                cls_loss = F.cross_entropy(outp.logits, labels)
                loss = cls_loss
                if config.phase in ("negev", "unet"):  # the classifier is not trained
                    cls_loss = cls_loss.detach()
                    loss = _decoder_loss(outp, batch, images, config, seed_gen, device, negative)
                if outp.sat_mean_activation is not None:
                    from pixelcam.models.heads import sat_regularization

                    loss = loss + sat_regularization(outp)
                pix_loss = loss if config.phase in ("negev", "unet") else loss.new_zeros(())
                if config.phase == "pixelcam" and config.lam > 0:
                    seeds = _seeds(batch, config, seed_gen, device)
                    if (seeds != IGNORE).any():  # no seed: the pixel head gets no gradient
                        pix_loss = losses.pixel_seed_loss(outp.pixel_logits, seeds)
                        loss = loss + config.lam * pix_loss
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at epoch {epoch} step {step}; stopped. The last "
                    f"good checkpoint is kept in {out} (try a lower learning rate)"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            b = len(batch["id"])
            totals["loss"] += loss.item() * b
            totals["cls"] += cls_loss.item() * b
            totals["pix"] += pix_loss.item() * b
            totals["n"] += b
            log.emit(
                "step",
                epoch=epoch,
                step=step,
                steps=steps,
                loss=loss.item(),
                cls_loss=cls_loss.item(),
                pixel_loss=pix_loss.item(),
            )
        _check_finite(model, epoch, out)  # never save (as last/best/resume) broken weights
        n = max(totals["n"], 1)
        metrics = evaluate(epoch)
        metrics.update(
            train_loss=totals["loss"] / n,
            train_cls_loss=totals["cls"] / n,
            train_pixel_loss=totals["pix"] / n,
            lr=config.lr * lr_scale,
        )
        history.append(metrics)
        chosen = select(metrics)
        meta = {**meta_base, "epoch": epoch, "metrics": metrics}
        if dist.is_main:
            for name in chosen + ["last"]:
                save_checkpoint(model, out / name, meta)
                if name != "last":
                    log.emit("checkpoint", name=name, epoch=epoch, path=str(out / name))
            _save_resume(resume_dir, model, optimizer, epoch, history, best, save_checkpoint, meta)
            atomic_write_text(out / "history.json", json.dumps(history, indent=1))
        log.emit("epoch", epoch=epoch, epochs=config.epochs, metrics=_fmt(metrics))

    if dist.is_main:
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))
    log.emit(
        "done",
        message=f"finished {config.epochs} epochs in {out}",
        best_cl=str(out / "best_cl"),
        best_loc=str(out / "best_loc"),
    )
    return RunResult(out, config.epochs, history, out / "best_cl", out / "best_loc", out / "last")


class _TupleOutput(torch.nn.Module):
    """DDP wants tensors (or tuples of them) out of forward: ModelOutput as a tuple."""

    FIELDS = ("logits", "features", "pixel_logits", "attention", "sat_mean_activation",
              "sat_norm", "seg_logits")  # fmt: skip

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple:
        out = self.model(x)
        return tuple(getattr(out, f) for f in self.FIELDS)

    @classmethod
    def unpack(cls, values: tuple):  # noqa: ANN206
        from pixelcam.models.model import ModelOutput

        return ModelOutput(**dict(zip(cls.FIELDS, values)))


def _check_finite(model: torch.nn.Module, epoch: int, out: Path) -> None:
    """A finite loss can still be followed by an update to inf/NaN weights (a huge lr)."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingError(
                f"weights became non-finite ({name}) in epoch {epoch}; stopped. The last good "
                f"checkpoint is kept in {out} (try a lower learning rate)"
            )


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum over the model's two parameter groups (backbone at ``lr``,
    last stage and heads at ``lr * head_lr_mult``)."""
    return torch.optim.SGD(
        model.param_groups(config.lr, config.head_lr_mult),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )


def _device_generator(
    device: torch.device, seed: int, fallback: torch.Generator
) -> torch.Generator:
    """The generator of the seed pixels: on the training device, so that sampling runs
    where the CAMs are used (on a GPU, drawing seeds on the CPU cost more than the whole
    baseline step at batch 16: benchmarks/speed.py); the CPU generator on the CPU."""
    if device.type == "cpu":
        return fallback
    try:
        return torch.Generator(device=device).manual_seed(seed)
    except (RuntimeError, TypeError):  # a device without its own generator
        return fallback


def _seeds(
    batch: dict[str, Any], config: TrainConfig, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """FG/BG seeds sampled from the batch's teacher CAMs where ``gen`` lives, with the
    user's points on top, on ``device``."""
    cams = batch["cam"]
    if cams is None:
        raise TrainingError("phase pixelcam without teacher CAMs in the batch")
    cams = cams.to(gen.device, non_blocking=True)
    eligible = batch["label"].to(gen.device) > 0 if config.positive_only else None
    seeds = sample_seeds(
        cams,
        n=config.n,
        sampler=config.sampler,
        bg_fraction=config.bg_fraction,
        eligible=eligible,
        generator=gen,
    )
    points = batch["mask"].to(seeds.device)  # TrainingView: user points (255 elsewhere), never GT
    seeds = torch.where(points != IGNORE, points.long(), seeds)
    return seeds.to(device)


def _negative_class(config: TrainConfig, class_names) -> int | None:  # noqa: ANN001
    """Index of the class whose images hold no foreground (NEGEV's negative evidence):
    ``auto`` = CAMELYON16's ``normal``, none elsewhere (GlaS benign images have glands)."""
    if config.phase != "negev":
        return None
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


def _decoder_loss(
    outp,  # noqa: ANN001
    batch: dict[str, Any],
    images: torch.Tensor,
    config: TrainConfig,
    gen: torch.Generator,
    device: torch.device,
    negative: int | None,
) -> torch.Tensor:
    """NEGEV: seeds CE + negative evidence + smoothness; U-Net: CE + Dice on the masks."""
    logits = outp.seg_logits
    if config.phase == "unet":
        return losses.segmentation_loss(logits, batch["mask"].to(device))
    seeds = _seeds(batch, config, gen, device)
    loss = losses.seed_ce(logits, seeds)
    if negative is not None:
        loss = loss + losses.negative_evidence_ce(logits, batch["label"].to(device) == negative)
    if config.smooth_weight > 0:
        fg = torch.softmax(logits.float(), dim=1)[:, 1]
        rgb = losses.denormalize_batch(images)
        loss = loss + config.smooth_weight * losses.potts_smoothness(fg, rgb, config.smooth_sigma)
    return loss


def _save_resume(
    resume_dir: Path, model, optimizer, epoch: int, history, best, save_ckpt, meta
) -> None:
    """Epoch-stamped files first, then the pointer, then old files go: a kill at any moment
    leaves a pointer to a complete pair."""
    resume_dir.mkdir(exist_ok=True)
    save_ckpt(model, resume_dir / f"model-{epoch:05d}", meta)
    save_training_state(
        resume_dir / f"state-{epoch:05d}",
        optimizer,
        {"epoch": epoch, "history": history, "best": best},
    )
    atomic_write_text(
        resume_dir / "resume.json",
        json.dumps({"epoch": epoch, "model": f"model-{epoch:05d}", "state": f"state-{epoch:05d}"}),
    )
    for p in resume_dir.iterdir():
        if p.name.startswith(("model-", "state-")) and f"-{epoch:05d}." not in p.name:
            p.unlink(missing_ok=True)


def _fmt(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
