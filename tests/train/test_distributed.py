"""Data-parallel training: a 2-process CPU (gloo) run launched with torchrun."""

from __future__ import annotations

import subprocess
import sys

from pixelcam.models import load_checkpoint
from pixelcam.train import read_events


def test_two_process_gloo_run(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "pixelcam.cli", "train", "--out", str(out), "--dataset", "synthetic",
        "--data-root", str(tmp_path / "data"), "--backbone", "test_resnet",
        "--synthetic-n-per-class", "8", "--synthetic-size", "64", "--resize", "64", "--crop",
        "56", "--eval-size", "64", "--batch-size", "4", "--epochs", "2", "--device", "cpu",
    ]  # fmt: skip
    env_note = "OMP_NUM_THREADS=1 keeps two processes from fighting over 2 cores"
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=400,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, (env_note, proc.stderr[-3000:])
    events = read_events(out / "events.jsonl")
    start = events[0]
    assert start["event"] == "start" and start["world_size"] == 2
    # 12 train images (60 % of 2 x 8), 6 per rank, batch 4 -> 1 step per epoch per rank
    assert start["steps"] == 1
    assert events[-1]["event"] == "done"
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [0, 1, 2]
    model, meta = load_checkpoint(out / "last")
    assert meta["epoch"] == 2 and model.num_classes == 2
    assert not (out / ".lock").exists()
