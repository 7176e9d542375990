"""What one training run holds while it runs (:class:`Run`), and the machinery around it
that no phase needs to know: data parallelism (:class:`Distributed`), the run-folder lock
(:class:`RunLock`) and the output-folder checks."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pixelcam.device import resolve_device
from pixelcam.errors import InputError
from pixelcam.train.events import EventLog

if TYPE_CHECKING:
    from pixelcam.train.config import TrainConfig


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


@dataclass
class Run:
    """One run in progress: what phases read (config, device, log, the user's points) and
    the generator of this epoch's seed pixels (``seed_gen``, set by the loop)."""

    config: TrainConfig
    out: Path
    device: torch.device
    log: EventLog
    dist: Distributed
    annotations: dict[str, Any] = field(default_factory=dict)
    seed_gen: torch.Generator | None = None


class TupleOutput(torch.nn.Module):
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


class RunLock:
    """An OS lock on ``out/.lock`` (``filelock``: released by the OS when the process dies,
    so no stale lock can block a folder, and no check-then-write race). The file holds the
    owner's pid for the trainer dock; it is removed when the run ends."""

    def __init__(self, out: Path) -> None:
        from filelock import FileLock

        self.path = out / ".lock"
        self._lock = FileLock(str(self.path), timeout=0)

    def __enter__(self) -> RunLock:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise InputError(
                f"{self.path.parent} is in use by a running training (pid {self._owner()}); "
                "wait for it, cancel it, or choose another output folder"
            ) from None
        with open(self.path, "w", encoding="ascii") as f:  # the lock is on the open file
            f.write(str(os.getpid()))
        return self

    def _owner(self) -> str:
        try:
            return self.path.read_text(encoding="ascii").strip() or "?"
        except OSError:
            return "?"

    def __exit__(self, *exc: object) -> None:
        # a folder made read-only during the run must not fail a finished run
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        self._lock.release()


def check_writable(out: Path, need_bytes: int = 50 << 20) -> None:
    """``out`` exists (created if needed), is writable and has ``need_bytes`` free."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        # a probe of its own: two runs racing for ``out`` must meet at the lock ("in use"),
        # not delete each other's probe (named as atomic_write's temporaries, for clean-up)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.", suffix=".tmp")
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise InputError(f"output folder {out} is not writable: {exc.strerror or exc}") from exc
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise InputError(
            f"not enough disk space in {out}: {free / 2**20:.0f} MiB free, "
            f"need at least {need_bytes / 2**20:.0f} MiB"
        )


def device_generator(device: torch.device, seed: int, fallback: torch.Generator) -> torch.Generator:
    """The generator of the seed pixels: on the training device, so that sampling runs
    where the CAMs are used (on a GPU, drawing seeds on the CPU cost more than the whole
    baseline step at batch 16: benchmarks/speed.py); the CPU generator on the CPU."""
    if device.type == "cpu":
        return fallback
    try:
        return torch.Generator(device=device).manual_seed(seed)
    except (RuntimeError, TypeError):  # a device without its own generator
        return fallback
