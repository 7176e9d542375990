"""Test-time views of a map (pixelcam.cams.views): what the teacher CAMs are averaged over."""

from __future__ import annotations

import pytest
import torch

from pixelcam.cams import compute_maps
from pixelcam.cams.views import VIEWS, viewed_maps
from pixelcam.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("test_resnet", num_classes=2, head="gap").eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 96)


def test_single_view_is_the_one_pass_map(model, images):
    one = compute_maps(model, images, ["layercam"], target=[0, 1]).maps["layercam"]
    assert torch.equal(viewed_maps(model, images, "layercam", [0, 1], "single"), one)


@pytest.mark.parametrize("views", ["flips", "multiscale"])
def test_flip_views_are_turned_back_onto_the_image(model, images, views):
    """The four flips are a group: the averaged map of a flipped image is the flipped map of
    the image. It fails if a view's map is not flipped back (or flipped the wrong way)."""
    m = viewed_maps(model, images, "gradcampp", [0, 1], views)
    assert m.shape == (2, 64, 96) and m.min() >= 0 and m.max() <= 1
    for dims in ((-1,), (-2,)):
        flipped = viewed_maps(model, torch.flip(images, dims), "gradcampp", [0, 1], views)
        torch.testing.assert_close(flipped, torch.flip(m, dims), atol=1e-4, rtol=0)


def test_views_change_the_map_and_count_their_forwards(model, images):
    single = viewed_maps(model, images, "cam", [0, 1], "single")
    multi = viewed_maps(model, images, "cam", [0, 1], "multiscale")
    assert (single - multi).abs().max() > 0.05
    assert {n: len(VIEWS.get(n)) for n in VIEWS.names()} == {
        "single": 1,
        "flips": 4,
        "multiscale": 12,
    }
