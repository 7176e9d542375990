"""The training loop: the same for every phase (:mod:`pixelcam.train.phases` says what
differs), with per-epoch evaluation, B-CL/B-LOC checkpoint selection
(:mod:`pixelcam.train.selection`), resume and JSON-lines progress.

Run folder layout (``config.out``)::

    config.json             the validated TrainConfig
    events.jsonl            one JSON event a line (start, step, epoch, checkpoint, done, error)
    history.json            per-epoch metrics (epoch 0 = before training)
    last.{safetensors,json} model after the latest epoch      } pixelcam checkpoints
    best_cl.*  best_loc.*   B-CL (valcl accuracy) / B-LOC (valpx PxAP, accuracy guard)
    selection/              epochs that may still become B-LOC (selection.BestLocTracker)
    resume/                 epoch-stamped model + optimizer state and resume.json (pointer)
    teacher_cams.*          cached teacher CAMs (phases pixelcam, negev)
    .lock                   held while a run writes here

Reproducibility: every random draw of epoch ``e`` (shuffling, augmentation, seed pixels)
comes from generators seeded with ``(seed, e)``, so a resumed run replays exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch.utils.data import DataLoader

from pixelcam.data.dataset import WSOLDataset, collate_samples
from pixelcam.data.transforms import TrainTransform
from pixelcam.errors import InputError, TrainingError
from pixelcam.fileio import atomic_write_text, remove_stale_temps
from pixelcam.train.config import TrainConfig
from pixelcam.train.datasets import TrainingView, open_split, readable_training_set
from pixelcam.train.events import EventCallback, EventLog
from pixelcam.train.phases import Phase, get_phase
from pixelcam.train.runtime import (
    Distributed,
    Run,
    RunLock,
    TupleOutput,
    check_writable,
    device_generator,
)
from pixelcam.train.selection import BestLocTracker, best_cl_epoch
from pixelcam.train.state import load_training_state, save_training_state

__all__ = ["RunResult", "TrainingError", "TrainingView", "make_optimizer", "train"]


@dataclass
class RunResult:
    out: Path
    epochs_done: int
    history: list[dict[str, Any]]
    best_cl: Path
    best_loc: Path
    last: Path


def train(
    config: TrainConfig,
    resume: bool = False,
    stream: TextIO | None = None,
    callbacks: list[EventCallback] | None = None,
    *,
    given: Collection[str] | None = None,
) -> RunResult:
    """Train as ``config`` says; ``resume=True`` continues an interrupted run in ``out``.

    A resumed run takes EVERY setting from its ``config.json``. ``given`` names the
    settings the caller chose (the CLI passes its explicit flags; default: the fields of
    ``config`` that differ from :class:`TrainConfig`'s defaults): one that differs from the
    saved run is refused (:class:`InputError` naming it), except ``epochs``, which extends
    (or shortens, never below the epochs already done) the run and says so in the log, and
    ``device`` and ``num_workers``, which say where it runs, not what it learns.
    """
    out = Path(config.out).expanduser()
    notes: list[str] = []
    if resume:
        config, notes = _resumed_config(config, out, given)
    else:
        config.validate()
    check_writable(out)
    if not resume and (out / "resume" / "resume.json").exists():
        raise InputError(
            f"{out} already holds a run; use resume to continue it, or another output folder"
        )
    dist = Distributed.from_env(config.device)
    lock = RunLock(out) if dist.is_main else contextlib.nullcontext()
    try:
        with lock:
            log = (  # other ranks: no file, no output
                EventLog(out / "events.jsonl", stream=stream, callbacks=callbacks)
                if dist.is_main
                else EventLog(None)
            )
            try:
                for note in notes:
                    log.emit("log", message=note)
                return _train(config, out, resume, log, dist)
            except Exception as exc:
                with contextlib.suppress(OSError):  # a full disk must not hide the error
                    log.emit("error", message=str(exc), kind=type(exc).__name__)
                raise
            finally:
                with contextlib.suppress(OSError):
                    log.close()
    finally:
        dist.close()


#: Settings a resumed run may change: where it runs, not what it learns.
RUNTIME_SETTINGS = ("device", "num_workers")
_PATH_SETTINGS = ("data_root", "folds_dir", "teacher", "init", "annotations", "weights")


def _resumed_config(
    config: TrainConfig, out: Path, given: Collection[str] | None
) -> tuple[TrainConfig, list[str]]:
    """The saved run's configuration, with the caller's ``given`` settings checked against
    it (see :func:`train`), and the log lines saying what changed."""
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        raise InputError(f"nothing to resume in {out} (no config.json)")
    try:
        saved = TrainConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
        saved.validate()
    except (OSError, ValueError, TypeError) as exc:  # InputError and JSON errors included
        raise InputError(f"cannot resume from {cfg_path}: {exc}") from exc
    chosen = _given_settings(config, given) - {"out"}
    wanted = dataclasses.replace(saved, **{k: getattr(config, k) for k in chosen})
    wanted.out = config.out  # the folder may have moved since
    wanted.validate()  # bad values are refused as for a new run; aliases become names
    notes = []
    for name in sorted(chosen - {"epochs"}):
        mine, theirs = getattr(wanted, name), getattr(saved, name)
        if _same_setting(name, mine, theirs):
            continue
        if name not in RUNTIME_SETTINGS:
            raise InputError(
                f"cannot resume {out} with {name}={mine!r}: the run was started with "
                f"{name}={theirs!r} ({cfg_path}); a resumed run keeps every setting but "
                "epochs (start a new run in another folder to change it)"
            )
        notes.append(f"{name}: {mine!r} (the run was started with {theirs!r})")
    if wanted.epochs != saved.epochs:
        done = _epochs_done(out)
        if wanted.epochs < done:
            raise InputError(
                f"cannot resume {out} with epochs={wanted.epochs}: it has already trained "
                f"{done} epochs"
            )
        how = "extended" if wanted.epochs > saved.epochs else "shortened"
        notes.append(f"epochs: {saved.epochs} -> {wanted.epochs} (run {how})")
    return wanted, notes


def _given_settings(config: TrainConfig, given: Collection[str] | None) -> set[str]:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if given is not None:
        return {name for name in given if name in fields}
    defaults = TrainConfig(out=config.out)
    return {name for name in fields if getattr(config, name) != getattr(defaults, name)}


def _same_setting(name: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if name in _PATH_SETTINGS and isinstance(a, str) and isinstance(b, str) and a and b:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return False


def _epochs_done(out: Path) -> int:
    """The last complete epoch of the run in ``out`` (0 when none)."""
    try:
        return int(json.loads((out / "resume" / "resume.json").read_text("utf-8"))["epoch"])
    except (OSError, ValueError, TypeError, KeyError):
        return 0


def _train(
    config: TrainConfig, out: Path, resume: bool, log: EventLog, dist: Distributed
) -> RunResult:
    phase = get_phase(config)
    if dist.is_main:
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=1))
    run = Run(config, out, dist.device(config.device), log, dist)
    torch.manual_seed(config.seed)
    train_ds, valcl, valpx = _open_splits(config, dist)
    train_ds = readable_training_set(  # a bad file stops the run before epoch 0
        train_ds, config.skip_unreadable, lambda message: log.emit("log", message=message)
    )
    model = phase.build_model(train_ds.num_classes).to(run.device)
    _record_architecture(config, model, out, dist)
    method = phase.map_method()
    _check_map(method, model)
    trainer = _Trainer(phase, run, model)
    trainer.prepare(train_ds, valcl, valpx, resume)
    evaluate = _Evaluator(model, valcl, valpx, method, run)
    saver = _Saver(run, model, trainer.optimizer, phase, method, train_ds.class_names)
    history, start_epoch = saver.restore(resume)
    if start_epoch == 1:
        history.append(evaluate(0))
        saver.save(history)
    for epoch in range(start_epoch, config.epochs + 1):
        totals = trainer.epoch(epoch)
        _check_finite(model, epoch, out)  # never save (as last/best/resume) broken weights
        metrics = evaluate(epoch)
        metrics.update(totals)
        history.append(metrics)
        saver.save(history)
    if dist.is_main:
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))
    log.emit(
        "done", message=f"finished {config.epochs} epochs in {out}",
        best_cl=str(out / "best_cl"), best_loc=str(out / "best_loc"),
    )  # fmt: skip
    return RunResult(out, config.epochs, history, out / "best_cl", out / "best_loc", out / "last")


def _record_architecture(config: TrainConfig, model: Any, out: Path, dist: Distributed) -> None:
    """A phase that starts from its teacher takes the teacher's backbone whatever
    ``--backbone`` said: ``config.json`` records the one the run really trains."""
    used = model.config.get("backbone")
    if dist.is_main and used and used != config.backbone:
        doc = {**config.to_dict(), "backbone": used}
        atomic_write_text(out / "config.json", json.dumps(doc, indent=1))


def _open_splits(
    config: TrainConfig, dist: Distributed
) -> tuple[WSOLDataset, WSOLDataset, WSOLDataset]:
    """The train, valcl and valpx splits, checked (same classes, at least two)."""
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
    return train_ds, valcl, valpx


def _check_map(method: str, model: torch.nn.Module) -> None:
    from pixelcam.cams import get_method

    if not get_method(method).applies(model):
        raise InputError(f"map method {method!r} does not apply to head {model.config['head']!r}")


class _Trainer:
    """One phase's training epochs: loader, optimizer, AMP scaler, DDP wrapper."""

    def __init__(self, phase: Phase, run: Run, model: torch.nn.Module) -> None:
        self.phase, self.run, self.model = phase, run, model
        self.optimizer = make_optimizer(model, run.config)
        self.use_amp = run.config.amp and run.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def prepare(
        self, train_ds: WSOLDataset, valcl: WSOLDataset, valpx: WSOLDataset, resume: bool
    ) -> None:
        """Phase checks and caches, the user's points, the training set, DDP."""
        cfg, run = self.run.config, self.run
        n_local = math.ceil(len(train_ds) / run.dist.world_size)
        self.drop_last = n_local > cfg.batch_size  # no 1-image batch for BatchNorm
        self.steps = n_local // cfg.batch_size if self.drop_last else 1
        fh, fw = self.model.feature_size(cfg.eval_size)  # the maps' own resolution
        run.log.emit(
            "start",
            message=f"{cfg.phase} on {cfg.dataset}: {len(train_ds)} train, "
            f"{len(valcl)} valcl, {len(valpx)} valpx images, device {run.device}; maps "
            f"{fh}x{fw} at {cfg.eval_size} px",
            phase=cfg.phase, epochs=cfg.epochs, steps=self.steps, device=str(run.device),
            resume=resume, world_size=run.dist.world_size, feature_size=[fh, fw],
        )  # fmt: skip
        self.phase.prepare(run, train_ds)
        if cfg.annotations:
            from pixelcam.annotations import annotations_for_dataset

            run.annotations = annotations_for_dataset(cfg.annotations, train_ds.ids)
            run.log.emit("log", message=f"{len(run.annotations)} images with saved point "
                         "annotations")  # fmt: skip
        jitter = (0.5, 0.5, 0.5, 0.05) if cfg.color_jitter else None
        transform = TrainTransform(resize=cfg.resize, crop=cfg.crop, color_jitter=jitter)
        self.train_set = self.phase.training_set(run, train_ds, transform)
        self.net, self.sampler = self.model, None
        if run.dist.world_size > 1:
            self._parallel()

    def _parallel(self) -> None:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler

        cfg, dist, device = self.run.config, self.run.dist, self.run.device
        self.net = DistributedDataParallel(
            TupleOutput(self.model),
            device_ids=[device.index] if device.type == "cuda" else None,
            # with positive-only seeds a batch may leave the pixel head without gradient
            find_unused_parameters=cfg.positive_only,
        )
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
            seed=cfg.seed, drop_last=True,
        )  # fmt: skip

    def _loader(self, epoch: int) -> DataLoader:
        """This epoch's loader, learning rates and generators (all seeded by the epoch)."""
        cfg, run = self.run.config, self.run
        lr_scale = cfg.lr_gamma ** ((epoch - 1) // cfg.lr_step) if cfg.lr_step else 1.0
        self.lr = cfg.lr * lr_scale
        for g, base in zip(self.optimizer.param_groups, (cfg.lr, cfg.lr * cfg.head_lr_mult)):
            g["lr"] = base * lr_scale
        epoch_seed = cfg.seed * 100003 + epoch + 7919 * run.dist.rank
        gen = torch.Generator().manual_seed(epoch_seed)
        run.seed_gen = device_generator(run.device, epoch_seed, fallback=gen)
        torch.manual_seed(epoch_seed)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        return DataLoader(
            self.train_set, batch_size=cfg.batch_size, shuffle=self.sampler is None,
            sampler=self.sampler, generator=gen, collate_fn=collate_samples,
            num_workers=cfg.num_workers, drop_last=self.drop_last,
        )  # fmt: skip

    def epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; returns the mean training losses and the learning rate."""
        loader = self._loader(epoch)
        self.model.train()
        totals = {"loss": 0.0, "cls": 0.0, "pix": 0.0, "n": 0}
        for step, batch in enumerate(loader, 1):
            parts = self._step(batch, epoch, step)
            b = len(batch["id"])
            for key, value in zip(("loss", "cls", "pix"), parts):
                totals[key] += value * b
            totals["n"] += b
            self.run.log.emit(
                "step", epoch=epoch, step=step, steps=self.steps, loss=parts[0],
                cls_loss=parts[1], pixel_loss=parts[2],
            )  # fmt: skip
        n = max(totals["n"], 1)
        return {
            "train_loss": totals["loss"] / n,
            "train_cls_loss": totals["cls"] / n,
            "train_pixel_loss": totals["pix"] / n,
            "lr": self.lr,
        }

    def _step(self, batch: dict[str, Any], epoch: int, step: int) -> tuple[float, float, float]:
        device = self.run.device
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=self.use_amp):
            out = self.net(images)
            out = out if self.net is self.model else TupleOutput.unpack(out)
            parts = self.phase.loss(out, batch, images, self.run)
        loss = parts.loss
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {epoch} step {step}; stopped. The last "
                f"good checkpoint is kept in {self.run.out} (try a lower learning rate)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item(), parts.cls_loss.item(), parts.pixel_loss.item()


class _Evaluator:
    """Per-epoch metrics: valcl accuracy, and on valpx every map the model offers (one
    forward for all); ``valpx_pxap`` is the run's own map, the one B-LOC selects on."""

    def __init__(self, model: Any, valcl: Any, valpx: Any, method: str, run: Run) -> None:
        from pixelcam.cams import available_methods

        self.model, self.valcl, self.valpx, self.method, self.run = model, valcl, valpx, method, run
        self.methods = [method] + [m for m in available_methods(model) if m != method]

    def __call__(self, epoch: int) -> dict[str, Any]:
        from pixelcam.evaluation import evaluate_model

        cfg = self.run.config
        kw = {"device": self.run.device, "batch_size": cfg.batch_size, "size": cfg.eval_size}
        cl = evaluate_model(self.model, self.valcl, methods=[], **kw)
        px = evaluate_model(self.model, self.valpx, methods=self.methods, **kw)
        metrics = {
            "epoch": epoch,
            "valcl_acc": cl.accuracy,
            "valpx_pxap": px.pxap.get(self.method),
            "valpx_acc": px.accuracy,
        }
        metrics.update({f"valpx_pxap_{m}": v for m, v in px.pxap.items()})
        return metrics


class _Saver:
    """Checkpoints of every epoch (``last``, B-CL, B-LOC through the selection module),
    the resume files and the history; rank 0 only. Restores a resumed run."""

    def __init__(self, run: Run, model: Any, optimizer: Any, phase: Phase, method: str,
                 class_names: Any) -> None:  # fmt: skip
        cfg = run.config
        self.run, self.model, self.optimizer = run, model, optimizer
        # What the run trained on travels with every checkpoint, so a copied file still
        # says it (the panel's provenance reads these before the run's config.json).
        self.meta = {"class_names": list(class_names), "phase": cfg.phase,
                     "map_method": method, "eval_size": cfg.eval_size,
                     "dataset": cfg.dataset, "data_root": str(cfg.data_root or ""),
                     "epochs": cfg.epochs, "mpp": cfg.mpp}  # fmt: skip
        self.tracker = BestLocTracker(
            run.out, {method: "best_loc"}, cfg.select_margin,
            guard=phase.trains_classifier, store="selection",
        )  # fmt: skip

    def restore(self, resume: bool) -> tuple[list[dict[str, Any]], int]:
        """The history so far and the first epoch to train (1 for a new run)."""
        from pixelcam.models.checkpoint import load_state_into

        resume_dir = self.run.out / "resume"
        if self.run.dist.is_main:  # temporaries of a killed run (the lock is ours)
            stale = [p for d in (self.run.out, resume_dir, self.run.out / "selection")
                     for p in remove_stale_temps(d)]  # fmt: skip
            if stale:
                self.run.log.emit("log", message=f"removed {len(stale)} temporary file(s) "
                                  "left by an interrupted run")  # fmt: skip
        if not (resume and (resume_dir / "resume.json").exists()):
            return [], 1
        pointer = json.loads((resume_dir / "resume.json").read_text(encoding="utf-8"))
        load_state_into(self.model, resume_dir / pointer["model"])
        info = load_training_state(resume_dir / pointer["state"], self.optimizer)
        self.tracker.replay(info["history"])
        self.run.log.emit("log", message=f"resumed after epoch {info['epoch']}")
        return info["history"], int(info["epoch"]) + 1

    def save(self, history: list[dict[str, Any]]) -> None:
        metrics = history[-1]
        epoch, run = metrics["epoch"], self.run
        if run.dist.is_main:
            self._checkpoints(history)
            if epoch >= 1:
                self._save_resume(history)
                atomic_write_text(run.out / "history.json", json.dumps(history, indent=1))
        run.log.emit("epoch", epoch=epoch, epochs=run.config.epochs, metrics=_fmt(metrics))

    def _checkpoints(self, history: list[dict[str, Any]]) -> None:
        from pixelcam.models import save_checkpoint

        metrics = history[-1]
        epoch, out = metrics["epoch"], self.run.out
        meta = {**self.meta, "epoch": epoch, "metrics": metrics}
        save_checkpoint(self.model, out / "last", meta)
        chosen = ["best_cl"] if best_cl_epoch(history) == epoch else []
        if chosen:
            save_checkpoint(self.model, out / "best_cl", meta)
        chosen += self.tracker.update(metrics)
        for name in chosen if epoch >= 1 else ():
            self.run.log.emit("checkpoint", name=name, epoch=epoch, path=str(out / name))

    def _save_resume(self, history: list[dict[str, Any]]) -> None:
        """Epoch-stamped files first, then the pointer, then old files go: a kill at any
        moment leaves a pointer to a complete pair."""
        from pixelcam.models import save_checkpoint

        epoch, resume_dir = history[-1]["epoch"], self.run.out / "resume"
        resume_dir.mkdir(exist_ok=True)
        meta = {**self.meta, "epoch": epoch, "metrics": history[-1]}
        save_checkpoint(self.model, resume_dir / f"model-{epoch:05d}", meta)
        save_training_state(
            resume_dir / f"state-{epoch:05d}", self.optimizer,
            {"epoch": epoch, "history": history},
        )  # fmt: skip
        atomic_write_text(
            resume_dir / "resume.json",
            json.dumps({"epoch": epoch, "model": f"model-{epoch:05d}",
                        "state": f"state-{epoch:05d}"}),
        )  # fmt: skip
        for p in resume_dir.iterdir():
            if p.name.startswith(("model-", "state-")) and f"-{epoch:05d}." not in p.name:
                p.unlink(missing_ok=True)


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


def _fmt(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
