"""Map methods: what each computes, the shared post-processing, targets, and compute_maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixelcam.cams import (
    CAMMethod,
    available_methods,
    compute_maps,
    get_method,
    method_names,
    minmax_normalize,
    upsample,
)
from pixelcam.errors import InputError
from pixelcam.models import build_model


@pytest.fixture(scope="module")
def gap_model():
    torch.manual_seed(1)
    return build_model("resnet18", num_classes=3, head="gap", pixel_head="linear").eval()


@pytest.fixture(scope="module")
def mil_model():
    torch.manual_seed(2)
    return build_model("resnet18", num_classes=2, head="deepmil", pixel_head="linear").eval()


@pytest.fixture(scope="module")
def sat_model():
    torch.manual_seed(3)
    return build_model("deit_tiny_patch16_224", num_classes=2, head="sat").eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(4)
    return torch.randn(2, 3, 64, 64)


def test_registry_lists_every_method_and_rejects_unknown_names():
    assert method_names() == [
        "cam",
        "gradcampp",
        "layercam",
        "deepmil",
        "sat",
        "pixelcam",
        "negev",
        "unet",
    ]
    with pytest.raises(InputError, match="unknown map method 'gradcam'.*available"):
        get_method("gradcam")
    with pytest.raises(InputError, match="gradient must be one of"):
        get_method("layercam", gradient="numerical")
    assert get_method("pixelcam", gradient="autograd").name == "pixelcam"  # option ignored


def test_available_methods_depend_on_heads(gap_model, mil_model, sat_model):
    assert available_methods(gap_model) == ["cam", "gradcampp", "layercam", "pixelcam"]
    assert available_methods(mil_model) == ["cam", "gradcampp", "layercam", "deepmil", "pixelcam"]
    assert available_methods(sat_model) == ["cam", "gradcampp", "layercam", "sat", "pixelcam"]
    no_pixel = build_model("resnet18", head="gap", pixel_head=None)
    assert "pixelcam" not in available_methods(no_pixel)
    assert not get_method("gradcampp", gradient="closed_form").supports(mil_model)
    assert get_method("gradcampp", gradient="closed_form").supports(gap_model)


def test_minmax_normalize_constant_maps_become_zero_and_others_span_0_1():
    maps = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).reshape(4, 4) - 5])
    out = minmax_normalize(maps)
    assert torch.equal(out[0], torch.zeros(4, 4))
    assert out[1].min() == 0 and out[1].max() == 1
    assert torch.allclose(out[1], (maps[1] + 5) / 15)


def test_finalize_turns_nan_to_zero_normalises_and_upsamples_bilinearly():
    raw = torch.tensor([[[float("nan"), 1.0], [2.0, 4.0]]])
    out = get_method("cam").finalize(raw, (4, 4))
    ref = F.interpolate(
        torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]]),
        size=(4, 4),
        mode="bilinear",
        align_corners=False,
    )[:, 0]
    assert torch.allclose(out, ref)
    # PixelCAM is not min-max normalised
    probs = torch.tensor([[[0.2, 0.3], [0.3, 0.4]]])
    assert torch.allclose(get_method("pixelcam").finalize(probs), probs)


def test_upsample_is_identity_at_the_same_size():
    m = torch.rand(1, 5, 7)
    assert upsample(m, (5, 7)) is m


def test_pixelcam_is_softmax_fg_probability_upsampled_not_normalised(gap_model, images):
    res = compute_maps(gap_model, images, ["pixelcam"])
    with torch.no_grad():
        out = gap_model(images)
    fg = torch.softmax(out.pixel_logits, dim=1)[:, 1]
    ref = F.interpolate(fg[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(res.maps["pixelcam"], ref, atol=1e-6)
    assert torch.allclose(res.pixel_probs, fg, atol=1e-6)
    assert res.maps["pixelcam"].max() < 0.999  # an untrained head: not stretched to [0, 1]


def test_pixelcam_is_class_agnostic(gap_model, images):
    a = compute_maps(gap_model, images, ["pixelcam"], target=0).maps["pixelcam"]
    b = compute_maps(gap_model, images, ["pixelcam"], target=2).maps["pixelcam"]
    assert torch.equal(a, b)


def test_cam_is_class_weights_times_features(gap_model, images):
    res = compute_maps(gap_model, images, ["cam"], target=[1, 2], size=(8, 8))
    w = gap_model.head.classifier.weight
    ref = torch.stack(
        [torch.einsum("c,chw->hw", w[t], res.features[i]) for i, t in enumerate([1, 2])]
    )
    assert torch.allclose(res.maps["cam"], minmax_normalize(ref), atol=1e-5)


def test_class_specific_maps_follow_the_target(gap_model, images):
    default = compute_maps(gap_model, images, ["cam", "layercam"])
    assert torch.equal(default.target, default.pred)
    assert torch.equal(default.pred, default.logits.argmax(1))
    assert torch.allclose(default.probs.sum(1), torch.ones(2))
    other = int((default.pred[0] + 1) % 3)
    given = compute_maps(gap_model, images, ["cam", "layercam"], target=torch.tensor([other, 0]))
    assert given.target.tolist() == [other, 0]
    assert not torch.allclose(given.maps["cam"][0], default.maps["cam"][0])


def test_bad_targets_are_input_errors(gap_model, images):
    with pytest.raises(InputError, match="out of range"):
        compute_maps(gap_model, images, ["cam"], target=3)
    with pytest.raises(InputError, match="3 labels for a batch of 2"):
        compute_maps(gap_model, images, ["cam"], target=[0, 1, 2])
    with pytest.raises(InputError, match="integer class indices"):
        compute_maps(gap_model, images, ["cam"], target=torch.tensor([0.5, 1.0]))


def test_deepmil_map_is_spatial_softmax_of_attention_scores(mil_model, images):
    res = compute_maps(mil_model, images, ["deepmil"], size=(8, 8))
    with torch.no_grad():
        scores = mil_model(images).attention
    soft = torch.softmax(scores.flatten(1), 1).reshape(scores.shape)
    assert torch.allclose(res.maps["deepmil"], minmax_normalize(soft), atol=1e-5)


def test_sat_map_is_the_mean_token_mask(sat_model, images):
    res = compute_maps(sat_model, images, ["sat"], size=(4, 4))
    with torch.no_grad():
        out = sat_model(images)
    assert torch.allclose(res.maps["sat"], minmax_normalize(out.attention), atol=1e-6)


def test_unsupported_methods_and_closed_form_on_deepmil_are_refused(mil_model, gap_model, images):
    with pytest.raises(InputError, match="'sat'.*does not apply"):
        compute_maps(mil_model, images, ["sat"])
    with pytest.raises(InputError, match="gradcampp"):
        compute_maps(mil_model, images, ["gradcampp"], gradient="closed_form")
    with pytest.raises(InputError, match="listed twice"):
        compute_maps(gap_model, images, ["cam", "cam"])
    with pytest.raises(InputError, match=r"\[B, C, H, W\]"):
        compute_maps(gap_model, images[0], ["cam"])


def test_auto_gradient_picks_closed_form_for_gap_and_autograd_for_deepmil(gap_model, mil_model):
    m = get_method("gradcampp")
    assert m.mode(gap_model) == "closed_form" and not m.needs_autograd(gap_model)
    assert m.mode(mil_model) == "autograd" and m.needs_autograd(mil_model)


@pytest.mark.parametrize("name", ["gradcampp", "layercam"])
def test_closed_form_and_autograd_agree_on_a_gap_head(gap_model, images, name):
    a = compute_maps(gap_model, images, [name], gradient="closed_form").maps[name]
    b = compute_maps(gap_model, images, [name], gradient="autograd").maps[name]
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("which", ["mil", "sat"])
def test_all_maps_come_from_one_backbone_forward_in_range(
    mil_model, sat_model, images, which, monkeypatch
):
    model = mil_model if which == "mil" else sat_model
    calls = []
    original = model.forward_features

    def spy(x):
        calls.append(x.shape)
        return original(x)

    monkeypatch.setattr(model, "forward_features", spy)
    names = available_methods(model)
    res = compute_maps(model, images, names)  # gradcampp/layercam need autograd here
    assert len(calls) == 1
    assert set(res.maps) == set(names) and len(names) == 5
    for name, m in res.maps.items():
        assert m.shape == (2, 64, 64), name
        assert m.dtype == torch.float32
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0, name
        if name != "pixelcam":  # min-max normalised at feature resolution: near 1 somewhere
            assert float(m.max()) > 0.5, name
        assert not m.requires_grad
    channels, grid = (512, 8) if which == "mil" else (192, 4)
    assert res.features.shape == (2, channels, grid, grid)


def test_no_autograd_methods_run_in_inference_mode_but_return_ordinary_tensors(
    gap_model, images, monkeypatch
):
    seen = []
    original = gap_model.forward_heads

    def spy(*args, **kwargs):
        seen.append(torch.is_inference_mode_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(gap_model, "forward_heads", spy)
    res = compute_maps(gap_model, images, ["cam", "gradcampp", "layercam", "pixelcam"])
    assert seen == [True]
    assert not res.maps["cam"].is_inference()
    res.maps["cam"].mul_(2)  # in-place works on the returned tensors
    compute_maps(gap_model, images, ["layercam"], gradient="autograd")
    assert seen == [True, False]


def test_model_mode_is_restored_and_maps_use_eval_mode(images):
    torch.manual_seed(5)
    model = build_model("resnet18", num_classes=2, head="gap").train()
    res_train = compute_maps(model, images, ["cam"])
    assert model.training
    res_eval = compute_maps(model.eval(), images, ["cam"])
    assert torch.equal(res_train.maps["cam"], res_eval.maps["cam"])


def test_method_instances_are_callable_and_accepted_by_compute_maps(gap_model, images):
    layercam = get_method("layercam", gradient="autograd")
    maps = layercam(gap_model, images, target=1, size=32)
    assert maps.shape == (2, 32, 32)
    res = compute_maps(gap_model, images, [layercam], target=1, size=32)
    assert torch.allclose(res.maps["layercam"], maps)


def test_a_custom_method_only_needs_raw(gap_model, images):
    class FeatureNorm(CAMMethod):
        name = "featnorm"

        def raw(self, model, output, target):
            return output.features.norm(dim=1)

    res = compute_maps(gap_model, images, [FeatureNorm()])
    assert res.maps["featnorm"].shape == (2, 64, 64)
    assert torch.isclose(res.maps["featnorm"].amax(), torch.tensor(1.0), atol=0.1)
