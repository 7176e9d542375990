"""Atomic file writes (a temp file in the same folder, then ``os.replace``: a process killed
at any moment leaves either the old file or the new one, never a half-written file), the
clean-up of the temporary files a killed process leaves, and the liveness check behind
run lock files.

A write that the file system refuses (disk full, read-only, permission denied, a path
through a file...) raises :class:`OutputError`, an ``OSError`` and a
:class:`~pixelcam.errors.PixelCAMError` whose one-line message names the file: the CLI
prints it and exits with code 1, without a traceback and without a partial file.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from pixelcam.errors import InputError, PixelCAMError

#: The temporary files of :func:`atomic_write`: ``.<name>.<random>.tmp`` beside the target.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


class OutputError(PixelCAMError, OSError):
    """A file could not be written (``errno`` as the OS said, ``path`` the file)."""

    def __init__(self, message: str, errno: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno  # type: ignore[assignment]
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (type(self), (str(self), self.errno, self.path))


_RUST_OS_ERROR = re.compile(r"os error (\d+)")


def output_error(exc: BaseException, path: str | os.PathLike[str]) -> OutputError | None:
    """``exc`` as an :class:`OutputError` about writing ``path`` when it is a file-system
    error (an ``OSError``, or a library's wrapped one such as safetensors' "I/O error ...
    (os error 28)"); None for anything else."""
    if isinstance(exc, OutputError):
        return exc
    code: int | None = None
    if isinstance(exc, OSError):
        code = exc.errno
        reason = exc.strerror or str(exc)
    else:
        found = _RUST_OS_ERROR.search(str(exc))
        if found is None:
            return None
        code = int(found.group(1))
        reason = os.strerror(code)
    if code is not None and not reason:
        reason = os.strerror(code)
    return OutputError(f"cannot write {path}: {reason}", code, str(path))


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path``.

    Raises :class:`OutputError` when the file system refuses (no temporary file is left).
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600: colleagues could not read it
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        error = output_error(exc, path) if isinstance(exc, Exception) else None
        if error is None or error is exc:
            raise
        raise error from exc
    return path


def _file_mode(path: Path) -> int:
    """The mode the file would have if written plainly: the existing file's, else 0666
    less the process umask."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o777
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask: from /proc on Linux (no change to the process), else read back
    by setting it twice (there is no getter)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) that :func:`atomic_write` left
    in ``folder`` when its process was killed; returns them. Call it only while no other
    process writes there (a run holds its folder's lock)."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        name = p.name
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and name.count(".") >= 3:
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    removed.append(p)
    return removed


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (the owner of a ``.lock`` file)."""
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_text_bounded(path: str | os.PathLike[str], what: str, limit: int) -> str:
    """The UTF-8 text of a small user file (annotations, GeoJSON), refused with one
    :class:`~pixelcam.errors.InputError` line when missing, larger than ``limit`` bytes
    (never read whole), not UTF-8 or unreadable. ``what`` names the file in messages."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} does not exist: {path}")
    size = path.stat().st_size
    if size > limit:
        raise InputError(f"{what} {path} is {size} bytes, more than the limit {limit}")
    try:
        with open(path, "rb") as fh:
            return fh.read(limit + 1).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise InputError(f"cannot read the {what} {path}: {exc}") from exc
