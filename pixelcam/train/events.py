"""Progress as JSON lines (one event a line), for the trainer dock, tests and humans.

Every event is a dict with ``event`` (``start``, ``epoch``, ``step``, ``checkpoint``,
``done``, ``error``, ``log``) and ``time`` (seconds since the run started); the file
``events.jsonl`` in the run folder gets every event, appended and flushed line by line.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

EventCallback = Callable[[dict[str, Any]], None]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class EventLog:
    """Writes events to ``events.jsonl``, to an optional stream and to callbacks."""

    def __init__(
        self,
        path: Path | None,
        stream: TextIO | None = None,
        callbacks: list[EventCallback] | None = None,
    ) -> None:
        self.path = path
        self.stream = stream
        self.callbacks = list(callbacks or [])
        self.t0 = time.perf_counter()
        self._file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.perf_counter() - self.t0, 3), **fields}
        line = json.dumps(_clean(record), allow_nan=False)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
        for cb in self.callbacks:
            cb(record)
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events of an ``events.jsonl`` (a half-written last line is skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def human_progress(stream: TextIO = sys.stderr) -> EventCallback:
    """A callback printing a short progress line per event, for people at a terminal."""

    def show(ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "step":
            stream.write(
                f"\r  epoch {ev['epoch']} step {ev['step']}/{ev['steps']} loss {ev['loss']:.4f}"
            )
        elif kind == "epoch":
            m = ev.get("metrics", {})
            parts = [
                f"{k} {v:.3g}" for k, v in m.items() if k != "epoch" and isinstance(v, (int, float))
            ]
            stream.write(f"\repoch {ev['epoch']}/{ev['epochs']}: " + ", ".join(parts) + "\n")
        elif kind in ("start", "done", "error", "log"):
            msg = ev.get("message") or kind
            stream.write(f"[{kind}] {msg}\n")
        stream.flush()

    return show
