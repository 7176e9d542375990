"""Issue 20, finding 1 and the fault run: ``pixelcam train --out OUT --resume`` (the
README's command) continues the run with ITS OWN settings; an explicit flag that differs
is refused naming the setting, except ``--epochs``, which extends the run and says so;
killed at random moments (SIGKILL, at least 10 times), the resumed run ends with the
weights of an uninterrupted one, bit for bit, and no temporary file is left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from pixelcam.cli import main
from pixelcam.train.events import read_events

#: One thread per process: every run of a comparison computes with the same thread count.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
#: The fault run's tiny training (synthetic data written by the run itself, in OUT).
FAULT_TRAIN = [
    "--dataset", "synthetic", "--backbone", "test_resnet", "--synthetic-n-per-class", "6",
    "--synthetic-size", "48", "--resize", "48", "--crop", "40", "--eval-size", "48",
    "--batch-size", "4", "--device", "cpu", "--seed", "7",
]  # fmt: skip
POSIX_ONLY = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX SIGKILL")


def _train(capsys, out: Path, *args: object) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["train", "--out", str(out), *map(str, args)])
    return rc, capsys.readouterr().err


def _saved_epochs(out: Path) -> int:
    return json.loads((out / "config.json").read_text())["epochs"]


def _done(out: Path) -> list[dict]:
    return [e for e in read_events(out / "events.jsonl") if e["event"] == "done"]


# ---- finding 1: --resume takes every setting from the saved run -------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_root, tiny_train) -> tuple[Path, list[str]]:
    """A complete 2-epoch run (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("runs") / "two epochs"
    args = [*tiny_train, "--data-root", str(synthetic_root), "--epochs", "2", "--json"]
    assert main(["train", "--out", str(out), *args]) == 0
    return out, args


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    import shutil

    out = tmp_path / "run copy"
    shutil.copytree(finished_run[0], out)
    return out


def test_resume_as_the_readme_says_keeps_the_runs_epochs(run_copy, capsys):
    """Was: the CLI's default 10 epochs replaced the run's own (2 -> 10, config.json too)."""
    rc, err = _train(capsys, run_copy, "--resume", "--json")
    assert rc == 0, err
    assert _saved_epochs(run_copy) == 2
    assert _done(run_copy)[-1]["message"].startswith("finished 2 epochs")
    history = json.loads((run_copy / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]


def test_resume_with_more_epochs_extends_the_run_and_says_so(run_copy, capsys):
    rc, err = _train(capsys, run_copy, "--resume", "--epochs", "3", "--json")
    assert rc == 0, err
    assert _saved_epochs(run_copy) == 3
    logs = [e["message"] for e in read_events(run_copy / "events.jsonl") if e["event"] == "log"]
    assert "epochs: 2 -> 3 (run extended)" in logs
    assert _done(run_copy)[-1]["message"].startswith("finished 3 epochs")


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        (["--batch-size", "8"], "batch_size"),
        (["--lr", "0.5"], "lr"),
        (["--backbone", "resnet18"], "backbone"),
        (["--no-amp"], "amp"),
        (["--seed", "9"], "seed"),
        (["--skip-unreadable"], "skip_unreadable"),
    ],
)
def test_resume_refuses_a_flag_that_differs_from_the_run(run_copy, capsys, flags, setting):
    before = (run_copy / "config.json").read_text()
    rc, err = _train(capsys, run_copy, "--resume", *flags, "--json")
    assert rc == 2
    line = err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("pixelcam train: error: cannot resume")
    assert f"{setting}=" in line and "the run was started with" in line, line
    assert (run_copy / "config.json").read_text() == before  # nothing rewritten


def test_resume_accepts_flags_equal_to_the_run_and_refuses_fewer_epochs(
    run_copy, finished_run, capsys
):
    # the whole original command line again, plus --resume: nothing differs
    rc, err = _train(capsys, run_copy, *finished_run[1], "--resume")
    assert rc == 0, err
    rc, err = _train(capsys, run_copy, "--resume", "--epochs", "1", "--json")
    assert rc == 2 and "already trained 2 epochs" in err
    assert _saved_epochs(run_copy) == 2


def test_resume_from_the_python_api_keeps_the_saved_settings(run_copy):
    from pixelcam.errors import InputError
    from pixelcam.train import TrainConfig, train

    result = train(TrainConfig(out=str(run_copy)), resume=True)  # defaults: 10 epochs
    assert result.epochs_done == 2 and _saved_epochs(run_copy) == 2
    with pytest.raises(InputError, match="batch_size=16"):
        train(TrainConfig(out=str(run_copy), batch_size=16), resume=True)


def test_stale_temporaries_are_removed_on_resume(run_copy, capsys):
    """A killed save leaves ``.<name>.<random>.tmp`` files (0 bytes or partial)."""
    stale = [
        run_copy / "resume" / ".model-00002.safetensors.x1y2z3.tmp",
        run_copy / ".last.json.abcd.tmp",
        run_copy / "selection" / ".best_loc.safetensors.q9.tmp",
    ]
    for p in stale:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"")
    rc, err = _train(capsys, run_copy, "--resume", "--json")
    assert rc == 0, err
    assert not any(p.exists() for p in stale)
    logs = [e["message"] for e in read_events(run_copy / "events.jsonl") if e["event"] == "log"]
    assert any("removed 3 temporary file(s)" in m for m in logs), logs


# ---- the fault run: SIGKILL at random moments, resumed with the README's command --------


def _start(out: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pixelcam.cli", "train", "--out", str(out), *args]
    return subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _count(events: Path, kind: str) -> int:
    return sum(e["event"] == kind for e in read_events(events)) if events.exists() else 0


def _wait_until(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """Poll ``ready()``; False when ``proc`` ended first."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            return False
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("the run made no progress")
        time.sleep(0.01)
    return True


@POSIX_ONLY
def test_random_sigkills_then_readme_resume_equal_an_uninterrupted_run(tmp_path):
    """Ten SIGKILLs at random moments: the first once config.json is written (the run then
    writes its synthetic data, evaluates epoch 0...), each next one a random number of
    training steps (0-4, two a epoch) plus a random delay (0-0.1 s: inside a step, the
    evaluation or the checkpoint and resume writes) after its life started; every life is
    started again with ``pixelcam train --out OUT --resume``, nothing else."""
    rng = random.Random(20)
    whole, cut = tmp_path / "whole", tmp_path / "killed run"
    epochs = ["--epochs", "20"]
    ref = _start(whole, *FAULT_TRAIN, *epochs)
    proc = _start(cut, *FAULT_TRAIN, *epochs)
    kills, events = 0, cut / "events.jsonl"
    try:
        assert _wait_until(proc, (cut / "config.json").exists), proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.3))
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the run ended after {kills} kills: {proc.stderr.read()[-2000:]}")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            kills += 1
            starts, steps = _count(events, "start"), _count(events, "step")
            proc = _start(cut, "--resume")  # the README's command, nothing else
            if kills == 10:
                break
            k = rng.randint(0, 4)
            assert _wait_until(
                proc,
                lambda s=starts, n=steps + k: (
                    _count(events, "start") > s and _count(events, "step") >= n
                ),
            ), proc.stderr.read()[-2000:]
            time.sleep(rng.uniform(0.0, 0.1))
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        _, err = ref.communicate(timeout=240)
        assert ref.returncode == 0, err[-2000:]
    finally:
        for p in (ref, proc):
            if p.poll() is None:
                p.kill()

    assert kills >= 10
    resumed = [e for e in read_events(events) if e["event"] == "log" and "resumed" in e["message"]]
    assert len(resumed) >= 3, resumed  # most lives got past an epoch before their kill
    for name in ("last", "best_cl", "best_loc"):
        a, b = load_file(whole / f"{name}.safetensors"), load_file(cut / f"{name}.safetensors")
        assert a.keys() == b.keys()
        unequal = [k for k in a if not (a[k] == b[k]).all() or a[k].dtype != b[k].dtype]
        assert not unequal, (name, unequal[:5])
    history = json.loads((whole / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(21))
    assert json.loads((cut / "history.json").read_text()) == history
    assert json.loads((cut / "config.json").read_text())["epochs"] == 20
    leftovers = [p for p in cut.rglob("*") if p.name.endswith((".tmp", ".new", ".prev"))]
    assert not leftovers, leftovers
    assert not (cut / ".lock").exists()
