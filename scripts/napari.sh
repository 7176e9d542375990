#!/usr/bin/env bash
# README command 1: install if needed, then open napari with the PixelCAM panel docked on a
# sample histology tile. Arguments go to `python -m napari_pixelcam` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m napari_pixelcam "$@"
