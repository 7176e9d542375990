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
