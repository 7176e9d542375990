"""Issue 20, findings 4 and 5: garbage is refused (images under the panel's 8 px, model
sizes, thresholds, counts, non-finite checkpoints) by ONE validation shared by the CLI and
the API (:mod:`pixelcam.validation`), and messages say what is wrong: ``--weights ""`` and
``none`` mean random init, two runs racing for a folder meet at its lock, and an
unreadable training image is found before epoch 0 (or skipped with
``--skip-unreadable``)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from pixelcam.cli import main
from pixelcam.errors import CheckpointError, InputError
from pixelcam.validation import MIN_IMAGE_SIDE, MIN_INPUT_SIDE


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_usage_error(rc: int, err: str, *words: object) -> str:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


# ---- finding 4: the same minimum image side everywhere --------------------------------


def test_one_minimum_image_side_for_the_panel_the_api_and_the_cli():
    import pixelcam.inference

    assert MIN_IMAGE_SIDE == 8 and pixelcam.inference.MIN_SIDE == MIN_IMAGE_SIDE


def test_predict_refuses_images_under_the_minimum_side(tiny_checkpoint, tmp_path, capsys):
    """Was: 1x1 and 1x4000 images got maps (exit 0)."""
    folder = tmp_path / "in"
    folder.mkdir()
    shapes = {"one px": (1, 1), "sliver": (1, 4000), "seven": (7, 30), "eight": (8, 8)}
    for name, (h, w) in shapes.items():
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "maps"
    rc, stdout, err = run_cli(
        capsys, "predict", tiny_checkpoint, folder, "--out", out, "--size", 32, "--device", "cpu"
    )
    assert rc == 1, err
    for name in ("one px", "sliver", "seven"):
        line = next(x for x in err.splitlines() if f"{name}.png" in x)
        assert "too small for a map" in line and f"at least {MIN_IMAGE_SIDE} pixels" in line
    assert "3 of 4 inputs failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["eight_pixelcam.tif"]


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "CKPT", "IMG", "--out", "o", "--size", "1"],
        ["predict", "CKPT", "IMG", "--out", "o", "--tile", "0"],
        ["predict", "CKPT", "IMG", "--out", "o", "--overlap", "-1"],
        ["predict", "CKPT", "IMG", "--out", "o", "--level", "-1"],
        ["predict", "CKPT", "IMG", "--out", "o", "--min-tissue", "nan"],
        ["evaluate", "CKPT", "--size", "1"],
        ["evaluate", "CKPT", "--threshold", "nan"],
        ["evaluate", "CKPT", "--threshold", "5"],
        ["evaluate", "CKPT", "--threshold", "-0.1"],
        ["train", "--out", "o", "--resize", "1", "--crop", "1"],
        ["train", "--out", "o", "--eval-size", "0"],
        ["train", "--out", "o", "--num-workers", "-1"],
        ["train", "--out", "o", "--lr", "nan"],
        ["train", "--out", "o", "--lam", "inf"],
        ["train", "--out", "o", "--smooth-sigma", "0"],
        ["train", "--out", "o", "--seed", "-3"],
        ["train", "--out", "o", "--epochs", "1e9"],
        ["synth", "o", "--size", "2"],
        ["synth", "o", "--n-per-class", "0"],
    ],
    ids=lambda a: " ".join(a[3:] if a[0] == "predict" else a[1:]),
)
def test_cli_refuses_garbage_numbers(argv, capsys, tmp_path, monkeypatch):
    """Was: ``--size 1``, ``--resize 1 --crop 1``, ``--threshold nan`` or ``5``,
    ``--num-workers -1`` ran (the last crashed after epoch 0)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "expected" in err, err
    assert not (tmp_path / "o").exists()


def test_the_api_shares_the_cli_limits(tmp_path):
    from pixelcam.evaluation import evaluate_model
    from pixelcam.inference import predict_maps
    from pixelcam.models import build_model
    from pixelcam.train import TrainConfig

    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head="linear")
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InputError, match=f"between {MIN_INPUT_SIDE} and"):
        predict_maps(model, image, ["pixelcam"], size=1)
    with pytest.raises(InputError, match="too small for a map"):
        predict_maps(model, np.zeros((1, 4000, 3), np.uint8), ["pixelcam"], size=32)
    for bad in ({"threshold": float("nan")}, {"threshold": 5.0}, {"size": 1},
                {"num_workers": -1}, {"batch_size": 0}):  # fmt: skip
        with pytest.raises(InputError):
            evaluate_model(model, None, ["pixelcam"], **bad)  # refused before the data
    for bad in ({"num_workers": -1}, {"resize": 1, "crop": 1}, {"eval_size": 4},
                {"seed": -1}, {"momentum": float("nan")}, {"synthetic_size": 2}):  # fmt: skip
        with pytest.raises(InputError, match="invalid training configuration"):
            TrainConfig(out=str(tmp_path), **bad).validate()


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    from pixelcam.models import build_model, save_checkpoint

    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head="linear")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    stem = tmp_path_factory.mktemp("nan") / "diverged"
    save_checkpoint(model, stem, {"class_names": ["benign", "malignant"]})
    return stem


def test_a_checkpoint_of_nan_weights_is_refused_at_load(nan_checkpoint, tmp_path, capsys):
    """Was: "benign (nan%)" and all-zero maps, exit 0."""
    from pixelcam.models import build_model, load_checkpoint, load_state_into

    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(nan_checkpoint)
    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head="linear")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_state_into(model, nan_checkpoint)
    image = tmp_path / "a.png"
    Image.fromarray(np.full((24, 24, 3), 100, np.uint8)).save(image)
    rc, stdout, err = run_cli(
        capsys, "predict", nan_checkpoint, image, "--out", tmp_path / "maps", "--device", "cpu"
    )
    assert_usage_error(rc, err, nan_checkpoint, "non-finite")
    assert "nan%" not in stdout and not (tmp_path / "maps" / "a_pixelcam.tif").exists()


def test_backbone_weights_with_nan_are_refused(tmp_path):
    from safetensors.torch import save_file

    from pixelcam.models import build_model

    donor = build_model("test_resnet", num_classes=2, head="gap", pixel_head=None)
    state = {k[len("backbone.model."):]: v.clone() for k, v in donor.state_dict().items()
             if k.startswith("backbone.model.")}  # fmt: skip
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][...] = float("inf")
    path = tmp_path / "broken.safetensors"
    save_file(state, path)
    with pytest.raises(CheckpointError, match="non-finite"):
        build_model("test_resnet", num_classes=2, head="gap", weights=str(path))


# ---- finding 5: messages that say what is wrong -----------------------------------------


@pytest.mark.parametrize("value", ["", "none", "None", None])
def test_empty_or_none_weights_mean_random_init(value, tmp_path):
    """Was: ``--weights ""`` said "weights file not found: ."."""
    from pixelcam.models import build_model
    from pixelcam.models.weights import load_backbone_weights
    from pixelcam.train import TrainConfig

    model = build_model("test_resnet", num_classes=2, head="gap", weights=value)
    if value is not None:
        assert model.weights_report.loaded == 0
        assert load_backbone_weights(model.backbone, value).source == "random init"
    assert TrainConfig(out=str(tmp_path), weights=value).validate().weights is None


def test_cli_train_with_empty_weights_trains_from_random_init(
    tmp_path, capsys, synthetic_root, tiny_train
):
    out = tmp_path / "run"
    rc, _, err = run_cli(
        capsys, "train", "--out", out, *tiny_train, "--data-root", synthetic_root,
        "--epochs", 1, "--weights", "", "--json",
    )  # fmt: skip
    assert rc == 0, err
    assert "not found" not in err


def test_racing_runs_meet_at_the_lock_not_at_the_write_check(tmp_path):
    """Was: two runs probing ``OUT/.write-test`` at once could delete each other's probe:
    "not writable: No such file or directory" instead of "in use"."""
    from pixelcam.train.runtime import check_writable

    out = tmp_path / "shared"
    errors: list[BaseException] = []

    def probe():
        try:
            for _ in range(300):
                check_writable(out)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=probe) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert list(out.iterdir()) == []


def test_unreadable_training_images_are_found_before_epoch_0_or_skipped(
    synthetic_root, input_matrix, tiny_train, tmp_path, capsys
):
    """Was: found in epoch 1, after the epoch-0 checkpoints were written."""
    from pixelcam.train.events import read_events

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    train_list = (root / "splits" / "train.txt").read_text().split()
    bad = [root / "images" / name for name in train_list[:2]]
    shutil.copy(input_matrix["truncated_png"].path, bad[0])
    bad[1].write_bytes(b"")
    out = tmp_path / "run"
    args = ["train", "--out", out, *tiny_train, "--data-root", root, "--epochs", 1, "--json"]
    rc, _, err = run_cli(capsys, *args)
    assert_usage_error(rc, err, "1 more unreadable training image", "--skip-unreadable")
    assert str(bad[0]) in err or str(bad[1]) in err
    assert not (out / "last.json").exists()  # nothing trained, nothing saved
    rc, _, err = run_cli(capsys, *args, "--skip-unreadable")
    assert rc == 0, err
    logs = [e["message"] for e in read_events(out / "events.jsonl") if e["event"] == "log"]
    warning = next(m for m in logs if m.startswith("warning: skipped"))
    assert f"skipped 2 unreadable training image(s) of {len(train_list)}" in warning
    assert all(str(p) in warning for p in bad)
    start = next(e for e in read_events(out / "events.jsonl") if e["event"] == "start")
    assert f"{len(train_list) - 2} train" in start["message"]
