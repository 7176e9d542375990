"""The registries: one list per kind of choice, read by the CLI, the config and the views.

Contract tests are parametrized over EVERY registered entry (timm's tests/test_models.py
pattern): a new map method, head, phase, sampler or dataset is tested without a new test.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from pixelcam.cams.base import MAP_METHODS, CAMMethod, register
from pixelcam.cams.views import VIEWS, viewed_maps
from pixelcam.cli import build_parser
from pixelcam.data import DATASETS
from pixelcam.device import DEVICES, resolve_device
from pixelcam.errors import InputError
from pixelcam.models import build_model
from pixelcam.models.heads import IMAGE_HEADS, PIXEL_HEADS, GAPHead
from pixelcam.pseudo_labels import IGNORE, SAMPLERS, sample_seeds
from pixelcam.registry import LazyChoices, Registry
from pixelcam.train.config import TrainConfig
from pixelcam.train.phases import PHASES, Phase, StepLoss, register_phase

IMAGES = torch.rand(2, 3, 64, 64)


def _models() -> list[nn.Module]:
    """One small model of each kind a map method can apply to."""
    kw = {"num_classes": 2, "wsol_stride": False}
    return [
        build_model("test_resnet", head="gap", pixel_head="linear", **kw),
        build_model("test_resnet", head="deepmil", pixel_head="mlp", **kw),
        build_model("deit_tiny_patch16_224", head="sat", img_size=64, **kw),
        build_model("test_resnet", head="gap", decoder="negev", decoder_channels=16, **kw),
        build_model("test_resnet", head="gap", decoder="unet", decoder_channels=16, **kw),
    ]


@pytest.fixture(scope="module")
def models() -> list[nn.Module]:
    torch.manual_seed(0)
    return [m.eval() for m in _models()]


def test_registry_names_aliases_and_errors():
    reg: Registry[int] = Registry("colour")
    reg.register("red", aliases=("r",), order=2)(1)
    reg.register("blue", order=1, help="the sky")(2)
    assert reg.names() == ["blue", "red"] and reg.choices() == ["blue", "red", "r"]
    assert reg.get("r") == 1 and reg.canonical("r") == "red" and "r" in reg
    assert reg.entry("blue").help == "the sky"
    with pytest.raises(InputError, match="unknown colour 'green'; available: blue, red"):
        reg.get("green")
    reg.unregister("red")
    assert "r" not in reg and reg.names() == ["blue"]


def test_lazy_choices_read_the_registry_only_when_asked():
    code = (
        "import sys; from pixelcam.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # building the parser imports no torch
    assert "gap" in LazyChoices("pixelcam.models.heads:IMAGE_HEADS")


@pytest.mark.parametrize("name", MAP_METHODS.names())
def test_every_map_method_gives_maps_in_unit_range(name, models):
    applicable = [m for m in models if MAP_METHODS.get(name)().applies(m)]
    assert applicable, f"no test model for map method {name!r}"
    from pixelcam.cams import compute_maps

    maps = compute_maps(applicable[0], IMAGES, [name], size=(32, 32)).maps[name]
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


@pytest.mark.parametrize("name", IMAGE_HEADS.names())
def test_every_image_head_classifies_and_gives_class_maps(name):
    vit = {"backbone": "deit_tiny_patch16_224", "img_size": 64}
    backbone = vit if name == "sat" else {"backbone": "test_resnet"}  # SAT needs tokens
    model = build_model(num_classes=3, head=name, wsol_stride=False, **backbone).eval()
    with torch.no_grad():
        out = model(IMAGES)
        assert out.logits.shape == (2, 3)
        assert model.head.class_map(out.features).shape == (2, 3, *out.features.shape[-2:])


@pytest.mark.parametrize("name", PIXEL_HEADS.names())
def test_every_pixel_head_gives_two_logits_per_location(name):
    assert PIXEL_HEADS.get(name)(16)(torch.rand(2, 16, 5, 5)).shape == (2, 2, 5, 5)


@pytest.mark.parametrize("name", SAMPLERS.choices())
def test_every_sampler_draws_balanced_seeds(name):
    cams = torch.linspace(0, 1, 100).reshape(1, 10, 10).repeat(3, 1, 1)
    seeds = sample_seeds(cams, n=4, sampler=name, generator=torch.Generator().manual_seed(0))
    for b in range(3):
        assert 1 <= int((seeds[b] == 1).sum()) <= 4 and 1 <= int((seeds[b] == 0).sum()) <= 4
        assert int((seeds[b] != IGNORE).sum()) <= 8


@pytest.mark.parametrize("name", VIEWS.names())
def test_every_teacher_view_set_gives_maps_and_is_a_cli_choice(name, models, tmp_path):
    maps = viewed_maps(models[0], IMAGES, "layercam", [0, 1], name)
    assert maps.shape == (2, 64, 64) and 0 <= float(maps.min()) <= float(maps.max()) <= 1
    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--teacher-views", name])
    assert TrainConfig(out=str(tmp_path), teacher_views=args.teacher_views).validate()


@pytest.mark.parametrize("name", PHASES.names())
def test_every_phase_is_valid_in_the_config_and_the_cli(name, tmp_path):
    phase_cls = PHASES.get(name)
    assert phase_cls.name == name and isinstance(phase_cls.needs_teacher, bool)
    teacher = ["--teacher", str(tmp_path)] if phase_cls.needs_teacher else []
    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--phase", name, *teacher])
    assert args.phase == name
    cfg = TrainConfig(out=str(tmp_path), phase=name, teacher=str(tmp_path) or None).validate()
    assert cfg.map_method in MAP_METHODS
    if phase_cls.needs_teacher:
        with pytest.raises(InputError, match="needs a teacher"):
            TrainConfig(out=str(tmp_path), phase=name).validate()


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_is_a_cli_choice(name):
    assert build_parser().parse_args(["evaluate", "x.json", "--dataset", name]).dataset == name


@pytest.mark.parametrize("name", DEVICES.names())
def test_every_device_resolves_or_says_it_is_unavailable(name):
    try:
        assert isinstance(resolve_device(name), torch.device)
    except InputError as exc:
        assert "not available" in str(exc)


def test_sampler_codes_stay_accepted_and_become_names(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), sampler="th").validate()
    assert cfg.sampler == "threshold"
    assert build_parser().parse_args(["train", "--out", "o", "--sampler", "pb"]).sampler == "pb"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "o", "--sampler", "random"])


def test_a_new_map_method_head_and_phase_need_one_place_each(tmp_path, models):
    """Registering in ONE place (here: this test module) makes an entry usable from the
    model builder, the map computation, the config and the CLI, with no other edit."""

    @register
    class Flat(CAMMethod):
        name, order, normalize, class_specific = "flat_test", 50, False, False

        def raw(self, model, output, target):
            return torch.full(output.features.shape[:1] + output.features.shape[2:], 0.25)

    @IMAGE_HEADS.register("gap_test")
    def _gap_test(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
        return GAPHead(in_channels, num_classes)

    @register_phase
    class Frozen(Phase):
        name = "frozen_test"

        def build_model(self, num_classes):
            return build_model("test_resnet", num_classes=num_classes, head="gap_test")

        def loss(self, output, batch, images, run):
            zero = output.logits.sum() * 0.0
            return StepLoss(zero, zero, zero)

    try:
        model = build_model("test_resnet", num_classes=2, head="gap_test").eval()
        from pixelcam.cams import available_methods, compute_maps

        assert "flat_test" in available_methods(model)
        maps = compute_maps(model, IMAGES, ["flat_test"], size=(8, 8)).maps["flat_test"]
        assert torch.allclose(maps, torch.full((2, 8, 8), 0.25))
        cli = ["train", "--out", "o", "--phase", "frozen_test", "--head", "gap_test"]
        args = build_parser().parse_args(cli)
        assert (args.phase, args.head) == ("frozen_test", "gap_test")
        assert TrainConfig(out=str(tmp_path), phase="frozen_test").validate().phase == name_of(
            Frozen
        )
    finally:
        MAP_METHODS.unregister("flat_test")
        IMAGE_HEADS.unregister("gap_test")
        PHASES.unregister("frozen_test")
    assert "flat_test" not in MAP_METHODS and "frozen_test" not in PHASES


def name_of(cls: type) -> str:
    return cls.name
