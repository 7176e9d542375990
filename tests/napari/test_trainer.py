"""The trainer dock: ``pixelcam train --json`` in a child process, progress, cancel, resume,
curves, loading the result into the PixelCAM panel; refusals and failures as notifications."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import napari_pixelcam._common as common
import napari_pixelcam._trainer as trainer_mod
from napari_pixelcam._trainer import (
    TrainerWidget,
    _cli_has_option,
    build_train_command,
    lock_holder,
    validate_settings,
)
from pixelcam.cli import build_parser
from pixelcam.errors import InputError
from pixelcam.fileio import pid_alive

PLUGIN = "napari-pixelcam"
TINY = {
    "dataset": "synthetic",
    "backbone": "test_resnet",
    "synthetic_n_per_class": 6,
    "synthetic_size": 64,
    "resize": 64,
    "crop": 56,
    "eval_size": 64,
    "batch_size": 4,
    "device": "cpu",
}


@pytest.fixture
def dock(make_napari_viewer, monkeypatch, qtbot):
    notes: list[tuple[str, str]] = []
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models on a shared CI machine
    monkeypatch.setattr(common, "notify", lambda kind, msg: notes.append((kind, msg)))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "PixelCAM trainer")
    qtbot.waitUntil(lambda: widget.session.ready, timeout=60000)  # the registries' lists
    yield widget, viewer, notes
    if widget.running:  # never leave a child behind a failed test
        widget.cancel(grace_s=2.0)
        widget.wait(10.0)


def _parse(cmd: list[str]):
    assert cmd[:4] == [sys.executable, "-m", "pixelcam.cli", "train"]
    return build_parser().parse_args(cmd[3:])


def test_command_matches_the_cli(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    settings = {
        **TINY, "out": str(tmp_path / "run"), "phase": "pixelcam", "teacher": str(teacher),
        "teacher_method": "gradcampp", "lam": 0.5, "n": 3, "sampler": "th", "epochs": 7,
        "lr": 2e-4, "lr_step": 5, "weights": "file", "weights_file": str(weights),
        "head": "deepmil", "amp": False, "positive_only": True, "bg_fraction": 0.05,
        "teacher_views": "flips",
    }  # fmt: skip
    validate_settings(settings)
    args = _parse(build_train_command(settings))
    assert args.json and args.out == str(tmp_path / "run") and not args.resume
    assert (args.phase, args.teacher, args.teacher_method) == (
        "pixelcam",
        str(teacher),
        "gradcampp",
    )
    assert (args.lam, args.n, args.sampler, args.epochs, args.lr) == (0.5, 3, "th", 7, 2e-4)
    assert (args.bg_fraction, args.teacher_views) == (0.05, "flips")
    assert (args.weights, args.head, args.no_amp, args.positive_only) == (
        str(weights), "deepmil", True, True,
    )  # fmt: skip
    assert (args.lr_step, args.resize, args.crop, args.eval_size) == (5, 64, 56, 64)
    assert (args.synthetic_n_per_class, args.synthetic_size, args.device) == (6, 64, "cpu")
    # a baseline on an official split: fold 'none', no PixelCAM options, default lr schedule
    data = tmp_path / "glas"
    data.mkdir()
    base = {"out": "r", "dataset": "glas", "data_root": str(data), "fold": None}
    args = _parse(build_train_command(base))
    assert (args.dataset, args.data_root, args.fold, args.lr_step) == (
        "glas",
        str(data),
        None,
        None,
    )
    assert args.teacher is None and args.weights is None
    if _cli_has_option("--folds-dir"):
        folds = {**base, "folds_dir": str(data)}
        assert _parse(build_train_command(folds)).folds_dir == str(data)
    else:  # refused up front rather than as an argparse error from the child
        with pytest.raises(InputError, match="folds-dir"):
            validate_settings({**base, "folds_dir": str(data)})
    args = _parse(build_train_command({**base, "epochs": 12}, resume=True))
    assert args.resume and args.epochs == 12 and args.out == str(Path("r").resolve())


def test_reference_phases_build_their_commands(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    negev = {**TINY, "out": "n", "phase": "negev", "teacher": str(teacher), "n": 7, "lam": 0.3}
    validate_settings(negev)
    args = _parse(build_train_command(negev))
    assert (args.phase, args.teacher, args.n, args.lam) == ("negev", str(teacher), 7, 1.0)
    args = _parse(build_train_command({**TINY, "out": "u", "phase": "unet"}))
    assert args.phase == "unet" and args.teacher is None


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"dataset": "glas"}, "needs a dataset folder"),
        ({"phase": "pixelcam"}, "needs a teacher"),
        ({"phase": "negev"}, "phase 'negev' needs a teacher"),
        ({"weights": "file"}, "weights file"),
        ({"crop": 300}, "must not exceed resize"),
        ({"lr": 0.0}, "learning rate"),
    ],
)
def test_bad_settings_are_named(bad, words):
    with pytest.raises(InputError, match=words):
        validate_settings({"out": "x", **bad})


def test_lock_of_a_live_process_refuses_a_start(dock, tmp_path):
    widget, _, notes = dock
    out = tmp_path / "busy"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(str(sleeper.pid))
        assert lock_holder(out) == sleeper.pid
        assert widget.start(out=str(out), **TINY) is False
        assert not widget.running
        assert notes[-1][0] == "error" and f"pid {sleeper.pid}" in notes[-1][1]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert lock_holder(out) is None  # a stale lock no longer blocks


FAKE_CHILD = """
import json, os, sys
print("not json", flush=True)
print(json.dumps({"event": "start", "epochs": 2, "steps": 3, "message": "fake start"}))
print(json.dumps({"event": "step", "epoch": 1, "step": 2, "steps": 3, "loss": 0.5}))
print(json.dumps({"event": "epoch", "epoch": 1, "epochs": 2,
                  "metrics": {"train_loss": 0.5, "valpx_pxap": 40.0, "valcl_acc": 75.0}}))
print("warning on stderr", file=sys.stderr, flush=True)
if sys.argv[1] == "exit":  # the CLI's way with bad input: a message on stderr, exit code 2
    print("pixelcam train: error: no images in folder /x", file=sys.stderr, flush=True)
    sys.exit(2)
sys.stdout.write(json.dumps({"event": "error", "message": "boom at epoch 2"}))  # no newline
sys.stdout.flush()
os.abort()
"""


@pytest.mark.parametrize("how", ["exit", "crash"])
def test_child_output_errors_and_crashes(dock, tmp_path, qtbot, monkeypatch, how):
    """Events, stray stdout and stderr reach the dock; an error exit or a crash of the child
    is a notification and leaves the viewer working."""
    widget, viewer, notes = dock
    monkeypatch.setattr(
        trainer_mod,
        "build_train_command",
        lambda s, resume=False: [sys.executable, "-c", FAKE_CHILD, how],
    )
    assert widget.start(out=str(tmp_path / "fake"), **TINY)
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    log = widget.log_box.toPlainText()
    assert "not json" in log and "fake start" in log and "warning on stderr" in log
    assert (widget.step_bar.value(), widget.step_bar.maximum()) == (2, 3)
    assert (widget.epoch_bar.value(), widget.epoch_bar.maximum()) == (1, 2)
    assert widget.curve_points()["valpx PxAP"] == [(1.0, 40.0)]
    assert widget.exit_code == (2 if how == "exit" else None)  # None: crashed
    why = "pixelcam train: error: no images in folder /x" if how == "exit" else "boom at epoch 2"
    assert notes[-1] == ("error", f"PixelCAM trainer: training failed: {why}")
    assert widget.start_button.isEnabled() and not widget.cancel_button.isEnabled()
    viewer.add_points([[1, 1]])  # napari still alive and well
    assert len(viewer.layers) == 1


def test_train_cancel_resume_and_load_into_panel(dock, tmp_path, qtbot, monkeypatch):
    from pixelcam.models import load_checkpoint

    widget, viewer, notes = dock
    out = tmp_path / "baseline"
    seen: dict[str, object] = {}
    handle_event = widget.handle_event

    def cancel_after_epoch_1(ev):  # cancel as soon as the dock sees epoch 1 end
        handle_event(ev)
        if ev["event"] == "epoch" and ev["epoch"] == 1 and not seen:
            seen.update(lock=(out / ".lock").exists(), pid=int(widget.process.processId()))
            seen["cancelled"] = widget.cancel()

    monkeypatch.setattr(widget, "handle_event", cancel_after_epoch_1)
    # far more epochs than the test waits for: on a loaded machine the dock may see epoch 1
    # late, and the cancel must still find the child running (30 epochs took 11 s here)
    assert widget.start(out=str(out), epochs=300, **TINY)
    assert widget.running and widget.cancel_button.isEnabled()
    assert not widget.start_button.isEnabled()

    # a second run on the same folder is refused, from this dock and from another one
    assert widget.start() is False
    assert notes[-1][0] == "error" and "already running" in notes[-1][1]
    other = TrainerWidget(viewer)
    assert other.start(out=str(out), **TINY) is False
    assert "in use" in notes[-1][1]

    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert seen["lock"] and seen["cancelled"]  # the child held the lock when cancelled
    assert widget.last_step is not None and widget.step_bar.maximum() == 2
    assert widget.epoch_bar.maximum() == 300 and widget.epoch_bar.value() >= 1
    assert not pid_alive(seen["pid"])  # the child is gone (and reaped)
    assert not (out / ".lock").exists()
    assert widget.done_event is None and notes[-1][0] == "info" and "cancelled" in notes[-1][1]
    model, meta = load_checkpoint(out / "last.json")
    assert meta["epoch"] >= 1 and model.num_classes == 2
    done_before = json.loads((out / "resume" / "resume.json").read_text())["epoch"]
    assert 1 <= done_before < 300

    # a new run on a folder holding one is refused: Resume continues it (to fewer epochs)
    assert widget.start() is False and "Resume" in notes[-1][1]
    total = max(3, done_before + 1)
    assert widget.resume(epochs=total)
    assert widget.epoch_bar.value() == max(widget.history) >= 1  # history.json, before events
    assert widget.curve_points()["train loss"]  # history of the first part, drawn at once
    qtbot.waitUntil(lambda: not widget.running, timeout=40000)
    assert widget.done_event is not None and widget.exit_code == 0
    assert any(e["event"] == "start" and e["resume"] for e in widget.events)
    assert widget.epoch_bar.value() == widget.epoch_bar.maximum() == total
    curves = widget.curve_points()
    assert [x for x, _ in curves["train loss"]] == list(range(1, total + 1))  # both parts
    assert [x for x, _ in curves["valpx PxAP"]] == list(range(0, total + 1))
    assert len(curves["valcl accuracy"]) == total + 1
    assert "finished" in notes[-1][1] and widget.load_loc_button.isEnabled()

    # a baseline run's B-LOC goes to the panel's baseline model (docking the panel), and
    # EVERY other model field is emptied: nothing bundled predicts for it
    assert widget.load_into_panel("best_loc") == out / "best_loc.json"
    panel = viewer.window.dock_widgets["PixelCAM (napari-pixelcam)"]
    assert Path(panel.baseline.value) == out / "best_loc.json"
    assert str(panel.checkpoint.value) in ("", ".") and list(panel.references.value) == []
    assert panel.session.selection().classifier == str(out / "best_loc.json")
    # its provenance, from its json and its run's config.json
    assert "trained on synthetic (generated tiles, 64 px, 6 per class)" in panel.model_info.value

    # a PixelCAM run's B-LOC / B-CL go to the panel's PixelCAM model, its teacher's to the
    # baseline model (routing reads the run folder; the real phase 2 is tested in tests/train)
    pix = tmp_path / "pixelcam"
    pix.mkdir()
    for name in ("best_loc", "best_cl"):
        shutil.copy(out / f"{name}.json", pix / f"{name}.json")
    config = json.loads((out / "config.json").read_text())
    config.update(phase="pixelcam", teacher=str(out), teacher_checkpoint="best_cl")
    (pix / "config.json").write_text(json.dumps(config))
    widget.set_settings(out=str(pix))
    assert widget.load_into_panel("best_loc") == pix / "best_loc.json"
    assert Path(panel.checkpoint.value) == pix / "best_loc.json"
    assert Path(panel.baseline.value) == out / "best_cl.json"  # its teacher
    assert list(panel.references.value) == []
    widget.load_into_panel("best_cl")
    assert Path(panel.checkpoint.value) == pix / "best_cl.json"
    assert notes[-1][0] == "info" and "B-CL" in notes[-1][1]
    assert widget.load_into_panel("last") is None and notes[-1][0] == "error"

    # a U-Net run becomes the only reference model, no PixelCAM or baseline model stays,
    # and its map is selected (routing reads the run folder; training is in tests/train)
    from napari_pixelcam._common import SAMPLE_REFERENCES

    unet = tmp_path / "unet"
    unet.mkdir()
    for ext in (".json", ".safetensors"):
        shutil.copy(SAMPLE_REFERENCES[1].with_suffix(ext), unet / f"best_loc{ext}")
    (unet / "config.json").write_text(json.dumps({**config, "phase": "unet"}))
    widget.set_settings(out=str(unet))
    panel.references.value = [str(p) for p in SAMPLE_REFERENCES]
    assert widget.load_into_panel("best_loc") == unet / "best_loc.json"
    assert [Path(p) for p in panel.references.value] == [unet / "best_loc.json"]
    assert str(panel.checkpoint.value) in ("", ".") and str(panel.baseline.value) in ("", ".")
    assert panel.methods.value == ["unet"]

    # an old run folder fills a fresh form
    fresh = TrainerWidget(viewer)
    fresh.fields["out"].line.setText(str(out))
    fresh.fields["out"].line.editingFinished.emit()  # the user commits the folder
    s = fresh.settings()
    assert (s["backbone"], s["epochs"], s["crop"]) == ("test_resnet", total, 56)
    fresh.set_settings(epochs=50)
    fresh.fields["out"].line.editingFinished.emit()  # focus leaves again: no reload
    assert fresh.settings()["epochs"] == 50


def test_cancel_kills_a_child_that_ignores_sigint(dock, tmp_path, qtbot, monkeypatch):
    widget, _, notes = dock
    stubborn = (
        "import json, signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "print(json.dumps({'event': 'start', 'epochs': 5, 'steps': 1}), flush=True); "
        "time.sleep(60)"
    )
    monkeypatch.setattr(
        trainer_mod, "build_train_command", lambda s, resume=False: [sys.executable, "-c", stubborn]
    )
    assert widget.start(out=str(tmp_path / "stubborn"), **TINY)
    qtbot.waitUntil(lambda: bool(widget.events), timeout=20000)  # SIGINT now ignored
    pid = int(widget.process.processId())
    assert widget.cancel(grace_s=0.3)
    qtbot.waitUntil(lambda: not widget.running, timeout=10000)
    assert not pid_alive(pid) and widget.exit_code is None  # killed
    assert "killed" in widget.log_box.toPlainText()
    assert notes[-1][0] == "info" and "cancelled after epoch 0" in notes[-1][1]


def test_form_lists_come_from_the_registries(make_napari_viewer, monkeypatch, qtbot):
    """Devices and phases at once; datasets, backbones, heads, teacher maps and samplers
    once the session has read its catalogue (until then a list holds its value alone, and
    a value set meanwhile is kept, an alias becoming its entry's name)."""
    from pixelcam.cams.views import VIEWS
    from pixelcam.data import DATASETS
    from pixelcam.device import DEVICES
    from pixelcam.models.backbones import BACKBONES
    from pixelcam.models.heads import IMAGE_HEADS, PIXEL_HEADS
    from pixelcam.pseudo_labels import SAMPLERS
    from pixelcam.train.phases import PHASES

    jobs = []
    monkeypatch.setattr(common, "in_worker", lambda job, done, error: jobs.append((job, done)))
    widget = TrainerWidget(make_napari_viewer())

    def items(key: str) -> list[str]:
        box = widget.fields[key]
        return [box.itemText(i) for i in range(box.count())]

    assert items("phase") == PHASES.names() and items("device") == DEVICES.names()
    assert items("dataset") == ["synthetic"] and items("sampler") == ["probability"]
    widget.set_settings(dataset="glas", sampler="pb", backbone="test_resnet")
    qtbot.waitUntil(lambda: len(jobs) == 2)  # started once the dock is drawn
    qtbot.wait(100)
    assert len(jobs) == 2  # one read per session, then the warm-up of the rest
    job, done = jobs[0]
    done(job())  # the worker's job, then its result on the main thread
    assert items("dataset") == DATASETS.names() and items("head") == IMAGE_HEADS.names()
    assert items("sampler") == SAMPLERS.names() and items("pixel_head") == PIXEL_HEADS.names()
    assert items("teacher_views") == VIEWS.names()
    assert items("backbone") == BACKBONES.names() and widget.fields["backbone"].isEditable()
    assert items("teacher_method") == ["cam", "gradcampp", "layercam", "deepmil", "sat"]
    s = widget.settings()
    assert (s["dataset"], s["sampler"], s["backbone"]) == ("glas", "probability", "test_resnet")
    widget.set_settings(sampler="th")
    assert widget.settings()["sampler"] == "threshold"
    with pytest.raises(ValueError, match="dataset must be one of"):
        widget.set_settings(dataset="nope")
    with pytest.raises(InputError, match="format must be one of"):
        validate_settings({"out": "x", "dataset": "nope"}, widget.session.catalogue)
    with pytest.raises(InputError, match="phase must be one of"):
        validate_settings({"out": "x", "phase": "nope"})


def test_recipe_button_fills_the_form_from_the_recipe_registry(dock):
    """Shown only for a dataset with a recipe; fills exactly the recipe's settings, the
    ones ``pixelcam train`` would use, for the phase chosen."""
    from pixelcam.train.recipes import recipe_settings

    widget, _, _ = dock
    widget.set_settings(dataset="synthetic", phase="baseline")
    assert widget.recipe_button.isHidden()
    widget.set_settings(dataset="glas")
    widget._update_visibility()
    assert not widget.recipe_button.isHidden()
    assert "glas" in widget.recipe_button.text()
    filled = widget.use_recipe()
    s = widget.settings()
    assert filled == recipe_settings("glas", "baseline") and filled
    assert all(s[k] == v for k, v in filled.items())
    assert (s["resize"], s["crop"], s["eval_size"], s["weights"]) == (640, 320, 640, "imagenet")
    cmd = build_train_command({**s, "out": "run", "data_root": "."})
    args = _parse(cmd)
    assert (args.resize, args.eval_size, args.backbone) == (640, 640, s["backbone"])
    widget.set_settings(phase="pixelcam")
    widget._update_visibility()
    student = recipe_settings("glas", "pixelcam")
    assert widget.use_recipe()["sampler"] == student["sampler"]
    s = widget.settings()
    assert (s["sampler"], s["bg_fraction"]) == (student["sampler"], student["bg_fraction"])
    assert s["teacher_views"] == student["teacher_views"] == "multiscale"
    args = _parse(build_train_command({**s, "out": "run", "data_root": ".", "teacher": "."}))
    assert (args.sampler, args.bg_fraction) == (student["sampler"], student["bg_fraction"])
    assert args.teacher_views == "multiscale"
    assert args.lr_step == student["lr_step"] == 6


def test_teacher_phases_grey_out_the_model_fields_they_take_from_the_teacher(dock):
    """PixelCAM and NEGEV train the teacher's backbone, weights and head
    (``SeededPhase.from_teacher``): the form must not suggest otherwise."""
    from napari_pixelcam._trainer import TEACHER_FIELDS

    widget, _, _ = dock
    f = widget.fields
    for phase, seeded in (("pixelcam", True), ("baseline", False), ("negev", True),
                          ("unet", False)):  # fmt: skip
        widget.set_settings(phase=phase)
        widget._update_visibility()
        for key in TEACHER_FIELDS:
            assert f[key].isEnabled() is not seeded, (phase, key)
            assert ("teacher" in f[key].toolTip()) is seeded, (phase, key)
    assert "timm" in f["backbone"].toolTip()
