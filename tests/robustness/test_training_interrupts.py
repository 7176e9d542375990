"""Interrupted and failing training (issue 8): SIGKILL mid-epoch then ``--resume`` gives the
weights of an uninterrupted run; a kill while a checkpoint is replaced leaves it loadable;
a non-finite loss or weights stop the run and keep the last good checkpoint; an unwritable
or full output folder is refused before training starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixelcam.cli import main
from pixelcam.models import build_model, load_checkpoint, save_checkpoint
from pixelcam.train.events import read_events

#: One thread per run: two runs share the machine, and every run of the comparison (the
#: uninterrupted one, the killed one, its resumption) computes with the same thread count.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(out: Path, tiny_train: list[str], *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pixelcam.cli", "train", "--out", str(out), *tiny_train]
    cmd += ["--epochs", "3", "--seed", "3", "--json", *extra]
    return subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _wait_for_step(proc: subprocess.Popen, events: Path, epoch: int, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if events.exists() and any(
            e["event"] == "step" and e["epoch"] == epoch for e in read_events(events)
        ):
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before epoch {epoch}: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no step of epoch {epoch} within {timeout} s")


def _finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err


POSIX_ONLY = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX fork/SIGKILL")


@POSIX_ONLY
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_train, odd_name):
    whole = tmp_path / "whole"
    cut = tmp_path / odd_name / "cut run"
    ref = _start(whole, tiny_train)  # both runs at once: the test takes the time of one
    victim = _start(cut, tiny_train)
    try:
        _wait_for_step(victim, cut / "events.jsonl", epoch=2, timeout=240)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL  # killed, not finished
        # what a kill mid-epoch 2 leaves: epoch 1 complete and loadable, nothing of epoch 2
        assert json.loads((cut / "resume" / "resume.json").read_text())["epoch"] == 1
        _, meta = load_checkpoint(cut / "last")
        assert meta["epoch"] == 1
        assert not [e for e in read_events(cut / "events.jsonl") if e["event"] == "done"]

        resumed = _start(cut, tiny_train, "--resume")
        _finish(resumed)
        _finish(ref)
    finally:
        for proc in (ref, victim):
            if proc.poll() is None:
                proc.kill()

    events = read_events(cut / "events.jsonl")
    assert any(e["event"] == "log" and "resumed after epoch 1" in e["message"] for e in events)
    assert [e for e in events if e["event"] == "done"][-1]["message"].startswith("finished 3")
    hist_whole = json.loads((whole / "history.json").read_text())
    hist_cut = json.loads((cut / "history.json").read_text())
    assert [h["epoch"] for h in hist_cut] == [h["epoch"] for h in hist_whole] == [0, 1, 2, 3]
    for a, b in zip(hist_whole[1:], hist_cut[1:]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6, abs=1e-7)
    assert load_checkpoint(cut / "last")[1]["epoch"] == 3
    a, b = load_file(whole / "last.safetensors"), load_file(cut / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    assert not (cut / ".lock").exists()


@POSIX_ONLY
@POSIX_ONLY
def test_sigint_stops_a_run_started_with_sigint_ignored(tmp_path, tiny_train):
    """A shell starts background jobs with SIGINT ignored and Python keeps that; the
    trainer dock cancels with SIGINT: the run must still stop, keep its checkpoint and
    release its lock."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pixelcam.cli", "train", "--out", str(out), *tiny_train]
    proc = subprocess.Popen(
        [*cmd, "--epochs", "1000", "--json"], env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )  # fmt: skip
    _wait_for_step(proc, out / "events.jsonl", epoch=2, timeout=120)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGINT did not stop a run started with SIGINT ignored")
    assert proc.returncode == 130 and "interrupted" in err
    assert not (out / ".lock").exists() and (out / "last.json").exists()


def test_kill_between_the_two_files_of_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    """``last`` is a pair (weights, json): a SIGKILL after the new weights are in place but
    before the new json leaves the previous checkpoint loadable."""
    import pixelcam.models.checkpoint as ckpt_mod

    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head=None)
    stem = tmp_path / "last"
    save_checkpoint(model, stem, {"epoch": 0})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    real = ckpt_mod.atomic_write

    def killed_at_json(path, write):
        if str(path).endswith(".json"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, write)

    pid = os.fork()
    if pid == 0:  # the child saves epoch 1 and is killed half-way
        try:
            monkeypatch.setattr(ckpt_mod, "atomic_write", killed_at_json)
            save_checkpoint(model, stem, {"epoch": 1})
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    # the new weights did land (the save got that far), yet epoch 0 is what loads
    on_disk = load_file(stem.with_suffix(".safetensors"))
    moved = [k for k in before if not torch.equal(on_disk[k], before[k])]
    assert moved and all(k in dict(model.named_parameters()) for k in moved)
    loaded, meta = load_checkpoint(stem)
    assert meta["epoch"] == 0
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    save_checkpoint(model, stem, {"epoch": 2})  # the next save completes and cleans up
    assert load_checkpoint(stem)[1]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


@pytest.mark.parametrize(
    ("lr", "expect"),
    [("inf", "loss became nan at epoch 1 step 2"), ("1e12", "weights became non-finite")],
    ids=["nan-loss", "inf-weights"],
)
def test_non_finite_training_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, capsys, synthetic_root, tiny_train, odd_name, lr, expect
):
    out = tmp_path / odd_name
    rc = main(
        ["train", "--out", str(out), *tiny_train, "--data-root", str(synthetic_root)]
        + ["--epochs", "2", "--lr", lr, "--json"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and expect in err and str(out) in err, err
    assert "try a lower learning rate" in err
    errors = [e for e in read_events(out / "events.jsonl") if e["event"] == "error"]
    assert errors and errors[-1]["kind"] == "TrainingError"
    for name in ("last", "best_cl"):  # the epoch-0 checkpoints, with finite weights
        model, meta = load_checkpoint(out / name)
        assert meta["epoch"] == 0
        assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    assert not (out / "resume" / "resume.json").exists()  # no broken epoch to resume from
    assert not (out / ".lock").exists()


def test_unwritable_output_folder_is_refused_before_training(tmp_path, capsys, tiny_train):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    out = blocker / "run"  # (chmod cannot block root: a path under a file cannot be created)
    rc = main(["train", "--out", str(out), *tiny_train, "--epochs", "1", "--json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.splitlines() == [err] and "not writable" in err and str(out) in err
    assert blocker.read_text() == "not a folder"


def test_too_little_disk_space_is_refused_before_training(
    tmp_path, capsys, monkeypatch, tiny_train
):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil,
        "disk_usage",
        lambda p: real(p)._replace(free=3 << 20),  # 3 MiB free
    )
    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), *tiny_train, "--epochs", "1", "--json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.splitlines() == [err] and "not enough disk space" in err and str(out) in err
    assert "3 MiB free" in err
    assert not (out / "config.json").exists() and not (out / "synthetic-data").exists()
