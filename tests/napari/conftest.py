"""Fixtures of the napari plugin's tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

PLUGIN = "napari-pixelcam"


def pytest_configure(config) -> None:
    """napari's settings in memory: the docks set the reader preference, and a test must
    never write the user's napari settings file."""
    from napari import settings

    if getattr(settings, "_SETTINGS", None) is None:
        settings.get_settings(path=None)


@pytest.fixture
def plugin_errors(monkeypatch) -> list[str]:
    """The texts of the plugin's error notifications (other kinds still reach napari)."""
    import napari_pixelcam._common as common

    errors: list[str] = []
    real = common.notify

    def notify(kind: str, message: str) -> None:
        if kind == "error":
            errors.append(message)
        else:
            real(kind, message)

    monkeypatch.setattr(common, "notify", notify)
    return errors


@pytest.fixture
def dock_panel(qtbot) -> Callable[[Any], Any]:
    """Dock the PixelCAM panel through the manifest and wait until the session has read
    the library's registries (the panel's lists are then filled)."""

    def dock(viewer: Any) -> Any:
        _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "PixelCAM")
        qtbot.waitUntil(lambda: panel.session.ready, timeout=60000)
        return panel

    return dock


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test():
    """Wait, after each test (its viewer closed), for the napari workers it started (the
    docks' warm-up, maps): a worker still running when the process ends makes Qt abort
    after every test passed."""
    yield
    from napari.qt.threading import WorkerBase

    WorkerBase.await_workers(120_000)
