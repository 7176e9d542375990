#!/usr/bin/env bash
# README command 2: install if needed, lint (ruff, import contracts), then run the test suite
# on a virtual display.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# import contracts (pyproject.toml [tool.importlinter]): layers point down, no GUI in the
# library, no import cycles
.venv/bin/lint-imports --no-cache
export QT_API="${QT_API:-pyqt6}"
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
    exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest "$@"
