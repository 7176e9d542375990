"""GradCAM++ and LayerCAM equal pytorch-grad-cam's, at feature resolution, both gradient paths.

grad-cam min-max normalises with a 1e-7 in the denominator and resizes to the input size, so
we take its maps BEFORE that step: ``get_cam_image`` on the activations and gradients its
hooks recorded (then its ``np.maximum(cam, 0)``), exactly what ``compute_cam_per_layer``
feeds to ``scale_cam_image``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAMPlusPlus as GCGradCAMPlusPlus
from pytorch_grad_cam import LayerCAM as GCLayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from pixelcam.cams import get_method, minmax_normalize
from pixelcam.models import build_model


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def _gradcam_raw(cls, model, images, target) -> np.ndarray:
    layer = model.backbone.model.layer4  # the output of forward_features = our features
    cam = cls(model=_Logits(model), target_layers=[layer])
    try:
        targets = [ClassifierOutputTarget(int(t)) for t in target]
        outputs = cam.activations_and_grads(images)
        cam.model.zero_grad()
        loss = sum(t(o) for t, o in zip(targets, outputs))
        loss.backward(retain_graph=True)
        acts = [a.cpu().numpy() for a in cam.activations_and_grads.activations]
        grads = [g.cpu().numpy() for g in cam.activations_and_grads.gradients]
        raw = cam.get_cam_image(images, layer, targets, acts[0], grads[0], False)
    finally:
        cam.activations_and_grads.release()
    return np.maximum(raw, 0)


def _ours_raw(method, model, images, target) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        feats, extras = model.forward_features(images)
    with torch.enable_grad():
        out = model.forward_heads(feats.detach().requires_grad_(True), extras)
        return method.raw(model, out, target).detach().numpy()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    gap = build_model("resnet18", num_classes=3, head="gap", pixel_head="linear").eval()
    mil = build_model("resnet18", num_classes=3, head="deepmil", pixel_head=None).eval()
    images = torch.randn(2, 3, 64, 64)
    return {"gap": gap, "deepmil": mil}, images


CASES = [
    ("gradcampp", GCGradCAMPlusPlus, "gap", "closed_form"),
    ("gradcampp", GCGradCAMPlusPlus, "gap", "autograd"),
    ("gradcampp", GCGradCAMPlusPlus, "deepmil", "autograd"),
    ("layercam", GCLayerCAM, "gap", "closed_form"),
    ("layercam", GCLayerCAM, "gap", "autograd"),
    ("layercam", GCLayerCAM, "deepmil", "autograd"),
]


@pytest.mark.parametrize(("name", "reference", "head", "gradient"), CASES)
def test_matches_pytorch_grad_cam_at_feature_resolution(models, name, reference, head, gradient):
    by_head, images = models
    model = by_head[head]
    target = torch.tensor([0, 2])
    ours = _ours_raw(get_method(name, gradient=gradient), model, images, target)
    theirs = _gradcam_raw(reference, model, images, target)
    assert ours.shape == theirs.shape == (2, 8, 8)
    assert theirs.max() > 0  # a real map, not an all-zero one
    scale = np.abs(theirs).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(ours / scale, theirs / scale, atol=1e-4, rtol=0)
    ours_n = minmax_normalize(torch.from_numpy(ours)).numpy()
    theirs_n = minmax_normalize(torch.from_numpy(theirs)).numpy()
    np.testing.assert_allclose(ours_n, theirs_n, atol=1e-4, rtol=0)


def test_gradcampp_eps_matters_for_small_gap_gradients(models):
    """With w_c/(h*w) gradients the 1e-6 eps changes the map: dropping it would fail parity."""
    by_head, images = models
    model = by_head["gap"]
    target = torch.tensor([0, 2])
    import pixelcam.cams.gradcampp as mod

    theirs = _gradcam_raw(GCGradCAMPlusPlus, model, images, target)
    old = mod.EPS
    try:
        mod.EPS = 0.0
        no_eps = _ours_raw(get_method("gradcampp"), model, images, target)
    finally:
        mod.EPS = old
    scale = np.abs(theirs).max()
    assert np.abs(no_eps - theirs).max() / scale > 1e-3
