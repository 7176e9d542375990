"""Errors the library raises on purpose, each with a message a user can act on.

Every error caused by a user's input (a file, a folder, an argument) is an
:class:`InputError` whose message names the offending file or value. The CLI turns it
into exit code 2 and a one-line message; the napari plugin turns it into a notification.
"""

from __future__ import annotations


class PixelCAMError(Exception):
    """Base class of the errors raised on purpose by :mod:`pixelcam`."""


class InputError(PixelCAMError, ValueError):
    """Bad user input: an unreadable or inconsistent file, folder or argument."""


class CheckpointError(InputError):
    """A checkpoint that cannot be loaded, or was made for another model."""


class TrainingError(PixelCAMError):
    """The run stopped (non-finite loss, cancelled, ...); the last good checkpoint is kept."""
