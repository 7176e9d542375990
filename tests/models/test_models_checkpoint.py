"""Checkpoints: safetensors + json, atomic writes, refusal of foreign or broken files."""

from __future__ import annotations

import json

import pytest
import torch

from pixelcam.errors import CheckpointError
from pixelcam.models import (
    build_model,
    load_checkpoint,
    load_state_into,
    read_checkpoint_info,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", num_classes=2, head="deepmil", pixel_head="linear").eval()


@pytest.fixture
def saved(tmp_path, model):
    stem = tmp_path / "run" / "best.v1"  # a dotted stem and a folder to create
    meta = {"class_names": ["benign", "malignant"], "metrics": {"pxap": 71.5}, "epoch": 3}
    save_checkpoint(model, stem, meta=meta)
    return stem, meta


def test_save_writes_both_files_and_a_complete_json(saved, model):
    stem, meta = saved
    weights, doc_path = stem.with_name("best.v1.safetensors"), stem.with_name("best.v1.json")
    assert weights.is_file() and doc_path.is_file()
    doc = json.loads(doc_path.read_text())
    assert doc["config"] == model.config
    assert doc["meta"] == meta
    assert set(doc["versions"]) == {"pixelcam", "torch", "timm"}
    assert doc["versions"]["torch"] == torch.__version__
    assert doc["weights"]["file"] == "best.v1.safetensors"
    assert len(doc["weights"]["sha256"]) == 64
    assert sorted(p.name for p in stem.parent.iterdir()) == ["best.v1.json", "best.v1.safetensors"]


@pytest.mark.parametrize("suffix", ["", ".safetensors", ".json"])
def test_round_trip_from_any_of_the_three_paths(saved, model, suffix):
    stem, meta = saved
    loaded, got_meta = load_checkpoint(str(stem) + suffix)
    assert loaded.config == model.config and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x).logits, model(x).logits)
    assert got_meta["class_names"] == meta["class_names"]
    assert got_meta["versions"]["timm"]


def test_loading_never_unpickles(saved, monkeypatch):
    stem, _ = saved

    def forbidden(*a, **k):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", forbidden)
    load_checkpoint(stem)


def test_expect_refuses_another_class_count_or_architecture(saved):
    stem, _ = saved
    with pytest.raises(CheckpointError, match="made for num_classes=2, expected num_classes=3"):
        load_checkpoint(stem, expect={"num_classes": 3})
    with pytest.raises(CheckpointError, match="head='deepmil', expected head='gap'"):
        load_checkpoint(stem, expect={"head": "gap"})
    load_checkpoint(stem, expect={"num_classes": 2, "backbone": "resnet18"})


def test_load_state_into_checks_the_architecture(saved, model):
    stem, _ = saved
    torch.manual_seed(9)
    fresh = build_model("resnet18", num_classes=2, head="deepmil", pixel_head="linear")
    meta = load_state_into(fresh, stem)
    assert meta["epoch"] == 3
    assert torch.equal(fresh.head.classifier.weight, model.head.classifier.weight)
    regularised = build_model(
        "resnet18", num_classes=2, head="deepmil", pixel_head="linear", drop_rate=0.2
    )
    load_state_into(regularised, stem)  # timm options that change no tensor are fine
    assert torch.equal(regularised.head.classifier.weight, model.head.classifier.weight)
    other = build_model("resnet18", num_classes=3, head="gap", pixel_head="linear")
    with pytest.raises(CheckpointError) as err:
        load_state_into(other, stem)
    msg = str(err.value)
    assert "num_classes: expected 3, found 2" in msg
    assert "head: expected 'gap', found 'deepmil'" in msg
    assert "best.v1.json" in msg


def test_truncated_or_corrupt_weights_are_refused_naming_the_file(saved):
    stem, _ = saved
    weights = stem.with_name("best.v1.safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="best.v1.safetensors"):
        load_checkpoint(stem)


def test_unreadable_safetensors_without_hash_is_refused(saved):
    stem, _ = saved
    doc_path = stem.with_name("best.v1.json")
    doc = json.loads(doc_path.read_text())
    del doc["weights"]["sha256"]
    doc_path.write_text(json.dumps(doc))
    stem.with_name("best.v1.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint weights .*best.v1"):
        load_checkpoint(stem)


def test_weights_from_another_architecture_under_a_valid_json_are_refused(tmp_path, saved):
    stem, _ = saved
    other = build_model("resnet18", num_classes=2, head="gap", pixel_head="linear")
    save_checkpoint(other, tmp_path / "gap")
    # pair deepmil's json with gap's weights, hash updated: the tensor check must catch it
    doc = json.loads(stem.with_name("best.v1.json").read_text())
    doc["weights"]["sha256"] = json.loads((tmp_path / "gap.json").read_text())["weights"]["sha256"]
    (tmp_path / "gap.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not fit the model: missing .*head.attention"):
        load_checkpoint(tmp_path / "gap")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a pixelcam checkpoint"),
        ('{"format": "other"}', "not a pixelcam checkpoint"),
        ('{"format": "pixelcam-checkpoint", "format_version": 99}', "version 99"),
        ('{"format": "pixelcam-checkpoint", "format_version": 1, "config": {}}', "config"),
    ],
)
def test_broken_json_is_refused_naming_the_file(saved, content, message):
    stem, _ = saved
    stem.with_name("best.v1.json").write_text(content)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(stem)
    assert "best.v1.json" in str(err.value)


def test_missing_files_are_refused(saved):
    stem, _ = saved
    stem.with_name("best.v1.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights not found: .*best.v1.safetensors"):
        load_checkpoint(stem)
    stem.with_name("best.v1.json").unlink()
    with pytest.raises(CheckpointError, match="json not found: .*best.v1.json"):
        load_checkpoint(stem)


def test_weights_replaced_by_a_later_save_do_not_pair_with_an_old_json(tmp_path, model):
    save_checkpoint(model, tmp_path / "ck")
    old_json = (tmp_path / "ck.json").read_text()
    torch.manual_seed(3)
    newer = build_model("resnet18", num_classes=2, head="deepmil", pixel_head="linear")
    save_checkpoint(newer, tmp_path / "ck")
    (tmp_path / "ck.json").write_text(old_json)  # as if the save died before the json
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        load_checkpoint(tmp_path / "ck")


def test_unserialisable_meta_fails_before_writing_anything(tmp_path, model):
    with pytest.raises(CheckpointError, match="not JSON-able"):
        save_checkpoint(model, tmp_path / "x", meta={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, model, monkeypatch):
    save_checkpoint(model, tmp_path / "ck", meta={"epoch": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    import safetensors.torch

    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, tmp_path / "ck", meta={"epoch": 2})
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no temp file left, old files untouched
    assert read_checkpoint_info(tmp_path / "ck")["meta"] == {"epoch": 1}
