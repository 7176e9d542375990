"""benchmarks/feature_ceiling.py's seed precision: the share of gland among a CAM's top-q
pixels and of non-gland among its bottom-q, over all images and per image class."""

from __future__ import annotations

import torch


def test_seed_precision_over_all_images_and_per_class(load_benchmark):
    bench = load_benchmark("feature_ceiling")
    # two 10-pixel images: class 0 with a CAM that ranks its mask perfectly, class 1 with a
    # CAM that ranks it backwards (its top pixels are all background)
    masks = torch.tensor([[1.0] * 5 + [0.0] * 5, [1.0] * 5 + [0.0] * 5])
    cams = torch.stack([torch.linspace(1, 0, 10), torch.linspace(0, 1, 10)])
    rows = bench.precision_rows(cams, masks, torch.tensor([0, 1]))
    cells = {tuple(r.strip("| ").split(" | ")[:2]): r.strip("| ").split(" | ")[2:] for r in rows}
    assert cells[("class 0", "20 %")] == ["1.00", "1.00", "0.50"]
    assert cells[("class 1", "20 %")] == ["0.00", "0.00", "0.50"]
    assert cells[("all", "20 %")] == ["0.50", "0.50", "0.50"]
    assert len(rows) == 3 * 5  # all, class 0, class 1 x five q


def test_seed_precision_reads_the_cam_over_the_views_asked(load_benchmark, monkeypatch, tmp_path):
    """``--teacher-views`` measures the seeds PixelCAM trains on with those views: the CAM
    of each image comes from ``viewed_maps`` with them (and from one pass for single)."""
    import argparse

    import pixelcam.cams.views as views_module
    import pixelcam.data.glas as glas
    from pixelcam.data import open_dataset
    from pixelcam.data.synthetic import write_synthetic_dataset
    from pixelcam.models import build_model

    bench = load_benchmark("feature_ceiling")
    root = write_synthetic_dataset(tmp_path / "d", n_per_class=2, size=64, seed=0)
    monkeypatch.setattr(
        glas, "load_glas", lambda *a, split, **k: open_dataset("synthetic", root, split=split)
    )
    seen = []
    real = views_module.viewed_maps
    monkeypatch.setattr(views_module, "viewed_maps",
                        lambda *a: seen.append(a[-1]) or real(*a))  # fmt: skip
    torch.manual_seed(0)
    model = build_model("test_resnet", num_classes=2).eval()
    rows = {}
    for views in ("single", "multiscale"):
        args = argparse.Namespace(data_root=root, fold=None, folds_dir=None, teacher_views=views)
        rows[views] = bench.seed_precision(model, 64, "layercam", args)
    train = open_dataset("synthetic", root, split="train")
    assert seen == ["multiscale"] * len(train) and len(train) >= 2  # once per training image
    assert rows["single"] != rows["multiscale"]
