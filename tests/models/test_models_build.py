"""build_model: backbones, heads, pixel heads, config, parameter groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixelcam.errors import InputError
from pixelcam.models import (
    Backbone,
    ModelOutput,
    build_model,
    known_backbones,
    sat_regularization,
)


def test_resnet50_parameter_counts_and_wsol_strides():
    model = build_model("resnet50", num_classes=2, head="gap", pixel_head="linear")
    assert model.num_parameters("pixel_head") == 2048 * 2 + 2 == 4098
    assert model.num_parameters("backbone") == 23_508_032
    assert model.num_parameters("head") == 2048 * 2 + 2
    assert model.feature_channels == 2048
    net = model.backbone.model
    for layer in (net.layer3, net.layer4):
        assert layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (1, 1)
    assert net.layer2[0].conv2.stride == (2, 2)  # only layer3/layer4 change


def test_deit_tiny_pixel_head_has_386_parameters_and_mlp_variant_halves_channels():
    model = build_model("deit_tiny_patch16_224", num_classes=2, head="gap", pixel_head="linear")
    assert model.num_parameters("pixel_head") == 192 * 2 + 2 == 386
    mlp = build_model("deit_tiny_patch16_224", num_classes=2, pixel_head="mlp")
    convs = [m for m in mlp.pixel_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(192, 96), (96, 48), (48, 2)]
    assert build_model("resnet18", pixel_head=None).pixel_head is None


@pytest.mark.parametrize(
    ("wsol_stride", "size", "expected"), [(True, 224, (512, 28, 28)), (False, 64, (512, 2, 2))]
)
def test_resnet18_feature_map_with_and_without_wsol_stride(wsol_stride, size, expected):
    model = build_model("resnet18", wsol_stride=wsol_stride).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert tuple(out.features.shape[1:]) == expected
    assert out.pixel_logits.shape == (1, 2, *expected[1:])
    assert out.logits.shape == (1, 2)


def test_deit_tiny_gives_the_normed_patch_tokens_as_a_192x14x14_map():
    model = build_model("deit_tiny_patch16_224", num_classes=3, head="gap").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        tokens = model.backbone.model.forward_features(x)  # [1, 1 + 196, 192], normed
    assert out.features.shape == (1, 192, 14, 14)
    assert torch.allclose(out.features.flatten(2).transpose(1, 2), tokens[:, 1:])
    with torch.no_grad():  # other sizes work (dynamic position embedding)
        assert model(torch.randn(1, 3, 64, 96)).features.shape == (1, 192, 4, 6)


@pytest.mark.parametrize(
    ("name", "size", "channels", "grid"),
    [
        ("tf_efficientnet_lite0", 64, 1280, (2, 2)),
        ("inception_v3", 96, 2048, (1, 1)),
        ("mobilenetv3_small_050", 64, 288, (2, 2)),  # unregistered: channels probed (not 1024)
    ],
)
def test_other_timm_backbones_use_forward_features(name, size, channels, grid):
    model = build_model(name, num_classes=2, head="deepmil").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.features.shape == (1, channels, *grid)
    assert model.feature_channels == channels
    assert out.attention.shape == (1, *grid)


def test_vgg16_wsol_drops_the_last_maxpool_and_the_pre_logits_mlp():
    model = build_model("vgg16", num_classes=2, head="gap", pixel_head=None)
    assert model.num_parameters("backbone") == 14_714_688  # the 13 convs only
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 64))
    assert out.features.shape == (1, 512, 4, 4)  # stride 16 instead of 32


def test_registry_documents_the_paper_backbones_but_any_timm_name_is_accepted():
    known = known_backbones()
    for name in (
        "resnet50",
        "resnet18",
        "vgg16",
        "inception_v3",
        "deit_tiny_patch16_224",
        "tf_efficientnet_lite0",
    ):
        assert name in known and known[name].notes
    assert known["resnet50"].channels == 2048
    with pytest.raises(InputError, match="unknown backbone 'resnet51'"):
        build_model("resnet51")


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError, match="unknown head 'gmp'"):
        build_model(head="gmp")
    with pytest.raises(InputError, match="unknown pixel head 'conv3'"):
        build_model(pixel_head="conv3")
    with pytest.raises(InputError, match="num_classes"):
        build_model(num_classes=0)
    with pytest.raises(InputError, match="'sat' head needs a vision transformer"):
        build_model("resnet18", head="sat")
    with pytest.raises(InputError, match="takes no option"):
        build_model(head="gap", mil_hidden=64)
    with pytest.raises(InputError, match=r"\[B, C, H, W\]"):
        build_model()(torch.randn(3, 8, 8))


def test_config_is_json_able_and_rebuilds_the_same_architecture():
    import json

    model = build_model(
        "resnet18", 4, "deepmil", "mlp", wsol_stride=False, mil_hidden=32, drop_rate=0.1
    )
    cfg = json.loads(json.dumps(model.config))
    assert cfg["head_kwargs"] == {"mil_hidden": 32}
    assert cfg["timm_kwargs"] == {"drop_rate": 0.1}
    again = build_model(**cfg)
    assert again.config == model.config
    assert again.head.attention_v.out_channels == 32
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert model.num_classes == 4 and model.feature_channels == 512


def test_deepmil_head_is_gated_attention_pooling():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2, head="deepmil", pixel_head=None).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
        h = model.head
        f = out.features
        gated = torch.tanh(h.attention_v(f)) * torch.sigmoid(h.attention_u(f))
        scores = h.attention_w(gated)[:, 0]
        a = torch.softmax(scores.flatten(1), 1)
        pooled = (f.flatten(2) * a[:, None]).sum(-1)
        logits = h.classifier(pooled)
    assert torch.allclose(out.attention, scores, atol=1e-5)
    assert torch.allclose(out.logits, logits, atol=1e-5)


def test_gap_head_closed_form_gradient_equals_autograd():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, head="gap", pixel_head=None).eval()
    feats = torch.randn(2, 512, 5, 7, requires_grad=True)
    target = torch.tensor([2, 0])
    logits = model.head(feats).logits
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), feats)
    closed = model.head.closed_form_gradient(feats, target)
    assert closed.shape == (2, 512, 1, 1)
    assert torch.allclose(g, closed.expand_as(g), atol=1e-8)
    with pytest.raises(InputError, match="no closed-form gradient"):
        build_model(head="deepmil").head.closed_form_gradient(feats, target)


def test_sat_head_outputs_and_regularization():
    torch.manual_seed(0)
    model = build_model("deit_tiny_patch16_224", num_classes=2, head="sat").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        feats, extras = model.forward_features(x)
    masks = extras["sat_masks"]
    assert masks.shape == (2, 3, 4, 4)  # the last 3 blocks
    assert isinstance(out, ModelOutput)
    assert torch.allclose(out.attention, masks.mean(1))
    assert float(out.attention.min()) > 0 and float(out.attention.max()) < 1  # sigmoids
    assert torch.allclose(out.sat_mean_activation, out.attention.flatten(1).mean(1))
    smooth = F.conv2d(out.attention[:, None], model.head.smooth_kernel, padding=1)
    assert torch.allclose(out.sat_norm, ((1 - smooth) * smooth).flatten(1).mean(1))
    assert torch.allclose(model.head.smooth_kernel.sum(), torch.tensor(1.0))
    assert torch.allclose(
        out.logits, model.head.classifier(out.features).mean(dim=(2, 3)), atol=1e-6
    )
    reg = sat_regularization(out.sat_mean_activation, out.sat_norm, area=0.35)
    expected = (out.sat_mean_activation.mean() - 0.35).abs() + out.sat_norm.mean()
    assert torch.allclose(reg, expected)
    # the loc token changes the patch features only through the masked blocks
    plain = Backbone("deit_tiny_patch16_224")
    plain.load_state_dict(model.backbone.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), out.features)


def test_sat_block_matches_the_authors_formula():
    """Re-derive one masked block: mask = sigmoid(mean over heads of the loc token's
    attention logits); attention probabilities of every query are multiplied by it."""
    from pixelcam.models.backbones import _sat_block

    torch.manual_seed(0)
    bb = Backbone("deit_tiny_patch16_224").eval()
    blk = bb.model.blocks[-1]
    x = torch.randn(2, 6, 192)  # 5 tokens + the loc token last
    with torch.no_grad():
        out, mask = _sat_block(blk, x)
        a = blk.attn
        y = blk.norm1(x)
        qkv = a.qkv(y).reshape(2, 6, 3, 3, 64).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = q @ k.transpose(-2, -1) * 64**-0.5
        ref_mask = torch.sigmoid(logits[:, :, -1:, :].mean(1, keepdim=True))  # [B,1,1,N]
        attn = logits.softmax(-1) * ref_mask
        o = a.proj((attn @ v).transpose(1, 2).reshape(2, 6, 192))
        ref = x + o
        ref = ref + blk.mlp(blk.norm2(ref))
    assert torch.allclose(mask, ref_mask[:, 0, 0], atol=1e-6)
    assert torch.allclose(out, ref, atol=1e-5)
    with torch.no_grad():  # an unmasked block differs: the mask is really applied
        assert not torch.allclose(blk(x), out, atol=1e-3)


def test_sat_blocks_must_fit_the_transformer_depth():
    with pytest.raises(InputError, match="sat_blocks must be in 1..12"):
        build_model("deit_tiny_patch16_224", head="sat", sat_blocks=0)
    with pytest.raises(InputError, match="sat_blocks must be in 1..12"):
        build_model("deit_tiny_patch16_224", head="sat", sat_blocks=13)


@pytest.mark.parametrize(("name", "head"), [("resnet18", "gap"), ("deit_tiny_patch16_224", "sat")])
def test_param_groups_partition_parameters_with_10x_on_last_stage_and_heads(name, head):
    model = build_model(name, num_classes=2, head=head)
    groups = model.param_groups(lr=1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    fast = {id(p) for p in groups[1]["params"]}
    assert all(id(p) in fast for p in model.head.parameters())
    assert all(id(p) in fast for p in model.pixel_head.parameters())
    if name == "resnet18":
        names = {n for n, p in model.backbone.model.named_parameters() if id(p) in fast}
        assert names and all(n.startswith("layer4.") for n in names)
        assert len(names) == len(list(model.backbone.model.layer4.parameters()))
    else:
        last = model.backbone.model.blocks[-1]
        assert all(id(p) in fast for p in last.parameters())
        assert all(id(p) not in fast for p in model.backbone.model.blocks[0].parameters())
    assert model.param_groups(1.0, head_lr_mult=5)[1]["lr"] == 5.0


def test_unregistered_vits_drop_all_prefix_tokens_and_accept_any_size():
    model = build_model("deit_tiny_distilled_patch16_224", head="sat").eval()  # cls + dist
    assert model.backbone.num_prefix_tokens == 2
    assert model.backbone.model.dynamic_img_size
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        out = model(x)
        tokens = model.backbone.model.forward_features(x)
    assert out.features.shape == (1, 192, 3, 4)
    assert out.attention.shape == (1, 3, 4)
    plain = build_model("deit_tiny_distilled_patch16_224").eval()
    plain.backbone.load_state_dict(model.backbone.state_dict())
    with torch.no_grad():
        feats = plain(x).features
    assert torch.allclose(feats.flatten(2).transpose(1, 2), tokens[:, 2:], atol=1e-6)


def test_bad_timm_options_are_input_errors():
    with pytest.raises(InputError, match="cannot create backbone 'resnet18'.*foo"):
        build_model("resnet18", foo=3)
