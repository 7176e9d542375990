"""Untrusted files (issue 8): nothing a user loads runs code; checkpoints for another model,
config files and point annotation files are checked before use, with messages saying what
was expected and what was found."""

from __future__ import annotations

import hashlib
import json
import pickle
import pickletools
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from pixelcam.cli import main
from pixelcam.errors import CheckpointError, InputError
from pixelcam.models import build_model, load_checkpoint, read_state_dict, save_checkpoint
from pixelcam.models.checkpoint import load_state_into
from pixelcam.train import TrainConfig


class _Bomb:
    """Unpickling this runs ``exec``, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture(params=["torch-zip.pt", "raw-pickle.pth"])
def bomb(request, tmp_path, marker) -> Path:
    """A weights file whose unpickling would run code: torch's zip format or a raw pickle."""
    payload = {"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": _Bomb(marker)}
    path = tmp_path / f"weights {request.param}"
    if path.suffix == ".pt":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


def _pickle_bytes(path: Path) -> bytes:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return path.read_bytes()


def test_the_bombs_are_armed(bomb, marker):
    """Without this the tests below could pass for a harmless file: the pickle does call
    ``exec`` on code writing the marker (checked by disassembly, without running it)."""
    ops = list(pickletools.genops(_pickle_bytes(bomb)))
    names = [op.name for op, _, _ in ops]
    args = " ".join(str(arg) for _, arg, _ in ops)
    assert "REDUCE" in names and "exec" in args and str(marker) in args


def test_bomb_as_backbone_weights_is_refused_without_running(bomb, marker):
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(bomb)
    assert str(bomb) in str(exc.value)
    with pytest.raises(CheckpointError):
        build_model("test_resnet", pixel_head=None, weights=bomb)
    assert not marker.exists()


def _one_line_error(capsys, command: str, *names: object) -> str:
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err], err
    assert err.startswith(f"pixelcam {command}: error: ")
    for name in names:
        assert str(name) in err, (name, err)
    return err


def test_cli_train_with_bomb_weights(bomb, marker, tmp_path, capsys, synthetic_root, tiny_train):
    args = ["train", "--out", str(tmp_path / "run"), *tiny_train, "--epochs", "1", "--json"]
    rc = main(args + ["--data-root", str(synthetic_root), "--weights", str(bomb)])
    assert rc == 2
    err = _one_line_error(capsys, "train", bomb, "objects other than tensors", "refused")
    assert "weights_only" not in err  # no advice to load it unsafely
    assert not marker.exists()


def test_bomb_given_as_a_checkpoint(
    bomb, marker, tmp_path, capsys, tiny_checkpoint, synthetic_root
):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(bomb)
    assert main(["predict", str(bomb), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "predict", bomb)
    assert main(["evaluate", str(bomb), "--data-root", str(synthetic_root), "--device", "cpu"]) == 2
    _one_line_error(capsys, "evaluate", bomb)
    # the bomb as the weights of a checkpoint whose json is genuine (hash updated to match)
    doc = json.loads(Path(f"{tiny_checkpoint}.json").read_text())
    doc["weights"]["sha256"] = hashlib.sha256(bomb.read_bytes()).hexdigest()
    (tmp_path / "fake.json").write_text(json.dumps(doc))
    (tmp_path / "fake.safetensors").write_bytes(bomb.read_bytes())
    with pytest.raises(CheckpointError, match="cannot read checkpoint weights"):
        load_checkpoint(tmp_path / "fake.json")
    # a json asking timm to load the bomb while building the model
    doc = json.loads(Path(f"{tiny_checkpoint}.json").read_text())
    doc["config"]["timm_kwargs"] = {"checkpoint_path": str(bomb)}
    (tmp_path / "timm.json").write_text(json.dumps(doc))
    shutil.copy(f"{tiny_checkpoint}.safetensors", tmp_path / "timm.safetensors")
    with pytest.raises(CheckpointError, match="cannot rebuild the model"):
        load_checkpoint(tmp_path / "timm.json")
    assert not marker.exists()


def test_legacy_pt_weights_load_with_weights_only(tmp_path, monkeypatch):
    donor = build_model("test_resnet", pixel_head=None).backbone.model.state_dict()
    path = tmp_path / "legacy backbone.pt"
    torch.save({"model": donor, "epoch": 7}, path)
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = build_model("test_resnet", pixel_head=None, weights=path)
    assert calls == [True]
    own = model.backbone.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in donor.items())


# ---- checkpoints made for another model ---------------------------------------------------


@pytest.fixture
def three_class_checkpoint(tmp_path) -> Path:
    model = build_model("test_resnet", num_classes=3, head="gap", pixel_head="linear")
    save_checkpoint(model, tmp_path / "three classes", {"class_names": ["a", "b", "c"]})
    return tmp_path / "three classes.json"


def test_wrong_class_count_is_refused_naming_expected_and_found(
    three_class_checkpoint, capsys, synthetic_root, tmp_path, tiny_train
):
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(three_class_checkpoint, expect={"num_classes": 2})
    assert "made for num_classes=3, expected num_classes=2" in str(exc.value)
    rc = main(
        ["evaluate", str(three_class_checkpoint), "--data-root", str(synthetic_root)]
        + ["--split", "valpx", "--size", "32", "--device", "cpu"]
    )
    assert rc == 2
    _one_line_error(capsys, "evaluate", three_class_checkpoint, "num_classes=3", "num_classes=2")
    # starting PixelCAM from it on a 2-class dataset
    rc = main(
        ["train", "--out", str(tmp_path / "run"), *tiny_train, "--data-root", str(synthetic_root)]
        + ["--phase", "pixelcam", "--teacher", str(three_class_checkpoint), "--json"]
        + ["--init", str(three_class_checkpoint), "--epochs", "1"]
    )
    assert rc == 2
    _one_line_error(capsys, "train", three_class_checkpoint, "num_classes=3", "num_classes=2")


def test_wrong_architecture_is_refused_naming_expected_and_found(tmp_path):
    other = build_model("test_resnet", num_classes=2, head="deepmil", pixel_head=None)
    save_checkpoint(other, tmp_path / "deepmil")
    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head=None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as exc:
        load_state_into(model, tmp_path / "deepmil")
    assert "head: expected 'gap', found 'deepmil'" in str(exc.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    with pytest.raises(CheckpointError, match="made for backbone='test_resnet', expected"):
        load_checkpoint(tmp_path / "deepmil", expect={"backbone": "resnet18"})
    # a json edited to claim another backbone: its weights do not fit, and that is said
    doc = json.loads((tmp_path / "deepmil.json").read_text())
    doc["config"]["head"] = "gap"
    (tmp_path / "deepmil.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not fit the model") as exc:
        load_checkpoint(tmp_path / "deepmil")
    assert "unexpected" in str(exc.value) and "head." in str(exc.value)


def _run_folder(out: Path, synthetic_root: Path, **changes) -> dict:
    """A run folder as a killed run leaves it: config.json and nothing else."""
    config = TrainConfig(
        out=str(out), dataset="synthetic", data_root=str(synthetic_root), backbone="test_resnet",
        epochs=2, batch_size=4, resize=64, crop=56, eval_size=64, device="cpu",
    ).to_dict()  # fmt: skip
    config.update(changes)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config))
    return config


def test_resume_from_another_architecture_is_refused(tmp_path, capsys, synthetic_root):
    out = tmp_path / "run"
    _run_folder(out, synthetic_root)
    other = build_model("test_resnet", num_classes=2, head="deepmil", pixel_head=None)
    save_checkpoint(other, out / "resume" / "model-00001", {"epoch": 1})
    pointer = json.dumps({"epoch": 1, "model": "model-00001", "state": "state-00001"})
    (out / "resume" / "resume.json").write_text(pointer)
    rc = main(["train", "--out", str(out), "--resume", "--epochs", "2", "--json"])
    assert rc == 2
    _one_line_error(capsys, "train", out / "resume" / "model-00001", "expected 'gap'", "'deepmil'")
    assert (out / "resume" / "resume.json").read_text() == pointer  # nothing lost


# ---- config files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"bogus_key": 1}, "unknown training configuration keys: bogus_key"),
        ({"lr": -1.0}, "lr > 0"),
        ({"lr": float("nan")}, "lr > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"crop": 300}, "crop (300) must not exceed resize (64)"),
        ({"bg_fraction": 2.0}, "bg_fraction must be in (0, 1]"),
        ({"phase": "evil"}, "phase must be one of"),
        ({"seed": "abc"}, "'seed' must be int, got 'abc'"),
        ({"lr": "0.1"}, "'lr' must be float"),
        ({"amp": 1}, "'amp' must be bool"),
        ({"n": True}, "'n' must be int"),
        ({"fold": [0]}, "'fold' must be int | None"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_config_json_is_validated_on_resume(tmp_path, capsys, synthetic_root, change, expect):
    out = tmp_path / "run"
    _run_folder(out, synthetic_root, **change)
    text = (out / "config.json").read_text()
    rc = main(["train", "--out", str(out), "--resume", "--epochs", "2", "--json"])
    assert rc == 2
    _one_line_error(capsys, "train", out / "config.json", expect)
    assert (out / "config.json").read_text() == text  # nothing changed
    assert not (out / "events.jsonl").exists()


@pytest.mark.parametrize(
    "content", ['{"out": "x", "lr": 0.1', "[1, 2]", "\xff\xfe not text"], ids=["cut", "list", "bin"]
)
def test_unreadable_config_json_is_refused_on_resume(tmp_path, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_bytes(content.encode("latin-1"))
    rc = main(["train", "--out", str(out), "--resume", "--epochs", "2", "--json"])
    assert rc == 2
    _one_line_error(capsys, "train", out / "config.json")


def test_a_valid_config_round_trips(tmp_path, synthetic_root):
    config = TrainConfig.from_dict(_run_folder(tmp_path / "run", synthetic_root))
    assert config.validate().backbone == "test_resnet"
    with pytest.raises(InputError, match="JSON object"):
        TrainConfig.from_dict([("lr", 1)])


# ---- point annotation files -------------------------------------------------------------

_HEADER = "# pixelcam-annotations v1 shape=64,64\n# image_id: benign/benign_0000\n"
_COLUMNS = "image_id,row,col,label,source\n"


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (_HEADER + _COLUMNS + "benign/benign_0000,10,10,2,user\n", "label must be 0"),
        (_HEADER + _COLUMNS + "benign/benign_0000,nan,10,1,user\n", "not a finite number"),
        (
            _HEADER + _COLUMNS + "benign/benign_0000,640,10,1,user\n",
            "row 640.0 is outside the image",
        ),
        (_HEADER + _COLUMNS + "benign/benign_0000,1e400,10,1,user\n", "not a finite number"),
        (_HEADER + _COLUMNS + "benign/benign_0000,10\n", "expected 5 fields"),
        ("# pixelcam-annotations v9 shape=64,64\n" + _COLUMNS, "version 9"),
        ("# pixelcam-annotations v1 shape=0,64\n" + _COLUMNS, "line 1"),
        ("image_id,row\n", "expected the header"),
    ],
    ids=["label", "nan", "outside", "overflow", "fields", "version", "shape", "no-header"],
)
def test_annotation_files_are_validated_before_use(
    tmp_path, capsys, synthetic_root, tiny_train, body, expect
):
    path = tmp_path / "notes ü" / "benign_0000.points.csv"
    path.parent.mkdir()
    path.write_text(body, encoding="utf-8")
    from pixelcam.annotations import load_annotations

    with pytest.raises(InputError, match=expect) as exc:
        load_annotations(path)
    assert str(path) in str(exc.value)
    if expect == "label must be 0":  # and through the CLI, before any training
        out = tmp_path / "run"
        rc = main(
            ["train", "--out", str(out), *tiny_train, "--data-root", str(synthetic_root)]
            + ["--annotations", str(path.parent), "--epochs", "1", "--json"]
        )
        assert rc == 2
        _one_line_error(capsys, "train", path, "label must be 0")
        assert not (out / "last.json").exists()


def test_annotation_json_that_is_not_json_or_not_utf8(tmp_path):
    from pixelcam.annotations import load_annotations

    cut = tmp_path / "a.points.json"
    cut.write_text('{"format": "pixelcam-annotations", "version": 1, "points": [')
    with pytest.raises(InputError, match="not valid JSON") as exc:
        load_annotations(cut)
    assert str(cut) in str(exc.value)
    binary = tmp_path / "b.points.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8"):
        load_annotations(binary)
