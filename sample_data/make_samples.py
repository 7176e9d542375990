"""Write the sample tiles of ``sample_data/`` (deterministic; run from anywhere).

    python sample_data/make_samples.py

Writes ``benign_1.png``, ``benign_2.png``, ``malignant_1.png``, ``malignant_2.png``
(384x384 RGB, stain "he") and their gland masks ``*_mask.png`` (0 = background,
255 = gland) next to this script, with :func:`pixelcam.data.synthetic.generate_tile`.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository's pixelcam, installed or not

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pixelcam.data.synthetic import generate_tile  # noqa: E402

SIZE = 384
#: (file stem, label, seed). The ``_1`` tiles use the seeds of the napari plugin's sample
#: data (``napari_pixelcam/_sample_data.py``: benign 11, malignant 12), so both show the
#: same tiles; the ``_2`` seeds were picked for a typical look of each class.
SAMPLES = (
    ("benign_1", 0, 11),
    ("benign_2", 0, 1),
    ("malignant_1", 1, 12),
    ("malignant_2", 1, 0),
)


def main() -> None:
    for stem, label, seed in SAMPLES:
        image, mask = generate_tile(label, SIZE, seed=seed, stain="he")
        Image.fromarray(image).save(HERE / f"{stem}.png", optimize=True)
        Image.fromarray(mask * np.uint8(255)).save(HERE / f"{stem}_mask.png", optimize=True)
        print(f"wrote {stem}.png and {stem}_mask.png (gland cover {mask.mean():.0%})")


if __name__ == "__main__":
    main()
