"""Image classification accuracy, streaming, with per-class accuracy and confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelcam.metrics.pxap import to_numpy


def _preds_and_labels(logits_or_preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes (argmax of logits ``[B, K]``, or classes ``[B]``) and labels ``[B]``."""
    arr = to_numpy(logits_or_preds)
    if arr.ndim == 2:
        preds = arr.argmax(axis=1)
    elif arr.ndim <= 1:
        preds = arr.ravel()
        if preds.size and not np.array_equal(preds, np.round(preds)):
            raise ValueError("predictions [B] must be class indices (pass logits as [B, K])")
    else:
        raise ValueError(f"expected logits [B, K] or predictions [B], got shape {arr.shape}")
    labels = to_numpy(labels).ravel()
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels")
    return preds.astype(np.int64), labels.astype(np.int64)


def accuracy(logits_or_preds: Any, labels: Any) -> float:
    """Accuracy in % of logits ``[B, K]`` or predicted classes ``[B]`` against ``labels``
    (numpy or torch); NaN for an empty batch."""
    preds, labels = _preds_and_labels(logits_or_preds, labels)
    if labels.size == 0:
        return float("nan")
    return float(100.0 * (preds == labels).mean())


class ClassificationAccumulator:
    """Confusion matrix over batches; ``confusion[t, p]`` counts images of true class ``t``
    predicted as class ``p``."""

    def __init__(self, num_classes: int) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, logits_or_preds: Any, labels: Any) -> None:
        """Add logits ``[B, K]`` or predicted classes ``[B]`` with their labels ``[B]``."""
        preds, labels = _preds_and_labels(logits_or_preds, labels)
        k = self.num_classes
        for name, arr in (("label", labels), ("prediction", preds)):
            if arr.size and (arr.min() < 0 or arr.max() >= k):
                raise ValueError(
                    f"{name} out of range for {k} classes: values in [{arr.min()}, {arr.max()}]"
                )
        self.confusion += np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)

    def merge(self, other: ClassificationAccumulator) -> ClassificationAccumulator:
        """Add another accumulator's counts (e.g. from another process); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.confusion += other.confusion
        return self

    @property
    def num_samples(self) -> int:
        return int(self.confusion.sum())

    def accuracy(self) -> float:
        """Overall accuracy in %; NaN before any update."""
        total = self.confusion.sum()
        return float(100.0 * np.trace(self.confusion) / total) if total else float("nan")

    def per_class_accuracy(self) -> np.ndarray:
        """Accuracy in % of each true class (recall per class); NaN for a class not seen."""
        rows = self.confusion.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * np.diag(self.confusion) / rows
