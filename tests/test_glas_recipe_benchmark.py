"""benchmarks/glas_recipe.py's arithmetic, with the training and scoring stubbed: the
paired test of PixelCAM against its teacher per seed and pooled, and ``--against`` (a
recipe variant against another, image by image, on students of the same teachers)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

IMAGES = ["a", "b", "c", "d"]
#: per-image PxAP of each checkpoint: run folder name -> {image: PxAP}
PER_IMAGE = {
    "base-s0": {"a": 50, "b": 55, "c": 60, "d": 52},
    "base-s1": {"a": 51, "b": 54, "c": 61, "d": 50},
    "pix-layercam-s0": {"a": 60, "b": 61, "c": 66, "d": 57},
    "pix-layercam-s1": {"a": 58, "b": 62, "c": 69, "d": 55},
}
#: the other variant's students: 0.5 or 1.5 PxAP below, 1.0 on average
OTHER = {
    k: {i: v - (0.5 if n % 2 else 1.5) for n, (i, v) in enumerate(d.items())}
    for k, d in PER_IMAGE.items() if "pix" in k
}  # fmt: skip


@pytest.fixture
def recipe(load_benchmark, monkeypatch):
    mod = load_benchmark("glas_recipe")
    data = SimpleNamespace(ids=IMAGES)
    monkeypatch.setattr(mod, "held_out", lambda args: (data, set(IMAGES)))
    monkeypatch.setattr(mod, "train_run", lambda out, seed, args, teacher, method: 60.0)
    monkeypatch.setattr(mod, "constant_pxap", lambda data: (49.0, 49.5))

    def score(ckpt: Path, methods: list[str], data: Any, valcl_ids: set[str], device: str):
        run = ckpt.parent
        table = OTHER if run.parent.name == "other" else PER_IMAGE
        per = dict(table[run.name])
        mean = sum(per.values()) / len(per)
        return {m: mean for m in methods}, {m: per for m in methods}, 100.0

    monkeypatch.setattr(mod, "score", score)
    return mod


def test_pooled_paired_test_of_pixelcam_against_its_teacher(recipe, tmp_path, capsys):
    out = tmp_path / "table.json"
    argv = ["--data-root", "x", "--runs", str(tmp_path / "this"), "--seeds", "0", "1",
            "--teachers", "layercam", "--out", str(out)]  # fmt: skip
    assert recipe.main(argv) == 0
    text = capsys.readouterr().out
    deltas = [PER_IMAGE[f"pix-layercam-s{s}"][i] - PER_IMAGE[f"base-s{s}"][i]
              for s in (0, 1) for i in IMAGES]  # fmt: skip
    mean = sum(deltas) / len(deltas)
    assert f"PixelCAM vs layercam: per-image delta {mean:+.1f} PxAP" in text and "n = 8" in text
    assert "against" not in text
    rows = json.loads(out.read_text())
    assert rows[0]["layercam"]["images"]["a"] == [60, 50]  # [PixelCAM, teacher] per image


def test_against_pairs_each_student_with_the_other_variants_same_seed(recipe, tmp_path, capsys):
    argv = ["--data-root", "x", "--runs", str(tmp_path / "this"), "--seeds", "0", "1",
            "--teachers", "layercam", "--against", str(tmp_path / "other")]  # fmt: skip
    assert recipe.main(argv) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "vs " + str(tmp_path) in x]
    assert len(lines) == 1
    assert "PixelCAM (layercam seeds) vs" in lines[0]
    assert "per-image delta +1.0 PxAP" in lines[0] and "n = 8" in lines[0]
