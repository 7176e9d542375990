"""NEGEV (decoder over a frozen WSOL classifier, from CAM seeds) and the fully supervised
U-Net: architecture, losses, training and evaluation from the CLI on generated data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pixelcam.cams import available_methods, compute_maps, get_method
from pixelcam.cli import main as cli
from pixelcam.errors import InputError
from pixelcam.models import build_model, load_checkpoint
from pixelcam.models.decoder import UNetDecoder, decoder_channels
from pixelcam.pseudo_labels import IGNORE
from pixelcam.train import TrainConfig, losses, train

TINY = [
    "--dataset", "synthetic", "--backbone", "test_resnet", "--synthetic-n-per-class", "30",
    "--synthetic-size", "64", "--resize", "64", "--crop", "56", "--eval-size", "64",
    "--batch-size", "16", "--lr", "0.01", "--device", "cpu",
]  # fmt: skip


# ------------------------------------------------------------------ architecture
def test_negev_decoder_on_resnet50_adds_the_papers_9m_parameters():
    """Paper Table 11: DeepMIL 24,036,932 vs DeepMIL w/ NEGEV 33,050,150 parameters."""
    base = build_model("resnet50", pixel_head=None)
    negev = build_model("resnet50", pixel_head=None, decoder="negev", freeze_encoder=True)
    added = negev.num_parameters() - base.num_parameters()
    assert added == negev.num_parameters("decoder") == 33_050_150 - 24_036_932
    assert negev.config["decoder_channels"] == [256, 128, 64, 32, 16]


@pytest.mark.parametrize("name", ["test_resnet", "tf_efficientnet_lite0", "deit_tiny_patch16_224"])
def test_skips_and_decoder_output(name):
    model = build_model(name, pixel_head=None, decoder="unet", decoder_channels=16).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats, skips = model.backbone.forward_with_skips(x)
        out = model(x)
    assert torch.allclose(feats, model.backbone(x))  # the hooks change nothing
    sides = [s.shape[-1] for s in skips]
    assert sides == sorted(sides, reverse=True)  # finest first
    assert [s.shape[1] for s in skips] == [c for _, c in model.backbone.skip_points()]
    assert out.seg_logits.shape == (2, 2, 64, 64)
    assert model.config["decoder_channels"] == decoder_channels(len(skips) + 1, 16)


def test_decoder_rejects_wrong_widths_and_sat_and_unknown_kind():
    with pytest.raises(InputError, match="block widths"):
        UNetDecoder(32, [16, 8], channels=[32, 16])
    with pytest.raises(InputError, match="unknown decoder"):
        build_model("test_resnet", decoder="segformer")
    with pytest.raises(InputError, match="sat"):
        build_model("deit_tiny_patch16_224", head="sat", decoder="negev")


def test_decoder_maps_join_the_others_in_one_forward():
    torch.manual_seed(0)
    model = build_model("test_resnet", pixel_head=None, decoder="negev", decoder_channels=16)
    assert "negev" in available_methods(model) and "unet" not in available_methods(model)
    assert not get_method("negev").supports(build_model("test_resnet"))
    res = compute_maps(model, torch.randn(2, 3, 48, 48), ["gradcampp", "negev"], size=(60, 50))
    m = res.maps["negev"]
    assert m.shape == (2, 60, 50) and float(m.min()) >= 0 and float(m.max()) <= 1
    # a probability, not min-max normalised: never exactly spans [0, 1] at random init
    assert float(m.max()) < 1 and float(m.min()) > 0


def test_frozen_encoder_stays_in_eval_mode_and_needs_no_grad():
    model = build_model("test_resnet", pixel_head=None, decoder="negev", freeze_encoder=True)
    model.train()
    assert model.decoder.training and not model.backbone.training and not model.head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())


# ------------------------------------------------------------------ losses
def test_seed_ce_and_negative_evidence():
    logits = torch.zeros(2, 2, 4, 4)
    none = torch.full((2, 4, 4), IGNORE, dtype=torch.long)
    assert float(losses.seed_ce(logits, none)) == 0.0
    seeds = none.clone()
    seeds[0, 0, 0] = 1
    assert float(losses.seed_ce(logits, seeds)) == pytest.approx(np.log(2))
    neg = losses.negative_evidence_ce(logits, torch.tensor([False, True]))
    assert float(neg) == pytest.approx(np.log(2))
    confident_bg = torch.zeros(2, 2, 4, 4)
    confident_bg[:, 0] = 10.0
    assert float(losses.negative_evidence_ce(confident_bg, torch.tensor([True, True]))) < 1e-4
    assert float(losses.negative_evidence_ce(logits, torch.tensor([False, False]))) == 0.0


def test_potts_smoothness_follows_colour_edges():
    rgb = torch.zeros(1, 3, 8, 8)
    rgb[..., 4:] = 1.0  # a strong vertical colour edge between columns 3 and 4
    agree = torch.zeros(1, 8, 8)
    assert float(losses.potts_smoothness(agree, rgb)) == 0.0
    along_edge = torch.zeros(1, 8, 8)
    along_edge[..., 4:] = 1.0  # the map changes where the colour does: almost free
    across = torch.zeros(1, 8, 8)
    across[..., :2] = 1.0  # the map changes inside a flat region: penalised
    assert float(losses.potts_smoothness(along_edge, rgb)) < 1e-6
    assert float(losses.potts_smoothness(across, rgb)) > 0.01


def test_dice_and_segmentation_loss():
    mask = torch.zeros(1, 4, 4, dtype=torch.uint8)
    mask[0, :2] = 1
    perfect = torch.zeros(1, 2, 4, 4)
    perfect[:, 1] = torch.where(mask[0] == 1, 20.0, -20.0)
    assert float(losses.dice_loss(perfect, mask)) < 1e-3
    wrong = -perfect
    assert float(losses.dice_loss(wrong, mask)) > 0.9
    unknown = torch.full_like(mask, IGNORE)
    unknown[0, 0, 0] = 1
    assert float(losses.segmentation_loss(perfect, unknown)) < 1e-3


# ------------------------------------------------------------------ training (CLI)
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    data = str(root / "data")
    common = [*TINY, "--data-root", data]
    assert cli(["train", "--out", str(root / "base"), *common, "--epochs", "20"]) == 0
    for phase, extra in (("negev", ["--teacher", str(root / "base")]), ("unet", [])):
        argv = ["train", "--out", str(root / phase), *common, "--phase", phase, *extra]
        assert cli([*argv, "--epochs", "10", "--decoder-width", "32"]) == 0
    return root


def _history(run):
    return json.loads((run / "history.json").read_text())


def test_negev_keeps_the_classifier_and_beats_its_teacher(runs):
    teacher, _ = load_checkpoint(runs / "base" / "best_cl")
    negev, meta = load_checkpoint(runs / "negev" / "best_loc")
    assert meta["phase"] == "negev" and negev.config["freeze_encoder"]
    t_state, n_state = teacher.state_dict(), negev.state_dict()
    for key, value in t_state.items():  # the classifier and its decision stay untouched
        assert torch.equal(value, n_state[key]), key
    hist = _history(runs / "negev")
    assert len({h["valcl_acc"] for h in hist}) == 1
    # measured: teacher LayerCAM 50.3 PxAP on valpx, NEGEV 74.2 after 10 epochs
    teacher_px = hist[0]["valpx_pxap_layercam"]
    assert max(h["valpx_pxap"] for h in hist[1:]) > teacher_px + 10


def test_unet_learns_from_masks(runs):
    hist = _history(runs / "unet")
    first, best = hist[0]["valpx_pxap"], max(h["valpx_pxap"] for h in hist[1:])
    assert best > 70 and best > first + 20, hist  # measured: 35.2 -> 85.9
    assert all(h["valcl_acc"] is None for h in hist)  # no trained classifier: n/a


def test_cli_evaluates_both(runs, capsys, tmp_path):
    out = tmp_path / "eval.json"
    argv = ["evaluate", str(runs / "negev" / "best_loc"), str(runs / "unet" / "best_loc"),
            "--dataset", "folder", "--data-root", str(runs / "data"), "--split", "test",
            "--size", "64", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "negev" in printed and "unet" in printed and "accuracy n/a" in printed
    report = json.loads(out.read_text())
    neg = report["results"][str(runs / "negev" / "best_loc")]
    unet = report["results"][str(runs / "unet" / "best_loc")]
    assert set(neg["pxap"]) == {"cam", "gradcampp", "layercam", "negev"}
    assert set(unet["pxap"]) == {"unet"} and unet["accuracy"] is None
    assert neg["pxap"]["negev"] > neg["pxap"]["layercam"]
    assert unet["pxap"]["unet"] > 70
    assert report["paired_ttest"]["a"].endswith(":negev")


def test_negative_evidence_pushes_that_class_to_background(runs, tmp_path):
    """With 'benign' as the negative class, benign images' maps fall towards background."""
    cfg = dict(
        dataset="synthetic", backbone="test_resnet", resize=64, crop=56, eval_size=64,
        batch_size=16, lr=0.01, device="cpu", data_root=str(runs / "data"), phase="negev",
        teacher=str(runs / "base"), epochs=4, decoder_width=16,
    )  # fmt: skip
    means = {}
    for neg in ("none", "benign"):
        res = train(TrainConfig(out=str(tmp_path / neg), negative_class=neg, **cfg))
        model, _ = load_checkpoint(res.last)
        from pixelcam.data import open_dataset
        from pixelcam.data.transforms import EvalTransform

        ds = open_dataset("folder", runs / "data", split="test")
        benign = [
            ds.with_transform(EvalTransform(64))[i] for i, y in enumerate(ds.labels) if y == 0
        ]
        x = torch.stack([s.image for s in benign])
        means[neg] = float(compute_maps(model, x, ["negev"]).maps["negev"].mean())
    assert means["benign"] < means["none"] - 0.1, means


def test_bad_decoder_runs_are_refused(runs, tmp_path):
    with pytest.raises(InputError, match="needs a teacher"):
        TrainConfig(out=str(tmp_path / "x"), phase="negev").validate()
    with pytest.raises(InputError, match="negative class 'tumour'"):
        train(
            TrainConfig(out=str(tmp_path / "y"), phase="negev", teacher=str(runs / "base"),
                        data_root=str(runs / "data"), negative_class="tumour",
                        backbone="test_resnet", synthetic_size=64, eval_size=64, device="cpu",
                        epochs=1)
        )  # fmt: skip
    # U-Net trains on masks: a folder without masks is refused before any training
    nomask = tmp_path / "nomask"
    shutil.copytree(runs / "data", nomask)
    shutil.rmtree(nomask / "masks")
    with pytest.raises(InputError, match="phase 'unet' trains on masks"):
        train(
            TrainConfig(out=str(tmp_path / "z"), phase="unet", dataset="folder",
                        data_root=str(nomask), fold=None, backbone="test_resnet", device="cpu",
                        epochs=1)
        )  # fmt: skip
    # NEGEV over a model that already has a decoder
    with pytest.raises(InputError, match="already has a decoder"):
        train(
            TrainConfig(out=str(tmp_path / "w"), phase="negev", teacher=str(runs / "unet"),
                        data_root=str(runs / "data"), backbone="test_resnet", device="cpu",
                        epochs=1, eval_size=64)
        )  # fmt: skip
