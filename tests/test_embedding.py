"""FG/BG pixel labels on the feature grid, t-SNE embedding and separability J."""

from __future__ import annotations

import numpy as np
import pytest

from pixelcam.embedding import (
    MIN_PIXELS_PER_CLASS,
    embed_pixels,
    feature_cell_centres,
    pixel_labels_from_mask,
    pixel_labels_from_points,
)
from pixelcam.errors import InputError
from pixelcam.metrics import separability_index


def embed(features, labels, **kw):
    """``embed_pixels`` on one OpenMP thread: on a busy 2-core machine t-SNE's spinning
    OpenMP threads make it 10-50x slower (measured here)."""
    return embed_pixels(features, labels, threads=1, **kw)


def _blobs(gap: float, h: int = 12, w: int = 12, c: int = 16, seed: int = 0):
    """Feature map whose left half (BG) and right half (FG) are Gaussian blobs ``gap`` apart."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 2 :] = 1
    feats = rng.normal(size=(c, h, w)).astype(np.float32)
    feats[0] += gap * labels
    return feats, labels


def _knn_accuracy(xy: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float(((y[nn].mean(1) > 0.5) == y).mean())


def test_mask_majority_per_cell_and_ignore():
    mask = np.zeros((8, 8), np.uint8)
    mask[:4, :4] = 1  # top-left cell fully FG
    mask[4:, 4:5] = 2  # instance label 2 = FG, but only a quarter of the cell: BG wins
    mask[:4, 4:] = 255  # top-right cell unknown
    mask[4:, :2] = 1  # bottom-left: exactly half FG -> tie -> unknown
    out = pixel_labels_from_mask(mask, (2, 2))
    assert out.dtype == np.uint8
    assert out.tolist() == [[1, 255], [255, 0]]


def test_mask_non_integer_ratio_and_coarse_mask():
    mask = np.zeros((10, 7), np.uint8)
    mask[:, 4:] = 1
    out = pixel_labels_from_mask(mask, (3, 2))
    assert out.shape == (3, 2) and (out[:, 0] == 0).all() and (out[:, 1] == 1).all()
    coarse = np.array([[0, 1], [255, 1]], np.uint8)  # smaller than the grid: nearest pixel
    assert pixel_labels_from_mask(coarse, (4, 4)).tolist() == [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [255, 255, 1, 1],
        [255, 255, 1, 1],
    ]
    with pytest.raises(InputError, match="2-D"):
        pixel_labels_from_mask(np.zeros((4, 4, 3)), (2, 2))


def test_nearest_rule_matches_feature_map_separability():
    from pixelcam.metrics import feature_map_separability

    rng = np.random.default_rng(0)
    mask = (rng.random((50, 37)) > 0.6).astype(np.uint8)
    mask[:5] = 255
    feats = rng.normal(size=(4, 7, 6)).astype(np.float32)
    near = pixel_labels_from_mask(mask, (7, 6), rule="nearest")
    assert not np.array_equal(near, pixel_labels_from_mask(mask, (7, 6)))
    keep = near != 255
    j = separability_index(feats[:, keep].T, near[keep])
    assert np.isclose(j, feature_map_separability(feats, mask))
    with pytest.raises(InputError, match="rule"):
        pixel_labels_from_mask(mask, (7, 6), rule="mean")


def test_points_fall_in_their_cells_with_majority():
    coords = np.array([[0, 0], [1, 1], [2, 2], [9, 9], [9.4, 0], [5, 5], [50, 50], [-3, 1]])
    labels = np.array([1, 1, 0, 0, 1, 255, 1, 0])
    out = pixel_labels_from_points(coords, labels, (10, 10), (2, 2))
    # cell (0,0): 1,1,0 -> 1; (1,1): 0 and the uncertain 255 is skipped -> 0;
    # (1,0): one FG point; (0,1): nothing; (50,50) and (-3,1) are outside the image
    assert out.tolist() == [[1, 255], [1, 0]]
    tie = pixel_labels_from_points([[0, 0], [1, 1]], [0, 1], (10, 10), (2, 2))
    assert tie[0, 0] == 255
    with pytest.raises(InputError, match="labels"):
        pixel_labels_from_points(coords, labels[:3], (10, 10), (2, 2))


def test_cell_centres_in_image_pixel_coordinates():
    centres = feature_cell_centres([0, 1], [0, 3], (2, 4), (8, 16))
    # cells of 4x4 image pixels: the first covers pixels 0..3, centre 1.5
    assert np.allclose(centres, [[1.5, 1.5], [5.5, 13.5]])
    # a point at the centre maps back to its own cell
    back = pixel_labels_from_points(centres, [1, 0], (8, 16), (2, 4))
    assert back[0, 0] == 1 and back[1, 3] == 0 and (back == 255).sum() == 6


def test_separated_blobs_give_high_j_and_separate_clusters():
    feats, labels = _blobs(gap=12.0)
    emb = embed(feats, labels, perplexity=10)
    assert emb.xy.shape == (144, 2) and emb.counts == (72, 72) and emb.feature_hw == (12, 12)
    assert emb.j > 2.0  # S_B / S_W = (gap / 2)^2 / C = 2.25 in expectation
    assert _knn_accuracy(emb.xy, emb.labels) > 0.95
    # rows/cols point back at the labels of the cells they came from
    assert (labels[emb.rows, emb.cols] == emb.labels).all()
    assert np.isclose(emb.j, separability_index(feats.reshape(16, -1).T, labels.ravel()))


def test_overlapping_blobs_give_low_j():
    feats, labels = _blobs(gap=0.0)
    emb = embed(feats, labels, perplexity=10)
    assert emb.j < 0.1
    sep = embed(*_blobs(gap=12.0), perplexity=10)
    assert sep.j > 50 * emb.j


def test_deterministic_for_a_seed():
    # (with init="pca" the seed only matters for the subsample: tested below)
    feats, labels = _blobs(gap=3.0)
    a = embed(feats, labels, perplexity=10, seed=3)
    b = embed(feats, labels, perplexity=10, seed=3)
    assert np.array_equal(a.xy, b.xy) and a.j == b.j


def test_threads_limit_openmp_during_tsne_only(monkeypatch):
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_info

    def openmp_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]

    seen = []
    fit = TSNE.fit_transform
    monkeypatch.setattr(
        TSNE, "fit_transform", lambda self, x: seen.append(openmp_threads()) or fit(self, x)
    )
    before = openmp_threads()
    embed_pixels(*_blobs(gap=3.0, h=6, w=6), perplexity=5, threads=1)
    assert seen[-1] and set(seen[-1]) == {1}
    assert openmp_threads() == before


def test_subsampling_is_stratified_and_j_uses_all_pixels():
    feats, labels = _blobs(gap=4.0, h=30, w=30, c=8)
    labels[:, 15:] = 0
    labels[:3, :3] = 1  # 9 FG pixels among 900
    labels[20:, 20:] = 255  # unknown: left out
    emb = embed(feats, labels, max_points=60, perplexity=10, seed=1)
    assert len(emb.xy) == 60
    assert (emb.labels == 1).sum() >= MIN_PIXELS_PER_CLASS and (emb.labels == 0).sum() > 40
    assert emb.counts == (int((labels == 0).sum()), 9)
    keep = labels != 255
    full = separability_index(feats[:, keep].T, labels[keep])
    assert np.isclose(emb.j, full)
    other = embed(feats, labels, max_points=60, perplexity=10, seed=2)
    assert not np.array_equal(np.c_[emb.rows, emb.cols], np.c_[other.rows, other.cols])


def test_too_few_pixels_and_bad_shapes_are_input_errors():
    feats, labels = _blobs(gap=1.0, h=6, w=6)
    labels[:] = 0
    labels[0, :4] = 1
    with pytest.raises(InputError, match="only 4 foreground"):
        embed(feats, labels)
    with pytest.raises(InputError, match="feature grid"):
        embed(feats, labels[:5])
    with pytest.raises(InputError, match=r"\[C, h, w\]"):
        embed(feats[0], labels)
