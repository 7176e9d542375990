"""Saved point annotations reach the pixel loss as trusted labels; GT masks never do."""

from __future__ import annotations

import numpy as np
import torch

from pixelcam.annotations import AnnotationSet, save_annotations
from pixelcam.data import open_dataset
from pixelcam.data.transforms import TrainTransform
from pixelcam.pseudo_labels import IGNORE
from pixelcam.train import TrainConfig, read_events, train
from pixelcam.train.datasets import TrainingView
from pixelcam.train.phases._seeded import draw_seeds as _seeds


def _dataset(tmp_path):
    return open_dataset("synthetic", tmp_path / "data", split="train", n_per_class=4, size=64)


def test_training_view_carries_points_not_masks(tmp_path):
    ds = _dataset(tmp_path)
    rec = ds.records[0]
    ann = AnnotationSet.from_arrays(rec.id, (64, 64), np.array([[10.0, 12.0], [40.0, 50.0]]),
                                    np.array([1, 0]))  # fmt: skip
    plain = TrainTransform(resize=64, crop=64, hflip=False, vflip=False, color_jitter=None)
    view = TrainingView(ds, plain, None, {rec.id: ann}, resize=64)
    sample = view[0]
    pts = sample.mask.numpy()
    assert pts[10, 12] == 1 and pts[40, 50] == 0
    assert ((pts == 1) | (pts == 0)).sum() < 30 and (pts == IGNORE).sum() > 4000
    assert view[1].mask is None  # no annotation: no label at all (the GT mask is not read)


def test_user_points_override_sampled_seeds():
    cams = torch.zeros(1, 8, 8)
    cams[0, :, 4:] = 1.0
    points = torch.full((1, 8, 8), IGNORE, dtype=torch.uint8)
    points[0, 0, 0] = 1  # the user says: foreground, where the CAM says background
    batch = {"cam": cams, "label": torch.tensor([1]), "mask": points}
    cfg = TrainConfig(out="x", n=3)
    seeds = _seeds(batch, cfg, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert seeds[0, 0, 0] == 1 and (seeds == 1).sum() >= 3


def test_pixelcam_run_with_annotation_folder(tmp_path):
    common = dict(dataset="synthetic", backbone="test_resnet", data_root=str(tmp_path / "data"),
                  synthetic_n_per_class=6, synthetic_size=64, resize=64, crop=56, eval_size=64,
                  batch_size=4, device="cpu")  # fmt: skip
    train(TrainConfig(out=str(tmp_path / "b"), epochs=1, **common))
    ds = open_dataset("folder", tmp_path / "data", split="train")
    notes = tmp_path / "notes"
    rec = ds.records[0]
    ann = AnnotationSet.from_arrays(rec.id, (64, 64), np.array([[5.0, 5.0]]), np.array([0]),
                                    image_path=str(rec.image_path))  # fmt: skip
    save_annotations(notes / f"{rec.image_path.stem}.points.csv", ann)
    res = train(TrainConfig(out=str(tmp_path / "p"), phase="pixelcam", teacher=str(tmp_path / "b"),
                            annotations=str(notes), epochs=1, **common))  # fmt: skip
    assert len(res.history) == 2
    msgs = [e.get("message", "") for e in read_events(tmp_path / "p" / "events.jsonl")]
    assert any("1 images with saved point annotations" in m for m in msgs)
