"""Reproduce the PixelCAM paper's tables on one dataset, with the paper's numbers
beside ours.

    .venv/bin/python benchmarks/reproduce.py --quick --out runs/reproduce-quick
    .venv/bin/python benchmarks/reproduce.py --out runs/reproduce           # default, generated
    .venv/bin/python benchmarks/reproduce.py --dataset glas --data-root ../shared/data/glas \
        --folds-dir ../shared/data/glas-folds --fold 0 --out runs/reproduce-glas

What it trains (``pixelcam.train.train``, nothing re-implemented), per seed:

- baselines: ONE GAP-head model (its CAM, GradCAM++ and LayerCAM maps) and ONE DeepMIL-head
  model. The trainer keeps a single B-LOC checkpoint (for the run's own map); this script
  keeps one per map (``bloc_<method>``, see :mod:`pixelcam.train.selection`: best valpx PxAP among
  epochs >= 1 whose valcl accuracy is within ``select_margin`` = 10 points of the run's
  best, ties to the later epoch), so each baseline row and each PixelCAM teacher uses its
  own map's B-LOC model, as in the paper;
- PixelCAM on top of each teacher map (teacher CAMs from the teacher's B-LOC model, network
  initialised from the baseline's B-CL model, as in the authors' code), selected the same
  way on its PixelCAM map;
- the paper's two references (``--references``): NEGEV over each of the DeepMIL,
  GradCAM++ and LayerCAM baselines (a U-Net decoder over the FROZEN B-CL baseline, from the
  same teacher CAMs; the CL column is the frozen classifier's) and the fully supervised
  U-Net (same backbone, trained on the training masks; CL n/a), both selected on their own
  map like PixelCAM, both trained for the PixelCAM epoch count. They appear in Tables 1 and
  4 (not in the t-test, the OOD run or the ablations).

What it reports, each row evaluated from its B-LOC checkpoint
(``pixelcam.evaluation.evaluate_model``) on the evaluation splits (generated data and
CAMELYON16: ``test``; GlaS: CL on ``valcl`` and PxAP on ``valpx``, since the GlaS test
images are withheld here; valpx is also the B-LOC selection set, so those PxAP values are
optimistic):

- Table 1: PxAP and CL (classification accuracy, %);
- Table 2: paired t-test of per-image PxAP, PixelCAM map of the PixelCAM model vs the
  teacher map of the baseline model (t > 0: PixelCAM better);
- Table 4: mean class separability J of the FG/BG pixel features per class and overall;
- OOD (Tables 3 and 5 analogue): the same checkpoints trained on generated ``he`` tiles,
  tested on the same generated tiles rendered with another stain (``--ood-stain``);
- stain-shift curve (Figures 4-5 analogue): the evaluation images re-stained in HED space
  towards the other stain's profile at 10 strengths (``pixelcam.data.stain``), PxAP and CL at
  each; on generated data and, for a real dataset, on its evaluation images too;
- ablations (Tables 12, 15, 16, 17), short runs on generated data: n in {1, 5, 10, 20}
  (GradCAM++ teacher), lambda (LayerCAM teacher), TH vs PB sampling (GradCAM++), linear vs
  multi-layer pixel head (DeepMIL and GradCAM++).

The paper's columns beside ours are its GlaS test-set numbers, or its CAMELYON16 ones when
``--dataset camelyon16``.

The OOD and ablation parts always use generated data (a real dataset's runs are not
repeated for them). Finished runs in ``--out`` are reused when their configuration is
unchanged, so an interrupted call can be re-run. Results: ``<out>/results.json`` and
``<out>/results.md`` (the tables printed on stdout); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAMES = {"deepmil": "DeepMIL", "gradcampp": "GradCAM++", "layercam": "LayerCAM", "cam": "CAM"}
ORDER = ("deepmil", "gradcampp", "layercam", "cam")
GAP_METHODS = ("cam", "gradcampp", "layercam")
NEGEV_TEACHERS = ("deepmil", "gradcampp", "layercam")  # the paper's NEGEV rows
UNET_ROW = "U-Net (full supervision)"

# The paper's numbers (ResNet-50, GlaS test set; Table 3/5: CAMELYON16 -> GlaS); the
# CAMELYON16 test-set columns of Tables 1, 2 and 4 are PAPER_*_C16 below.
PAPER_T1 = {  # (PxAP, CL)
    "DeepMIL": (79.9, 100.0),
    "DeepMIL w/ PixelCAM": (85.5, 100.0),
    "GradCAM++": (76.8, 100.0),
    "GradCAM++ w/ PixelCAM": (86.6, 100.0),
    "LayerCAM": (75.1, 100.0),
    "LayerCAM w/ PixelCAM": (83.6, 100.0),
    "DeepMIL w/ NEGEV": (85.9, 100.0),
    "GradCAM++ w/ NEGEV": (77.1, 100.0),
    "LayerCAM w/ NEGEV": (73.8, 100.0),
    UNET_ROW: (95.8, None),
}
PAPER_T2 = {"DeepMIL": (10.8, 1.5e-11), "GradCAM++": (29.1, 1.8e-22), "LayerCAM": (12.7, 4.0e-13)}
PAPER_T3 = {  # CAMELYON16 -> GlaS (PxAP, CL)
    "DeepMIL": (64.5, 81.2),
    "DeepMIL w/ PixelCAM": (69.1, 83.8),
    "GradCAM++": (52.9, 53.7),
    "GradCAM++ w/ PixelCAM": (56.2, 71.2),
    "LayerCAM": (59.5, 77.5),
    "LayerCAM w/ PixelCAM": (67.2, 78.8),
}
PAPER_T4 = {  # GlaS (normal, cancer, all)
    "DeepMIL": (0.13, 0.07, 0.10),
    "DeepMIL w/ PixelCAM": (0.21, 0.09, 0.14),
    "GradCAM++": (0.22, 0.13, 0.17),
    "GradCAM++ w/ PixelCAM": (0.25, 0.15, 0.20),
    "LayerCAM": (0.17, 0.04, 0.10),
    "LayerCAM w/ PixelCAM": (0.14, 0.12, 0.13),
}
PAPER_T5 = {  # CAMELYON16 -> GlaS, J over all images
    "DeepMIL": 0.08,
    "DeepMIL w/ PixelCAM": 0.10,
    "GradCAM++": 0.14,
    "GradCAM++ w/ PixelCAM": 0.07,
    "LayerCAM": 0.08,
    "LayerCAM w/ PixelCAM": 0.09,
}
# The same tables' CAMELYON16 columns, shown when the main dataset is CAMELYON16.
PAPER_T1_C16 = {
    "DeepMIL": (71.3, 85.0),
    "DeepMIL w/ PixelCAM": (75.7, 88.2),
    "GradCAM++": (49.1, 63.4),
    "GradCAM++ w/ PixelCAM": (64.1, 85.1),
    "LayerCAM": (33.2, 84.8),
    "LayerCAM w/ PixelCAM": (66.2, 89.1),
    "DeepMIL w/ NEGEV": (75.6, 89.9),
    "GradCAM++ w/ NEGEV": (68.6, 89.4),
    "LayerCAM w/ NEGEV": (66.8, 89.1),
    UNET_ROW: (81.6, None),
}
PAPER_T2_C16 = {"DeepMIL": (4.8, 4.1e-5), "GradCAM++": (17.9, 7.4e-17), "LayerCAM": (26.5, 2.2e-21)}
PAPER_T4_C16 = {  # no J for normal patches: they have no foreground
    "DeepMIL": (None, 0.11, 0.11),
    "DeepMIL w/ PixelCAM": (None, 0.17, 0.17),
    "GradCAM++": (None, 0.22, 0.22),
    "GradCAM++ w/ PixelCAM": (None, 0.16, 0.16),
    "LayerCAM": (None, 0.07, 0.07),
    "LayerCAM w/ PixelCAM": (None, 0.17, 0.17),
}


def paper_columns(dataset: str) -> tuple[str, dict, dict, dict]:
    """``(label, Table 1, Table 2, Table 4)`` of the paper to print beside ``dataset``'s
    results: CAMELYON16's columns for CAMELYON16, GlaS's for everything else."""
    if dataset == "camelyon16":
        return "CAMELYON16", PAPER_T1_C16, PAPER_T2_C16, PAPER_T4_C16
    return "GlaS", PAPER_T1, PAPER_T2, PAPER_T4


PAPER_ABLATIONS = {  # GlaS (PxAP, CL)
    "n": {"baseline": (76.8, 100.0), 1: (86.7, 100.0), 5: (86.6, 100.0), 10: (86.0, 100.0),
          20: (86.0, 100.0)},
    "lam": {"baseline": (75.1, 100.0), 1.0: (83.6, 100.0), 0.5: (83.1, 100.0),
            0.1: (82.2, 100.0), 0.01: (79.3, 96.3), 0.001: (76.1, 98.8)},
    "sampler": {"baseline": (76.8, 100.0), "th": (85.4, 100.0), "pb": (86.6, 100.0)},
    "pixel_head": {"DeepMIL": (79.9, 100.0), "DeepMIL linear": (85.5, 100.0),
                   "DeepMIL mlp": (86.3, 95.0), "GradCAM++": (77.9, 100.0),
                   "GradCAM++ linear": (86.6, 100.0), "GradCAM++ mlp": (86.5, 95.0)},
}  # fmt: skip


@dataclass(frozen=True)
class Mode:
    """Sizes and schedule of one configuration (generated data or a real dataset)."""

    n_per_class: int
    size: int
    resize: int
    crop: int
    eval_size: int
    epochs_baseline: int
    epochs_pixelcam: int
    batch_size: int
    lr: float
    seeds: tuple[int, ...]
    lams: tuple[float, ...]
    ns: tuple[int, ...]
    decoder_width: int = 256  # NEGEV / U-Net decoder (256: the paper-sized decoder)


SYNTHETIC_MODES = {
    "default": Mode(100, 128, 128, 112, 128, 30, 15, 32, 0.01, (0, 1, 2),
                    (1.0, 0.5, 0.1, 0.01, 0.001), (1, 5, 10, 20), 32),
    "quick": Mode(40, 64, 64, 56, 64, 15, 8, 16, 0.01, (0,), (1.0, 0.1, 0.001), (1, 5, 10, 20),
                  32),
}  # fmt: skip
REAL_MODES = {  # ImageNet EfficientNet-Lite0 (the wsol_table.py GlaS configuration)
    "default": Mode(0, 0, 256, 224, 224, 30, 15, 16, 1e-3, (0,), (), ()),
    "quick": Mode(0, 0, 256, 224, 224, 4, 2, 16, 1e-3, (0,), (), ()),
}


@dataclass
class Setup:
    """One dataset and how to train and evaluate on it."""

    name: str
    dataset: str
    data_root: str
    fold: int | None
    folds_dir: str | None
    backbone: str
    weights: str | None
    mode: Mode
    cl_split: str
    px_split: str
    device: str

    def common(self, seed: int) -> dict[str, Any]:
        m = self.mode
        return dict(
            dataset=self.dataset, data_root=self.data_root, fold=self.fold,
            folds_dir=self.folds_dir, backbone=self.backbone, weights=self.weights,
            batch_size=m.batch_size, lr=m.lr, seed=seed, device=self.device,
            resize=m.resize, crop=m.crop, eval_size=m.eval_size,
        )  # fmt: skip

    def open(self, split: str):
        from pixelcam.data import open_dataset

        kw: dict[str, Any] = {}
        if self.dataset in ("glas", "camelyon16"):
            if self.folds_dir:
                kw["folds_dir"] = self.folds_dir
            return open_dataset(self.dataset, self.data_root, split=split, fold=self.fold, **kw)
        kind = "folder" if self.dataset in ("synthetic", "folder") else self.dataset
        return open_dataset(kind, self.data_root, split=split)


def row_name(method: str, pixelcam: bool) -> str:
    return f"{NAMES[method]} w/ PixelCAM" if pixelcam else NAMES[method]


# -- training --------------------------------------------------------------------------


def bloc_tracker(out: Path, config: Any, track: Sequence[str]) -> Any:
    """Event callback keeping ``bloc_<method>.*``, the B-LOC checkpoint of each tracked map,
    by the one selection rule (:mod:`pixelcam.train.selection`)."""
    from pixelcam.train.phases import PHASES
    from pixelcam.train.selection import BestLocTracker

    guard = PHASES.get(config.phase).trains_classifier
    targets = {m: f"bloc_{m}" for m in track}
    return BestLocTracker(out, targets, config.select_margin, guard=guard)


class Runner:
    """Trains (or reuses) the runs under ``root`` and evaluates their checkpoints."""

    def __init__(self, root: Path, verbose: bool = False) -> None:
        self.root = root
        self.verbose = verbose
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.runs_trained = 0
        self.runs_reused = 0
        self._evals: dict[tuple, dict[str, Any]] = {}
        self._ready: set[Path] = set()  # runs known finished in this process

    def _run(self, config, track: Sequence[str]) -> Path:
        from pixelcam.train import train
        from pixelcam.train.events import human_progress, read_events

        out = Path(config.out)
        if out in self._ready:
            return out
        need = [out / "best_loc.json", out / "best_cl.json"]
        need += [out / f"bloc_{m}.json" for m in track]
        if (out / "events.jsonl").exists() and (out / "config.json").exists():
            events = read_events(out / "events.jsonl")
            # keys added to TrainConfig since a run was saved count at their defaults
            defaults = dataclasses.asdict(type(config)(out=config.out))
            saved = {**defaults, **json.loads((out / "config.json").read_text())}
            wanted = dataclasses.replace(config).validate()  # names as saved (pb -> probability)
            same = saved == json.loads(json.dumps(wanted.to_dict()))
            if same and events and events[-1]["event"] == "done" and all(p.exists() for p in need):
                self.runs_reused += 1
                self._ready.add(out)
                return out
        if out.exists():  # an unfinished or outdated run of ours: start it again
            if self.root.resolve() not in out.resolve().parents:
                raise SystemExit(f"refusing to remove {out}: not under {self.root}")
            shutil.rmtree(out)
        rel = out.relative_to(self.root)
        _say(f"training {rel} ({config.epochs} epochs)")
        callbacks: list[Callable] = [bloc_tracker(out, config, track)]
        if self.verbose:
            callbacks.append(human_progress(sys.stderr))
        t0 = time.perf_counter()
        result = train(config, callbacks=callbacks)
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        self.runs_trained += 1
        self._ready.add(out)
        last = result.history[-1]
        acc = "n/a" if last["valcl_acc"] is None else f"{last['valcl_acc']:.1f}"
        _say(f"  done in {dt:.1f} s (last epoch: valcl acc {acc}, "
             f"valpx PxAP {last['valpx_pxap']:.1f})")  # fmt: skip
        return out

    def baseline(self, setup: Setup, seed: int, head: str) -> Path:
        from pixelcam.train import TrainConfig

        out = self.root / setup.name / f"seed{seed}" / f"baseline-{head}"
        config = TrainConfig(
            out=str(out), phase="baseline", head=head, epochs=setup.mode.epochs_baseline,
            eval_method="layercam" if head == "gap" else None, **setup.common(seed),
        )  # fmt: skip
        return self._run(config, GAP_METHODS if head == "gap" else ("deepmil",))

    def baseline_checkpoint(self, setup: Setup, seed: int, method: str) -> Path:
        head = "deepmil" if method == "deepmil" else "gap"
        return self.baseline(setup, seed, head) / f"bloc_{method}"

    def pixelcam(
        self,
        setup: Setup,
        seed: int,
        teacher: str,
        n: int = 5,
        lam: float = 1.0,
        sampler: str = "pb",
        pixel_head: str = "linear",
    ) -> Path:
        """B-LOC checkpoint of PixelCAM trained from ``teacher``'s B-LOC CAMs."""
        from pixelcam.train import TrainConfig

        base = self.baseline(setup, seed, "deepmil" if teacher == "deepmil" else "gap")
        tag = "".join(
            [f"-n{n}" if n != 5 else "", f"-lam{lam:g}" if lam != 1.0 else "",
             f"-{sampler}" if sampler != "pb" else "",
             f"-{pixel_head}" if pixel_head != "linear" else ""]
        )  # fmt: skip
        out = self.root / setup.name / f"seed{seed}" / f"pixelcam-{teacher}{tag}"
        config = TrainConfig(
            out=str(out), phase="pixelcam", teacher=str(base / f"bloc_{teacher}.json"),
            init=str(base / "best_cl"), teacher_method=teacher, n=n, lam=lam, sampler=sampler,
            pixel_head=pixel_head, epochs=setup.mode.epochs_pixelcam, **setup.common(seed),
        )  # fmt: skip
        return self._run(config, ("pixelcam",)) / "bloc_pixelcam"

    def negev(self, setup: Setup, seed: int, teacher: str) -> Path:
        """B-LOC checkpoint of NEGEV over the frozen baseline, from ``teacher``'s CAMs."""
        from pixelcam.train import TrainConfig

        base = self.baseline(setup, seed, "deepmil" if teacher == "deepmil" else "gap")
        out = self.root / setup.name / f"seed{seed}" / f"negev-{teacher}"
        config = TrainConfig(
            out=str(out), phase="negev", teacher=str(base / f"bloc_{teacher}.json"),
            init=str(base / "best_cl"), teacher_method=teacher,
            decoder_width=setup.mode.decoder_width, epochs=setup.mode.epochs_pixelcam,
            **setup.common(seed),
        )  # fmt: skip
        return self._run(config, ("negev",)) / "bloc_negev"

    def unet(self, setup: Setup, seed: int) -> Path:
        """B-LOC checkpoint of the fully supervised U-Net (trained on the masks)."""
        from pixelcam.train import TrainConfig

        out = self.root / setup.name / f"seed{seed}" / "unet"
        config = TrainConfig(
            out=str(out), phase="unet", decoder_width=setup.mode.decoder_width,
            epochs=setup.mode.epochs_pixelcam, **setup.common(seed),
        )  # fmt: skip
        return self._run(config, ("unet",)) / "bloc_unet"

    def checkpoint(self, setup: Setup, seed: int, method: str, pixelcam: bool) -> Path:
        if pixelcam:
            return self.pixelcam(setup, seed, method)
        return self.baseline_checkpoint(setup, seed, method)

    def evaluate(
        self,
        checkpoint: Path,
        method: str,
        cl_ds,
        px_ds,
        key: str,
        device: str,
        detail: bool = True,
    ) -> dict[str, Any]:
        """PxAP of ``method``'s map and CL accuracy; with ``detail`` also per-image PxAP and
        J (all images and per class)."""
        cache_key = (str(checkpoint), method, key, detail)
        if cache_key in self._evals:
            return self._evals[cache_key]
        from pixelcam.device import resolve_device
        from pixelcam.evaluation import evaluate_model
        from pixelcam.models import load_checkpoint

        t0 = time.perf_counter()
        dev = resolve_device(device)
        model, meta = load_checkpoint(checkpoint, device=dev)
        size = int(meta.get("eval_size") or 224)
        kw = dict(device=dev, size=size, batch_size=16)
        px = evaluate_model(model, px_ds, [method], per_image=detail, separability=detail, **kw)
        cl = px if cl_ds is px_ds else evaluate_model(model, cl_ds, [], **kw)
        j_class: dict[str, float | None] = {}
        with_mask = {r.id for r in px_ds.records if r.mask_known}
        for c, name in enumerate(px_ds.class_names if detail else ()):
            ids = [r.id for r in px_ds.records if r.label == c and r.id in with_mask]
            if ids:
                sub = evaluate_model(model, px_ds.subset(ids), [], separability=True, **kw)
                j_class[name] = sub.separability
            else:
                j_class[name] = None
        result = {
            "checkpoint": str(checkpoint),
            "epoch": (meta.get("metrics") or {}).get("epoch", meta.get("epoch")),
            "pxap": px.pxap.get(method),
            "cl": cl.accuracy,
            "j_all": px.separability,
            "j_class": j_class,
            "per_image": {i: s[method] for i, s in px.per_image.items() if method in s},
        }
        self._evals[cache_key] = result
        self.eval_seconds += time.perf_counter() - t0
        return result


# -- the parts -------------------------------------------------------------------------


def _rows(teachers: Sequence[str]) -> list[tuple[str, bool]]:
    return [(m, p) for m in ORDER if m in teachers for p in (False, True)]


def _references(teachers: Sequence[str], references: Sequence[str]) -> list[tuple[str, str]]:
    """(row name, map method) of the NEGEV and U-Net rows, in table order."""
    rows = []
    if "negev" in references:
        rows += [
            (f"{NAMES[t]} w/ NEGEV", t) for t in ORDER if t in teachers and t in NEGEV_TEACHERS
        ]
    if "unet" in references:
        rows.append((UNET_ROW, "unet"))
    return rows


def run_main(
    runner: Runner,
    setup: Setup,
    teachers: Sequence[str],
    seeds: Sequence[int],
    references: Sequence[str] = ("negev", "unet"),
) -> dict[str, Any]:
    """Tables 1, 2 and 4 on ``setup``'s evaluation splits."""
    cl_ds, px_ds = setup.open(setup.cl_split), setup.open(setup.px_split)
    if setup.cl_split == setup.px_split:
        cl_ds = px_ds
    class_names = list(px_ds.class_names)
    rows: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for method, pix in _rows(teachers):
            ckpt = runner.checkpoint(setup, seed, method, pix)
            ev = runner.evaluate(ckpt, "pixelcam" if pix else method, cl_ds, px_ds,
                                 f"{setup.name}:eval", setup.device)  # fmt: skip
            rows.setdefault(row_name(method, pix), {"method": method, "pixelcam": pix,
                                                     "seeds": []})["seeds"].append(
                {"seed": seed, **ev}
            )  # fmt: skip
        for name, teacher in _references(teachers, references):
            if teacher == "unet":
                ckpt, mm = runner.unet(setup, seed), "unet"
            else:
                ckpt, mm = runner.negev(setup, seed, teacher), "negev"
            ev = runner.evaluate(ckpt, mm, cl_ds, px_ds, f"{setup.name}:eval", setup.device)
            rows.setdefault(name, {"method": mm, "pixelcam": False, "seeds": []})["seeds"].append(
                {"seed": seed, **ev}
            )
    table1, table2, table4 = [], [], []
    paper_dataset, paper_t1, paper_t2, paper_t4 = paper_columns(setup.dataset)
    for name, row in rows.items():
        s = row["seeds"]
        paper = paper_t1.get(name, (None, None))
        table1.append({"row": name, "method": row["method"], "pixelcam": row["pixelcam"],
                       "pxap": _stats([e["pxap"] for e in s]), "cl": _stats([e["cl"] for e in s]),
                       "paper_pxap": paper[0], "paper_cl": paper[1],
                       "per_seed": [{k: e[k] for k in ("seed", "pxap", "cl", "epoch",
                                                       "checkpoint")} for e in s]})  # fmt: skip
        p4 = paper_t4.get(name, (None, None, None))
        table4.append({"row": name,
                       "j_class": {c: _stats([e["j_class"].get(c) for e in s])
                                   for c in class_names},
                       "j_all": _stats([e["j_all"] for e in s]),
                       "paper_normal": p4[0], "paper_cancer": p4[1],
                       "paper_all": p4[2]})  # fmt: skip
    for method in [m for m in ORDER if m in teachers]:
        base, pix = rows[row_name(method, False)]["seeds"], rows[row_name(method, True)]["seeds"]
        per_seed = [_ttest(b["per_image"], p["per_image"]) | {"seed": b["seed"]}
                    for b, p in zip(base, pix)]  # fmt: skip
        paper = paper_t2.get(NAMES[method], (None, None))
        table2.append({"row": NAMES[method], "per_seed": per_seed,
                       "paper_t": paper[0], "paper_p": paper[1]})  # fmt: skip
    per_image = {name: {str(e["seed"]): e["per_image"] for e in row["seeds"]}
                 for name, row in rows.items()}  # fmt: skip
    return {"dataset": setup.dataset, "paper_dataset": paper_dataset,
            "cl_split": setup.cl_split, "px_split": setup.px_split,
            "n_cl_images": len(cl_ds), "n_px_images": len(px_ds), "class_names": class_names,
            "table1": table1, "table2": table2, "table4": table4,
            "per_image_pxap": per_image}  # fmt: skip


def _ttest(base: dict[str, float], pix: dict[str, float]) -> dict[str, Any]:
    from pixelcam.metrics import paired_ttest

    ids = sorted(set(base) & set(pix))
    a, b = [pix[i] for i in ids], [base[i] for i in ids]
    diffs = [x - y for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    try:
        t, p, n = paired_ttest(a, b)
    except ValueError:
        t, p, n = None, None, len(diffs)
    return {"t": _finite(t), "p": _finite(p), "n": n,
            "mean_diff": statistics.mean(diffs) if diffs else None}  # fmt: skip


def restained_dataset(ds, profile, strength: float, folder: Path):
    """``ds`` with every image re-stained towards ``profile`` by ``strength`` (written as
    PNG under ``folder``; masks and labels unchanged)."""
    from PIL import Image

    from pixelcam.data import WSOLDataset, read_image, restain

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    key = {"strength": strength, "profile": profile.as_array().round(8).tolist(),
           "images": [str(r.image_path) for r in ds.records]}  # fmt: skip
    fresh = not manifest.exists() or json.loads(manifest.read_text()) != key
    records = []
    for i, rec in enumerate(ds.records):
        path = folder / f"{i:05d}.png"
        if fresh or not path.exists():
            image = restain(read_image(rec.image_path), profile, strength)
            Image.fromarray(image).save(path)
        records.append(dataclasses.replace(rec, image_path=path))
    manifest.write_text(json.dumps(key))
    return WSOLDataset(records, ds.class_names)


def shift_curve(
    runner: Runner,
    setup: Setup,
    teachers: Sequence[str],
    seeds: Sequence[int],
    profile,
    folder: Path,
    steps: int = 10,
) -> dict[str, Any]:
    """PxAP and CL of every row on the evaluation images re-stained towards ``profile`` at
    strengths 0, 1/steps, ..., 1 (Figures 4-5)."""
    from pixelcam.data import read_image, stain_profile
    from pixelcam.data.stain import profile_distance

    cl_ds, px_ds = setup.open(setup.cl_split), setup.open(setup.px_split)
    union = {r.id: r for r in list(cl_ds.records) + list(px_ds.records)}
    strengths = [k / steps for k in range(steps + 1)]
    curves: dict[str, dict[str, list]] = {}
    distances = []
    for k, s in enumerate(strengths):
        if k == 0:
            cl_s, px_s = cl_ds, px_ds
        else:
            from pixelcam.data import WSOLDataset

            all_ds = restained_dataset(
                WSOLDataset(list(union.values()), px_ds.class_names), profile, s,
                folder / f"s{k:02d}",
            )  # fmt: skip
            px_s = all_ds.subset(px_ds.ids)
            cl_s = px_s if setup.cl_split == setup.px_split else all_ds.subset(cl_ds.ids)
        imgs = [read_image(r.image_path) for r in px_s.records]
        distances.append(profile_distance(stain_profile(imgs), profile))
        if setup.cl_split == setup.px_split:
            cl_s = px_s
        for method, pix in _rows(teachers):
            vals = []
            for seed in seeds:
                ckpt = runner.checkpoint(setup, seed, method, pix)
                key = f"{setup.name}:eval" if k == 0 else f"{setup.name}:shift{k}"
                vals.append(runner.evaluate(ckpt, "pixelcam" if pix else method, cl_s, px_s,
                                            key, setup.device, detail=k == 0))  # fmt: skip
            c = curves.setdefault(row_name(method, pix), {"pxap": [], "cl": []})
            c["pxap"].append(_stats([v["pxap"] for v in vals]))
            c["cl"].append(_stats([v["cl"] for v in vals]))
    return {"strengths": strengths, "profile_distance": distances, "target_profile":
            profile.as_array().tolist(), "curves": curves}  # fmt: skip


def run_ood(
    runner: Runner,
    setup: Setup,
    ood_root: Path,
    ood_stain: str,
    teachers: Sequence[str],
    seeds: Sequence[int],
    steps: int,
) -> dict[str, Any]:
    """Tables 3/5 analogue (train on ``he``, test on ``ood_stain``) and the shift curve."""
    from pixelcam.data import open_dataset

    m = setup.mode
    _synthetic(ood_root, m, ood_stain)
    ood_px = open_dataset("folder", ood_root, split=setup.px_split)
    ood_cl = ood_px if setup.cl_split == setup.px_split else open_dataset(
        "folder", ood_root, split=setup.cl_split
    )  # fmt: skip
    cl_ds, px_ds = setup.open(setup.cl_split), setup.open(setup.px_split)
    if setup.cl_split == setup.px_split:
        cl_ds = px_ds
    rows = []
    for method, pix in _rows(teachers):
        ood_vals, in_vals = [], []
        for seed in seeds:
            ckpt = runner.checkpoint(setup, seed, method, pix)
            mm = "pixelcam" if pix else method
            ood_vals.append(runner.evaluate(ckpt, mm, ood_cl, ood_px, f"ood:{ood_stain}",
                                            setup.device))  # fmt: skip
            in_vals.append(runner.evaluate(ckpt, mm, cl_ds, px_ds, f"{setup.name}:eval",
                                           setup.device))  # fmt: skip
        name = row_name(method, pix)
        paper = PAPER_T3.get(name, (None, None))
        rows.append({"row": name, "pxap": _stats([v["pxap"] for v in ood_vals]),
                     "cl": _stats([v["cl"] for v in ood_vals]),
                     "j_all": _stats([v["j_all"] for v in ood_vals]),
                     "in_distribution_pxap": _stats([v["pxap"] for v in in_vals]),
                     "in_distribution_cl": _stats([v["cl"] for v in in_vals]),
                     "paper_pxap": paper[0], "paper_cl": paper[1],
                     "paper_j_all": PAPER_T5.get(name)})  # fmt: skip
    profile = _stain_reference(ood_root)
    shift = shift_curve(runner, setup, teachers, seeds, profile,
                        runner.root.parent / "data" / f"shift-{setup.name}-{ood_stain}",
                        steps)  # fmt: skip
    return {"train_stain": "he", "test_stain": ood_stain, "table3": rows, "shift": shift}


def run_ablations(
    runner: Runner, setup: Setup, seed: int, ns: Sequence[int], lams: Sequence[float]
) -> dict[str, Any]:
    """Tables 12, 15, 16, 17 on ``setup`` (one seed)."""
    cl_ds, px_ds = setup.open(setup.cl_split), setup.open(setup.px_split)
    if setup.cl_split == setup.px_split:
        cl_ds = px_ds

    def score(ckpt: Path, method: str) -> dict[str, Any]:
        ev = runner.evaluate(ckpt, method, cl_ds, px_ds, f"{setup.name}:eval", setup.device)
        return {"pxap": ev["pxap"], "cl": ev["cl"], "epoch": ev["epoch"]}

    def base_row(method: str, label: str, table: str, paper_key: Any = "baseline") -> dict:
        paper = PAPER_ABLATIONS[table].get(paper_key, (None, None))
        ev = score(runner.baseline_checkpoint(setup, seed, method), method)
        return {"setting": label, **ev, "paper_pxap": paper[0], "paper_cl": paper[1]}

    def pix_row(teacher: str, label: str, table: str, paper_key: Any, **kw: Any) -> dict:
        paper = PAPER_ABLATIONS[table].get(paper_key, (None, None))
        ev = score(runner.pixelcam(setup, seed, teacher, **kw), "pixelcam")
        return {"setting": label, **ev, "paper_pxap": paper[0], "paper_cl": paper[1]}

    out: dict[str, Any] = {"seed": seed}
    out["n"] = [base_row("gradcampp", "GradCAM++", "n")] + [
        pix_row("gradcampp", f"n = {n}", "n", n, n=n) for n in ns
    ]
    out["lam"] = [base_row("layercam", "LayerCAM", "lam")] + [
        pix_row("layercam", f"lambda = {lam:g}", "lam", lam, lam=lam) for lam in lams
    ]
    out["sampler"] = [base_row("gradcampp", "GradCAM++", "sampler")] + [
        pix_row("gradcampp", f"{s.upper()} PixelCAM", "sampler", s, sampler=s) for s in ("th", "pb")
    ]
    heads = []
    for method in ("deepmil", "gradcampp"):
        heads.append(base_row(method, NAMES[method], "pixel_head", NAMES[method]))
        for head, label in (("linear", "linear"), ("mlp", "multi-layer")):
            heads.append(pix_row(method, f"{NAMES[method]} w/ {label} PixelCAM", "pixel_head",
                                 f"{NAMES[method]} {head}", pixel_head=head))  # fmt: skip
    out["pixel_head"] = heads
    return out


# -- output ----------------------------------------------------------------------------


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _stats(values: Sequence[Any]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return {
        "mean": statistics.mean(vals) if vals else None,
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "n": len(vals),
    }


def _f(x: Any, digits: int = 1) -> str:
    if isinstance(x, dict):
        if x.get("mean") is None:
            return "n/a"
        s = f"{x['mean']:.{digits}f}"
        return s + (f" ± {x['std']:.{digits}f}" if x.get("std") is not None else "")
    if x is None:
        return "—"
    return f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "—" if x is None else f"{x:.1e}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    """The markdown tables of ``results`` (what ``main`` prints)."""
    out: list[str] = []
    main = results.get("main")
    if main:
        where = (f"{main['dataset']}: PxAP on {main['px_split']} ({main['n_px_images']} images), "
                 f"CL on {main['cl_split']} ({main['n_cl_images']} images)")  # fmt: skip
        out.append(f"### Table 1: localization (PxAP) and classification (CL) — {where}\n")
        pd = main.get("paper_dataset", "GlaS")
        out.append(_table(
            ["WSOL model", "PxAP", "CL", f"paper {pd} PxAP", f"paper {pd} CL"],
            [[r["row"], _f(r["pxap"]), _f(r["cl"]), _f(r["paper_pxap"]), _f(r["paper_cl"])]
             for r in main["table1"]],
        ))  # fmt: skip
        out.append("\n### Table 2: paired t-test, per-image PxAP, PixelCAM vs baseline "
                   "(t > 0: PixelCAM better)\n")  # fmt: skip
        rows = []
        for r in main["table2"]:
            for s in r["per_seed"]:
                rows.append([r["row"], str(s["seed"]), str(s["n"]), _f(s["mean_diff"]),
                             _f(s["t"], 2), _p(s["p"]), _f(r["paper_t"]),
                             _p(r["paper_p"])])  # fmt: skip
        out.append(_table(["baseline", "seed", "images", "mean ΔPxAP", "T-stat", "p-value",
                           f"paper {pd} T-stat", f"paper {pd} p"], rows))  # fmt: skip
        names = main["class_names"]
        out.append(f"\n### Table 4: mean class separability J of FG/BG pixel features "
                   f"(on {main['px_split']})\n")  # fmt: skip
        out.append(_table(
            ["WSOL model", *[f"J {c}" for c in names], "J all", f"paper {pd} normal",
             f"paper {pd} cancer", f"paper {pd} all"],
            [[r["row"], *[_f(r["j_class"][c], 3) for c in names], _f(r["j_all"], 3),
              _f(r["paper_normal"], 2), _f(r["paper_cancer"], 2), _f(r["paper_all"], 2)]
             for r in main["table4"]],
        ))  # fmt: skip
    ood = results.get("ood")
    if ood:
        out.append(f"\n### OOD (Tables 3 and 5 analogue): trained on generated "
                   f"'{ood['train_stain']}', tested on generated "
                   f"'{ood['test_stain']}'\n")  # fmt: skip
        out.append(_table(
            ["WSOL model", "PxAP", "CL", "J all", "in-dist. PxAP", "in-dist. CL",
             "paper C16→GlaS PxAP", "paper C16→GlaS CL", "paper C16→GlaS J"],
            [[r["row"], _f(r["pxap"]), _f(r["cl"]), _f(r["j_all"], 3),
              _f(r["in_distribution_pxap"]), _f(r["in_distribution_cl"]), _f(r["paper_pxap"]),
              _f(r["paper_cl"]), _f(r["paper_j_all"], 2)] for r in ood["table3"]],
        ))  # fmt: skip
    shifts = ([("shift", ood["shift"])] if ood else []) + [
        (k, v) for k, v in results.items() if k.startswith("shift") and v
    ]
    for key, sh in shifts:
        label = sh.get("label", key)
        strengths = [f"{s:.1f}" for s in sh["strengths"]]
        for metric, fig in (("pxap", "Figure 5: PxAP"), ("cl", "Figure 4: CL")):
            out.append(f"\n### Stain shift ({fig}) — {label}: strength 0 = original, "
                       "1 = the target stain's HED statistics\n")  # fmt: skip
            rows = [[name, *[_f(v) for v in c[metric]]] for name, c in sh["curves"].items()]
            rows.append(["(profile distance)", *[f"{d:.3f}" for d in sh["profile_distance"]]])
            out.append(_table(["WSOL model", *strengths], rows))
    abl = results.get("ablations")
    if abl:
        titles = {
            "n": "Table 16: number of sampled pixels n (GradCAM++ teacher)",
            "lam": "Table 17: lambda (LayerCAM teacher)",
            "sampler": "Table 15: threshold (TH) vs probability (PB) sampling (GradCAM++)",
            "pixel_head": "Table 12: linear vs multi-layer pixel head",
        }
        for key, title in titles.items():
            out.append(f"\n### Ablation, {title} — generated data, seed {abl['seed']}\n")
            out.append(_table(
                ["setting", "PxAP", "CL", "paper GlaS PxAP", "paper GlaS CL"],
                [[r["setting"], _f(r["pxap"]), _f(r["cl"]), _f(r["paper_pxap"]),
                  _f(r["paper_cl"])] for r in abl[key]],
            ))  # fmt: skip
    return "\n".join(out) + "\n"


# -- setup -----------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _synthetic(root: Path, mode: Mode, stain: str, seed: int = 0) -> Path:
    from pixelcam.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(root, mode.n_per_class, size=mode.size, seed=seed, stain=stain)


def _stain_reference(root: Path):
    """The HED profile of a generated dataset's training images (the re-staining target)."""
    from pixelcam.data import open_dataset, read_image, stain_profile

    reference = open_dataset("folder", root, split="train")
    return stain_profile([read_image(r.image_path) for r in reference.records])


def _clean(value: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available()}  # fmt: skip
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _csv(text: str, kind: Callable[[str], Any]) -> tuple:
    return tuple(kind(x.strip()) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="runs, data and results go here")
    p.add_argument("--quick", action="store_true", help="small, fast settings (< 3 min idle)")
    p.add_argument("--dataset", default="synthetic",
                   choices=("synthetic", "glas", "camelyon16", "folder"))  # fmt: skip
    p.add_argument("--data-root", default="", help="dataset folder (not for synthetic)")
    p.add_argument("--folds-dir", default=None)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--cl-split", default=None, help="default: test (GlaS: valcl)")
    p.add_argument("--px-split", default=None, help="default: test (GlaS: valpx)")
    p.add_argument(
        "--backbone", default=None,
        help="default: test_resnet (generated), tf_efficientnet_lite0 (real)",
    )  # fmt: skip
    p.add_argument(
        "--weights", default=None,
        help="default: random init (generated), imagenet (real); 'none' = random",
    )  # fmt: skip
    p.add_argument("--teachers", default=",".join(ORDER), help="baseline maps, e.g. layercam")
    p.add_argument("--parts", default="main,ood,ablations")
    p.add_argument(
        "--references", default="negev,unet",
        help="the paper's reference rows in Table 1/4: negev, unet, both (default) or 'none'",
    )  # fmt: skip
    p.add_argument("--decoder-width", type=int, default=None,
                   help="NEGEV/U-Net first decoder width (mode default)")  # fmt: skip
    p.add_argument("--seeds", default=None, help="e.g. 0,1,2 (mode default)")
    p.add_argument("--epochs-baseline", type=int, default=None)
    p.add_argument("--epochs-pixelcam", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--synthetic-n-per-class", type=int, default=None)
    p.add_argument(
        "--synthetic-size", type=int, default=None,
        help="tile size; training resize = size, crop = 7/8 size, eval = size",
    )  # fmt: skip
    p.add_argument("--ablation-n", default=None, help="e.g. 1,5,10,20")
    p.add_argument("--ablation-lam", default=None, help="e.g. 1,0.5,0.1,0.01,0.001")
    p.add_argument("--ood-stain", default="ihc", choices=("ihc", "he-dark"))
    p.add_argument("--shift-steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--verbose", action="store_true", help="one progress line per epoch")
    return p


def _override(mode: Mode, args: argparse.Namespace, synthetic: bool) -> Mode:
    kw: dict[str, Any] = {}
    for name in ("epochs_baseline", "epochs_pixelcam", "batch_size", "lr", "decoder_width"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.seeds:
        kw["seeds"] = _csv(args.seeds, int)
    if synthetic:
        if args.synthetic_n_per_class is not None:
            kw["n_per_class"] = args.synthetic_n_per_class
        if args.synthetic_size is not None:
            s = args.synthetic_size
            kw.update(size=s, resize=s, crop=max(8, s * 7 // 8), eval_size=s)
        if args.ablation_n:
            kw["ns"] = _csv(args.ablation_n, int)
        if args.ablation_lam:
            kw["lams"] = _csv(args.ablation_lam, float)
    return dataclasses.replace(mode, **kw)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = datetime.datetime.now().astimezone()
    machine = _machine()  # the load average before anything runs
    t_start = time.perf_counter()
    mode_name = "quick" if args.quick else "default"
    parts = set(_csv(args.parts, str))
    unknown = parts - {"main", "ood", "ablations"}
    if unknown:
        raise SystemExit(f"unknown --parts {sorted(unknown)}; choose from main, ood, ablations")
    references = () if args.references == "none" else _csv(args.references, str)
    if set(references) - {"negev", "unet"}:
        raise SystemExit(f"unknown --references {args.references!r}; choose negev, unet, none")
    teachers = _csv(args.teachers, str)
    bad = [t for t in teachers if t not in NAMES]
    if bad:
        raise SystemExit(f"unknown teacher(s) {bad}; choose from {', '.join(ORDER)}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out / "runs", verbose=args.verbose)

    synth_mode = _override(SYNTHETIC_MODES[mode_name], args, synthetic=True)
    synthetic_setup = Setup(
        name="synthetic", dataset="synthetic", data_root=str(out / "data" / "synthetic-he"),
        fold=None, folds_dir=None, backbone=args.backbone if args.dataset == "synthetic"
        and args.backbone else "test_resnet",
        weights=None if args.dataset != "synthetic" or args.weights in (None, "none")
        else args.weights, mode=synth_mode, cl_split="test", px_split="test",
        device=args.device,
    )  # fmt: skip
    if args.dataset == "synthetic":
        _synthetic(Path(synthetic_setup.data_root), synth_mode, "he")
        synthetic_setup.cl_split = args.cl_split or "test"
        synthetic_setup.px_split = args.px_split or "test"
        main_setup = synthetic_setup
    else:
        if not args.data_root:
            raise SystemExit(f"--dataset {args.dataset} needs --data-root")
        glas = args.dataset == "glas"
        weights = "imagenet" if args.weights is None else args.weights
        main_setup = Setup(
            name=args.dataset, dataset=args.dataset, data_root=args.data_root,
            fold=args.fold if args.dataset in ("glas", "camelyon16") else None,
            folds_dir=args.folds_dir, backbone=args.backbone or "tf_efficientnet_lite0",
            weights=None if weights == "none" else weights,
            mode=_override(REAL_MODES[mode_name], args, synthetic=False),
            cl_split=args.cl_split or ("valcl" if glas else "test"),
            px_split=args.px_split or ("valpx" if glas else "test"), device=args.device,
        )  # fmt: skip
        if "ood" in parts or "ablations" in parts:
            _synthetic(Path(synthetic_setup.data_root), synth_mode, "he")

    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    if "main" in parts:
        t0 = time.perf_counter()
        results["main"] = run_main(runner, main_setup, teachers, main_setup.mode.seeds,
                                   references)  # fmt: skip
        timings["main"] = time.perf_counter() - t0
    if "ood" in parts:
        t0 = time.perf_counter()
        results["ood"] = run_ood(
            runner, synthetic_setup, out / "data" / f"synthetic-{args.ood_stain}",
            args.ood_stain, teachers, synthetic_setup.mode.seeds, args.shift_steps,
        )  # fmt: skip
        results["ood"]["shift"]["label"] = (
            f"generated 'he' test images towards the generated '{args.ood_stain}' stain"
        )
        if main_setup is not synthetic_setup and "main" in parts:
            profile = _stain_reference(out / "data" / f"synthetic-{args.ood_stain}")
            sh = shift_curve(runner, main_setup, teachers, main_setup.mode.seeds, profile,
                             out / "data" / f"shift-{main_setup.name}-{args.ood_stain}",
                             args.shift_steps)  # fmt: skip
            sh["label"] = (
                f"{main_setup.name} evaluation images towards generated '{args.ood_stain}'"
            )
            results["shift_main"] = sh
        timings["ood"] = time.perf_counter() - t0
    if "ablations" in parts:
        t0 = time.perf_counter()
        results["ablations"] = run_ablations(
            runner, synthetic_setup, synthetic_setup.mode.seeds[0], synth_mode.ns,
            synth_mode.lams,
        )  # fmt: skip
        timings["ablations"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    timings["training"] = runner.train_seconds
    timings["evaluation"] = runner.eval_seconds

    command = " ".join([".venv/bin/python", "benchmarks/reproduce.py", *(
        sys.argv[1:] if argv is None else argv)])  # fmt: skip
    meta = {
        "command": command,
        "date": started.isoformat(timespec="seconds"),
        "mode": mode_name,
        "machine": machine,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "runs_trained": runner.runs_trained,
        "runs_reused": runner.runs_reused,
        "teachers": list(teachers),
        "parts": sorted(parts),
        "main_setup": _setup_dict(main_setup),
        "synthetic_setup": _setup_dict(synthetic_setup),
    }
    if hasattr(os, "getloadavg"):
        meta["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results = {"meta": meta, **results}
    text = render(results)
    footer = (f"\n({mode_name} mode; {runner.runs_trained} runs trained, {runner.runs_reused} "
              f"reused; {timings['total']:.0f} s total on {meta['machine']['cpu']}, "
              f"{meta['machine']['cores']} cores)\n")  # fmt: skip
    print(text + footer, end="")
    (out / "results.md").write_text(f"Command: `{command}`\n\nDate: {meta['date']}\n\n" + text
                                     + footer)  # fmt: skip
    (out / "results.json").write_text(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
    return 0


def _setup_dict(setup: Setup) -> dict[str, Any]:
    d = dataclasses.asdict(setup)
    d["mode"] = dataclasses.asdict(setup.mode)
    return d


if __name__ == "__main__":
    from pixelcam.errors import PixelCAMError

    try:
        raise SystemExit(main())
    except PixelCAMError as exc:  # a bad dataset or checkpoint: one line, no traceback
        print(f"reproduce.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
