"""Image classification accuracy, streaming, with per-class accuracy and confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelcam.metrics.pxap import to_numpy


def _preds(logits_or_preds: Any) -> np.ndarray:
    arr = to_numpy(logits_or_preds)
    return arr.argmax(axis=1) if arr.ndim == 2 else arr.astype(np.int64).ravel()


def accuracy(logits_or_preds: Any, labels: Any) -> float:
    """Accuracy in % of logits ``[B, K]`` or predicted classes ``[B]`` against ``labels``."""
    preds, labels = _preds(logits_or_preds), to_numpy(labels).astype(np.int64).ravel()
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels")
    if labels.size == 0:
        return float("nan")
    return float(100.0 * (preds == labels).mean())


class ClassificationAccumulator:
    """Confusion matrix over batches; rows = true class, columns = predicted class."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, logits_or_preds: Any, labels: Any) -> None:
        preds, labels = _preds(logits_or_preds), to_numpy(labels).astype(np.int64).ravel()
        if preds.shape != labels.shape:
            raise ValueError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels")
        k = self.num_classes
        if labels.size and (labels.min() < 0 or labels.max() >= k or preds.max() >= k):
            raise ValueError(f"class index out of range for {k} classes")
        np.add.at(self.confusion, (labels, preds), 1)

    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(100.0 * np.trace(self.confusion) / total) if total else float("nan")

    def per_class_accuracy(self) -> np.ndarray:
        rows = self.confusion.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * np.diag(self.confusion) / rows
