from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelcam.metrics import ClassificationAccumulator, accuracy


def test_accuracy_from_logits_and_predictions():
    logits = np.array([[2.0, 0.1], [0.1, 2.0], [3.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    assert accuracy(logits, labels) == 75.0
    assert accuracy(np.array([0, 1, 0, 1]), labels) == 75.0
    assert accuracy(torch.tensor(logits), torch.tensor(labels)) == 75.0
    assert accuracy(torch.tensor([1, 1, 1, 1]), labels.tolist()) == 75.0
    assert accuracy(np.array([0, 0, 0, 0]), labels) == 25.0
    assert np.isnan(accuracy(np.zeros((0, 2)), np.zeros(0)))


def test_accuracy_bad_inputs():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        accuracy(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="class indices"):
        accuracy(np.array([0.2, 0.9]), [0, 1])  # probabilities of one class are not classes
    with pytest.raises(ValueError, match="shape"):
        accuracy(np.zeros((2, 2, 2)), [0, 1])


def test_accumulator_streams_confusion_and_per_class():
    logits = np.array([[2.0, 0.1, 0.0], [0.1, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = np.array([0, 1, 1, 1])
    acc = ClassificationAccumulator(3)
    assert np.isnan(acc.accuracy())
    acc.update(torch.tensor(logits[:2]), torch.tensor(labels[:2]))
    acc.update(np.array([0, 1]), labels[2:])
    assert acc.num_samples == 4
    assert acc.accuracy() == 75.0
    # rows: true class, columns: predicted class
    assert acc.confusion.tolist() == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    per = acc.per_class_accuracy()
    assert per[:2] == pytest.approx([100.0, 200 / 3]) and np.isnan(per[2])  # class 2 unseen
    other = ClassificationAccumulator(3)
    other.update(np.array([2, 2]), np.array([2, 0]))
    assert acc.merge(other) is acc
    assert acc.confusion.tolist() == [[1, 0, 1], [1, 2, 0], [0, 0, 1]]
    assert acc.accuracy() == pytest.approx(100 * 4 / 6)
    acc.reset()
    assert acc.num_samples == 0 and not acc.confusion.any()


def test_accumulator_rejects_out_of_range_and_mismatch():
    acc = ClassificationAccumulator(2)
    with pytest.raises(ValueError, match="label out of range"):
        acc.update(np.array([0, 1]), np.array([0, 2]))
    with pytest.raises(ValueError, match="prediction out of range"):
        acc.update(np.array([0, -1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="3 classes"):
        acc.merge(ClassificationAccumulator(3))
    with pytest.raises(ValueError):
        ClassificationAccumulator(0)
    assert acc.num_samples == 0  # failed updates leave no trace
