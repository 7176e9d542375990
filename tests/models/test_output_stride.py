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


@pytest.mark.parametrize("reg_tokens", [0, 4])
def test_any_timm_vit_gives_a_patch_grid_map_without_prefix_tokens(reg_tokens):
    """Register tokens (and the class token) are not pixels: the map is the patch grid."""
    model = build_model("test_vit", num_classes=2, pixel_head="linear", reg_tokens=reg_tokens)
    model.eval()
    assert model.backbone.num_prefix_tokens == 1 + reg_tokens
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        out = model(x)
        tokens = model.backbone.model.forward_features(x)  # [1, prefix + 100, C]
    grid = tokens[:, 1 + reg_tokens :].transpose(1, 2).reshape(1, -1, 10, 10)
    assert torch.allclose(out.features, grid, atol=1e-6)
    assert tuple(out.pixel_logits.shape) == (1, 2, 10, 10)


def test_train_output_stride_option_reaches_the_checkpoint_and_the_start_event(tmp_path):
    import json

    from pixelcam.cli import main

    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--backbone", "test_resnet", "--output-stride", "16",
            "--epochs", "1", "--synthetic-n-per-class", "6", "--synthetic-size", "48",
            "--resize", "48", "--crop", "40", "--eval-size", "48", "--batch-size", "4",
            "--json"]  # fmt: skip
    assert main(argv) == 0
    ckpt = json.loads((out / "last.json").read_text())
    assert ckpt["config"]["timm_kwargs"]["output_stride"] == 16
    start = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["feature_size"] == [3, 3]
    assert "maps 3x3 at 48 px" in start["message"]


def test_a_pixelcam_student_takes_a_finer_output_stride_than_its_teacher(tmp_path):
    """The teacher trains at stride 32; ``--output-stride 16`` on the PixelCAM run gives the
    student 2x finer pixel features, starting from the teacher's weights."""
    import json

    from pixelcam.cli import main

    common = ["--backbone", "test_resnet", "--epochs", "1", "--synthetic-n-per-class", "6",
              "--synthetic-size", "64", "--resize", "64", "--crop", "64", "--eval-size", "64",
              "--batch-size", "4", "--data-root", str(tmp_path / "data")]  # fmt: skip
    assert main(["train", "--out", str(tmp_path / "t"), "--output-stride", "32", *common]) == 0
    argv = ["train", "--out", str(tmp_path / "p"), "--phase", "pixelcam", "--teacher",
            str(tmp_path / "t"), "--output-stride", "16", "--json", *common]  # fmt: skip
    assert main(argv) == 0
    ckpt = json.loads((tmp_path / "p" / "last.json").read_text())
    assert ckpt["config"]["timm_kwargs"]["output_stride"] == 16
    start = json.loads((tmp_path / "p" / "events.jsonl").read_text().splitlines()[0])
    assert start["feature_size"] == [4, 4]  # 64 px at stride 16 (the teacher's: 2x2)
