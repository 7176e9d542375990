"""Model selection, written once: B-CL and B-LOC (Choe et al. 2020's protocol, as the
paper uses it). The training loop, ``benchmarks/wsol_table.py`` and
``benchmarks/reproduce.py`` all choose their checkpoints with this module.

- **B-CL**: the epoch with the best valcl accuracy (ties: the later epoch). A model without
  a trained classifier (accuracy ``None``) keeps the latest epoch.
- **B-LOC**: the epoch with the best valpx PxAP of a map (ties: the later epoch), among the
  epochs >= 1 whose valcl accuracy is within ``margin`` points of the best accuracy of the
  WHOLE run (the accuracy guard: on a 6-image valpx an untrained epoch can otherwise win).
  A 0-epoch run selects epoch 0.

The guard compares with the best accuracy of the whole run, so an epoch chosen early can
lose its place when a later epoch raises the best accuracy. :class:`BestLocTracker` makes
that choice during the run without keeping every epoch: it keeps a copy of an epoch's
model only while the epoch is on the (accuracy, PxAP) Pareto front of some map, since an
epoch with both values no higher than a later epoch's, or with an accuracy no higher and a
PxAP lower than an earlier epoch's, can never win. At every moment its choice equals
:func:`best_loc_epoch` over the history so far.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: the default accuracy guard, in accuracy points
DEFAULT_MARGIN = 10.0
#: (accuracy, PxAP, epoch)
Candidate = tuple[float, float, int]


def _acc(row: Mapping[str, Any]) -> float:
    acc = row.get("valcl_acc")
    return -math.inf if acc is None else float(acc)


def best_cl_epoch(history: Sequence[Mapping[str, Any]]) -> int:
    """B-CL: the epoch of the best valcl accuracy (the later on ties)."""
    return max(history, key=lambda h: (_acc(h), h["epoch"]))["epoch"]


def best_loc_epoch(
    history: Sequence[Mapping[str, Any]],
    key: str = "valpx_pxap",
    margin: float = DEFAULT_MARGIN,
    guard: bool = True,
) -> int | None:
    """B-LOC: the epoch whose ``key`` (a valpx PxAP) is best among epochs >= 1 within
    ``margin`` accuracy points of the run's best (no guard when ``guard`` is False).

    Returns:
        The epoch, or None when no epoch has a value for ``key``.
    """
    trained = [h for h in history if h["epoch"] >= 1]
    if not trained:  # a 0-epoch run
        trained = list(history)
    floor = max(_acc(h) for h in trained) - margin if guard else -math.inf
    rows = [h for h in trained if h.get(key) is not None and _acc(h) >= floor]
    if not rows:
        return None
    return max(rows, key=lambda h: (float(h[key]), h["epoch"]))["epoch"]


class BestLocTracker:
    """Keeps the B-LOC checkpoint of one or more maps up to date during a run.

    Args:
        out: the run folder; the model of each epoch is read from ``out/last.*``.
        targets: map method -> checkpoint name written in ``out`` (e.g.
            ``{"pixelcam": "best_loc"}`` or ``{"layercam": "bloc_layercam"}``).
        margin: the accuracy guard in points; ``guard=False`` turns it off.
        store: the folder (in ``out``) of the candidate copies.

    A map's PxAP is read from the epoch metrics as ``valpx_pxap_<method>``.
    """

    def __init__(
        self,
        out: Path,
        targets: Mapping[str, str],
        margin: float = DEFAULT_MARGIN,
        guard: bool = True,
        store: str = "bloc-candidates",
    ) -> None:
        self.out, self.targets = Path(out), dict(targets)
        self.margin = margin if guard else math.inf
        self.store = self.out / store
        self.front: dict[str, list[Candidate]] = {m: [] for m in self.targets}
        self.chosen: dict[str, int | None] = {m: None for m in self.targets}
        self.max_acc = -math.inf

    def replay(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Rebuild the front and the choices from a resumed run's history (no file work:
        the candidates of the front were kept on disk)."""
        for row in history:
            if row["epoch"] >= 1:
                self._advance(row)

    def update(self, metrics: Mapping[str, Any]) -> list[str]:
        """Take the epoch whose model is in ``out/last.*``; returns the checkpoint names
        that now point at it (or at another newly chosen epoch)."""
        epoch = int(metrics["epoch"])
        if epoch == 0:  # a fallback file until epoch 1 is in
            for name in self.targets.values():
                _copy(self.out / "last", self.out / name)
            return []
        self.store.mkdir(exist_ok=True)
        _copy(self.out / "last", self.store / f"e{epoch:05d}")
        before = dict(self.chosen)
        self._advance(metrics)
        written = []
        for method, name in self.targets.items():
            best = self.chosen[method]
            if best is not None and best != before[method]:
                _copy(self.store / f"e{best:05d}", self.out / name)
                written.append(name)
        self._prune()
        return written

    def __call__(self, event: Mapping[str, Any]) -> None:
        """An event callback for :func:`pixelcam.train.train` (the ``epoch`` events)."""
        if event.get("event") == "epoch" and self.targets:
            self.update(event["metrics"])

    def _advance(self, metrics: Mapping[str, Any]) -> None:
        acc = _acc(metrics)
        self.max_acc = max(self.max_acc, acc)
        floor = self.max_acc - self.margin
        for method in self.targets:
            loc = metrics.get(f"valpx_pxap_{method}")
            front = self.front[method]
            if loc is not None and not any(x[0] >= acc and x[1] > float(loc) for x in front):
                loc = float(loc)  # not beaten by an earlier epoch: older ones it beats go
                front = [x for x in front if not (acc >= x[0] and loc >= x[1])]
                front.append((acc, loc, int(metrics["epoch"])))
            self.front[method] = front = [x for x in front if x[0] >= floor]
            if front:
                self.chosen[method] = max(front, key=lambda x: (x[1], x[2]))[2]

    def _prune(self) -> None:
        keep = {f"e{x[2]:05d}" for front in self.front.values() for x in front}
        for path in self.store.iterdir():
            if path.name.split(".")[0] not in keep:
                path.unlink(missing_ok=True)


def _copy(src: Path, dst: Path) -> None:
    """Copy a checkpoint pair (``.safetensors`` + ``.json``), each file atomically."""
    from pixelcam.fileio import atomic_write

    for ext in (".safetensors", ".json"):
        source = src.with_name(src.name + ext)
        atomic_write(dst.with_name(dst.name + ext), lambda tmp, s=source: shutil.copyfile(s, tmp))
