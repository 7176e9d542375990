"""benchmarks/reproduce.py: its B-LOC bookkeeping, and one end-to-end smoke run of every part
on generated data with absurdly small settings (tables printed, JSON written, runs reused)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def reproduce(load_benchmark):
    return load_benchmark("reproduce")


def _epoch(tracker, out: Path, epoch: int, acc: float, locs: dict[str, float]) -> None:
    """What the trainer does at the end of an epoch: write last.*, then emit the event."""
    (out / "last.json").write_text(json.dumps({"epoch": epoch}))
    (out / "last.safetensors").write_text(str(epoch))
    metrics = {"epoch": epoch, "valcl_acc": acc, **{f"valpx_pxap_{m}": v for m, v in locs.items()}}
    tracker({"event": "epoch", "epoch": epoch, "metrics": metrics})


def test_best_loc_copies_apply_the_accuracy_guard_in_hindsight(tmp_path):
    from pixelcam.train.selection import BestLocTracker

    targets = {"cam": "bloc_cam", "layercam": "bloc_layercam"}
    tracker = BestLocTracker(tmp_path, targets, margin=10.0)  # what reproduce.py attaches
    tracker({"event": "step", "epoch": 1})  # other events are ignored
    _epoch(tracker, tmp_path, 0, 50.0, {"cam": 99.0, "layercam": 99.0})
    # epoch 0 is never chosen, but a fallback file exists from the start
    assert json.loads((tmp_path / "bloc_cam.json").read_text()) == {"epoch": 0}
    _epoch(tracker, tmp_path, 1, 50.0, {"cam": 90.0, "layercam": 40.0})  # untrained, lucky map
    assert json.loads((tmp_path / "bloc_cam.json").read_text()) == {"epoch": 1}
    _epoch(tracker, tmp_path, 2, 100.0, {"cam": 60.0, "layercam": 80.0})
    _epoch(tracker, tmp_path, 3, 95.0, {"cam": 70.0, "layercam": 50.0})
    _epoch(tracker, tmp_path, 4, 100.0, {"cam": 70.0, "layercam": 30.0})
    # cam: epoch 1 (PxAP 90) is 50 points below the run's best accuracy: not eligible; of the
    # eligible epochs 2-4, PxAP 70 ties between 3 and 4 -> the later one
    assert json.loads((tmp_path / "bloc_cam.json").read_text()) == {"epoch": 4}
    assert (tmp_path / "bloc_cam.safetensors").read_text() == "4"
    assert json.loads((tmp_path / "bloc_layercam.json").read_text()) == {"epoch": 2}
    # only Pareto-front candidates are kept: epoch 2 (layercam) and epoch 4 (cam)
    kept = sorted(p.name for p in (tmp_path / "bloc-candidates").iterdir())
    assert kept == [f"e0000{e}.{x}" for e in (2, 4) for x in ("json", "safetensors")]


def test_stats_and_json_cleaning(reproduce):
    s = reproduce._stats([1.0, 3.0, None, float("nan")])
    assert s == {"mean": 2.0, "std": pytest.approx(math.sqrt(2.0)), "n": 2}
    assert reproduce._stats([]) == {"mean": None, "std": None, "n": 0}
    assert reproduce._clean({"a": [float("inf"), 1.5], 2: float("nan")}) == {
        "a": [None, 1.5],
        "2": None,
    }
    assert reproduce._f({"mean": 2.0, "std": 0.5, "n": 2}) == "2.0 ± 0.5"
    assert reproduce._f(None) == "—"


TINY = [
    "--quick", "--synthetic-n-per-class", "10", "--synthetic-size", "32",
    "--epochs-baseline", "2", "--epochs-pixelcam", "1", "--teachers", "deepmil,layercam",
    "--ablation-n", "5", "--ablation-lam", "1", "--shift-steps", "2", "--device", "cpu",
]  # fmt: skip


def test_smoke_every_part_on_generated_data(reproduce, tmp_path, capsys):
    out = tmp_path / "rep"
    assert reproduce.main([*TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for header in (
        "### Table 1: localization (PxAP) and classification (CL)",
        "| WSOL model | PxAP | CL | paper GlaS PxAP | paper GlaS CL |",
        "### Table 2: paired t-test",
        "| baseline | seed | images | mean ΔPxAP | T-stat | p-value |",
        "### Table 4: mean class separability J",
        "### OOD (Tables 3 and 5 analogue): trained on generated 'he', tested on generated 'ihc'",
        "### Stain shift (Figure 5: PxAP)",
        "### Stain shift (Figure 4: CL)",
        "| WSOL model | 0.0 | 0.5 | 1.0 |",
        "### Ablation, Table 16",
        "### Ablation, Table 17",
        "### Ablation, Table 15",
        "### Ablation, Table 12",
    ):
        assert header in printed, header
    assert (
        "| LayerCAM w/ PixelCAM |" in printed
        and "| GradCAM++ |" not in printed.split("### Table 2")[0]
    )  # only the requested teachers in Table 1
    assert (out / "results.md").read_text().count("### ") == printed.count("### ")

    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"meta", "main", "ood", "ablations"}
    meta = res["meta"]
    assert meta["command"].startswith(".venv/bin/python benchmarks/reproduce.py --quick")
    # 8 WSOL and ablation runs (as before the references), 2 NEGEV, 1 U-Net
    assert meta["mode"] == "quick" and meta["runs_trained"] == 11 and meta["runs_reused"] == 0
    assert {"cpu", "cores", "torch"} <= set(meta["machine"]) and meta["timings_s"]["total"] > 0

    main = res["main"]
    assert main["n_px_images"] == 4 and main["class_names"] == ["benign", "malignant"]
    rows = [r["row"] for r in main["table1"]]
    assert rows == [
        "DeepMIL", "DeepMIL w/ PixelCAM", "LayerCAM", "LayerCAM w/ PixelCAM", "DeepMIL w/ NEGEV",
        "LayerCAM w/ NEGEV", "U-Net (full supervision)",
    ]  # fmt: skip
    for r in main["table1"][:-1]:
        assert 0.0 <= r["pxap"]["mean"] <= 100.0 and r["cl"]["mean"] in (0.0, 25.0, 50.0, 75.0,
                                                                          100.0)  # fmt: skip
        assert r["per_seed"][0]["checkpoint"].endswith(
            "bloc_pixelcam" if r["pixelcam"] else f"bloc_{r['method']}"
        )
    assert main["table1"][0]["paper_pxap"] == 79.9
    by_row = {r["row"]: r for r in main["table1"]}
    # NEGEV's classifier is the frozen baseline B-CL: its CL is the baseline's own B-CL
    assert by_row["LayerCAM w/ NEGEV"]["paper_pxap"] == 73.8
    unet = by_row["U-Net (full supervision)"]
    assert unet["cl"]["mean"] is None and unet["paper_pxap"] == 95.8 and unet["paper_cl"] is None
    assert "| U-Net (full supervision) |" in printed and "| n/a |" in printed
    for r in main["table2"]:
        s = r["per_seed"][0]
        assert s["seed"] == 0 and s["n"] == 4 and set(s) == {"t", "p", "n", "mean_diff", "seed"}
    for r in main["table4"]:
        assert set(r["j_class"]) == {"benign", "malignant"} and r["j_all"]["mean"] > 0
    per_image = main["per_image_pxap"]["LayerCAM w/ PixelCAM"]["0"]
    assert len(per_image) == 4

    ood = res["ood"]
    assert ood["test_stain"] == "ihc" and len(ood["table3"]) == 4
    assert all("in_distribution_pxap" in r and "j_all" in r for r in ood["table3"])
    shift = ood["shift"]
    assert shift["strengths"] == [0.0, 0.5, 1.0]
    assert shift["profile_distance"][-1] < shift["profile_distance"][0]
    assert all(len(c["pxap"]) == 3 and len(c["cl"]) == 3 for c in shift["curves"].values())
    # strength 0 is the unshifted evaluation of Table 1
    assert shift["curves"]["LayerCAM"]["pxap"][0]["mean"] == pytest.approx(
        main["table1"][2]["pxap"]["mean"]
    )

    abl = res["ablations"]
    assert [r["setting"] for r in abl["n"]] == ["GradCAM++", "n = 5"]
    assert [r["setting"] for r in abl["lam"]] == ["LayerCAM", "lambda = 1"]
    assert [r["setting"] for r in abl["sampler"]] == ["GradCAM++", "TH PixelCAM", "PB PixelCAM"]
    assert len(abl["pixel_head"]) == 6 and abl["pixel_head"][2]["paper_pxap"] == 86.3
    # lambda = 1 with LayerCAM is Table 1's LayerCAM w/ PixelCAM run
    assert abl["lam"][1]["pxap"] == pytest.approx(main["table1"][3]["pxap"]["mean"])

    # a second call reuses every finished run (same configuration) and trains nothing
    assert reproduce.main([*TINY, "--out", str(out), "--parts", "main"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["meta"]["runs_trained"] == 0 and again["meta"]["runs_reused"] == 7
    assert again["main"]["table1"] == main["table1"]


def _camelyon_tree(root: Path, write_folds, size: int = 48) -> Path:
    """A CAMELYON16 patch tree in the Rony et al. layout (``normal/``, ``tumor/`` with
    ``mask_file_*`` beside, ``folds/fold-0/<split>/*.txt``) made of generated tiles."""
    from PIL import Image

    from pixelcam.data.synthetic import generate_tile

    (root / "normal").mkdir(parents=True)
    (root / "tumor").mkdir()
    seed, splits = 0, {}
    for split in ("train", "valcl", "valpx", "test"):
        rows = []
        for label, cls in ((0, "normal"), (1, "tumor")):
            for _ in range(3):
                image, mask = generate_tile(label, size, seed=seed)
                name = f"{cls}/p{seed}.png"
                Image.fromarray(image).save(root / name)
                mask_name = ""
                if label:
                    mask_name = f"tumor/mask_file_p{seed}.png"
                    Image.fromarray((mask > 0).astype("uint8") * 255).save(root / mask_name)
                rows.append((name, label, mask_name))
                seed += 1
        splits[split] = rows
    return write_folds(root, splits)


def test_a_camelyon16_folder_is_trained_and_evaluated_on_its_test_split(
    reproduce, tmp_path, capsys, write_camelyon_folds
):
    """The real-dataset path (not the generated one): CAMELYON16 patches, fold 0, Table 1
    on the fold's test split, one seed, no OOD/ablation parts."""
    root = _camelyon_tree(tmp_path / "camelyon16", write_camelyon_folds)
    out = tmp_path / "rep"
    argv = ["--quick", "--dataset", "camelyon16", "--data-root", str(root), "--fold", "0"]
    argv += ["--backbone", "test_resnet", "--weights", "none", "--parts", "main"]
    argv += ["--teachers", "layercam", "--references", "none", "--epochs-baseline", "2"]
    argv += ["--epochs-pixelcam", "1", "--device", "cpu", "--out", str(out)]
    assert reproduce.main(argv) == 0
    printed = capsys.readouterr().out
    assert "— camelyon16: PxAP on test (6 images), CL on test (6 images)" in printed
    assert "| WSOL model | PxAP | CL | paper CAMELYON16 PxAP | paper CAMELYON16 CL |" in printed
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"meta", "main"}
    main = res["main"]
    assert main["class_names"] == ["normal", "metastatic"] and main["n_px_images"] == 6
    rows = [r["row"] for r in main["table1"]]
    assert rows == ["LayerCAM", "LayerCAM w/ PixelCAM"]
    for r in main["table1"]:
        assert 0.0 <= r["pxap"]["mean"] <= 100.0
    # the paper's CAMELYON16 columns, not its GlaS ones
    assert [r["paper_pxap"] for r in main["table1"]] == [33.2, 66.2]
    assert main["table2"][0]["paper_t"] == 26.5
    assert main["table4"][0]["paper_normal"] is None and main["table4"][0]["paper_all"] == 0.07
    # the t-test pairs per-image PxAP, defined on the 3 test images with a tumour
    (t2,) = main["table2"]
    assert t2["per_seed"][0]["n"] == 3
    # the baseline run was trained on CAMELYON16, fold 0
    (run_cfg,) = [
        json.loads(p.read_text()) for p in (out / "runs").rglob("config.json") if "base" in str(p)
    ]
    assert run_cfg["dataset"] == "camelyon16" and run_cfg["fold"] == 0


def test_a_missing_dataset_is_one_line_with_exit_code_2(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"
    argv = [sys.executable, str(script), "--dataset", "camelyon16", "--fold", "0"]
    argv += ["--data-root", str(tmp_path / "nope"), "--parts", "main", "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"reproduce.py: error: CAMELYON16 root does not exist: {tmp_path / 'nope'}"
    )
