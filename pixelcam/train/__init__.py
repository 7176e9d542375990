"""Training: baseline WSOL and PixelCAM phases, teacher-CAM cache, resumable runs."""

from pixelcam.train.config import TrainConfig
from pixelcam.train.events import EventLog, read_events
from pixelcam.train.loop import RunResult, TrainingError, resolve_device, train
from pixelcam.train.teacher import cached_teacher_cams, compute_teacher_cams

__all__ = [
    "EventLog",
    "RunResult",
    "TrainConfig",
    "TrainingError",
    "cached_teacher_cams",
    "compute_teacher_cams",
    "read_events",
    "resolve_device",
    "train",
]
