"""benchmarks/refine.py (the simulated pathologist): a tiny run on generated tiles with the
bundled sample model, its tables and JSON, and its starting PxAP equal to the library's
evaluation of the same images."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("refine")


def test_tiny_run_prints_tables_and_matches_evaluate_model(bench, tmp_path, capsys):
    from pixelcam.data import open_dataset
    from pixelcam.evaluation import evaluate_model
    from pixelcam.models import load_checkpoint

    data_root, out = tmp_path / "tiles", tmp_path / "refine.json"
    argv = ["--data-root", str(data_root), "--synthetic-n", "3", "--synthetic-size", "96"]
    argv += ["--ks", "0,1,2", "--seed", "0", "--timing-images", "2", "--repeats", "1"]
    argv += ["--json", str(out), "--threads", "1"]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "| k | annotated | held out | refit ms (mean) |" in text
    assert "| seed | k=0 | k=1 | k=2 |" in text
    assert "refit cold" in text and "map refresh" in text
    doc = json.loads(out.read_text())
    run = doc["runs"][0]
    assert [row["k"] for row in run["rows"]] == [0, 1, 2]
    assert len(run["annotated"]) == 3 and len(run["held_out"]) == 3
    assert run["rows"][2]["points"] == 2 * 3  # two points on each annotated image

    # k = 0 is the checkpoint itself: the PxAP evaluate_model gives on those images
    model, meta = load_checkpoint(bench.SAMPLE)
    ds = open_dataset("folder", data_root)
    for key in ("annotated", "held_out"):
        res = evaluate_model(model, ds.subset(run[key]), size=meta["eval_size"])
        assert run["rows"][0][key] == pytest.approx(res.pxap["pixelcam"], abs=0.05)


def test_the_most_wrong_point_is_inside_its_class(bench):
    import numpy as np

    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[10:30, 10:30] = 1
    current = np.full((40, 40), 0.5, dtype=np.float32)
    current[20, 20] = 0.1  # a missed foreground pixel deep inside
    current[11, 11] = 0.0  # worse, but on the gland's edge
    inner = bench.interiors(mask, cell=5.0)
    assert bench.next_point(current, inner, mask, 1, [], 2.0) == (20, 20, 1)
    current[2, 2] = 0.9  # false foreground in the background
    assert bench.next_point(current, inner, mask, 0, [], 2.0) == (2, 2, 0)
    assert bench.next_point(current, inner, mask, 0, [(2, 2)], 2.0)[2] == 0  # elsewhere
