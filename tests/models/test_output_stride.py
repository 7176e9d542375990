"""Finer pixel features for any timm CNN through timm's ``output_stride`` (dilation)."""

from __future__ import annotations

import pytest
import torch

from pixelcam.errors import InputError
from pixelcam.models import build_model, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "convnext_atto"])
@pytest.mark.parametrize(("stride", "side"), [(None, 4), (16, 8), (8, 16)])
def test_output_stride_sets_the_map_size(backbone, stride, side):
    kw = {} if stride is None else {"output_stride": stride}
    model = build_model(backbone, num_classes=2, pixel_head="linear", **kw)
    assert model.feature_size(128) == (side, side)
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 128, 128))
    assert tuple(out.pixel_logits.shape[-2:]) == (side, side)


def test_output_stride_is_recorded_in_the_checkpoint(tmp_path):
    model = build_model("convnext_atto", num_classes=2, output_stride=16)
    save_checkpoint(model, tmp_path / "m", {"class_names": ["a", "b"]})
    again, _ = load_checkpoint(tmp_path / "m.json")
    assert again.config["timm_kwargs"]["output_stride"] == 16
    assert again.feature_size(128) == (8, 8)


def test_output_stride_refused_where_it_cannot_apply():
    with pytest.raises(InputError, match="one of \\(8, 16, 32\\)"):
        build_model("resnet18", output_stride=4)
    with pytest.raises(InputError, match="vision transformer"):
        build_model("deit_tiny_patch16_224", output_stride=16)
