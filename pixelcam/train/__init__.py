"""Training: the loop, one module per phase (:mod:`pixelcam.train.phases`), model
selection (:mod:`pixelcam.train.selection`), teacher-CAM cache, resumable runs.

Imported lazily: ``pixelcam.train.config`` and ``pixelcam.train.phases`` load without
torch, so views and the CLI list choices cheaply.
"""

from __future__ import annotations

from pixelcam import lazy_attributes

_API = {
    "EventLog": "pixelcam.train.events",
    "read_events": "pixelcam.train.events",
    "RunResult": "pixelcam.train.loop",
    "TrainingError": "pixelcam.train.loop",
    "train": "pixelcam.train.loop",
    "TrainConfig": "pixelcam.train.config",
    "cached_teacher_cams": "pixelcam.train.teacher",
    "compute_teacher_cams": "pixelcam.train.teacher",
    "resolve_device": "pixelcam.device",
}

__all__ = sorted(_API)


__getattr__ = lazy_attributes(__name__, _API)
