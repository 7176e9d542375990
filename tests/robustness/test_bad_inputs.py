"""Bad input through the reader, the datasets, prediction and the CLI (issue 8).

Every bad file is answered with an :class:`~pixelcam.errors.InputError` whose message names
it; the CLI turns that into exit code 2 and ONE line on stderr; odd but valid input (1x1,
100000x3, 16-bit, float with NaN/inf, CMYK, paths with spaces and non-ASCII characters)
gives a result. The files come from the generated matrix in ``conftest.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixelcam.cli import main
from pixelcam.data import load_folder, open_dataset, read_image, read_mask
from pixelcam.errors import InputError

REFUSED = (
    "truncated_png", "corrupt_png", "truncated_bmp", "corrupt_bmp", "truncated_jpg",
    "corrupt_jpg", "truncated_tif", "corrupt_tif", "zero_byte", "text_as_png", "stack_4d",
)  # fmt: skip
#: Spaces and non-ASCII characters in every folder these tests write.
ODD = "données ü 雪 (2)"
ACCEPTED = (
    "one_pixel", "tall_100000x3", "wide_3x100000", "gray8", "gray16", "rgba", "rgb16", "float",
    "float_nan_inf", "cmyk_jpeg", "cmyk_tiff",
)  # fmt: skip


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, command: str, *names: object) -> str:
    """Exit code 2 and exactly one stderr line ``pixelcam <command>: error: ...`` naming
    every one of ``names``."""
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pixelcam {command}: error: "), lines[0]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def test_the_matrix_has_every_case(input_matrix, odd_name):
    assert set(REFUSED) | set(ACCEPTED) == set(input_matrix)
    assert all(not input_matrix[n].ok for n in REFUSED)
    assert all(input_matrix[n].ok for n in ACCEPTED)
    assert all(odd_name in str(c.path) for c in input_matrix.values())


# ---- the reader --------------------------------------------------------------------------


@pytest.mark.parametrize("name", REFUSED)
def test_reader_refuses_naming_the_file(input_matrix, name):
    case = input_matrix[name]
    with pytest.raises(InputError) as exc:
        read_image(case.path)
    assert str(case.path) in str(exc.value)
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="mask"):  # the same file used as a mask
        read_mask(case.path)


@pytest.mark.parametrize("name", ACCEPTED)
def test_reader_accepts_odd_but_valid_images(input_matrix, name):
    case = input_matrix[name]
    image = read_image(case.path)
    assert image.dtype == np.uint8 and image.shape == (*case.shape, 3)


def test_reader_values_of_odd_formats(input_matrix):
    gray16 = tifffile.imread(input_matrix["gray16"].path)
    np.testing.assert_array_equal(read_image(input_matrix["gray16"].path)[..., 1], gray16 >> 8)
    raw = tifffile.imread(input_matrix["float_nan_inf"].path)
    out = read_image(input_matrix["float_nan_inf"].path)[..., 0]
    assert (out[:3, :5] == 0).all()  # NaN and +-inf read as 0
    assert out[3:].max() > 200 and np.isfinite(raw[3:]).all()
    # CMYK TIFF: inks converted to RGB as Pillow converts a CMYK image (not read as RGBA)
    inks = tifffile.imread(input_matrix["cmyk_tiff"].path)
    h, w = inks.shape[:2]
    expected = np.asarray(Image.frombytes("CMYK", (w, h), inks.tobytes()).convert("RGB"))
    np.testing.assert_array_equal(read_image(input_matrix["cmyk_tiff"].path), expected)
    jpeg = read_image(input_matrix["cmyk_jpeg"].path).astype(int)
    assert np.abs(jpeg - expected).mean() < 8


# ---- prediction (the library side of `pixelcam predict` and of the napari panel) --------


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    from pixelcam.models import load_checkpoint

    return load_checkpoint(tiny_checkpoint)[0]


@pytest.mark.parametrize(
    "data",
    [
        np.where(np.eye(32, dtype=bool), np.nan, 0.5).astype(np.float32),
        np.where(np.eye(32, dtype=bool), np.inf, 0.5).astype(np.float32),
        np.random.default_rng(0).integers(0, 256, (32, 40, 4), dtype=np.uint8),  # CMYK-like
    ],
    ids=["nan", "inf", "4-channels"],
)
def test_predict_maps_of_non_finite_and_4_channel_arrays(tiny_model, data):
    from pixelcam.inference import predict_maps

    res = predict_maps(tiny_model, data, ["pixelcam", "cam"], size=32)
    for m in res.maps.values():
        assert m.shape == data.shape[:2] and np.isfinite(m).all()
        assert 0.0 <= m.min() <= m.max() <= 1.0
    assert np.isfinite(res.probs).all()


@pytest.mark.parametrize(
    "data",
    [np.where(np.eye(32, dtype=bool), np.inf, -np.inf).astype(np.float32),
     np.full((32, 32, 3), np.nan, np.float32)],
    ids=["all-inf", "all-nan"],
)  # fmt: skip
def test_predict_maps_refuses_an_array_with_no_finite_pixel(tiny_model, data):
    from pixelcam.errors import InputError
    from pixelcam.inference import predict_maps

    with pytest.raises(InputError, match="no finite pixel"):
        predict_maps(tiny_model, data, ["pixelcam"], size=32)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 3, 32, 32), "expected a 2-D"), ((5, 32, 32), "stack"), ((1, 1, 3), "too small"),
     ((100_000, 3), "too small"), ((3, 100_000, 3), "too small")],
)  # fmt: skip
def test_predict_maps_refuses_stacks_and_slivers(tiny_model, shape, message):
    from pixelcam.inference import predict_maps

    with pytest.raises(InputError, match=message):
        predict_maps(tiny_model, np.zeros(shape, np.uint8), ["pixelcam"], size=32)


# ---- the CLI: predict --------------------------------------------------------------------


@pytest.fixture
def model_cache(monkeypatch, tiny_checkpoint):
    """Load the tiny checkpoint once for the many predict calls below (this is not what they
    test, and each load costs a forward pass)."""
    import pixelcam.models

    real = pixelcam.models.load_checkpoint
    key = str(tiny_checkpoint)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = real(tiny_checkpoint)
    cache = _MODEL_CACHE[key]

    def load(path, *args, **kwargs):
        return cache if str(path) == key else real(path, *args, **kwargs)

    monkeypatch.setattr(pixelcam.models, "load_checkpoint", load)


_MODEL_CACHE: dict[str, tuple] = {}


@pytest.mark.parametrize("name", REFUSED)
def test_cli_predict_refuses_bad_files(
    input_matrix, tiny_checkpoint, model_cache, tmp_path, capsys, name
):
    case = input_matrix[name]
    out = tmp_path / "maps é"
    rc, _, err = run_cli(
        capsys, "predict", tiny_checkpoint, case.path, "--out", out, "--size", 32, "--device", "cpu"
    )
    assert_one_line_error(rc, err, "predict", case.path)
    assert not list(out.glob("*.tif"))


#: Read by the reader, but with a side under pixelcam.validation.MIN_IMAGE_SIDE: no map
#: (issue 20; tests/robustness/test_issue20_validation.py checks they are refused).
SLIVERS = ("one_pixel", "tall_100000x3", "wide_3x100000")


@pytest.mark.parametrize("name", [n for n in ACCEPTED if n not in SLIVERS])
def test_cli_predict_odd_but_valid_files(
    input_matrix, tiny_checkpoint, model_cache, tmp_path, capsys, name
):
    case = input_matrix[name]
    out = tmp_path / ODD
    rc, stdout, err = run_cli(
        capsys, "predict", tiny_checkpoint, case.path, "--out", out, "--size", 32, "--device",
        "cpu",
    )  # fmt: skip
    assert rc == 0, err
    written = out / f"{case.path.stem}_pixelcam.tif"
    assert written.name in stdout
    found = sorted(out.rglob("*.tif"))
    assert found, stdout
    level0 = tifffile.imread(found[0])
    assert level0.shape[:2] == case.shape and level0.dtype == np.float32
    assert np.isfinite(level0).all() and 0 <= level0.min() <= level0.max() <= 1


def test_cli_predict_skips_a_bad_file_and_writes_the_others(
    input_matrix, tiny_checkpoint, model_cache, tmp_path, capsys
):
    """Issue 20: a bad file no longer stops the folder (it used to, with exit 2)."""
    good, bad = input_matrix["gray8"].path, input_matrix["truncated_png"].path
    folder = tmp_path / "in put"
    folder.mkdir()
    shutil.copy(good, folder / "a good.png")
    shutil.copy(bad, folder / "b bad.png")
    shutil.copy(good, folder / "c good.png")
    out = tmp_path / "out"
    rc, _, err = run_cli(
        capsys, "predict", tiny_checkpoint, folder, "--out", out, "--size", 32, "--device", "cpu"
    )
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("pixelcam predict: error: ")
    assert str(folder / "b bad.png") in lines[0]
    assert "1 of 3 inputs failed" in lines[-1]
    assert (out / "a good_pixelcam.tif").is_file() and (out / "c good_pixelcam.tif").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["a good_pixelcam.tif", "c good_pixelcam.tif"]


def test_cli_predict_missing_input_and_checkpoint(tiny_checkpoint, tmp_path, capsys):
    absent = tmp_path / "absent ü.png"
    rc, _, err = run_cli(capsys, "predict", tiny_checkpoint, absent, "--out", tmp_path)
    assert_one_line_error(rc, err, "predict", absent)
    ckpt = tmp_path / "no such model.json"
    rc, _, err = run_cli(capsys, "predict", ckpt, tmp_path, "--out", tmp_path)
    assert_one_line_error(rc, err, "predict", ckpt)


# ---- datasets (and the CLI reading them: evaluate, train) ---------------------------------


def _rgb(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_folder_dataset(root: Path, classes=("benign", "malignant"), n: int = 2) -> Path:
    """images/<class>/<class> <i>.png (32x32) with 0/255 masks, and splits/valpx.txt."""
    lines = []
    for c, name in enumerate(classes):
        (root / "images" / name).mkdir(parents=True)
        (root / "masks" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_rgb(seed=10 * c + i)).save(root / "images" / name / f"{name} {i}.png")
            mask = np.zeros((32, 32), np.uint8)
            mask[8:20, 4 + 4 * i : 20] = 255
            Image.fromarray(mask).save(root / "masks" / name / f"{name} {i}.png")
            lines.append(f"{name}/{name} {i}.png")
    (root / "splits").mkdir()
    (root / "splits" / "valpx.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def evaluate_cli(capsys, checkpoint, root, *extra):
    return run_cli(
        capsys, "evaluate", checkpoint, "--data-root", root, "--size", 32, "--batch-size", 4,
        "--device", "cpu", *(extra or ("--dataset", "folder", "--split", "valpx")),
    )  # fmt: skip


def test_dataset_with_a_corrupt_image(input_matrix, tiny_checkpoint, tmp_path, capsys):
    root = make_folder_dataset(tmp_path / ODD)
    bad = root / "images" / "malignant" / "malignant 1.png"
    shutil.copy(input_matrix["truncated_png"].path, bad)
    ds = load_folder(root, split="valpx")  # cheap: files are read per sample
    ds[0]
    with pytest.raises(InputError) as exc:
        ds[ds.ids.index("malignant/malignant 1")]
    assert str(bad) in str(exc.value)
    rc, _, err = evaluate_cli(capsys, tiny_checkpoint, root)
    assert_one_line_error(rc, err, "evaluate", bad)


def test_mask_whose_size_differs_from_its_image(tiny_checkpoint, tmp_path, capsys):
    root = make_folder_dataset(tmp_path / ODD)
    mask = root / "masks" / "benign" / "benign 1.png"
    Image.fromarray(np.zeros((30, 31), np.uint8)).save(mask)
    ds = load_folder(root, split="valpx")
    with pytest.raises(InputError) as exc:
        ds[1]
    assert str(mask) in str(exc.value) and "30x31" in str(exc.value) and "32x32" in str(exc.value)
    rc, _, err = evaluate_cli(capsys, tiny_checkpoint, root)
    assert_one_line_error(rc, err, "evaluate", mask, "30x31", "32x32")


def test_masks_with_values_other_than_0_and_instance_ids(tiny_checkpoint, tmp_path, capsys):
    """Anti-aliased, 16-bit, negative/NaN float and colour masks: foreground is value > 0."""
    root = make_folder_dataset(tmp_path / "odd masks")
    odd = np.zeros((32, 32), np.uint8)
    odd[4:12, 4:12], odd[20:24, 20:30], odd[0, 0] = 37, 200, 1
    Image.fromarray(odd).save(root / "masks" / "benign" / "benign 0.png")
    as_float = np.full((32, 32), -3.0, np.float32)
    as_float[10:20, 10:20], as_float[0, :4] = 0.25, np.nan
    (root / "masks" / "benign" / "benign 1.png").unlink()
    tifffile.imwrite(root / "masks" / "benign" / "benign 1.tif", as_float)
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[5:9, 5:9, 2] = 90
    Image.fromarray(colour).save(root / "masks" / "malignant" / "malignant 0.png")
    ds = load_folder(root, split="valpx")
    expected = [odd > 0, as_float > 0, colour.max(-1) > 0]
    for i, want in enumerate(expected):
        mask = ds[i].mask
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        np.testing.assert_array_equal(mask, want)
    rc, out, err = evaluate_cli(capsys, tiny_checkpoint, root)
    assert rc == 0, err
    assert "PxAP" in out


def _camelyon_tree(root: Path, write_folds) -> Path:
    """A minimal CAMELYON16 patch tree whose fold-0 valpx split names an absent patch."""
    (root / "normal").mkdir(parents=True)
    (root / "tumor").mkdir()
    Image.fromarray(_rgb()).save(root / "normal" / "n0.png")
    Image.fromarray(_rgb(seed=1)).save(root / "tumor" / "t0.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(root / "tumor" / "mask_file_t0.png")
    rows = [("normal/n0.png", 0, ""), ("tumor/t0.png", 1, "tumor/mask_file_t0.png"),
            ("tumor/absent é.png", 1, "tumor/mask_file_absent é.png")]  # fmt: skip
    return write_folds(root, {"valpx": rows})


def test_fold_file_naming_a_missing_image(tiny_checkpoint, tmp_path, capsys, write_camelyon_folds):
    root = _camelyon_tree(tmp_path / "camelyon 16", write_camelyon_folds)
    with pytest.raises(InputError, match="absent é.png") as exc:
        open_dataset("camelyon16", root, split="valpx", fold=0)
    assert "missing='skip'" in str(exc.value)
    with pytest.warns(UserWarning, match="absent é.png"):
        kept = open_dataset("camelyon16", root, split="valpx", fold=0, missing="skip")
    assert kept.ids and all("absent" not in i for i in kept.ids)
    args = ("--dataset", "camelyon16", "--split", "valpx", "--fold", "0")
    rc, _, err = evaluate_cli(capsys, tiny_checkpoint, root, *args)
    assert_one_line_error(rc, err, "evaluate", "absent é.png")
    rc, out, err = evaluate_cli(capsys, tiny_checkpoint, root, *args, "--missing", "skip")
    assert rc == 0, err


def test_folder_split_naming_a_missing_image(tmp_path):
    root = make_folder_dataset(tmp_path / ODD)
    (root / "images" / "benign" / "benign 1.png").unlink()
    with pytest.raises(InputError, match="benign/benign 1.png") as exc:
        load_folder(root, split="valpx")
    assert str(root / "splits" / "valpx.txt") in str(exc.value)


def test_empty_class_folder(tiny_checkpoint, tmp_path, capsys):
    root = make_folder_dataset(tmp_path / ODD)
    (root / "images" / "nothing here").mkdir()
    (root / "images" / "nothing here" / "readme.txt").write_text("no images")
    with pytest.raises(InputError, match="empty class folder"):
        load_folder(root)
    rc, _, err = evaluate_cli(capsys, tiny_checkpoint, root)
    assert_one_line_error(rc, err, "evaluate", root / "images" / "nothing here")


def test_dataset_with_one_class(tiny_checkpoint, tiny_train, tmp_path, capsys):
    root = make_folder_dataset(tmp_path / ODD, classes=("tumour",), n=3)
    (root / "splits" / "train.txt").write_text((root / "splits" / "valpx.txt").read_text())
    (root / "splits" / "valcl.txt").write_text((root / "splits" / "valpx.txt").read_text())
    assert load_folder(root, split="valpx").num_classes == 1
    # evaluating a 2-class model on it: refused, saying what was expected and found
    rc, _, err = evaluate_cli(capsys, tiny_checkpoint, root)
    assert_one_line_error(rc, err, "evaluate", "num_classes=2", "num_classes=1")
    # training on it: refused before anything is trained (a 1-class classifier learns nothing)
    out = tmp_path / "run"
    rc, _, err = run_cli(
        capsys, "train", "--out", out, *tiny_train, "--dataset", "folder", "--data-root", root,
        "--epochs", 1, "--json",
    )  # fmt: skip
    assert_one_line_error(rc, err, "train", "at least 2 classes", root)
    assert not (out / "last.json").exists()


def test_train_stops_on_a_corrupt_training_image(
    synthetic_root, input_matrix, tiny_train, tmp_path, capsys
):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    train_list = (root / "splits" / "train.txt").read_text().split()
    bad = root / "images" / train_list[0]
    shutil.copy(input_matrix["corrupt_png"].path, bad)
    out = tmp_path / ODD
    rc, _, err = run_cli(
        capsys, "train", "--out", out, *tiny_train, "--data-root", root, "--epochs", 1, "--json"
    )
    assert_one_line_error(rc, err, "train", bad, "--skip-unreadable")
    # issue 20: found before epoch 0, so nothing was trained or saved
    assert not (out / "last.json").exists() and not (out / "resume").exists()
