"""Editing FG/BG points: the label of new points, colours that follow labels, undo.

A points layer of the panel (sampled seeds, or annotations read from a ``.points.csv``)
holds each point's class in ``features["label"]`` (1 = foreground, 0 = background).
:class:`PointEditor` keeps what the user sees in step with it:

- **new points** get :attr:`PointEditor.label` (the panel's FG/BG toggle; the keys ``f``
  and ``b`` on the layer set it, ``l`` flips it); with points selected, the same keys
  relabel the selection;
- **colours follow labels**: every point is drawn in the colour of its label
  (:data:`~napari_pixelcam._common.POINT_COLORS`), whatever changed it: the toggle, an
  added point, napari's features table (which edits the table in place and emits no event,
  so a 250 ms timer compares the labels with the last seen ones);
- **undo** (:meth:`PointEditor.undo`, ``Ctrl+Z`` on the layer): the state before the last
  edit (a point added, removed or moved, a label changed) comes back; up to
  :data:`MAX_UNDO` steps.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import numpy as np

from napari_pixelcam import _common as common

MAX_UNDO = 50
POLL_MS = 250
FG, BG = 1, 0
BEFORE = ("adding", "removing", "changing")
AFTER = ("added", "removed", "changed")


def is_label_layer(layer: Any) -> bool:
    """A Points layer with a ``label`` feature (seeds or annotations)."""
    from napari.layers import Points

    return isinstance(layer, Points) and "label" in getattr(layer.features, "columns", ())


def _labels(layer: Any) -> np.ndarray:
    return np.asarray(layer.features["label"], dtype=np.int64).copy()


def point_colors(labels: np.ndarray) -> np.ndarray:
    """RGBA colours of labels (1 FG, anything else BG)."""
    from napari.utils.colormaps.standardize_color import transform_color

    fg, bg = transform_color(common.FG_COLOR)[0], transform_color(common.BG_COLOR)[0]
    return np.where((np.asarray(labels) == FG)[:, None], fg, bg).astype(np.float32)


class _Tracked:
    """The undo history of one layer."""

    def __init__(self, layer: Any) -> None:
        self.ref = weakref.ref(layer)
        self.undo: list[tuple[np.ndarray, Any]] = []
        self.known = self.snapshot()

    def snapshot(self) -> tuple[np.ndarray, Any]:
        layer = self.ref()
        return np.array(layer.data, copy=True), layer.features.copy()

    def push(self, state: tuple[np.ndarray, Any]) -> None:
        self.undo.append(state)
        del self.undo[:-MAX_UNDO]


class PointEditor:
    """FG/BG editing of the viewer's label points layers (module docstring)."""

    def __init__(self, on_label: Any = None) -> None:
        from qtpy.QtCore import QTimer

        self.label = FG
        self._on_label = on_label  # called with the new label (the panel's toggle)
        self._tracked: dict[int, _Tracked] = {}
        self._restoring = False
        self._timer = QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)

    # ------------------------------------------------------------------ layers
    def track(self, layer: Any) -> None:
        """Manage ``layer``: its colours, its new points' label, its undo history."""
        layer = common.unwrap(layer)
        if id(layer) in self._tracked and self._tracked[id(layer)].ref() is layer:
            return
        self._tracked[id(layer)] = _Tracked(layer)
        ref = weakref.ref(layer)
        layer.events.data.connect(lambda event: self._on_data(ref(), event))
        layer.events.features.connect(lambda _=None: self._check(ref()))
        layer.bind_key("f", lambda ly: self.set_label(FG, ly), overwrite=True)
        layer.bind_key("b", lambda ly: self.set_label(BG, ly), overwrite=True)
        layer.bind_key("l", lambda ly: self.set_label(1 - self.label, ly), overwrite=True)
        layer.bind_key("Control-z", lambda ly: self.undo(ly), overwrite=True)
        self._apply_defaults(layer)
        self.recolor(layer)
        if not self._timer.isActive():
            self._timer.start()

    def layers(self) -> list[Any]:
        alive = {k: t for k, t in self._tracked.items() if t.ref() is not None}
        self._tracked = alive
        return [t.ref() for t in alive.values()]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # Qt deleted the timer already
            self._timer.stop()

    # ------------------------------------------------------------------ labels
    def set_label(self, label: int, layer: Any = None) -> None:
        """New points get ``label``; the selected points of ``layer`` are relabelled."""
        layer = common.unwrap(layer)
        self.label = int(label)
        for ly in self.layers():
            self._apply_defaults(ly)
        if layer is not None and layer.selected_data:
            tracked = self._tracked.get(id(layer))
            if tracked is not None:
                tracked.push(tracked.snapshot())
            labels = _labels(layer)
            labels[list(layer.selected_data)] = self.label
            self._restoring = True
            try:
                layer.features["label"] = labels
            finally:
                self._restoring = False
            if tracked is not None:
                tracked.known = tracked.snapshot()
            self.recolor(layer)
        if self._on_label is not None:
            self._on_label(self.label)

    def _apply_defaults(self, layer: Any) -> None:
        """New points of ``layer`` get :attr:`label` (and its colour). napari copies the
        selected point's features into the next point's, so this runs again just before
        each point is added."""
        defaults = {c: layer.feature_defaults[c].iloc[0] for c in layer.feature_defaults.columns}
        if defaults.get("label") == self.label:
            return
        defaults.update(label=self.label)
        if "source" in defaults:
            defaults["source"] = "user"
        layer.feature_defaults = defaults
        layer.current_face_color = common.POINT_COLORS[self.label]
        self.recolor(layer)  # the current colour also went to the selected points

    def recolor(self, layer: Any) -> None:
        """Every point in the colour of its label."""
        if layer is None or not len(layer.data):
            return
        colors = point_colors(_labels(layer))
        current = np.asarray(layer.face_color)
        if current.shape != colors.shape or not np.allclose(current, colors):
            layer.face_color = colors

    # ------------------------------------------------------------------ changes
    def _on_data(self, layer: Any, event: Any) -> None:
        tracked = self._tracked.get(id(layer)) if layer is not None else None
        if tracked is None or self._restoring:
            return
        action = str(getattr(event, "action", ""))
        if action in BEFORE:
            tracked.push(tracked.snapshot())
            if action == "adding":
                self._apply_defaults(layer)
        elif action in AFTER:
            tracked.known = tracked.snapshot()
            self.recolor(layer)

    def _check(self, layer: Any) -> None:
        """A label may have changed without a data event (the features table, a script)."""
        tracked = self._tracked.get(id(layer)) if layer is not None else None
        if tracked is None or self._restoring:
            return
        old = np.asarray(tracked.known[1]["label"], dtype=np.int64)
        if len(old) == len(layer.data) and np.array_equal(old, _labels(layer)):
            self.recolor(layer)  # cheap when the colours already match
            return
        if len(old) == len(layer.data):
            tracked.push(tracked.known)
            tracked.known = tracked.snapshot()
        self.recolor(layer)

    def poll(self) -> None:
        for layer in self.layers():
            try:
                self._check(layer)
            except (KeyError, RuntimeError):  # the label column was dropped; a closed layer
                continue

    def undo(self, layer: Any) -> bool:
        """Back to the state before the last edit of ``layer``; False when none is left."""
        layer = common.unwrap(layer)
        tracked = self._tracked.get(id(layer)) if layer is not None else None
        if tracked is None or not tracked.undo:
            return False
        data, features = tracked.undo.pop()
        self._restoring = True
        try:
            layer.selected_data = set()
            layer.data = data
            layer.features = features.reset_index(drop=True)
        finally:
            self._restoring = False
        tracked.known = tracked.snapshot()
        self.recolor(layer)
        return True

    def can_undo(self, layer: Any) -> bool:
        layer = common.unwrap(layer)
        tracked = self._tracked.get(id(layer)) if layer is not None else None
        return bool(tracked and tracked.undo)
