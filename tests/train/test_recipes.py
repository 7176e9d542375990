"""Dataset recipes: defaults for options the user left alone; given options win."""

from __future__ import annotations

from typing import Any

import pytest

import pixelcam.train as train_pkg
from pixelcam.cli import main as cli
from pixelcam.train import TrainConfig
from pixelcam.train.recipes import RECIPES, apply_recipe, recipe_settings


def test_glas_recipe_is_registered_with_its_input_size() -> None:
    assert "glas" in RECIPES.names()
    base = recipe_settings("glas", "baseline")
    assert (base["resize"], base["crop"], base["eval_size"]) == (640, 320, 640)
    assert base["weights"] == "imagenet"
    student = recipe_settings("glas", "pixelcam")
    assert student["eval_size"] == 640 and "backbone" not in student
    assert recipe_settings("synthetic", "baseline") == {}


def test_apply_recipe_keeps_given_settings() -> None:
    config = TrainConfig(out="x", dataset="glas", data_root="r")
    applied = apply_recipe(config, given={"crop", "dataset", "data_root", "out"})
    assert config.resize == 640 and config.eval_size == 640
    assert config.crop == 224  # given (here at its default value): kept
    assert "crop" not in applied and applied["resize"] == 640
    other = TrainConfig(out="x", dataset="folder", data_root="r")
    assert apply_recipe(other, given=set()) == {} and other.resize == 256


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    class Result:
        epochs_done = 0
        out = "x"

    def fake_train(config: TrainConfig, **kw: Any) -> Result:
        seen["config"] = config
        return Result()

    monkeypatch.setattr(train_pkg, "train", fake_train)
    return seen


def test_cli_train_on_glas_uses_the_recipe_and_says_so(
    captured: dict[str, Any], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--out", str(tmp_path / "run"), "--dataset", "glas", "--data-root",
            str(tmp_path), "--eval-size", "512"]  # fmt: skip
    assert cli(argv) == 0
    config = captured["config"]
    assert (config.resize, config.crop, config.eval_size) == (640, 320, 512)
    assert config.backbone == "tf_efficientnet_lite0" and config.epochs == 30
    err = capsys.readouterr().err
    assert "[recipe] glas baseline:" in err and "resize 640" in err and "eval-size" not in err


def test_cli_resume_and_other_datasets_take_no_recipe(
    captured: dict[str, Any], tmp_path: Any
) -> None:
    assert cli(["train", "--out", str(tmp_path / "a"), "--dataset", "synthetic"]) == 0
    assert captured["config"].resize == 256 and captured["config"].backbone == "resnet18"
    argv = ["train", "--out", str(tmp_path / "b"), "--dataset", "glas", "--data-root",
            str(tmp_path), "--resume"]  # fmt: skip
    assert cli(argv) == 0
    assert captured["config"].resize == 256


def test_checkpoint_eval_size_reads_the_meta() -> None:
    from pixelcam.models import checkpoint_eval_size

    assert checkpoint_eval_size({"eval_size": 640}) == 640
    assert checkpoint_eval_size({}) == 224
    assert checkpoint_eval_size({"eval_size": True}) == 224
    assert checkpoint_eval_size({"eval_size": "640"}, default=96) == 96


@pytest.mark.parametrize("given", [None, 48])
def test_predict_and_evaluate_run_at_the_checkpoint_eval_size(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, given: int | None
) -> None:
    """A recipe checkpoint (trained and selected at 640 px) is scored and predicted at its
    own scale unless --size says otherwise: at 224 its maps would be of another scale."""
    import numpy as np
    from PIL import Image

    import pixelcam.evaluation as evaluation
    import pixelcam.inference as inference
    from pixelcam.data import write_synthetic_dataset
    from pixelcam.models import build_model, save_checkpoint

    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head="linear")
    stem = tmp_path / "ckpt"
    save_checkpoint(model, stem, {"class_names": ["benign", "malignant"], "eval_size": 72})
    sizes: list[int] = []
    for module, name in ((evaluation, "evaluate_model"), (inference, "predict_maps")):
        real = getattr(module, name)

        def spy(*a: Any, _real: Any = real, **k: Any) -> Any:
            sizes.append(k["size"])
            return _real(*a, **k)

        monkeypatch.setattr(module, name, spy)
    root = write_synthetic_dataset(tmp_path / "data", n_per_class=2, size=64, seed=0)
    size_args = [] if given is None else ["--size", str(given)]
    argv = ["evaluate", str(stem), "--dataset", "folder", "--data-root", str(root),
            "--split", "train", "--device", "cpu", *size_args]  # fmt: skip
    assert cli(argv) == 0
    Image.fromarray(np.full((50, 60, 3), 200, np.uint8)).save(tmp_path / "tile.png")
    argv = ["predict", str(stem), str(tmp_path / "tile.png"), "--out", str(tmp_path / "out"),
            "--device", "cpu", *size_args]  # fmt: skip
    assert cli(argv) == 0
    assert sizes == [given or 72, given or 72]


def test_cli_bg_fraction_reaches_the_config(captured: dict[str, Any], tmp_path: Any) -> None:
    argv = ["train", "--out", str(tmp_path / "a"), "--dataset", "synthetic", "--sampler",
            "extremes", "--bg-fraction", "0.05"]  # fmt: skip
    assert cli(argv) == 0
    assert (captured["config"].sampler, captured["config"].bg_fraction) == ("extremes", 0.05)
    with pytest.raises(SystemExit):  # argparse refuses it: nothing to sample from
        cli(argv[:-1] + ["0"])


def test_glas_student_steps_its_lr_down_unless_told_otherwise() -> None:
    student = TrainConfig(out="x", dataset="glas", data_root="r", phase="pixelcam")
    assert apply_recipe(student, given=set())["lr_step"] == 6 and student.lr_step == 6
    assert (student.sampler, student.bg_fraction, student.epochs) == ("extremes", 0.05, 12)
    assert student.teacher_views == "multiscale"
    told = TrainConfig(out="x", dataset="glas", data_root="r", phase="pixelcam")
    apply_recipe(told, given={"lr_step", "teacher_views"})
    assert told.lr_step is None  # a constant lr, as given
    assert told.teacher_views == "single"
    teacher = TrainConfig(out="x", dataset="glas", data_root="r")
    apply_recipe(teacher, given=set())
    assert teacher.lr_step is None and teacher.epochs == 30
