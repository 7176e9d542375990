#!/usr/bin/env bash
# One install step shared by the README's commands. Idempotent: it creates .venv when
# missing, (re)installs only when pyproject.toml or constraints.txt changed, and installs
# the Xvfb packages (virtual display for napari without a screen) when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${PIXELCAM_VENV:-.venv}"
EXTRAS="${PIXELCAM_EXTRAS:-all}"

if ! command -v xvfb-run >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Xvfb (virtual display) with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth libxcb-icccm4 \
        libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 \
        libxcb-xinerama0 libxcb-cursor0 libgl1 libegl1 libfontconfig1 libdbus-1-3 >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.pixelcam-install"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16) $EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "[setup] installing napari-pixelcam[$EXTRAS] into $VENV (first time: a few minutes)"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch/torchvision pinned together (constraints.txt); a CUDA user may instead install
# their own matching pair first (see README) and set PIXELCAM_CONSTRAINTS=/dev/null.
"$VENV/bin/python" -m pip install -q -c "${PIXELCAM_CONSTRAINTS:-constraints.txt}" -e ".[$EXTRAS]"
echo "$want" > "$stamp"
