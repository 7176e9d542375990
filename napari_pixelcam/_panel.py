"""The PixelCAM dock panel: choose an image layer and a model, compute maps as layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, Label, PushButton

if TYPE_CHECKING:
    import napari


class PixelCAMPanel(Container):
    """Dock panel over :mod:`pixelcam`: heavy imports happen on first use, not on docking."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self.image_combo = ComboBox(label="image", choices=self._image_layers)
        self.run_button = PushButton(text="Compute maps")
        self.status = Label(value="")
        self.extend([self.image_combo, self.run_button, self.status])
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    def _image_layers(self, _widget=None) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh(self, _event=None) -> None:
        self.image_combo.reset_choices()
