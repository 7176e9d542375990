"""Baseline -> cached teacher CAMs -> PixelCAM -> evaluate, on generated data, tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pixelcam.cli import main as cli
from pixelcam.errors import InputError
from pixelcam.models import load_checkpoint
from pixelcam.train import TrainConfig, read_events, train

# timm's 0.37 M-parameter test_resnet on 64 px tiles: it learns the synthetic task in
# ~15 epochs of 3 steps (about 10 s for both phases on 2 CPU cores).
TINY = dict(
    dataset="synthetic",
    backbone="test_resnet",
    synthetic_n_per_class=30,
    synthetic_size=64,
    resize=64,
    crop=56,
    eval_size=64,
    batch_size=16,
    lr=0.01,
    device="cpu",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = root / "data"
    base = train(TrainConfig(out=str(root / "baseline"), data_root=str(data), epochs=20, **TINY))
    pix = train(
        TrainConfig(
            out=str(root / "pixelcam"),
            data_root=str(data),
            phase="pixelcam",
            teacher=str(root / "baseline"),
            teacher_method="layercam",
            epochs=10,
            **TINY,
        )
    )
    return root, base, pix


def test_artefacts_exist(runs):
    root, base, pix = runs
    for run in (base, pix):
        for name in ("best_cl", "best_loc", "last"):
            assert (run.out / f"{name}.safetensors").exists() and (
                run.out / f"{name}.json"
            ).exists()
        assert (run.out / "history.json").exists() and (run.out / "config.json").exists()
        assert not (run.out / ".lock").exists()
    assert (pix.out / "teacher_cams.safetensors").exists()
    hist = json.loads((pix.out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == list(range(11))


def test_losses_fall(runs):
    _, base, pix = runs

    def first_last(values):
        return np.mean(values[:3]), np.mean(values[-3:])

    first, last = first_last([h["train_loss"] for h in base.history[1:]])
    assert last < first - 0.05, base.history  # from scratch: a clear fall
    # PixelCAM starts from the trained baseline (B-CL): its total loss is dominated by the
    # classifier's noisy CE (3 steps an epoch), so what must fall is the pixel head's
    # partial CE on the seeds, from its first epoch (a new head) to the last three
    pixel = [h["train_pixel_loss"] for h in pix.history[1:]]
    assert all(p > 0 for p in pixel)
    assert np.mean(pixel[-3:]) < pixel[0] - 0.03, pixel


def test_pixelcam_beats_its_teacher_on_generated_data(runs):
    """The paper's claim in miniature: PixelCAM's map localizes better than the CAMs it
    learned from (measured here: baseline LayerCAM B-LOC ~50 PxAP, PixelCAM ~77)."""
    _, base, pix = runs
    base_best = max(h["valpx_pxap"] for h in base.history[1:])
    pix_best = max(h["valpx_pxap"] for h in pix.history[1:])
    assert pix_best > base_best + 5, (base_best, pix_best)


def test_events_are_json_lines(runs):
    _, _, pix = runs
    events = read_events(pix.out / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 11 and "step" in kinds and "checkpoint" in kinds
    epochs = [e for e in events if e["event"] == "epoch"]
    assert all("valpx_pxap" in e["metrics"] for e in epochs)


def test_checkpoint_reloads_identically(runs):
    _, _, pix = runs
    model, meta = load_checkpoint(pix.out / "last")
    model2, _ = load_checkpoint(pix.out / "last.safetensors")
    assert meta["class_names"] == ["benign", "malignant"] and meta["phase"] == "pixelcam"
    # what it was trained on travels with the file (read by the panel's provenance)
    assert meta["dataset"] == "synthetic" and meta["epochs"] == 10
    assert model.pixel_head is not None
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        a, b = model(x), model2(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.pixel_logits, b.pixel_logits)
    assert meta["metrics"]["epoch"] == 10


def test_teacher_cache_is_reused(runs, tmp_path):
    root, _, _ = runs
    events = read_events(root / "pixelcam" / "events.jsonl")
    assert any("computing layercam teacher CAMs" in e.get("message", "") for e in events)


def test_teacher_views_have_their_own_cache(runs, tmp_path):
    """A cache of single-view CAMs is not reused for multiscale ones, and the reverse; each
    is written with its views and reused when they match."""
    from pixelcam.data import open_dataset
    from pixelcam.train import cached_teacher_cams

    root, _, _ = runs
    ckpt = root / "baseline" / "best_loc.json"
    ds = open_dataset("synthetic", root / "data", split="train")
    cams = {}
    for views in ("single", "multiscale", "single"):
        cams[views] = cached_teacher_cams(ckpt, ds, "layercam", tmp_path, size=64, views=views)
        assert json.loads((tmp_path / "teacher_cams.json").read_text())["views"] == views
    some = next(iter(cams["single"]))
    assert np.abs(cams["single"][some] - cams["multiscale"][some]).max() > 0.05
    mtime = (tmp_path / "teacher_cams.safetensors").stat().st_mtime_ns
    again = cached_teacher_cams(ckpt, ds, "layercam", tmp_path, size=64, views="single")
    assert (tmp_path / "teacher_cams.safetensors").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again[some], cams["single"][some])


def test_cli_passes_teacher_views_and_refuses_unknown_ones(tmp_path, capsys):
    from pixelcam.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "r", "--teacher-views", "multiscale"])
    assert args.teacher_views == "multiscale"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "r", "--teacher-views", "sideways"])
    assert "single" in capsys.readouterr().err
    with pytest.raises(InputError, match="teacher_views"):
        TrainConfig(out=str(tmp_path), teacher_views="sideways").validate()


def test_resume_continues_and_refuses_second_run(runs, tmp_path):
    root, _, _ = runs
    cfg = TrainConfig(out=str(tmp_path / "r"), data_root=str(root / "data"), epochs=1, **TINY)
    train(cfg)
    with pytest.raises(InputError, match="already holds a run"):
        train(cfg)
    cfg.epochs = 2
    res = train(cfg, resume=True)
    assert [h["epoch"] for h in res.history] == [0, 1, 2]


def test_a_run_from_a_teacher_records_the_teachers_backbone_and_resumes(runs, tmp_path):
    root, base, _ = runs
    tiny = {**TINY, "backbone": "resnet18"}  # what --backbone said; the teacher decides
    cfg = TrainConfig(out=str(tmp_path / "p"), data_root=str(root / "data"), epochs=1,
                      phase="pixelcam", teacher=str(base.out), **tiny)  # fmt: skip
    train(cfg)
    assert json.loads((tmp_path / "p" / "config.json").read_text())["backbone"] == "test_resnet"
    res = train(TrainConfig(out=str(tmp_path / "p"), epochs=2), resume=True)
    assert [h["epoch"] for h in res.history] == [0, 1, 2]


def test_cli_evaluate_and_predict(runs, tmp_path, capsys):
    root, base, pix = runs
    out = tmp_path / "eval.json"
    rc = cli(
        [
            "evaluate",
            str(base.out / "last"),
            str(pix.out / "last"),
            "--dataset",
            "folder",
            "--data-root",
            str(root / "data"),
            "--split",
            "valpx",
            "--size",
            "64",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    res = report["results"][str(pix.out / "last")]
    assert 0 <= res["pxap"]["pixelcam"] <= 100 and "paired_ttest" in report
    assert "PxAP" in capsys.readouterr().out
    img_dir = root / "data" / "images" / "malignant"
    rc = cli(
        [
            "predict",
            str(pix.out / "last"),
            str(img_dir),
            "--out",
            str(tmp_path / "maps"),
            "--methods",
            "pixelcam,cam",
            "--size",
            "64",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    import tifffile

    tifs = sorted((tmp_path / "maps").glob("*_pixelcam.tif"))
    assert len(tifs) == len(list(img_dir.iterdir()))
    m = tifffile.imread(tifs[0])
    assert m.dtype == np.float32 and m.shape == (64, 64) and 0 <= m.min() <= m.max() <= 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train"], "--out"),
        (["train", "--out", "x", "--epochs", "0"], "positive integer"),
        (["train", "--out", "x", "--lam", "-1"], ">= 0"),
        (["train", "--out", "x", "--fold", "abc"], "fold"),
        (["evaluate", "nope.json", "--dataset", "synthetic"], None),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        code = cli(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    if message:
        assert message in err
    assert err.count("\n") <= 3 and "Traceback" not in err


def test_pixelcam_needs_teacher(tmp_path, capsys):
    rc = cli(["train", "--out", str(tmp_path / "p"), "--phase", "pixelcam"])
    assert rc == 2 and "teacher" in capsys.readouterr().err


@pytest.mark.parametrize("phase", ["pixelcam", "negev"])
def test_missing_teacher_is_named_as_the_teacher(phase, tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    argv = ["train", "--out", str(tmp_path / "p"), "--dataset", "synthetic", "--epochs", "1"]
    rc = cli(argv + ["--phase", phase, "--teacher", str(missing)])
    err = capsys.readouterr().err
    assert rc == 2 and f"teacher {missing} is neither a run folder nor a checkpoint" in err
    assert not (tmp_path / "p" / "best_loc.json").exists()
