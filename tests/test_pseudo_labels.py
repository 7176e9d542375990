from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from pixelcam.pseudo_labels import IGNORE, otsu_thresholds, sample_seeds


def _ramp_cams(b=4, h=20, w=30):
    ramp = torch.linspace(0, 1, w).expand(h, w)
    return ramp.expand(b, h, w).clone()


@pytest.mark.parametrize("sampler", ["pb", "th", "extremes"])
def test_n_fg_and_n_bg_seeds_per_image(sampler):
    seeds = sample_seeds(
        _ramp_cams(), n=5, sampler=sampler, generator=torch.Generator().manual_seed(0)
    )
    assert seeds.shape == (4, 20, 30)
    for s in seeds:
        assert (s == 1).sum() == 5 and (s == 0).sum() == 5
        assert ((s == 1) | (s == 0) | (s == IGNORE)).all()


def test_pb_background_only_in_lowest_fraction_and_foreground_favours_high_cam():
    cams = _ramp_cams(b=64)
    seeds = sample_seeds(cams, n=5, sampler="pb", generator=torch.Generator().manual_seed(1))
    low_cut = torch.quantile(cams[0].flatten(), 0.2)
    assert (cams[seeds == 0] <= low_cut + 1e-6).all()
    # multinomial on the CAM: foreground seeds sit high on the ramp on average
    assert cams[seeds == 1].mean() > 0.6


def test_pb_foreground_never_where_cam_is_zero_when_enough_mass_elsewhere():
    cams = torch.zeros(8, 16, 16)
    cams[:, 4:12, 4:12] = 1.0
    seeds = sample_seeds(cams, n=5, generator=torch.Generator().manual_seed(2))
    assert (cams[seeds == 1] == 1.0).all()
    assert (cams[seeds == 0] == 0.0).all()


@pytest.mark.parametrize("fraction", [0.05, 0.2])
def test_extremes_seeds_only_in_the_top_and_bottom_fraction(fraction):
    cams = _ramp_cams(b=32) + 0.001 * torch.rand(
        32, 20, 30, generator=torch.Generator().manual_seed(4)
    )
    seeds = sample_seeds(cams, n=5, sampler="extremes", bg_fraction=fraction,
                         generator=torch.Generator().manual_seed(5))  # fmt: skip
    for cam, s in zip(cams, seeds):
        high, low = (
            torch.quantile(cam.flatten(), 1 - fraction),
            torch.quantile(cam.flatten(), fraction),
        )
        assert (cam[s == 1] >= high - 1e-6).all() and (cam[s == 0] <= low + 1e-6).all()
        assert (s == 1).sum() == 5 and (s == 0).sum() == 5
    # uniform within the fraction: the draws spread over it, not only its extreme pixels
    assert len(set(torch.nonzero(seeds == 1)[:, 2].tolist())) > 1


def test_th_seeds_respect_otsu_split():
    cams = torch.zeros(3, 16, 16)
    cams[:, :, 8:] = 0.9
    seeds = sample_seeds(cams, n=4, sampler="th", generator=torch.Generator().manual_seed(3))
    assert (cams[seeds == 1] == 0.9).all() and (cams[seeds == 0] == 0.0).all()


def test_otsu_matches_skimage():
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0.25, 0.05, 500), rng.normal(0.7, 0.08, 300)]).clip(0, 1)
    ours = otsu_thresholds(torch.tensor(data, dtype=torch.float32)[None])[0].item()
    assert abs(ours - threshold_otsu(data, nbins=256)) < 2.0 / 255


def test_conflicts_ignored_and_eligibility_respected():
    cams = torch.full((2, 3, 3), 0.5)  # constant: every pixel may be drawn as both
    seeds = sample_seeds(cams, n=9, bg_fraction=1.0, generator=torch.Generator().manual_seed(0))
    assert (seeds == IGNORE).all()  # all 9 pixels drawn as FG and as BG -> all ignored
    seeds = sample_seeds(_ramp_cams(2), n=3, eligible=torch.tensor([True, False]))
    assert (seeds[1] == IGNORE).all() and (seeds[0] != IGNORE).sum() == 6


def test_seeded_generator_is_reproducible_and_nan_safe():
    cams = torch.rand(2, 10, 10)
    cams[0, 0, 0] = float("nan")
    a = sample_seeds(cams, generator=torch.Generator().manual_seed(5))
    b = sample_seeds(cams, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"sampler": "x"}, {"bg_fraction": 0.0}], ids=["n", "sampler", "frac"]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        sample_seeds(torch.rand(1, 4, 4), **kwargs)
