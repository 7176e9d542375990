"""Issue 20, finding 2: ``pixelcam predict`` on many inputs processes every one of them (a
bad file is reported in one line and skipped, a summary counts the failures, exit code 1),
output names never collide (the input's folder is kept, and its extension when two inputs
share a stem), and an existing map is never replaced without a note."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixelcam.cli import main


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _png(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _predict(capsys, checkpoint, *inputs, out, extra=()):
    return run_cli(
        capsys, "predict", checkpoint, *inputs, "--out", out, "--size", 32, "--device", "cpu",
        *extra,
    )  # fmt: skip


def test_predict_a_folder_of_26_files_with_9_broken(
    input_matrix, tiny_checkpoint, tmp_path, capsys
):
    """Was: the first unreadable file stopped the command (exit 2), later files got no map."""
    folder = tmp_path / "slides é"
    folder.mkdir()
    broken_cases = [
        "truncated_png", "corrupt_png", "truncated_bmp", "corrupt_bmp", "truncated_jpg",
        "corrupt_jpg", "truncated_tif", "zero_byte", "text_as_png",
    ]  # fmt: skip
    broken = []
    for i, name in enumerate(broken_cases):  # interleaved with the good ones
        src = input_matrix[name].path
        dst = folder / f"img {2 * i + 1:02d}{src.suffix}"
        shutil.copy(src, dst)
        broken.append(dst)
    good = [_png(folder / f"img {2 * i:02d}.png", i) for i in range(9)]
    good += [_png(folder / f"later {i}.png", 100 + i) for i in range(8)]
    assert len(good) == 17 and len(broken) == 9
    out = tmp_path / "maps"
    rc, stdout, err = _predict(capsys, tiny_checkpoint, folder, out=out)
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 10, err  # one line per bad file, then the summary
    for path in broken:
        assert sum(str(path) in line for line in lines[:-1]) == 1, (path, err)
    assert all(line.startswith("pixelcam predict: error: ") for line in lines[:-1])
    assert "9 of 26 inputs failed" in lines[-1] and "17" in lines[-1]
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{p.stem}_pixelcam.tif" for p in good)
    for p in good:
        assert str(p) in stdout
        assert tifffile.imread(out / f"{p.stem}_pixelcam.tif").shape == (24, 24)


def test_every_input_failing_exits_2(input_matrix, tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("truncated_png", "zero_byte"):
        shutil.copy(input_matrix[name].path, folder / input_matrix[name].path.name)
    rc, _, err = _predict(capsys, tiny_checkpoint, folder, out=tmp_path / "maps")
    assert rc == 2 and "2 of 2 inputs failed" in err
    assert not list((tmp_path / "maps").iterdir())


def test_a_missing_path_or_an_empty_folder_among_inputs_is_skipped_like_a_bad_file(
    tiny_checkpoint, tmp_path, capsys
):
    """Was: an empty folder or a missing path anywhere among the inputs stopped the whole
    command before any image (exit 2). Now each is named on stderr, the images are still
    predicted (exit 1); and when no input gives an image, no output folder is made."""
    good = _png(tmp_path / "in" / "good.png", 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "no such.png"
    out = tmp_path / "maps"
    rc, stdout, err = _predict(capsys, tiny_checkpoint, empty, good, missing, out=out)
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert lines[0] == f"pixelcam predict: error: no images in folder {empty}"
    assert lines[1] == f"pixelcam predict: error: no such file or folder: {missing}"
    assert "2 of 3 inputs failed" in lines[-1]
    assert [p.name for p in out.iterdir()] == ["good_pixelcam.tif"] and "good" in stdout
    out2 = tmp_path / "maps2"
    rc, _, err = _predict(capsys, tiny_checkpoint, empty, missing, out=out2)
    assert rc == 2 and "2 of 2 inputs failed" in err and not out2.exists()


def test_inputs_sharing_a_stem_or_a_name_never_overwrite_each_other(
    tiny_checkpoint, tmp_path, capsys
):
    """Was: ``a.png`` and ``a.tif``, ``x/a.png`` and ``y/a.png`` all wrote a_pixelcam.tif."""
    src = tmp_path / "in"
    a_png = _png(src / "a.png", 1)
    a_tif = src / "a.tif"
    tifffile.imwrite(a_tif, np.full((20, 30, 3), 200, np.uint8), photometric="rgb")
    xa, ya = _png(src / "x" / "a.png", 2), _png(src / "y" / "a.png", 3)
    b = _png(src / "y" / "b.png", 4)
    out = tmp_path / "maps"
    rc, _, err = _predict(capsys, tiny_checkpoint, src, out=out)
    assert rc == 0, err
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*.tif"))
    assert made == [
        "a.png_pixelcam.tif", "a.tif_pixelcam.tif", "x/a_pixelcam.tif", "y/a_pixelcam.tif",
        "y/b_pixelcam.tif",
    ]  # fmt: skip
    assert tifffile.imread(out / "a.tif_pixelcam.tif").shape == (20, 30)
    assert tifffile.imread(out / "a.png_pixelcam.tif").shape == (24, 24)
    # the same names given as files from two folders: under their folders' names
    out2 = tmp_path / "maps2"
    rc, _, err = _predict(capsys, tiny_checkpoint, xa, ya, b, a_png, out=out2)
    assert rc == 0, err
    made = sorted(str(p.relative_to(out2)) for p in out2.rglob("*.tif"))
    assert made == [
        "b_pixelcam.tif", "in/a.png_pixelcam.tif", "x/a.png_pixelcam.tif", "y/a.png_pixelcam.tif",
    ]  # fmt: skip


def test_an_existing_map_is_replaced_only_with_a_note(tiny_checkpoint, tmp_path, capsys):
    image = _png(tmp_path / "in" / "a.png", 1)
    out = tmp_path / "maps"
    out.mkdir()
    (out / "a_pixelcam.tif").write_bytes(b"an old map")
    rc, _, err = _predict(capsys, tiny_checkpoint, image, out=out)
    assert rc == 0
    assert "replaced existing a_pixelcam.tif" in err
    assert tifffile.imread(out / "a_pixelcam.tif").shape == (24, 24)


def test_maps_are_written_atomically(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """A write that fails half-way leaves no partial map (was: 0-byte files)."""
    import errno

    image = _png(tmp_path / "in" / "a.png", 1)
    out = tmp_path / "maps"

    def full_disk(path, *args, **kwargs):
        Path(path).write_bytes(b"II*\x00")  # a few bytes, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    rc, _, err = _predict(capsys, tiny_checkpoint, image, out=out)
    assert rc == 1
    assert err.strip().splitlines() == [
        f"pixelcam predict: error: cannot write {out / 'a_pixelcam.tif'}: No space left on device"
    ]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("where", ["inside", "beside"])
def test_maps_written_inside_the_input_folder_are_not_read_back(
    tiny_checkpoint, tmp_path, capsys, where
):
    src = tmp_path / "in"
    _png(src / "a.png", 1)
    out = src / "maps" if where == "inside" else tmp_path / "maps"
    for _ in range(2):  # the second run must not predict the first run's maps
        rc, stdout, err = _predict(capsys, tiny_checkpoint, src, out=out)
        assert rc == 0, err
    assert sorted(p.name for p in out.rglob("*.tif")) == ["a_pixelcam.tif"]


def test_without_methods_a_baseline_checkpoint_writes_every_map_it_has(tmp_path, capsys):
    """The default map is PixelCAM's where the model has a pixel head; a baseline (no pixel
    head) gets all its CAMs instead of an error, and asking it for pixelcam names them."""
    from pixelcam.models import build_model, save_checkpoint

    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head=None)
    stem = tmp_path / "base"
    save_checkpoint(model, stem, {"class_names": ["benign", "malignant"], "eval_size": 32})
    image = _png(tmp_path / "in" / "a.png", 0)
    rc, _, _ = _predict(capsys, stem, image, out=tmp_path / "out")
    assert rc == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*.tif"))
    assert "a_layercam.tif" in written and "a_pixelcam.tif" not in written
    rc, _, err = _predict(capsys, stem, image, out=tmp_path / "o2", extra=("--methods", "pixelcam"))
    assert rc == 2 and "layercam" in err and "pixelcam" in err


def test_without_methods_a_pixelcam_checkpoint_writes_its_pixelcam_map(
    tiny_checkpoint, tmp_path, capsys
):
    image = _png(tmp_path / "in" / "a.png", 0)
    rc, _, _ = _predict(capsys, tiny_checkpoint, image, out=tmp_path / "out")
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == ["a_pixelcam.tif"]
