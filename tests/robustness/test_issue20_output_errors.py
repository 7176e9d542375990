"""Issue 20, finding 3: a file the CLI cannot write (disk full, read-only folder, ``--out``
that is a file or under ``/proc``) is ONE line on stderr and exit code 1 in every command,
never a traceback or a partial file; ``evaluate`` prints its results before writing them.
Where no small file system can be mounted, the OS error is injected with monkeypatch
(root ignores permissions, so a read-only folder is simulated the same way)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from pixelcam.cli import main

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EROFS = OSError(errno.EROFS, os.strerror(errno.EROFS))
#: safetensors reports a full disk as its own exception (its Rust I/O error text)
SAFETENSORS_FULL = (
    "Error while serializing: I/O error: No space left on device (os error 28) at path x"
)


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_output_error(rc: int, err: str, command: str, *words: object) -> str:
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pixelcam {command}: error: "), lines[0]
    assert "Traceback" not in err
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


def _image(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    Image.fromarray(np.full((24, 24, 3), 120, np.uint8)).save(path)
    return path


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---- predict ----------------------------------------------------------------------------


def _predict(capsys, ckpt, image, out):
    return run_cli(capsys, "predict", ckpt, image, "--out", out, "--size", 32, "--device", "cpu")


def test_predict_out_is_a_file(tiny_checkpoint, tmp_path, capsys):
    image = _image(tmp_path)
    blocker = tmp_path / "a file"
    blocker.write_text("keep me")
    rc, _, err = _predict(capsys, tiny_checkpoint, image, blocker)
    assert_output_error(rc, err, "predict", blocker)
    rc, _, err = _predict(capsys, tiny_checkpoint, image, blocker / "maps")  # under a file
    assert_output_error(rc, err, "predict", blocker / "maps")
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_predict_out_under_proc(tiny_checkpoint, tmp_path, capsys):
    rc, _, err = _predict(capsys, tiny_checkpoint, _image(tmp_path), "/proc/pixelcam maps")
    assert_output_error(rc, err, "predict", "/proc/pixelcam maps")


@pytest.mark.parametrize("error", [ENOSPC, EROFS], ids=["full", "read-only"])
def test_predict_disk_full_or_read_only(tiny_checkpoint, tmp_path, capsys, monkeypatch, error):
    import pixelcam.fileio

    image = _image(tmp_path)
    out = tmp_path / "maps"
    out.mkdir()
    monkeypatch.setattr(pixelcam.fileio.tempfile, "mkstemp", _raise(error))
    rc, _, err = _predict(capsys, tiny_checkpoint, image, out)
    assert_output_error(rc, err, "predict", out / "a_pixelcam.tif", error.strerror)
    assert list(out.iterdir()) == []


# ---- evaluate ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_args(synthetic_root, tiny_checkpoint) -> list[object]:
    return [
        "evaluate", tiny_checkpoint, "--dataset", "synthetic", "--data-root", synthetic_root,
        "--split", "valpx", "--size", 32, "--device", "cpu",
    ]  # fmt: skip


def test_evaluate_bad_out_fails_before_evaluating(eval_args, tmp_path, capsys, monkeypatch):
    import pixelcam.evaluation

    monkeypatch.setattr(pixelcam.evaluation, "evaluate_model", _raise(AssertionError("ran")))
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    for out in (blocker / "eval.json", tmp_path, "/proc/pixelcam/eval.json"):
        rc, stdout, err = run_cli(capsys, *eval_args, "--out", out)
        assert_output_error(rc, err, "evaluate", out)
        assert stdout == ""


def test_evaluate_disk_full_keeps_the_printed_results(eval_args, tmp_path, capsys, monkeypatch):
    """Was: a traceback, a 0-byte eval.json, and the computed results lost."""
    import pixelcam.fileio

    out = tmp_path / "eval.json"
    real = pixelcam.fileio.atomic_write

    def full(path, write):
        if Path(path) == out:

            def partial(tmp):
                Path(tmp).write_bytes(b"{")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            return real(path, partial)
        return real(path, write)

    monkeypatch.setattr(pixelcam.fileio, "atomic_write", full)
    rc, stdout, err = run_cli(capsys, *eval_args, "--out", out)
    line = assert_output_error(rc, err, "evaluate", out, "No space left on device")
    assert "printed above" in line
    assert "PxAP" in stdout and "accuracy" in stdout  # the results were printed first
    assert not out.exists()
    _no_temporaries(tmp_path)


# ---- synth ------------------------------------------------------------------------------


def test_synth_out_is_a_file_or_unwritable(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    rc, _, err = run_cli(capsys, "synth", blocker / "data", "--n-per-class", 1, "--size", 16)
    assert_output_error(rc, err, "synth", blocker / "data")
    if Path("/proc/self").is_dir():
        rc, _, err = run_cli(capsys, "synth", "/proc/pixelcam data", "--n-per-class", 1)
        assert_output_error(rc, err, "synth", "/proc/pixelcam data")
    import skimage.io

    monkeypatch.setattr(skimage.io, "imsave", _raise(OSError(errno.ENOSPC, "No space left")))
    rc, _, err = run_cli(capsys, "synth", tmp_path / "full", "--n-per-class", 1, "--size", 16)
    assert_output_error(rc, err, "synth", "No space left")


# ---- train ------------------------------------------------------------------------------


def test_train_disk_full_while_saving_is_one_line(
    tmp_path, capsys, monkeypatch, synthetic_root, tiny_train
):
    """Was: a safetensors traceback ("No space left on device") mid-run."""
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def fills_up(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) > 3:  # the epoch-0 checkpoints fit, then the disk is full
            Path(filename).write_bytes(b"\0" * 10)
            raise safetensors.SafetensorError(SAFETENSORS_FULL)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_up)
    out = tmp_path / "run"
    args = ["train", "--out", out, *tiny_train, "--data-root", synthetic_root, "--epochs", 2]
    rc, _, err = run_cli(capsys, *args, "--json")
    assert_output_error(rc, err, "train", "cannot write", "No space left on device", out)
    _no_temporaries(out)
    from pixelcam.models import load_checkpoint

    assert load_checkpoint(out / "last")[1]["epoch"] in (0, 1)  # the last complete one
    assert not (out / ".lock").exists()


def test_train_permission_error_on_the_lock_at_cleanup(
    tmp_path, capsys, monkeypatch, synthetic_root, tiny_train
):
    """The folder turned read-only during the run: removing ``.lock`` fails at the end."""
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self.name == ".lock":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    out = tmp_path / "run"
    args = ["train", "--out", out, *tiny_train, "--data-root", synthetic_root, "--epochs", 1]
    rc, _, err = run_cli(capsys, *args, "--json")
    assert rc in (0, 1), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    assert (out / "last.json").exists()


def test_no_traceback_from_an_os_error_anywhere(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """Any OSError that escapes a command (here from reading the checkpoint's folder) is
    one line and exit code 1."""
    import pixelcam.models

    monkeypatch.setattr(pixelcam.models, "load_checkpoint", _raise(EROFS))
    rc, _, err = _predict(capsys, tiny_checkpoint, _image(tmp_path), tmp_path / "maps")
    assert_output_error(rc, err, "predict", "Read-only file system")


def test_cli_in_a_child_process_prints_no_traceback(tmp_path):
    """The installed entry point, as a user runs it: a bad --out of synth."""
    import subprocess

    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "pixelcam.cli", "synth", str(blocker / "d"), "--n-per-class", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path):
    """mkstemp makes 0600 files: a map or checkpoint written atomically must still be
    readable by colleagues as a plain write would be (umask), and a rewrite keeps the
    existing file's mode."""
    from pixelcam.fileio import atomic_write_text

    old = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "a.json", "{}")
        assert fresh.stat().st_mode & 0o777 == 0o644
        fresh.chmod(0o640)
        assert atomic_write_text(fresh, "[]").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
